//! Propagation benchmarks, each next to its baseline in the same run.
//!
//! - `chain_1m`: a chain of 1,000,000 8-byte pages (each page copies its predecessor), on the
//!   in-memory [`MemStore`] (1M mmap-backed pages would need 4 GiB of maps and more maps than
//!   the kernel allows). A changed root changes every page, so all three variants do the same
//!   transforms:
//!   - `engine`: one propagation round;
//!   - `naive_topo`: recompute every page in a precomputed topological order (copy, transform,
//!     compare, diff, route), no scheduling;
//!   - `transform_only`: just the transforms, in order, on one flat buffer indexed by page id.
//!
//!   Per page, `engine - transform_only` is the engine's per-node overhead. Where a page deep
//!   in the graph changes (`engine_one_page_changed`: 100 pages depend on it), the engine
//!   recomputes only those, while the naive baseline would still recompute everything.
//! - `wide`: a root with fan-out 1,000, each of those with fan-out 100 (101,001 pages), same
//!   three variants.
//! - `state_chain_10k`: the full stack (mmap pages, DeltaRouter, epochs, LSNs) on a 10,000-page
//!   chain: `MMSBState::propagate` vs a client doing it by hand (read source, update page) in
//!   topological order.
//! - `emit`: the cost of an event emit with no subscriber (it sits on the route path).
//!
//! Every group runs twice: under wall time, and (prefix `cpu/`) under the benchmark thread's
//! CPU time, which stays meaningful on a loaded machine where wall time mostly measures the
//! wait for a core.
#![allow(clippy::cast_possible_truncation)] // benchmark sizes and timings: truncation is intended or impossible here

use std::hint::black_box;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mmsb::graph::{
    Command, CommandList, EdgeKind, Event, EventKind, EventSystem, MemStore, OverflowPolicy, PageStore,
    PropagationEngine, ShadowPageGraph,
};
use mmsb::{Delta, Location, MMSBState, PageId, PageMeta};

