//! A primary or follower process for the replication tests with processes
//! (`tests/processes.rs`) and for trying replication by hand.
//!
//! ```text
//! mmsb-replica-node primary  url=URLS stream=NAME dir=DIR acks=FILE [seed=N] [ops=N] [writers=N]
//! mmsb-replica-node follower url=URLS stream=NAME ctl=DIR [dir=DIR]
//! ```
//! The primary runs a random workload in `Durability::Replicated` (creates, frees, sparse
//! writes, batches, dependency edges and propagation) and appends the LSN of every
//! acknowledged write to `acks` (one line each, written before the next write). Exit status:
//! 0 done, 3 fenced, 1 other errors (the message on stderr).
//!
//! The follower follows the stream and keeps `ctl/status` current (`lsn lsn_behind
//! seconds_behind error_code`). It answers files dropped into `ctl`: `sample` (write
//! `sample-LSN.img`, a consistent checkpoint image), `dump` (write `dump.img`), `promote`
//! (promote to primary in `ctl/promoted`, run the workload for the number of writes the file
//! holds, log acknowledged LSNs to `ctl/acks-promoted`, then write `promoted.done`), `stop`.

// Test data: bytes are deliberately cut from wider random or loop values.
#![allow(clippy::cast_possible_truncation)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mmsb::graph::{Command, CommandList, EdgeKind};
use mmsb::{Config, Delta, Durability, ErrorCode, Location, MMSBState, PageId, PageMeta, RouteOp};
use mmsb_replica::{FollowOptions, Follower, Primary, Target};

fn args() -> (String, HashMap<String, String>) {
    let mut it = std::env::args().skip(1);
    let role = it.next().unwrap_or_default();
    let kv = it.filter_map(|a| a.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect();
    (role, kv)
}

fn fail(e: mmsb::Error) -> ! {
    eprintln!("mmsb-replica-node: {} ({})", e, e.code().name());
    std::process::exit(if e.code() == ErrorCode::Fenced { 3 } else { 1 });
}

/// xorshift64*: deterministic per seed, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One random write; returns an LSN that the write's acknowledgement covers, or `None` when it
/// changed nothing. Calls that do not return their LSN (create, free, edges) acknowledge the LSN
/// after the one read before the call: theirs is at least that, and the log is acknowledged in
/// order. `s.lsn()` after the call would not do: with several writers it may be another
/// thread's record, appended but not yet acknowledged, which a killed primary may lose.
fn random_write(
    s: &MMSBState,
    rng: &mut Rng,
    own: &mut Vec<PageId>,
    edged: &mut Vec<PageId>,
) -> mmsb::Result<Option<u64>> {
    let before = s.lsn();
    if own.len() < 4 || rng.below(50) == 0 {
        let size = 64 + rng.below(8192);
        let id = s.create_page(size, Location::Cpu, PageMeta::default())?;
        own.push(id);
        return Ok(Some(before + 1));
    }
    let pick = |rng: &mut Rng, own: &[PageId]| own[rng.below(own.len() as u64) as usize];
    match rng.below(20) {
        0 if own.len() > 6 => {
            // Pages with edges cannot be freed: free one without.
            let k = rng.below(own.len() as u64) as usize;
            if edged.contains(&own[k]) {
                return Ok(None);
            }
            s.free_page(own.swap_remove(k))?;
            Ok(Some(before + 1))
        }
        1 => {
            let (a, b) = (pick(rng, own), pick(rng, own));
            let len = s.page_info(a)?.size.min(s.page_info(b)?.size).min(32);
            let copy = CommandList::new().with(Command::Copy { src_off: 0, dst_off: 0, len });
            if a != b && s.add_dependency(a, b, EdgeKind::Data, copy).is_ok() {
                edged.extend([a, b]);
                s.propagate(&[a])?;
                return Ok(Some(before + 1));
            }
            Ok(None)
        }
        2..=6 => {
            let mut deltas = Vec::new();
            let mut pages = Vec::new();
            for _ in 0..2 + rng.below(3) {
                let p = pick(rng, own);
                let size = s.page_info(p)?.size;
                let len = 1 + rng.below(64.min(size));
                let off = rng.below(size - len + 1);
                let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                deltas.push(Delta::write(off, &bytes)?);
                pages.push(p);
            }
            let ops: Vec<RouteOp<'_>> =
                pages.iter().zip(&deltas).map(|(&page, delta)| RouteOp { page, delta, expected_epoch: None }).collect();
            Ok(Some(s.route_batch(&ops)?.end - 1))
        }
        _ => {
            let p = pick(rng, own);
            let size = s.page_info(p)?.size;
            let len = 1 + rng.below(256.min(size));
            let off = rng.below(size - len + 1);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            s.update_page_at(p, off, &bytes, None).map(Some)
        }
    }
}

/// `writers` threads of random writes; each acknowledged LSN goes to `acks` before the next.
fn workload(s: &Arc<MMSBState>, acks: &Path, seed: u64, ops: u64, writers: u64) -> mmsb::Result<()> {
    let out =
        Arc::new(std::sync::Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(acks).unwrap()));
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let s = s.clone();
            let out = out.clone();
            std::thread::spawn(move || -> mmsb::Result<()> {
                let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (w + 1));
                let (mut own, mut edged) = (Vec::new(), Vec::new());
                for _ in 0..ops {
                    if let Some(lsn) = random_write(&s, &mut rng, &mut own, &mut edged)? {
                        writeln!(out.lock().unwrap(), "{lsn}").unwrap();
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer thread")?;
    }
    Ok(())
}

fn get<'a>(kv: &'a HashMap<String, String>, k: &str) -> &'a str {
    kv.get(k).map(String::as_str).unwrap_or_else(|| {
        eprintln!("mmsb-replica-node: missing {k}=...");
        std::process::exit(2)
    })
}

