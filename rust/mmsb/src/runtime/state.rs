//! `MMSBState`: the registry of pages and the entry point for every mutation.
//!
//! All mutations take the state's exclusive lock, get consecutive log sequence numbers (LSNs)
//! and bump the epochs of the pages they touch, so concurrent callers observe one serial order:
//! the LSN order. Reads take the shared lock.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::monitoring::RouteProbe;
use crate::runtime::events::EventSystem;
use crate::runtime::extension::{Extensions, LogExtension, StateExtension};
use crate::runtime::router::RouteOp;
use crate::types::delta::Delta;
use crate::types::error::{PageError, Result, StateError};
use crate::types::event::Event;
use crate::types::page::{Location, Page, PageBuf, PageId, PageInfo, PageMeta, PageView};

pub use crate::types::lsn::{Durability, Lsn};

/// Configuration of a state. The default is a purely in-memory state.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory for the log, checkpoints and file-backed pages; `None` keeps everything in memory.
    pub dir: Option<PathBuf>,
    /// What a returned write promises (see [`Durability`]).
    pub durability: Durability,
    /// Largest page a caller may create: 1 ..= 2^48 bytes (the user address space of 64-bit
    /// machines). Default 2^32.
    pub max_page_size: u64,
    /// Back pages with files in `dir/pages`, mapped shared, rather than anonymous memory; needs
    /// `dir` (`InvalidConfig` without one). Checkpoints then write no page bytes and a clean
    /// close leaves nothing to replay (see `docs/page-files.md`).
    pub file_backed_pages: bool,
    /// Log size that triggers an automatic checkpoint + compaction (record bytes since the
    /// newest checkpoint): 0 (off) or 256 ..= 2^64 - 1; default [`DEFAULT_LOG_SIZE_CAP`]
    /// (256 MiB, four default segments). Below 256 bytes nearly every record would write a
    /// checkpoint of every page. With a directory a maintenance thread does the work; writers
    /// are slowed down only when the log reaches twice the cap (see `docs/reliability.md`).
    pub log_size_cap: u64,
    /// Log bytes since the newest checkpoint after which the maintenance thread of a state with
    /// a directory checkpoints even below `log_size_cap`: what bounds the replay after a crash
    /// (about 1 ms per MiB replayed on a loaded 2-core machine). 0 (off: the cap alone) or
    /// 256 ..= 2^64 - 1; default [`DEFAULT_REPLAY_BUDGET`] (64 MiB). It does not change the
    /// back-pressure, which stays relative to `log_size_cap`, and it needs `log_size_cap` on.
    pub replay_budget: u64,
    /// Segment size after which the log rolls over to a new file: 256 ..= 2^32 bytes (recovery
    /// reads a segment whole, and a segment must hold its header and a record). Default 64 MiB.
    pub segment_size: u64,
    /// Keep replaying past a corrupt record in the middle of the log (skipping to the next valid
    /// segment) instead of failing the open.
    pub tolerant_recovery: bool,
    /// Ask the device layer to initialise a GPU context if one is present.
    pub gpu: bool,
    /// Keep a transaction log. This opts an in-memory state into an in-memory log, so
    /// `replay_to`, `log_records` and `compact_log` work there. A state with `dir` always logs
    /// (to disk): a directory-backed state is the logged one, so `false`, the default, means
    /// "not asked for" there. The C ABI and Julia, which can tell an explicit off from the
    /// default, reject logging turned off with a directory (`InvalidConfig`).
    pub logging: bool,
    /// A log record whose payloads add up to at least this many bytes stores them in its
    /// segment's blob file, 64 KiB-aligned when large, instead of between the framing (see
    /// `docs/log-format.md`). Every value is valid: 0 and 1 put every payload there (a record
    /// without payload bytes, such as a page creation, is never a blob record); `u64::MAX`
    /// keeps every payload inline. Default 32 KiB.
    pub blob_min: u64,
    /// Replication hook (issue 22): sees every appended record; required by
    /// `Durability::Replicated`, and turns logging on (see `runtime::replica_hook`).
    pub record_observer: Option<crate::runtime::replica_hook::ObserverSlot>,
}

