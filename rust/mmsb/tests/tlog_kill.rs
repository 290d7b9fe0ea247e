//! Kill test: a child process (this test binary, re-executed) writes in GroupCommit mode from
//! several threads and prints every acknowledged write; the parent SIGKILLs it at random moments,
//! reopens the directory and checks that every acknowledged write is there and that the state
//! equals a reference model. `MMSB_KILL_CYCLES` sets the number of cycles (default 100).

mod tlog_common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mmsb::{Config, Durability, Location, MMSBState, PageMeta};

const CHILD_DIR: &str = "MMSB_TLOG_KILL_CHILD_DIR";
const THREADS: u64 = 4;
const PAGE: u64 = 8192;

fn config(dir: &std::path::Path) -> Config {
    Config {
        dir: Some(dir.to_path_buf()),
        durability: Durability::GroupCommit,
        // Small segments and a small cap: kills also land in rollovers, checkpoints, compactions.
        segment_size: 32 << 10,
        log_size_cap: 96 << 10,
        ..Config::default()
    }
}

/// Write `n` of thread `t`: `(offset, bytes)`.
fn write_of(t: u64, n: u64) -> (u64, Vec<u8>) {
    let len = 1 + (n * 31 + t) % 255;
    let offset = (n * 97 + t * 13) % (PAGE - 256);
    let b = (n ^ (t << 5)) as u8;
    (offset, (0..len).map(|i| b.wrapping_add(i as u8)).collect())
}

/// Page `t` after its first `count` writes.
fn model(t: u64, count: u64) -> Vec<u8> {
    let mut page = vec![0u8; PAGE as usize];
    for n in 0..count {
        let (o, bytes) = write_of(t, n);
        page[o as usize..o as usize + bytes.len()].copy_from_slice(&bytes);
    }
    page
}

fn page_of(s: &MMSBState, t: u64) -> Option<mmsb::PageId> {
    s.page_ids().unwrap().into_iter().find(|&id| s.page_info(id).unwrap().name == format!("t{t}"))
}

#[test]
#[ignore = "child process of kill_at_random_moments_loses_no_acknowledged_write"]
fn kill_child_writer() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        panic!("run by kill_at_random_moments_loses_no_acknowledged_write only");
    };
    let s = MMSBState::open(config(std::path::Path::new(&dir))).unwrap();
    let pages: Vec<_> = (0..THREADS)
        .map(|t| {
            page_of(&s, t).unwrap_or_else(|| {
                s.create_page(PAGE, Location::Cpu, PageMeta { name: format!("t{t}"), tags: vec![] }).unwrap()
            })
        })
        .collect();
    std::thread::scope(|sc| {
        for (t, &page) in pages.iter().enumerate() {
            let s = &s;
            sc.spawn(move || {
                let t = t as u64;
                let mut n = s.page_info(page).unwrap().epoch;
                loop {
                    let (o, bytes) = write_of(t, n);
                    s.update_page_at(page, o, &bytes, None).unwrap();
                    // One write per line, so a kill never leaves half a line behind a whole one.
                    let line = format!("ACK {t} {n}\n");
                    let mut out = std::io::stdout().lock();
                    out.write_all(line.as_bytes()).unwrap();
                    out.flush().unwrap();
                    n += 1;
                }
            });
        }
    });
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn kill_at_random_moments_loses_no_acknowledged_write() {
    let cycles: u64 = std::env::var("MMSB_KILL_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let d = tlog_common::scratch();
    let dir = d.path().join("state");
    let exe = std::env::current_exe().unwrap();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    let mut rng = Rng(seed);
    let started = Instant::now();
    let (mut acked_total, mut lost, mut unacked_present) = (0u64, 0u64, 0u64);
    for cycle in 0..cycles {
        let mut child = Command::new(&exe)
            .args(["--exact", "kill_child_writer", "--nocapture", "--ignored", "--test-threads", "1"])
            .env(CHILD_DIR, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acks = vec![None::<u64>; THREADS as usize];
            let mut lines = 0u64;
            for line in BufReader::new(stdout).split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line);
                let mut f = line.split_whitespace();
                if f.next() != Some("ACK") {
                    continue;
                }
                let (Some(t), Some(n)) = (f.next(), f.next()) else { continue };
                let (Ok(t), Ok(n)) = (t.parse::<usize>(), n.parse::<u64>()) else { continue };
                acks[t] = Some(acks[t].map_or(n, |m: u64| m.max(n)));
                lines += 1;
            }
            (acks, lines)
        });
        // Anywhere from during recovery to well into the writes.
        std::thread::sleep(Duration::from_micros(2_000 + rng.next() % 150_000));
        child.kill().unwrap();
        child.wait().unwrap();
        let (acks, lines) = reader.join().unwrap();
        acked_total += lines;

        let s = MMSBState::open(config(&dir)).unwrap_or_else(|e| panic!("cycle {cycle}: reopen failed: {e}"));
        if std::env::var_os("MMSB_KILL_VERBOSE").is_some() {
            eprintln!("cycle {cycle}: {:?}", s.log_info().unwrap());
        }
        for t in 0..THREADS {
            let acked = acks[t as usize];
            let Some(page) = page_of(&s, t) else {
                assert!(acked.is_none(), "cycle {cycle}: page t{t} lost after acknowledged writes");
                continue;
            };
            let epoch = s.page_info(page).unwrap().epoch;
            if let Some(n) = acked {
                lost += (n + 1).saturating_sub(epoch);
                unacked_present += epoch.saturating_sub(n + 1);
            }
            assert_eq!(s.read_page(page).unwrap(), model(t, epoch), "cycle {cycle}: page t{t} differs from the model");
        }
    }
    let info = MMSBState::open(config(&dir)).unwrap().log_info().unwrap();
    eprintln!(
        "kill test: {cycles} cycles in {:.1}s, {acked_total} acknowledged writes, {lost} lost, \
         {unacked_present} unacknowledged-but-durable present; final log {} bytes in {} segments, \
         {} checkpoints (seed {seed})",
        started.elapsed().as_secs_f64(),
        info.log_bytes,
        info.segments,
        info.checkpoints
    );
    assert_eq!(lost, 0, "acknowledged writes were lost");
    assert!(acked_total > 0, "the child never acknowledged a write");
}
