//! Cost of always-on monitoring: the 64-byte in-memory route with monitoring on vs off (one state,
//! monitoring toggled between interleaved rounds: two states would also compare their memory
//! layouts, which moved the ratio by ±4% between builds), and the
//! monitor's primitives alone. Run: `cargo bench --bench monitoring`.

#[path = "support/ab.rs"]
mod ab;

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion};
use mmsb::{Counter, Delta, Location, MMSBState, Metric, Monitor, PageId, PageMeta};

fn state_with_page(enabled: bool) -> (MMSBState, PageId) {
    let state = MMSBState::in_memory();
    state.monitor().set_enabled(enabled);
    let page = state.create_page(4096, Location::Cpu, PageMeta::default()).unwrap();
    (state, page)
}

fn route_64b(c: &mut Criterion) {
    let delta = Delta::write(128, &[0xAB; 64]).unwrap();
    let mut g = c.benchmark_group("route_64B");
    for (name, enabled, every) in [("monitor_off", false, 64), ("monitor_on", true, 64), ("monitor_on_every", true, 1)]
    {
        let (state, page) = state_with_page(enabled);
        state.monitor().set_sample_every(every);
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| state.route_delta(black_box(page), black_box(&delta), None).unwrap())
        });
    }
    g.finish();
}

fn primitives(c: &mut Criterion) {
    let m = Monitor::new();
    let mut g = c.benchmark_group("monitor");
    g.bench_function("record", |b| b.iter(|| m.record(black_box(Metric::LogAppend), black_box(1234))));
    g.bench_function("timer_exact", |b| b.iter(|| m.start(black_box(Metric::Fsync)).stop(&m)));
    g.bench_function("timer_sampled_default", |b| b.iter(|| m.start_sampled(black_box(Metric::Replay)).stop(&m)));
    g.bench_function("incr", |b| b.iter(|| m.incr(black_box(Counter::PagesRecomputed), 1)));
    g.bench_function("snapshot", |b| b.iter(|| black_box(m.snapshot())));
    g.finish();
}

/// Interleaved on/off comparison: the ratio this bench exists for.
fn overhead_ratio() {
    let delta = Delta::write(128, &[0xAB; 64]).unwrap();
    let (on, pon) = state_with_page(true);
    if let Some(n) = std::env::var("MMSB_BENCH_SAMPLE_EVERY").ok().and_then(|v| v.parse().ok()) {
        on.monitor().set_sample_every(n);
    }
    // The ratio this bench exists for: one state and page, monitoring toggled between rounds.
    let (t_on, t_off) = ab::interleaved_setting(
        400,
        20_000,
        |enabled| on.monitor().set_enabled(enabled),
        || {
            on.route_delta(black_box(pon), black_box(&delta), None).unwrap();
        },
    );
    on.monitor().set_enabled(true);
    ab::report("route_64B monitoring overhead", "on", t_on, "off", t_off, "<= 1.02");
    let dense = Delta::dense(0, &[0xFF; 512], &[0x5A; 4096]).unwrap();
    let (d_on, d_off) = ab::interleaved_setting(
        100,
        5_000,
        |enabled| on.monitor().set_enabled(enabled),
        || {
            on.route_delta(black_box(pon), black_box(&dense), None).unwrap();
        },
    );
    on.monitor().set_enabled(true);
    ab::report("route dense 4 KiB monitoring overhead", "on", d_on, "off", d_off, "(none set)");
    let m = Monitor::new();
    let (t_rec, _) = ab::interleaved(50, 100_000, || m.record(black_box(Metric::LogAppend), black_box(1234)), || {});
    println!("record alone: {t_rec:.1} ns ({:.2}% of the monitoring-off route)", 100.0 * t_rec / t_off);
    println!("clock: {:?}, sample_every {}", on.monitor().clock_kind(), on.monitor().sample_every());
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    route_64b(&mut c);
    primitives(&mut c);
    c.final_summary();
    if ab::is_bench_run() {
        overhead_ratio();
    }
}
