//! Maintenance does not hold writers out while it reads the log back (issue 21, goal 1): a
//! compaction whose read of the log is held up must not keep a concurrent route from returning.

#![allow(clippy::cast_possible_truncation)] // test data and sizes: truncation is intended or impossible here

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use mmsb::runtime::tlog::fault::{DelegatingStorage, FaultStorage};
use mmsb::runtime::tlog::storage::Storage;
use mmsb::{Config, Delta, Durability, Location, MMSBState, PageMeta};

/// In-memory storage whose whole-file reads (how the log is read back) wait at a gate while it
/// is armed.
#[derive(Debug)]
struct GatedStorage {
    inner: FaultStorage,
    /// (armed, a reader is waiting)
    gate: Mutex<(bool, bool)>,
    cv: Condvar,
}

impl GatedStorage {
    fn arm(&self, on: bool) {
        self.gate.lock().unwrap().0 = on;
        self.cv.notify_all();
    }

    fn wait_for_reader(&self) {
        let g = self.gate.lock().unwrap();
        let (_g, t) = self.cv.wait_timeout_while(g, Duration::from_secs(30), |g| !g.1).unwrap();
        assert!(!t.timed_out(), "the compaction never read the log");
    }
}

impl DelegatingStorage for GatedStorage {
    fn inner(&self) -> &dyn Storage {
        &self.inner
    }
    fn read(&self, name: &str) -> std::io::Result<Vec<u8>> {
        let mut g = self.gate.lock().unwrap();
        if g.0 {
            g.1 = true;
            self.cv.notify_all();
            g = self.cv.wait_while(g, |g| g.0).unwrap();
            g.1 = false;
        }
        drop(g);
        self.inner.read(name)
    }
}

#[test]
fn a_route_returns_while_compaction_reads_the_log() {
    for mode in [Durability::None, Durability::GroupCommit, Durability::Always] {
        let fs = Arc::new(GatedStorage {
            inner: FaultStorage::in_memory(),
            gate: Mutex::new((false, false)),
            cv: Condvar::new(),
        });
        let config = Config { logging: true, durability: mode, segment_size: 4096, ..Config::default() };
        let s = MMSBState::open_with_storage(config.clone(), fs.clone() as Arc<dyn Storage>).unwrap();
        let p = s.create_page(4096, Location::Cpu, PageMeta::default()).unwrap();
        for i in 0..200u32 {
            s.route_delta(p, &Delta::write(u64::from(i % 32) * 128, &[i as u8; 128]).unwrap(), None).unwrap();
        }
        fs.arm(true);
        let routed = std::thread::scope(|sc| {
            let compaction = sc.spawn(|| s.compact_log());
            fs.wait_for_reader();
            // The compaction is now reading the log back: a route must still go through.
            let (tx, rx) = mpsc::channel();
            let s = &s;
            sc.spawn(move || {
                let _ = tx.send(s.route_delta(p, &Delta::write(0, &[0xEE; 16]).unwrap(), None));
            });
            let routed = rx.recv_timeout(Duration::from_secs(10));
            fs.arm(false); // let the compaction (and, before the fix, the route) finish
            compaction.join().unwrap().unwrap();
            routed
        });
        let lsn =
            routed.unwrap_or_else(|_| panic!("{mode:?}: a route waited for the compaction's read of the log")).unwrap();
        assert_eq!(lsn, 202, "{mode:?}");
        // Nothing was lost across the hand-over: the state, its replay and a reopen agree.
        let want = s.read_page(p).unwrap();
        assert_eq!(&want[..16], &[0xEE; 16]);
        assert_eq!(s.replay_to(s.lsn()).unwrap().read_page(p).unwrap(), want, "{mode:?}");
        s.route_delta(p, &Delta::write(16, &[0xDD; 16]).unwrap(), None).unwrap();
        let want = s.read_page(p).unwrap();
        drop(s);
        let r = MMSBState::open_with_storage(config, fs as Arc<dyn Storage>).unwrap();
        assert_eq!(r.read_page(p).unwrap(), want, "{mode:?} after reopen");
        assert_eq!(r.lsn(), 203, "{mode:?}");
    }
}

