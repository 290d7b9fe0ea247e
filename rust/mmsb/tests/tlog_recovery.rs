//! Crash recovery: torn tails, bit flips, checkpoints, stale segments, versions, permissions.
#![allow(clippy::cast_possible_truncation)] // test data and sizes: truncation is intended or impossible here

mod tlog_common;

use mmsb::runtime::tlog::format::{check_record, seal_record, SegmentHeader, FORMAT_VERSION, RECORD_HEADER_LEN};
use mmsb::runtime::tlog::record::{Record, RecordType};
use mmsb::{Delta, Durability, Error, Location, MMSBState, PageMeta, RouteOp};
use tlog_common::*;

use mmsb::types::error::LogError;

fn meta(name: &str) -> PageMeta {
    PageMeta { name: name.into(), tags: vec![] }
}

/// Runs a fixed workload, returning the snapshot after every LSN (index = LSN).
fn workload(s: &MMSBState, n: usize) -> Vec<Snapshot> {
    let mut snaps = vec![snapshot(s)];
    let a = s.create_page(300, Location::Cpu, meta("a")).unwrap();
    snaps.push(snapshot(s));
    let b = s.create_page(64, Location::Gpu, meta("b")).unwrap();
    snaps.push(snapshot(s));
    for i in 0..n {
        let bytes: Vec<u8> = (0..40).map(|k| (i * 7 + k) as u8).collect();
        s.update_page_at(a, (i * 13 % 250) as u64, &bytes, None).unwrap();
        snaps.push(snapshot(s));
        if i % 3 == 0 {
            let d1 = Delta::write(i as u64 % 60, &[i as u8; 4]).unwrap();
            let d2 = Delta::dense_bytemask(0, &[1, 0, 1], &[9, 9, i as u8]).unwrap();
            let r = s
                .route_batch(&[
                    RouteOp { page: b, delta: &d1, expected_epoch: None },
                    RouteOp { page: a, delta: &d2, expected_epoch: None },
                ])
                .unwrap();
            assert_eq!(r.end - r.start, 2);
            // Both LSNs of the batch: the first one's state is the batch half applied.
            let mut half = snaps.last().unwrap().clone();
            half.lsn += 1;
            let bi = half.pages.iter().position(|(p, _)| p.id == b).unwrap();
            d1.apply(&mut half.pages[bi].1).unwrap();
            half.pages[bi].0.epoch += 1;
            snaps.push(half);
            snaps.push(snapshot(s));
        }
    }
    let c = s.create_page(10, Location::Cpu, meta("c")).unwrap();
    snaps.push(snapshot(s));
    s.free_page(c).unwrap();
    snaps.push(snapshot(s));
    for (i, sn) in snaps.iter().enumerate() {
        assert_eq!(sn.lsn, i as u64);
    }
    snaps
}

#[test]
fn reopen_after_checkpoint_and_more_writes_gives_the_same_state() {
    let d = scratch();
    let before = {
        let s = MMSBState::open(disk_config(d.path())).unwrap();
        workload(&s, 10);
        let k = s.checkpoint().unwrap();
        assert_eq!(k, s.lsn());
        let p = s.create_page(100, Location::Unified, meta("after")).unwrap();
        s.update_page(p, b"post-checkpoint").unwrap();
        snapshot(&s)
    };
    let s = MMSBState::open(disk_config(d.path())).unwrap();
    assert_eq!(snapshot(&s), before);
    // New ids continue after the recovered ones.
    let q = s.create_page(8, Location::Cpu, meta("q")).unwrap();
    assert!(before.pages.iter().all(|(p, _)| p.id < q));
    let info = s.log_info().unwrap();
    assert_eq!(info.checkpoints, 1);
    drop(s);
    let s = MMSBState::open(disk_config(d.path())).unwrap();
    assert_eq!(s.page_info(q).unwrap().name, "q");
}

#[test]
fn torn_tail_at_every_byte_of_the_last_record_is_cut_and_fsynced() {
    let d = scratch();
    let dir = d.path().join("base");
    let (full, prefix) = {
        let s = MMSBState::open(disk_config(&dir)).unwrap();
        let p = s.create_page(256, Location::Cpu, meta("p")).unwrap();
        s.update_page(p, b"first").unwrap();
        let prefix = snapshot(&s);
        let seg = segments(&dir).pop().unwrap();
        let good_len = std::fs::metadata(&seg).unwrap().len();
        let d = Delta::dense_bytemask(10, &[1; 50], &[0xAB; 50]).unwrap();
        s.route_delta(p, &d, None).unwrap();
        (std::fs::metadata(&seg).unwrap().len(), (prefix, good_len))
    };
    let (prefix, good_len) = prefix;
    assert!(full > good_len + RECORD_HEADER_LEN as u64);
    for cut in good_len..full {
        let trial = d.path().join(format!("cut{cut}"));
        copy_dir(&dir, &trial);
        let seg = segments(&trial).pop().unwrap();
        std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(cut).unwrap();
        let s = MMSBState::open(disk_config(&trial)).unwrap();
        assert_eq!(snapshot(&s), prefix, "cut at {cut}");
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), good_len, "torn tail not truncated at {cut}");
        assert_eq!(s.log_info().unwrap().truncated_bytes, cut - good_len);
        // The log continues cleanly after the cut.
        let p = s.page_ids().unwrap()[0];
        s.update_page(p, b"again").unwrap();
        let after = snapshot(&s);
        drop(s);
        assert_eq!(snapshot(&MMSBState::open(disk_config(&trial)).unwrap()), after);
        std::fs::remove_dir_all(&trial).unwrap();
    }
}

#[test]
fn a_flipped_bit_anywhere_is_detected_and_never_replayed() {
    let d = scratch();
    let dir = d.path().join("base");
    let snaps = {
        let s = MMSBState::open(disk_config(&dir)).unwrap();
        let p = s.create_page(64, Location::Cpu, meta("p")).unwrap();
        let mut snaps = vec![Snapshot { lsn: 0, pages: vec![] }, snapshot(&s)];
        for i in 0..3u8 {
            s.update_page_at(p, 8 * i as u64, &[i + 1; 8], None).unwrap();
            snaps.push(snapshot(&s));
        }
        snaps
    };
    let seg = segments(&dir).pop().unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    let name = seg.file_name().unwrap().to_owned();
    let (mut corrupt, mut truncated) = (0, 0);
    for pos in 0..bytes.len() {
        for bit in [0u8, 3, 7] {
            let trial = d.path().join("trial");
            copy_dir(&dir, &trial);
            let mut b = bytes.clone();
            b[pos] ^= 1 << bit;
            std::fs::write(trial.join(&name), &b).unwrap();
            match MMSBState::open(disk_config(&trial)) {
                Err(Error::Log(LogError::Corrupt { .. })) => corrupt += 1,
                Err(e) => panic!("flip at {pos}: unexpected error {e}"),
                Ok(s) => {
                    let sn = snapshot(&s);
                    assert!(sn.lsn < 5, "flip of bit {bit} at byte {pos} went unnoticed");
                    assert_eq!(sn, snaps[sn.lsn as usize], "flip at {pos} replayed altered data");
                    truncated += 1;
                }
            }
            std::fs::remove_dir_all(&trial).unwrap();
        }
    }
    eprintln!("{} flips: {corrupt} reported corrupt, {truncated} cut as a torn tail", bytes.len() * 3);
    assert!(corrupt > 0 && truncated > 0);
}

