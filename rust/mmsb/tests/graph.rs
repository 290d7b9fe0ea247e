//! ShadowPageGraph, propagation and events through `MMSBState`'s public API.
#![allow(clippy::cast_possible_truncation)] // test data and sizes: truncation is intended or impossible here

use std::ffi::c_void;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mmsb::graph::{
    Command, CommandList, EdgeKind, Event, EventKind, Lane, MemStore, OverflowPolicy, PageStore, PropagationEngine,
    RoundStats, SemiOp, ShadowPageGraph,
};
use mmsb::types::error::{GraphError, PageError};
use mmsb::{Delta, Error, Location, MMSBState, PageId, PageMeta, RouteOp};
use proptest::prelude::*;

fn pages(s: &MMSBState, n: usize, size: u64) -> Vec<PageId> {
    (0..n).map(|_| s.create_page(size, Location::Cpu, PageMeta::default()).unwrap()).collect()
}

fn copy(src_off: u64, dst_off: u64, len: u64) -> CommandList {
    CommandList::new().with(Command::Copy { src_off, dst_off, len })
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn delta_pages(events: &[Event]) -> Vec<PageId> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::DeltaApplied { page, .. } => Some(*page),
            _ => None,
        })
        .collect()
}

#[test]
fn diamond_recomputes_each_node_once_without_glitches() {
    let s = MMSBState::in_memory();
    let p = pages(&s, 4, 16);
    let (a, b, c, d) = (p[0], p[1], p[2], p[3]);
    // b = a + 1 (u32), c = a * 2 (via a + a), d[0..4] = b + c: d must see both new parents.
    let inc = CommandList::new().with(Command::Copy { src_off: 0, dst_off: 0, len: 4 }).with(Command::rust_callback(
        |_, dst| {
            let v = u32::from_le_bytes(dst[0..4].try_into().unwrap()) + 1;
            dst[0..4].copy_from_slice(&v.to_le_bytes());
            Ok(())
        },
    ));
    s.add_dependency(a, b, EdgeKind::Data, inc).unwrap();
    let dbl = copy(0, 0, 4).with(Command::Op { op: SemiOp::Add, lane: Lane::U32, src_off: 0, dst_off: 0, len: 4 });
    s.add_dependency(a, c, EdgeKind::Data, dbl).unwrap();
    s.add_dependency(b, d, EdgeKind::Data, copy(0, 0, 4)).unwrap();
    let add = CommandList::new().with(Command::Op { op: SemiOp::Add, lane: Lane::U32, src_off: 0, dst_off: 0, len: 4 });
    s.add_dependency(c, d, EdgeKind::Data, add).unwrap();

    let sub = s.subscribe(64, OverflowPolicy::DropNewest, EventKind::MASK_ALL).unwrap();
    for v in [10u32, 20, 7] {
        s.update_page(a, &v.to_le_bytes()).unwrap();
        let stats = s.propagate(&[a]).unwrap();
        assert_eq!((stats.recomputed, stats.cutoff, stats.deltas_routed), (3, 0, 3));
        let d_bytes = s.read_page(d).unwrap();
        assert_eq!(u32_at(&d_bytes, 0), (v + 1) + 2 * v, "d sees both updated parents");
        let evs = sub.drain();
        assert_eq!(delta_pages(&evs), [a, b, c, d], "every node exactly once, d last");
        assert!(matches!(evs.last(), Some(Event::PropagationDone { recomputed: 3, cutoff: 0, .. })));
    }
}

#[test]
fn cycles_are_rejected_with_their_path() {
    let s = MMSBState::in_memory();
    let p = pages(&s, 3, 8);
    s.add_dependency(p[0], p[1], EdgeKind::Data, CommandList::new()).unwrap();
    s.add_dependency(p[1], p[2], EdgeKind::Control, CommandList::new()).unwrap();
    let e = s.add_dependency(p[2], p[0], EdgeKind::Data, CommandList::new()).unwrap_err();
    match &e {
        Error::Graph(GraphError::Cycle { cycle, .. }) => assert_eq!(cycle, &[p[2], p[0], p[1], p[2]]),
        other => panic!("{other:?}"),
    }
    assert_eq!(e.code(), mmsb::ErrorCode::Cycle);
    assert!(e.to_string().contains("#3 -> #1 -> #2 -> #3"), "{e}");
    assert_eq!(s.topo_order().unwrap(), p);
}

