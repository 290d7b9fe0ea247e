//! Kill test: a child process (this test binary, re-executed) writes in GroupCommit mode from
//! several threads and prints every acknowledged write; the parent SIGKILLs it at random moments,
//! reopens the directory and checks that every acknowledged write is there and that the state
//! equals a reference model. It runs with anonymous and with file-backed pages. `MMSB_KILL_CYCLES` sets the number of cycles (default 100).
#![allow(clippy::cast_possible_truncation)] // test data and sizes: truncation is intended or impossible here

mod tlog_common;

use std::time::{Duration, Instant};

use mmsb::{Config, Durability, Location, MMSBState, PageMeta};
use tlog_common::kill;

const CHILD_DIR: &str = "MMSB_TLOG_KILL_CHILD_DIR";
const CHILD_FILE_BACKED: &str = "MMSB_TLOG_KILL_CHILD_FILE_BACKED";
const THREADS: u64 = 4;
const PAGE: u64 = 8192;

fn config(dir: &std::path::Path, file_backed_pages: bool) -> Config {
    Config {
        dir: Some(dir.to_path_buf()),
        file_backed_pages,
        durability: Durability::GroupCommit,
        // Small segments and a small cap: kills also land in rollovers, checkpoints, compactions.
        segment_size: 32 << 10,
        log_size_cap: 96 << 10,
        // Writes of 128 bytes and more (about half) put their payloads in blob files: kills land
        // in blob writes too.
        blob_min: 128,
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
    kill::page_named(s, &format!("t{t}"))
}

#[test]
#[ignore = "child process of kill_at_random_moments_loses_no_acknowledged_write"]
fn kill_child_writer() {
    let dir = kill::child_dir(CHILD_DIR, "kill_at_random_moments_loses_no_acknowledged_write");
    let s = MMSBState::open(config(&dir, std::env::var_os(CHILD_FILE_BACKED).is_some())).unwrap();
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
                    kill::ack(&format!("ACK {t} {n}"));
                    n += 1;
                }
            });
        }
    });
}

/// Per thread, the highest write acknowledged; and the count of acknowledgements.
struct Acks {
    last: Vec<Option<u64>>,
    lines: u64,
}

impl Default for Acks {
    fn default() -> Acks {
        Acks { last: vec![None; THREADS as usize], lines: 0 }
    }
}

#[test]
fn kill_at_random_moments_loses_no_acknowledged_write() {
    kill_loop(false);
}

#[test]
fn kill_with_file_backed_pages_loses_no_acknowledged_write() {
    kill_loop(true);
}

fn kill_loop(file_backed: bool) {
    let cycles = kill::cycles(100);
    let d = tlog_common::scratch();
    let dir = d.path().join("state");
    let mut rng = kill::Rng::from_clock();
    let seed = rng.0;
    let started = Instant::now();
    let (mut acked_total, mut lost, mut unacked_present) = (0u64, 0u64, 0u64);
    for cycle in 0..cycles {
        let mut env = vec![(CHILD_DIR, dir.as_os_str())];
        if file_backed {
            env.push((CHILD_FILE_BACKED, "1".as_ref()));
        }
        let child = kill::spawn("kill_child_writer", &env, |acks: &mut Acks, f| {
            let ["ACK", t, n, ..] = f else { return };
            let (Ok(t), Ok(n)) = (t.parse::<usize>(), n.parse::<u64>()) else { return };
            acks.last[t] = Some(acks.last[t].map_or(n, |m: u64| m.max(n)));
            acks.lines += 1;
        });
        // Anywhere from during recovery to well into the writes.
        let Acks { last: acks, lines } = child.kill_after(Duration::from_micros(2_000 + rng.next() % 150_000));
        acked_total += lines;

        let s =
            MMSBState::open(config(&dir, file_backed)).unwrap_or_else(|e| panic!("cycle {cycle}: reopen failed: {e}"));
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
    let info = MMSBState::open(config(&dir, file_backed)).unwrap().log_info().unwrap();
    eprintln!(
        "kill test (file-backed pages: {file_backed}): {cycles} cycles in {:.1}s, {acked_total} acknowledged writes, {lost} lost, \
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