#[test]
fn tolerant_recovery_skips_damage_and_checkpoints() {
    let d = scratch();
    let dir = d.path().join("s");
    let p = {
        let s = MMSBState::open(disk_config(&dir)).unwrap();
        let p = s.create_page(64, Location::Cpu, meta("p")).unwrap();
        for i in 0..5u8 {
            s.update_page_at(p, 8 * i as u64, &[i + 1; 8], None).unwrap();
        }
        p
    };
    let seg = segments(&dir).pop().unwrap();
    let mut b = std::fs::read(&seg).unwrap();
    let ends = record_ends(&b);
    assert_eq!(ends.len(), 6);
    // Damage the last byte of the second update (record 2, after the create and one update).
    b[ends[2] - 1] ^= 0xFF;
    std::fs::write(&seg, &b).unwrap();
    assert!(matches!(MMSBState::open(disk_config(&dir)), Err(Error::Log(LogError::Corrupt { .. }))));
    let cfg = mmsb::Config { tolerant_recovery: true, ..disk_config(&dir) };
    let s = MMSBState::open(cfg).unwrap();
    let info = s.log_info().unwrap();
    assert_eq!(info.skipped_regions, 1);
    assert_eq!(info.checkpoints, 1, "tolerant recovery checkpoints right away");
    let bytes = s.read_page(p).unwrap();
    assert_eq!(&bytes[0..8], &[1; 8]);
    assert_eq!(&bytes[8..16], &[0; 8], "the damaged record is skipped");
    assert_eq!(&bytes[32..40], &[5; 8], "records after the damage were replayed");
    let snap = snapshot(&s);
    drop(s);
    // The damaged region is no longer needed: a strict open now succeeds.
    assert_eq!(snapshot(&MMSBState::open(disk_config(&dir)).unwrap()), snap);
}

/// End offsets of the records of a segment file.
fn record_ends(seg: &[u8]) -> Vec<usize> {
    let h = SegmentHeader::decode(seg, "x").unwrap().unwrap();
    let mut at = mmsb::runtime::tlog::format::SEGMENT_HEADER_LEN;
    let mut ends = vec![];
    while let Ok(r) = check_record(&seg[at..], h.salt, &[]) {
        at += RECORD_HEADER_LEN + r.len as usize;
        ends.push(at);
    }
    ends
}

fn stale_segment(segno: u64, prev_salt: u64, base_lsn: u64, salt: u64, seal_salt: u64, page: u64) -> Vec<u8> {
    let h = SegmentHeader { flags: 0, segno, salt, prev_salt, base_lsn };
    let mut out = h.encode().to_vec();
    let rec = Record::Batch(vec![(mmsb::PageId(page), Delta::write(0, b"STALE").unwrap())]);
    let at = out.len();
    out.resize(at + RECORD_HEADER_LEN, 0);
    rec.encode(&mut out);
    seal_record(&mut out[at..], seal_salt, base_lsn + 1, 1, RecordType::Batch as u8);
    out
}

