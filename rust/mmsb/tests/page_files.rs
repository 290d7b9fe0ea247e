//! File-backed pages (`Config::file_backed_pages`, docs/page-files.md): where the bytes live,
//! checkpoints without page copies, clean reopen, and recovery that does not trust page files
//! the kernel may have written back after the checkpoint.
#![allow(clippy::cast_possible_truncation)] // test arithmetic on small known sizes

use std::path::Path;

use mmsb::{Config, Delta, Durability, ErrorCode, Location, MMSBState, PageId, PageMeta};

fn config(dir: &Path) -> Config {
    Config { dir: Some(dir.to_path_buf()), file_backed_pages: true, ..Config::default() }
}

fn page(s: &MMSBState, size: u64, name: &str) -> PageId {
    s.create_page(size, Location::Cpu, PageMeta { name: name.into(), tags: vec![] }).unwrap()
}

fn page_file(dir: &Path, id: PageId) -> std::path::PathBuf {
    dir.join("pages").join(format!("{:020}.page", id.0))
}

/// Copies a state directory as a crash would leave it (the page cache included).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn checkpoint_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ckpt"))
        .map(|e| e.metadata().unwrap().len())
        .max()
        .unwrap()
}

#[test]
fn file_backed_pages_need_a_directory() {
    let e = MMSBState::open(Config { file_backed_pages: true, ..Config::default() }).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    assert!(e.to_string().contains("file_backed_pages needs a directory"), "{e}");
}

#[test]
fn page_bytes_live_in_shared_page_files() {
    let d = tempfile::tempdir().unwrap();
    let s = MMSBState::open(config(d.path())).unwrap();
    let id = page(&s, 100, "p");
    s.update_page_at(id, 10, b"hello", None).unwrap();
    // The file is the page's memory: a read of the file sees the write at once.
    let file = std::fs::read(page_file(d.path(), id)).unwrap();
    assert_eq!(&file[10..15], b"hello");
    assert_eq!(file.len() as u64, s.page_info(id).unwrap().capacity);
    s.free_page(id).unwrap();
    assert!(!page_file(d.path(), id).exists(), "a freed page's file is removed");
    // Anonymous pages stay the default: no page files.
    let d2 = tempfile::tempdir().unwrap();
    let a = MMSBState::open(Config { dir: Some(d2.path().to_path_buf()), ..Config::default() }).unwrap();
    page(&a, 100, "p");
    assert!(!d2.path().join("pages").exists());
}

#[test]
fn a_checkpoint_copies_no_page_bytes_and_a_clean_close_leaves_nothing_to_replay() {
    let d = tempfile::tempdir().unwrap();
    let s = MMSBState::open(config(d.path())).unwrap();
    let ids: Vec<PageId> = (0..8).map(|i| page(&s, 1 << 20, &format!("p{i}"))).collect();
    for (i, &id) in ids.iter().enumerate() {
        s.update_page_at(id, 4096 * i as u64, &[i as u8 + 1; 300], None).unwrap();
    }
    s.checkpoint().unwrap();
    // 8 MiB of pages; the checkpoint holds their index only.
    assert!(checkpoint_bytes(d.path()) < 4096, "checkpoint of {} bytes", checkpoint_bytes(d.path()));
    s.update_page_at(ids[0], 0, b"after", None).unwrap();
    let lsn = s.lsn();
    let before: Vec<Vec<u8>> = ids.iter().map(|&id| s.read_page(id).unwrap()).collect();
    s.close();
    let s = MMSBState::open(config(d.path())).unwrap();
    let info = s.log_info().unwrap();
    assert_eq!((info.lsn, info.last_checkpoint_lsn, info.bytes_since_checkpoint), (lsn, lsn, 0));
    let after: Vec<Vec<u8>> = ids.iter().map(|&id| s.read_page(id).unwrap()).collect();
    assert!(before == after, "reopen changed page bytes");
    // A reopen without the flag reads the same pages into anonymous memory.
    s.close();
    let anon = MMSBState::open(Config { file_backed_pages: false, ..config(d.path()) }).unwrap();
    let again: Vec<Vec<u8>> = ids.iter().map(|&id| anon.read_page(id).unwrap()).collect();
    assert!(before == again, "an anonymous reopen differs");
}

