//! Issue 21, fast open of anonymous-page states: a clean close checkpoints, and open maps the
//! checkpoint's page images copy-on-write instead of reading them.

mod tlog_common;

use std::path::{Path, PathBuf};

use mmsb::{Location, MMSBState, PageMeta};
use tlog_common::{disk_config, scratch, snapshot};

fn checkpoints(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("ckpt-"))
        .filter(|p| !p.to_str().unwrap().ends_with(".tmp"))
        .collect();
    v.sort();
    v
}

/// Pages of many sizes (non-multiples of 4 KiB, below, at and above one OS page), each filled
/// with its own pattern.
fn fill(s: &MMSBState, sizes: &[u64]) {
    for (k, &size) in sizes.iter().enumerate() {
        let id = s.create_page(size, Location::Cpu, PageMeta { name: format!("p{k}"), tags: vec![] }).unwrap();
        let bytes: Vec<u8> = (0..size).map(|i| u8::try_from((i * 31 + k as u64 * 7 + 1) % 256).unwrap()).collect();
        s.update_page(id, &bytes).unwrap();
    }
}

// More than `CLOSE_CHECKPOINT_MIN_LOG` of writes, so that a clean close checkpoints.
const SIZES: &[u64] = &[1, 100, 4095, 4096, 4097, 10_000, 65_539, 1 << 20, 3, 1 << 20];

#[test]
fn clean_close_checkpoints_and_reopen_is_byte_identical() {
    let dir = scratch();
    let s = MMSBState::open(disk_config(dir.path())).unwrap();
    fill(&s, SIZES);
    let before = snapshot(&s);
    s.close();
    // The close wrote a checkpoint at the last LSN: the next open replays nothing.
    let s = MMSBState::open(disk_config(dir.path())).unwrap();
    assert_eq!(s.log_info().unwrap().last_checkpoint_lsn, before.lsn);
    assert_eq!(snapshot(&s), before);
    // Nothing logged since: a second close writes no new checkpoint.
    let n = checkpoints(dir.path());
    s.close();
    assert_eq!(checkpoints(dir.path()), n);
    let s = MMSBState::open(disk_config(dir.path())).unwrap();
    assert_eq!(snapshot(&s), before);
}

#[test]
fn writes_after_a_lazy_open_never_reach_the_checkpoint_and_survive_reopen() {
    let dir = scratch();
    let s = MMSBState::open(disk_config(dir.path())).unwrap();
    fill(&s, SIZES);
    s.close();
    let ck = checkpoints(dir.path());
    let ck_bytes: Vec<Vec<u8>> = ck.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let s = MMSBState::open(disk_config(dir.path())).unwrap();
    for id in s.page_ids().unwrap() {
        let size = s.page_info(id).unwrap().size.min(5000);
        s.update_page_at(id, 0, &vec![0xAB; usize::try_from(size).unwrap()], None).unwrap();
    }
    let after = snapshot(&s);
    // The checkpoint the pages are mapped from is unchanged (copy-on-write).
    for (p, b) in ck.iter().zip(&ck_bytes) {
        assert_eq!(&std::fs::read(p).unwrap(), b, "{} changed", p.display());
    }
    s.close();
    let s = MMSBState::open(disk_config(dir.path())).unwrap();
    assert_eq!(snapshot(&s), after);
}

#[test]
fn a_truncated_checkpoint_is_refused_before_mapping_and_the_older_one_used() {
    let dir = scratch();
    let s = MMSBState::open(disk_config(dir.path())).unwrap();
    fill(&s, SIZES);
    s.checkpoint().unwrap();
    // More than `CLOSE_CHECKPOINT_MIN_LOG` after it, so the close writes a second one.
    for k in [7, 9] {
        let id = s.page_ids().unwrap()[k];
        s.update_page(id, &vec![0xEE; 1 << 20]).unwrap();
    }
    let want = snapshot(&s);
    s.close();
    let ck = checkpoints(dir.path());
    assert!(ck.len() >= 2, "{ck:?}");
    // The newest checkpoint loses its tail (a lazy open that mapped it would fault on touch).
    let newest = ck.last().unwrap();
    let len = std::fs::metadata(newest).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(newest).unwrap().set_len(len - 8192).unwrap();
    // The previous generation plus the log after it recover the same state.
    let s = MMSBState::open(disk_config(dir.path())).unwrap();
    assert!(s.log_info().unwrap().last_checkpoint_lsn < want.lsn);
    assert_eq!(snapshot(&s), want);
}

#[test]
fn replay_to_from_a_lazily_opened_state_is_right() {
    let dir = scratch();
    let s = MMSBState::open(disk_config(dir.path())).unwrap();
    fill(&s, SIZES);
    let mid = snapshot(&s);
    s.close();
    let s = MMSBState::open(disk_config(dir.path())).unwrap();
    let id = s.page_ids().unwrap()[7];
    s.update_page_at(id, 0, &[1; 4096], None).unwrap();
    let snap = s.replay_to(mid.lsn).unwrap();
    assert_eq!(snapshot(&snap), mid);
}

#[test]
fn a_close_after_a_small_log_leaves_it_to_replay() {
    let dir = scratch();
    let s = MMSBState::open(disk_config(dir.path())).unwrap();
    fill(&s, &[100, 4096]);
    let before = snapshot(&s);
    s.close();
    // Under `CLOSE_CHECKPOINT_MIN_LOG` of log: no checkpoint at close; the reopen replays it.
    assert!(checkpoints(dir.path()).is_empty());
    let s = MMSBState::open(disk_config(dir.path())).unwrap();
    assert_eq!(s.log_info().unwrap().last_checkpoint_lsn, 0);
    assert_eq!(snapshot(&s), before);
}

/// Mappings of this process (`/proc/self/maps` lines).
fn vmas() -> usize {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count())
}

#[test]
fn a_lazy_open_of_many_small_pages_does_not_take_a_mapping_per_page() {
    // Each lazily mapped image is a VMA of its own and a process may have 65,530: small pages
    // are read, not mapped, so a state of many small pages opens without spending them (and
    // the large pages of the same state are still mapped and right).
    let dir = scratch();
    let s = MMSBState::open(disk_config(dir.path())).unwrap();
    let mut sizes = vec![4096u64; 3000];
    sizes.extend([1 << 20, 1 << 20, 65_536]);
    fill(&s, &sizes);
    let before = snapshot(&s);
    s.close();
    let n = vmas();
    let s = MMSBState::open(disk_config(dir.path())).unwrap();
    let grew = vmas().saturating_sub(n);
    assert_eq!(s.log_info().unwrap().last_checkpoint_lsn, before.lsn, "the close checkpointed");
    assert!(grew < 1000, "the open added {grew} mappings for 3,003 pages");
    assert_eq!(snapshot(&s), before);
}
