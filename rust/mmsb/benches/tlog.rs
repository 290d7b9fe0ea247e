//! TLog benchmarks, each against a baseline measured in the same run, on a disk directory
//! (`/work/tmp` when it exists, else the system temp dir; never tmpfs on purpose):
//! - `append_64k`: unsynced append of 64 KiB deltas vs raw sequential `write` of 64 KiB (also vs
//!   raw writes of the log's own layout, vs raw writes into preallocated space as the log's blob
//!   file does, and as interleaved A/B rounds, because this machine is shared and back-to-back
//!   criterion runs see different loads);
//! - `group_commit`: 8 writer threads in GroupCommit mode vs one writer fsyncing each delta (the
//!   log's `Always` mode, and a raw file), and the raw bound (8 writes + 1 fsync over pre-zeroed
//!   space); again as interleaved rounds, since fsync times drift between criterion's runs
//!   (`MMSB_BENCH_VERBOSE=1` prints each round), where the log's own file operations without the
//!   log (`RawLog`, batches of 8 against batches of 1) give the most a group of 8 can gain here;
//! - `replay`: `replay_to` over a 64 MiB log vs reading the log files;
//! - `checkpoint`: a checkpoint of 64 MiB of pages vs writing (and fsyncing) 64 MiB to a file.
//!
//! Run: `cargo bench --bench tlog -- --warm-up-time 1 --measurement-time 3`. The ratios are
//! printed at the end.
#![allow(clippy::cast_possible_truncation)] // benchmark sizes and timings: truncation is intended or impossible here

#[path = "support/stats.rs"]
mod stats;
use stats::{mean_ns, quantile, time_ratio};

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use mmsb::{Config, Delta, Durability, Location, MMSBState, PageMeta};

const K64: usize = 64 << 10;

fn base_dir() -> PathBuf {
    let p = Path::new("/work/tmp");
    if p.is_dir() {
        p.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn state(dir: &Path, durability: Durability) -> MMSBState {
    MMSBState::open(Config { dir: Some(dir.to_path_buf()), durability, ..Config::default() }).unwrap()
}

fn append_64k(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_64k");
    g.throughput(Throughput::Bytes(K64 as u64));
    let payload: Vec<u8> = (0..K64).map(|i| (i * 7) as u8).collect();
    let d = Delta::write(0, &payload).unwrap();
    // Both sides restart their files every 1024 writes (64 MiB), outside the timed section.
    g.bench_function(BenchmarkId::new("tlog", "none"), |b| {
        let t = tempfile::tempdir_in(base_dir()).unwrap();
        let s = state(&t.path().join("s"), Durability::None);
        let p = s.create_page(K64 as u64, Location::Cpu, PageMeta::default()).unwrap();
        b.iter_custom(|iters| {
            in_batches(
                iters,
                |_| {
                    s.route_delta(p, &d, None).unwrap();
                },
                || s.compact_log().unwrap(),
            )
        });
    });
    // The same route_delta without a log: what applying the delta to the page costs.
    g.bench_function(BenchmarkId::new("no_log", "apply_only"), |b| {
        let s = MMSBState::in_memory();
        let p = s.create_page(K64 as u64, Location::Cpu, PageMeta::default()).unwrap();
        b.iter(|| s.route_delta(p, &d, None).unwrap());
    });
    // Raw writes of what the log writes, where it writes them, without preallocation: the
    // 64 KiB payload 64 KiB-aligned in the blob file, and 81 bytes of framing appended to the
    // segment.
    g.bench_function(BenchmarkId::new("raw_write", "record_layout"), |b| {
        let t = tempfile::tempdir_in(base_dir()).unwrap();
        let blob = File::create(t.path().join("raw.blob")).unwrap();
        let seg = File::create(t.path().join("raw.seg")).unwrap();
        let frame = [3u8; 81];
        b.iter_custom(|iters| {
            in_batches(
                iters,
                |i| {
                    blob.write_all_at(&payload, i * K64 as u64).unwrap();
                    seg.write_all_at(&frame, 56 + i * frame.len() as u64).unwrap();
                },
                || {
                    blob.set_len(0).unwrap();
                    seg.set_len(0).unwrap();
                },
            )
        });
    });
    // Raw 64 KiB writes into space preallocated 1 MiB at a time, as the log's blob file is
    // (preallocation inside the timed section, as in the log).
    g.bench_function(BenchmarkId::new("raw_write", "preallocated"), |b| {
        let t = tempfile::tempdir_in(base_dir()).unwrap();
        let f = File::create(t.path().join("raw")).unwrap();
        b.iter_custom(|iters| {
            in_batches(
                iters,
                |i| {
                    if i % 16 == 0 {
                        preallocate(&f, i * K64 as u64, 1 << 20);
                    }
                    f.write_all_at(&payload, i * K64 as u64).unwrap();
                },
                || f.set_len(0).unwrap(),
            )
        });
    });
    g.bench_function(BenchmarkId::new("raw_write", "none"), |b| {
        let t = tempfile::tempdir_in(base_dir()).unwrap();
        let f = File::create(t.path().join("raw")).unwrap();
        b.iter_custom(|iters| {
            in_batches(iters, |i| f.write_all_at(&payload, i * K64 as u64).unwrap(), || f.set_len(0).unwrap())
        });
    });
    g.finish();
}

/// Times `iters` calls of `write(i)`, `i` counting from 0 again after every 1024 (64 MiB of
/// 64 KiB writes), with `reset` (restarting the files) between batches, outside the timing.
fn in_batches(iters: u64, mut write: impl FnMut(u64), mut reset: impl FnMut()) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(1024);
        let start = Instant::now();
        for i in 0..n {
            write(i);
        }
        total += start.elapsed();
        left -= n;
        reset();
    }
    total
}

