//! Scaling curves (issue 21): route cost against the number of pages, memory per page, open time
//! against state size, replay against log size. Each point's ratio is taken against a baseline
//! timed in the same run, in alternating rounds (`support/ab.rs`).
//!
//!     cargo bench -p mmsb --bench scaling            # full: up to 100k pages, 1M deltas
//!     cargo bench -p mmsb --bench scaling -- --quick # up to 10k pages, 100k deltas
//!     cargo bench -p mmsb --bench scaling -- --only replay   # one curve (route, memory, open, open-fb, crash, replay)
//!     cargo bench -p mmsb --bench scaling -- --json ../../benchmark/results/scaling.json
//!
//! `--json PATH` also writes the curves' points for the benchmark plot (`benchmark/benchmarks.jl`
//! draws them in its third panel when `benchmark/results/scaling.json` exists; the path is
//! relative to `rust/mmsb`, where cargo runs the bench).
//!
//! Run as a test (`cargo test --benches`) it only checks that every curve runs, on tiny sizes.

#![allow(clippy::cast_possible_truncation)] // benchmark sizes and timings: truncation is intended or impossible here

#[path = "support/ab.rs"]
mod ab;

use std::hint::black_box;
use std::time::Instant;

use mmsb::{Config, Delta, Durability, Location, MMSBState, PageId, PageMeta, RouteOp};

const PAGE: u64 = 4096;

/// A fixed pseudo-random sequence of indices below `n` (xorshift).
fn seq(len: usize, n: usize) -> Vec<usize> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        })
        .collect()
}

fn in_memory_pages(n: usize) -> (MMSBState, Vec<PageId>) {
    let s = MMSBState::in_memory();
    let pages: Vec<PageId> = (0..n).map(|_| s.create_page(PAGE, Location::Cpu, PageMeta::default()).unwrap()).collect();
    // Touch every page once, so no route below pays the first-touch fault.
    let d = Delta::write(0, &[1; 64]).unwrap();
    for &p in &pages {
        s.route_delta(p, &d, None).unwrap();
    }
    (s, pages)
}

/// This thread's CPU time, ns: unlike the wall clock it stops while the thread is descheduled,
/// which on a loaded machine (load 10+ on 2 cores) lands in rounds of slow operations more than
/// in rounds of fast ones and so inflated the route ratio.
fn thread_cpu_ns() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid timespec to write; CLOCK_THREAD_CPUTIME_ID exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 * 1e9 + t.tv_nsec as f64
}

/// Like `ab::interleaved`, timed in this thread's CPU time: median ns per call of `a` and `b`.
fn interleaved_cpu(rounds: usize, iters: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    let mut t = [Vec::new(), Vec::new()];
    for r in 0..rounds {
        for k in if r % 2 == 0 { [0, 1] } else { [1, 0] } {
            let start = thread_cpu_ns();
            for _ in 0..iters {
                if k == 0 {
                    a()
                } else {
                    b()
                }
            }
            t[k].push((thread_cpu_ns() - start) / iters as f64);
        }
    }
    let [ta, tb] = t;
    (median(ta), median(tb))
}

/// Resident set size of this process, bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// One curve for the plot: its name, axis labels and points `(x, y)`, and a second series drawn
/// beside it (the baseline: the bare copy, the read of the log files), if any.
struct Curve {
    name: &'static str,
    x: &'static str,
    y: &'static str,
    points: Vec<(f64, f64)>,
    base_name: &'static str,
    base: Vec<(f64, f64)>,
}

impl Curve {
    /// An empty curve: its name, axis labels and the baseline's name ("" when it has none).
    fn new(name: &'static str, x: &'static str, y: &'static str, base_name: &'static str) -> Curve {
        Curve { name, x, y, points: Vec::new(), base_name, base: Vec::new() }
    }

    /// Adds a point, and the baseline's at the same x when there is one.
    fn push(&mut self, x: f64, y: f64, base: Option<f64>) {
        self.points.push((x, y));
        self.base.extend(base.map(|b| (x, b)));
    }

