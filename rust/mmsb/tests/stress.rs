//! Concurrency stress on a directory-backed state: threads route sparse and dense deltas and
//! batches, create and free pages, propagate through dependency edges, checkpoint, compact and
//! replay, all at once (automatic maintenance too: the log cap is small). At the end the live
//! state must equal (a) `replay_to` of the final LSN, a serial replay of the log, and (b) a
//! fresh reopen of the directory.
#![allow(clippy::cast_possible_truncation)] // test data and sizes: truncation is intended or impossible here

mod tlog_common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mmsb::graph::{Command, CommandList, EdgeKind};
use mmsb::{Config, Delta, Durability, Location, MMSBState, PageId, PageMeta, RouteOp};

use tlog_common::graph_snapshot as snap;

fn config(dir: &std::path::Path, durability: Durability) -> Config {
    Config {
        dir: Some(dir.to_path_buf()),
        durability,
        segment_size: 24 << 10,
        log_size_cap: 64 << 10,
        ..Config::default()
    }
}

fn run(durability: Durability, dur: Duration) {
    let d = tlog_common::scratch();
    let dir = d.path().join("state");
    let s = MMSBState::open(config(&dir, durability)).unwrap();
    let pages: Vec<PageId> = (0..6).map(|_| s.create_page(2048, Location::Cpu, PageMeta::default()).unwrap()).collect();
    // A chain 0 -> 4 -> 5 of copies, recomputed by propagation.
    for (from, to) in [(0, 4), (4, 5)] {
        let cmds = CommandList::new().with(Command::Copy { src_off: 0, dst_off: 512, len: 256 });
        s.add_dependency(pages[from], pages[to], EdgeKind::Data, cmds).unwrap();
    }
    let stop = AtomicBool::new(false);
    let counts: Vec<AtomicU64> = (0..8).map(|_| AtomicU64::new(0)).collect();
    let started = Instant::now();
    std::thread::scope(|sc| {
        // Writers: each its own page (1..=3) plus shared batches over pages 1..=3.
        for t in 0..3usize {
            let (s, stop, pages, counts) = (&s, &stop, &pages, &counts);
            sc.spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let p = pages[1 + t];
                    let b = (n as u8).wrapping_add(t as u8 * 50);
                    match n % 3 {
                        0 => {
                            s.update_page_at(p, (n * 13) % 2000, &[b; 40], None).unwrap();
                        }
                        1 => {
                            let mask: Vec<u8> = (0..64).map(|i| u8::from(i % 2 == 0)).collect();
                            let d = Delta::dense_bytemask((n * 7) % 1900, &mask, &[b; 64]).unwrap();
                            s.route_delta(p, &d, None).unwrap();
                        }
                        _ => {
                            let d = Delta::sparse([(1u64, &[b; 3][..]), (700, &[b; 5][..])]).unwrap();
                            let ops: Vec<RouteOp<'_>> =
                                (1..=3).map(|i| RouteOp { page: pages[i], delta: &d, expected_epoch: None }).collect();
                            s.route_batch(&ops).unwrap();
                        }
                    }
                    n += 1;
                }
                counts[t].fetch_add(n, Ordering::Relaxed);
            });
        }
        // Propagation: writes to page 0 then a round, both forms.
        {
            let (s, stop, pages, counts) = (&s, &stop, &pages, &counts);
            sc.spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let d = Delta::write(n % 200, &[n as u8; 16]).unwrap();
                    if n.is_multiple_of(2) {
                        s.route_and_propagate(&[RouteOp { page: pages[0], delta: &d, expected_epoch: None }]).unwrap();
                    } else {
                        s.route_delta(pages[0], &d, None).unwrap();
                        s.propagate(&[pages[0]]).unwrap();
                    }
                    n += 1;
                }
                counts[3].fetch_add(n, Ordering::Relaxed);
            });
        }
        // Page churn: create, write, free.
        {
            let (s, stop, counts) = (&s, &stop, &counts);
            sc.spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let p = s.create_page(100 + n % 300, Location::Cpu, PageMeta::default()).unwrap();
                    s.update_page(p, &[7; 50]).unwrap();
                    if !n.is_multiple_of(3) {
                        s.free_page(p).unwrap();
                    }
                    n += 1;
                }
                counts[4].fetch_add(n, Ordering::Relaxed);
            });
        }
        // Maintenance: checkpoints and compactions.
        {
            let (s, stop, counts) = (&s, &stop, &counts);
            sc.spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if n.is_multiple_of(2) {
                        s.checkpoint().unwrap();
                    } else {
                        s.compact_log().unwrap();
                    }
                    n += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                counts[5].fetch_add(n, Ordering::Relaxed);
            });
        }
        // Readers of history: replay to a recent LSN must succeed (or name a compacted LSN).
        {
            let (s, stop, counts) = (&s, &stop, &counts);
            sc.spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let lsn = s.lsn();
                    match s.replay_to(lsn) {
                        Ok(r) => assert!(r.lsn() == lsn),
                        Err(mmsb::Error::Log(
                            mmsb::types::error::LogError::LsnOutOfRange(_)
                            | mmsb::types::error::LogError::LsnCompacted { .. },
                        )) => {}
                        Err(e) => panic!("replay_to({lsn}) during writes: {e}"),
                    }
                    n += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
                counts[6].fetch_add(n, Ordering::Relaxed);
            });
        }
        std::thread::sleep(dur);
        stop.store(true, Ordering::Relaxed);
    });
    let live = snap(&s);
    let lsn = s.lsn();
    let replayed = s.replay_to(lsn).unwrap();
    assert_eq!(snap(&replayed), live, "{durability:?}: replay_to(final LSN) differs from the live state");
    let info = s.log_info().unwrap();
    drop(replayed);
    drop(s);
    let reopened = MMSBState::open(config(&dir, durability)).unwrap();
    assert_eq!(snap(&reopened), live, "{durability:?}: reopen differs from the live state");
    let c: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    eprintln!(
        "stress ({durability:?}, {:.1}s): LSN {lsn}; writer ops {:?}, propagation rounds {}, page churn {}, \
         maintenance passes {}, concurrent replays {}; log {} bytes, {} segments, {} maintenance failures",
        started.elapsed().as_secs_f64(),
        &c[0..3],
        c[3],
        c[4],
        c[5],
        c[6],
        info.log_bytes,
        info.segments,
        info.maintenance_failures
    );
    assert_eq!(info.maintenance_failures, 0, "{:?}", info.last_maintenance_error);
}

#[test]
fn concurrent_routing_propagation_and_maintenance_equal_a_serial_replay_and_a_reopen() {
    run(Durability::GroupCommit, Duration::from_millis(2500));
    run(Durability::None, Duration::from_millis(1500));
}
