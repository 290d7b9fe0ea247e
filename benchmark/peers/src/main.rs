//! MMSB against redb, fjall, SQLite (WAL) and LMDB, same process, alternating rounds: each round
//! runs every engine once, in an order rotated from round to round, and each ratio is taken
//! within a round, so a burst of load from other processes weighs on both sides of it.
//! `bash benchmark/peers/run.sh [--quick|--long] [--only NAME,...]`; README.md has the mapping.

mod stores;

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stores::{Kind, Opts, Store};

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    rounds: usize,
    /// Calls per round of the per-call workloads.
    ops: u32,
    /// Keys of the update and read workloads.
    keys: u32,
    /// Time slice of each engine in the 8-writer workload.
    slice: Duration,
    /// Bytes written per round by the 64 KiB workload.
    large_bytes: u64,
    /// 4 KiB values in the reopen workloads.
    reopen_keys: u32,
    /// Unsynced updates after the load, before the kill, in the crash workload.
    crash_updates: u32,
    /// The large working set of the routing scale workload.
    big_keys: u32,
}

const QUICK: Plan = Plan {
    rounds: 2,
    ops: 2_000,
    keys: 100,
    slice: Duration::from_millis(150),
    large_bytes: 16 << 20,
    reopen_keys: 256,
    crash_updates: 200,
    big_keys: 10_000,
};

const FULL: Plan = Plan {
    rounds: 3,
    ops: 20_000,
    keys: 1_000,
    slice: Duration::from_millis(700),
    large_bytes: 256 << 20,
    reopen_keys: 4_096,
    crash_updates: 5_000,
    big_keys: 100_000,
};

/// A metric per engine per round. `lower_better` for times.
struct Table {
    title: String,
    unit: &'static str,
    lower_better: bool,
    rows: Vec<(String, Vec<f64>)>,
}

impl Table {
    fn new(title: impl Into<String>, unit: &'static str, lower_better: bool) -> Table {
        Table { title: title.into(), unit, lower_better, rows: Vec::new() }
    }

    fn push(&mut self, name: &str, v: f64) {
        match self.rows.iter_mut().find(|(n, _)| n == name) {
            Some((_, vs)) => vs.push(v),
            None => self.rows.push((name.to_string(), vec![v])),
        }
    }

    fn get(&self, name: &str) -> Option<&[f64]> {
        self.rows.iter().find(|(n, _)| n == name).map(|(_, v)| &v[..])
    }

    /// MMSB's speed over `other`'s, per round (> 1: MMSB faster).
    fn speedups(&self, base: &str, other: &str) -> Vec<f64> {
        let (Some(a), Some(b)) = (self.get(base), self.get(other)) else { return Vec::new() };
        a.iter().zip(b).map(|(&a, &b)| if self.lower_better { b / a } else { a / b }).collect()
    }

    fn print(&self, base: &str) {
        self.print_with(Some(base))
    }

    /// `base`: the engine the ratio column is taken against; `None` leaves the column out.
    fn print_with(&self, base: Option<&str>) {
        let dir = if self.lower_better { "lower is better" } else { "higher is better" };
        println!("\n== {} ({}, {dir}) ==", self.title, self.unit);
        let head = base.map_or(String::new(), |b| format!("{b} speed / engine: median [min-max]"));
        println!("{:<14} {:>12}   {:<30} {head}", "engine", "median", "per round");
        for (name, vs) in &self.rows {
            let per: Vec<String> = vs.iter().map(|v| fmt(*v)).collect();
            let ratio = if base.is_none_or(|b| b == name) {
                String::new()
            } else {
                let r = self.speedups(base.unwrap(), name);
                format!("{} [{}-{}]", fmt(median(&r)), fmt(min(&r)), fmt(max(&r)))
            };
            println!("{:<14} {:>12}   {:<30} {}", name, fmt(median(vs)), per.join(" "), ratio);
        }
    }
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}
fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}
fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// The engines of a round in a rotated order, so none is always first (cold) or last.
fn rotated(kinds: &[Kind], round: usize) -> Vec<Kind> {
    let mut k = kinds.to_vec();
    k.rotate_left(round % kinds.len());
    k
}