#[test]
fn records_of_another_generation_are_never_replayed() {
    let d = scratch();
    let dir = d.path().join("s");
    let (snap, p) = {
        let s = MMSBState::open(disk_config(&dir)).unwrap();
        let p = s.create_page(64, Location::Cpu, meta("p")).unwrap();
        s.update_page(p, b"live").unwrap();
        (snapshot(&s), p)
    };
    let seg = segments(&dir).pop().unwrap();
    let raw = std::fs::read(&seg).unwrap();
    let live = SegmentHeader::decode(&raw, "x").unwrap().unwrap();
    // (a) A next segment whose header does not chain to the live one (an older generation).
    let stale = stale_segment(live.segno + 1, 0xDEAD_BEEF, snap.lsn, 77, 77, p.0);
    let stale_path = dir.join(format!("log-{:020}.seg", live.segno + 1));
    std::fs::write(&stale_path, &stale).unwrap();
    // It holds a record past the live log, so strict recovery refuses to drop it and changes
    // nothing; tolerant recovery moves it into quarantine/ (never replayed, never deleted).
    match MMSBState::open(disk_config(&dir)) {
        Err(Error::Log(LogError::Corrupt { reason, .. })) => assert!(reason.contains("quarantine"), "{reason}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(std::fs::read(&stale_path).unwrap(), stale);
    let s = MMSBState::open(mmsb::Config { tolerant_recovery: true, ..disk_config(&dir) }).unwrap();
    assert_eq!(snapshot(&s), snap, "a stale segment was replayed");
    assert!(!stale_path.exists());
    assert_eq!(s.log_info().unwrap().quarantined.len(), 1);
    let moved = dir.join("quarantine").join(format!("log-{:020}.seg.0", live.segno + 1));
    assert_eq!(std::fs::read(moved).unwrap(), stale);
    drop(s);
    // (b) Records appended to the live segment but sealed with another generation's salt.
    let before = std::fs::read(&seg).unwrap();
    let foreign = stale_segment(live.segno, 0, snap.lsn, live.salt, live.salt ^ 1, p.0);
    std::fs::write(&seg, [&before[..], &foreign[mmsb::runtime::tlog::format::SEGMENT_HEADER_LEN..]].concat()).unwrap();
    let s = MMSBState::open(disk_config(&dir)).unwrap();
    assert_eq!(snapshot(&s), snap, "a record with the wrong salt was replayed");
    assert_eq!(std::fs::read(&seg).unwrap(), before);
}

#[test]
fn a_newer_format_version_is_rejected_clearly() {
    let d = scratch();
    let dir = d.path().join("s");
    {
        let s = MMSBState::open(disk_config(&dir)).unwrap();
        s.create_page(8, Location::Cpu, meta("p")).unwrap();
        s.checkpoint().unwrap();
    }
    let bump = |path: &std::path::Path, crc_end: usize| {
        let mut b = std::fs::read(path).unwrap();
        b[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let crc = crc32c::crc32c(&b[0..crc_end]);
        b[crc_end..crc_end + 4].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(path, b).unwrap();
    };
    let seg = segments(&dir).pop().unwrap();
    let ck = dir.join(format!("ckpt-{:020}.ckpt", 1));
    let trial = d.path().join("seg");
    copy_dir(&dir, &trial);
    bump(&trial.join(seg.file_name().unwrap()), 52);
    match MMSBState::open(disk_config(&trial)) {
        Err(e @ Error::Log(LogError::UnsupportedVersion { .. })) => {
            assert_eq!(e.code(), mmsb::ErrorCode::UnsupportedVersion);
            assert!(e.to_string().contains(&format!("format version {}", FORMAT_VERSION + 1)), "{e}");
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    let trial = d.path().join("ckpt");
    copy_dir(&dir, &trial);
    bump(&trial.join(ck.file_name().unwrap()), 56);
    assert!(matches!(MMSBState::open(disk_config(&trial)), Err(Error::Log(LogError::UnsupportedVersion { .. }))));
}

#[test]
fn files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let d = scratch();
    let dir = d.path().join("s");
    let s = MMSBState::open(mmsb::Config { segment_size: 256, ..disk_config(&dir) }).unwrap();
    let p = s.create_page(100, Location::Cpu, meta("p")).unwrap();
    for i in 0..20u8 {
        s.update_page(p, &[i; 100]).unwrap();
    }
    s.checkpoint().unwrap();
    s.compact_log().unwrap();
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        assert!(!name.contains("..") && !name.contains('/'));
        assert_eq!(e.metadata().unwrap().permissions().mode() & 0o777, 0o600, "{name}");
        n += 1;
    }
    assert!(n >= 2);
}

#[test]
fn group_commit_writers_all_survive_reopen() {
    let d = scratch();
    let dir = d.path().join("s");
    let cfg = mmsb::Config { durability: Durability::GroupCommit, ..disk_config(&dir) };
    let snap = {
        let s = std::sync::Arc::new(MMSBState::open(cfg.clone()).unwrap());
        let pages: Vec<_> = (0..4).map(|i| s.create_page(512, Location::Cpu, meta(&format!("{i}"))).unwrap()).collect();
        std::thread::scope(|sc| {
            for t in 0..8usize {
                let s = s.clone();
                let pages = pages.clone();
                sc.spawn(move || {
                    for i in 0..50usize {
                        s.update_page_at(pages[t % 4], (t * 64) as u64 % 512, &[(i + t) as u8; 64], None).unwrap();
                    }
                });
            }
        });
        assert_eq!(s.lsn(), 4 + 8 * 50);
        snapshot(&s)
    };
    assert_eq!(snapshot(&MMSBState::open(cfg).unwrap()), snap);
}

#[test]
fn log_size_cap_keeps_the_log_bounded() {
    let d = scratch();
    let dir = d.path().join("s");
    let cfg = mmsb::Config { log_size_cap: 64 << 10, segment_size: 16 << 10, ..disk_config(&dir) };
    let s = MMSBState::open(cfg.clone()).unwrap();
    let p = s.create_page(4096, Location::Cpu, meta("p")).unwrap();
    let mut max_bytes = 0;
    for i in 0..2000usize {
        s.update_page_at(p, (i * 97 % 3000) as u64, &[i as u8; 1000], None).unwrap();
        max_bytes = max_bytes.max(s.log_info().unwrap().log_bytes);
    }
    // A pass may still be pruning: `oldest_lsn` is read once the thread is idle.
    s.wait_for_maintenance().unwrap();
    let info = s.log_info().unwrap();
    assert_eq!(info.maintenance_failures, 0, "{:?}", info.last_maintenance_error);
    assert!(info.checkpoints >= 1 && info.checkpoints <= 2);
    // The maintenance thread runs behind the writer: writers are slowed down past twice the cap
    // and stopped at four times, so the log holds at most two intervals of four caps (the older
    // one until the pass compacts it), plus one record and segment headers (16 KiB segments).
    assert!(max_bytes < 8 * (64 << 10) + 2 * (16 << 10), "log grew to {max_bytes} bytes");
    let snap = snapshot(&s);
    let oldest = info.oldest_lsn;
    assert!(oldest > 0);
    assert!(matches!(s.replay_to(oldest - 1), Err(Error::Log(LogError::LsnOutOfRange(_)))));
    assert_eq!(snapshot(&s.replay_to(oldest).unwrap()).lsn, oldest);
    assert_eq!(snapshot(&s.replay_to(s.lsn()).unwrap()), snap);
    drop(s);
    assert_eq!(snapshot(&MMSBState::open(cfg).unwrap()), snap);
}

/// Copies the state directory `from` as a crash of its open writer leaves it (without `LOCK`).
fn copy_as_crashed(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.file_type().unwrap().is_file() && e.file_name() != "LOCK" {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Issue 21: `replay_budget` bounds what an open after a crash replays, far below
/// `log_size_cap` (here the default 256 MiB, never reached): the maintenance thread checkpoints
/// each time the log since the newest checkpoint passes the budget. Without a budget the whole
/// log is replayed.
#[test]
fn replay_budget_bounds_the_replay_after_a_crash() {
    const BUDGET: u64 = 64 << 10;
    const RECORD: u64 = 1000;
    let d = scratch();
    let mut replays = Vec::new();
    for budget in [BUDGET, 0] {
        let dir = d.path().join(format!("s{budget}"));
        let cfg = mmsb::Config { replay_budget: budget, segment_size: 16 << 10, ..disk_config(&dir) };
        assert_eq!(cfg.log_size_cap, 256 << 20);
        let s = MMSBState::open(cfg.clone()).unwrap();
        let p = s.create_page(4096, Location::Cpu, meta("p")).unwrap();
        for i in 0..1000usize {
            s.update_page_at(p, (i * 97 % 3000) as u64, &[i as u8; RECORD as usize], None).unwrap();
        }
        s.wait_for_maintenance().unwrap();
        let info = s.log_info().unwrap();
        assert_eq!(info.maintenance_failures, 0, "{:?}", info.last_maintenance_error);
        let crashed = d.path().join(format!("crashed{budget}"));
        copy_as_crashed(&dir, &crashed);
        let want = snapshot(&s);
        let replay = mmsb::runtime::tlog::inspect::DirLog::open(&crashed).unwrap().info().unwrap().replay;
        let reopened = MMSBState::open(mmsb::Config { dir: Some(crashed), ..cfg }).unwrap();
        assert_eq!(snapshot(&reopened), want, "budget {budget}");
        replays.push((info.maintenance_passes, replay));
    }
    let [(passes, bounded), (no_passes, whole)] = replays[..] else { unreachable!() };
    // About 1 MB was logged. The thread runs behind the writer (a pass may cover several
    // budgets), but a log past the budget always asks for one more pass: once it is idle, at
    // most the budget plus the record that crossed it is left to replay (each record is 1000
    // bytes of payload and its framing).
    assert!(passes >= 1, "{passes} passes");
    assert!(bounded.checkpoint_lsn > 0, "{bounded:?}");
    assert!(bounded.bytes <= BUDGET + 2 * RECORD, "{bounded:?}");
    assert!(bounded.records <= BUDGET / RECORD + 1, "{bounded:?}");
    assert_eq!(no_passes, 0);
    assert_eq!(whole.checkpoint_lsn, 0, "{whole:?}");
    assert!(whole.records >= 1001 && whole.bytes >= 1000 * RECORD, "{whole:?}");
}

/// `replay_budget` is 0 (off) or in the cap's range.
#[test]
fn replay_budget_out_of_range_is_refused() {
    let d = scratch();
    let cfg = mmsb::Config { replay_budget: 255, ..disk_config(&d.path().join("s")) };
    let Err(Error::State(e)) = MMSBState::open(cfg) else { panic!("a 255-byte replay budget was accepted") };
    assert!(e.to_string().contains("replay_budget is 255"), "{e}");
}

#[test]
fn replay_sees_every_lsn_and_epoch_slices_list_the_records() {
    for disk in [false, true] {
        let d = scratch();
        let s = if disk {
            MMSBState::open(disk_config(&d.path().join("s"))).unwrap()
        } else {
            MMSBState::open(mem_config()).unwrap()
        };
        let snaps = workload(&s, 9);
        for (lsn, want) in snaps.iter().enumerate() {
            let r = s.replay_to(lsn as u64).unwrap();
            assert!(r.is_read_only());
            assert_eq!(&snapshot(&r), want, "replay to {lsn}");
            assert!(matches!(r.create_page(1, Location::Cpu, meta("x")), Err(Error::State(_))));
        }
        assert!(matches!(s.replay_to(snaps.len() as u64), Err(Error::Log(LogError::LsnOutOfRange(_)))));
        let slice: Vec<_> = s.log_records(3..8).unwrap().map(Result::unwrap).collect();
        assert_eq!(slice.iter().map(|e| e.lsn).collect::<Vec<_>>(), vec![3, 4, 5, 6, 7]);
        assert!(matches!(slice[0].op, mmsb::LogOp::Delta { .. }));
        let all = s.log_records(1..u64::MAX).unwrap().count();
        assert_eq!(all, snaps.len() - 1);
    }
}

#[test]
fn states_without_logging_do_not_log() {
    let s = MMSBState::in_memory();
    assert!(!s.has_log());
    let p = s.create_page(8, Location::Cpu, meta("p")).unwrap();
    s.update_page(p, b"x").unwrap();
    assert_eq!(s.lsn(), 2, "LSNs are assigned the same way with or without a log");
    assert!(s.replay_to(1).is_err());
    assert!(s.checkpoint().is_err());
}

#[test]
fn a_directory_serves_one_open_state_at_a_time() {
    let d = scratch();
    let dir = d.path().join("s");
    let s = MMSBState::open(disk_config(&dir)).unwrap();
    match MMSBState::open(disk_config(&dir)) {
        Err(e @ Error::Log(LogError::Busy { .. })) => assert!(e.to_string().contains("in use"), "{e}"),
        other => panic!("a second open of a live directory must fail, got {other:?}"),
    }
    drop(s);
    MMSBState::open(disk_config(&dir)).unwrap();
}

#[test]
fn epoch_slices_read_segment_by_segment() {
    let s = MMSBState::open(mmsb::Config { segment_size: 300, ..mem_config() }).unwrap();
    let snaps = workload(&s, 30);
    assert!(s.log_info().unwrap().segments > 5);
    let lsns: Vec<u64> = s.log_records(1..s.lsn() + 1).unwrap().map(|e| e.unwrap().lsn).collect();
    assert_eq!(lsns, (1..snaps.len() as u64).collect::<Vec<_>>());
    let mid: Vec<u64> = s.log_records(10..20).unwrap().map(|e| e.unwrap().lsn).collect();
    assert_eq!(mid, (10..20).collect::<Vec<_>>());
    // A compaction under a reader ends the slice with LsnOutOfRange, never with wrong entries.
    let mut it = s.log_records(1..s.lsn() + 1).unwrap();
    assert_eq!(it.next().unwrap().unwrap().lsn, 1);
    s.compact_log().unwrap();
    let rest: Vec<_> = it.collect();
    assert!(matches!(rest.last(), Some(Err(Error::Log(LogError::LsnOutOfRange(_))))), "{rest:?}");
    assert!(rest.iter().filter_map(|e| e.as_ref().ok()).all(|e| e.lsn > 1));
}

#[test]
fn damage_in_history_a_checkpoint_covers_costs_history_not_data() {
    let d = scratch();
    let dir = d.path().join("s");
    let snap = {
        let s = MMSBState::open(disk_config(&dir)).unwrap();
        let p = s.create_page(64, Location::Cpu, meta("p")).unwrap();
        s.checkpoint().unwrap();
        for i in 0..5u8 {
            s.update_page_at(p, 8 * i as u64, &[i + 1; 8], None).unwrap();
        }
        s.checkpoint().unwrap();
        s.update_page(p, b"after").unwrap();
        assert_eq!(s.log_info().unwrap().segments, 2, "history between the checkpoints is kept");
        snapshot(&s)
    };
    let first = segments(&dir).remove(0);
    let mut b = std::fs::read(&first).unwrap();
    let ends = record_ends(&b);
    assert_eq!(ends.len(), 5);
    for damaged in [1usize, 4] {
        let trial = d.path().join(format!("t{damaged}"));
        copy_dir(&dir, &trial);
        b = std::fs::read(&first).unwrap();
        b[ends[damaged] - 1] ^= 0x40;
        std::fs::write(trial.join(first.file_name().unwrap()), &b).unwrap();
        let s = MMSBState::open(disk_config(&trial)).unwrap();
        assert_eq!(snapshot(&s), snap);
        // The open does not even read a segment the newest checkpoint covers wholly (issue 21:
        // verifying it was most of a large reopen), so it finds no damage there.
        let info = s.log_info().unwrap();
        assert_eq!(info.skipped_regions, 0);
        assert_eq!((info.checkpoints, info.last_checkpoint_lsn), (2, snap.lsn - 1));
        drop(s);
        assert_eq!(snapshot(&MMSBState::open(disk_config(&trial)).unwrap()), snap);
        // Where the history is read, the damage is found: `mmsb verify` (and replay into it).
        let v = mmsb::runtime::tlog::inspect::read_dir(&trial, |d| d.verify()).unwrap();
        assert!(!v.problems.is_empty(), "{v:?}");
        // The newest checkpoint damaged: the open falls back to the older one and replays the
        // history after it, which it now reads and verifies.
        let newest = std::fs::read_dir(&trial)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "ckpt"))
            .max()
            .unwrap();
        let mut c = std::fs::read(&newest).unwrap();
        let mid = c.len() / 2;
        c[mid] ^= 0x10;
        std::fs::write(&newest, &c).unwrap();
        match MMSBState::open(disk_config(&trial)) {
            // Damage in the history the fallback replays: refused, nothing lost.
            Err(e) => assert_eq!(e.code(), mmsb::ErrorCode::Corrupt, "{e}"),
            Ok(_) => panic!("damage in the replayed history was not detected"),
        }
    }
}

#[test]
fn tolerant_recovery_survives_a_damaged_segment_header() {
    let d = scratch();
    let dir = d.path().join("s");
    {
        let s = MMSBState::open(disk_config(&dir)).unwrap();
        let p = s.create_page(64, Location::Cpu, meta("p")).unwrap();
        s.update_page(p, b"x").unwrap();
    }
    let seg = segments(&dir).pop().unwrap();
    let mut b = std::fs::read(&seg).unwrap();
    b[20] ^= 1;
    std::fs::write(&seg, &b).unwrap();
    assert!(matches!(MMSBState::open(disk_config(&dir)), Err(Error::Log(LogError::Corrupt { .. }))));
    let s = MMSBState::open(mmsb::Config { tolerant_recovery: true, ..disk_config(&dir) }).unwrap();
    assert_eq!(s.log_info().unwrap().skipped_regions, 1);
    let p = s.create_page(8, Location::Cpu, meta("new")).unwrap();
    s.update_page(p, b"y").unwrap();
    let snap = snapshot(&s);
    drop(s);
    assert_eq!(snapshot(&MMSBState::open(disk_config(&dir)).unwrap()), snap);
}

#[test]
fn maintenance_and_readers_run_beside_writers() {
    let d = scratch();
    let dir = d.path().join("s");
    let cfg = mmsb::Config {
        durability: Durability::GroupCommit,
        log_size_cap: 32 << 10,
        segment_size: 8 << 10,
        ..disk_config(&dir)
    };
    let s = std::sync::Arc::new(MMSBState::open(cfg.clone()).unwrap());
    let pages: Vec<_> = (0..4).map(|i| s.create_page(1024, Location::Cpu, meta(&format!("{i}"))).unwrap()).collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|sc| {
        let writers: Vec<_> = (0..4usize)
            .map(|t| {
                let (s, p) = (&s, pages[t]);
                sc.spawn(move || {
                    for i in 0..300usize {
                        s.update_page_at(p, (i * 17 % 900) as u64, &[(i + t) as u8; 100], None).unwrap();
                    }
                })
            })
            .collect();
        let (s, done) = (&s, &done);
        sc.spawn(move || {
            let mut replays = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let lsn = s.lsn();
                let oldest = s.log_info().unwrap().oldest_lsn;
                // Replays race with maintenance: either exact, or refused (out of range, compacted).
                match s.replay_to(lsn.max(oldest)) {
                    Ok(r) => assert!(r.lsn() >= oldest),
                    Err(Error::Log(LogError::LsnOutOfRange(_) | LogError::LsnCompacted { .. })) => {}
                    Err(e) => panic!("replay failed: {e}"),
                }
                for e in s.log_records(oldest + 1..lsn + 1).into_iter().flatten() {
                    if let Err(e) = e {
                        assert!(matches!(e, Error::Log(LogError::LsnOutOfRange(_))), "{e}");
                    }
                }
                if replays % 5 == 0 {
                    s.checkpoint().unwrap();
                }
                replays += 1;
            }
        });
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let info = s.log_info().unwrap();
    assert_eq!(info.maintenance_failures, 0, "{:?}", info.last_maintenance_error);
    let snap = snapshot(&s);
    assert_eq!(snapshot(&s.replay_to(s.lsn()).unwrap()), snap);
    drop(s);
    assert_eq!(snapshot(&MMSBState::open(cfg).unwrap()), snap);
}

/// The blob file beside a segment file.
fn blob_of(seg: &std::path::Path) -> std::path::PathBuf {
    seg.with_extension("blob")
}

#[test]
fn large_payloads_go_to_the_blob_file_and_tear_cleanly_in_either_file() {
    use mmsb::runtime::tlog::format::BlobRef;
    let d = scratch();
    let dir = d.path().join("s");
    let (before, mid, prefix, good_len, good_blob) = {
        let s = MMSBState::open(disk_config(&dir)).unwrap();
        let a = s.create_page(100_000, Location::Cpu, meta("a")).unwrap();
        let b = s.create_page(70_000, Location::Cpu, meta("b")).unwrap();
        let big: Vec<u8> = (0..65_536u32).map(|i| (i * 31 % 251) as u8).collect();
        let mask: Vec<u8> = (0..20_000).map(|i| (i % 7 != 0) as u8).collect();
        let dense = Delta::dense_bytemask(1000, &mask, &big[..20_000]).unwrap();
        let sparse = Delta::sparse([(5u64, &big[..5000]), (30_000, &b"small"[..]), (40_000, &big[100..9000])]).unwrap();
        let small = Delta::write(3, b"tiny").unwrap();
        let before = snapshot(&s);
        // Payloads of 20,000 + 4 + 13,905 bytes: over BLOB_MIN, so one blob record.
        s.route_batch(&[
            RouteOp { page: a, delta: &dense, expected_epoch: None },
            RouteOp { page: b, delta: &small, expected_epoch: None },
            RouteOp { page: b, delta: &sparse, expected_epoch: None },
        ])
        .unwrap();
        let mid = snapshot(&s);
        let mid_blob = std::fs::metadata(blob_of(&segments(&dir).pop().unwrap())).unwrap().len();
        assert!(mid_blob > 33_000, "the batch's payloads are in the blob file");
        // 65,536 bytes with some zero bytes the diff leaves out: a blob record of several pieces.
        s.update_page_at(a, 30_000, &big, None).unwrap();
        let prefix = snapshot(&s);
        let seg = segments(&dir).pop().unwrap();
        let good_len = std::fs::metadata(&seg).unwrap().len();
        let good_blob = std::fs::metadata(blob_of(&seg)).unwrap().len();
        s.route_delta(b, &Delta::write(0, &big).unwrap(), None).unwrap();
        let full = snapshot(&s);
        let on_disk: u64 = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg" || x == "blob"))
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        assert_eq!(s.log_info().unwrap().log_bytes, on_disk, "log_bytes counts the blob files");
        drop(s);
        assert_eq!(snapshot(&MMSBState::open(disk_config(&dir)).unwrap()), full);
        (before, mid, prefix, good_len, good_blob)
    };
    let seg = segments(&dir).pop().unwrap();
    // The last record in the segment: header, blob descriptor (one piece), count, page, the
    // sparse delta's prefix; its 64 KiB payload starts at the next 64 KiB boundary of the blob.
    let rec_end = good_len + (RECORD_HEADER_LEN + BlobRef::encoded_len(1) + 4 + 8 + 17) as u64;
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), rec_end);
    let blob_start = good_blob.next_multiple_of(65_536);
    assert_eq!(std::fs::metadata(blob_of(&seg)).unwrap().len(), blob_start + 65_536);
    // (file, length to cut it to, the state expected after reopening)
    let mut cuts: Vec<(bool, u64, &Snapshot)> = vec![];
    for cut in [good_len + 1, good_len + 40, good_len + 70, rec_end - 1] {
        cuts.push((false, cut, &prefix));
    }
    for cut in [good_blob, blob_start, blob_start + 1, blob_start + 30_000, blob_start + 65_535] {
        cuts.push((true, cut, &prefix));
    }
    // Cutting into an earlier record's payload tears that record and every one after it.
    cuts.push((true, good_blob - 1, &mid));
    for cut in [0, 100] {
        cuts.push((true, cut, &before));
    }
    for (i, (blob, cut, expect)) in cuts.into_iter().enumerate() {
        let trial = d.path().join(format!("cut{i}"));
        copy_dir(&dir, &trial);
        let seg = segments(&trial).pop().unwrap();
        let file = if blob { blob_of(&seg) } else { seg.clone() };
        std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(cut).unwrap();
        let s = MMSBState::open(disk_config(&trial)).unwrap();
        // (assert! rather than assert_eq!: a failure would print megabytes of page bytes)
        assert!(&snapshot(&s) == expect, "cut {} at {cut}", if blob { "blob" } else { "segment" });
        assert!(s.log_info().unwrap().truncated_bytes > 0);
        // Appends continue after the cut, also blob appends, and survive another reopen.
        let p = s.page_ids().unwrap()[0];
        s.update_page(p, b"continues").unwrap();
        s.update_page_at(p, 0, &vec![7u8; 40_000], None).unwrap();
        let after = snapshot(&s);
        drop(s);
        assert!(snapshot(&MMSBState::open(disk_config(&trial)).unwrap()) == after, "cut {i}");
    }
}

#[test]
fn version_1_logs_still_open() {
    let d = scratch();
    let dir = d.path().join("s");
    let snap = {
        let s = MMSBState::open(disk_config(&dir)).unwrap();
        let p = s.create_page(64, Location::Cpu, meta("p")).unwrap();
        s.update_page(p, b"written by version 1").unwrap();
        snapshot(&s)
    };
    // Version 1 is version 2 without blob records: relabel the segment.
    let seg = segments(&dir).pop().unwrap();
    let mut b = std::fs::read(&seg).unwrap();
    b[8..12].copy_from_slice(&1u32.to_le_bytes());
    let crc = crc32c::crc32c(&b[0..52]);
    b[52..56].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&seg, b).unwrap();
    let s = MMSBState::open(disk_config(&dir)).unwrap();
    assert_eq!(snapshot(&s), snap);
    assert_eq!(s.log_info().unwrap().truncated_bytes, 0);
}