/// The accepted range of `Config::max_page_size`.
pub const MAX_PAGE_SIZE_RANGE: std::ops::RangeInclusive<u64> = 1..=1 << 48;
/// The accepted range of `Config::segment_size`.
pub const SEGMENT_SIZE_RANGE: std::ops::RangeInclusive<u64> = 256..=1 << 32;
/// The default `Config::log_size_cap`: 256 MiB, four default segments. It bounds the log kept on
/// disk (the retained interval, compacted, and what was written since the newest checkpoint:
/// writers are slowed down past twice the cap and stopped at four times) and so the replay after
/// a crash.
pub const DEFAULT_LOG_SIZE_CAP: u64 = 256 << 20;
/// Log bytes since the newest checkpoint from which a clean close of a state with anonymous
/// pages writes a checkpoint (`MMSBState::close`): below it the next open replays the log (about
/// a millisecond per MiB of small records), which is cheaper than writing every page at close.
pub const CLOSE_CHECKPOINT_MIN_LOG: u64 = 1 << 20;
/// The default `Config::replay_budget`: 64 MiB of log since the newest checkpoint, which a crash
/// reopen replays in about 65 ms on a loaded 2-core machine (issue 21: <= 100 ms).
pub const DEFAULT_REPLAY_BUDGET: u64 = 64 << 20;
/// The accepted range of a non-zero `Config::log_size_cap`.
pub const LOG_SIZE_CAP_RANGE: std::ops::RangeInclusive<u64> = 256..=u64::MAX;

impl Config {
    /// Checks every option against its documented range (`StateError::InvalidConfig`, with the
    /// accepted range in the message). `MMSBState::open` and `open_with_storage` call it.
    pub fn validate(&self) -> std::result::Result<(), StateError> {
        let range = |name: &str, v: u64, r: &std::ops::RangeInclusive<u64>, extra: &str| {
            if r.contains(&v) {
                return Ok(());
            }
            Err(StateError::InvalidConfig(format!(
                "{name} is {v}; the accepted range is {}..={}{extra}",
                r.start(),
                r.end()
            )))
        };
        range("max_page_size", self.max_page_size, &MAX_PAGE_SIZE_RANGE, " bytes")?;
        range("segment_size", self.segment_size, &SEGMENT_SIZE_RANGE, " bytes")?;
        if self.log_size_cap != 0 {
            range("log_size_cap", self.log_size_cap, &LOG_SIZE_CAP_RANGE, " bytes, or 0 (off)")?;
        }
        if self.replay_budget != 0 {
            range("replay_budget", self.replay_budget, &LOG_SIZE_CAP_RANGE, " bytes, or 0 (off)")?;
        }
        if self.durability == Durability::Replicated && self.record_observer.is_none() {
            return Err(StateError::InvalidConfig(
                "durability Replicated needs a replication target (mmsb-replica)".into(),
            ));
        }
        if self.dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            return Err(StateError::InvalidConfig(
                "dir is an empty path; give a directory, or no directory for an in-memory state".into(),
            ));
        }
        if self.file_backed_pages && self.dir.is_none() {
            return Err(StateError::InvalidConfig(
                "file_backed_pages needs a directory (dir); an in-memory state has no files to back pages with".into(),
            ));
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            dir: None,
            durability: Durability::None,
            max_page_size: 1 << 32,
            file_backed_pages: false,
            log_size_cap: DEFAULT_LOG_SIZE_CAP,
            replay_budget: DEFAULT_REPLAY_BUDGET,
            segment_size: 64 << 20,
            tolerant_recovery: false,
            gpu: false,
            logging: false,
            blob_min: crate::runtime::tlog::format::BLOB_MIN,
            record_observer: None,
        }
    }
}

/// The mutable core, guarded by the state's lock.
// `repr(C)` keeps the fields every route writes (the LSN and the route tally) first, on the
// cache line of the lock word.
#[derive(Debug, Default)]
#[repr(C)]
pub(crate) struct Core {
    pub(crate) lsn: Lsn,
    /// Deltas and payload bytes routed (monitoring's `deltas_routed`/`delta_bytes`) and the
    /// route-sampling countdown: plain fields beside the LSN, written under this lock by
    /// `RouteProbe::commit`, because counter cells on a line of their own cost 3% of a 64-byte
    /// route.
    pub(crate) routed: crate::monitoring::RouteTally,
    /// The registry: a dense table indexed by id (runtime/page_table.rs, issue 21).
    pub(crate) pages: crate::runtime::page_table::PageTable,
    pub(crate) next_page_id: u64,
    /// The log extensions (`runtime::extension`): the graph's `ShadowPageGraph`, the device
    /// layer's sync records; edited under this lock.
    pub(crate) ext: Vec<Box<dyn LogExtension>>,
}

