//! `MMSBState` methods of the log: the hooks `runtime/state.rs` calls at each mutation, log
//! statistics, and the types of epoch slices.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::runtime::router::RouteOp;
use crate::runtime::state::{Config, Core, Durability, Lsn, MMSBState};
use crate::runtime::tlog::record::{encode_create, CompactedBody, CreateBody, RecordType};
use crate::runtime::tlog::storage::Storage;
use crate::runtime::tlog::{recover, Ticket};
use crate::types::delta::Delta;
use crate::types::error::{Result, StateError};
use crate::types::page::{Location, PageId, PageMeta};

/// Statistics of a state's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogInfo {
    /// The last LSN assigned.
    pub lsn: Lsn,
    /// Bytes in the retained segments and their blob files (headers included).
    pub log_bytes: u64,
    /// Retained segments.
    pub segments: u64,
    /// Retained checkpoints.
    pub checkpoints: u64,
    /// LSN of the newest checkpoint (0 if none).
    pub last_checkpoint_lsn: Lsn,
    /// Oldest LSN `replay_to` can reach.
    pub oldest_lsn: Lsn,
    /// Record bytes since the newest checkpoint (compared against `log_size_cap`).
    pub bytes_since_checkpoint: u64,
    /// Damaged regions skipped by tolerant recovery at open.
    pub skipped_regions: u64,
    /// Bytes of torn tail cut off at open.
    pub truncated_bytes: u64,
    /// Files the last open moved into quarantine (`quarantine/` in the state directory) instead
    /// of replaying them: segments past a cut and blob files without their segment (tolerant
    /// recovery), torn segment creations. Empty after a clean open.
    pub quarantined: Vec<String>,
    /// Automatic checkpoints/compactions (`log_size_cap`) that failed since open; the write that
    /// triggered each one succeeded, and the next write over the cap tries again.
    pub maintenance_failures: u64,
    /// The error of the last failed automatic maintenance pass.
    pub last_maintenance_error: Option<String>,
    /// Its status code (`ErrorCode::Ok` when none failed).
    pub last_maintenance_code: crate::types::error::ErrorCode,
    /// The LSN the log was at when it failed (0 when none failed).
    pub last_maintenance_lsn: Lsn,
    /// Fsyncs done by group commit (records per fsync = how well writers share them).
    pub group_syncs: u64,
}

/// One entry of an epoch slice (see [`MMSBState::log_records`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// The entry's LSN (for a compacted run: its last LSN).
    pub lsn: Lsn,
    /// What the entry did.
    pub op: LogOp,
}

/// What a log entry did.
#[derive(Debug, Clone, PartialEq)]
pub enum LogOp {
    /// A page was created.
    CreatePage {
        /// The new page's id.
        id: PageId,
        /// Its size in bytes.
        size: u64,
        /// Where it lives.
        location: Location,
        /// Its name and tags.
        meta: PageMeta,
    },
    /// A page was freed.
    FreePage(PageId),
    /// A delta was applied to a page.
    Delta {
        /// The page it changed.
        page: PageId,
        /// The delta.
        delta: Delta,
    },
    /// A compacted run covering `first_lsn..=lsn`.
    Compacted {
        /// The first LSN the run covers.
        first_lsn: Lsn,
        /// The run's net effect.
        body: CompactedBody,
    },
    /// A record of a log extension (graph edits, device syncs).
    Extension {
        /// The extension's record kind.
        kind: u8,
        /// The record's body, decoded by its extension.
        body: Vec<u8>,
    },
}

/// The entries of an epoch slice, in LSN order (see [`MMSBState::log_records`]).
#[derive(Debug)]
pub struct LogSlice {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) chain: Vec<recover::SegFile>,
    pub(crate) next_seg: usize,
    pub(crate) last_lsn: Lsn,
    pub(crate) range: std::ops::Range<Lsn>,
    pub(crate) pending: std::collections::VecDeque<LogEntry>,
    pub(crate) done: bool,
}

/// What a logged mutation must do after the state's lock is released.
#[derive(Debug)]
#[must_use]
pub(crate) struct Pending(Option<Ticket>, Lsn);

impl Pending {
    /// Nothing to wait for (no record appended, or no log).
    pub(crate) const NONE: Pending = Pending(None, 0);