#[test]
fn orphan_blob_files_are_removed_at_open_and_user_files_kept() {
    let d = scratch();
    let dir = d.path().join("s");
    let snap = {
        let s = MMSBState::open(disk_config(&dir)).unwrap();
        let p = s.create_page(65_536, Location::Cpu, meta("p")).unwrap();
        s.update_page(p, &vec![3u8; 65_536]).unwrap();
        snapshot(&s)
    };
    let orphan = dir.join(format!("log-{:020}.blob", 999));
    std::fs::write(&orphan, b"left by an interrupted removal").unwrap();
    let user = dir.join("log-1.blob");
    std::fs::write(&user, b"not ours").unwrap();
    let s = MMSBState::open(disk_config(&dir)).unwrap();
    assert_eq!(snapshot(&s), snap);
    assert!(!orphan.exists());
    // Past the chain's first segment it may be the payloads of a lost segment: moved aside, kept.
    let kept = dir.join("quarantine").join(format!("log-{:020}.blob.0", 999));
    assert_eq!(std::fs::read(kept).unwrap(), b"left by an interrupted removal");
    assert_eq!(s.log_info().unwrap().quarantined.len(), 1);
    assert!(user.exists());
    // Compaction replaces the chain; the old blob files go with their segments.
    s.compact_log().unwrap();
    let blobs = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            mmsb::runtime::tlog::format::parse_blob_name(&e.as_ref().unwrap().file_name().to_string_lossy()).is_some()
        })
        .count();
    assert_eq!(blobs, 0);
    drop(s);
    assert_eq!(snapshot(&MMSBState::open(disk_config(&dir)).unwrap()), snap);
}