    fn json(&self) -> serde_json::Value {
        let pts = |v: &[(f64, f64)]| v.iter().map(|&(x, y)| serde_json::json!([x, y])).collect::<Vec<_>>();
        serde_json::json!({
            "name": self.name, "x": self.x, "y": self.y, "points": pts(&self.points),
            "base_name": self.base_name, "base": pts(&self.base),
        })
    }
}

/// Milliseconds `f` took.
fn time_ms(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1e3
}

/// The middle value (of three timings: one slow outlier on a loaded machine is dropped).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The median of three calls of `f`.
fn median3(mut f: impl FnMut() -> f64) -> f64 {
    median(vec![f(), f(), f()])
}

/// Route 64 B to a random page among `n`, against the same at 10 pages and against a bare 64 B
/// copy into `n` separately mapped 4 KiB pages visited in the same order (the memory's own cost).
fn route_curve(sizes: &[usize], rounds: usize) -> Curve {
    let mut curve = Curve::new("route 64 B vs pages", "pages", "ns per route", "bare 64 B copy");
    println!("\n== route 64 B to a random page among N (in memory) ==");
    println!(
        "{:>8} {:>10} {:>10} {:>10} {:>12} {:>14}",
        "N", "route ns", "copy ns", "route@10", "N / 10", "route - copy"
    );
    let order = seq(1 << 16, 1 << 30);
    let (small, small_pages) = in_memory_pages(10);
    let d = [Delta::write(128, &[0xAB; 64]).unwrap(), Delta::write(128, &[0x54; 64]).unwrap()];
    for &n in sizes {
        let (state, pages) = in_memory_pages(n);
        let mut maps: Vec<memmap2::MmapMut> =
            (0..n).map(|_| memmap2::MmapOptions::new().len(PAGE as usize).map_anon().unwrap()).collect();
        for m in &mut maps {
            m[0] = 1;
        }
        let at: Vec<usize> = maps.iter_mut().map(|m| m.as_mut_ptr() as usize + 128).collect();
        let (mut i, mut j, mut k) = (0usize, 0usize, 0usize);
        // The three workloads, each timed against another below (one closure each, passed by
        // `&mut`, so the indices carry on across the pairs).
        let mut route_n = || {
            i = (i + 1) & 0xFFFF;
            state.route_delta(pages[order[i] % n], &d[i & 1], None).unwrap();
        };
        let mut route_10 = || {
            j = (j + 1) & 0xFFFF;
            small.route_delta(small_pages[order[j] % 10], &d[j & 1], None).unwrap();
        };
        let mut copy = || {
            k = (k + 1) & 0xFFFF;
            let m = &mut maps[order[k] % n];
            m[128..192].fill(k as u8);
            black_box(&m[128]);
        };
        // Why the route grows: one route is one lock hand-over, a full barrier on x86, so its
        // data miss cannot overlap the next route's, while the bare copy's misses overlap. The
        // same copy with a barrier after each is the floor a single route can reach; a batch of
        // 16 ops validates (and prefetches) all 16 before writing, so their misses overlap.
        let mut f = 0usize;
        let mut fenced_copy = || {
            f = (f + 1) & 0xFFFF;
            // SAFETY: `at` points 128 bytes into a live 4 KiB mapping of `maps` (kept until the
            // end of this iteration), so 64 bytes fit; no reference to those bytes is alive here.
            unsafe { std::ptr::write_bytes(at[order[f] % n] as *mut u8, f as u8, 64) };
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        };
        let mut b = 0usize;
        let mut batch_16 = || {
            let ops: [RouteOp<'_>; 16] = std::array::from_fn(|q| {
                b = (b + 1) & 0xFFFF;
                RouteOp { page: pages[order[b] % n], delta: &d[q & 1], expected_epoch: None }
            });
            state.route_batch(&ops).unwrap();
        };
        let iters = 4096;
        let (t_fenced, t_batch16) = ab::interleaved(rounds, iters / 16, &mut fenced_copy, &mut batch_16);
        let (t_fenced, t_batch_op) = (t_fenced, t_batch16 / 16.0);
        let (t_n, t_10) = ab::interleaved(rounds, iters, &mut route_n, &mut route_10);
        let (t_n2, t_copy) = ab::interleaved(rounds, iters, &mut route_n, &mut copy);
        let t_n = t_n.min(t_n2);
        // The same two ratios in CPU time (see `thread_cpu_ns`).
        let (c_n, c_10) = interleaved_cpu(rounds, iters, &mut route_n, &mut route_10);
        let (c_n2, c_copy) = interleaved_cpu(rounds, iters, &mut route_n, &mut copy);
        let c_n = c_n.min(c_n2);
        println!("{n:>8} {t_n:>10.1} {t_copy:>10.1} {t_10:>10.1} {:>12.2} {:>14.1}", t_n / t_10, t_n - t_copy);
        println!(
            "{:>8} copy with a barrier {t_fenced:.1} ns (route / it {:.2}); a batch of 16 routes {t_batch_op:.1} ns per op ({:.2} x route at 10)",
            "",
            t_n / t_fenced,
            t_batch_op / t_10
        );
        println!(
            "{:>8} {c_n:>10.1} {c_copy:>10.1} {c_10:>10.1} {:>12.2} {:>14.1}   (CPU time)",
            "",
            c_n / c_10,
            c_n - c_copy
        );
        if n == *sizes.last().unwrap() {
            println!(
                "goal 4: route at {n} pages / route at 10 pages = {:.2} wall clock, {:.2} CPU time (target <= 2); route / copy at {n} pages = {:.1} wall, {:.1} CPU",
                t_n / t_10,
                c_n / c_10,
                t_n / t_copy,
                c_n / c_copy
            );
        }
        curve.push(n as f64, t_n, Some(t_copy));
    }
    curve
}