    /// Takes in the handle of a later record of the same change: one wait then covers both
    /// (the log is sequential, so the later record durable means the earlier one is).
    #[inline]
    pub(crate) fn absorb(&mut self, later: Pending) {
        if let Some(t) = later.0 {
            self.0 = Some(self.0.map_or(t, |mine| mine.merge(t)));
            self.1 = self.1.max(later.1);
        }
    }
}

impl MMSBState {
    /// Opens the log (recovering from the directory) when logging is on. Called by `open`.
    pub(crate) fn tlog_attach(&mut self) -> Result<()> {
        let c = self.config();
        if !(c.logging || c.dir.is_some() || c.record_observer.is_some()) {
            return Ok(());
        }
        recover::open_into(self)
    }

    /// `MMSBState::open_with_storage` (in `crate::compose`) with the given extensions.
    pub(crate) fn open_with_storage_and(
        config: Config,
        storage: Arc<dyn Storage>,
        ext: crate::runtime::extension::Extensions,
    ) -> Result<MMSBState> {
        config.validate()?;
        let config = Config { logging: true, dir: None, ..config };
        let core = Core { next_page_id: 1, ext: ext.log, ..Core::default() };
        let mut state = MMSBState::from_core(core, config, false, ext.state);
        recover::open_with(&mut state, storage)?;
        Ok(state)
    }

    /// Hook: logs a page creation (LSN `core.next_lsn()`) before the registry changes.
    pub(crate) fn tlog_create(
        &self,
        core: &Core,
        id: PageId,
        size: u64,
        location: Location,
        meta: &PageMeta,
    ) -> Result<Pending> {
        let Some(log) = &self.tlog else { return Ok(Pending(None, 0)) };
        let body = CreateBody { id, size, location, meta: meta.clone() };
        let t = log.append(RecordType::PageCreate, core.next_lsn(), 1, |out| encode_create(&body, out))?;
        Ok(Pending(Some(t), core.next_lsn()))
    }

    /// Hook: logs a page free (LSN `core.next_lsn()`) before the registry changes.
    pub(crate) fn tlog_free(&self, core: &Core, id: PageId) -> Result<Pending> {
        let Some(log) = &self.tlog else { return Ok(Pending(None, 0)) };
        let t =
            log.append(RecordType::PageFree, core.next_lsn(), 1, |out| out.extend_from_slice(&id.0.to_le_bytes()))?;
        Ok(Pending(Some(t), core.next_lsn()))
    }

