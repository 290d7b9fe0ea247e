//! Group commit's batching: concurrent writers share fsyncs, a lone writer never waits for
//! company. The storage is in memory with a slow fsync (2 ms), so batching does not depend on
//! the disk of the machine running the test.
#![allow(clippy::cast_possible_truncation)] // test data and sizes: truncation is intended or impossible here

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mmsb::runtime::tlog::fault::{DelegatingFile, DelegatingStorage};
use mmsb::runtime::tlog::storage::{MemStorage, Storage, StorageFile};
use mmsb::{Config, Delta, Durability, Location, MMSBState, PageMeta};

/// Slow fsyncs (when `slow`); the next fsync panics while `panic` is set (a buggy storage);
/// zero fills of exactly 1 MiB past a segment's header (the group leaders' fills ahead) write
/// half their bytes and fail while `fail_zero_ahead` is set (a full disk), counted in
/// `zero_ahead_failed`.
#[derive(Debug, Default)]
struct Knobs {
    slow: bool,
    panic: AtomicBool,
    fail_zero_ahead: bool,
    zero_ahead_failed: AtomicU64,
}

#[derive(Debug)]
struct SlowSync(Arc<dyn Storage>, Arc<Knobs>);

#[derive(Debug)]
struct SlowFile(Arc<dyn StorageFile>, Arc<Knobs>);

impl DelegatingFile for SlowFile {
    fn inner(&self) -> &dyn StorageFile {
        &*self.0
    }
    fn write_vectored_at(&self, offset: u64, parts: &[&[u8]]) -> io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let zeros = parts.iter().all(|p| p.iter().all(|&b| b == 0));
        if self.1.fail_zero_ahead && zeros && len == 1 << 20 && offset != 56 {
            self.1.zero_ahead_failed.fetch_add(1, Ordering::SeqCst);
            self.0.write_at(offset, &vec![0; len / 2])?;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.0.write_vectored_at(offset, parts)
    }
    fn sync(&self) -> io::Result<()> {
        if self.1.slow {
            std::thread::sleep(Duration::from_millis(2));
        }
        if self.1.panic.swap(false, Ordering::SeqCst) {
            panic!("storage bug");
        }
        self.0.sync()
    }
}

impl DelegatingStorage for SlowSync {
    fn inner(&self) -> &dyn Storage {
        &*self.0
    }
    fn wrap(&self, file: Arc<dyn StorageFile>) -> Arc<dyn StorageFile> {
        Arc::new(SlowFile(file, self.1.clone()))
    }
}

/// The tests here measure batching, which threads of other tests running beside them disturb.
static SERIAL: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

fn state() -> MMSBState {
    state_with(Arc::new(Knobs { slow: true, ..Knobs::default() }))
}

fn state_with(knobs: Arc<Knobs>) -> MMSBState {
    let config = Config { logging: true, durability: Durability::GroupCommit, ..Config::default() };
    MMSBState::open_with_storage(config, Arc::new(SlowSync(Arc::new(MemStorage::new()), knobs))).unwrap()
}

#[test]
fn eight_writers_share_fsyncs() {
    const THREADS: u64 = 8;
    const WARMUP: u64 = 10;
    const WRITES: u64 = 40;
    let _serial = SERIAL.lock();
    let s = state();
    let pages: Vec<_> =
        (0..THREADS).map(|_| s.create_page(4096, Location::Cpu, PageMeta::default()).unwrap()).collect();
    let barrier = std::sync::Barrier::new(THREADS as usize + 1);
    // Steady state only: from when every writer is past the warm-up (in which the coordinator
    // learns that batches are 8) to when the first one is done (stragglers then sync alone).
    let measured = AtomicU64::new(0);
    let first_done = std::sync::OnceLock::new();
    let start = std::thread::scope(|sc| {
        for (k, &p) in pages.iter().enumerate() {
            let (s, barrier, measured, first_done) = (&s, &barrier, &measured, &first_done);
            sc.spawn(move || {
                for i in 0..WARMUP + WRITES {
                    if i == WARMUP {
                        barrier.wait();
                    }
                    s.route_delta(p, &Delta::write(0, &[(i as u8) ^ (k as u8); 512]).unwrap(), None).unwrap();
                    if i >= WARMUP {
                        measured.fetch_add(1, Ordering::SeqCst);
                    }
                }
                first_done.get_or_init(|| (s.log_info().unwrap().group_syncs, measured.load(Ordering::SeqCst)));
            });
        }
        barrier.wait();
        s.log_info().unwrap().group_syncs
    });
    let (end, writes) = *first_done.get().unwrap();
    let per_sync = writes as f64 / (end - start) as f64;
    // Syncing as soon as one writer waits covered 4-5 writers per fsync (two groups taking
    // turns); waiting for as many writers as the last syncs covered makes it 7-8.
    assert!(per_sync >= 6.0, "{per_sync:.2} writes per fsync ({} fsyncs)", end - start);
    for (k, &p) in pages.iter().enumerate() {
        assert_eq!(s.read_page(p).unwrap()[..512], [((WARMUP + WRITES - 1) as u8) ^ (k as u8); 512]);
    }
}