/// The trap of shared mappings: the kernel may write a page back at any moment, so after a crash
/// a page file can hold bytes of a write whose record never became durable, or a torn page.
/// Recovery must still give exactly the logged state.
#[test]
fn recovery_does_not_trust_page_files_changed_after_the_checkpoint() {
    for mode in [Durability::None, Durability::GroupCommit, Durability::Always] {
        let d = tempfile::tempdir().unwrap();
        let cfg = Config { durability: mode, ..config(d.path()) };
        let s = MMSBState::open(cfg.clone()).unwrap();
        let a = page(&s, 8192, "a");
        let b = page(&s, 8192, "b");
        let gone = page(&s, 4096, "gone");
        s.update_page_at(a, 0, &[1; 8192], None).unwrap();
        s.update_page_at(b, 0, &[2; 8192], None).unwrap();
        s.update_page_at(gone, 0, &[3; 4096], None).unwrap();
        let k = s.checkpoint().unwrap();
        s.update_page_at(a, 100, &[9; 50], None).unwrap();
        s.route_delta(b, &Delta::write(8000, &[7; 100]).unwrap(), None).unwrap();
        s.free_page(gone).unwrap();
        let want_a = s.read_page(a).unwrap();
        let want_b = s.read_page(b).unwrap();
        let old = s.replay_to(k).unwrap();
        assert_eq!(old.read_page(gone).unwrap(), vec![3; 4096], "{mode:?}: replay to the checkpoint");
        assert_eq!(old.read_page(a).unwrap(), vec![1; 8192], "{mode:?}: replay to the checkpoint");

        let crashed = tempfile::tempdir().unwrap();
        copy_tree(d.path(), crashed.path());
        // Bytes of a write that was never logged reached page a's file; page b's is torn.
        let fa = page_file(crashed.path(), a);
        let mut bytes = std::fs::read(&fa).unwrap();
        bytes[0..4096].fill(0xEE);
        std::fs::write(&fa, &bytes).unwrap();
        let fb = page_file(crashed.path(), b);
        let mut bytes = std::fs::read(&fb).unwrap();
        bytes[4096..].fill(0);
        std::fs::write(&fb, &bytes).unwrap();

        let r = MMSBState::open(Config { dir: Some(crashed.path().to_path_buf()), ..cfg.clone() }).unwrap();
        assert_eq!(r.lsn(), s.lsn(), "{mode:?}");
        assert!(r.read_page(a).unwrap() == want_a, "{mode:?}: page a keeps bytes that were never logged");
        assert!(r.read_page(b).unwrap() == want_b, "{mode:?}: page b is torn");
        assert!(r.page_info(gone).is_err(), "{mode:?}: the freed page is back");
        drop(r);
        // And the pages as of the checkpoint come back too (the freed page from its image).
        let again = MMSBState::open(Config { dir: Some(crashed.path().to_path_buf()), ..cfg }).unwrap();
        let old = again.replay_to(k).unwrap();
        assert_eq!(old.read_page(gone).unwrap(), vec![3; 4096], "{mode:?}");
        assert_eq!(old.read_page(b).unwrap(), vec![2; 8192], "{mode:?}");
    }
}

#[test]
fn a_missing_page_file_is_a_named_error() {
    let d = tempfile::tempdir().unwrap();
    let s = MMSBState::open(config(d.path())).unwrap();
    let a = page(&s, 100, "a");
    s.close();
    std::fs::remove_file(page_file(d.path(), a)).unwrap();
    let e = MMSBState::open(config(d.path())).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Corrupt, "{e}");
    assert!(e.to_string().contains("page file"), "{e}");
}

