//! Property tests: replay to any LSN, and compaction never changing replay at or after its point.
#![allow(clippy::cast_possible_truncation)] // test data and sizes: truncation is intended or impossible here

mod tlog_common;

use std::collections::BTreeMap;
use std::sync::Arc;

use mmsb::runtime::tlog::storage::{MemStorage, Storage};
use mmsb::types::error::LogError;
use mmsb::{Config, Delta, Error, Location, MMSBState, PageId, PageMeta, RouteOp};
use proptest::prelude::*;
use tlog_common::*;

#[derive(Debug, Clone)]
enum Op {
    Create(u64),
    Free(usize),
    Write(usize, u64, usize, u8),
    Batch(Vec<(usize, u64, usize, u8)>),
    Checkpoint,
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    let w = (0usize..8, 0u64..300, 1usize..40, any::<u8>());
    prop_oneof![
        2 => (1u64..300).prop_map(Op::Create),
        1 => (0usize..8).prop_map(Op::Free),
        6 => w.clone().prop_map(|(i, o, l, b)| Op::Write(i, o, l, b)),
        2 => prop::collection::vec(w, 1..4).prop_map(Op::Batch),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Compact),
    ]
}

/// Runs `ops`, returning a snapshot at each LSN reached between ops, and the LSNs at which
/// compaction ran.
fn run(s: &MMSBState, ops: &[Op], allow_compact: bool) -> (BTreeMap<u64, Snapshot>, Vec<u64>) {
    let mut snaps = BTreeMap::new();
    snaps.insert(0, snapshot(s));
    let mut compactions = vec![];
    let pick = |i: usize| -> Option<(PageId, u64)> {
        let ids = s.page_ids().unwrap();
        let id = *ids.get(i % ids.len().max(1))?;
        Some((id, s.page_info(id).unwrap().size))
    };
    let delta = |size: u64, off: u64, len: usize, b: u8| {
        let off = off % size;
        let len = len.min((size - off) as usize);
        if b.is_multiple_of(2) {
            Delta::write(off, &vec![b; len]).unwrap()
        } else {
            let mask: Vec<u8> = (0..len).map(|k| (k % 3 != 0) as u8).collect();
            Delta::dense_bytemask(off, &mask, &vec![b; len]).unwrap()
        }
    };
    for op in ops {
        match op {
            Op::Create(size) => {
                s.create_page(*size, Location::Cpu, PageMeta { name: format!("p{size}"), tags: vec![] }).unwrap();
            }
            Op::Free(i) => {
                if let Some((id, _)) = pick(*i) {
                    s.free_page(id).unwrap();
                }
            }
            Op::Write(i, off, len, b) => {
                if let Some((id, size)) = pick(*i) {
                    s.route_delta(id, &delta(size, *off, *len, *b), None).unwrap();
                }
            }
            Op::Batch(ws) => {
                let ds: Vec<(PageId, Delta)> = ws
                    .iter()
                    .filter_map(|(i, off, len, b)| pick(*i).map(|(id, size)| (id, delta(size, *off, *len, *b))))
                    .collect();
                let ops: Vec<RouteOp> =
                    ds.iter().map(|(page, delta)| RouteOp { page: *page, delta, expected_epoch: None }).collect();
                s.route_batch(&ops).unwrap();
            }
            Op::Checkpoint => {
                s.checkpoint().unwrap();
            }
            Op::Compact => {
                if allow_compact {
                    s.compact_log().unwrap();
                    compactions.push(s.lsn());
                }
            }
        }
        snaps.insert(s.lsn(), snapshot(s));
    }
    (snaps, compactions)
}

fn config() -> Config {
    // Small segments so rollover and pruning happen often.
    Config { logging: true, segment_size: 512, ..Config::default() }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn replay_to_a_random_lsn_equals_the_state_recorded_then(
        ops in prop::collection::vec(op(), 1..60),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 1..8),
        disk in any::<bool>(),
    ) {
        let d = scratch();
        let cfg = if disk { Config { dir: Some(d.path().join("s")), ..config() } } else { config() };
        let s = MMSBState::open(cfg.clone()).unwrap();
        let (snaps, _) = run(&s, &ops, false);
        let oldest = s.log_info().unwrap().oldest_lsn;
        let reachable: Vec<u64> = snaps.keys().copied().filter(|&l| l >= oldest).collect();
        prop_assert!(!reachable.is_empty());
        for p in &picks {
            let lsn = reachable[p.index(reachable.len())];
            let r = s.replay_to(lsn).unwrap();
            prop_assert_eq!(&snapshot(&r), &snaps[&lsn]);
        }
        let last = snapshot(&s);
        drop(s);
        if disk {
            prop_assert_eq!(snapshot(&MMSBState::open(cfg).unwrap()), last);
        }
    }

    #[test]
    fn compaction_never_changes_replay_at_or_after_its_point(
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
        let s = MMSBState::open_with_storage(config(), storage.clone()).unwrap();
        let (snaps, compactions) = run(&s, &ops, true);
        let point = compactions.last().copied().unwrap_or(0);
        let oldest = s.log_info().unwrap().oldest_lsn;
        for (&lsn, want) in snaps.range(point.max(oldest)..) {
            let r = s.replay_to(lsn).unwrap();
            prop_assert_eq!(&snapshot(&r), want, "replay to {} after compaction at {}", lsn, point);
        }
        // Before the point, replay is either exact or refused, never wrong.
        for (&lsn, want) in snaps.range(..point) {
            match s.replay_to(lsn) {
                Ok(r) => prop_assert_eq!(&snapshot(&r), want),
                Err(Error::Log(LogError::LsnOutOfRange(_) | LogError::LsnCompacted { .. })) => {}
                Err(e) => prop_assert!(false, "replay to {} failed: {}", lsn, e),
            }
        }
        // Compacting again, and recovering from the compacted log, change nothing.
        let last = snapshot(&s);
        s.compact_log().unwrap();
        prop_assert_eq!(&snapshot(&s.replay_to(s.lsn()).unwrap()), &last);
        drop(s);
        let s = MMSBState::open_with_storage(config(), storage).unwrap();
        prop_assert_eq!(snapshot(&s), last);
    }
}

#[test]
fn compaction_shrinks_a_log_of_overwrites() {
    let s = MMSBState::open(config()).unwrap();
    let p = s.create_page(4096, Location::Cpu, PageMeta::default()).unwrap();
    for i in 0..500u32 {
        s.update_page_at(p, u64::from(i % 8) * 512, &[i as u8; 512], None).unwrap();
    }
    let before = s.log_info().unwrap().log_bytes;
    let snap = snapshot(&s);
    s.compact_log().unwrap();
    let after = s.log_info().unwrap();
    assert!(after.log_bytes * 20 < before, "{before} -> {}", after.log_bytes);
    // The compacted chain start and the writer's segment, started before the fold (writers go
    // on there while the log is folded).
    assert_eq!(after.segments, 2);
    assert_eq!(s.counter(mmsb::Counter::LogSegments), 2, "the gauge follows the compaction");
    assert_eq!(snapshot(&s.replay_to(s.lsn()).unwrap()), snap);
    assert_eq!(s.page_info(p).unwrap().epoch, 500, "epochs count every folded delta");
    assert!(matches!(s.replay_to(200), Err(Error::Log(LogError::LsnCompacted { lsn: 200, first: 1, last: 501 }))));
}
