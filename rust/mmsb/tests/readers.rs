//! Readers in other processes (`Reader`, docs/page-files.md): the parent routes a random workload
//! with file-backed pages while three reader processes (this test binary, re-executed) wait for
//! LSNs and read snapshots, checking each against the writer's history, which they recompute from
//! the seed: no torn bytes, LSNs never go back, and every page they read is the page at some LSN
//! at or after the one they waited for. Pages created and freed meanwhile appear and vanish.
#![allow(clippy::cast_possible_truncation)] // test arithmetic on small known sizes

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use mmsb::{Config, Delta, Durability, ErrorCode, Location, MMSBState, PageId, PageMeta, Reader, WriterStatus};

const CHILD_DIR: &str = "MMSB_READERS_CHILD_DIR";
const CHILD_SEED: &str = "MMSB_READERS_CHILD_SEED";
const SIZES: [u64; 6] = [64, 200, 4096, 5000, 8192, 100];
const OPS: u64 = 4000;

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ceb9fe1a85ec53);
    x ^ (x >> 33)
}

/// One logged change of the workload (each takes one LSN).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    /// A write to base page `p` (index into SIZES).
    Write(usize),
    /// Creates an extra page (gets the next page id).
    Create,
    /// Frees the extra page created by the op `k` before.
    Free(u64),
}

/// The workload: op `i` takes LSN `SIZES.len() + 1 + i` (the base pages take 1..=SIZES.len()).
fn ops(seed: u64) -> Vec<Op> {
    (0..OPS)
        .map(|i| match i % 500 {
            250 => Op::Create,
            400 => Op::Free(150),
            _ => Op::Write((mix(seed ^ i) % SIZES.len() as u64) as usize),
        })
        .collect()
}

fn base_lsn() -> u64 {
    SIZES.len() as u64
}

/// Write number `e` to base page `p`: every fifth rewrites the whole page, so a torn copy shows.
fn write_of(p: usize, e: u64) -> (u64, Vec<u8>) {
    let size = SIZES[p];
    let h = mix((p as u64) << 40 ^ e);
    let b = (h >> 8) as u8;
    if e.is_multiple_of(5) {
        return (0, (0..size).map(|i| b.wrapping_add(i as u8)).collect());
    }
    let len = 1 + h % size.min(300);
    let offset = (h >> 20) % (size - len + 1);
    (offset, (0..len).map(|i| b ^ i as u8).collect())
}

/// The writer's history as the readers see it.
struct History {
    ops: Vec<Op>,
    /// `states[p][e]`: base page `p` after `e` writes.
    states: Vec<Vec<Vec<u8>>>,
    /// `lsns[p][e]`: the LSN of write `e + 1` of page `p` (ascending).
    lsns: Vec<Vec<u64>>,
}

impl History {
    fn new(seed: u64) -> History {
        let ops = ops(seed);
        let mut states: Vec<Vec<Vec<u8>>> = SIZES.iter().map(|&s| vec![vec![0u8; s as usize]]).collect();
        let mut lsns = vec![Vec::new(); SIZES.len()];
        for (i, op) in ops.iter().enumerate() {
            if let Op::Write(p) = *op {
                let e = states[p].len() as u64 - 1;
                let (o, bytes) = write_of(p, e);
                let mut next = states[p][e as usize].clone();
                next[o as usize..o as usize + bytes.len()].copy_from_slice(&bytes);
                states[p].push(next);
                lsns[p].push(base_lsn() + 1 + i as u64);
            }
        }
        History { ops, states, lsns }
    }

    /// Page `p`'s epoch right after `lsn`.
    fn epoch_at(&self, p: usize, lsn: u64) -> u64 {
        self.lsns[p].partition_point(|&l| l <= lsn) as u64
    }

    fn final_lsn(&self) -> u64 {
        base_lsn() + self.ops.len() as u64
    }

    /// Extra pages: (id, create LSN, free LSN).
    fn extras(&self) -> Vec<(PageId, u64, u64)> {
        let mut out = Vec::new();
        let mut next_id = SIZES.len() as u64 + 1;
        for (i, op) in self.ops.iter().enumerate() {
            if *op == Op::Create {
                let lsn = base_lsn() + 1 + i as u64;
                let free = self
                    .ops
                    .iter()
                    .enumerate()
                    .skip(i)
                    .find(|(j, o)| matches!(o, Op::Free(k) if *j as u64 - k == i as u64))
                    .map_or(u64::MAX, |(j, _)| base_lsn() + 1 + j as u64);
                out.push((PageId(next_id), lsn, free));
                next_id += 1;
            }
        }
        out
    }
}