    /// Hook: logs a validated batch as one record (LSNs `core.next_lsn() ..`) before it applies.
    pub(crate) fn tlog_batch(&self, core: &Core, ops: &[RouteOp<'_>]) -> Result<Pending> {
        let Some(log) = &self.tlog else { return Ok(Pending(None, 0)) };
        if ops.is_empty() {
            return Ok(Pending(None, 0));
        }
        // The `Batch` body (record.rs), with large payloads written in place rather than copied
        // (and into the blob file once they reach `blob_min`).
        let split = log.blob_min.min(4096);
        let t = log.append_parts(RecordType::Batch, core.next_lsn(), ops.len() as u64, |out, tails| {
            out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
            for o in ops {
                out.extend_from_slice(&o.page.0.to_le_bytes());
                let payload = o.delta.encode_split(out);
                if !payload.is_empty() && payload.len() as u64 >= split {
                    tails.push((out.len(), payload));
                } else {
                    out.extend_from_slice(payload);
                }
            }
        })?;
        Ok(Pending(Some(t), core.next_lsn() + ops.len() as u64 - 1))
    }

    /// Hook for other layers: logs an extension record of `kind` (one LSN, `core.next_lsn()`).
    /// Called through `Txn::log` (`MMSBState::commit`), which assigns the LSN and calls
    /// [`MMSBState::tlog_commit`] after releasing the lock. Recovery hands the
    /// record to `MMSBState::apply_log_extension`.
    pub(crate) fn tlog_extension(&self, core: &Core, kind: u8, body: &[u8]) -> Result<Pending> {
        let Some(log) = &self.tlog else { return Ok(Pending(None, 0)) };
        let t = log.append(RecordType::Extension, core.next_lsn(), 1, |out| {
            out.push(kind);
            out.extend_from_slice(body);
        })?;
        Ok(Pending(Some(t), core.next_lsn()))
    }

    /// Hook, after the state's lock is released: waits until the record is durable (group
    /// commit), then runs the automatic checkpoint + compaction if the log is over its cap.
    pub(crate) fn tlog_commit(&self, p: Pending) -> Result<()> {
        let (Some(t), Some(log)) = (p.0, &self.tlog) else { return Ok(()) };
        log.wait(t)?;
        // Replication hook (issue 22): the record may be sent on now; `Replicated` also waits
        // for the replication target.
        if let Some(o) = &log.observer {
            o.0.committed(p.1);
            if self.config().durability == Durability::Replicated {
                o.0.wait(p.1)?;
            }
        }
        if log.over_cap() && !log.auto_running.swap(true, Ordering::AcqRel) {
            // The triggering write already succeeded; a failed maintenance pass is recorded.
            if let Err(e) = self.auto_maintain(log) {
                let lsn = self.lsn();
                let mut w = log.w.lock();
                w.maintenance_failures += 1;
                w.last_maintenance_error = Some((e.to_string(), e.code(), lsn));
            }
            log.auto_running.store(false, Ordering::Release);
        }
        Ok(())
    }

    /// Hook for `close`: makes everything logged durable.
    pub(crate) fn tlog_close(&self) {
        if let Some(log) = &self.tlog {
            let _ = log.sync_now();
        }
    }

    /// Hook for `close`, once the state is marked closed: lets another state open the
    /// directory even while this handle is still alive.
    pub(crate) fn tlog_release(&self) {
        if let Some(log) = &self.tlog {
            // Wait out a checkpoint or compaction in progress; later ones see the state closed.
            let _m = log.maint.lock();
            log.storage.release();
        }
    }

    /// True when this state has a transaction log.
    pub fn has_log(&self) -> bool {
        self.tlog.is_some()
    }

    /// Statistics of the log.
    pub fn log_info(&self) -> Result<LogInfo> {
        if self.is_closed() {
            return Err(StateError::Closed.into());
        }
        let Some(log) = &self.tlog else {
            return Err(StateError::Unsupported("the transaction log (logging is off)".into()).into());
        };
        let lsn = self.lsn();
        let group_syncs = log.group_syncs();
        let w = log.w.lock();
        let chain_base = w.segments.values().next().map_or(0, |m| m.base_lsn);
        let oldest = if chain_base == 0 { 0 } else { w.checkpoints.keys().next().copied().unwrap_or(chain_base) };
        Ok(LogInfo {
            lsn,
            log_bytes: w.segments.values().map(|m| m.len + m.blob).sum(),
            segments: w.segments.len() as u64,
            checkpoints: w.checkpoints.len() as u64,
            last_checkpoint_lsn: w.checkpoints.keys().next_back().copied().unwrap_or(0),
            oldest_lsn: oldest,
            bytes_since_checkpoint: w.bytes_since_checkpoint,
            skipped_regions: w.skipped_regions,
            truncated_bytes: w.truncated_bytes,
            quarantined: w.quarantined.clone(),
            maintenance_failures: w.maintenance_failures,
            last_maintenance_error: w.last_maintenance_error.as_ref().map(|e| e.0.clone()),
            last_maintenance_code: w
                .last_maintenance_error
                .as_ref()
                .map_or(crate::types::error::ErrorCode::Ok, |e| e.1),
            last_maintenance_lsn: w.last_maintenance_error.as_ref().map_or(0, |e| e.2),
            group_syncs,
        })
    }
}

/// The state as recovery and replay see it (see [`recover::Recoverable`]).
impl recover::Recoverable for MMSBState {
    fn recovery_config(&self) -> &Config {
        self.config()
    }

    fn core_lock(&self) -> &crate::runtime::state::CoreLock {
        &self.core
    }

    fn allocate_page(&self, id: crate::types::page::PageId, size: u64) -> Result<crate::types::page::PageBuf> {
        self.allocate(id, size)
    }

    fn page_files(&self) -> Option<&crate::runtime::pagefiles::PageFiles> {
        self.pagefiles.as_ref()
    }

    fn before_recovery(&mut self) -> Result<()> {
        self.shared_begin()
    }

    fn replay_extension(&self, core: &mut Core, kind: u8, body: &[u8]) -> Result<()> {
        self.apply_log_extension(core, kind, body)
    }

    fn checkpoint_section(&self, core: &Core) -> Vec<u8> {
        self.checkpoint_extension(core)
    }

    fn restore_checkpoint_section(&self, core: &mut Core, bytes: &[u8]) -> Result<()> {
        self.restore_checkpoint_extension(core, bytes)
    }