/// The tests below start maintenance threads and count them: one at a time.
static THREADS: Mutex<()> = Mutex::new(());

/// Maintenance threads of this process (by name; Linux truncates it to 15 bytes).
fn count_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|c| c.starts_with("mmsb-mainten"))
        .count()
}

/// `count_threads` once it is stable: a new thread names itself after it starts, so a count
/// right after `open` can miss it for a moment.
fn maintenance_threads() -> usize {
    let mut n = count_threads();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(10));
        let m = count_threads();
        if m == n {
            return n;
        }
        n = m;
    }
    n
}

/// Bytes of every file under `dir`. The maintenance thread removes files while we look: one
/// gone between the listing and its metadata counts nothing.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut n = 0;
    for e in entries.flatten() {
        let Ok(m) = e.metadata() else { continue };
        n += if m.is_dir() { dir_bytes(&e.path()) } else { m.len() };
    }
    n
}

/// Writes `total` bytes of 4 KiB deltas to a 64 KiB page and returns the largest directory
/// size seen and the page at the end.
fn sustained(s: &MMSBState, dir: &std::path::Path, total: u64) -> (u64, Vec<u8>) {
    let p = s.page_ids().unwrap().first().copied();
    let p = p.unwrap_or_else(|| s.create_page(64 << 10, Location::Cpu, PageMeta::default()).unwrap());
    let mut max = 0;
    for i in 0..total / 4096 {
        let at = (i * 4096) % (64 << 10);
        s.update_page_at(p, at, &[(i % 251) as u8 + 1; 4096], None).unwrap();
        if i % 8 == 0 {
            max = max.max(dir_bytes(dir));
        }
    }
    (max.max(dir_bytes(dir)), s.read_page(p).unwrap())
}

/// Issue 21 item 1 and 2: with a directory and a cap, a maintenance thread exists while the
/// state is open and is gone after close (none without a directory or with the cap off); a
/// sustained write run of 40 times the cap keeps the directory under a bound, which the same
/// run without a cap exceeds; the state reopens to what was written.
#[test]
fn the_maintenance_thread_bounds_the_directory_and_stops_at_close() {
    let _one = THREADS.lock().unwrap_or_else(|e| e.into_inner());
    let base = maintenance_threads();
    let tmp = tempfile::tempdir().unwrap();
    let cap = 256u64 << 10;
    let cfg = |d: &str, cap: u64| Config {
        dir: Some(tmp.path().join(d)),
        log_size_cap: cap,
        segment_size: 64 << 10,
        ..Config::default()
    };
    // No thread without a directory, nor with the cap off.
    let mem = MMSBState::open(Config { logging: true, log_size_cap: cap, ..Config::default() }).unwrap();
    let off = MMSBState::open(cfg("off", 0)).unwrap();
    assert_eq!(maintenance_threads(), base);
    drop(mem);

    let s = MMSBState::open(cfg("on", cap)).unwrap();
    assert_eq!(maintenance_threads(), base + 1, "one maintenance thread per state with a directory");
    let total = 40 * cap;
    let (max_on, want) = sustained(&s, &tmp.path().join("on"), total);
    let info = s.log_info().unwrap();
    assert_eq!(info.maintenance_failures, 0, "{:?}", info.last_maintenance_error);
    assert!(info.maintenance_passes > 0 && info.checkpoints >= 1, "{info:?}");
    // Writers stop at four times the cap since the newest checkpoint, so the log holds at most
    // two such intervals (the older one until the pass after the checkpoint compacts it), each
    // rounded up to whole segments, and up to three checkpoints of the 64 KiB page (two kept,
    // one being written): independent of the 40 caps written.
    let bound = 8 * cap + 4 * (64 << 10) + 3 * ((64 << 10) + 4096);
    assert!(max_on <= bound, "the directory grew to {max_on} bytes (bound {bound})");
    s.close();
    assert_eq!(maintenance_threads(), base, "close joins the maintenance thread");
    drop(s);

    // The same run without a cap outgrows the bound: the check above can fail.
    let (max_off, _) = sustained(&off, &tmp.path().join("off"), total);
    assert!(max_off > bound, "without a cap the directory stayed at {max_off} bytes");
    eprintln!("directory at most {max_on} bytes with the cap, {max_off} without (bound {bound}, cap {cap})");
    drop(off);

    let r = MMSBState::open(cfg("on", cap)).unwrap();
    let p = r.page_ids().unwrap()[0];
    assert_eq!(r.read_page(p).unwrap(), want);
    assert!(r.log_info().unwrap().recovery_micros > 0);
    drop(r);
    assert_eq!(maintenance_threads(), base, "drop joins the maintenance thread");
}