#[test]
#[ignore = "child process of reader_processes_see_consistent_snapshots_of_a_live_writer"]
fn reader_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else { panic!("run by the parent test only") };
    let seed: u64 = std::env::var(CHILD_SEED).unwrap().parse().unwrap();
    let h = History::new(seed);
    let extras = h.extras();
    let r = Reader::open(&dir).unwrap();
    let mut rng = seed ^ u64::from(std::process::id());
    let (mut target, mut last_seen, mut checked, mut waits, mut extra_seen) = (base_lsn(), 0u64, 0u64, 0u64, 0u64);
    while target < h.final_lsn() {
        rng = mix(rng);
        target = (target + 1 + rng % 40).min(h.final_lsn());
        let got = r.wait_for(target, Some(Duration::from_secs(30)));
        waits += 1;
        assert!(got >= target, "waited for LSN {target}, the wait returned at {got} ({:?})", r.writer());
        assert!(got >= last_seen, "the LSN went back from {last_seen} to {got}");
        last_seen = got;
        for k in 0..3 {
            let p = (mix(rng ^ k) % SIZES.len() as u64) as usize;
            let (bytes, info) = r.read(PageId(p as u64 + 1)).unwrap();
            let now = r.lsn();
            assert!(now >= last_seen, "the LSN went back from {last_seen} to {now}");
            last_seen = now;
            let e = info.epoch;
            assert!(e >= h.epoch_at(p, target), "page {p}: epoch {e} is older than at the awaited LSN {target}");
            assert!(e <= h.epoch_at(p, now), "page {p}: epoch {e} is newer than at LSN {now}");
            assert!(
                bytes == h.states[p][e as usize],
                "page {p}: torn or wrong bytes at epoch {e} (waited for {target}, now {now})"
            );
            checked += 1;
        }
        // Pages created and freed while it reads.
        let before = r.lsn();
        let ids: BTreeSet<PageId> = r.page_ids().unwrap().into_iter().collect();
        let after = r.lsn();
        for &(id, created, freed) in &extras {
            if ids.contains(&id) {
                assert!(created <= after && freed > before, "{id} listed outside its life");
                extra_seen += 1;
            } else {
                assert!(created > before || freed <= after, "{id} missing during its life");
            }
        }
        for p in 1..=SIZES.len() as u64 {
            assert!(ids.contains(&PageId(p)), "base page {p} missing");
        }
    }
    println!("READER {checked} {waits} {extra_seen}");
}