impl Core {
    /// The registered log extension of type `T` (how a layer finds its own data again).
    pub(crate) fn extension<T: LogExtension>(&self) -> Option<&T> {
        self.ext.iter().find_map(|e| e.as_any().downcast_ref::<T>())
    }

    /// The registered log extension of type `T`, mutably.
    pub(crate) fn extension_mut<T: LogExtension>(&mut self) -> Option<&mut T> {
        self.ext.iter_mut().find_map(|e| e.as_any_mut().downcast_mut::<T>())
    }

    /// The LSN the next change will take: the one its log record is appended with.
    #[inline]
    pub(crate) fn next_lsn(&self) -> Lsn {
        self.lsn + 1
    }

    /// Assigns the next `n` LSNs. Called only by `Txn::log` (runtime/commit.rs), the one place
    /// the LSN advances (recovery sets it to what it replayed), once the record is in the log,
    /// so a failed append assigns nothing, and the same way whether or not the state has a log.
    #[inline]
    pub(super) fn assign_lsns(&mut self, n: u64) -> std::ops::Range<Lsn> {
        let start = self.lsn + 1;
        self.lsn += n;
        start..start + n
    }
}

/// The state's lock around [`Core`]. Taking it checks first that this thread is not running
/// callbacks under it (see `runtime::reentry`): fallible entry points return `Reentrant`
/// before they get here; the infallible ones (`lsn`, `close`, statistics) panic here with the
/// same message instead of deadlocking.
#[derive(Debug)]
pub(crate) struct CoreLock(RwLock<Core>);

impl CoreLock {
    /// The exclusive lock.
    #[inline]
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Core> {
        crate::runtime::reentry::assert_not_held(self.key());
        self.0.write()
    }

    /// The shared lock.
    #[inline]
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Core> {
        crate::runtime::reentry::assert_not_held(self.key());
        self.0.read()
    }

    /// Identifies this lock (and so its state) to `runtime::reentry`.
    #[inline]
    pub(crate) fn key(&self) -> usize {
        self as *const CoreLock as usize
    }
}

/// A page-aligned state fabric: pages, the delta router and (with a directory) the log.
#[derive(Debug)]
pub struct MMSBState {
    /// Shared with the maintenance thread (`runtime/tlog/maintain.rs`), which outlives no
    /// `close`.
    pub(crate) core: std::sync::Arc<CoreLock>,
    closed: AtomicBool,
    read_only: bool,
    config: Config,
    /// The transaction log (runtime/tlog), when logging is on.
    pub(crate) tlog: Option<std::sync::Arc<crate::runtime::tlog::Tlog>>,
    /// Histograms, counters, budgets (the state's methods are in `runtime/stats.rs`).
    pub(crate) monitor: std::sync::Arc<crate::monitoring::Monitor>,
    /// The state extensions (`runtime::extension`): the device layer's `DeviceManager`.
    pub(crate) extensions: Vec<std::sync::Arc<dyn StateExtension>>,
    /// Event subscriptions (runtime/events.rs); outside the lock so emitting needs no lock.
    pub(crate) events: EventSystem,
    /// PAGE FILES HOOK: the page files when `file_backed_pages` is on (runtime/pagefiles.rs).
    pub(crate) pagefiles: Option<std::sync::Arc<crate::runtime::pagefiles::PageFiles>>,
    /// SHARED HEADER HOOK: what readers in other processes follow (runtime/shared.rs); with
    /// file-backed pages only.
    pub(crate) shared: Option<crate::runtime::shared::SharedWriter>,
}