/// `fallocate(KEEP_SIZE)`, as the log's blob files do.
fn preallocate(f: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate on a descriptor we own; no memory is passed.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, offset as i64, len as i64) };
    assert_eq!(r, 0, "fallocate: {}", std::io::Error::last_os_error());
}

/// What the disk allows any group commit: `batches` times, `n` 4 KiB writes then one fsync, over
/// 64 MiB zero-filled (and synced) beforehand, as the log's synced modes write (its best case).
struct RawBatches<'a> {
    file: &'a File,
    at: u64,
}

impl<'a> RawBatches<'a> {
    const SPAN: u64 = 64 << 20;

    fn new(file: &'a File) -> Self {
        file.write_all_at(&vec![0u8; Self::SPAN as usize], 0).unwrap();
        file.sync_data().unwrap();
        RawBatches { file, at: 0 }
    }

    fn run(&mut self, batches: u64, n: u64) {
        let buf = [7u8; 4096];
        for _ in 0..batches {
            for _ in 0..n {
                self.at = (self.at + buf.len() as u64) % Self::SPAN;
                self.file.write_all_at(&buf, self.at).unwrap();
            }
            self.file.sync_data().unwrap();
        }
    }
}

/// The log's own file operations in `Always` and `GroupCommit` without the log: `n` records of
/// `rec` bytes (the log's size for the benched delta) as one write, then one fsync, into space
/// zero-filled 1 MiB at a time just ahead of the records (a write of zeros and an fsync, as the
/// synced modes do; a new 64 MiB file at each rollover). The ratio of `n = 1` to `n = 8` per
/// record is the most any group commit of 8 over this layout can gain on this disk.
struct RawLog {
    dir: PathBuf,
    file: File,
    rec: u64,
    at: u64,
    filled: u64,
    files: u64,
}

impl RawLog {
    const SEGMENT: u64 = 64 << 20;
    const FILL: u64 = 1 << 20;

