//! Interleaved A/B timing for ratios that criterion's sequential runs cannot give reliably on a
//! shared machine: the two variants alternate in short rounds, so load changes hit both alike.

use std::hint::black_box;
use std::time::Instant;

/// Median ns per call of `a` and `b` over `rounds` alternating rounds of `iters` calls each.
#[allow(dead_code)] // each bench includes this file; not every bench uses every helper
pub fn interleaved(rounds: usize, iters: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    let mut ta = Vec::with_capacity(rounds);
    let mut tb = Vec::with_capacity(rounds);
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        black_box(());
        t.elapsed().as_nanos() as f64 / iters as f64
    };
    for r in 0..rounds {
        // Alternate which goes first, so neither always runs on a warmer cache.
        if r % 2 == 0 {
            ta.push(time(&mut a));
            tb.push(time(&mut b));
        } else {
            tb.push(time(&mut b));
            ta.push(time(&mut a));
        }
    }
    (median(&mut ta), median(&mut tb))
}

/// Like [`interleaved`], for one workload `f` under two settings: `set(true)` before each round
/// of the first variant and `set(false)` before each round of the second. Returns the medians
/// (true, false). Timing the same object both ways keeps its memory layout out of the ratio.
#[allow(dead_code)] // each bench includes this file; not every bench uses every helper
pub fn interleaved_setting(rounds: usize, iters: usize, mut set: impl FnMut(bool), mut f: impl FnMut()) -> (f64, f64) {
    let mut t = [Vec::with_capacity(rounds), Vec::with_capacity(rounds)];
    for r in 0..rounds {
        for on in if r % 2 == 0 { [true, false] } else { [false, true] } {
            set(on);
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            black_box(());
            t[usize::from(!on)].push(start.elapsed().as_nanos() as f64 / iters as f64);
        }
    }
    let [mut a, mut b] = t;
    (median(&mut a), median(&mut b))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Prints one A/B line: both medians and `a / b`.
#[allow(dead_code)] // each bench includes this file; not every bench uses every helper
pub fn report(what: &str, a_name: &str, a: f64, b_name: &str, b: f64, target: &str) {
    println!("{what}: {a_name} {a:.1} ns, {b_name} {b:.1} ns, ratio {:.3} (target {target})", a / b);
}

/// True when the binary runs as a benchmark (`cargo bench`), not as a test (`cargo test --benches`).
pub fn is_bench_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}
