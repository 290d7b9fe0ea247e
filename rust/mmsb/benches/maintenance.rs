//! Writer stalls while the log is maintained (issue 21, goal 1: p99.9 and maximum route latency
//! of a writer while maintenance runs <= 10 ms). Two writers route into a logged state
//! (`Durability::None`, a directory) while maintenance runs:
//! - `cap`: a log size cap with anonymous pages: the writers' commits signal the maintenance
//!   thread, which checkpoints from the log and compacts (writers that outrun it are slowed
//!   down by 1 ms a write past twice the cap, `slowed`, and wait for a pass past four times,
//!   `stops`);
//! - `cap fb`: the same with file-backed pages (the thread's checkpoint takes the state's lock
//!   for the index hand-over);
//! - `explicit`: no cap; a third thread calls `checkpoint` and then `compact_log` in a loop
//!   (an explicit checkpoint of anonymous pages copies them under the shared lock).
//!
//! Printed per writer: p50, p99, p99.9 and the maximum route latency, and their ratios against
//! the same writers with no maintenance at all (`none`, the cap off) measured in the same run,
//! in the same round; `--rounds N` repeats the whole set N times (the spread of the ratios).
//!
//!     cargo bench -p mmsb --bench maintenance                       # 3 s per mode
//!     cargo bench -p mmsb --bench maintenance -- --quick            # 1 s per mode
//!     cargo bench -p mmsb --bench maintenance -- --quick --rounds 3
//!
//! `--large [MiB]` measures instead what a log size cap costs a sustained large writer (issue
//! 21, goal 4): one writer routes 64 KiB whole-page writes round-robin into 64 pages
//! (`Durability::None`, a directory) for MiB in all (default 1024), with a 64 MiB cap
//! (`cap`: the maintenance thread) and with none (`no cap`), against raw sequential 64 KiB
//! writes of the same bytes to one file (`raw`); the three alternate within each round, and
//! the ratios are of the same round. The default cap's `--long` peers run (6 GiB, past the
//! dirty-page limits) is `benchmark/peers`; this is the quick A/B of the same shape.
//!
//!     cargo bench -p mmsb --bench maintenance -- --large 1024 --rounds 3
//!
//! `--budget MiB` gives the `cap` runs that `replay_budget` and adds a run with the cap alone
//! (`cap0`), so `cap/cap0` is what the budget costs the writer (16 MiB against the 64 MiB cap
//! is the default 64 MiB against 256 MiB).

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
    CapFileBacked,
    Explicit,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1e3
}

/// What one mode measured: route latencies (ns) of each writer, and the log's counters.
struct Measured {
    lat: [Vec<u64>; 2],
    passes: u64,
    waits: u64,
    slowed: u64,
    max_log: u64,
}

/// The cap of the `cap` modes: small enough that several passes run in a few seconds.
const CAP: u64 = 16 << 20;

/// Route latencies (ns) of each writer: a 4 KiB whole-page writer and a 64 B writer.
fn run(mode: Mode, secs: f64) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let cap = if matches!(mode, Mode::Cap | Mode::CapFileBacked) { CAP } else { 0 };
    let s = MMSBState::open(Config {
        dir: Some(dir.path().to_path_buf()),
        durability: Durability::None,
        log_size_cap: cap,
        file_backed_pages: mode == Mode::CapFileBacked,
        ..Config::default()
    })
    .unwrap();
    let pages: Vec<PageId> =
        (0..256).map(|_| s.create_page(4096, Location::Cpu, PageMeta::default()).unwrap()).collect();
    let stop = AtomicBool::new(false);
    let passes = AtomicU64::new(0);
    let max_log = AtomicU64::new(0);
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
        // The log's size, sampled (the footprint the cap bounds).
        let t = Instant::now();
        while t.elapsed().as_secs_f64() < secs {
            std::thread::sleep(Duration::from_millis(20));
            max_log.fetch_max(s.log_info().unwrap().log_bytes, Ordering::Relaxed);
        }
        stop.store(true, Ordering::Relaxed);
        [big.join().unwrap(), small.join().unwrap()]
    });
    let info = s.log_info().unwrap();
    assert_eq!(info.maintenance_failures, 0, "{:?}", info.last_maintenance_error);
    let passes = if mode == Mode::Explicit { passes.load(Ordering::Relaxed) } else { info.maintenance_passes };
    Measured {
        lat,
        passes,
        waits: info.maintenance_waits,
        slowed: info.maintenance_slowdowns,
        max_log: max_log.load(Ordering::Relaxed),
    }
}