impl MMSBState {
    /// Opens a state with the given extensions (`MMSBState::open`, in `crate::compose`, passes
    /// the graph's and the device layer's). With `config.dir`, recovers what the directory
    /// holds, replaying extension records through the extensions.
    pub(crate) fn open_with_extensions(config: Config, ext: Extensions) -> Result<MMSBState> {
        config.validate()?;
        let pagefiles = match (&config.dir, config.file_backed_pages) {
            (Some(dir), true) => {
                Some(std::sync::Arc::new(crate::runtime::pagefiles::PageFiles::open(dir, config.durability)?))
            }
            _ => None,
        };
        let core = Core { next_page_id: 1, ext: ext.log, ..Core::default() };
        let mut state = MMSBState::from_core(core, config, false, ext.state);
        state.pagefiles = pagefiles;
        // TLog hook: recover from the directory (or start an in-memory log) and attach the log.
        state.tlog_attach()?;
        // PAGE FILES HOOK: changes from here on are imaged in a new interval.
        if let Some(pf) = &state.pagefiles {
            let _ = pf.start_interval(state.core.read().lsn)?;
            pf.prune_empty()?;
            // What the recovery changed is flushed by the first checkpoint.
            pf.flush_all_next();
        }
        // SHARED HEADER HOOK: the recovered pages become visible to readers.
        if let Some(sh) = &state.shared {
            sh.publish_pages(&state.core.read())?;
        }
        // TLog hook: the maintenance thread (with a directory only).
        state.start_maintenance()?;
        Ok(state)
    }

    /// Empty instances of this state's extensions, for a state rebuilt from its log.
    pub(crate) fn fresh_extensions(&self, config: &Config) -> Extensions {
        Extensions {
            log: self.core.read().ext.iter().map(|e| e.fresh()).collect(),
            state: self.extensions.iter().map(|e| e.fresh(config)).collect(),
        }
    }

    /// The registered state extension of type `T` (how a layer finds its own data again).
    pub(crate) fn state_extension<T: StateExtension>(&self) -> Option<&T> {
        self.extensions.iter().find_map(|e| e.as_any().downcast_ref::<T>())
    }

    /// A state around `core`, without a log (used by `open` and by log replay).
    pub(crate) fn from_core(
        core: Core,
        config: Config,
        read_only: bool,
        extensions: Vec<std::sync::Arc<dyn StateExtension>>,
    ) -> MMSBState {
        let events = EventSystem::default();
        let monitor = std::sync::Arc::new(crate::monitoring::Monitor::new()); // monitoring
                                                                              // Budget violations become events. The sink may run under the state's lock: emitting
                                                                              // only queues (or drops, per each subscriber's policy).
        let sink_events = events.clone();
        monitor.set_sink(Some(Box::new(move |v: crate::monitoring::BudgetViolation| {
            sink_events.emit(Event::Budget {
                metric: v.metric.map_or(u32::MAX, |m| m as u32),
                value: v.observed,
                limit: v.limit,
            });
        })));
        MMSBState {
            core: std::sync::Arc::new(CoreLock(RwLock::new(core))),
            closed: AtomicBool::new(false),
            read_only,
            extensions,
            config,
            tlog: None,
            monitor,
            events,
            pagefiles: None,
            shared: None,
        }
    }

    /// An in-memory state with the default configuration (and every layer's extensions).
    pub fn in_memory() -> MMSBState {
        MMSBState::open(Config::default()).expect("the default configuration is valid")
    }

    /// The configuration this state was opened with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// True once [`MMSBState::close`] has run.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// True for snapshots produced by replay.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Closes the state: later calls fail with `Closed`; pages are released (live views keep
    /// their bytes). Idempotent and safe to call while other threads use the state.
    pub fn close(&self) {
        // TLog hook: the maintenance thread finishes its pass and exits before anything closes.
        self.stop_maintenance();
        // A clean close of a state with a directory checkpoints, so the next open replays
        // nothing (issue 21, fast open). With page files no page bytes are copied. Anonymous
        // pages are written straight from memory (nobody writes meanwhile) and the next open maps
        // them from the checkpoint; that costs the whole state's bytes at close, so only when the
        // log since the newest checkpoint is large enough for its replay to matter
        // (`CLOSE_CHECKPOINT_MIN_LOG`). Best effort: without it the next open replays the log.
        if self.config.dir.is_some() && self.tlog.is_some() && !self.read_only && !self.is_closed() {
            let worth = self.pagefiles.is_some()
                || self.log_info().is_ok_and(|i| i.bytes_since_checkpoint >= CLOSE_CHECKPOINT_MIN_LOG);
            if worth {
                let _ = self.checkpoint();
            }
        }
        let mut core = self.core.write();
        let first = !self.closed.swap(true, Ordering::AcqRel);
        self.monitor.pages_released(core.pages.values().map(|p| p.buf().capacity() as u64)); // monitoring hook
        core.pages.clear();
        drop(core);
        if first {
            // TLog hook: writers are shut out now; make everything logged durable, then give
            // the directory up (another state may open it while this handle lingers). Outside
            // the core lock: maintenance takes the log's lock before the core's.
            self.tlog_close();
            // SHARED HEADER HOOK: before the LOCK goes, so a next writer's state is not overwritten.
            if let Some(sh) = &self.shared {
                sh.closed(self.core.read().lsn);
            }
            self.tlog_release();
        }
        // Extensions release what they hold (the device layer: mirrors and staging memory).
        for e in &self.extensions {
            e.on_close();
        }
        // Subscriptions learn that no more events will come.
        self.events.close();
    }

