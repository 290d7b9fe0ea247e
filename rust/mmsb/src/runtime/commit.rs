//! The one entry point of every change: [`MMSBState::commit`] runs a closure with a [`Txn`]
//! under the state's exclusive lock.
//!
//! The entry point owns what every change shares, so no call site writes it out again:
//! the open/writable checks (and the re-entry check), taking and releasing the lock, the route
//! probe's counters, the state extensions' page notices (outside the lock), the durability wait
//! (`tlog_commit`: group commit, then the replication hook) and the shared header's durable
//! LSN. The closure does only what is particular to its change, through the `Txn`: validate,
//! append its record ([`Txn::log`], the one place LSNs are assigned), apply. A route goes
//! through [`Txn::route`], which calls the change observers ([`ChangeObserver`]) around it.
//!
//! Page create/free and every write (`route_batch`, `update_page_at`) are in `runtime/state.rs`,
//! graph edits and propagation in `graph/api.rs`, device syncs in `device/api.rs`; all of them
//! are closures passed to `commit`.

use std::ops::Range;

use crate::monitoring::RouteProbe;
use crate::runtime::events::EventSystem;
use crate::runtime::pagefiles::PageFiles;
use crate::runtime::router::{self, RouteOp};
use crate::runtime::shared::{PendingWrite, SharedWriter};
use crate::runtime::state::{Core, Lsn, MMSBState};
use crate::runtime::tlog::Pending;
use crate::types::error::Result;
use crate::types::page::{Location, PageId};

/// Follows every change under the state's exclusive lock, at fixed points of [`Txn`]:
/// before a change to pages is logged, around the bytes changing, and when a page is created
/// or freed. The known observers are the page files (images before the first change of an
/// interval), the shared header (readers' seqlocks and LSN) and the event hub (`DeltaApplied`).
///
/// They are a fixed list ([`Observers`]) called through this trait with static dispatch
/// rather than a `Vec<Box<dyn …>>`: the route path then pays one branch per absent observer
/// and no indirect call or allocation per delta, which a 64-byte route (about 100 ns) would
/// notice. The two other parties a change reaches are not here: the device layer's dirty
/// ranges are page data marked inside `router::apply` (per delta, in the loop that already
/// holds the page), and replication's `RecordObserver` sees each appended record inside the log.
pub(crate) trait ChangeObserver {
    /// What [`begin_write`](Self::begin_write) hands to [`end_write`](Self::end_write).
    type Write<'w>
    where
        Self: 'w;

    /// Before the record of a change to `pages` is appended. An error refuses the change:
    /// nothing is logged or applied.
    fn before_change(&self, _core: &Core, _pages: impl Iterator<Item = PageId>) -> Result<()> {
        Ok(())
    }

    /// Before a page creation is logged (an error refuses it).
    fn before_create(&self) -> Result<()> {
        Ok(())
    }

    /// After the record is appended, just before the bytes of `ops`' pages change.
    fn begin_write(&self, ops: &[RouteOp<'_>]) -> Self::Write<'_>;

    /// After the bytes changed (LSNs `lsns`, one per op).
    fn end_write(&self, write: Self::Write<'_>, core: &Core, lsns: Range<Lsn>, ops: &[RouteOp<'_>]);

    /// Page `id` of `size` bytes was created at `lsn` (logged, in the registry).
    fn page_created(&self, _id: PageId, _size: u64, _lsn: Lsn) {}

    /// Page `id` was freed at `lsn` (logged, out of the registry).
    fn page_freed(&self, _id: PageId, _lsn: Lsn) {}
}

/// The page files: a page's bytes are imaged before its first change in a checkpoint interval
/// (so recovery never trusts a page file written back early), a freed page's file goes.
impl ChangeObserver for PageFiles {
    type Write<'w> = ();

    fn before_change(&self, core: &Core, pages: impl Iterator<Item = PageId>) -> Result<()> {
        PageFiles::before_change(self, core, pages)
    }