fn write_atomic(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn take(ctl: &Path, name: &str) -> Option<String> {
    let p = ctl.join(name);
    let s = std::fs::read_to_string(&p).ok()?;
    std::fs::remove_file(&p).ok()?;
    Some(s)
}

fn follower(target: Target, kv: &HashMap<String, String>) {
    let ctl = PathBuf::from(get(kv, "ctl"));
    let dir = kv.get("dir").map(PathBuf::from);
    let f = Follower::follow(target, FollowOptions { dir, ..FollowOptions::default() }).unwrap_or_else(|e| fail(e));
    let mut follower = Some(f);
    let mut primary: Option<Primary> = None;
    loop {
        let state = match (&follower, &primary) {
            (Some(f), _) => f.state().clone(),
            (_, Some(p)) => p.state().clone(),
            _ => unreachable!(),
        };
        if let Some(f) = &follower {
            let lag = f.lag();
            let code = f.check().err().map_or(0, |e| e.code() as u32);
            write_atomic(
                &ctl.join("status"),
                format!("{} {} {:.3} {code}\n", state.lsn(), lag.lsn_behind, lag.seconds_behind).as_bytes(),
            );
        }
        if take(&ctl, "sample").is_some() {
            let (lsn, image) = state.checkpoint_image().unwrap();
            write_atomic(&ctl.join(format!("sample-{lsn}.img")), &image);
        }
        if take(&ctl, "dump").is_some() {
            let (lsn, image) = state.checkpoint_image().unwrap();
            write_atomic(&ctl.join("dump.img"), &image);
            write_atomic(&ctl.join("dump.lsn"), lsn.to_string().as_bytes());
        }
        if let Some(n) = take(&ctl, "promote") {
            let f = follower.take().expect("promote once");
            let cfg =
                Config { dir: Some(ctl.join("promoted")), durability: Durability::Replicated, ..Config::default() };
            let p = f.promote(cfg).unwrap_or_else(|e| fail(e));
            let n: u64 = n.trim().parse().unwrap_or(100);
            workload(p.state(), &ctl.join("acks-promoted"), 99, n, 2).unwrap_or_else(|e| fail(e));
            write_atomic(&ctl.join("promoted.done"), p.state().lsn().to_string().as_bytes());
            primary = Some(p);
        }
        if take(&ctl, "stop").is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    let (role, kv) = args();
    let target = Target::new(get(&kv, "url"), get(&kv, "stream"));
    match role.as_str() {
        "primary" => {
            let cfg = Config {
                dir: Some(PathBuf::from(get(&kv, "dir"))),
                durability: Durability::Replicated,
                ..Config::default()
            };
            let p = Primary::open(target, cfg).unwrap_or_else(|e| fail(e));
            let n = |k: &str, d: u64| kv.get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
            workload(p.state(), Path::new(get(&kv, "acks")), n("seed", 1), n("ops", 1000), n("writers", 2))
                .unwrap_or_else(|e| fail(e));
        }
        "follower" => follower(target, &kv),
        _ => {
            eprintln!("usage: mmsb-replica-node primary|follower key=value...");
            std::process::exit(2);
        }
    }
}