/// Issue 21, fast open: after a clean close the open maps the page files and replays nothing,
/// even when the maintenance thread left a long log behind its newest checkpoint (the open no
/// longer reads the segments that checkpoint covers); the mapped pages read the bytes written
/// and take new writes without touching the checkpoint; a reopen without writes leaves no file
/// behind; a page file of the wrong length is refused with a named error.
#[test]
fn a_clean_reopen_maps_the_pages_replays_nothing_and_refuses_a_short_page_file() {
    use mmsb::runtime::tlog::inspect::read_dir;
    let d = tempfile::tempdir().unwrap();
    // A checkpoint half way, then more writes over several small segments: the close's
    // checkpoint covers them, and the log keeps them (history back to the older checkpoint).
    let cfg = Config { log_size_cap: 0, segment_size: 16 << 10, ..config(d.path()) };
    let s = MMSBState::open(cfg.clone()).unwrap();
    let ids: Vec<PageId> = (0..6).map(|i| page(&s, 64 << 10, &format!("p{i}"))).collect();
    for round in 0..8u8 {
        for (i, &id) in ids.iter().enumerate() {
            s.update_page_at(id, 512 * u64::from(round), &[round ^ i as u8; 3000], None).unwrap();
        }
        if round == 3 {
            s.checkpoint().unwrap();
        }
    }
    let want: Vec<Vec<u8>> = ids.iter().map(|&id| s.read_page(id).unwrap()).collect();
    let lsn = s.lsn();
    s.close();
    let info = read_dir(d.path(), |l| l.info()).unwrap();
    assert_eq!((info.replay.checkpoint_lsn, info.replay.records, info.replay.bytes), (lsn, 0, 0), "{info:?}");
    assert!(info.segments.len() > 1, "the log keeps history behind the checkpoint: {info:?}");
    let ckpt = d.path().join(&info.checkpoints.last().unwrap().name);
    let ckpt_bytes = std::fs::read(&ckpt).unwrap();
    let pages_dir = d.path().join("pages");
    let files = || std::fs::read_dir(&pages_dir).unwrap().count();
    let listed = files();

    // Damage the history the checkpoint covers: a clean open does not read it.
    let first = d.path().join(&info.segments[0].name);
    let mut seg = std::fs::read(&first).unwrap();
    let at = seg.len() - 1;
    seg[at] ^= 0x20;
    std::fs::write(&first, &seg).unwrap();

    let s = MMSBState::open(cfg.clone()).unwrap();
    let got: Vec<Vec<u8>> = ids.iter().map(|&id| s.read_page(id).unwrap()).collect();
    assert!(got == want, "the reopened pages differ");
    assert_eq!(s.log_info().unwrap().skipped_regions, 0);
    s.update_page_at(ids[2], 7, b"after reopen", None).unwrap();
    assert_eq!(std::fs::read(&ckpt).unwrap(), ckpt_bytes, "a write went into the checkpoint");
    let want2 = s.read_page(ids[2]).unwrap();
    drop(s);
    let s = MMSBState::open(cfg.clone()).unwrap();
    assert_eq!(s.read_page(ids[2]).unwrap(), want2);
    drop(s);
    // Reopens without writes leave no image file behind each.
    for _ in 0..4 {
        drop(MMSBState::open(cfg.clone()).unwrap());
    }
    assert!(files() <= listed + 1, "{} files in pages/ after reopens, {listed} before", files());

    // A page file cut short (not the length its page needs): a named error, nothing changed.
    let f = page_file(d.path(), ids[4]);
    let len = std::fs::metadata(&f).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&f).unwrap().set_len(len - 4096).unwrap();
    let e = MMSBState::open(cfg).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Corrupt, "{e}");
    assert!(e.to_string().contains("page file") && e.to_string().contains(&format!("page {}", ids[4])), "{e}");
    assert_eq!(std::fs::metadata(&f).unwrap().len(), len - 4096, "the refused open changed the file");
}