#[test]
fn padding_records_are_skipped_by_readers() {
    use mmsb::runtime::tlog::format::{write_record_header, PAD_KIND};
    let d = scratch();
    let dir = d.path().join("s");
    let p = {
        let s = MMSBState::open(disk_config(&dir)).unwrap();
        s.create_page(64, Location::Cpu, meta("p")).unwrap()
    };
    let seg = segments(&dir).pop().unwrap();
    let mut b = std::fs::read(&seg).unwrap();
    let salt = SegmentHeader::decode(&b, "x").unwrap().unwrap().salt;
    // A pad, then a valid record after it.
    let at = b.len();
    b.resize(at + RECORD_HEADER_LEN + 100, 0);
    write_record_header(&mut b[at..], 100, 0, 0, PAD_KIND);
    let crc = mmsb::runtime::tlog::format::record_crc(salt, [&b[at + 8..]]);
    b[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
    let rec = Record::Batch(vec![(p, Delta::write(0, b"after pad").unwrap())]);
    let at = b.len();
    b.resize(at + RECORD_HEADER_LEN, 0);
    rec.encode(&mut b);
    seal_record(&mut b[at..], salt, 2, 1, RecordType::Batch as u8);
    std::fs::write(&seg, &b).unwrap();
    let s = MMSBState::open(disk_config(&dir)).unwrap();
    assert_eq!(s.lsn(), 2);
    assert_eq!(&s.read_page(p).unwrap()[..9], b"after pad");
    assert_eq!(s.log_records(1..3).unwrap().count(), 2, "the pad is not an entry");
}

/// Regression (issue 15): a state directory this process cannot write (here: its files are
/// writable, the directory is not) is refused at open; it used to open and take writes, failing
/// only at the next segment roll or checkpoint.
#[test]
fn a_directory_that_cannot_be_written_is_refused_at_open() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("s");
    {
        let s = MMSBState::open(disk_config(&dir)).unwrap();
        s.create_page(8, Location::Cpu, meta("p")).unwrap();
    }
    let mode = |p: &std::path::Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    for e in std::fs::read_dir(&dir).unwrap() {
        mode(&e.unwrap().path(), 0o666);
    }
    mode(d.path(), 0o755);
    mode(&dir, 0o555);
    let at = dir.clone();
    let r = std::thread::spawn(move || {
        // Root may write anywhere, so the check needs an unprivileged user.
        // SAFETY: geteuid only reads this process's effective user id.
        if unsafe { libc::geteuid() } == 0 {
            // SAFETY: the raw system call changes the credentials of this thread only (Linux
            // keeps them per thread; libc's setresuid would change every thread's), and the
            // thread ends after the open.
            let rc = unsafe { libc::syscall(libc::SYS_setresuid, 65534u32, 65534u32, 65534u32) };
            assert_eq!(rc, 0);
        }
        MMSBState::open(disk_config(&at)).map(|_| ())
    })
    .join()
    .unwrap();
    mode(&dir, 0o700);
    match r {
        Err(e @ Error::Log(LogError::Io { .. })) => assert!(e.to_string().contains("is not writable"), "{e}"),
        other => panic!("expected an I/O error at open, got {other:?}"),
    }
    // Writable again: it opens.
    MMSBState::open(disk_config(&dir)).unwrap();
}