    fn new(dir: &Path, rec: u64) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        RawLog { dir: dir.to_path_buf(), file: File::create(dir.join("0")).unwrap(), rec, at: 0, filled: 0, files: 0 }
    }

    fn run(&mut self, batches: u64, n: u64) {
        let buf = vec![7u8; (self.rec * n) as usize];
        for _ in 0..batches {
            let len = buf.len() as u64;
            if self.at + len > Self::SEGMENT {
                self.file.set_len(self.at).unwrap();
                self.file.sync_data().unwrap();
                self.files += 1;
                let _ = std::fs::remove_file(self.dir.join((self.files - 1).to_string()));
                self.file = File::create(self.dir.join(self.files.to_string())).unwrap();
                File::open(&self.dir).unwrap().sync_all().unwrap();
                (self.at, self.filled) = (0, 0);
            }
            if self.at + len > self.filled {
                let to = (self.at + len).max(self.at + Self::FILL).min(Self::SEGMENT);
                self.file.write_all_at(&vec![0u8; (to - self.filled) as usize], self.filled).unwrap();
                self.file.sync_data().unwrap();
                self.filled = to;
            }
            self.file.write_all_at(&buf, self.at).unwrap();
            self.at += len;
            self.file.sync_data().unwrap();
        }
    }
}

fn group_commit(c: &mut Criterion) {
    const DELTA: usize = 4096;
    const THREADS: u64 = 8;
    let mut g = c.benchmark_group("group_commit");
    g.throughput(Throughput::Elements(1));
    g.bench_function("tlog_8_writers", |b| {
        let t = tempfile::tempdir_in(base_dir()).unwrap();
        let s = Arc::new(state(&t.path().join("s"), Durability::GroupCommit));
        let pages: Vec<_> =
            (0..THREADS).map(|_| s.create_page(DELTA as u64, Location::Cpu, PageMeta::default()).unwrap()).collect();
        b.iter_custom(|iters| {
            let per = iters.div_ceil(THREADS);
            let start = Instant::now();
            std::thread::scope(|sc| {
                for (k, &p) in pages.iter().enumerate() {
                    let s = &s;
                    sc.spawn(move || {
                        for i in 0..per {
                            let d = Delta::write(0, &[(i as u8) ^ (k as u8); DELTA]).unwrap();
                            s.route_delta(p, &d, None).unwrap();
                        }
                    });
                }
            });
            // Scale to the requested count (per * THREADS may exceed it by < THREADS).
            start.elapsed().mul_f64(iters as f64 / (per * THREADS) as f64)
        });
    });
    g.bench_function("tlog_1_writer_always", |b| {
        let t = tempfile::tempdir_in(base_dir()).unwrap();
        let s = state(&t.path().join("s"), Durability::Always);
        let p = s.create_page(DELTA as u64, Location::Cpu, PageMeta::default()).unwrap();
        let mut i = 0u8;
        b.iter(|| {
            i = i.wrapping_add(1);
            s.route_delta(p, &Delta::write(0, &[i; DELTA]).unwrap(), None).unwrap();
        });
    });
    g.bench_function("raw_write_fsync_each", |b| {
        let t = tempfile::tempdir_in(base_dir()).unwrap();
        let mut f = File::create(t.path().join("raw")).unwrap();
        let buf = [7u8; DELTA];
        b.iter(|| {
            f.write_all(&buf).unwrap();
            f.sync_data().unwrap();
        });
    });
    // What the disk allows a group commit of 8 (see `RawBatches`).
    g.bench_function("raw_8_writes_one_fsync", |b| {
        let t = tempfile::tempdir_in(base_dir()).unwrap();
        let f = File::create(t.path().join("raw")).unwrap();
        let mut raw = RawBatches::new(&f);
        b.iter_custom(|iters| {
            let batches = iters.div_ceil(THREADS);
            let start = Instant::now();
            raw.run(batches, THREADS);
            start.elapsed().mul_f64(iters as f64 / (batches * THREADS) as f64)
        });
    });
    g.finish();
}