#[test]
fn invalid_commands_and_unknown_pages_are_rejected() {
    let s = MMSBState::in_memory();
    let p = pages(&s, 2, 8);
    let e = s.add_dependency(p[0], p[1], EdgeKind::Data, copy(4, 0, 8)).unwrap_err();
    assert!(matches!(e, Error::Graph(GraphError::InvalidCommand(_))), "{e}");
    let ragged =
        CommandList::new().with(Command::Op { op: SemiOp::Min, lane: Lane::F64, src_off: 0, dst_off: 0, len: 4 });
    assert!(s.add_dependency(p[0], p[1], EdgeKind::Data, ragged).is_err());
    let e = s.add_dependency(p[0], PageId(99), EdgeKind::Data, CommandList::new()).unwrap_err();
    assert!(matches!(e, Error::Page(PageError::UnknownPage(_))));
    assert!(s.topo_order().unwrap().is_empty());
}

#[test]
fn pages_with_edges_cannot_be_freed() {
    let s = MMSBState::in_memory();
    let p = pages(&s, 2, 8);
    let e = s.add_dependency(p[0], p[1], EdgeKind::Data, CommandList::new()).unwrap();
    for q in &p {
        let err = s.free_page(*q).unwrap_err();
        assert!(matches!(err, Error::Page(PageError::InUse { .. })), "{err}");
        assert_eq!(err.code(), mmsb::ErrorCode::PageInUse);
    }
    s.remove_dependency(e).unwrap();
    s.free_page(p[0]).unwrap();
    s.free_page(p[1]).unwrap();
}

#[test]
fn early_cutoff_stops_at_unchanged_pages() {
    let s = MMSBState::in_memory();
    let p = pages(&s, 5, 8);
    // p1 = max(p0[0..4], 100) as u32: small values of p0 leave p1 at 100.
    let clamp = CommandList::new()
        .with(Command::Fill { dst_off: 0, len: 4, value: 0 })
        .with(Command::Op { op: SemiOp::Max, lane: Lane::U32, src_off: 0, dst_off: 0, len: 4 })
        .with(Command::rust_callback(|_, d| {
            let v = u32::from_le_bytes(d[0..4].try_into().unwrap()).max(100);
            d[0..4].copy_from_slice(&v.to_le_bytes());
            Ok(())
        }));
    s.add_dependency(p[0], p[1], EdgeKind::Data, clamp).unwrap();
    for w in p[1..].windows(2) {
        s.add_dependency(w[0], w[1], EdgeKind::Data, copy(0, 0, 8)).unwrap();
    }
    s.update_page(p[0], &5u32.to_le_bytes()).unwrap();
    assert_eq!(s.propagate(&[p[0]]).unwrap().deltas_routed, 4, "first round: 100 flows down");
    let epochs: Vec<u64> = p.iter().map(|q| s.page_info(*q).unwrap().epoch).collect();
    s.update_page(p[0], &50u32.to_le_bytes()).unwrap();
    let stats = s.propagate(&[p[0]]).unwrap();
    assert_eq!((stats.recomputed, stats.cutoff, stats.deltas_routed), (1, 1, 0));
    for (q, e) in p[1..].iter().zip(&epochs[1..]) {
        assert_eq!(s.page_info(*q).unwrap().epoch, *e, "nothing downstream of the cutoff was touched");
    }
    s.update_page(p[0], &500u32.to_le_bytes()).unwrap();
    assert_eq!(s.propagate(&[p[0]]).unwrap().deltas_routed, 4);
    assert_eq!(u32_at(&s.read_page(p[4]).unwrap(), 0), 500);
}