/// Regression (issue 15): with `blob_min` 0 every record without a payload (page create, page
/// free) was written as a blob record with no pieces, which the reader rejects: the log could
/// not be reopened. Every value of the option works.
#[test]
fn every_blob_min_value_logs_and_reopens() {
    for blob_min in [0, 1, 9, u64::MAX] {
        let d = scratch();
        let dir = d.path().join("s");
        let cfg = mmsb::Config { blob_min, durability: Durability::Always, segment_size: 512, ..disk_config(&dir) };
        let want = {
            let s = MMSBState::open(cfg.clone()).unwrap();
            let a = s.create_page(64, Location::Cpu, meta("a")).unwrap();
            let b = s.create_page(16, Location::Cpu, meta("b")).unwrap();
            for i in 0..20u8 {
                s.update_page_at(a, u64::from(i), &[i; 40], None).unwrap();
            }
            s.free_page(b).unwrap();
            snapshot(&s)
        };
        let s = MMSBState::open(cfg.clone()).unwrap();
        assert_eq!(snapshot(&s), want, "blob_min {blob_min}");
        assert_eq!(s.log_info().unwrap().truncated_bytes, 0, "blob_min {blob_min}");
        let replayed = s.replay_to(3).unwrap();
        assert_eq!(replayed.lsn(), 3, "blob_min {blob_min}");
    }
}