#[test]
fn a_lone_writer_syncs_every_write() {
    let _serial = SERIAL.lock();
    let s = state();
    let p = s.create_page(64, Location::Cpu, PageMeta::default()).unwrap();
    let before = s.log_info().unwrap().group_syncs;
    for i in 0..20u8 {
        s.update_page(p, &[i; 8]).unwrap();
    }
    assert_eq!(s.log_info().unwrap().group_syncs - before, 20);
}

#[test]
fn a_lone_writer_after_eight_is_not_held_back() {
    let _serial = SERIAL.lock();
    // After 8 writers the coordinator expects batches of 8; a writer left alone must still get
    // each write synced (an incomplete batch is synced at its deadline), and soon in batches
    // of 1 again.
    let s = state();
    let pages: Vec<_> = (0..8).map(|_| s.create_page(64, Location::Cpu, PageMeta::default()).unwrap()).collect();
    std::thread::scope(|sc| {
        for &p in &pages {
            let s = &s;
            sc.spawn(move || {
                for i in 0..20u8 {
                    s.update_page(p, &[i; 8]).unwrap();
                }
            });
        }
    });
    let before = s.log_info().unwrap().group_syncs;
    for i in 0..20u8 {
        s.update_page(pages[0], &[i ^ 0x55; 8]).unwrap();
    }
    assert_eq!(s.log_info().unwrap().group_syncs - before, 20, "one sync per write of a lone writer");
    assert_eq!(s.read_page(pages[0]).unwrap()[..8], [19 ^ 0x55; 8]);
}

#[test]
fn readers_see_records_staged_for_a_group_write() {
    let _serial = SERIAL.lock();
    // In GroupCommit records wait in memory for the batch's write; every log reader must write
    // them out first, so a replay to the current LSN never falls short of it.
    let s = state();
    let pages: Vec<_> = (0..8).map(|_| s.create_page(64, Location::Cpu, PageMeta::default()).unwrap()).collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|sc| {
        let writers: Vec<_> = pages
            .iter()
            .map(|&p| {
                let s = &s;
                sc.spawn(move || {
                    for i in 0..30u8 {
                        s.update_page(p, &[i; 8]).unwrap();
                    }
                })
            })
            .collect();
        let (s, done) = (&s, &done);
        let reader = sc.spawn(move || {
            let mut checked = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let lsn = s.lsn();
                let r = s.replay_to(lsn).unwrap();
                assert_eq!(r.lsn(), lsn, "replay fell short of the live LSN");
                let last = s.log_records(lsn..lsn + 1).unwrap().map(Result::unwrap).last();
                assert_eq!(last.map(|e| e.lsn), Some(lsn), "log_records misses the newest record");
                checked += 1;
            }
            checked
        });
        writers.into_iter().for_each(|w| w.join().unwrap());
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    });
    let want: Vec<_> = pages.iter().map(|&p| s.read_page(p).unwrap()).collect();
    assert!(want.iter().all(|b| b[..8] == [29; 8]));
}

