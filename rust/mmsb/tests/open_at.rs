//! `MMSBState::open_at`: the state of a directory at an LSN, without its writer, equals what
//! the writer's own `replay_to` gives; the range and compaction rules; what it refuses.

mod tlog_common;

use std::io::Write;

use mmsb::runtime::tlog::inspect::read_dir;
use mmsb::types::error::LogError;
use mmsb::{Config, Error, ErrorCode, Location, MMSBState, PageMeta};
use tlog_common::{disk_config, scratch, snapshot};

fn config(dir: &std::path::Path) -> Config {
    Config { segment_size: 2048, ..disk_config(dir) }
}

#[test]
fn open_at_equals_replay_to_at_every_replayable_lsn_while_the_writer_holds_the_directory() {
    let d = scratch();
    let dir = d.path().join("state");
    let s = MMSBState::open(config(&dir)).unwrap();
    let a =
        s.create_page(64, Location::Cpu, PageMeta { name: "a".into(), tags: vec![("k".into(), "v".into())] }).unwrap();
    let mut b = s.create_page(32, Location::Cpu, PageMeta::default()).unwrap();
    for i in 0..80u8 {
        s.update_page_at(if i % 2 == 0 { a } else { b }, u64::from(i % 16), &[i, i ^ 0x55], None).unwrap();
        if i == 20 {
            s.checkpoint().unwrap();
        }
        if i == 50 {
            s.free_page(b).unwrap();
            b = s.create_page(24, Location::Cpu, PageMeta::default()).unwrap();
        }
    }
    let info = s.log_info().unwrap();
    // The writer still has the directory open (and locked): open_at needs neither.
    for lsn in info.oldest_lsn..=s.lsn() {
        let want = snapshot(&s.replay_to(lsn).unwrap());
        let got = MMSBState::open_at(&dir, lsn).unwrap();
        assert!(got.is_read_only());
        assert_eq!(snapshot(&got), want, "LSN {lsn}");
    }
    assert_eq!(MMSBState::open_at(&dir, info.oldest_lsn).unwrap().page_meta(a).unwrap().tags[0].1, "v");

    // Outside the range: LsnOutOfRange's status, the range in the message.
    let (oldest, last) = (info.oldest_lsn, s.lsn());
    assert!(oldest > 0, "the checkpoint dropped the segments before it");
    for lsn in [oldest - 1, last + 1] {
        let e = MMSBState::open_at(&dir, lsn).unwrap_err();
        assert_eq!(e.code(), ErrorCode::LsnOutOfRange, "{e}");
        assert!(matches!(e, Error::Log(LogError::LsnOutsideRange { .. })), "{e:?}");
        assert!(e.to_string().contains(&format!("replayable range {oldest}..={last}")), "{e}");
    }

    // After a compaction: the same rule as replay_to (LsnCompacted strictly inside a run).
    s.compact_log().unwrap();
    let runs = s.compacted_runs().unwrap();
    let run = runs.iter().find(|r| r.end() - r.start() >= 2).expect("a compacted run").clone();
    let inside = run.start() + 1;
    assert_eq!(MMSBState::open_at(&dir, inside).unwrap_err().code(), ErrorCode::LsnCompacted);
    assert_eq!(s.replay_to(inside).unwrap_err().code(), ErrorCode::LsnCompacted);
    for lsn in [*run.end(), s.lsn()] {
        assert_eq!(snapshot(&MMSBState::open_at(&dir, lsn).unwrap()), snapshot(&s.replay_to(lsn).unwrap()));
    }
    let i = read_dir(&dir, |d| d.info()).unwrap();
    assert_eq!(i.compacted_runs, runs);
    assert_eq!(i.last_lsn, s.lsn());
    assert_eq!(i.replayable, Some(s.log_info().unwrap().oldest_lsn..=s.lsn()));
}

#[test]
fn open_at_creates_nothing_and_refuses_what_is_not_a_state_directory() {
    let d = scratch();
    let missing = d.path().join("missing");
    let e = MMSBState::open_at(&missing, 0).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Io, "{e}");
    assert!(!missing.exists(), "open_at created the directory");
    let file = d.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert_eq!(MMSBState::open_at(&file, 0).unwrap_err().code(), ErrorCode::Io);
    // An empty directory holds the empty state at LSN 0 and nothing else.
    let empty = d.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_eq!(MMSBState::open_at(&empty, 0).unwrap().lsn(), 0);
    assert_eq!(MMSBState::open_at(&empty, 1).unwrap_err().code(), ErrorCode::LsnOutOfRange);
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "open_at created a file");
}

#[test]
fn a_missing_middle_segment_is_named_by_recovery() {
    let d = scratch();
    let dir = d.path().join("state");
    let s = MMSBState::open(config(&dir)).unwrap();
    let p = s.create_page(64, Location::Cpu, PageMeta::default()).unwrap();
    for i in 0..200u8 {
        s.update_page(p, &[i; 16]).unwrap();
    }
    drop(s);
    let segs = tlog_common::segments(&dir);
    assert!(segs.len() >= 4);
    let gone = segs[1].file_name().unwrap().to_str().unwrap().to_string();
    std::fs::remove_file(&segs[1]).unwrap();
    let e = MMSBState::open(config(&dir)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Corrupt);
    assert!(e.to_string().contains(&format!("missing segment files: {gone}")), "{e}");
}