/// A failed background pass is counted, returned once by the next explicit `checkpoint` (or
/// `compact_log`, or `try_close`), never by the write that triggered it, and the log stays
/// sound: the state reopens to every write.
#[test]
fn a_failed_background_pass_is_reported_by_the_next_explicit_call() {
    use mmsb::runtime::tlog::fault::{Fault, Op};
    let _one = THREADS.lock().unwrap_or_else(|e| e.into_inner());
    let fs = Arc::new(FaultStorage::in_memory());
    let config = Config { logging: true, log_size_cap: 4096, segment_size: 2048, ..Config::default() };
    let s = MMSBState::open_with_storage(config.clone(), fs.clone() as Arc<dyn Storage>).unwrap();
    s.start_maintenance_thread().unwrap();
    let p = s.create_page(1024, Location::Cpu, PageMeta::default()).unwrap();
    let write_until = |s: &MMSBState, done: &dyn Fn(&mmsb::LogInfo) -> bool| {
        for i in 0..100_000u32 {
            s.update_page_at(p, u64::from(i % 8) * 100, &[i as u8; 100], None).unwrap();
            if done(&s.log_info().unwrap()) {
                return;
            }
            if i % 64 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        panic!("the maintenance thread never got there: {:?}", s.log_info().unwrap());
    };
    write_until(&s, &|i| i.maintenance_passes > 0 && i.checkpoints > 0);
    fs.fail_nth(Op::Rename, 1, Fault::Eio);
    write_until(&s, &|i| i.maintenance_failures > 0);
    let info = s.log_info().unwrap();
    assert_eq!(info.last_maintenance_code, mmsb::ErrorCode::Io, "{info:?}");
    match s.checkpoint() {
        Err(e) => assert_eq!(e.code(), mmsb::ErrorCode::Io, "{e}"),
        Ok(k) => panic!("the background failure was not returned (checkpoint at {k})"),
    }
    // Reported once: the next call does its work.
    s.checkpoint().unwrap();
    // And by `try_close` when nothing else reported it.
    fs.fail_nth(Op::Rename, 1, Fault::Eio);
    let failures = s.log_info().unwrap().maintenance_failures;
    write_until(&s, &|i| i.maintenance_failures > failures);
    let want = (s.lsn(), s.read_page(p).unwrap());
    assert!(s.try_close().is_err(), "try_close returns the unreported failure");
    drop(s);
    let r = MMSBState::open_with_storage(config, fs as Arc<dyn Storage>).unwrap();
    assert_eq!((r.lsn(), r.read_page(p).unwrap()), want);
}

/// Writers only signal the maintenance thread: a route returns while the thread's checkpoint
/// (rebuilt from the log, anonymous pages) is reading the log back, in every durability mode.
#[test]
fn a_route_returns_while_the_maintenance_thread_checkpoints() {
    let _one = THREADS.lock().unwrap_or_else(|e| e.into_inner());
    for mode in [Durability::None, Durability::GroupCommit, Durability::Always] {
        let fs = Arc::new(GatedStorage {
            inner: FaultStorage::in_memory(),
            gate: Mutex::new((false, false)),
            cv: Condvar::new(),
        });
        let config =
            Config { logging: true, durability: mode, log_size_cap: 16 << 10, segment_size: 4096, ..Config::default() };
        let s = MMSBState::open_with_storage(config.clone(), fs.clone() as Arc<dyn Storage>).unwrap();
        s.start_maintenance_thread().unwrap();
        let p = s.create_page(4096, Location::Cpu, PageMeta::default()).unwrap();
        fs.arm(true);
        // Cross the cap: the thread starts its pass and waits at the gate.
        let mut i = 0u32;
        while s.log_info().unwrap().bytes_since_checkpoint <= 16 << 10 {
            s.route_delta(p, &Delta::write(u64::from(i % 32) * 128, &[i as u8; 128]).unwrap(), None).unwrap();
            i += 1;
        }
        s.route_delta(p, &Delta::write(0, &[1; 128]).unwrap(), None).unwrap();
        fs.wait_for_reader();
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|sc| {
            let s = &s;
            sc.spawn(move || {
                let _ = tx.send(s.route_delta(p, &Delta::write(0, &[0xEE; 16]).unwrap(), None));
            });
            let routed = rx.recv_timeout(Duration::from_secs(10));
            fs.arm(false);
            routed.unwrap_or_else(|_| panic!("{mode:?}: a route waited for the maintenance thread")).unwrap();
        });
        // The pass completes; nothing was lost across it.
        let t = std::time::Instant::now();
        while s.log_info().unwrap().maintenance_passes == 0 {
            assert!(t.elapsed() < Duration::from_secs(30), "{mode:?}: the pass never finished");
            std::thread::sleep(Duration::from_millis(5));
        }
        let info = s.log_info().unwrap();
        assert_eq!(info.maintenance_failures, 0, "{mode:?}: {:?}", info.last_maintenance_error);
        assert!(info.last_checkpoint_lsn > 0, "{mode:?}: the background checkpoint is there");
        let want = (s.lsn(), s.read_page(p).unwrap());
        assert_eq!(&want.1[..16], &[0xEE; 16]);
        assert_eq!(s.replay_to(info.last_checkpoint_lsn).unwrap().lsn(), info.last_checkpoint_lsn);
        s.try_close().unwrap();
        drop(s);
        let r = MMSBState::open_with_storage(config, fs as Arc<dyn Storage>).unwrap();
        assert_eq!((r.lsn(), r.read_page(p).unwrap()), want, "{mode:?}");
    }
}