/// The `--large` pages and cap: 64 pages of 64 KiB and 16 times their size, the ratio of the
/// default 256 MiB cap to the peers' 256 pages, scaled down to a short run.
const LARGE_PAGES: usize = 64;
const LARGE_CAP: u64 = 64 << 20;

/// MB/s of `bytes` written as 64 KiB whole-page routes into the pages of a logged state with
/// `cap`; also the passes, slowed-down writes and waits of the maintenance thread.
fn large_mmsb(cap: u64, budget: u64, bytes: u64) -> (f64, u64, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let s = MMSBState::open(Config {
        dir: Some(dir.path().to_path_buf()),
        durability: Durability::None,
        log_size_cap: cap,
        replay_budget: budget,
        ..Config::default()
    })
    .unwrap();
    let pages: Vec<PageId> =
        (0..LARGE_PAGES).map(|_| s.create_page(64 << 10, Location::Cpu, PageMeta::default()).unwrap()).collect();
    let vals: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i + 1; 64 << 10]).collect();
    let n = bytes / (64 << 10);
    let t = Instant::now();
    for i in 0..n as usize {
        s.route_delta(pages[i % LARGE_PAGES], &Delta::write(0, &vals[i % 4]).unwrap(), None).unwrap();
    }
    let rate = bytes as f64 / t.elapsed().as_secs_f64() / 1e6;
    let info = s.log_info().unwrap();
    assert_eq!(info.maintenance_failures, 0, "{:?}", info.last_maintenance_error);
    (rate, info.maintenance_passes, info.maintenance_slowdowns, info.maintenance_waits)
}

/// MB/s of `bytes` written to one file as sequential 64 KiB writes (no sync).
fn large_raw(bytes: u64) -> f64 {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(dir.path().join("raw")).unwrap();
    let val = vec![7u8; 64 << 10];
    let t = Instant::now();
    for _ in 0..bytes / (64 << 10) {
        f.write_all(&val).unwrap();
    }
    bytes as f64 / t.elapsed().as_secs_f64() / 1e6
}