/// Resident bytes per page of 4 KiB (after one write each), and the registry's share above the
/// page's own 4 KiB.
fn memory_curve(sizes: &[usize]) -> Curve {
    let mut curve = Curve::new("memory per 4 KiB page", "pages", "resident bytes per page", "the page's 4 KiB");
    println!("\n== memory per 4 KiB page (resident, after one write to each) ==");
    println!("{:>8} {:>14} {:>18}", "N", "bytes/page", "above the 4 KiB");
    for &n in sizes {
        let before = rss();
        let (state, _pages) = in_memory_pages(n);
        let per = (rss().saturating_sub(before)) as f64 / n as f64;
        println!("{n:>8} {per:>14.0} {:>18.0}", per - PAGE as f64);
        drop(state);
        curve.push(n as f64, per, Some(PAGE as f64));
    }
    curve
}

fn logged(dir: &std::path::Path) -> MMSBState {
    MMSBState::open(Config { dir: Some(dir.to_path_buf()), durability: Durability::None, ..Config::default() }).unwrap()
}

/// Milliseconds to open a logged state of `n` pages of 4 KiB (each written once), closed cleanly.
fn open_curve(sizes: &[usize]) -> Curve {
    let mut curve = Curve::new("open after a clean close vs state size", "MiB", "ms to open", "");
    println!("\n== open after a clean close against state size (pages of 4 KiB, each written once) ==");
    println!("{:>8} {:>10} {:>12}", "N", "MiB", "open ms");
    for &n in sizes {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = logged(dir.path());
            let full = Delta::write(0, &[7; PAGE as usize]).unwrap();
            for _ in 0..n {
                let p = s.create_page(PAGE, Location::Cpu, PageMeta::default()).unwrap();
                s.route_delta(p, &full, None).unwrap();
            }
        }
        let ms = median3(|| {
            let mut s = None;
            let ms = time_ms(|| s = Some(black_box(logged(dir.path()))));
            drop(s); // closing is not part of the open
            ms
        });
        let mib = (n as u64 * PAGE) as f64 / (1 << 20) as f64;
        println!("{n:>8} {mib:>10.1} {ms:>12.2}");
        curve.push(mib, ms, None);
    }
    curve
}