#[test]
fn a_torn_tail_ends_what_open_at_reads_and_is_not_damage() {
    let d = scratch();
    let dir = d.path().join("state");
    let s = MMSBState::open(config(&dir)).unwrap();
    let p = s.create_page(64, Location::Cpu, PageMeta::default()).unwrap();
    for i in 0..5u8 {
        s.update_page(p, &[i + 1; 8]).unwrap();
    }
    let (last, want) = (s.lsn(), snapshot(&s));
    drop(s);
    // Half of a record after the last one, as a writer in the middle of an append leaves it.
    let seg = tlog_common::segments(&dir).pop().unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    let (at, len) = read_dir(&dir, |d| {
        let mut lastrec = (0, 0);
        d.records(0..=last, |r, _| {
            lastrec = (usize::try_from(r.offset).unwrap(), usize::try_from(r.bytes).unwrap());
            Ok(())
        })?;
        Ok(lastrec)
    })
    .unwrap();
    assert_eq!(at + len, bytes.len(), "the last record ends the segment");
    // The next record's header and most of its body.
    let mut torn = bytes[at..at + len - 10].to_vec();
    torn[8..16].copy_from_slice(&(last + 1).to_le_bytes());
    std::fs::OpenOptions::new().append(true).open(&seg).unwrap().write_all(&torn).unwrap();
    let before = std::fs::read(&seg).unwrap();

    assert_eq!(snapshot(&MMSBState::open_at(&dir, last).unwrap()), want);
    let e = MMSBState::open_at(&dir, last + 1).unwrap_err();
    assert_eq!(e.code(), ErrorCode::LsnOutOfRange, "{e}");
    assert!(e.to_string().contains(&format!("replayable range 0..={last}")), "{e}");
    let v = read_dir(&dir, |d| d.verify()).unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert_eq!(v.last_lsn, last);
    assert!(v.notes.iter().any(|n| n.starts_with("torn tail: ") && n.contains("truncated")), "{:?}", v.notes);
    assert_eq!(std::fs::read(&seg).unwrap(), before, "reading cut the tail");
    // An open (the writer's recovery) cuts it and keeps every whole record.
    assert_eq!(snapshot(&MMSBState::open(config(&dir)).unwrap()), want);
}

/// File-backed pages: a checkpoint holds only the page index (the bytes are the page files plus
/// the images of pages changed since), so `open_at` reads those once no writer runs, at every
/// LSN from that checkpoint on; while a writer has the directory open it refuses, by name.
#[test]
fn open_at_reads_a_closed_file_backed_directory_and_refuses_while_its_writer_runs() {
    let d = tempfile::tempdir().unwrap();
    let cfg = Config { file_backed_pages: true, ..config(d.path()) };
    let s = MMSBState::open(cfg.clone()).unwrap();
    let a = s.create_page(4096, Location::Cpu, PageMeta::default()).unwrap();
    let b = s.create_page(8192, Location::Cpu, PageMeta::default()).unwrap();
    let mut history = std::collections::BTreeMap::new();
    for i in 0..40u32 {
        if i == 15 {
            s.checkpoint().unwrap();
        }
        let page = if i % 3 == 0 { b } else { a };
        s.update_page_at(page, u64::from(i * 7 % 4000), &i.to_le_bytes(), None).unwrap();
        history.insert(s.lsn(), (s.read_page(a).unwrap(), s.read_page(b).unwrap()));
    }
    let e = MMSBState::open_at(d.path(), s.lsn()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unsupported, "{e}");
    assert!(e.to_string().contains("while its writer"), "{e}");
    let last = s.lsn();
    s.close();
    // The close wrote an index-only checkpoint at `last`; the one at LSN 15's turn is older.
    let mut checked = 0;
    for (&lsn, (pa, pb)) in &history {
        match MMSBState::open_at(d.path(), lsn) {
            Ok(r) => {
                assert_eq!(&r.read_page(a).unwrap(), pa, "page a at LSN {lsn}");
                assert_eq!(&r.read_page(b).unwrap(), pb, "page b at LSN {lsn}");
                checked += 1;
            }
            Err(e) => assert!(matches!(e.code(), ErrorCode::LsnOutOfRange | ErrorCode::LsnCompacted), "LSN {lsn}: {e}"),
        }
    }
    assert!(history.contains_key(&last) && checked >= 1, "checked {checked} LSNs");
    // The files were only read: a writer reopens the same state.
    let s = MMSBState::open(cfg).unwrap();
    assert_eq!(s.lsn(), last);
    assert_eq!(s.read_page(a).unwrap(), history[&last].0);
}
