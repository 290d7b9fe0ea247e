//! The group-commit coordinator: writers in `Durability::GroupCommit` wait here until an fsync
//! that started after their append has finished.
//!
//! Measured on the 2-vCPU VM the benches run on, the cost of a batch beside its fsync was not
//! the appends but waking the writers: each wake-up is a cross-CPU interrupt (a VM exit), and
//! 7 woken writers then queued on the coordinator's mutex one after another. A C model of the
//! protocol gave 22-28 us per write with sleeping waiters and 15-18 us with waiters that yield
//! the CPU in a loop, the latter as fast as one thread writing 8 records and syncing once. So:
//! - in this mode appends are staged in memory (`Writer::stage`); the writer whose append
//!   completes the expected batch leads it: one write of the stage, one fsync;
//! - the other writers wait without any lock: they yield the CPU in a loop (bounded by the
//!   recent fsync time, like RocksDB's write-thread yielding), then sleep on a futex;
//! - a batch that does not complete (fewer writers than before) is synced by whichever waiter
//!   sees its deadline pass (see `GroupSync::deadline`).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::monitoring::Metric;
use crate::runtime::state::Durability;
use crate::runtime::tlog::{sync_segment, Tlog, Writer};
use crate::types::error::{LogError, Result};

/// Where a group-commit writer waits until its record is durable.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    /// Log position (bytes appended since open) just past the record.
    pos: u64,
    /// This append completed the expected batch: its writer syncs at once.
    lead: bool,
}

impl Ticket {
    /// A ticket with nothing to wait for (the modes other than group commit).
    pub(crate) fn ready() -> Ticket {
        Ticket { pos: 0, lead: false }
    }

    /// One ticket for two records of the same change: durable once the later one is, and
    /// leading if either completed a batch.
    pub(crate) fn merge(self, later: Ticket) -> Ticket {
        Ticket { pos: self.pos.max(later.pos), lead: self.lead || later.lead }
    }
}

/// Waiters yield in a loop for at most this long (and at most two recent fsyncs) before they
/// sleep: past it a wake-up's cost no longer matters beside the fsync.
const SPIN_MAX: Duration = Duration::from_micros(500);
/// Waiters yield in a loop only when batches are at least this large: with fewer waiters one
/// `FUTEX_WAKE` costs little, and yielding through the fsync burnt a core for nothing (2 writers:
/// the same 60 us per write, 129% of a core against 56%).
const SPIN_MIN_BATCH: u32 = 4;
/// An incomplete batch waits at most this long (and at most one recent fsync; see
/// `GroupSync::deadline`). Half an fsync was too short on 2 vCPUs: 8 writers got back in 5.4
/// per sync, not 7.5.
const GATHER_MAX: Duration = Duration::from_millis(1);

/// Leader-only bookkeeping.
#[derive(Debug, Default)]
struct Leading {
    /// Writers seen around each of the last syncs: the records it covered plus those appended
    /// while it ran (their writers were back before the sync ended). Counting only the records
    /// it covered let the expected batch shrink for good: after one batch of 6 under load, 8
    /// writers settled into batches of 6 (the 6th append leads; the other 2 wait a sync).
    batches: [u32; 8],
    syncs: u64,
}

/// The coordinator (see the module comment). Positions are `Writer::pos` values.
#[derive(Debug)]
pub(crate) struct GroupSync {
    /// Everything up to here is durable.
    durable: AtomicU64,
    /// A sync is in progress.
    leader: AtomicBool,
    /// Set once a group write or fsync failed: every waiter gets this error.
    failed: Mutex<Option<String>>,
    has_failed: AtomicBool,
    /// Records a batch is complete at: the most writers seen around the last syncs (1 for one
    /// writer).
    expect: AtomicU32,
    /// `Writer::batch`, readable without the writer's lock.
    appended: AtomicU32,
    /// `clock()` when the first record of the batch now forming was appended; 0 when none.
    forming: AtomicU64,
    /// Duration of the last fsync, in nanoseconds.
    last_sync: AtomicU64,
    /// `clock()` when the last sync ended.
    synced_at: AtomicU64,
    syncs: AtomicU64,
    leading: Mutex<Leading>,
    wake: Broadcast,
    epoch0: Instant,
}

impl Default for GroupSync {
    fn default() -> Self {
        GroupSync {
            durable: AtomicU64::new(0),
            leader: AtomicBool::new(false),
            failed: Mutex::new(None),
            has_failed: AtomicBool::new(false),
            expect: AtomicU32::new(1),
            appended: AtomicU32::new(0),
            forming: AtomicU64::new(0),
            last_sync: AtomicU64::new(0),
            synced_at: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            leading: Mutex::new(Leading::default()),
            wake: Broadcast::default(),
            epoch0: Instant::now(),
        }
    }
}

impl GroupSync {
    /// Nanoseconds since the coordinator was made, never 0.
    fn clock(&self) -> u64 {
        self.epoch0.elapsed().as_nanos() as u64 + 1
    }