/// Regression (issue 15): `segment_size` 0, 1 and `u64::MAX` (and other out-of-range options)
/// were accepted. Each option is checked at open against its documented range, and the error
/// names that range.
#[test]
fn config_values_out_of_range_are_refused_with_the_accepted_range() {
    use mmsb::types::error::StateError;
    let base = mem_config();
    let bad = [
        ("segment_size", mmsb::Config { segment_size: 0, ..base.clone() }, "256..=4294967296"),
        ("segment_size", mmsb::Config { segment_size: 1, ..base.clone() }, "256..=4294967296"),
        ("segment_size", mmsb::Config { segment_size: 255, ..base.clone() }, "256..=4294967296"),
        ("segment_size", mmsb::Config { segment_size: (1 << 32) + 1, ..base.clone() }, "256..=4294967296"),
        ("segment_size", mmsb::Config { segment_size: u64::MAX, ..base.clone() }, "256..=4294967296"),
        ("max_page_size", mmsb::Config { max_page_size: 0, ..base.clone() }, "1..=281474976710656"),
        ("max_page_size", mmsb::Config { max_page_size: (1 << 48) + 1, ..base.clone() }, "1..=281474976710656"),
        ("log_size_cap", mmsb::Config { log_size_cap: 1, ..base.clone() }, "or 0 (off)"),
        ("log_size_cap", mmsb::Config { log_size_cap: 255, ..base.clone() }, "256..="),
        ("dir", mmsb::Config { dir: Some("".into()), ..base.clone() }, "empty path"),
    ];
    for (name, cfg, range) in bad {
        for r in [
            MMSBState::open(cfg.clone()).map(|_| ()),
            MMSBState::open_with_storage(cfg.clone(), mem_storage()).map(|_| ()),
        ] {
            match r {
                Err(Error::State(StateError::InvalidConfig(m))) => {
                    assert!(m.contains(name) && m.contains(range), "{name}: {m}");
                }
                other => panic!("{name}: expected InvalidConfig, got {other:?}"),
            }
        }
    }
    let edges = [
        mmsb::Config { segment_size: 256, ..base.clone() },
        mmsb::Config { segment_size: 1 << 32, ..base.clone() },
        mmsb::Config { max_page_size: 1 << 48, ..base.clone() },
        mmsb::Config { log_size_cap: 256, ..base.clone() },
        mmsb::Config { log_size_cap: u64::MAX, blob_min: 0, ..base.clone() },
    ];
    for cfg in edges {
        let s = MMSBState::open(cfg.clone()).unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
        let p = s.create_page(1024, Location::Cpu, meta("p")).unwrap();
        for i in 0..8u8 {
            s.update_page(p, &[i; 300]).unwrap();
        }
        assert_eq!(s.read_page(p).unwrap()[..300], [7; 300]);
    }
}