/// Issue 21 (large writes): the thread's pass rebuilds its checkpoint from the previous one and
/// only the segments after it, and drops old segments whole instead of compacting. That
/// checkpoint holds exactly the state at its LSN (pages created, written and freed across passes
/// included), as the same operations in a state without a log give it, and the state reopens to
/// what was written.
#[test]
fn a_background_checkpoint_is_the_state_at_its_lsn() {
    let _one = THREADS.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let config =
        Config { dir: Some(tmp.path().join("s")), log_size_cap: 64 << 10, segment_size: 32 << 10, ..Config::default() };
    let s = MMSBState::open(config.clone()).unwrap();
    // Operation `i` of the run, applied to `s` (one LSN each): writes to 7 or 8 pages; every
    // 97th operation frees the oldest page, and the next creates one in its place.
    let step = |s: &MMSBState, pages: &mut Vec<mmsb::PageId>, i: u32| {
        if i % 97 == 95 {
            s.free_page(pages.remove(0)).unwrap();
        } else if i % 97 == 96 {
            pages.push(s.create_page(4096, Location::Cpu, PageMeta::default()).unwrap());
        } else {
            let p = pages[i as usize % pages.len()];
            let at = u64::from(i % 16) * 256;
            s.route_delta(p, &Delta::write(at, &[(i % 251) as u8 + 1; 256]).unwrap(), None).unwrap();
        }
    };
    let mut pages: Vec<_> = (0..8).map(|_| s.create_page(4096, Location::Cpu, PageMeta::default()).unwrap()).collect();
    let mut i = 0u32;
    let t = std::time::Instant::now();
    while s.log_info().unwrap().maintenance_passes < 3 {
        assert!(t.elapsed() < Duration::from_secs(60), "the maintenance thread never ran 3 passes");
        step(&s, &mut pages, i);
        i += 1;
    }
    // Stop writing, let the pass in progress finish.
    std::thread::sleep(Duration::from_millis(200));
    let info = s.log_info().unwrap();
    assert_eq!(info.maintenance_failures, 0, "{:?}", info.last_maintenance_error);
    let k = info.last_checkpoint_lsn;
    assert!(k > 8, "{info:?}");
    // The same operations without a log, up to `k` (8 creates, then one LSN per operation).
    let model = MMSBState::open(Config::default()).unwrap();
    let mut mpages: Vec<_> =
        (0..8).map(|_| model.create_page(4096, Location::Cpu, PageMeta::default()).unwrap()).collect();
    for j in 0..(k - 8) as u32 {
        step(&model, &mut mpages, j);
    }
    assert_eq!(model.lsn(), k);
    let at_k = s.replay_to(k).unwrap();
    let ids = |s: &MMSBState| {
        let mut v = s.page_ids().unwrap();
        v.sort_unstable();
        v
    };
    assert_eq!(ids(&at_k), ids(&model), "pages at the checkpoint's LSN {k}");
    for p in ids(&model) {
        assert_eq!(at_k.read_page(p).unwrap(), model.read_page(p).unwrap(), "page {p:?} at LSN {k}");
    }
    let want: Vec<_> = ids(&s).into_iter().map(|p| (p, s.read_page(p).unwrap())).collect();
    let lsn = s.lsn();
    s.try_close().unwrap();
    drop((s, at_k));
    let r = MMSBState::open(config).unwrap();
    assert_eq!(r.lsn(), lsn);
    let got: Vec<_> = ids(&r).into_iter().map(|p| (p, r.read_page(p).unwrap())).collect();
    assert_eq!(got, want, "reopened");
}

