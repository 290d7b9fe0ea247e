//! Cost of the device layer on the routing hot path: routing small deltas to a CPU page (no dirty
//! tracking) vs a GPU page (dirty tracking, here without a device so nothing is ever synced and
//! the range set stays at its cap: the worst case), and the sync planner on a full dirty set.
#![allow(clippy::cast_possible_truncation)] // benchmark sizes and timings: truncation is intended or impossible here

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use mmsb::device::plan::{plan, PlannerConfig, SyncCommand, SyncDirection};
use mmsb::device::DirtySet;
use mmsb::{Config, Delta, Location, MMSBState, PageMeta};

const PAGE: u64 = 1 << 20;

fn deltas() -> Vec<Delta> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Delta::write(x % (PAGE - 64), &[x as u8; 64]).unwrap()
        })
        .collect()
}

fn routing(c: &mut Criterion) {
    let ds = deltas();
    let mut g = c.benchmark_group("route_64B_delta");
    for loc in [Location::Cpu, Location::Gpu] {
        let s = MMSBState::open(Config { gpu: false, ..Config::default() }).unwrap();
        let p = s.create_page(PAGE, loc, PageMeta::default()).unwrap();
        let mut i = 0;
        g.bench_function(format!("{loc:?}"), |b| {
            b.iter(|| {
                i = (i + 1) % ds.len();
                s.route_delta(p, black_box(&ds[i]), None).unwrap()
            })
        });
    }
    g.finish();
}

fn planning(c: &mut Criterion) {
    let mut d = DirtySet::default();
    for delta in deltas() {
        d.mark_delta(&delta);
    }
    let cmd =
        SyncCommand { page: mmsb::PageId(1), direction: SyncDirection::HostToDevice, ranges: d.ranges().to_vec() };
    let cfg = PlannerConfig::default();
    c.bench_function("plan_64_dirty_ranges", |b| {
        b.iter(|| plan(black_box(std::slice::from_ref(&cmd)), |_| Some(PAGE), &cfg))
    });
}

criterion_group!(benches, routing, planning);
criterion_main!(benches);