    /// Fails with `Reentrant` inside one of this state's callbacks, `Closed` once closed.
    pub(crate) fn check_open(&self) -> Result<()> {
        crate::runtime::reentry::check(self.core.key())?;
        if self.is_closed() {
            return Err(StateError::Closed.into());
        }
        Ok(())
    }

    /// `check_open` again once the lock is held (a concurrent `close` may have run meanwhile);
    /// no re-entry check there: the caller made it before taking the lock.
    pub(crate) fn check_still_open(&self) -> Result<()> {
        if self.is_closed() {
            return Err(StateError::Closed.into());
        }
        Ok(())
    }

    /// `check_open`, and `ReadOnly` on a snapshot or replica.
    pub(crate) fn check_writable(&self) -> Result<()> {
        self.check_open()?;
        if self.read_only {
            return Err(StateError::ReadOnly.into());
        }
        Ok(())
    }

    /// Allocates a zeroed page of `size` bytes (backing rounded up to whole OS pages).
    pub fn create_page(&self, size: u64, location: Location, meta: PageMeta) -> Result<PageId> {
        self.check_writable()?;
        if size == 0 || size > self.config.max_page_size {
            return Err(PageError::InvalidSize { requested: size, max: self.config.max_page_size }.into());
        }
        meta.validate()?;
        // Allocate before taking the lock: mapping memory may be slow. A page file is named by
        // the page's id, known only under the lock.
        let anon = if self.pagefiles.is_none() { Some(self.allocate(PageId(0), size)?) } else { None };
        self.commit(|txn| {
            let id = PageId(txn.core().next_page_id);
            let buf = match anon {
                Some(b) => b,
                None => self.allocate(id, size)?,
            };
            txn.before_create()?;
            // Logged before the registry changes; a failed append changes nothing.
            let logged = txn.log(1, |s, c| s.tlog_create(c, id, size, location, &meta));
            let lsns = logged.inspect_err(|_| {
                // The page does not exist; neither does its file.
                if let Some(pf) = &self.pagefiles {
                    pf.remove(id);
                }
            })?;
            let core = txn.core_mut();
            core.next_page_id += 1;
            self.monitor.page_created(buf.capacity() as u64); // monitoring hook
            core.pages.insert(id, Page::new(id, location, meta, buf));
            txn.page_created(id, location, size, lsns.start);
            Ok(id)
        })
    }

    /// The backing of page `id`: a new page file when pages are file-backed, else anonymous.
    pub(crate) fn allocate(&self, id: PageId, size: u64) -> Result<PageBuf> {
        match &self.pagefiles {
            Some(pf) => pf.allocate(id, size),
            None => Ok(PageBuf::anonymous(size)?),
        }
    }

    /// Removes a page. Views of it stay readable until dropped.
    pub fn free_page(&self, id: PageId) -> Result<()> {
        self.commit(|txn| {
            if !txn.core().pages.contains_key(&id) {
                return Err(PageError::UnknownPage(id).into());
            }
            // An extension may hold the page (the graph: edges must be removed first).
            if let Some(reason) = txn.core().ext.iter().find_map(|e| e.blocks_free(id)) {
                return Err(PageError::InUse { page: id, reason }.into());
            }
            // The page files image it: recovery from the last checkpoint may need its bytes.
            txn.before_free(id)?;
            // Logged before the registry changes.
            let lsns = txn.log(1, |s, c| s.tlog_free(c, id))?;
            if let Some(page) = txn.core_mut().pages.remove(&id) {
                self.monitor.page_freed(page.buf().capacity() as u64); // monitoring hook
            }
            txn.page_freed(id, lsns.start);
            Ok(())
        })
    }