/// Storage whose renames (how checkpoints and compactions are published) all fail: every
/// maintenance pass fails, while appends go through.
#[derive(Debug)]
struct NoRenames(Arc<FaultStorage>);

impl DelegatingStorage for NoRenames {
    fn inner(&self) -> &dyn Storage {
        &*self.0
    }
    fn rename(&self, _from: &str, _to: &str) -> std::io::Result<()> {
        Err(std::io::Error::other("renames refused by the test"))
    }
}

/// Back-pressure never deadlocks when the thread's passes fail: a writer far past four times
/// the cap (where each write waits for one pass) still completes every write, the failures are
/// counted and reported, and the log keeps every write.
#[test]
fn back_pressure_releases_writers_when_passes_fail() {
    let _one = THREADS.lock().unwrap_or_else(|e| e.into_inner());
    let disk = Arc::new(FaultStorage::in_memory());
    let fs = Arc::new(NoRenames(disk.clone()));
    let cap = 4096u64;
    let config = Config { logging: true, log_size_cap: cap, segment_size: 2048, ..Config::default() };
    let s = MMSBState::open_with_storage(config.clone(), fs.clone() as Arc<dyn Storage>).unwrap();
    s.start_maintenance_thread().unwrap();
    let p = s.create_page(1024, Location::Cpu, PageMeta::default()).unwrap();
    // Past STOP_AT (4) times the cap, then a few writes more: each waits for one failed pass
    // (the thread backs off 50 ms, 100 ms, ... between them).
    let mut i = 0u32;
    while s.log_info().unwrap().bytes_since_checkpoint <= 4 * cap {
        s.update_page_at(p, u64::from(i % 8) * 100, &[i as u8; 100], None).unwrap();
        i += 1;
    }
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|sc| {
        let s = &s;
        sc.spawn(move || {
            for j in 0..4u32 {
                s.update_page_at(p, 0, &[j as u8; 100], None).unwrap();
            }
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(30)).expect("writers past the cap stayed blocked on failing passes");
    });
    let info = s.log_info().unwrap();
    assert!(info.maintenance_failures > 0 && info.maintenance_waits > 0, "{info:?}");
    assert!(info.bytes_since_checkpoint > 4 * cap, "no pass succeeded: {info:?}");
    let want = (s.lsn(), s.read_page(p).unwrap());
    assert!(s.try_close().is_err(), "try_close returns the failures");
    drop(s);
    let r = MMSBState::open_with_storage(config, disk as Arc<dyn Storage>).unwrap();
    assert_eq!((r.lsn(), r.read_page(p).unwrap()), want);
}