/// A logged state of `mib` MiB in pages of `page_mib` MiB, each written whole once; file-backed
/// or anonymous pages, the default `log_size_cap` (its maintenance thread checkpoints while it
/// is written).
fn build_state(dir: &std::path::Path, mib: u64, page_mib: u64, file_backed: bool) -> MMSBState {
    const MIB: u64 = 1 << 20;
    let s = MMSBState::open(reopen_config(dir, file_backed)).unwrap();
    let full = Delta::write(0, &vec![7; (page_mib * MIB) as usize]).unwrap();
    for _ in 0..mib.div_ceil(page_mib) {
        let p = s.create_page(page_mib * MIB, Location::Cpu, PageMeta::default()).unwrap();
        s.route_delta(p, &full, None).unwrap();
    }
    s
}

fn reopen_config(dir: &std::path::Path, file_backed: bool) -> Config {
    Config {
        dir: Some(dir.to_path_buf()),
        durability: Durability::None,
        file_backed_pages: file_backed,
        ..Config::default()
    }
}

/// Copies a state directory as a crash of its writer leaves it: the files as they are, the
/// page cache included (file-backed pages are the page files' current bytes), without `LOCK`.
/// A file the writer's maintenance thread removes meanwhile is left out, as it would be gone.
fn copy_as_crashed(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_as_crashed(&e.path(), &target);
        } else if e.file_name() != "LOCK" {
            match std::fs::copy(e.path(), target) {
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                r => {
                    r.unwrap();
                }
            }
        }
    }
}