#[test]
fn a_sync_that_panics_fails_the_waiters_instead_of_stranding_them() {
    let _serial = SERIAL.lock();
    let knobs = Arc::new(Knobs { slow: true, ..Knobs::default() });
    let s = state_with(knobs.clone());
    let pages: Vec<_> = (0..4).map(|_| s.create_page(64, Location::Cpu, PageMeta::default()).unwrap()).collect();
    knobs.panic.store(true, Ordering::SeqCst);
    let outcomes: Vec<_> = std::thread::scope(|sc| {
        let hs: Vec<_> = pages
            .iter()
            .map(|&p| {
                let s = &s;
                sc.spawn(move || std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.update_page(p, b"x"))))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // The leader's call panicked; every other writer returned (an error, or Ok if an earlier
    // sync covered it), none waits forever; later writes fail cleanly.
    assert!(outcomes.iter().any(Result::is_err), "the panicking sync's leader unwound");
    match s.update_page(pages[0], b"y") {
        Err(mmsb::Error::Log(mmsb::types::error::LogError::Poisoned(why))) => {
            assert!(why.contains("panicked"), "{why}")
        }
        other => panic!("expected Poisoned, got {other:?}"),
    }
}

#[test]
fn group_leaders_zero_fill_ahead_so_appenders_never_do() {
    use mmsb::runtime::tlog::fault::{FaultStorage, Op};
    let _serial = SERIAL.lock();
    // An appender that zero-filled held the state's lock through a write and an fsync of 1 MiB
    // while the other writers parked on it; the leaders fill ahead before their fsyncs instead.
    // Seen from the storage: after the first append, every fsync is a group sync.
    let fs = Arc::new(FaultStorage::in_memory());
    let config = Config { logging: true, durability: Durability::GroupCommit, ..Config::default() };
    let s = MMSBState::open_with_storage(config.clone(), fs.clone()).unwrap();
    let pages: Vec<_> = (0..8).map(|_| s.create_page(4096, Location::Cpu, PageMeta::default()).unwrap()).collect();
    let syncs = || (fs.stats().ops.get(&Op::Sync).copied().unwrap_or(0), s.log_info().unwrap().group_syncs);
    let (fsyncs0, group0) = syncs();
    std::thread::scope(|sc| {
        for (k, &p) in pages.iter().enumerate() {
            let s = &s;
            sc.spawn(move || {
                for i in 0..100u32 {
                    s.route_delta(p, &Delta::write(0, &[(i as u8) ^ (k as u8); 4096]).unwrap(), None).unwrap();
                }
            });
        }
    });
    let (fsyncs, group) = syncs();
    assert!(s.log_info().unwrap().log_bytes > 3 << 20, "the run crosses several 1 MiB fills");
    assert_eq!(fsyncs - fsyncs0, group - group0, "fsyncs beside the group syncs (an appender zero-filled)");
    // The records written over the leaders' zeros read back after a reopen.
    let want: Vec<_> = pages.iter().map(|&p| s.read_page(p).unwrap()).collect();
    drop(s);
    fs.power_loss().unwrap();
    let r = MMSBState::open_with_storage(config, fs.clone()).unwrap();
    assert_eq!(pages.iter().map(|&p| r.read_page(p).unwrap()).collect::<Vec<_>>(), want);
}

#[test]
fn a_failed_zero_fill_ahead_costs_only_time() {
    let _serial = SERIAL.lock();
    // Every fill ahead fails after writing half its zeros (past the filled range). Appenders
    // then fill themselves, rollovers cut the stray zeros off the segment they close (only the
    // last segment may end in zeros), and everything acknowledged reopens.
    let knobs = Arc::new(Knobs { fail_zero_ahead: true, ..Knobs::default() });
    let mem: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let config =
        Config { logging: true, durability: Durability::GroupCommit, segment_size: 3 << 20, ..Config::default() };
    let storage = Arc::new(SlowSync(mem.clone(), knobs.clone()));
    let s = MMSBState::open_with_storage(config.clone(), storage).unwrap();
    let p = s.create_page(4096, Location::Cpu, PageMeta::default()).unwrap();
    for i in 0..1800u32 {
        s.route_delta(p, &Delta::write(0, &[i as u8; 4096]).unwrap(), None).unwrap();
    }
    assert!(knobs.zero_ahead_failed.load(Ordering::SeqCst) >= 4, "the fills ahead were tried and failed");
    assert!(s.log_info().unwrap().segments >= 3, "the run rolls over");
    let (lsn, want) = (s.lsn(), s.read_page(p).unwrap());
    drop(s);
    let r = MMSBState::open_with_storage(config, mem).unwrap();
    assert_eq!((r.lsn(), r.read_page(p).unwrap()), (lsn, want));
}

#[test]
fn regression_a_rollover_right_after_a_failed_fill_ahead_cuts_its_zeros() {
    let _serial = SERIAL.lock();
    // A 1.5 MiB record (kept in the segment) ends exactly where the appender's fill ended; the
    // leader's fill ahead then fails after writing 512 KiB of zeros past it, and the next record
    // rolls over. The rollover used to cut the segment only when its fill reached past the
    // records, which left those zeros at the end of a segment that is not the last: a reopen
    // took them for damage with valid records after it.
    let knobs = Arc::new(Knobs { fail_zero_ahead: true, ..Knobs::default() });
    let mem: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let config = Config {
        logging: true,
        durability: Durability::GroupCommit,
        segment_size: 3 << 20,
        blob_min: u64::MAX,
        ..Config::default()
    };
    let s = MMSBState::open_with_storage(config.clone(), Arc::new(SlowSync(mem.clone(), knobs.clone()))).unwrap();
    let p = s.create_page(3 << 19, Location::Cpu, PageMeta::default()).unwrap();
    for i in 0..3u8 {
        s.route_delta(p, &Delta::write(0, &vec![i + 1; 3 << 19]).unwrap(), None).unwrap();
    }
    assert!(knobs.zero_ahead_failed.load(Ordering::SeqCst) >= 1);
    let (lsn, want) = (s.lsn(), s.read_page(p).unwrap());
    drop(s);
    let r = MMSBState::open_with_storage(config, mem).unwrap_or_else(|e| panic!("reopen: {e}"));
    assert_eq!((r.lsn(), r.read_page(p).unwrap()), (lsn, want));
}
