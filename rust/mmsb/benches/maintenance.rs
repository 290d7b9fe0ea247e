//! Writer stalls while the log is maintained (issue 21, goal 1: no stall above 10 ms). Two
//! writers route into a logged state (`Durability::None`) while maintenance runs:
//! - `cap`: a log size cap, so the writers' own commits trigger the automatic checkpoint +
//!   compaction (the triggering writer runs it);
//! - `explicit`: no cap; a third thread calls `checkpoint` and then `compact_log` in a loop.
//!
//! Printed per writer: p50, p99, p99.9 and the maximum route latency, against the same writers
//! with no maintenance at all (`none`), in the same run.
//!
//!     cargo bench -p mmsb --bench maintenance            # 3 s per mode
//!     cargo bench -p mmsb --bench maintenance -- --quick # 1 s per mode

#![allow(clippy::cast_possible_truncation)] // benchmark sizes and timings: truncation is intended or impossible here

#[path = "support/ab.rs"]
mod ab;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mmsb::{Config, Delta, Durability, Location, MMSBState, PageId, PageMeta};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    None,
    Cap,
    Explicit,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1e3
}

/// Route latencies (ns) of each writer: a 4 KiB whole-page writer and a 64 B writer.
fn run(mode: Mode, secs: f64) -> ([Vec<u64>; 2], u64) {
    let dir = tempfile::tempdir().unwrap();
    let cap = if mode == Mode::Cap { 16 << 20 } else { 0 };
    let s = MMSBState::open(Config {
        dir: Some(dir.path().to_path_buf()),
        durability: Durability::None,
        log_size_cap: cap,
        ..Config::default()
    })
    .unwrap();
    let pages: Vec<PageId> =
        (0..256).map(|_| s.create_page(4096, Location::Cpu, PageMeta::default()).unwrap()).collect();
    let stop = AtomicBool::new(false);
    let passes = AtomicU64::new(0);
    let lat = std::thread::scope(|sc| {
        let writer = |size: usize, first: usize| {
            let (s, pages, stop) = (&s, &pages, &stop);
            sc.spawn(move || {
                let d = [Delta::write(0, &vec![1; size]).unwrap(), Delta::write(0, &vec![2; size]).unwrap()];
                let mut lat = Vec::with_capacity(1 << 20);
                let mut i = first;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    s.route_delta(pages[i % 128 + first], &d[i & 1], None).unwrap();
                    lat.push(t.elapsed().as_nanos() as u64);
                    i += 1;
                }
                lat
            })
        };
        let big = writer(4096, 0);
        let small = writer(64, 128);
        if mode == Mode::Explicit {
            let (s, stop, passes) = (&s, &stop, &passes);
            sc.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    s.checkpoint().unwrap();
                    s.compact_log().unwrap();
                    passes.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        [big.join().unwrap(), small.join().unwrap()]
    });
    let info = s.log_info().unwrap();
    let n = if mode == Mode::Explicit { passes.load(Ordering::Relaxed) } else { info.checkpoints };
    (lat, n)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let secs = if !ab::is_bench_run() {
        0.2 // as a test: only that it runs
    } else if quick {
        1.0
    } else {
        3.0
    };
    println!("route latency (us) of two writers while the log is maintained, {secs} s per mode");
    println!(
        "{:<9} {:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "mode", "writer", "routes", "p50", "p99", "p99.9", "max", "passes"
    );
    let mut worst = 0.0f64;
    for (mode, name) in [(Mode::None, "none"), (Mode::Cap, "cap 16MiB"), (Mode::Explicit, "explicit")] {
        let (lats, passes) = run(mode, secs);
        for (mut l, w) in lats.into_iter().zip(["4 KiB", "64 B"]) {
            l.sort_unstable();
            let max = percentile(&l, 1.0);
            if mode != Mode::None {
                worst = worst.max(max);
            }
            println!(
                "{name:<9} {w:<12} {:>9} {:>9.1} {:>9.1} {:>9.1} {:>9.0} {:>10}",
                l.len(),
                percentile(&l, 0.5),
                percentile(&l, 0.99),
                percentile(&l, 0.999),
                max,
                passes
            );
        }
    }
    println!("goal 1: the longest route while maintenance ran: {:.1} ms (target <= 10 ms)", worst / 1e3);
}