    fn begin_write(&self, _ops: &[RouteOp<'_>]) {}

    fn end_write(&self, _write: (), _core: &Core, _lsns: Range<Lsn>, _ops: &[RouteOp<'_>]) {}

    fn page_created(&self, id: PageId, _size: u64, _lsn: Lsn) {
        self.created(id);
    }

    fn page_freed(&self, id: PageId, _lsn: Lsn) {
        self.remove(id);
    }
}

/// The shared header: readers in other processes see each page's bytes between seqlock
/// reads, and the page table and LSN as they change.
impl ChangeObserver for SharedWriter {
    type Write<'w> = PendingWrite<'w>;

    fn before_create(&self) -> Result<()> {
        self.reserve()
    }

    fn begin_write(&self, ops: &[RouteOp<'_>]) -> PendingWrite<'_> {
        SharedWriter::begin_write(self, ops.iter().map(|o| o.page))
    }

    fn end_write(&self, write: PendingWrite<'_>, core: &Core, lsns: Range<Lsn>, _ops: &[RouteOp<'_>]) {
        SharedWriter::end_write(self, write, core, lsns.end - 1);
    }

    fn page_created(&self, id: PageId, size: u64, lsn: Lsn) {
        self.page_added(id, size, lsn);
    }

    fn page_freed(&self, id: PageId, lsn: Lsn) {
        self.page_removed(id, lsn);
    }
}

/// The event hub: `DeltaApplied` for each routed delta (one atomic load with no subscriber).
impl ChangeObserver for EventSystem {
    type Write<'w> = ();

    fn begin_write(&self, _ops: &[RouteOp<'_>]) {}

    fn end_write(&self, _write: (), core: &Core, lsns: Range<Lsn>, ops: &[RouteOp<'_>]) {
        self.emit_deltas(core, lsns, ops);
    }
}

/// The state's observers, a fixed list in call order (see [`ChangeObserver`] for why fixed):
/// the page files and the shared header when `file_backed_pages` is on (the header is attached
/// during recovery, with the directory's lock held), and the event hub always. Built from the
/// state's fields at each call: borrowing costs nothing and the fields stay where recovery,
/// checkpoints and close use them.
pub(crate) struct Observers<'a> {
    pagefiles: Option<&'a PageFiles>,
    shared: Option<&'a SharedWriter>,
    events: &'a EventSystem,
}

impl<'a> Observers<'a> {
    #[inline]
    fn of(state: &'a MMSBState) -> Observers<'a> {
        Observers { pagefiles: state.pagefiles.as_ref(), shared: state.shared.as_ref(), events: &state.events }
    }

    #[inline]
    fn before_change<I: Iterator<Item = PageId> + Clone>(&self, core: &Core, pages: I) -> Result<()> {
        if let Some(pf) = self.pagefiles {
            ChangeObserver::before_change(pf, core, pages.clone())?;
        }
        if let Some(sh) = self.shared {
            ChangeObserver::before_change(sh, core, pages.clone())?;
        }
        ChangeObserver::before_change(self.events, core, pages)
    }

    #[inline]
    fn before_create(&self) -> Result<()> {
        if let Some(pf) = self.pagefiles {
            ChangeObserver::before_create(pf)?;
        }
        if let Some(sh) = self.shared {
            ChangeObserver::before_create(sh)?;
        }
        ChangeObserver::before_create(self.events)
    }

    #[inline]
    fn page_created(&self, id: PageId, size: u64, lsn: Lsn) {
        if let Some(pf) = self.pagefiles {
            ChangeObserver::page_created(pf, id, size, lsn);
        }
        if let Some(sh) = self.shared {
            ChangeObserver::page_created(sh, id, size, lsn);
        }
        ChangeObserver::page_created(self.events, id, size, lsn);
    }

    #[inline]
    fn page_freed(&self, id: PageId, lsn: Lsn) {
        if let Some(pf) = self.pagefiles {
            ChangeObserver::page_freed(pf, id, lsn);
        }
        if let Some(sh) = self.shared {
            ChangeObserver::page_freed(sh, id, lsn);
        }
        ChangeObserver::page_freed(self.events, id, lsn);
    }
}

/// What a change did that the state extensions (`runtime::extension::StateExtension`) hear of
/// once the lock is released (slow work such as a device mirror must not hold writers up).
#[derive(Clone, Copy)]
enum Notice {
    Created(PageId, Location, u64),
    Freed(PageId),
}

/// One change in progress, under the state's exclusive lock: what the closure passed to
/// [`MMSBState::commit`] may do.
pub(crate) struct Txn<'a> {
    state: &'a MMSBState,
    core: &'a mut Core,
    /// The durability handle of every record appended so far (one wait covers them all: the
    /// log is sequential).
    pending: Pending,
    /// The last LSN assigned, if any.
    last: Option<Lsn>,
    /// The route probe of a caller-facing write (`route_batch`, `update_page_at`); `None`
    /// for the other changes, which the route counters do not count.
    probe: Option<RouteProbe>,
    /// Empty (no allocation) unless a page was created or freed.
    notices: Vec<Notice>,
}

impl<'a> Txn<'a> {
    /// The registry and the extensions' data, to validate against.
    #[inline]
    pub(crate) fn core(&self) -> &Core {
        self.core
    }

    /// The registry and the extensions' data, mutably (an extension's own edit, such as a graph
    /// edge; page bytes change only through [`Txn::route`]).
    #[inline]
    pub(crate) fn core_mut(&mut self) -> &mut Core {
        self.core
    }

    /// Appends the change's log record (`append` writes it with LSNs from `core.next_lsn()`,
    /// `count` of them) and, only once that succeeded, assigns those LSNs: the one place the
    /// LSN advances (recovery sets it to what it replayed). A failed append returns the error
    /// with nothing assigned, so the closure can leave everything unchanged. The same with or
    /// without a log (the append is then a no-op).
    #[inline]
    pub(crate) fn log(
        &mut self,
        count: u64,
        append: impl FnOnce(&MMSBState, &Core) -> Result<Pending>,
    ) -> Result<Range<Lsn>> {
        let pending = append(self.state, self.core)?;
        self.pending.absorb(pending);
        let lsns = self.core.assign_lsns(count);
        self.last = Some(lsns.end - 1);
        Ok(lsns)
    }

    /// Logs an extension record of `kind` (one LSN), for the layers above the runtime.
    pub(crate) fn log_extension(&mut self, kind: u8, body: &[u8]) -> Result<Lsn> {
        self.log(1, |s, c| s.tlog_extension(c, kind, body)).map(|l| l.start)
    }

    /// The one path by which deltas reach pages (routing, `update_page`, propagation, device
    /// syncs): validate everything, let the observers image the pages, log the batch as one
    /// record, apply it between the observers' `begin_write`/`end_write` (the shared header's
    /// seqlocks, `DeltaApplied` events). Nothing changes if validation, an observer or the log
    /// append fails. Returns the LSNs, one per op.
    #[inline]
    pub(crate) fn route(&mut self, ops: &[RouteOp<'_>]) -> Result<Range<Lsn>> {
        router::validate(self.core, ops)?;
        let obs = Observers::of(self.state);
        obs.before_change(self.core, ops.iter().map(|o| o.page))?;
        let lsns = self.log(ops.len() as u64, |s, c| s.tlog_batch(c, ops))?;
        let sh = obs.shared.map(|sh| ChangeObserver::begin_write(sh, ops));
        router::apply(self.core, ops);
        if let (Some(shared), Some(write)) = (obs.shared, sh) {
            ChangeObserver::end_write(shared, write, self.core, lsns.clone(), ops);
        }
        ChangeObserver::end_write(obs.events, (), self.core, lsns.clone(), ops);
        Ok(lsns)
    }

    /// Counts ops on the route probe, for a write that builds its delta under the lock.
    #[inline]
    pub(crate) fn count_route(&mut self, ops: &[RouteOp<'_>]) {
        if let Some(p) = &mut self.probe {
            p.add_ops(ops);
        }
    }

    /// Before a page creation is logged: the observers may refuse it (the shared header
    /// reserves a table slot).
    pub(crate) fn before_create(&mut self) -> Result<()> {
        Observers::of(self.state).before_create()
    }

    /// Before a page free is logged: the observers may refuse it (the page files image it).
    pub(crate) fn before_free(&mut self, id: PageId) -> Result<()> {
        Observers::of(self.state).before_change(self.core, std::iter::once(id))
    }

    /// A page creation was logged at `lsn` and the page is in the registry: the observers
    /// hear of it now, the state extensions after the lock is released.
    pub(crate) fn page_created(&mut self, id: PageId, location: Location, size: u64, lsn: Lsn) {
        Observers::of(self.state).page_created(id, size, lsn);
        self.notices.push(Notice::Created(id, location, size));
    }

    /// A page free was logged at `lsn` and the page left the registry.
    pub(crate) fn page_freed(&mut self, id: PageId, lsn: Lsn) {
        Observers::of(self.state).page_freed(id, lsn);
        self.notices.push(Notice::Freed(id));
    }
}

impl MMSBState {
    /// Runs one change: checks that the state is open and writable (and that this thread is not
    /// inside one of its callbacks), takes the exclusive lock, runs `change`, releases the lock,
    /// tells the state extensions of created and freed pages, waits until every record the
    /// change appended is as durable as the state's durability asks, and publishes that LSN to
    /// readers. A `change` that fails after appending records (a propagation round stopped by
    /// a callback) still gets them waited for; its error is returned.
    #[inline]
    pub(crate) fn commit<R>(&self, change: impl FnOnce(&mut Txn<'_>) -> Result<R>) -> Result<R> {
        self.commit_probed(None, change)
    }

    /// [`MMSBState::commit`] for the caller-facing writes, with their route probe: started
    /// before the lock (its timer and byte sums add nothing to the critical section), its exact
    /// counts published under the lock, its latency recorded after unlock (a budget sink never
    /// runs under the lock). A failed write records nothing.
    #[inline]
    pub(crate) fn commit_probed<R>(
        &self,
        probe: Option<RouteProbe>,
        change: impl FnOnce(&mut Txn<'_>) -> Result<R>,
    ) -> Result<R> {
        self.check_writable()?;
        let mut core = self.core.write();
        self.check_still_open()?;
        let mut txn =
            Txn { state: self, core: &mut core, pending: Pending::NONE, last: None, probe, notices: Vec::new() };
        let out = change(&mut txn);
        let Txn { pending, last, probe, notices, .. } = txn;
        let probe = match (&out, probe) {
            (Ok(_), Some(p)) => {
                p.commit(&mut core.routed, &self.monitor);
                Some(p)
            }
            _ => None,
        };
        drop(core);
        if let Some(p) = probe {
            p.finish(&self.monitor);
        }
        for n in notices {
            for e in &self.extensions {
                match n {
                    Notice::Created(id, location, size) => e.on_page_created(id, location, size),
                    Notice::Freed(id) => e.on_page_freed(id),
                }
            }
        }
        self.tlog_commit(pending)?;
        if let (Some(sh), Some(lsn)) = (&self.shared, last) {
            sh.publish_durable(lsn); // readers may now count on `..=lsn`
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::runtime::state::{Config, MMSBState};
    use crate::types::error::{ErrorCode, PageError};
    use crate::types::page::{Location, PageId, PageMeta};

    fn logged() -> MMSBState {
        MMSBState::open(Config { logging: true, ..Config::default() }).unwrap()
    }

    /// LSNs advance only through `Txn::log`, once per assigned LSN, in the order of the
    /// records; a change that appends nothing takes none.
    #[test]
    fn lsns_advance_only_through_txn_log() {
        let s = logged();
        let before = s.lsn();
        let n = s.commit(|txn| Ok(txn.core().pages.len())).unwrap();
        assert_eq!((n, s.lsn()), (0, before), "a change without a record takes no LSN");
        let (a, b) = s
            .commit(|txn| {
                let a = txn.log_extension(200, b"one")?;
                let b = txn.log_extension(200, b"two")?;
                Ok((a, b))
            })
            .unwrap();
        assert_eq!((a, b, s.lsn()), (before + 1, before + 2, before + 2));
    }

    /// A change that fails after appending keeps what it appended (as a propagation round a
    /// callback stops does): its LSNs stay assigned, its records are in the log, and the
    /// error is the change's.
    #[test]
    fn a_change_failing_after_its_records_keeps_them_and_returns_its_error() {
        let s = logged();
        let err = s
            .commit(|txn| -> crate::types::error::Result<()> {
                txn.log_extension(200, b"kept")?;
                Err(PageError::UnknownPage(PageId(9)).into())
            })
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::UnknownPage);
        assert_eq!(s.lsn(), 1);
        let records: Vec<_> = s.log_records(1..2).unwrap().map(Result::unwrap).collect();
        assert_eq!(records.len(), 1);
    }

    /// The entry point's checks run before the closure: a closed or read-only state refuses
    /// the change without running it.
    #[test]
    fn closed_and_read_only_states_refuse_before_the_closure_runs() {
        let s = logged();
        s.create_page(8, Location::Cpu, PageMeta::default()).unwrap();
        let snap = s.replay_to(1).unwrap();
        let ran = std::cell::Cell::new(false);
        let err = snap
            .commit(|_| -> crate::types::error::Result<()> {
                ran.set(true);
                Ok(())
            })
            .unwrap_err();
        assert_eq!((err.code(), ran.get()), (ErrorCode::ReadOnly, false));
        s.close();
        let err = s
            .commit(|_| -> crate::types::error::Result<()> {
                ran.set(true);
                Ok(())
            })
            .unwrap_err();
        assert_eq!((err.code(), ran.get()), (ErrorCode::Closed, false));
    }
}