/// `dst[0] = src[0] * (*(u8*)user_data)`, failing with status 3 when src[0] == 0.
extern "C" fn scale(ud: *mut c_void, src: *const u8, src_len: usize, dst: *mut u8, dst_len: usize) -> i32 {
    assert!(src_len > 0 && dst_len > 0);
    // SAFETY: MMSB passes live buffers of the given lengths; `ud` points to the test's u8.
    unsafe {
        if *src == 0 {
            return 3;
        }
        *dst = (*src).wrapping_mul(*ud.cast::<u8>());
    }
    0
}

#[test]
fn c_callback_transforms_and_failures() {
    let s = MMSBState::in_memory();
    let p = pages(&s, 3, 4);
    let factor: &'static mut u8 = Box::leak(Box::new(3u8));
    // SAFETY: `scale` only reads `factor`, which lives for the rest of the process.
    let cb = unsafe { Command::c_callback(scale, (factor as *mut u8).cast()) };
    let list = CommandList::new().with(Command::Fill { dst_off: 1, len: 3, value: 0xAA }).with(cb);
    s.add_dependency(p[0], p[1], EdgeKind::Data, list).unwrap();
    s.add_dependency(p[1], p[2], EdgeKind::Data, copy(0, 0, 4)).unwrap();
    s.update_page(p[0], &[7]).unwrap();
    s.propagate(&[p[0]]).unwrap();
    assert_eq!(s.read_page(p[1]).unwrap(), [21, 0xAA, 0xAA, 0xAA]);
    assert_eq!(s.read_page(p[2]).unwrap(), [21, 0xAA, 0xAA, 0xAA]);

    let epoch = s.page_info(p[1]).unwrap().epoch;
    let lsn = s.lsn();
    s.update_page(p[0], &[0]).unwrap();
    let e = s.propagate(&[p[0]]).unwrap_err();
    assert!(
        matches!(e, Error::Graph(GraphError::Callback { from, to, status: 3 }) if from == p[0] && to == p[1]),
        "{e}"
    );
    assert_eq!(e.code(), mmsb::ErrorCode::Callback);
    assert_eq!(s.read_page(p[1]).unwrap(), [21, 0xAA, 0xAA, 0xAA], "nothing applied to the failing page");
    assert_eq!(s.page_info(p[1]).unwrap().epoch, epoch);
    assert_eq!(s.lsn(), lsn + 1, "only the update itself took an LSN");
}

#[test]
fn route_and_propagate_is_one_step() {
    let s = MMSBState::in_memory();
    let p = pages(&s, 2, 4);
    s.add_dependency(p[0], p[1], EdgeKind::Data, copy(0, 0, 4)).unwrap();
    let d = Delta::write(0, &[1, 2, 3, 4]).unwrap();
    let base = s.lsn(); // page creation and edges take LSNs too
    let (lsns, stats) = s.route_and_propagate(&[RouteOp { page: p[0], delta: &d, expected_epoch: None }]).unwrap();
    assert_eq!(lsns, base + 1..base + 2);
    assert_eq!(stats.deltas_routed, 1);
    assert_eq!(s.read_page(p[1]).unwrap(), [1, 2, 3, 4]);
    assert_eq!(s.lsn(), base + 2);
    assert_eq!(s.dependents(p[0]).unwrap(), [p[1]]);
    assert_eq!(s.dependencies(p[1]).unwrap(), [p[0]]);
}

/// A deterministic layered DAG with accumulating and overwriting transforms.
fn build_layered(s: &MMSBState) -> Vec<PageId> {
    let p = pages(s, 30, 16);
    let mut x: u64 = 88172645463325252;
    for j in 3..30usize {
        for _ in 0..3 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x % j as u64) as usize;
            let op = SemiOp::ALL[(x >> 20) as usize % 6];
            let list = CommandList::new().with(Command::Op { op, lane: Lane::U32, src_off: 0, dst_off: 4, len: 12 });
            let _ = s.add_dependency(p[i], p[j], EdgeKind::Data, list); // duplicates are refused; fine
        }
    }
    p
}

