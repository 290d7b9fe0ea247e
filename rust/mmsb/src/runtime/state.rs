//! `MMSBState`: the registry of pages and the entry point for every mutation.
//!
//! All mutations take the state's exclusive lock, get consecutive log sequence numbers (LSNs)
//! and bump the epochs of the pages they touch, so concurrent callers observe one serial order:
//! the LSN order. Reads take the shared lock.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;

use crate::graph::events::EventSystem;
use crate::graph::shadow_graph::ShadowPageGraph;
use crate::runtime::router::{self, RouteOp};
use crate::types::delta::Delta;
use crate::types::error::{Error, PageError, Result, StateError};
use crate::types::page::{Location, Page, PageBuf, PageId, PageInfo, PageMeta, PageView};
use crate::types::IdHasher;

/// A log sequence number: every routed delta gets the next one, starting at 1.
pub type Lsn = u64;

/// How much the transaction log promises about a returned write.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Written to OS buffers: survives a process crash, not a power loss.
    #[default]
    None = 0,
    /// Concurrent writers share one fsync; each returns once its record is on disk.
    GroupCommit = 1,
    /// One fsync per write.
    Always = 2,
}

impl Durability {
    /// Decodes the C ABI representation.
    pub fn from_u32(v: u32) -> Option<Durability> {
        match v {
            0 => Some(Durability::None),
            1 => Some(Durability::GroupCommit),
            2 => Some(Durability::Always),
            _ => None,
        }
    }
}

/// Configuration of a state. The default is a purely in-memory state.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory for the log, checkpoints and file-backed pages; `None` keeps everything in memory.
    pub dir: Option<PathBuf>,
    pub durability: Durability,
    /// Largest page a caller may create.
    pub max_page_size: u64,
    /// Back pages with files in `dir/pages` rather than anonymous memory.
    pub file_backed_pages: bool,
    /// Log size that triggers an automatic checkpoint + compaction (bytes); 0 disables it.
    pub log_size_cap: u64,
    /// Segment size after which the log rolls over to a new file (bytes).
    pub segment_size: u64,
    /// Keep replaying past a corrupt record in the middle of the log (skipping to the next valid
    /// segment) instead of failing the open.
    pub tolerant_recovery: bool,
    /// Ask the device layer to initialise a GPU context if one is present.
    pub gpu: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            dir: None,
            durability: Durability::None,
            max_page_size: 1 << 32,
            file_backed_pages: false,
            log_size_cap: 0,
            segment_size: 64 << 20,
            tolerant_recovery: false,
            gpu: false,
        }
    }
}

/// The mutable core, guarded by the state's lock.
#[derive(Debug, Default)]
pub(crate) struct Core {
    pub(crate) pages: HashMap<PageId, Page, IdHasher>,
    pub(crate) next_page_id: u64,
    pub(crate) lsn: Lsn,
    /// The ShadowPageGraph (graph/): edges between pages, edited under this lock.
    pub(crate) graph: ShadowPageGraph,
}

/// A page-aligned state fabric: pages, the delta router and (with a directory) the log.
#[derive(Debug)]
pub struct MMSBState {
    pub(crate) core: RwLock<Core>,
    closed: AtomicBool,
    read_only: bool,
    config: Config,
    /// Event subscriptions (graph/events.rs); outside the lock so emitting needs no lock.
    pub(crate) events: EventSystem,
}

impl MMSBState {
    /// Starts a state (`mmsb_start`). With `config.dir`, recovers what the directory holds.
    pub fn open(config: Config) -> Result<MMSBState> {
        if config.max_page_size == 0 {
            return Err(StateError::InvalidConfig("max_page_size must be positive".into()).into());
        }
        Ok(MMSBState {
            core: RwLock::new(Core { next_page_id: 1, ..Core::default() }),
            closed: AtomicBool::new(false),
            read_only: false,
            config,
            events: EventSystem::default(),
        })
    }