/// The `--large` A/B (see the module docs). `budget`: the `replay_budget` of the `cap` runs
/// (0: the cap alone); with `--budget`, a fourth run per round with the cap alone gives the
/// budget's cost as `cap/cap0` (the same round).
fn large(mib: u64, rounds: usize, budget: Option<u64>) {
    let bytes = mib << 20;
    let b = budget.unwrap_or(0);
    println!(
        "64 KiB writes, {mib} MiB per run, cap {} MiB, replay budget {} MiB, {rounds} round(s); MB/s and same-round ratios",
        LARGE_CAP >> 20,
        b >> 20
    );
    println!(
        "{:<6} {:>8} {:>8} {:>8} {:>9} {:>9} {:>10} {:>7} {:>7} {:>6} {:>8} {:>9}",
        "round",
        "raw",
        "no cap",
        "cap",
        "cap/raw",
        "nocap/raw",
        "cap/nocap",
        "passes",
        "slowed",
        "waits",
        "cap0",
        "cap/cap0"
    );
    let mut r = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for round in 0..rounds {
        // Alternate the order, so neither always runs on the other's dirty pages.
        let (raw, nocap, cap, cap0) = if round % 2 == 0 {
            let raw = large_raw(bytes);
            let nocap = large_mmsb(0, 0, bytes);
            let cap = large_mmsb(LARGE_CAP, b, bytes);
            (raw, nocap, cap, budget.map(|_| large_mmsb(LARGE_CAP, 0, bytes)))
        } else {
            let cap0 = budget.map(|_| large_mmsb(LARGE_CAP, 0, bytes));
            let cap = large_mmsb(LARGE_CAP, b, bytes);
            let nocap = large_mmsb(0, 0, bytes);
            (large_raw(bytes), nocap, cap, cap0)
        };
        let q = [cap.0 / raw, nocap.0 / raw, cap.0 / nocap.0, cap0.map_or(f64::NAN, |c| cap.0 / c.0)];
        println!(
            "{:<6} {raw:>8.0} {:>8.0} {:>8.0} {:>9.2} {:>9.2} {:>10.2} {:>7} {:>7} {:>6} {:>8.0} {:>9.2}",
            round + 1,
            nocap.0,
            cap.0,
            q[0],
            q[1],
            q[2],
            cap.1,
            cap.2,
            cap.3,
            cap0.map_or(f64::NAN, |c| c.0),
            q[3]
        );
        for (v, x) in r.iter_mut().zip(q) {
            v.push(x);
        }
    }
    let range = |v: &[f64]| {
        let (lo, hi) = v.iter().fold((f64::MAX, 0.0f64), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        format!("{lo:.2}-{hi:.2}")
    };
    println!(
        "range: cap/raw {}, nocap/raw {}, cap/nocap {}, cap/cap0 {}",
        range(&r[0]),
        range(&r[1]),
        range(&r[2]),
        range(&r[3])
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--large") {
        let mib = args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(if ab::is_bench_run() { 1024 } else { 64 });
        let rounds = args.iter().position(|a| a == "--rounds").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(1);
        // `--budget MiB`: the cap runs' replay budget, against the cap alone (default: none).
        let budget = args
            .iter()
            .position(|a| a == "--budget")
            .and_then(|i| args.get(i + 1)?.parse::<u64>().ok())
            .map(|m| m << 20);
        large(mib, rounds, budget);
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let rounds: usize =
        args.iter().position(|a| a == "--rounds").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(1);
    let secs = if !ab::is_bench_run() {
        0.2 // as a test: only that it runs
    } else if quick {
        1.0
    } else {
        3.0
    };
    println!("route latency (us) of two writers while the log is maintained, {secs} s per mode, {rounds} round(s)");
    let modes =
        [(Mode::None, "none"), (Mode::Cap, "cap"), (Mode::CapFileBacked, "cap fb"), (Mode::Explicit, "explicit")];
    // Per mode (not `none`) and writer: the ratios p50, p99, p99.9, max against `none`, per round.
    let mut ratios: Vec<Vec<[f64; 4]>> = vec![Vec::new(); (modes.len() - 1) * 2];
    let mut worst = [0.0f64; 2]; // the longest p99.9 and max of the cap modes
    for round in 0..rounds {
        println!(
            "round {}\n{:<9} {:<6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>7} {:>8}  ratio to none: p50 p99 p99.9 max",
            round + 1,
            "mode",
            "writer",
            "routes",
            "p50",
            "p99",
            "p99.9",
            "max",
            "passes",
            "stops",
            "slowed",
            "log MiB"
        );
        let mut base: Vec<[f64; 4]> = Vec::new();
        for (mi, (mode, name)) in modes.iter().enumerate() {
            let m = run(*mode, secs);
            for (wi, (mut l, w)) in m.lat.into_iter().zip(["4 KiB", "64 B"]).enumerate() {
                l.sort_unstable();
                let q = [percentile(&l, 0.5), percentile(&l, 0.99), percentile(&l, 0.999), percentile(&l, 1.0)];
                let ratio = if *mode == Mode::None {
                    base.push(q);
                    String::new()
                } else {
                    let r = [q[0] / base[wi][0], q[1] / base[wi][1], q[2] / base[wi][2], q[3] / base[wi][3]];
                    ratios[(mi - 1) * 2 + wi].push(r);
                    if matches!(mode, Mode::Cap | Mode::CapFileBacked) {
                        worst = [worst[0].max(q[2]), worst[1].max(q[3])];
                    }
                    format!("{:.2} {:.2} {:.2} {:.2}", r[0], r[1], r[2], r[3])
                };
                println!(
                    "{name:<9} {w:<6} {:>9} {:>8.1} {:>8.1} {:>8.1} {:>8.0} {:>6} {:>6} {:>7} {:>8.1}  {ratio}",
                    l.len(),
                    q[0],
                    q[1],
                    q[2],
                    q[3],
                    m.passes,
                    m.waits,
                    m.slowed,
                    m.max_log as f64 / f64::from(1 << 20),
                );
            }
        }
    }
    if rounds > 1 {
        println!("ratio to none, range over {rounds} rounds (min-max): p50, p99, p99.9, max");
        for (mi, (_, name)) in modes.iter().enumerate().skip(1) {
            for (wi, w) in ["4 KiB", "64 B"].iter().enumerate() {
                let rs = &ratios[(mi - 1) * 2 + wi];
                let range = |k: usize| {
                    let (lo, hi) = rs.iter().fold((f64::MAX, 0.0f64), |(lo, hi), r| (lo.min(r[k]), hi.max(r[k])));
                    format!("{lo:.2}-{hi:.2}")
                };
                println!("{name:<9} {w:<6} {} {} {} {}", range(0), range(1), range(2), range(3));
            }
        }
    }
    println!(
        "goal 1 (cap modes, maintenance thread): longest p99.9 {:.2} ms, longest route {:.1} ms (target <= 10 ms each)",
        worst[0] / 1e3,
        worst[1] / 1e3
    );
}
