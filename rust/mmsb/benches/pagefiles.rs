//! File-backed pages and readers (docs/page-files.md), each against a baseline in the same run,
//! on a disk directory (`/work/tmp` when it exists, else the system temp dir):
//! - `route_64b`: a 64-byte route with file-backed pages vs anonymous pages (both with a
//!   directory and `Durability::None`), also as interleaved rounds (this machine is shared);
//! - `checkpoint_64mib`: a checkpoint of 64 MiB of pages (64 x 1 MiB) after one 8-byte write,
//!   file-backed vs today's copying checkpoint; and a cycle of one 8-byte write to *every* page
//!   plus the checkpoint (the file-backed side then also pays the page images of step 2 of the
//!   crash story);
//! - `reader_read_4k`: a reader's snapshot read of a 4 KiB page vs `memcpy` of 4 KiB;
//! - wake-up latency writer -> reader across processes (this binary re-executed as the reader),
//!   p50/p99, printed at the end;
//! - reopen of a cleanly closed file-backed state vs its size (printed at the end).
//!
//! Run: `cargo bench --bench pagefiles -- --warm-up-time 1 --measurement-time 3`.
#![allow(clippy::cast_possible_truncation)] // test arithmetic on small known sizes

#[path = "support/stats.rs"]
mod stats;
use stats::{quantile, time_ratio};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use mmsb::{Config, Delta, Durability, Location, MMSBState, PageId, PageMeta, Reader};

const WAKE_CHILD: &str = "MMSB_BENCH_WAKE_CHILD";
const WAKES: u64 = 2000;

fn base_dir() -> PathBuf {
    let p = Path::new("/work/tmp");
    if p.is_dir() {
        p.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn state(dir: &Path, file_backed_pages: bool) -> MMSBState {
    MMSBState::open(Config {
        dir: Some(dir.to_path_buf()),
        durability: Durability::None,
        file_backed_pages,
        ..Config::default()
    })
    .unwrap()
}

/// `iters` routes in batches of 50k, compacting the log between batches (untimed) so it stays
/// small.
fn routes(s: &MMSBState, p: PageId, iters: u64) -> Duration {
    let payload = [7u8; 64];
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = (iters - done).min(50_000);
        let start = Instant::now();
        for i in 0..n {
            let d = Delta::write(((done + i) * 64) % 4032, &payload).unwrap();
            s.route_delta(p, &d, None).unwrap();
        }
        total += start.elapsed();
        done += n;
        s.compact_log().unwrap();
    }
    total
}

fn route_64b(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_64b");
    g.throughput(Throughput::Elements(1));
    for (name, fb) in [("anonymous", false), ("file_backed", true)] {
        g.bench_function(name, |b| {
            let t = tempfile::tempdir_in(base_dir()).unwrap();
            let s = state(&t.path().join("s"), fb);
            let p = s.create_page(4096, Location::Cpu, PageMeta::default()).unwrap();
            b.iter_custom(|iters| routes(&s, p, iters));
        });
    }
    g.finish();
}

/// Interleaved rounds of the two route benchmarks; quartiles of file-backed / anonymous time.
fn paired_route_64b() -> [f64; 3] {
    let t = tempfile::tempdir_in(base_dir()).unwrap();
    let (a, f) = (state(&t.path().join("a"), false), state(&t.path().join("f"), true));
    let pa = a.create_page(4096, Location::Cpu, PageMeta::default()).unwrap();
    let pf = f.create_page(4096, Location::Cpu, PageMeta::default()).unwrap();
    let mut ratios = Vec::new();
    for round in 0..20 {
        let (ta, tf) = if round % 2 == 0 {
            let ta = routes(&a, pa, 20_000);
            (ta, routes(&f, pf, 20_000))
        } else {
            let tf = routes(&f, pf, 20_000);
            (routes(&a, pa, 20_000), tf)
        };
        ratios.push(tf.as_secs_f64() / ta.as_secs_f64());
    }
    [quantile(&mut ratios, 0.25), quantile(&mut ratios, 0.5), quantile(&mut ratios, 0.75)]
}

fn checkpoint_64mib(c: &mut Criterion) {
    const PAGES: usize = 64;
    const PAGE: usize = 1 << 20;
    let mut g = c.benchmark_group("checkpoint_64mib");
    g.sample_size(10);
    for (name, fb) in [("copying", false), ("file_backed", true)] {
        let t = tempfile::tempdir_in(base_dir()).unwrap();
        let s = state(&t.path().join("s"), fb);
        let ids: Vec<_> =
            (0..PAGES).map(|_| s.create_page(PAGE as u64, Location::Cpu, PageMeta::default()).unwrap()).collect();
        for &id in &ids {
            s.update_page(id, &vec![id.0 as u8; PAGE]).unwrap();
        }
        s.checkpoint().unwrap();
        g.bench_function(BenchmarkId::new(name, "one_page_written"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    // A new LSN, so the checkpoint is not a no-op (outside the timed section).
                    s.update_page_at(ids[0], 0, &[i as u8; 8], None).unwrap();
                    let start = Instant::now();
                    s.checkpoint().unwrap();
                    total += start.elapsed();
                }
                total
            })
        });
        g.bench_function(BenchmarkId::new(name, "every_page_written_then_checkpoint"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for i in 0..iters {
                    for &id in &ids {
                        s.update_page_at(id, 4096 * (i % 200), &[i as u8; 8], None).unwrap();
                    }
                    s.checkpoint().unwrap();
                }
                start.elapsed()
            })
        });
        s.compact_log().unwrap();
    }
    g.finish();
}