fn mem_storage() -> std::sync::Arc<dyn mmsb::runtime::tlog::storage::Storage> {
    std::sync::Arc::new(mmsb::runtime::tlog::storage::MemStorage::new())
}

/// Regression (issue 15): the replayable range and the compacted runs can be asked for, and the
/// two refusals have their own codes (both were `invalid_argument`).
#[test]
fn replayable_range_and_compacted_runs_are_reported_and_refused_distinctly() {
    use mmsb::ErrorCode;
    let s = MMSBState::open_with_storage(mem_config(), mem_storage()).unwrap();
    let p = s.create_page(64, Location::Cpu, meta("p")).unwrap();
    for i in 0..10u8 {
        s.update_page(p, &[i; 8]).unwrap();
    }
    assert!(s.compacted_runs().unwrap().is_empty());
    s.compact_log().unwrap();
    s.update_page(p, b"after").unwrap();
    let info = s.log_info().unwrap();
    assert_eq!((info.oldest_lsn, info.lsn), (0, 12));
    assert_eq!(s.compacted_runs().unwrap(), vec![1..=11]);
    for lsn in 1..11 {
        let e = s.replay_to(lsn).unwrap_err();
        assert_eq!(e.code(), ErrorCode::LsnCompacted, "{lsn}: {e}");
        assert!(e.to_string().contains("1..=11"), "{e}");
    }
    for lsn in [0, 11, 12] {
        assert_eq!(s.replay_to(lsn).unwrap().lsn(), lsn);
    }
    let e = s.replay_to(13).unwrap_err();
    assert_eq!(e.code(), ErrorCode::LsnOutOfRange, "{e}");
    assert_eq!((e.code() as u32, ErrorCode::LsnCompacted as u32), (26, 27));
    assert_eq!(
        (ErrorCode::LsnOutOfRange.name(), ErrorCode::LsnCompacted.name()),
        ("lsn_out_of_range", "lsn_compacted")
    );
    // After a checkpoint and a compaction the log starts at the checkpoint: older LSNs are out
    // of range.
    let k = s.checkpoint().unwrap();
    s.update_page(p, b"later").unwrap();
    s.compact_log().unwrap();
    assert_eq!(s.log_info().unwrap().oldest_lsn, k);
    assert_eq!(s.replay_to(k - 1).unwrap_err().code(), ErrorCode::LsnOutOfRange);
    assert_eq!(s.replay_to(k).unwrap().lsn(), k);
}

/// Regression (issue 15): `docs/reliability.md` promised failed automatic maintenance in the
/// log info, and automatic checkpoints (`log_size_cap`) emitted no checkpoint event.
#[test]
fn automatic_maintenance_reports_failures_and_emits_checkpoint_events() {
    use mmsb::graph::events::{Event, EventKind, OverflowPolicy};
    use mmsb::runtime::tlog::fault::{Fault, FaultStorage, Op};
    let fs = std::sync::Arc::new(FaultStorage::in_memory());
    let cfg = mmsb::Config { log_size_cap: 1024, ..mem_config() };
    let s = MMSBState::open_with_storage(cfg, fs.clone()).unwrap();
    let sub = s.subscribe(64, OverflowPolicy::DropOldest, EventKind::Checkpoint as u32).unwrap();
    let p = s.create_page(256, Location::Cpu, meta("p")).unwrap();
    while s.log_info().unwrap().last_checkpoint_lsn == 0 {
        s.update_page(p, &[1; 200]).unwrap();
    }
    let k = s.log_info().unwrap().last_checkpoint_lsn;
    assert_eq!(sub.drain(), vec![Event::Checkpoint { lsn: k }], "the automatic checkpoint is announced");
    let info = s.log_info().unwrap();
    assert_eq!((info.maintenance_failures, info.last_maintenance_error.as_deref()), (0, None));
    assert_eq!((info.last_maintenance_code, info.last_maintenance_lsn), (mmsb::ErrorCode::Ok, 0));
    // The next automatic checkpoint fails at its rename: the write that triggered it succeeds,
    // the failure is counted with its code, message and LSN.
    fs.fail_nth(Op::Rename, 1, Fault::Eio);
    while s.log_info().unwrap().maintenance_failures == 0 {
        s.update_page(p, &[2; 200]).unwrap();
        assert!(s.lsn() < k + 100, "no automatic maintenance ran");
    }
    let info = s.log_info().unwrap();
    assert_eq!(info.maintenance_failures, 1);
    assert_eq!(info.last_maintenance_code, mmsb::ErrorCode::Io);
    assert_eq!(info.last_maintenance_lsn, s.lsn());
    assert!(info.last_maintenance_error.as_deref().unwrap().contains("rename"), "{info:?}");
    assert_eq!(s.read_page(p).unwrap()[..200], [2; 200]);
    assert!(sub.drain().is_empty(), "a failed checkpoint is not announced");
    // The next write over the cap tries again, and succeeds.
    s.update_page(p, &[3; 200]).unwrap();
    let info = s.log_info().unwrap();
    assert!(info.last_checkpoint_lsn > k);
    assert_eq!(sub.drain(), vec![Event::Checkpoint { lsn: info.last_checkpoint_lsn }]);
}

/// Recovery allocates a logged page only within `max_page_size`, as `create_page` does: a record
/// claiming a huge page made replay allocate it (a 5 GB page ran the log_decode fuzz target out
/// of memory). A log written with a larger limit is refused with the way out, and nothing changes.
#[test]
fn recovery_refuses_pages_over_max_page_size_and_changes_nothing() {
    let d = scratch();
    let before = {
        let s = MMSBState::open(disk_config(d.path())).unwrap();
        let p = s.create_page(1 << 20, Location::Cpu, meta("big")).unwrap();
        s.update_page(p, b"kept").unwrap();
        snapshot(&s)
    };
    let files = |dir: &std::path::Path| {
        let mut v: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        v.sort();
        v
    };
    let listed = files(d.path());
    let small = mmsb::Config { max_page_size: 64 << 10, ..disk_config(d.path()) };
    let err = MMSBState::open(small).expect_err("a page over max_page_size is refused");
    let msg = err.to_string();
    assert!(msg.contains("max_page_size") && msg.contains("1048576"), "{msg}");
    assert_eq!(files(d.path()), listed, "a refused open changes no file");
    let s = MMSBState::open(disk_config(d.path())).unwrap();
    assert_eq!(snapshot(&s), before);
}