#[test]
fn propagation_is_deterministic() {
    let run = || {
        let s = MMSBState::in_memory();
        let p = build_layered(&s);
        let sub = s.subscribe(4096, OverflowPolicy::DropNewest, EventKind::MASK_ALL).unwrap();
        let mut stats = Vec::new();
        for round in 0..5u8 {
            s.update_page(p[0], &[round + 1; 16]).unwrap();
            s.update_page(p[2], &[round * 7 + 3; 16]).unwrap();
            stats.push(s.propagate(&[p[2], p[0]]).unwrap());
        }
        let bytes: Vec<Vec<u8>> = p.iter().map(|q| s.read_page(*q).unwrap()).collect();
        assert!(!sub.is_lagged());
        (stats, sub.drain(), bytes)
    };
    let (a, b) = (run(), run());
    assert_eq!(a.0, b.0, "same stats");
    assert_eq!(a.1, b.1, "same events: same pages, LSNs and epochs in the same order");
    assert_eq!(a.2, b.2, "same bytes");
    assert!(a.0.iter().all(|st| st.deltas_routed > 0));

    // The same graph on the engine directly, with a store that records every routed delta.
    #[derive(Default)]
    struct Rec {
        mem: MemStore,
        log: Vec<(PageId, Delta)>,
    }
    impl PageStore for Rec {
        fn bytes(&self, page: PageId) -> mmsb::Result<&[u8]> {
            self.mem.bytes(page)
        }
        fn route(&mut self, page: PageId, delta: &Delta) -> mmsb::Result<()> {
            self.log.push((page, delta.clone()));
            self.mem.route(page, delta)
        }
    }
    let engine_run = || {
        let s = MMSBState::in_memory();
        let p = build_layered(&s);
        let snap = s.graph_snapshot().unwrap();
        let (mut g, dropped) = mmsb::graph::persist::restore(&snap, |_| Some(16)).unwrap();
        assert!(dropped.is_empty());
        let mut rec = Rec::default();
        for q in &p {
            rec.mem.insert(*q, vec![0; 16]);
        }
        let mut engine = PropagationEngine::new();
        let mut stats: Vec<RoundStats> = Vec::new();
        for round in 0..5u8 {
            rec.mem.get_mut(p[0]).unwrap().fill(round + 1);
            rec.mem.get_mut(p[2]).unwrap().fill(round * 7 + 3);
            stats.push(engine.run(&mut g, &mut rec, &[p[2], p[0]]).unwrap());
        }
        (stats, rec.log)
    };
    let (x, y) = (engine_run(), engine_run());
    assert_eq!(x.0, y.0);
    assert_eq!(x.1, y.1, "the same deltas, in the same order");
    assert_eq!(x.0, a.0, "the state and the bare engine agree");
}