/// Issue 21 goal 2: milliseconds to reopen a cleanly closed state of `mib` MiB, timed
/// alternately in the same run (median of three each): file-backed pages of 1 MiB (a clean close
/// checkpoints; open maps the page files and reads none of the log the checkpoint covers), the
/// same in pages of 64 MiB (the per-page cost of opening and mapping a file is about all that
/// is left), and anonymous pages of 1 MiB (open loads the newest checkpoint and replays the log
/// after it).
fn open_file_backed_curve(sizes_mib: &[usize]) -> Curve {
    let mut curve = Curve::new("reopen after a clean close, file-backed", "MiB", "ms to open", "anonymous pages");
    println!("\n== reopen after a clean close: file-backed (1 MiB and 64 MiB pages) against anonymous (1 MiB) ==");
    println!(
        "{:>8} {:>12} {:>12} {:>12} {:>10} {:>12}",
        "MiB", "fb 1M ms", "fb 64M ms", "anon ms", "fb / anon", "fb64 / anon"
    );
    for &mib in sizes_mib {
        let mib = mib as u64;
        let kinds = [(1, true), (64.min(mib), true), (1, false)];
        let dirs: Vec<tempfile::TempDir> = kinds.iter().map(|_| tempfile::tempdir().unwrap()).collect();
        for (d, &(page_mib, fb)) in dirs.iter().zip(&kinds) {
            build_state(d.path(), mib, page_mib, fb).close();
        }
        let mut t = [Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..3 {
            for (k, tk) in t.iter_mut().enumerate() {
                let start = Instant::now();
                let s = MMSBState::open(reopen_config(dirs[k].path(), kinds[k].1)).unwrap();
                black_box(s.lsn());
                tk.push(start.elapsed().as_secs_f64() * 1e3);
                drop(s);
            }
        }
        for tk in &mut t {
            tk.sort_by(f64::total_cmp);
        }
        let (fb, fb64, anon) = (t[0][1], t[1][1], t[2][1]);
        println!("{mib:>8} {fb:>12.2} {fb64:>12.2} {anon:>12.2} {:>10.4} {:>12.4}", fb / anon, fb64 / anon);
        curve.push(mib as f64, fb, Some(anon));
    }
    println!("goal 2: reopen of a cleanly closed 1 GiB state <= 5 ms (the full run's last row)");
    curve
}

/// Issue 21 goal 2, the crash half: milliseconds to open a state of `mib` MiB (pages of 1 MiB,
/// default `log_size_cap` and `replay_budget`) whose writer crashed right after writing it (its
/// directory copied while it was open), file-backed against anonymous pages, and file-backed
/// once more crashed after its maintenance thread caught up (`wait_for_maintenance`: what the
/// replay budget bounds), timed alternately (median of three), with the log the open replayed
/// (written since the newest checkpoint) and the file-backed recovery time the state reports
/// (`LogInfo::recovery_micros`).
fn crash_curve(sizes_mib: &[usize]) -> Curve {
    let mut curve = Curve::new("open after a crash, file-backed", "MiB", "ms to open", "anonymous pages");
    println!("\n== open after a crash (default log_size_cap and replay_budget), pages of 1 MiB ==");
    println!("   (fb, anon: copied right after the writes; fb idle: after the maintenance thread caught up)");
    println!(
        "{:>8} {:>10} {:>12} {:>10} {:>12} {:>12} {:>12} {:>12} {:>10}",
        "MiB", "fb ms", "fb replay", "anon ms", "anon replay", "fb idle ms", "idle replay", "recovery ms", "fb / anon"
    );
    for &mib in sizes_mib {
        let mib = mib as u64;
        let crashed: Vec<(tempfile::TempDir, u64)> = [(true, false), (false, false), (true, true)]
            .iter()
            .map(|&(fb, idle)| {
                let live = tempfile::tempdir().unwrap();
                let s = build_state(live.path(), mib, 1, fb);
                if idle {
                    s.wait_for_maintenance().unwrap();
                }
                // A file-by-file copy of a live directory is not a crash image when a pass
                // renames a checkpoint in and prunes segments between the listing and the copies
                // (the copy then lacks both): copy again until the copy opens.
                for _ in 0..5 {
                    let since = s.log_info().unwrap().bytes_since_checkpoint;
                    let copy = tempfile::tempdir().unwrap();
                    copy_as_crashed(live.path(), copy.path());
                    let probe = tempfile::tempdir().unwrap();
                    copy_as_crashed(copy.path(), probe.path());
                    match MMSBState::open(reopen_config(probe.path(), fb)) {
                        Ok(_) => return (copy, since),
                        Err(e) => println!("   (copy taken during a pass does not open, copied again: {e})"),
                    }
                }
                panic!("no copy of the live directory opened in 5 tries")
            })
            .collect();
        // Each open of a crashed copy recovers it and the close checkpoints it: time copies of
        // the copy, so that every open replays the same log.
        let mut t = [Vec::new(), Vec::new(), Vec::new()];
        let mut recovery = 0u64;
        for _ in 0..3 {
            for (k, tk) in t.iter_mut().enumerate() {
                let trial = tempfile::tempdir().unwrap();
                copy_as_crashed(crashed[k].0.path(), trial.path());
                let start = Instant::now();
                let s = MMSBState::open(reopen_config(trial.path(), k != 1)).unwrap();
                black_box(s.lsn());
                tk.push(start.elapsed().as_secs_f64() * 1e3);
                if k == 0 {
                    recovery = s.log_info().unwrap().recovery_micros;
                }
                drop(s);
            }
        }
        for tk in &mut t {
            tk.sort_by(f64::total_cmp);
        }
        let mb = |b: u64| format!("{:.0} MiB", b as f64 / (1 << 20) as f64);
        println!(
            "{mib:>8} {:>10.2} {:>12} {:>10.2} {:>12} {:>12.2} {:>12} {:>12.2} {:>10.4}",
            t[0][1],
            mb(crashed[0].1),
            t[1][1],
            mb(crashed[1].1),
            t[2][1],
            mb(crashed[2].1),
            recovery as f64 / 1e3,
            t[0][1] / t[1][1]
        );
        curve.push(mib as f64, t[0][1], Some(t[1][1]));
    }
    println!("goal 2: open after a crash <= 100 ms at the default settings (the full run's last row)");
    curve
}

/// Bytes of every file under `dir`, read whole (the log's read bandwidth baseline).
fn read_all(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            total += read_all(&p);
        } else if let Ok(b) = std::fs::read(&p) {
            total += black_box(b).len() as u64;
        }
    }
    total
}