    fn last_sync(&self) -> Duration {
        Duration::from_nanos(self.last_sync.load(Ordering::Relaxed))
    }

    /// When the batch now forming must be synced even if incomplete (`None`: no batch forms).
    /// Its wait counts from its first append or from the end of the last sync, whichever is
    /// later: a batch that formed during a sync waits for the writers that sync releases (else
    /// 8 writers split into two groups of 4 taking turns).
    fn deadline(&self) -> Option<u64> {
        let first = self.forming.load(Ordering::Acquire);
        let since = first.max(self.synced_at.load(Ordering::Acquire));
        let gather = self.last_sync().min(GATHER_MAX);
        (first != 0).then(|| since + gather.as_nanos() as u64)
    }

    /// Called under the writer's lock for each record appended in group-commit mode.
    pub(crate) fn ticket(&self, w: &mut Writer) -> Ticket {
        if w.batch == 0 {
            self.forming.store(self.clock(), Ordering::Release);
        }
        w.batch += 1;
        self.appended.store(w.batch, Ordering::Relaxed);
        Ticket { pos: w.pos, lead: w.batch >= self.expect.load(Ordering::Relaxed) }
    }

    fn fail(&self, why: String) {
        *self.failed.lock() = Some(why);
        self.has_failed.store(true, Ordering::Release);
    }

    fn failure(&self) -> Option<String> {
        if self.has_failed.load(Ordering::Acquire) {
            self.failed.lock().clone()
        } else {
            None
        }
    }
}

/// Ends a sync, however the leader leaves `lead` (a storage that panics included: the waiters
/// then get an error instead of waiting forever for a leader that is gone).
struct Release<'a>(&'a GroupSync);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let g = self.0;
        if std::thread::panicking() {
            g.fail("a group-commit sync panicked".into());
        }
        g.synced_at.store(g.clock(), Ordering::Release);
        g.leader.store(false, Ordering::Release);
        g.wake.wake_all();
    }
}

impl Tlog {
    /// Returns once the record behind `t` is durable (group commit); immediately otherwise.
    pub(crate) fn wait(&self, t: Ticket) -> Result<()> {
        if self.durability != Durability::GroupCommit {
            return Ok(());
        }
        let g = &self.sync;
        let mut lead = t.lead;
        let start = Instant::now();
        let spin = if g.expect.load(Ordering::Relaxed) >= SPIN_MIN_BATCH {
            SPIN_MAX.min(g.last_sync() * 2)
        } else {
            Duration::ZERO
        };
        loop {
            let seen = g.wake.epoch();
            if g.durable.load(Ordering::Acquire) >= t.pos {
                return Ok(());
            }
            if let Some(why) = g.failure() {
                return Err(LogError::Poisoned(why).into());
            }
            let leading = g.leader.load(Ordering::Acquire);
            if !leading {
                let due = g.deadline().is_none_or(|d| g.clock() >= d);
                if (lead || due) && self.lead() {
                    lead = false;
                    continue;
                }
            }
            if start.elapsed() < spin {
                std::thread::yield_now();
                continue;
            }
            // Sleep until the sync in progress ends, or else until the forming batch's deadline.
            let until = if leading { None } else { g.deadline().map(|d| g.epoch0 + Duration::from_nanos(d)) };
            g.wake.sleep(seen, until);
        }
    }

    /// Syncs everything appended so far on behalf of every waiting writer, then wakes them;
    /// false if another sync is in progress.
    fn lead(&self) -> bool {
        let g = &self.sync;
        if g.leader.swap(true, Ordering::AcqRel) {
            return false;
        }
        let _release = Release(g);
        let r = (|| -> std::result::Result<Option<u64>, String> {
            if g.has_failed.load(Ordering::Acquire) {
                return Ok(None);
            }
            // The staged records go to the file under the writer's lock, so a reader that
            // takes it never sees a position whose bytes are not in the file yet.
            let (target, file, blob, batch) = {
                let mut w = self.w.lock();
                if let Some(why) = &w.poisoned {
                    // After a failed write or fsync nothing more can be promised durable (a
                    // retried fsync may succeed although the kernel dropped the pages).
                    return Err(why.clone());
                }
                self.flush_stage(&mut w).map_err(|e| format!("group-commit write failed: {e}"))?;
                self.zero_ahead(&mut w);
                g.forming.store(0, Ordering::Release);
                g.appended.store(0, Ordering::Relaxed);
                (w.pos, w.file.clone(), w.blob.clone(), std::mem::take(&mut w.batch))
            };
            if batch == 0 {
                // Every record appended was taken by an earlier sync (this waiter saw that
                // sync's leader gone but not yet its new durable position).
                return Ok(None);
            }
            let started = Instant::now();
            let timer = self.monitor.start(Metric::Fsync);
            if let Err(e) = sync_segment(&file, blob.as_ref()) {
                let why = format!("group-commit fsync failed: {e}");
                self.w.lock().poisoned = Some(why.clone());
                return Err(why);
            }
            timer.stop(&self.monitor);
            g.last_sync.store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            let mut l = g.leading.lock();
            let n = l.syncs as usize % l.batches.len();
            l.batches[n] = batch + g.appended.load(Ordering::Relaxed);
            l.syncs += 1;
            g.expect.store(l.batches.iter().copied().max().unwrap_or(1).max(1), Ordering::Relaxed);
            Ok(Some(target))
        })();
        match r {
            Ok(None) => {}
            Ok(Some(target)) => {
                g.durable.fetch_max(target, Ordering::AcqRel);
                g.syncs.fetch_add(1, Ordering::Relaxed);
            }
            Err(why) => g.fail(why),
        }
        true
    }