#[test]
fn event_policies_through_the_state() {
    let s = MMSBState::in_memory();
    let p = pages(&s, 1, 8)[0];
    let oldest = s.subscribe(2, OverflowPolicy::DropOldest, EventKind::DeltaApplied as u32).unwrap();
    let newest = s.subscribe(2, OverflowPolicy::DropNewest, EventKind::DeltaApplied as u32).unwrap();
    let blocked =
        s.subscribe(2, OverflowPolicy::Block { timeout: Duration::from_millis(5) }, EventKind::MASK_ALL).unwrap();
    let none = s.subscribe(2, OverflowPolicy::DropNewest, EventKind::Checkpoint as u32).unwrap();
    let base = s.lsn(); // the page's creation took an LSN
    for i in 0..5u8 {
        s.update_page(p, &[i + 1]).unwrap();
    }
    let lsns = |evs: Vec<Event>| {
        evs.into_iter()
            .map(|e| match e {
                Event::DeltaApplied { lsn, page, epoch } => {
                    assert_eq!((page, epoch), (p, lsn - base), "one page: epoch == lsn - base here");
                    lsn - base
                }
                other => panic!("{other:?}"),
            })
            .collect::<Vec<u64>>()
    };
    assert_eq!(lsns(oldest.drain()), [4, 5]);
    assert_eq!((oldest.dropped(), oldest.is_lagged()), (3, false));
    assert_eq!(lsns(newest.drain()), [1, 2]);
    assert_eq!((newest.dropped(), newest.is_lagged()), (3, true));
    assert_eq!(lsns(blocked.drain()), [1, 2]);
    assert_eq!((blocked.dropped(), blocked.is_lagged()), (3, true));
    assert!(none.drain().is_empty());

    // A Block subscriber with a live consumer loses nothing, even with room for one event.
    drop((oldest, newest, blocked, none));
    let s = Arc::new(s);
    let sub = s.subscribe(1, OverflowPolicy::Block { timeout: Duration::from_secs(30) }, EventKind::MASK_ALL).unwrap();
    let consumer = std::thread::spawn(move || {
        let mut got = Vec::new();
        while got.len() < 200 {
            if let Some(Event::DeltaApplied { lsn, .. }) = sub.recv_timeout(Duration::from_secs(30)) {
                got.push(lsn);
            }
        }
        (got, sub.dropped())
    });
    let t0 = Instant::now();
    for i in 0..200u32 {
        s.update_page(p, &i.to_le_bytes()).unwrap();
    }
    let (got, dropped) = consumer.join().unwrap();
    assert_eq!(got, (base + 6..base + 206).collect::<Vec<u64>>());
    assert_eq!(dropped, 0);
    assert!(t0.elapsed() < Duration::from_secs(30));
}

#[test]
fn subscriptions_outlive_their_state() {
    let s = MMSBState::in_memory();
    let p = pages(&s, 1, 8)[0];
    let sub = s.subscribe(8, OverflowPolicy::DropOldest, EventKind::MASK_ALL).unwrap();
    s.update_page(p, &[1]).unwrap();
    s.close();
    assert!(sub.is_closed());
    assert!(s.subscribe(8, OverflowPolicy::DropOldest, EventKind::MASK_ALL).is_err());
    drop(s);
    assert_eq!(sub.drain().len(), 1);
    assert_eq!(sub.try_recv(), None);
}

#[test]
fn graph_snapshot_restores_into_a_state() {
    let s = MMSBState::in_memory();
    let p = pages(&s, 3, 8);
    s.add_dependency(p[0], p[1], EdgeKind::Data, copy(0, 0, 8)).unwrap();
    let cb = s
        .add_dependency(p[1], p[2], EdgeKind::GpuSync, CommandList::new().with(Command::rust_callback(|_, _| Ok(()))))
        .unwrap();
    let bytes = mmsb::graph::persist::encode_snapshot(&ShadowPageGraph::new());
    assert!(mmsb::graph::persist::decode_snapshot(&bytes).unwrap().edges.is_empty());
    let snap = s.graph_snapshot().unwrap();
    let dropped = s.restore_graph(&snap).unwrap();
    assert_eq!(dropped, [cb]);
    assert_eq!(s.topo_order().unwrap(), [p[0], p[1]]);
    // New ids never reuse the dropped one.
    assert!(s.add_dependency(p[1], p[2], EdgeKind::Data, CommandList::new()).unwrap() > cb);
}

// ---------------------------------------------------------------------------------------------
// Property: propagation gives the same bytes as recomputing every page in topological order.

const PAGE: u64 = 64;
/// Bytes `[FREE..PAGE)` are never written by transforms: the test's changes go there.
const FREE: u64 = 48;

#[derive(Debug, Clone)]
struct EdgeSpec {
    from: usize,
    to: usize,
    /// First command overwrites the edge's region (copy or fill); then lane-wise ops.
    first: (bool, u64, u8),
    ops: Vec<(usize, usize, u64)>,
}

/// A write of `bytes` at an offset of page index `usize`.
type Change = (usize, u64, Vec<u8>);
/// (number of pages, index -> page permutation, edges, batches of changes).
type Case = (usize, Vec<usize>, Vec<EdgeSpec>, Vec<Vec<Change>>);