/// Open (= replay) of a log of `n` 64 B deltas over 64 pages, against reading the same files.
fn replay_curve(sizes: &[usize]) -> Curve {
    let mut curve = Curve::new("replay of 64 B deltas vs log size", "log MiB", "ms", "read of the log files");
    println!("\n== replay of 64 B deltas (open after a clean close) against reading the log files ==");
    println!(
        "{:>9} {:>10} {:>12} {:>12} {:>10} {:>16}",
        "deltas", "log MiB", "replay ms", "read ms", "ns/delta", "read / replay"
    );
    for &n in sizes {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = logged(dir.path());
            let pages: Vec<PageId> =
                (0..64).map(|_| s.create_page(PAGE, Location::Cpu, PageMeta::default()).unwrap()).collect();
            let o = seq(n, 64 * 63);
            for (i, &x) in o.iter().enumerate() {
                let d = Delta::write((x / 64) as u64 * 64, &[i as u8; 64]).unwrap();
                s.route_delta(pages[x % 64], &d, None).unwrap();
            }
        }
        let bytes = read_all(dir.path()); // warm the page cache for both
                                          // Alternate: replay, read, replay, read, ...; keep each one's best.
        let (mut replay, mut read) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..3 {
            let t = Instant::now();
            let s = logged(dir.path());
            replay = replay.min(t.elapsed().as_secs_f64());
            assert_eq!(s.lsn(), 64 + n as u64);
            drop(s);
            let t = Instant::now();
            black_box(read_all(dir.path()));
            read = read.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{n:>9} {:>10.1} {:>12.1} {:>12.2} {:>10.0} {:>16.3}",
            bytes as f64 / (1 << 20) as f64,
            replay * 1e3,
            read * 1e3,
            replay * 1e9 / n as f64,
            read / replay
        );
        let mib = bytes as f64 / (1 << 20) as f64;
        curve.push(mib, replay * 1e3, Some(read * 1e3));
    }
    println!("goal 5: read / replay at the largest log >= 0.5");
    curve
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--only route|memory|open|replay`: one curve.
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned();
    let run = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if !ab::is_bench_run() {
        // As a test: every curve on tiny sizes.
        route_curve(&[10, 100], 2);
        memory_curve(&[100]);
        open_curve(&[16]);
        open_file_backed_curve(&[2]);
        crash_curve(&[2]);
        replay_curve(&[200]);
        return;
    }
    let pick = |q: &'static [usize], f: &'static [usize]| if quick { q } else { f };
    let mut curves = Vec::new();
    if run("route") {
        curves
            .push(route_curve(pick(&[10, 1_000, 10_000], &[10, 1_000, 10_000, 100_000]), if quick { 20 } else { 40 }));
    }
    if run("memory") {
        curves.push(memory_curve(pick(&[1_000, 10_000], &[1_000, 10_000, 100_000])));
    }
    if run("open") {
        curves.push(open_curve(pick(&[1_000, 4_000], &[1_000, 4_000, 16_000])));
    }
    if run("open-fb") {
        curves.push(open_file_backed_curve(pick(&[16, 64], &[64, 256, 1024])));
    }
    if run("crash") {
        // `--sizes 16,64,256`: the crash curve at these sizes (MiB) instead of the defaults.
        let sizes: Option<Vec<usize>> = args
            .iter()
            .position(|a| a == "--sizes")
            .and_then(|i| args.get(i + 1))
            .map(|v| v.split(',').map(|n| n.parse().expect("--sizes: MiB, comma-separated")).collect());
        curves.push(crash_curve(sizes.as_deref().unwrap_or(pick(&[16, 64], &[64, 256, 1024]))));
    }
    if run("replay") {
        curves.push(replay_curve(pick(&[10_000, 100_000], &[10_000, 100_000, 1_000_000])));
    }
    if let Some(path) = args.iter().position(|a| a == "--json").and_then(|i| args.get(i + 1)) {
        let doc = serde_json::json!({
            "bench": "cargo bench -p mmsb --bench scaling",
            "quick": quick,
            "curves": curves.iter().map(Curve::json).collect::<Vec<_>>(),
        });
        if let Some(dir) = std::path::Path::new(path).parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
        println!("\nwrote {path}");
    }
}
