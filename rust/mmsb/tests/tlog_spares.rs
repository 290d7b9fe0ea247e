//! Spare blob files (issue 21): the blob files of pruned segments are kept in a small pool and
//! overwritten in place by later segments, so their stale bytes must never come back.

mod tlog_common;

use std::path::Path;

use mmsb::{Config, Location, MMSBState, PageMeta};
use tlog_common::*;

fn names(dir: &Path, suffix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(suffix))
        .collect();
    v.sort();
    v
}

/// The 64 KiB value of write `i`: every byte says which write it was.
fn value(i: u64) -> Vec<u8> {
    vec![(i % 251) as u8 + 1; 64 << 10]
}

/// Writes, checkpoints prune the segments behind (their blob files become spares), a later
/// segment takes a spare (longer than what it writes: the pruned segment's payloads, valid
/// under that segment's salt, lie past its own), and a crash in the middle of that segment
/// (the directory copied while the state is open: what the page cache holds after a process
/// crash) reopens to exactly the acknowledged writes. A flipped byte of a payload in the reused
/// file is refused, never replayed.
#[test]
fn a_reused_blob_file_never_replays_its_stale_bytes() {
    let d = scratch();
    let dir = d.path().join("state");
    let cfg = |dir: &Path| Config { segment_size: 256 << 10, log_size_cap: 0, ..disk_config(dir) };
    let s = MMSBState::open(cfg(&dir)).unwrap();
    let p = s.create_page(64 << 10, Location::Cpu, PageMeta::default()).unwrap();
    let mut i = 0u64;
    for _ in 0..3 {
        for _ in 0..12 {
            s.update_page(p, &value(i)).unwrap();
            i += 1;
        }
        s.checkpoint().unwrap();
    }
    let spares = names(&dir, ".pool").len();
    assert!(spares > 0, "pruned blob files become spares: {:?}", names(&dir, ""));
    // Write until a new segment starts (it takes a spare for its blob file), then one more.
    let segs = segments(&dir).len();
    let mut rolled = false;
    for _ in 0..8 {
        s.update_page(p, &value(i)).unwrap();
        i += 1;
        if segments(&dir).len() > segs || names(&dir, ".pool").len() < spares {
            rolled = true;
            break;
        }
    }
    assert!(rolled, "no new segment after 8 writes of 64 KiB into 256 KiB segments");
    s.update_page(p, &value(i)).unwrap();
    assert!(names(&dir, ".pool").len() < spares, "the new segment took a spare");
    let newest_blob = names(&dir, ".blob").pop().unwrap();
    let blob_len = std::fs::metadata(dir.join(&newest_blob)).unwrap().len();
    assert!(blob_len > 2 * (64 << 10), "the reused file holds stale payloads past the new ones ({blob_len} bytes)");
    let (want, lsn) = (s.read_page(p).unwrap(), s.lsn());
    assert_eq!(want, value(i));

    let crash = d.path().join("crash");
    copy_dir(&dir, &crash);
    let flipped = d.path().join("flipped");
    copy_dir(&dir, &flipped);
    drop(s);

    let r = MMSBState::open(cfg(&crash)).unwrap();
    assert_eq!(r.lsn(), lsn, "every acknowledged write, nothing after it");
    assert_eq!(r.read_page(p).unwrap(), want);
    // Appends after the reopen overwrite the stale bytes and reopen too.
    r.update_page(p, &value(i + 1)).unwrap();
    drop(r);
    let r = MMSBState::open(cfg(&crash)).unwrap();
    assert_eq!((r.lsn(), r.read_page(p).unwrap()), (lsn + 1, value(i + 1)));
    drop(r);

    // Flip the first byte of the newest blob file: the newest record's (or its predecessor's)
    // payload. Recovery must not hand that byte back as data.
    let f = flipped.join(&newest_blob);
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[0] ^= 0x40;
    std::fs::write(&f, &bytes).unwrap();
    match MMSBState::open(cfg(&flipped)) {
        Ok(r) => {
            assert!(r.lsn() < lsn, "the damaged record was replayed");
            let page = r.read_page(p).unwrap();
            assert!(page.iter().all(|&b| b == page[0]), "a torn or flipped payload was replayed");
        }
        Err(e) => eprintln!("damage refused: {e}"),
    }
}