fn replay(c: &mut Criterion) {
    const RECORDS: usize = 1024;
    let t = tempfile::tempdir_in(base_dir()).unwrap();
    let dir = t.path().join("s");
    let s = state(&dir, Durability::None);
    let p = s.create_page(K64 as u64, Location::Cpu, PageMeta::default()).unwrap();
    for i in 0..RECORDS {
        s.route_delta(p, &Delta::write(0, &vec![i as u8; K64]).unwrap(), None).unwrap();
    }
    let lsn = s.lsn();
    let bytes = s.log_info().unwrap().log_bytes;
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg" || x == "blob"))
        .collect();
    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Bytes(bytes));
    g.sample_size(10);
    g.bench_function("replay_to", |b| b.iter(|| s.replay_to(lsn).unwrap()));
    g.bench_function("read_files", |b| b.iter(|| files.iter().map(|f| std::fs::read(f).unwrap().len()).sum::<usize>()));
    g.finish();
}

fn checkpoint(c: &mut Criterion) {
    const PAGES: usize = 64;
    const PAGE: usize = 1 << 20;
    let t = tempfile::tempdir_in(base_dir()).unwrap();
    let s = state(&t.path().join("s"), Durability::None);
    let ids: Vec<_> =
        (0..PAGES).map(|_| s.create_page(PAGE as u64, Location::Cpu, PageMeta::default()).unwrap()).collect();
    for &id in &ids {
        s.update_page(id, &vec![id.0 as u8; PAGE]).unwrap();
    }
    let mut g = c.benchmark_group("checkpoint");
    g.throughput(Throughput::Bytes((PAGES * PAGE) as u64));
    g.sample_size(10);
    g.bench_function("tlog_checkpoint", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                // A new LSN, so the checkpoint is not a no-op (outside the timed section).
                s.update_page(ids[0], &[i as u8; 8]).unwrap();
                let start = Instant::now();
                s.checkpoint().unwrap();
                total += start.elapsed();
            }
            total
        })
    });
    let data = vec![5u8; PAGES * PAGE];
    g.bench_function("raw_write_fsync", |b| {
        let path = t.path().join("raw");
        b.iter(|| {
            let mut f = File::create(&path).unwrap();
            f.write_all(&data).unwrap();
            f.sync_all().unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, append_64k, group_commit, replay, checkpoint);

/// `append_64k` again, as interleaved rounds (tlog, raw, raw, tlog, ...) so that both sides see the
/// same machine load (this machine is shared); returns the quartiles of raw time / tlog time.
fn paired_append_64k() -> [f64; 3] {
    const ROUND: u64 = 256;
    let payload: Vec<u8> = (0..K64).map(|i| (i * 7) as u8).collect();
    let d = Delta::write(0, &payload).unwrap();
    let t = tempfile::tempdir_in(base_dir()).unwrap();
    let s = state(&t.path().join("s"), Durability::None);
    let p = s.create_page(K64 as u64, Location::Cpu, PageMeta::default()).unwrap();
    let f = File::create(t.path().join("raw")).unwrap();
    let tlog = || {
        let start = Instant::now();
        for _ in 0..ROUND {
            s.route_delta(p, &d, None).unwrap();
        }
        start.elapsed()
    };
    let raw = || {
        let start = Instant::now();
        for i in 0..ROUND {
            f.write_all_at(&payload, i * K64 as u64).unwrap();
        }
        start.elapsed()
    };
    let mut ratios = Vec::new();
    for round in 0..40u64 {
        let (a, b) = if round % 2 == 0 {
            let a = tlog();
            (a, raw())
        } else {
            let b = raw();
            (tlog(), b)
        };
        if round >= 4 {
            ratios.push(b.as_secs_f64() / a.as_secs_f64());
        }
        // Both sides restart their files (outside the timed sections).
        s.compact_log().unwrap();
        f.set_len(0).unwrap();
    }
    [quantile(&mut ratios, 0.25), quantile(&mut ratios, 0.5), quantile(&mut ratios, 0.75)]
}

/// `group_commit` again, as interleaved rounds (8 writers, one `Always` writer, the raw bound of
/// 8 writes + 1 fsync over pre-zeroed space, and `RawLog` with batches of 1 and of 8, in rotating
/// order), because the disk's fsync time drifts by a third over seconds and criterion measures
/// the sides seconds apart.
fn paired_group_commit() -> GroupRatios {
    const DELTA: usize = 4096;
    const THREADS: usize = 8;
    // Writes per writer and round: a group round ends with a partial batch or two (writers
    // finish a little apart), so it runs 32 batches to keep that under a few percent.
    const PER_GROUP: usize = 256;
    const PER: usize = 64;
    let t = tempfile::tempdir_in(base_dir()).unwrap();
    let group = state(&t.path().join("g"), Durability::GroupCommit);
    let pages: Vec<_> =
        (0..THREADS).map(|_| group.create_page(DELTA as u64, Location::Cpu, PageMeta::default()).unwrap()).collect();
    let always = state(&t.path().join("a"), Durability::Always);
    let ap = always.create_page(DELTA as u64, Location::Cpu, PageMeta::default()).unwrap();
    let raw = File::create(t.path().join("raw")).unwrap();
    let rec = {
        let before = always.log_info().unwrap().log_bytes;
        always.route_delta(ap, &Delta::write(0, &[1; DELTA]).unwrap(), None).unwrap();
        always.log_info().unwrap().log_bytes - before
    };
    let mut raw_log = RawLog::new(&t.path().join("rawlog"), rec);
    let mut round_no = 0u8;
    // Per-write seconds of each side.
    let eight = || {
        let barrier = std::sync::Barrier::new(THREADS + 1);
        std::thread::scope(|sc| {
            for (k, &p) in pages.iter().enumerate() {
                let (group, barrier) = (&group, &barrier);
                sc.spawn(move || {
                    barrier.wait();
                    for i in 0..PER_GROUP {
                        let d = Delta::write(0, &[(i as u8) ^ (k as u8); DELTA]).unwrap();
                        group.route_delta(p, &d, None).unwrap();
                    }
                });
            }
            barrier.wait();
            let start = Instant::now();
            // The scope joins the writers before it returns.
            start
        })
        .elapsed()
        .as_secs_f64()
            / (THREADS * PER_GROUP) as f64
    };
    let mut one = || {
        let start = Instant::now();
        for _ in 0..PER {
            round_no = round_no.wrapping_add(1);
            always.route_delta(ap, &Delta::write(0, &[round_no; DELTA]).unwrap(), None).unwrap();
        }
        start.elapsed().as_secs_f64() / PER as f64
    };
    let mut raw = RawBatches::new(&raw);
    let mut bound = || {
        let start = Instant::now();
        raw.run(PER as u64, THREADS as u64);
        start.elapsed().as_secs_f64() / (THREADS * PER) as f64
    };
    let mut log_shaped = |n: u64| {
        let start = Instant::now();
        raw_log.run(PER as u64, n);
        start.elapsed().as_secs_f64() / (n * PER as u64) as f64
    };
    let mut r = GroupRatios::default();
    let mut last_syncs = group.log_info().unwrap().group_syncs;
    for round in 0..30 {
        // Per-write seconds: 8 writers, Always, raw 8 + 1, log-shaped 1 + 1, log-shaped 8 + 1.
        let mut t = [0.0f64; 5];
        for k in 0..t.len() {
            let side = (k + round) % t.len();
            t[side] = match side {
                0 => eight(),
                1 => one(),
                2 => bound(),
                3 => log_shaped(1),
                _ => log_shaped(THREADS as u64),
            };
        }
        if std::env::var_os("MMSB_BENCH_VERBOSE").is_some() {
            let syncs = group.log_info().unwrap().group_syncs;
            eprintln!(
                "round {round}: 8 writers {:.1} us ({:.2} writes per fsync), Always {:.1} us, raw 8+1 {:.1} us, log-shaped 1+1 {:.1} us, 8+1 {:.1} us per write",
                t[0] * 1e6,
                (THREADS * PER_GROUP) as f64 / (syncs - last_syncs) as f64,
                t[1] * 1e6,
                t[2] * 1e6,
                t[3] * 1e6,
                t[4] * 1e6
            );
            last_syncs = syncs;
        }
        if round >= 3 {
            r.speedup.push(t[1] / t[0]);
            r.bound.push(t[1] / t[2]);
            r.ceiling.push(t[3] / t[4]);
            r.of_ceiling.push(t[4] / t[0]);
        }
    }
    r
}

/// Per-round ratios of `paired_group_commit`, each per write.
#[derive(Default)]
struct GroupRatios {
    /// 8 writers against the `Always` writer.
    speedup: Vec<f64>,
    /// Raw 8 writes + 1 fsync over pre-zeroed space against the `Always` writer.
    bound: Vec<f64>,
    /// `RawLog`: batches of 1 against batches of 8.
    ceiling: Vec<f64>,
    /// 8 writers' throughput as a share of `RawLog`'s batches of 8.
    of_ceiling: Vec<f64>,
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // Throughput of `a` over `b`: the time ratio the other way round.
    let ratio = |g: &str, a: &str, b: &str| time_ratio(g, b, a);
    println!("\nTLog ratios (throughput of the TLog side / throughput of the baseline, same run):");
    println!(
        "  append_64k   tlog/raw_write         = {} (target >= 0.70)",
        ratio("append_64k", "tlog/none", "raw_write/none")
    );
    // The log's own share: route_delta with the log minus route_delta without it.
    let log_only = match (mean_ns("append_64k", "tlog/none"), mean_ns("append_64k", "no_log/apply_only")) {
        (Some(t), Some(a)) => mean_ns("append_64k", "raw_write/none").map(|r| format!("{:.2}", r / (t - a))),
        _ => None,
    };
    println!(
        "  append_64k   log share/raw_write    = {} (route_delta minus the page apply)",
        log_only.unwrap_or_default()
    );
    println!(
        "  append_64k   tlog/raw record layout = {} (the same bytes the log writes, at its offsets)",
        ratio("append_64k", "tlog/none", "raw_write/record_layout")
    );
    println!(
        "  append_64k   tlog/raw preallocated  = {} (raw writes preallocated like the blob file)",
        ratio("append_64k", "tlog/none", "raw_write/preallocated")
    );
    let [q1, med, q3] = paired_append_64k();
    println!("  append_64k   interleaved rounds     = {med:.2} median (quartiles {q1:.2}..{q3:.2}) (target >= 0.70)");
    println!(
        "  group_commit 8 writers/1 writer Always = {} (target >= 5)",
        ratio("group_commit", "tlog_8_writers", "tlog_1_writer_always")
    );
    println!(
        "  group_commit 8 writers/raw fsync each  = {}",
        ratio("group_commit", "tlog_8_writers", "raw_write_fsync_each")
    );
    println!(
        "  group_commit 8 raw writes + 1 fsync/1 writer Always = {} (the most this disk allows 8 writers)",
        ratio("group_commit", "raw_8_writes_one_fsync", "tlog_1_writer_always")
    );
    let mut g = paired_group_commit();
    let (q1, med, q3) = (quantile(&mut g.speedup, 0.25), quantile(&mut g.speedup, 0.5), quantile(&mut g.speedup, 0.75));
    println!(
        "  group_commit interleaved rounds, 8 writers/1 writer Always = {med:.2} median (quartiles {q1:.2}..{q3:.2}; raw 8 writes + 1 fsync over pre-zeroed space: {:.2}) (target >= 5)",
        quantile(&mut g.bound, 0.5)
    );
    println!(
        "  group_commit interleaved rounds, the log's file operations alone, batches of 8/batches of 1 = {:.2} median (quartiles {:.2}..{:.2}): the most a group of 8 can gain here; 8 writers reach {:.2} of its batches of 8",
        quantile(&mut g.ceiling, 0.5),
        quantile(&mut g.ceiling, 0.25),
        quantile(&mut g.ceiling, 0.75),
        quantile(&mut g.of_ceiling, 0.5)
    );
    println!("  replay       replay_to/read_files   = {} (target >= 0.50)", ratio("replay", "replay_to", "read_files"));
    println!("  checkpoint   checkpoint/raw write   = {}", ratio("checkpoint", "tlog_checkpoint", "raw_write_fsync"));
}