    fn log_monitor(&self) -> Arc<crate::monitoring::Monitor> {
        self.monitor.clone()
    }

    fn attach(&mut self, log: crate::runtime::tlog::Tlog) {
        self.tlog = Some(log);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::tlog::fault::{DelegatingFile, DelegatingStorage};
    use crate::runtime::tlog::storage::{MemStorage, StorageFile};
    use crate::types::error::{Error, LogError};
    use std::sync::atomic::{AtomicI64, Ordering};

    fn mem() -> Config {
        Config { logging: true, ..Config::default() }
    }

    #[test]
    fn extension_records_reach_the_state_hook() {
        let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
        let s = MMSBState::open_with_storage(mem(), storage.clone()).unwrap();
        s.create_page(8, Location::Cpu, PageMeta::default()).unwrap();
        let lsn = s.commit(|txn| txn.log_extension(200, b"graph bytes")).unwrap();
        assert_eq!(lsn, 2);
        let slice: Vec<_> = s.log_records(2..3).unwrap().map(Result::unwrap).collect();
        assert_eq!(slice[0].op, LogOp::Extension { kind: 200, body: b"graph bytes".to_vec() });
        // Compaction keeps extension records as they are.
        s.compact_log().unwrap();
        let slice: Vec<_> = s.log_records(2..3).unwrap().map(Result::unwrap).collect();
        assert_eq!(slice[0].op, LogOp::Extension { kind: 200, body: b"graph bytes".to_vec() });
        drop(s);
        // No layer handles kind 200 yet, so recovery refuses it rather than dropping it.
        match MMSBState::open_with_storage(mem(), storage) {
            Err(Error::Log(LogError::Corrupt { reason, .. })) => assert!(reason.contains("kind 200"), "{reason}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    /// Storage whose files fail writes (after writing half the bytes) while `fail` > 0, and
    /// fsyncs while `sync_fail` > 0 (each failure decrements the counter).
    #[derive(Debug)]
    struct Flaky {
        inner: MemStorage,
        fail: Arc<AtomicI64>,
        sync_fail: Arc<AtomicI64>,
    }

    #[derive(Debug)]
    struct FlakyFile {
        inner: Arc<dyn StorageFile>,
        fail: Arc<AtomicI64>,
        sync_fail: Arc<AtomicI64>,
    }

    impl DelegatingFile for FlakyFile {
        fn inner(&self) -> &dyn StorageFile {
            &*self.inner
        }
        fn write_at(&self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
            if self.fail.fetch_sub(1, Ordering::SeqCst) > 0 {
                self.inner.write_at(offset, &buf[..buf.len() / 2])?;
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.inner.write_at(offset, buf)
        }
        fn sync(&self) -> std::io::Result<()> {
            if self.sync_fail.fetch_sub(1, Ordering::SeqCst) > 0 {
                return Err(std::io::Error::from_raw_os_error(libc::EIO));
            }
            self.inner.sync()
        }
    }

    impl DelegatingStorage for Flaky {
        fn inner(&self) -> &dyn Storage {
            &self.inner
        }
        fn wrap(&self, inner: Arc<dyn StorageFile>) -> Arc<dyn StorageFile> {
            Arc::new(FlakyFile { inner, fail: self.fail.clone(), sync_fail: self.sync_fail.clone() })
        }
    }

    #[test]
    fn a_failed_append_changes_nothing_and_leaves_the_log_usable() {
        let fail = Arc::new(AtomicI64::new(0));
        let storage: Arc<dyn Storage> =
            Arc::new(Flaky { inner: MemStorage::new(), fail: fail.clone(), sync_fail: Arc::default() });
        let s = MMSBState::open_with_storage(mem(), storage.clone()).unwrap();
        let p = s.create_page(64, Location::Cpu, PageMeta::default()).unwrap();
        s.update_page(p, b"kept").unwrap();
        let (lsn, bytes, epoch) = (s.lsn(), s.read_page(p).unwrap(), s.page_info(p).unwrap().epoch);
        fail.store(1, Ordering::SeqCst);
        assert!(matches!(s.update_page(p, b"lost"), Err(Error::Log(LogError::Io { .. }))));
        assert_eq!((s.lsn(), s.read_page(p).unwrap(), s.page_info(p).unwrap().epoch), (lsn, bytes, epoch));
        fail.store(1, Ordering::SeqCst);
        assert!(s.create_page(8, Location::Cpu, PageMeta::default()).is_err());
        assert_eq!(s.page_ids().unwrap(), vec![p]);
        fail.store(1, Ordering::SeqCst);
        assert!(s.free_page(p).is_err());
        assert_eq!(s.page_ids().unwrap(), vec![p]);
        // The half-written records were cut: later appends and a reopen see a clean log.
        s.update_page(p, b"next").unwrap();
        let q = s.create_page(8, Location::Cpu, PageMeta::default()).unwrap();
        assert_eq!(q.0, p.0 + 1, "the failed create did not consume an id");
        let want = (s.lsn(), s.read_page(p).unwrap());
        drop(s);
        let s = MMSBState::open_with_storage(mem(), storage).unwrap();
        assert_eq!((s.lsn(), s.read_page(p).unwrap()), want);
        assert_eq!(s.log_info().unwrap().truncated_bytes, 0);
    }

    #[test]
    fn a_failed_fsync_poisons_the_log_until_reopen() {
        use crate::runtime::state::Durability;
        for durability in [Durability::Always, Durability::GroupCommit] {
            let sync_fail = Arc::new(AtomicI64::new(0));
            let storage: Arc<dyn Storage> =
                Arc::new(Flaky { inner: MemStorage::new(), fail: Arc::default(), sync_fail: sync_fail.clone() });
            let cfg = Config { durability, ..mem() };
            let s = MMSBState::open_with_storage(cfg.clone(), storage.clone()).unwrap();
            let p = s.create_page(16, Location::Cpu, PageMeta::default()).unwrap();
            s.update_page(p, b"durable").unwrap();
            let lsn = s.lsn();
            sync_fail.store(1, Ordering::SeqCst);
            assert!(s.update_page(p, b"unknown").is_err(), "{durability:?}");
            if durability == Durability::Always {
                // The fsync runs before the change is applied: nothing changed in memory.
                assert_eq!(s.lsn(), lsn);
                assert_eq!(&s.read_page(p).unwrap()[..7], b"durable");
            }
            match s.update_page(p, b"later") {
                Err(Error::Log(LogError::Poisoned(_))) => {}
                other => panic!("{durability:?}: expected Poisoned, got {other:?}"),
            }
            assert!(s.checkpoint().is_err());
            drop(s);
            let s = MMSBState::open_with_storage(cfg, storage).unwrap();
            assert!(s.lsn() == lsn || s.lsn() == lsn + 1, "the failed write is either there or not");
            s.update_page(p, b"works again").unwrap();
        }
    }

    /// Storage whose fsync takes a while, like a fast SSD.
    #[derive(Debug)]
    struct SlowSync(MemStorage);

    #[derive(Debug)]
    struct SlowFile(Arc<dyn StorageFile>);

    impl DelegatingFile for SlowFile {
        fn inner(&self) -> &dyn StorageFile {
            &*self.0
        }
        fn sync(&self) -> std::io::Result<()> {
            std::thread::sleep(std::time::Duration::from_micros(300));
            Ok(())
        }
    }

    impl DelegatingStorage for SlowSync {
        fn inner(&self) -> &dyn Storage {
            &self.0
        }
        fn wrap(&self, file: Arc<dyn StorageFile>) -> Arc<dyn StorageFile> {
            Arc::new(SlowFile(file))
        }
    }

    #[test]
    fn group_commit_writers_share_fsyncs() {
        use crate::runtime::state::Durability;
        let storage: Arc<dyn Storage> = Arc::new(SlowSync(MemStorage::new()));
        let s = MMSBState::open_with_storage(Config { durability: Durability::GroupCommit, ..mem() }, storage).unwrap();
        let pages: Vec<_> = (0..8).map(|_| s.create_page(64, Location::Cpu, PageMeta::default()).unwrap()).collect();
        let before = s.log_info().unwrap().group_syncs;
        std::thread::scope(|sc| {
            for &p in &pages {
                let s = &s;
                sc.spawn(move || {
                    for i in 0..100u8 {
                        s.update_page(p, &[i; 8]).unwrap();
                    }
                });
            }
        });
        let syncs = s.log_info().unwrap().group_syncs - before;
        let per_sync = 800.0 / syncs as f64;
        eprintln!("group commit: 800 writes, {syncs} fsyncs, {per_sync:.1} writes per fsync");
        assert!(per_sync >= 2.0, "writers did not share fsyncs ({per_sync:.1} per fsync)");
    }
}