    /// An in-memory state with the default configuration.
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
        let mut core = self.core.write();
        self.closed.store(true, Ordering::Release);
        core.pages.clear();
        // GRAPH HOOK: subscriptions learn that no more events will come.
        self.events.close();
    }

    fn check_open(&self) -> Result<()> {
        if self.is_closed() {
            return Err(StateError::Closed.into());
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<()> {
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
        if meta.name.contains('\0') {
            return Err(PageError::InvalidName("names may not contain NUL".into()).into());
        }
        // Allocate before taking the lock: mapping memory may be slow.
        let buf = self.allocate(size)?;
        let mut core = self.core.write();
        self.check_open()?;
        let id = PageId(core.next_page_id);
        core.next_page_id += 1;
        core.pages.insert(id, Page::new(id, location, meta, buf));
        Ok(id)
    }

    fn allocate(&self, size: u64) -> Result<PageBuf> {
        Ok(PageBuf::anonymous(size)?)
    }

    /// Removes a page. Views of it stay readable until dropped.
    pub fn free_page(&self, id: PageId) -> Result<()> {
        self.check_writable()?;
        let mut core = self.core.write();
        self.check_open()?;
        // GRAPH HOOK: a page with dependency edges cannot be freed (remove the edges first).
        if core.graph.contains(id) {
            return Err(PageError::InUse { page: id, reason: "it has dependency edges".into() }.into());
        }
        core.pages.remove(&id).ok_or(PageError::UnknownPage(id))?;
        Ok(())
    }

    /// Routes one delta; returns its LSN. With `expected_epoch`, the write happens only if the
    /// page's epoch still equals it (compare-and-set); otherwise nothing changes.
    pub fn route_delta(&self, page: PageId, delta: &Delta, expected_epoch: Option<u64>) -> Result<Lsn> {
        self.route_batch(&[RouteOp { page, delta, expected_epoch }]).map(|r| r.end - 1)
    }

    /// Routes a batch atomically under one lock: either every delta applies, in order, or none.
    /// Returns the LSNs assigned (`start..end`, empty for an empty batch).
    pub fn route_batch(&self, ops: &[RouteOp<'_>]) -> Result<std::ops::Range<Lsn>> {
        self.check_writable()?;
        let mut core = self.core.write();
        self.check_open()?;
        router::validate(&core, ops)?;
        let lsns = router::apply(&mut core, ops);
        // EVENT HOOK (graph): DeltaApplied for each routed delta; one atomic load with no subscriber.
        self.events.emit_deltas(&core, lsns.clone(), ops);
        Ok(lsns)
    }

    /// Writes `bytes` at offset 0 as the smallest delta from the page's current bytes.
    /// `bytes` may be shorter than the page (the rest is unchanged).
    pub fn update_page(&self, page: PageId, bytes: &[u8]) -> Result<Lsn> {
        self.update_page_at(page, 0, bytes, None)
    }

    /// Writes `bytes` at `offset` as the smallest delta from the current bytes (a no-op write
    /// still takes an LSN and an epoch, so callers can sequence on it).
    pub fn update_page_at(&self, page: PageId, offset: u64, bytes: &[u8], expected_epoch: Option<u64>) -> Result<Lsn> {
        self.check_writable()?;
        let mut core = self.core.write();
        self.check_open()?;
        let p = core.pages.get(&page).ok_or(PageError::UnknownPage(page))?;
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
        let current = unsafe { &p.buf().as_slice()[offset as usize..end as usize] };
        let delta = Delta::diff_at(offset, current, bytes)?;
        let ops = [RouteOp { page, delta: &delta, expected_epoch }];
        router::validate(&core, &ops)?;
        let lsns = router::apply(&mut core, &ops);
        // EVENT HOOK (graph): same as route_batch (this path bypasses it).
        self.events.emit_deltas(&core, lsns.clone(), &ops);
        Ok(lsns.start)
    }

    /// A consistent copy of the page's bytes.
    pub fn read_page(&self, page: PageId) -> Result<Vec<u8>> {
        self.check_open()?;
        let core = self.core.read();
        self.check_open()?;
        let p = core.pages.get(&page).ok_or(PageError::UnknownPage(page))?;
        Ok(p.buf().to_vec())
    }

    /// Copies `out.len()` bytes starting at `offset` into `out`.
    pub fn read_into(&self, page: PageId, offset: u64, out: &mut [u8]) -> Result<()> {
        self.check_open()?;
        let core = self.core.read();
        self.check_open()?;
        let p = core.pages.get(&page).ok_or(PageError::UnknownPage(page))?;
        let end = offset.checked_add(out.len() as u64).filter(|&e| e <= p.size()).ok_or(
            crate::types::error::DeltaError::OutOfBounds { offset, len: out.len() as u64, page_size: p.size() },
        )?;
        // SAFETY: the shared lock excludes writers while we copy.
        out.copy_from_slice(unsafe { &p.buf().as_slice()[offset as usize..end as usize] });
        Ok(())
    }

    /// Runs `f` on the page's bytes under the shared lock (no copy).
    pub fn with_page<R>(&self, page: PageId, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.check_open()?;
        let core = self.core.read();
        self.check_open()?;
        let p = core.pages.get(&page).ok_or(PageError::UnknownPage(page))?;
        // SAFETY: the shared lock is held for the whole borrow, excluding writers.
        Ok(f(unsafe { p.buf().as_slice() }))
    }

    /// A zero-copy view that keeps the page's memory alive (see [`PageView`]).
    pub fn view(&self, page: PageId) -> Result<PageView> {
        self.check_open()?;
        let core = self.core.read();
        self.check_open()?;
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

    /// The last LSN assigned (0 before the first delta).
    pub fn lsn(&self) -> Lsn {
        self.core.read().lsn
    }
}

impl Drop for MMSBState {
    fn drop(&mut self) {
        self.close();
    }
}

/// Convenience: converts any domain error into the crate error (for `?` in closures).
pub(crate) fn _into_error<E: Into<Error>>(e: E) -> Error {
    e.into()
}