    /// Routes one delta; returns its LSN. With `expected_epoch`, the write happens only if the
    /// page's epoch still equals it (compare-and-set); otherwise nothing changes.
    pub fn route_delta(&self, page: PageId, delta: &Delta, expected_epoch: Option<u64>) -> Result<Lsn> {
        self.route_batch(&[RouteOp { page, delta, expected_epoch }]).map(|r| r.end - 1)
    }

    /// Routes a batch atomically under one lock: either every delta applies, in order, or none.
    /// Returns the LSNs assigned (`start..end`). An empty batch is assigned none, logs nothing
    /// and returns `0..0` (LSNs start at 1, so 0 is never one); it still fails on a closed or
    /// read-only state.
    pub fn route_batch(&self, ops: &[RouteOp<'_>]) -> Result<std::ops::Range<Lsn>> {
        if ops.is_empty() {
            self.check_writable()?;
            return Ok(0..0);
        }
        self.commit_probed(Some(RouteProbe::start(&self.monitor, ops)), |txn| txn.route(ops))
    }

    /// Writes `bytes` at offset 0 as the smallest delta from the page's current bytes.
    /// `bytes` may be shorter than the page (the rest is unchanged).
    pub fn update_page(&self, page: PageId, bytes: &[u8]) -> Result<Lsn> {
        self.update_page_at(page, 0, bytes, None)
    }

    /// Writes `bytes` at `offset` as the smallest delta from the current bytes (a no-op write
    /// still takes an LSN and an epoch, so callers can sequence on it). Bounds as for every
    /// write: `offset + bytes.len()` at most the page size, also for an empty `bytes`.
    pub fn update_page_at(&self, page: PageId, offset: u64, bytes: &[u8], expected_epoch: Option<u64>) -> Result<Lsn> {
        let probe = RouteProbe::start(&self.monitor, &[]);
        let lsns = self.commit_probed(Some(probe), |txn| {
            let p = txn.core().pages.get(&page).ok_or(PageError::UnknownPage(page))?;
            let end = offset
                .checked_add(bytes.len() as u64)
                .ok_or(crate::types::error::DeltaError::Overflow { offset, len: bytes.len() as u64 })?;
            if end > p.size() {
                return Err(crate::types::error::DeltaError::OutOfBounds {
                    offset,
                    len: bytes.len() as u64,
                    page_size: p.size(),
                }
                .into());
            }
            // SAFETY: we hold the exclusive lock, so no writer runs; the slice dies before we write.
            let current = unsafe { &p.buf().as_slice()[in_page(offset, end)] };
            let delta = Delta::diff_at(offset, current, bytes)?;
            let ops = [RouteOp { page, delta: &delta, expected_epoch }];
            txn.count_route(&ops); // the delta exists only now, under the lock
            txn.route(&ops)
        })?;
        Ok(lsns.start)
    }

    /// A consistent copy of the page's bytes.
    pub fn read_page(&self, page: PageId) -> Result<Vec<u8>> {
        self.check_open()?;
        let core = self.core.read();
        self.check_still_open()?;
        let p = core.pages.get(&page).ok_or(PageError::UnknownPage(page))?;
        Ok(p.buf().to_vec())
    }

    /// Copies `out.len()` bytes starting at `offset` into `out`.
    pub fn read_into(&self, page: PageId, offset: u64, out: &mut [u8]) -> Result<()> {
        self.check_open()?;
        let core = self.core.read();
        self.check_still_open()?;
        let p = core.pages.get(&page).ok_or(PageError::UnknownPage(page))?;
        let end = offset.checked_add(out.len() as u64).filter(|&e| e <= p.size()).ok_or(
            crate::types::error::DeltaError::OutOfBounds { offset, len: out.len() as u64, page_size: p.size() },
        )?;
        // SAFETY: the shared lock excludes writers while we copy.
        out.copy_from_slice(unsafe { &p.buf().as_slice()[in_page(offset, end)] });
        Ok(())
    }

    /// Runs `f` on the page's bytes under the shared lock (no copy).
    pub fn with_page<R>(&self, page: PageId, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.check_open()?;
        let core = self.core.read();
        self.check_still_open()?;
        let p = core.pages.get(&page).ok_or(PageError::UnknownPage(page))?;
        // SAFETY: the shared lock is held for the whole borrow, excluding writers.
        Ok(f(unsafe { p.buf().as_slice() }))
    }

    /// A zero-copy view that keeps the page's memory alive (see [`PageView`]).
    pub fn view(&self, page: PageId) -> Result<PageView> {
        self.check_open()?;
        let core = self.core.read();
        self.check_still_open()?;
        let p = core.pages.get(&page).ok_or(PageError::UnknownPage(page))?;
        Ok(PageView::new(page, p.buf().clone()))
    }

    /// Descriptive fields of a page.
    pub fn page_info(&self, page: PageId) -> Result<PageInfo> {
        self.check_open()?;
        let core = self.core.read();
        Ok(core.pages.get(&page).ok_or(PageError::UnknownPage(page))?.info())
    }

    /// Ids of all pages, ascending.
    pub fn page_ids(&self) -> Result<Vec<PageId>> {
        self.check_open()?;
        let core = self.core.read();
        let mut ids: Vec<PageId> = core.pages.keys().copied().collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// SHARED HEADER HOOK: with the directory's LOCK held, before recovery (see `runtime::shared`).
    pub(crate) fn shared_begin(&mut self) -> Result<()> {
        if let Some(pf) = &self.pagefiles {
            self.shared = Some(crate::runtime::shared::SharedWriter::open(pf.dir())?);
        }
        Ok(())
    }

    /// The last LSN assigned (0 before the first delta). Infallible: after [`MMSBState::close`]
    /// it is the LSN the state closed at (the log and replay rely on that). The C ABI's
    /// `mmsb_state_lsn` fails with `Closed` instead, like every other call on a closed handle.
    pub fn lsn(&self) -> Lsn {
        self.core.read().lsn
    }
}

/// The log's side of the extensions: recovery and replay hand extension records and the
/// checkpoint's extension section to the registered `LogExtension`s.
impl MMSBState {
    /// Applies an extension record during recovery or replay (`core` is the state being rebuilt)
    /// through the extension that owns its kind.
    pub(crate) fn apply_log_extension(&self, core: &mut Core, kind: u8, body: &[u8]) -> Result<()> {
        let Core { ext, pages, .. } = core;
        let page_size = |p: PageId| pages.get(&p).map(Page::size);
        match ext.iter_mut().find(|e| e.record_kinds().contains(&kind)) {
            Some(e) => e.replay(kind, body, &page_size),
            None => Err(crate::types::error::LogError::Corrupt {
                file: String::new(),
                offset: 0,
                reason: format!("unknown log extension record kind {kind}"),
            }
            .into()),
        }
    }

    /// Bytes for the checkpoint's extension section (the graph snapshot); empty when no
    /// extension writes one.
    pub(crate) fn checkpoint_extension(&self, core: &Core) -> Vec<u8> {
        core.ext.iter().find_map(|e| e.checkpoint_section()).unwrap_or_default()
    }

    /// Restores the checkpoint's extension section (empty in checkpoints without a graph).
    pub(crate) fn restore_checkpoint_extension(&self, core: &mut Core, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let Core { ext, pages, .. } = core;
        let page_size = |p: PageId| pages.get(&p).map(Page::size);
        for e in ext.iter_mut() {
            if e.restore_section(bytes, &page_size)? {
                return Ok(());
            }
        }
        Err(crate::types::error::LogError::Corrupt {
            file: String::new(),
            offset: 0,
            reason: "a checkpoint extension section that no registered extension reads".into(),
        }
        .into())
    }
}

impl Drop for MMSBState {
    fn drop(&mut self) {
        self.close();
    }
}

/// A byte range already checked against a page's size, as `usize`: the page is mapped, so every
/// position in it fits.
fn in_page(start: u64, end: u64) -> std::ops::Range<usize> {
    let fit = |v: u64| usize::try_from(v).expect("at most a mapped page's size (checked by the caller)");
    fit(start)..fit(end)
}