    /// Group-commit fsyncs done so far.
    pub(crate) fn group_syncs(&self) -> u64 {
        self.sync.syncs.load(Ordering::Relaxed)
    }

    /// Marks everything appended so far durable (after maintenance synced it).
    pub(crate) fn mark_durable(&self, pos: u64) {
        self.sync.durable.fetch_max(pos, Ordering::AcqRel);
        self.sync.wake.wake_all();
    }
}

/// Wakes every sleeping waiter with one call: a futex word on Linux (one `FUTEX_WAKE` for all),
/// a condition variable elsewhere. A waiter reads `epoch` before it checks its condition;
/// `sleep` returns at once if the epoch moved since. Spurious returns are allowed.
#[derive(Debug, Default)]
struct Broadcast {
    word: AtomicU32,
    /// Waiters inside `sleep`: a wake with none skips the system call.
    sleepers: AtomicU32,
    #[cfg(not(target_os = "linux"))]
    fallback: (Mutex<()>, parking_lot::Condvar),
}

impl Broadcast {
    fn epoch(&self) -> u32 {
        self.word.load(Ordering::Acquire)
    }

    fn sleep(&self, seen: u32, until: Option<Instant>) {
        if until.is_some_and(|u| Instant::now() >= u) {
            return;
        }
        // SeqCst pairs with `wake_all`: either this sees the new epoch, or the waker sees a
        // sleeper and makes the system call.
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        if self.word.load(Ordering::SeqCst) == seen {
            self.block(seen, until);
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }

    fn wake_all(&self) {
        self.word.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            self.unblock_all();
        }
    }

    #[cfg(target_os = "linux")]
    fn block(&self, seen: u32, until: Option<Instant>) {
        let timeout = until.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            libc::timespec { tv_sec: left.as_secs() as libc::time_t, tv_nsec: left.subsec_nanos() as libc::c_long }
        });
        let ts = timeout.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: FUTEX_WAIT reads the aligned u32 behind `word`, which outlives the call; `ts`
        // is null or points at a timespec in this frame. Every outcome (woken, timed out,
        // interrupted, value already changed) returns to the caller's re-check.
        unsafe {
            libc::syscall(libc::SYS_futex, self.word.as_ptr(), libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG, seen, ts);
        }
    }

    #[cfg(target_os = "linux")]
    fn unblock_all(&self) {
        // SAFETY: FUTEX_WAKE uses the address only as a key; nothing is read or written.
        unsafe {
            libc::syscall(libc::SYS_futex, self.word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, i32::MAX);
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn block(&self, seen: u32, until: Option<Instant>) {
        let mut g = self.fallback.0.lock();
        if self.epoch() != seen {
            return;
        }
        match until {
            Some(d) => {
                self.fallback.1.wait_until(&mut g, d);
            }
            None => self.fallback.1.wait(&mut g),
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn unblock_all(&self) {
        // Under the mutex, so a waiter between its epoch check and its wait cannot miss this.
        let _g = self.fallback.0.lock();
        self.fallback.1.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn broadcast_wakes_every_sleeper_and_never_misses_a_wake() {
        for _ in 0..50 {
            let b = Arc::new(Broadcast::default());
            let seen = b.epoch();
            let waiters: Vec<_> = (0..4)
                .map(|_| {
                    let b = b.clone();
                    std::thread::spawn(move || {
                        while b.epoch() == seen {
                            b.sleep(seen, None);
                        }
                    })
                })
                .collect();
            b.wake_all();
            for w in waiters {
                w.join().unwrap();
            }
        }
    }

    #[test]
    fn broadcast_sleep_returns_at_once_on_a_past_epoch_and_times_out() {
        let b = Broadcast::default();
        let seen = b.epoch();
        b.wake_all();
        let t = Instant::now();
        b.sleep(seen, Some(Instant::now() + Duration::from_secs(10)));
        assert!(t.elapsed() < Duration::from_secs(5));
        let t = Instant::now();
        b.sleep(b.epoch(), Some(Instant::now() + Duration::from_millis(20)));
        assert!(t.elapsed() >= Duration::from_millis(15));
    }
}