fn reader_read_4k(c: &mut Criterion) {
    let t = tempfile::tempdir_in(base_dir()).unwrap();
    let s = state(t.path(), true);
    let p = s.create_page(4096, Location::Cpu, PageMeta::default()).unwrap();
    s.update_page(p, &[3u8; 4096]).unwrap();
    let r = Reader::open(t.path()).unwrap();
    let mut g = c.benchmark_group("reader_read_4k");
    g.throughput(Throughput::Bytes(4096));
    let mut buf = vec![0u8; 4096];
    g.bench_function("reader_snapshot", |b| b.iter(|| r.read_into(p, &mut buf).unwrap()));
    let src = vec![5u8; 4096];
    g.bench_function("memcpy", |b| {
        b.iter(|| {
            buf.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&buf);
        })
    });
    g.finish();
}

criterion_group!(benches, route_64b, checkpoint_64mib, reader_read_4k);

fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we own; CLOCK_MONOTONIC is system-wide, so two
    // processes' readings compare.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Child: waits for each write and prints wake-up latencies (ns) from the timestamp the writer
/// put in the page just before routing it.
fn wake_child(dir: &str) {
    let r = Reader::open(dir).unwrap();
    let p = PageId(1);
    let mut buf = [0u8; 64];
    let mut lat = Vec::with_capacity(WAKES as usize);
    println!("READY");
    for n in 0..WAKES {
        let lsn = r.wait_for(2 + n, Some(Duration::from_secs(30)));
        let woke = now_ns();
        assert!(lsn >= 2 + n, "writer stopped at {lsn}");
        r.read_into(p, &mut buf).unwrap();
        let sent = u64::from_le_bytes(buf[0..8].try_into().unwrap());
        lat.push(woke.saturating_sub(sent));
    }
    println!("LAT {}", lat.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" "));
}

/// Writer -> reader wake-up latency across processes: p50, p99 in microseconds.
fn wake_latency() -> Option<(f64, f64)> {
    use std::io::BufRead;
    let t = tempfile::tempdir_in(base_dir()).ok()?;
    let s = state(t.path(), true);
    let p = s.create_page(64, Location::Cpu, PageMeta::default()).ok()?;
    let mut child = std::process::Command::new(std::env::current_exe().ok()?)
        .env(WAKE_CHILD, t.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    let mut lines = std::io::BufReader::new(child.stdout.take()?).lines();
    let ready = lines.next()?.ok()?;
    assert_eq!(ready, "READY");
    for _ in 0..WAKES {
        // Give the reader time to block in its wait: the latency measured is a wake-up's.
        std::thread::sleep(Duration::from_micros(300));
        let sent = now_ns();
        s.update_page_at(p, 0, &sent.to_le_bytes(), None).ok()?;
    }
    let line = lines.next()?.ok()?;
    child.wait().ok()?;
    let mut lat: Vec<f64> =
        line.strip_prefix("LAT ")?.split_whitespace().map(|x| x.parse::<f64>().unwrap() / 1000.0).collect();
    Some((quantile(&mut lat, 0.5), quantile(&mut lat, 0.99)))
}

/// Reopen time of a cleanly closed file-backed state of `pages` x 1 MiB.
fn reopen_time(pages: usize) -> Duration {
    let t = tempfile::tempdir_in(base_dir()).unwrap();
    let s = state(t.path(), true);
    for i in 0..pages {
        let id = s.create_page(1 << 20, Location::Cpu, PageMeta::default()).unwrap();
        s.update_page_at(id, 0, &[i as u8; 64], None).unwrap();
    }
    s.close();
    drop(s);
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let s = state(t.path(), true);
        best = best.min(start.elapsed());
        drop(s);
    }
    best
}

fn main() {
    if let Ok(dir) = std::env::var(WAKE_CHILD) {
        wake_child(&dir);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    let ratio = time_ratio;
    println!("\nFile-backed pages (time ratios, same run):");
    println!(
        "  route_64b        file_backed/anonymous          = {} (goal <= 1.2)",
        ratio("route_64b", "file_backed", "anonymous")
    );
    let [q1, med, q3] = paired_route_64b();
    println!("  route_64b        interleaved rounds             = {med:.2} median (quartiles {q1:.2}..{q3:.2})");
    println!(
        "  checkpoint_64mib copying/file_backed, 1 page    = {} (goal >= 5)",
        ratio("checkpoint_64mib", "copying/one_page_written", "file_backed/one_page_written")
    );
    println!(
        "  checkpoint_64mib copying/file_backed, all pages = {} (64 writes + checkpoint per cycle)",
        ratio(
            "checkpoint_64mib",
            "copying/every_page_written_then_checkpoint",
            "file_backed/every_page_written_then_checkpoint"
        )
    );
    println!(
        "  reader_read_4k   reader snapshot/memcpy         = {}",
        ratio("reader_read_4k", "reader_snapshot", "memcpy")
    );
    match wake_latency() {
        Some((p50, p99)) => {
            println!("  wake-up writer->reader process: p50 {p50:.1} us, p99 {p99:.1} us (goal p50 <= 20 us)")
        }
        None => println!("  wake-up writer->reader process: could not run the reader process"),
    }
    for pages in [16, 64, 256] {
        println!("  reopen after a clean close, {pages:>3} MiB of pages: {:?}", reopen_time(pages));
    }
}