const ALL: [Kind; 5] = [Kind::Mmsb, Kind::Redb, Kind::Fjall, Kind::Sqlite, Kind::Lmdb];

/// Two payloads of `n` bytes that differ in every byte, so every write really changes bytes.
fn payloads(n: usize) -> [Vec<u8>; 2] {
    [(0..n).map(|i| (i * 31 + 7) as u8).collect(), (0..n).map(|i| !((i * 31 + 7) as u8)).collect()]
}

/// A fixed pseudo-random key sequence (xorshift), the same for every engine.
fn key_seq(n: u32, keys: u32) -> Vec<u32> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % u64::from(keys)) as u32
        })
        .collect()
}

fn tmp() -> tempfile::TempDir {
    // Under target/ when run from run.sh (a real disk, like the peers' files), else the system's.
    match std::env::var_os("PEERS_TMP") {
        Some(d) => tempfile::tempdir_in(d).expect("temp dir"),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

/// Unsynced `val`-byte puts to random keys: ns per put.
fn updates(p: &Plan, title: &str, kinds: &[Kind], keys: u32, val: usize) -> Table {
    let mut t = Table::new(title, "ns/op", true);
    let seq = key_seq(p.ops, keys);
    let pay = payloads(val);
    let dirs: Vec<_> = kinds.iter().map(|_| tmp()).collect();
    let stores: Vec<Box<dyn Store>> = kinds
        .iter()
        .zip(&dirs)
        .map(|(&k, d)| {
            let s = stores::open(k, d.path(), Opts { durable: false, keys, val });
            s.fill(&pay[1]);
            s
        })
        .collect();
    for r in 0..p.rounds {
        for k in rotated(kinds, r) {
            let s = &stores[kinds.iter().position(|&x| x == k).unwrap()];
            let start = Instant::now();
            for (i, &key) in seq.iter().enumerate() {
                s.put(key, &pay[i & 1]);
            }
            t.push(k.name(), start.elapsed().as_nanos() as f64 / f64::from(p.ops));
        }
    }
    t
}

/// 8 threads, each putting 64 B to its own key, every put durable: puts per second, all threads.
fn durable_writers(p: &Plan) -> Table {
    let mut t = Table::new("8 durable writers, 64 B each", "puts/s", false);
    let dirs: Vec<_> = ALL.iter().map(|_| tmp()).collect();
    let pay = payloads(64);
    let stores: Vec<Box<dyn Store>> = ALL
        .iter()
        .zip(&dirs)
        .map(|(&k, d)| {
            let s = stores::open(k, d.path(), Opts { durable: true, keys: 8, val: 64 });
            s.fill(&pay[1]);
            s
        })
        .collect();
    for r in 0..p.rounds {
        for k in rotated(&ALL, r) {
            let s = &*stores[ALL.iter().position(|&x| x == k).unwrap()];
            let start = Instant::now();
            let total: u64 = std::thread::scope(|sc| {
                let hs: Vec<_> = (0..8u32)
                    .map(|w| {
                        let pay = &pay;
                        sc.spawn(move || {
                            let mut n = 0u64;
                            while start.elapsed() < p.slice {
                                s.put(w, &pay[(n & 1) as usize]);
                                n += 1;
                            }
                            n
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).sum()
            });
            t.push(k.name(), total as f64 / start.elapsed().as_secs_f64());
        }
    }
    t
}

/// 4 KiB gets of random keys: ns per get.
fn reads(p: &Plan) -> Table {
    let mut t = Table::new("4 KiB reads, random keys", "ns/op", true);
    let seq = key_seq(p.ops * 5, p.keys.min(256));
    let pay = payloads(4096);
    let dirs: Vec<_> = ALL.iter().map(|_| tmp()).collect();
    let stores: Vec<Box<dyn Store>> = ALL
        .iter()
        .zip(&dirs)
        .map(|(&k, d)| {
            let s = stores::open(k, d.path(), Opts { durable: false, keys: p.keys.min(256), val: 4096 });
            s.fill(&pay[0]);
            s
        })
        .collect();
    let mut out = vec![0u8; 4096];
    for r in 0..p.rounds {
        for k in rotated(&ALL, r) {
            let s = &stores[ALL.iter().position(|&x| x == k).unwrap()];
            let start = Instant::now();
            for &key in &seq {
                s.get(key, &mut out);
            }
            t.push(k.name(), start.elapsed().as_nanos() as f64 / seq.len() as f64);
            assert!(out == pay[0], "{} read back other bytes", k.name());
        }
    }
    t
}

/// Sustained 64 KiB unsynced puts over 256 keys (16 MiB live), `bytes` per round, against a raw
/// sequential `write` of the same bytes to one file: MB/s. Each round starts from a new store.
fn large_writes(p: &Plan, kinds: &[Kind], bytes: u64) -> Table {
    let mut t = Table::new(format!("64 KiB unsynced writes, {} MiB per round", bytes >> 20), "MB/s", false);
    let pay = payloads(64 << 10);
    let n = (bytes / (64 << 10)) as u32;
    let mut names: Vec<Option<Kind>> = kinds.iter().copied().map(Some).collect();
    names.push(None); // the raw file write
    for r in 0..p.rounds {
        let mut order = names.clone();
        let n_names = order.len();
        order.rotate_left(r % n_names);
        for k in order {
            let d = tmp();
            let start;
            match k {
                Some(k) => {
                    let s = stores::open(k, d.path(), Opts { durable: false, keys: 256, val: 64 << 10 });
                    start = Instant::now();
                    for i in 0..n {
                        s.put(i % 256, &pay[((i / 256) & 1) as usize]);
                    }
                }
                None => {
                    let mut f = std::fs::File::create(d.path().join("raw")).expect("raw file");
                    start = Instant::now();
                    for i in 0..n {
                        f.write_all(&pay[((i / 256) & 1) as usize]).expect("raw write");
                    }
                }
            }
            let secs = start.elapsed().as_secs_f64();
            t.push(k.map_or("raw-write", Kind::name), bytes as f64 / secs / 1e6);
        }
    }
    t
}

/// Open after a clean close of `reopen_keys` 4 KiB values, up to the first read: ms.
fn reopen_clean(p: &Plan) -> Table {
    let mut t = Table::new(format!("reopen after a clean close, {} x 4 KiB", p.reopen_keys), "ms", true);
    let o = Opts { durable: false, keys: p.reopen_keys, val: 4096 };
    let pay = payloads(4096);
    let dirs: Vec<_> = ALL.iter().map(|_| tmp()).collect();
    for (&k, d) in ALL.iter().zip(&dirs) {
        let s = stores::open(k, d.path(), o);
        s.fill(&pay[0]);
        for i in 0..p.ops.min(2_000) {
            s.put(i % p.reopen_keys, &pay[1]);
        }
    }
    // The key read back last was overwritten by the updates when they reached it.
    let expect = if p.ops.min(2_000) >= o.keys { &pay[1] } else { &pay[0] };
    let mut out = vec![0u8; 4096];
    for r in 0..p.rounds {
        for k in rotated(&ALL, r) {
            let d = &dirs[ALL.iter().position(|&x| x == k).unwrap()];
            let start = Instant::now();
            let s = stores::open(k, d.path(), o);
            s.get(o.keys - 1, &mut out);
            t.push(k.name(), start.elapsed().as_secs_f64() * 1e3);
            assert!(out == *expect, "{} reopened with other bytes", k.name());
        }
    }
    t
}

/// A child process loads `reopen_keys` 4 KiB values, makes `crash_updates` unsynced updates,
/// says "ready" and is killed with SIGKILL; then the open up to the first read: ms.
fn reopen_crash(p: &Plan) -> Table {
    let mut t = Table::new(
        format!("reopen after kill -9, {} x 4 KiB + {} unsynced updates", p.reopen_keys, p.crash_updates),
        "ms",
        true,
    );
    let o = Opts { durable: false, keys: p.reopen_keys, val: 4096 };
    let mut out = vec![0u8; 4096];
    for r in 0..p.rounds {
        for k in rotated(&ALL, r) {
            let d = tmp();
            let mut child = Command::new(std::env::current_exe().expect("exe"))
                .args(["--child", k.name()])
                .arg(d.path())
                .arg(p.reopen_keys.to_string())
                .arg(p.crash_updates.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn child");
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("child output");
            assert_eq!(line.trim(), "ready", "{} child failed", k.name());
            child.kill().expect("kill -9"); // SIGKILL on Unix
            child.wait().expect("reap child");
            let start = Instant::now();
            let s = stores::open(k, d.path(), o);
            s.get(o.keys - 1, &mut out);
            t.push(k.name(), start.elapsed().as_secs_f64() * 1e3);
        }
    }
    t
}

fn crash_child(args: &[String]) {
    let k = Kind::parse(&args[0]).expect("engine name");
    let dir = Path::new(&args[1]);
    let keys: u32 = args[2].parse().expect("keys");
    let updates: u32 = args[3].parse().expect("updates");
    let pay = payloads(4096);
    let s = stores::open(k, dir, Opts { durable: false, keys, val: 4096 });
    s.fill(&pay[0]);
    for (i, &key) in key_seq(updates, keys).iter().enumerate() {
        s.put(key, &pay[i & 1]);
    }
    let mut so = std::io::stdout();
    writeln!(so, "ready").unwrap();
    so.flush().unwrap();
    std::mem::forget(s); // never closed: the parent kills this process
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        return crash_child(&args[1..]);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let long = args.iter().any(|a| a == "--long");
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .map(|i| args.get(i + 1).expect("--only NAME[,NAME]").split(',').map(str::to_string).collect());
    if let Some(bad) =
        args.iter().find(|a| a.starts_with("--") && !["--quick", "--long", "--only"].contains(&a.as_str()))
    {
        eprintln!("unknown option {bad}; usage: mmsb-peers [--quick|--long] [--only upd64,durable8,read4k,write64k,reopen,crash,route]");
        std::process::exit(2);
    }
    let p = if quick { QUICK } else { FULL };
    let run = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == name));
    println!(
        "mmsb-peers: {} mode, {} rounds (engines alternate within each round)",
        if quick { "quick" } else { "full" },
        p.rounds
    );
    let emit = |t: &Table| t.print("mmsb");
    if run("upd64") {
        emit(&updates(&p, format!("64 B unsynced updates, {} keys", p.keys).as_str(), &ALL, p.keys, 64));
    }
    if run("durable8") {
        emit(&durable_writers(&p));
    }
    if run("read4k") {
        emit(&reads(&p));
    }
    if run("write64k") {
        // The long run (past the dirty-page limits, which start at 10-20% of memory) only for the
        // goal's comparison: MMSB, LMDB and the raw write, 2 rounds, so it stays a few minutes.
        let bytes = if long { 6 << 30 } else { p.large_bytes };
        let kinds: &[Kind] = if long { &[Kind::Mmsb, Kind::Lmdb] } else { &ALL };
        let t = large_writes(&Plan { rounds: if long { 2 } else { p.rounds }, ..p }, kinds, bytes);
        emit(&t);
        let lm = t.speedups("mmsb", "lmdb");
        let raw = t.speedups("mmsb", "raw-write");
        println!(
            "goal 3: mmsb / lmdb {} [{}-{}] (target >= 0.5); mmsb / raw write {} [{}-{}] (target >= 0.7)",
            fmt(median(&lm)),
            fmt(min(&lm)),
            fmt(max(&lm)),
            fmt(median(&raw)),
            fmt(min(&raw)),
            fmt(max(&raw))
        );
    }
    if run("reopen") {
        emit(&reopen_clean(&p));
    }
    if run("crash") {
        emit(&reopen_crash(&p));
    }
    if run("route") {
        let mut kinds = vec![Kind::MmsbMem];
        kinds.extend(ALL);
        let small = updates(&p, "64 B unsynced updates, 10 keys", &kinds, 10, 64);
        let big = updates(&p, format!("64 B unsynced updates, {} keys", p.big_keys).as_str(), &kinds, p.big_keys, 64);
        let mut g = Table::new(format!("growth: cost at {} keys / cost at 10 keys, per round", p.big_keys), "x", true);
        for (name, b) in &big.rows {
            for (x, y) in b.iter().zip(small.get(name).unwrap()) {
                g.push(name, x / y);
            }
        }
        emit(&small);
        emit(&big);
        g.print_with(None);
        println!("goal 4 (mmsb-mem, in-memory route): growth target <= 2");
    }
}