const PAGE: usize = 8;

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`), reported like wall time.
struct ThreadCpu;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns() - start
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Values are nanoseconds, like WallTime's: reuse its formatting.
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

fn copy_all() -> CommandList {
    CommandList::new().with(Command::Copy { src_off: 0, dst_off: 0, len: PAGE as u64 })
}

/// A graph plus a store holding its pages, and the naive plan: pages in topological order with
/// their incoming commands.
struct Setup {
    graph: ShadowPageGraph,
    store: MemStore,
    root: PageId,
    plan: Vec<(PageId, Vec<(PageId, CommandList)>)>,
}

fn setup(n: usize, edges: impl Iterator<Item = (u64, u64)>) -> Setup {
    let mut graph = ShadowPageGraph::with_capacity(n, n);
    for (a, b) in edges {
        graph.add_edge(PageId(a), PageId(b), EdgeKind::Data, copy_all(), PAGE as u64, PAGE as u64).unwrap();
    }
    let mut store = MemStore::new();
    for p in 1..=n as u64 {
        store.insert(PageId(p), vec![0; PAGE]);
    }
    let plan = graph
        .topo_order()
        .into_iter()
        .map(|p| (p, graph.incoming(p).into_iter().map(|e| (e.from, e.commands.clone())).collect::<Vec<_>>()))
        .filter(|(_, inc)| !inc.is_empty())
        .collect();
    Setup { graph, store, root: PageId(1), plan }
}

fn bump(store: &mut MemStore, root: PageId, k: &mut u64) {
    *k += 1;
    store.get_mut(root).unwrap().copy_from_slice(&k.to_le_bytes());
}

fn naive_round(plan: &[(PageId, Vec<(PageId, CommandList)>)], store: &mut MemStore, scratch: &mut Vec<u8>) {
    for (page, inc) in plan {
        let delta = {
            let old = store.get(*page).unwrap();
            scratch.clear();
            scratch.extend_from_slice(old);
            for (src, cmds) in inc {
                cmds.execute(store.get(*src).unwrap(), scratch).unwrap();
            }
            if scratch[..] == old[..] {
                continue;
            }
            Delta::diff(old, scratch).unwrap()
        };
        store.route(*page, &delta).unwrap();
    }
}

fn three_way<M: Measurement>(c: &mut Criterion<M>, name: &str, mut s: Setup, partial: Option<PageId>) {
    let n = s.plan.len() as u64;
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    group.throughput(Throughput::Elements(n));
    let mut engine = PropagationEngine::new();
    let mut k = 0u64;
    group.bench_function("engine", |b| {
        b.iter(|| {
            bump(&mut s.store, s.root, &mut k);
            let stats = engine.run(&mut s.graph, &mut s.store, &[s.root]).unwrap();
            assert_eq!(stats.deltas_routed, n);
            black_box(stats)
        })
    });
    if let Some(mid) = partial {
        // One page deep in the graph changes: the engine recomputes only what depends on it.
        group.bench_function("engine_one_page_changed", |b| {
            b.iter(|| {
                bump(&mut s.store, mid, &mut k);
                black_box(engine.run(&mut s.graph, &mut s.store, &[mid]).unwrap())
            })
        });
    }
    let mut scratch = Vec::new();
    group.bench_function("naive_topo", |b| {
        b.iter(|| {
            bump(&mut s.store, s.root, &mut k);
            naive_round(&s.plan, &mut s.store, &mut scratch);
        })
    });
    // Pages in one flat buffer indexed by id: the transforms alone, as cheaply as they can be
    // reached.
    let mut flat = vec![0u8; (n as usize + 2) * PAGE];
    let plan: Vec<(usize, Vec<(usize, CommandList)>)> = s
        .plan
        .iter()
        .map(|(p, inc)| (p.0 as usize, inc.iter().map(|(q, c)| (q.0 as usize, c.clone())).collect()))
        .collect();
    group.bench_function("transform_only", |b| {
        b.iter(|| {
            k += 1;
            flat[PAGE..2 * PAGE].copy_from_slice(&k.to_le_bytes());
            for (p, inc) in &plan {
                // Sources have smaller ids than their dependents in these graphs.
                let (lo, hi) = flat.split_at_mut(p * PAGE);
                for (q, cmds) in inc {
                    cmds.execute(&lo[q * PAGE..(q + 1) * PAGE], &mut hi[..PAGE]).unwrap();
                }
            }
            black_box(&flat);
        })
    });
    group.finish();
}

fn chain_1m<M: Measurement>(c: &mut Criterion<M>, prefix: &str) {
    const N: u64 = 1_000_000;
    three_way(c, &format!("{prefix}chain_1m"), setup(N as usize, (1..N).map(|i| (i, i + 1))), Some(PageId(N - 100)));
}

fn wide<M: Measurement>(c: &mut Criterion<M>, prefix: &str) {
    // 1 -> 2..=1001 (fan-out 1000); each of those -> 100 leaves.
    let mids = 2..=1001u64;
    let leaves = mids.clone().flat_map(|m| (0..100u64).map(move |j| (m, 1002 + (m - 2) * 100 + j)));
    let n = 1 + 1000 + 100_000;
    three_way(c, &format!("{prefix}wide"), setup(n, mids.map(|m| (1, m)).chain(leaves)), Some(PageId(500)));
}

fn state_chain_10k<M: Measurement>(c: &mut Criterion<M>, prefix: &str) {
    const N: usize = 10_000;
    let s = MMSBState::in_memory();
    let p: Vec<PageId> =
        (0..N).map(|_| s.create_page(PAGE as u64, Location::Cpu, PageMeta::default()).unwrap()).collect();
    for w in p.windows(2) {
        s.add_dependency(w[0], w[1], EdgeKind::Data, copy_all()).unwrap();
    }
    let mut group = c.benchmark_group(format!("{prefix}state_chain_10k"));
    group.sample_size(10);
    group.throughput(Throughput::Elements(N as u64 - 1));
    let mut k = 0u64;
    group.bench_function("propagate", |b| {
        b.iter(|| {
            k += 1;
            s.update_page(p[0], &k.to_le_bytes()).unwrap();
            black_box(s.propagate(&[p[0]]).unwrap())
        })
    });
    let mut buf = [0u8; PAGE];
    group.bench_function("by_hand_topo", |b| {
        b.iter(|| {
            k += 1;
            s.update_page(p[0], &k.to_le_bytes()).unwrap();
            for w in p.windows(2) {
                s.read_into(w[0], 0, &mut buf).unwrap();
                s.update_page(w[1], &buf).unwrap();
            }
        })
    });
    group.finish();
}

fn emit<M: Measurement>(c: &mut Criterion<M>, prefix: &str) {
    let es = EventSystem::new();
    let ev = Event::DeltaApplied { lsn: 1, page: PageId(1), epoch: 1 };
    let mut group = c.benchmark_group(format!("{prefix}emit"));
    group.bench_function("no_subscriber", |b| b.iter(|| es.emit(black_box(ev))));
    let _other = es.subscribe(16, OverflowPolicy::DropNewest, EventKind::Checkpoint as u32).unwrap();
    group.bench_function("masked_out_subscriber", |b| b.iter(|| es.emit(black_box(ev))));
    let sub = es.subscribe(1024, OverflowPolicy::DropOldest, EventKind::MASK_ALL).unwrap();
    group.bench_function("one_subscriber_drop_oldest", |b| b.iter(|| es.emit(black_box(ev))));
    drop(sub);
    group.finish();
}

fn all_wall(c: &mut Criterion) {
    emit(c, "");
    state_chain_10k(c, "");
    wide(c, "");
    chain_1m(c, "");
}

fn all_cpu(c: &mut Criterion<ThreadCpu>) {
    emit(c, "cpu/");
    state_chain_10k(c, "cpu/");
    wide(c, "cpu/");
    chain_1m(c, "cpu/");
}

criterion_group!(wall, all_wall);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = all_cpu
}
criterion_main!(wall, cpu);