fn dag_strategy() -> impl Strategy<Value = Case> {
    (2usize..12).prop_flat_map(|n| {
        let perm = Just((0..n).collect::<Vec<usize>>()).prop_shuffle();
        let edge = (
            0..n,
            0..n,
            any::<bool>(),
            0u64..=(PAGE - 8),
            any::<u8>(),
            prop::collection::vec((0usize..6, 0usize..4, 0u64..=(PAGE - 8)), 0..3),
        )
            .prop_filter_map("edges go forward", |(a, b, is_copy, src_off, value, ops)| {
                (a < b).then_some(EdgeSpec { from: a, to: b, first: (is_copy, src_off, value), ops })
            });
        let edges = prop::collection::vec(edge, 0..30);
        let change = (0..n, FREE..PAGE, prop::collection::vec(any::<u8>(), 1..8));
        let batches = prop::collection::vec(prop::collection::vec(change, 1..4), 1..4);
        (Just(n), perm, edges, batches)
    })
}

/// Naive: every page with sources, in topological order (index order), from its current bytes.
fn naive(bytes: &mut [Vec<u8>], incoming: &[Vec<(usize, CommandList)>]) {
    for j in 0..bytes.len() {
        let mut new = bytes[j].clone();
        for (src, cmds) in &incoming[j] {
            cmds.execute(&bytes[*src], &mut new).unwrap();
        }
        bytes[j] = new;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn propagation_matches_naive_recomputation((n, perm, specs, batches) in dag_strategy()) {
        let s = MMSBState::in_memory();
        let ids = pages(&s, n, PAGE);
        // Index i of the DAG is page ids[perm[i]]: page ids do not follow the topological order.
        let page = |i: usize| ids[perm[i]];

        // Keep one edge per pair; give each incoming edge its own 8-byte region, ranked by
        // (source page id), the order propagation applies them in.
        let mut seen = std::collections::BTreeSet::new();
        let specs: Vec<EdgeSpec> = specs.into_iter().filter(|e| seen.insert((e.from, e.to))).collect();
        let mut incoming: Vec<Vec<(usize, CommandList)>> = vec![Vec::new(); n];
        for (j, inc) in incoming.iter_mut().enumerate() {
            let mut ins: Vec<&EdgeSpec> = specs.iter().filter(|e| e.to == j).take(6).collect();
            ins.sort_by_key(|e| page(e.from));
            for (k, e) in ins.into_iter().enumerate() {
                let region = 8 * k as u64;
                let (is_copy, src_off, value) = e.first;
                let mut list = CommandList::new().with(if is_copy {
                    Command::Copy { src_off, dst_off: region, len: 8 }
                } else {
                    Command::Fill { dst_off: region, len: 8, value }
                });
                for &(op, lane, src_off) in &e.ops {
                    list.push(Command::Op { op: SemiOp::ALL[op], lane: Lane::ALL[lane], src_off, dst_off: region, len: 8 });
                }
                s.add_dependency(page(e.from), page(j), EdgeKind::Data, list.clone()).unwrap();
                inc.push((e.from, list));
            }
        }

        // A consistent start: the naive recomputation of all-zero pages, written directly.
        let mut model: Vec<Vec<u8>> = vec![vec![0; PAGE as usize]; n];
        naive(&mut model, &incoming);
        for (i, bytes) in model.iter().enumerate() {
            s.update_page(page(i), bytes).unwrap();
        }

        for batch in batches {
            let mut changed = Vec::new();
            for (i, off, bytes) in batch {
                let len = bytes.len().min((PAGE - off) as usize);
                s.update_page_at(page(i), off, &bytes[..len], None).unwrap();
                model[i][off as usize..off as usize + len].copy_from_slice(&bytes[..len]);
                changed.push(page(i));
            }
            let stats = s.propagate(&changed).unwrap();
            naive(&mut model, &incoming);
            for (i, bytes) in model.iter().enumerate() {
                prop_assert_eq!(&s.read_page(page(i)).unwrap(), bytes, "page index {}", i);
            }
            prop_assert_eq!(stats.recomputed, stats.cutoff + stats.deltas_routed);
        }
    }
}