#[test]
fn reader_processes_see_consistent_snapshots_of_a_live_writer() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("state");
    let seed = mix(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64);
    let h = History::new(seed);
    let s = MMSBState::open(Config {
        dir: Some(dir.clone()),
        durability: Durability::None,
        file_backed_pages: true,
        ..Config::default()
    })
    .unwrap();
    for (i, &size) in SIZES.iter().enumerate() {
        s.create_page(size, Location::Cpu, PageMeta { name: format!("p{i}"), tags: vec![] }).unwrap();
    }
    let children: Vec<_> = (0..3)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "reader_child", "--nocapture", "--ignored", "--test-threads", "1"])
                .env(CHILD_DIR, &dir)
                .env(CHILD_SEED, seed.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut epochs = vec![0u64; SIZES.len()];
    let mut extras: Vec<PageId> = Vec::new();
    for (i, op) in h.ops.iter().enumerate() {
        let want = base_lsn() + 1 + i as u64;
        let lsn = match *op {
            Op::Write(p) => {
                let (o, bytes) = write_of(p, epochs[p]);
                epochs[p] += 1;
                s.route_delta(PageId(p as u64 + 1), &Delta::write(o, &bytes).unwrap(), None).unwrap()
            }
            Op::Create => {
                let id = s.create_page(3000, Location::Cpu, PageMeta::default()).unwrap();
                extras.push(id);
                s.lsn()
            }
            Op::Free(_) => {
                s.free_page(extras.remove(0)).unwrap();
                s.lsn()
            }
        };
        assert_eq!(lsn, want);
        if i.is_multiple_of(64) {
            // Let the readers catch up and block in their waits now and then.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let mut total = 0u64;
    for c in children {
        let out = c.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "reader failed (seed {seed}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout.lines().find_map(|l| l.split("READER ").nth(1)).expect("the reader's tally");
        let n: Vec<u64> = line.split_whitespace().map(|x| x.parse().unwrap()).collect();
        assert!(n[0] > 0 && n[1] > 0, "a reader checked nothing: {line}");
        total += n[0];
    }
    eprintln!("3 reader processes checked {total} snapshots (seed {seed})");
    s.close();
}

#[test]
fn a_reader_of_a_closed_directory_reads_its_final_state() {
    let d = tempfile::tempdir().unwrap();
    let cfg = Config { dir: Some(d.path().to_path_buf()), file_backed_pages: true, ..Config::default() };
    let s = MMSBState::open(cfg.clone()).unwrap();
    let a = s.create_page(5000, Location::Cpu, PageMeta::default()).unwrap();
    s.update_page_at(a, 4000, b"closed", None).unwrap();
    let r = Reader::open(d.path()).unwrap();
    assert!(matches!(r.writer(), WriterStatus::Running(pid) if pid == std::process::id()));
    let lsn = s.lsn();
    s.close();
    assert_eq!(r.writer(), WriterStatus::Closed);
    assert_eq!((r.lsn(), r.durable_lsn()), (lsn, lsn));
    // A wait for an LSN that no writer can reach returns at once with the LSN there is.
    assert_eq!(r.wait_for(lsn + 10, None), lsn);
    let fresh = Reader::open(d.path()).unwrap();
    for r in [&r, &fresh] {
        let (bytes, info) = r.read(a).unwrap();
        assert_eq!(&bytes[4000..4006], b"closed");
        assert_eq!((info.epoch, info.size), (1, 5000));
        assert_eq!(r.view(a).unwrap().len(), 5000);
    }
    let gen = fresh.generation();
    // A new writer: new generation; the readers follow it.
    let s = MMSBState::open(cfg).unwrap();
    assert_eq!(fresh.generation(), gen + 1);
    s.update_page_at(a, 0, b"again", None).unwrap();
    assert_eq!(&fresh.read(a).unwrap().0[0..5], b"again");
    assert_eq!(&r.read(a).unwrap().0[0..5], b"again");
}

#[test]
fn reader_errors_are_named() {
    let d = tempfile::tempdir().unwrap();
    // No writer ever: no header.
    let e = Reader::open(d.path()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unsupported, "{e}");
    assert!(e.to_string().contains("file_backed_pages"), "{e}");
    // A writer with anonymous pages publishes nothing either.
    let s = MMSBState::open(Config { dir: Some(d.path().to_path_buf()), ..Config::default() }).unwrap();
    assert_eq!(Reader::open(d.path()).unwrap_err().code(), ErrorCode::Unsupported);
    drop(s);
    let d = tempfile::tempdir().unwrap();
    let s = MMSBState::open(Config { dir: Some(d.path().to_path_buf()), file_backed_pages: true, ..Config::default() })
        .unwrap();
    let r = Reader::open(d.path()).unwrap();
    assert_eq!(r.read(PageId(42)).unwrap_err().code(), ErrorCode::UnknownPage);
    let a = s.create_page(10, Location::Cpu, PageMeta::default()).unwrap();
    assert_eq!(r.read_into(a, &mut [0u8; 3]).unwrap_err().code(), ErrorCode::LengthMismatch);
    s.free_page(a).unwrap();
    assert_eq!(r.read(a).unwrap_err().code(), ErrorCode::UnknownPage);
    s.close();
    // Another layout version.
    let header = d.path().join("pages").join("header");
    let mut bytes = std::fs::read(&header).unwrap();
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&header, &bytes).unwrap();
    assert_eq!(Reader::open(d.path()).unwrap_err().code(), ErrorCode::UnsupportedVersion);
    // Not a header at all.
    std::fs::write(&header, b"something else entirely").unwrap();
    assert_eq!(Reader::open(d.path()).unwrap_err().code(), ErrorCode::Unsupported);
}

const CRASH_CHILD_DIR: &str = "MMSB_READERS_CRASH_CHILD_DIR";

#[test]
#[ignore = "child process of a_reader_sees_a_writer_crash_and_follows_the_next_writer"]
fn crashing_writer_child() {
    let Some(dir) = std::env::var_os(CRASH_CHILD_DIR) else { panic!("run by the parent test only") };
    let s = MMSBState::open(Config {
        dir: Some(dir.into()),
        durability: Durability::Always,
        file_backed_pages: true,
        ..Config::default()
    })
    .unwrap();
    let a = s.create_page(4096, Location::Cpu, PageMeta::default()).unwrap();
    s.update_page_at(a, 0, b"acknowledged", None).unwrap();
    println!("READY {}", s.lsn());
    // Wait to be killed (never closes).
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_reader_sees_a_writer_crash_and_follows_the_next_writer() {
    let d = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crashing_writer_child", "--nocapture", "--ignored", "--test-threads", "1"])
        .env(CRASH_CHILD_DIR, d.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let lsn: u64 = loop {
        let line = lines.next().expect("the child writer exited early").unwrap();
        if let Some(n) = line.split("READY ").nth(1) {
            break n.trim().parse().unwrap();
        }
    };
    let r = Reader::open(d.path()).unwrap();
    let pid = child.id();
    assert_eq!(r.writer(), WriterStatus::Running(pid));
    let gen = r.generation();
    child.kill().unwrap();
    child.wait().unwrap();
    // The header still names the dead writer: the reader reports the crash, and keeps reading
    // what it applied; a wait cannot be satisfied by anyone and returns at once.
    assert_eq!(r.writer(), WriterStatus::Crashed(pid));
    assert_eq!(r.lsn(), lsn);
    assert_eq!(&r.read(PageId(1)).unwrap().0[..12], b"acknowledged");
    let t = std::time::Instant::now();
    assert_eq!(r.wait_for(lsn + 1, Some(Duration::from_secs(20))), lsn);
    assert!(t.elapsed() < Duration::from_secs(5), "a wait on a crashed writer returns");
    // The next writer recovers (new generation) and the same reader follows it.
    let s =
        MMSBState::open(Config { dir: Some(d.path().into()), file_backed_pages: true, ..Config::default() }).unwrap();
    assert_eq!(r.generation(), gen + 1);
    assert_eq!(r.writer(), WriterStatus::Running(std::process::id()));
    s.update_page_at(PageId(1), 0, b"next writer!", None).unwrap();
    assert_eq!(r.wait_for(lsn + 1, Some(Duration::from_secs(5))), lsn + 1);
    assert_eq!(&r.read(PageId(1)).unwrap().0[..12], b"next writer!");
}

/// Copies a live writer's directory (as a crash leaves it) with `edit` applied to one of its
/// `pages/` files, so a reader of the copy sees damaged or hostile bytes.
fn crashed_copy(src: &std::path::Path, file: &str, edit: impl Fn(&mut Vec<u8>)) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("pages")).unwrap();
    for e in std::fs::read_dir(src.join("pages")).unwrap() {
        let e = e.unwrap();
        let mut bytes = std::fs::read(e.path()).unwrap();
        if e.file_name() == file {
            edit(&mut bytes);
        }
        std::fs::write(d.path().join("pages").join(e.file_name()), bytes).unwrap();
    }
    d
}

fn set_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn damaged_headers_and_tables_give_errors_not_hangs() {
    let d = tempfile::tempdir().unwrap();
    let s =
        MMSBState::open(Config { dir: Some(d.path().into()), file_backed_pages: true, ..Config::default() }).unwrap();
    let a = s.create_page(100, Location::Cpu, PageMeta::default()).unwrap();
    s.update_page_at(a, 0, b"abc", None).unwrap();
    // A pid of 2^31 or more is no process: kill(-1, 0) once made u32::MAX a writer always alive.
    for pid in [u32::MAX, 0x8000_0000, 0] {
        let c = crashed_copy(d.path(), "header", |h| h[16..20].copy_from_slice(&pid.to_le_bytes()));
        let r = Reader::open(c.path()).unwrap();
        assert_eq!(r.writer(), WriterStatus::Crashed(pid));
        assert_eq!(&r.read(a).unwrap().0[..3], b"abc");
        assert_eq!(r.wait_for(u64::MAX, Some(Duration::from_secs(20))), r.lsn(), "nobody to wait for");
    }
    let dead = |h: &mut Vec<u8>| h[16..20].copy_from_slice(&0u32.to_le_bytes());
    // A slot whose seqlock a stopped writer left odd: the page is reported torn, by name.
    let c = crashed_copy(d.path(), "table", |t| {
        for slot in t.chunks_exact_mut(64).skip(1) {
            if slot[8..16] != [0; 8] {
                slot[0] |= 1;
            }
        }
    });
    std::fs::write(c.path().join("pages/header"), {
        let mut h = std::fs::read(c.path().join("pages/header")).unwrap();
        dead(&mut h);
        h
    })
    .unwrap();
    let r = Reader::open(c.path()).unwrap();
    assert_eq!(r.page_ids().unwrap(), vec![a], "a torn slot still names its page");
    let e = r.read(a).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Corrupt, "{e}");
    assert!(e.to_string().contains("was being changed when its writer stopped"), "{e}");
    // A table capacity that overflows the slot arithmetic, and a table generation in the header
    // equal to the value once used as "rescan" marker.
    let c = crashed_copy(d.path(), "table", |t| set_u64(t, 16, u64::MAX));
    let mut h = std::fs::read(c.path().join("pages/header")).unwrap();
    dead(&mut h);
    set_u64(&mut h, 48, u64::MAX);
    std::fs::write(c.path().join("pages/header"), h).unwrap();
    let r = Reader::open(c.path()).unwrap();
    assert_eq!(&r.read(a).unwrap().0[..3], b"abc");
    s.close();
}
