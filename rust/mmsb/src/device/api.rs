//! `MMSBState` methods of the device layer: syncs, kernel application, status and counters.
//!
//! Every change a sync makes (the delta a device→host sync routes, `apply_on_device`'s delta,
//! the sync's own record) is a closure passed to the state's commit entry point
//! (`runtime/commit.rs`), like every other change.
//!
//! Lock order: the device manager's lock, then the state's core lock (never the reverse; the
//! router only touches `Page::dirty`, under the core lock).

use std::sync::atomic::Ordering;

use crate::device::plan::{CopyOp, SyncCommand, SyncDirection};
use crate::device::record::{encode_sync_record, DeviceSyncRecord, DEVICE_SYNC_RECORD_VERSION};
use crate::device::{CommandBuffer, DeviceStats, DeviceStatus, Slot};
use crate::runtime::state::{Lsn, MMSBState};
use crate::types::delta::Delta;
use crate::types::error::{DeviceError, PageError, Result, StateError};
use crate::types::page::PageId;

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// (page, direction) pairs synced.
    pub syncs: u64,
    /// Copies issued (one per dirty range moved).
    pub copies: u64,
    /// Bytes copied host → device.
    pub bytes_h2d: u64,
    /// Bytes copied device → host.
    pub bytes_d2h: u64,
    /// LSNs of the deltas that device→host syncs routed (pages whose bytes differed).
    pub delta_lsns: Vec<Lsn>,
}

/// The device side of one page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageDeviceStatus {
    /// A CPU page: no mirror by design.
    CpuPage,
    /// Mirrored on the GPU (`unified`: managed memory).
    Mirrored {
        /// The mirror is CUDA managed (unified) memory.
        unified: bool,
    },
    /// A GPU or unified page without a mirror, and why.
    CpuOnly {
        /// Why the page has no mirror.
        reason: String,
    },
}

impl MMSBState {
    fn device_check(&self, write: bool) -> Result<()> {
        if self.is_closed() {
            return Err(StateError::Closed.into());
        }
        if write && self.is_read_only() {
            return Err(StateError::ReadOnly.into());
        }
        Ok(())
    }

    /// Whether this state uses a GPU: the process's detected device, or why none is used
    /// (no driver or device, or `Config::gpu` off).
    pub fn device_status(&self) -> DeviceStatus {
        match &self.device_manager().disabled {
            Some(reason) => DeviceStatus::Unavailable { reason: reason.clone() },
            None => crate::device::device_status().clone(),
        }
    }

    /// Counters of the device layer.
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    pub fn device_stats(&self) -> DeviceStats {
        let inner = self.device_manager().inner.lock();
        let core = self.core.read();
        let mut s = DeviceStats {
            syncs: self.device_manager().counters.syncs.load(Ordering::Relaxed),
            bytes_h2d: self.device_manager().counters.bytes_h2d.load(Ordering::Relaxed),
            bytes_d2h: self.device_manager().counters.bytes_d2h.load(Ordering::Relaxed),
            kernels_launched: self.device_manager().counters.kernels.load(Ordering::Relaxed),
            ..DeviceStats::default()
        };
        for (id, slot) in &inner.slots {
            match slot {
                Slot::CpuOnly { .. } => s.cpu_only_pages += 1,
                #[cfg(feature = "cuda")]
                Slot::Mirror(_) => {
                    s.mirrors += 1;
                    s.dirty_bytes_pending += core.pages.get(id).and_then(|p| p.dirty.as_ref()).map_or(0, |d| d.bytes());
                }
            }
        }
        s
    }

    /// The device side of `page`.
    pub fn device_page_status(&self, page: PageId) -> Result<PageDeviceStatus> {
        self.device_check(false)?;
        let inner = self.device_manager().inner.lock();
        match inner.slots.get(&page) {
            Some(Slot::CpuOnly { reason }) => Ok(PageDeviceStatus::CpuOnly { reason: reason.clone() }),
            #[cfg(feature = "cuda")]
            Some(Slot::Mirror(m)) => {
                Ok(PageDeviceStatus::Mirrored { unified: matches!(m, crate::device::cuda::Mirror::Unified { .. }) })
            }
            None => {
                self.page_info(page)?;
                Ok(PageDeviceStatus::CpuPage)
            }
        }
    }

    /// The byte ranges of `page` changed on the CPU since its last host→device sync (empty for
    /// CPU pages, which are not tracked).
    pub fn dirty_ranges(&self, page: PageId) -> Result<Vec<(u64, u64)>> {
        self.device_check(false)?;
        let core = self.core.read();
        let p = core.pages.get(&page).ok_or(PageError::UnknownPage(page))?;
        Ok(p.dirty.as_ref().map_or_else(Vec::new, |d| d.ranges().to_vec()))
    }

    /// A copy of `page`'s device mirror (synchronous; for checks and tools). Fails with
    /// `NoDevice` when the page has no mirror.
    pub fn read_mirror(&self, page: PageId) -> Result<Vec<u8>> {
        self.device_check(false)?;
        let inner = self.device_manager().inner.lock();
        self.require_mirror(&inner, page)?;
        #[cfg(feature = "cuda")]
        if let Some(Slot::Mirror(m)) = inner.slots.get(&page) {
            let g = crate::device::gpu().map_err(|e| DeviceError::NoDevice(e.to_string()))?;
            return Ok(g.read_mirror(m)?);
        }
        Err(DeviceError::NoDevice("no mirror".into()).into())
    }

    /// This state's `DeviceManager`: a state extension (`runtime::extension`) that
    /// `crate::compose` registers with every state, so it is always there.
    pub(crate) fn device_manager(&self) -> &crate::device::DeviceManager {
        self.state_extension::<crate::device::DeviceManager>()
            .expect("the composition root (compose.rs) registers a DeviceManager with every state")
    }

    /// Hook for pages that come into being other than through `create_page` (recovery, replay,
    /// checkpoint load): gives a GPU or unified page its mirror (or records why not) and marks
    /// the whole page dirty, since a new mirror is zeroed but the page's bytes may not be.
    /// Attaches mirrors to every non-CPU page that recovery put in the registry.
    pub(crate) fn device_adopt_recovered(&self) -> Result<()> {
        let pages: Vec<PageId> = {
            let core = self.core.read();
            let mut v: Vec<PageId> =
                core.pages.values().filter(|p| p.location != crate::types::page::Location::Cpu).map(|p| p.id).collect();
            v.sort_unstable();
            v
        };
        pages.into_iter().try_for_each(|p| self.device_adopt_page(p))
    }

    /// Called once per page materialized by recovery, after it is in the registry.
    pub(crate) fn device_adopt_page(&self, page: PageId) -> Result<()> {
        let info = self.page_info(page)?;
        self.device_manager().on_page_created(page, info.location, info.size);
        if let Some(d) = self.core.write().pages.get_mut(&page).and_then(|p| p.dirty.as_mut()) {
            d.mark(0, info.size);
        }
        Ok(())
    }

    /// Encoded DeviceSync records not yet taken (oldest first). Until the transaction log
    /// takes them through its extension-record hook, they wait here (bounded).
    pub fn take_device_sync_records(&self) -> Vec<Vec<u8>> {
        self.device_manager().journal.lock().drain(..).collect()
    }

    /// Syncs one page: host→device pushes its dirty ranges; device→host pulls the whole mirror
    /// and routes the bytes that differ as a delta. Fails with `NoDevice` for a GPU or unified
    /// page that has no mirror, and with an invalid argument for a CPU page.
    pub fn sync_device(&self, page: PageId, direction: SyncDirection) -> Result<SyncReport> {
        self.device_check(direction == SyncDirection::DeviceToHost)?;
        let ranges = match direction {
            SyncDirection::HostToDevice => {
                let r = self.dirty_ranges(page)?;
                if r.is_empty() {
                    // Nothing to push, but the page must still be a mirrored one.
                    self.require_mirror(&self.device_manager().inner.lock(), page)?;
                    return Ok(SyncReport::default());
                }
                r
            }
            SyncDirection::DeviceToHost => Vec::new(),
        };
        let mut buf = CommandBuffer::new();
        buf.push(SyncCommand { page, direction, ranges });
        self.submit_sync(&buf)
    }

    /// Syncs every mirrored page in `direction` (host→device: the dirty ones). Without a GPU
    /// there is nothing to sync and the report is empty.
    pub fn sync_all(&self, direction: SyncDirection) -> Result<SyncReport> {
        self.device_check(direction == SyncDirection::DeviceToHost)?;
        let mut buf = CommandBuffer::new();
        {
            let inner = self.device_manager().inner.lock();
            let core = self.core.read();
            let mut ids: Vec<PageId> =
                inner.slots.iter().filter(|(_, s)| !matches!(s, Slot::CpuOnly { .. })).map(|(id, _)| *id).collect();
            ids.sort_unstable();
            for page in ids {
                let Some(p) = core.pages.get(&page) else { continue };
                let ranges = match direction {
                    SyncDirection::HostToDevice => match &p.dirty {
                        Some(d) if !d.is_empty() => d.ranges().to_vec(),
                        _ => continue,
                    },
                    SyncDirection::DeviceToHost => Vec::new(),
                };
                buf.push(SyncCommand { page, direction, ranges });
            }
        }
        self.submit_sync(&buf)
    }

    fn require_mirror(&self, inner: &crate::device::Inner, page: PageId) -> Result<()> {
        match inner.slots.get(&page) {
            Some(Slot::CpuOnly { reason }) => Err(DeviceError::NoDevice(reason.clone()).into()),
            #[cfg(feature = "cuda")]
            Some(Slot::Mirror(_)) => Ok(()),
            None => {
                self.page_info(page)?;
                Err(DeviceError::Invalid(format!("page {page} is a CPU page and has no device mirror")).into())
            }
        }
    }

    /// Plans and runs a command buffer of sync intentions (see [`crate::device::plan`]). Every
    /// page named must have a mirror. Returns once every doorbell has rung; only then are the
    /// syncs recorded.
    #[cfg_attr(not(feature = "cuda"), allow(unused_mut))]
    pub fn submit_sync(&self, buf: &CommandBuffer) -> Result<SyncReport> {
        // Host→device changes no CPU byte, so read-only snapshots may push; pulling routes deltas.
        self.device_check(buf.commands().iter().any(|c| c.direction == SyncDirection::DeviceToHost))?;
        if buf.is_empty() {
            return Ok(SyncReport::default());
        }
        let mut inner = self.device_manager().inner.lock();
        for c in buf.commands() {
            self.require_mirror(&inner, c.page)?;
        }
        #[cfg(feature = "cuda")]
        {
            let timer = self.monitor.start(crate::monitoring::Metric::DeviceSync);
            let report = self.run_sync(&mut inner, buf.commands())?;
            timer.stop(&self.monitor);
            Ok(report)
        }
        #[cfg(not(feature = "cuda"))]
        {
            // require_mirror fails first: without the feature no page has a mirror.
            drop(inner);
            Err(DeviceError::NoDevice("built without the `cuda` feature".into()).into())
        }
    }

    /// Routes `delta` to `page` like [`MMSBState::route_delta`] and, when the page has a mirror,
    /// applies it there too with a delta kernel, so the mirror needs no copy of those bytes.
    /// Pages without a mirror just get the CPU write.
    pub fn apply_on_device(&self, page: PageId, delta: &Delta, expected_epoch: Option<u64>) -> Result<Lsn> {
        self.device_check(true)?;
        #[cfg(feature = "cuda")]
        {
            let mut inner = self.device_manager().inner.lock();
            if let Some(Slot::Mirror(m)) = inner.slots.get_mut(&page) {
                return self.apply_on_mirror(m, page, delta, expected_epoch);
            }
        }
        self.route_delta(page, delta, expected_epoch)
    }

    /// Records a completed sync (called once per (page, direction), only after its doorbell
    /// rang): the sync takes an LSN like every other change, with or without a log
    /// (docs/log-format.md), written as an extension record when the state has a log; and it
    /// goes into the bounded in-memory journal. Returns false, having recorded nothing, when
    /// the state was closed first; the caller then leaves the sync out of its counts too.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    fn log_device_sync(&self, rec: &DeviceSyncRecord) -> bool {
        // A sync that finishes after `close` records nothing: the state's log is gone, and an
        // LSN taken now would be one no log holds.
        if self.is_closed() {
            return false;
        }
        self.events.emit(crate::types::event::Event::DeviceSync { page: rec.page, direction: rec.direction });
        let body = encode_sync_record(rec);
        let kind = crate::runtime::tlog::ext_kind::DEVICE_SYNC;
        match self.commit(|txn| txn.log_extension(kind, &body)) {
            Ok(_) => {}
            // Closed meanwhile (the commit entry point checks again under the lock, where
            // `close` sets the flag): nothing was recorded.
            Err(e) if e.code() == crate::types::error::ErrorCode::Closed => return false,
            Err(e) => self.device_manager().note_log_failure(e.to_string()),
        }
        self.device_manager().journal_push(body);
        true
    }

    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    fn finish_sync(
        &self,
        report: &mut SyncReport,
        copies: &[&CopyOp],
        epoch_and_lsn: impl Fn(PageId) -> (u64, Option<Lsn>),
    ) {
        let c = &self.device_manager().counters;
        let mut i = 0;
        while i < copies.len() {
            let (page, direction) = (copies[i].page, copies[i].direction);
            let group: Vec<&CopyOp> =
                copies[i..].iter().take_while(|o| o.page == page && o.direction == direction).copied().collect();
            i += group.len();
            let bytes: u64 = group.iter().map(|o| o.len).sum();
            let (epoch, delta_lsn) = epoch_and_lsn(page);
            let recorded = self.log_device_sync(&DeviceSyncRecord {
                version: DEVICE_SYNC_RECORD_VERSION,
                page,
                direction,
                epoch,
                delta_lsn,
                copies: group.iter().map(|o| (o.offset, o.len)).collect(),
                bytes,
            });
            if !recorded {
                continue; // closed meanwhile: the sync is not the state's any more
            }
            report.syncs += 1;
            report.copies += group.len() as u64;
            crate::device::Counters::add(&c.syncs, 1);
            match direction {
                SyncDirection::HostToDevice => {
                    report.bytes_h2d += bytes;
                    crate::device::Counters::add(&c.bytes_h2d, bytes);
                }
                SyncDirection::DeviceToHost => {
                    report.bytes_d2h += bytes;
                    crate::device::Counters::add(&c.bytes_d2h, bytes);
                }
            }
        }
    }
}

#[cfg(feature = "cuda")]
mod gpu_impl {
    use std::collections::HashMap;

    use super::*;
    use crate::device::cuda::{Gpu, Mirror, Staging};
    use crate::device::kernels::KernelArgs;
    use crate::device::plan;
    use crate::device::Inner;
    use crate::runtime::router::{self, RouteOp};
    use crate::types::IdHasher;

    fn mirror_of(slots: &mut HashMap<PageId, Slot, IdHasher>, page: PageId) -> Result<&mut Mirror> {
        match slots.get_mut(&page) {
            Some(Slot::Mirror(m)) => Ok(m),
            _ => Err(DeviceError::Invalid(format!("page {page} lost its mirror during a sync")).into()),
        }
    }

    /// Host→device copies are staged and enqueued in chunks of this size.
    const STAGE_CHUNK: usize = 4 << 20;

    /// Copies of at least this many bytes are staged by several threads.
    const PARALLEL_STAGE_MIN: usize = 8 << 20;

    /// Copies `src` into the pinned `slot` and enqueues the DMA of each chunk as soon as it is
    /// staged, so staging and the bus overlap. Large copies are staged by worker threads (one
    /// core cannot fill pinned memory as fast as PCIe drains it); the calling thread enqueues.
    fn stage_and_upload(g: &Gpu, m: &mut Mirror, offset: usize, slot: &mut [u8], src: &[u8]) -> Result<()> {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
        if src.len() < PARALLEL_STAGE_MIN || workers < 2 {
            for (k, (dst, s)) in slot.chunks_mut(STAGE_CHUNK).zip(src.chunks(STAGE_CHUNK)).enumerate() {
                dst.copy_from_slice(s);
                g.upload(m, offset + k * STAGE_CHUNK, dst)?;
            }
            return Ok(());
        }
        // Per worker: (chunk index, pinned destination, source bytes).
        type Share<'a> = Vec<(usize, &'a mut [u8], &'a [u8])>;
        let mut shares: Vec<Share<'_>> = (0..workers).map(|_| Vec::new()).collect();
        for (k, (dst, s)) in slot.chunks_mut(STAGE_CHUNK).zip(src.chunks(STAGE_CHUNK)).enumerate() {
            shares[k % workers].push((k, dst, s));
        }
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::channel::<(usize, &[u8])>();
            for share in shares {
                let tx = tx.clone();
                scope.spawn(move || {
                    for (k, dst, s) in share {
                        dst.copy_from_slice(s);
                        let staged: &[u8] = dst;
                        if tx.send((k, staged)).is_err() {
                            return; // the enqueuer failed; stop staging
                        }
                    }
                });
            }
            drop(tx);
            for (k, staged) in rx {
                g.upload(m, offset + k * STAGE_CHUNK, staged)?;
            }
            Ok(())
        })
    }

    fn range(o: &CopyOp) -> std::ops::Range<usize> {
        o.offset as usize..(o.offset + o.len) as usize
    }

    fn staged(o: &CopyOp) -> std::ops::Range<usize> {
        o.staging_offset as usize..(o.staging_offset + o.len) as usize
    }

    impl MMSBState {
        pub(super) fn run_sync(&self, inner: &mut Inner, cmds: &[SyncCommand]) -> Result<SyncReport> {
            let g = crate::device::gpu().map_err(|e| DeviceError::NoDevice(e.to_string()))?;
            let plan = {
                let core = self.core.read();
                plan::plan(cmds, |p| core.pages.get(&p).map(|pg| pg.size()), &self.device_manager().planner)?
            };
            let mut report = SyncReport::default();
            let Inner { slots, upload, readback } = inner;

            // Host → device: under the core lock, stage the bytes in pinned memory and enqueue each
            // chunk's DMA as soon as it is staged (staging the next chunk overlaps it); the lock
            // is released before waiting for the doorbell.
            let h2d: Vec<&CopyOp> = plan.copies.iter().filter(|c| c.direction == SyncDirection::HostToDevice).collect();
            if !h2d.is_empty() {
                let stage = upload.get_or_insert_with(Staging::for_upload).get(g, plan.staging_h2d as usize)?;
                let mut epochs: HashMap<PageId, u64, IdHasher> = HashMap::default();
                let sent = (|| -> Result<()> {
                    {
                        let mut core = self.core.write();
                        self.device_check(false)?;
                        for c in &h2d {
                            let p = core.pages.get_mut(&c.page).ok_or(PageError::UnknownPage(c.page))?;
                            // SAFETY: we hold the exclusive core lock; the borrow ends before any write.
                            let src = unsafe { &p.buf().as_slice()[range(c)] };
                            match mirror_of(slots, c.page)? {
                                m @ Mirror::Unified { .. } => g.upload(m, c.offset as usize, src)?,
                                m @ Mirror::Device(_) => {
                                    stage_and_upload(g, m, c.offset as usize, &mut stage[staged(c)], src)?
                                }
                            }
                            if let Some(d) = p.dirty.as_mut() {
                                d.subtract(c.offset, c.offset + c.len);
                            }
                            epochs.insert(c.page, p.epoch);
                        }
                    }
                    for c in &h2d {
                        g.prefetch(mirror_of(slots, c.page)?)?;
                    }
                    Ok(g.doorbell_copy()?.wait()?)
                })();
                if let Err(e) = sent {
                    g.drain();
                    // The mirror may have missed these bytes: mark them dirty again.
                    let mut core = self.core.write();
                    for c in &h2d {
                        if let Some(d) = core.pages.get_mut(&c.page).and_then(|p| p.dirty.as_mut()) {
                            d.mark(c.offset, c.offset + c.len);
                        }
                    }
                    return Err(e);
                }
                self.finish_sync(&mut report, &h2d, |p| (epochs.get(&p).copied().unwrap_or(0), None));
            }

            // Device → host: copy into staging, wait, then route what differs.
            let d2h: Vec<&CopyOp> = plan.copies.iter().filter(|c| c.direction == SyncDirection::DeviceToHost).collect();
            if !d2h.is_empty() {
                let stage = readback.get_or_insert_with(Staging::for_readback).get(g, plan.staging_d2h as usize)?;
                for c in &d2h {
                    if let m @ Mirror::Device(_) = mirror_of(slots, c.page)? {
                        g.download(m, c.offset as usize, &mut stage[staged(c)])?;
                    }
                }
                if let Err(e) = g.doorbell_readback().and_then(|b| b.wait()) {
                    g.drain();
                    return Err(e.into());
                }
                for c in &d2h {
                    if let m @ Mirror::Unified { .. } = mirror_of(slots, c.page)? {
                        g.download(m, c.offset as usize, &mut stage[staged(c)])?;
                    }
                }
                let mut results: HashMap<PageId, (u64, Option<Lsn>), IdHasher> = HashMap::default();
                self.commit(|txn| {
                    let mut i = 0;
                    while i < d2h.len() {
                        let page = d2h[i].page;
                        let group: Vec<&CopyOp> = d2h[i..].iter().take_while(|o| o.page == page).copied().collect();
                        i += group.len();
                        let p = txn.core().pages.get(&page).ok_or(PageError::UnknownPage(page))?;
                        let mut delta = Delta::empty();
                        for c in &group {
                            for &(s, e) in &c.parts {
                                // SAFETY: exclusive core lock held; the borrow ends before routing.
                                let cpu = unsafe { &p.buf().as_slice()[s as usize..e as usize] };
                                let at = (c.staging_offset + (s - c.offset)) as usize;
                                let dev = &stage[at..at + (e - s) as usize];
                                delta = delta.compose(&Delta::diff_at(s, cpu, dev)?);
                            }
                        }
                        let lsn = if delta.is_empty() {
                            None
                        } else {
                            Some(txn.route(&[RouteOp { page, delta: &delta, expected_epoch: None }])?.start)
                        };
                        let p = txn.core_mut().pages.get_mut(&page).ok_or(PageError::UnknownPage(page))?;
                        // Both sides now hold the device's bytes over the requested ranges.
                        if let Some(d) = p.dirty.as_mut() {
                            for c in &group {
                                for &(s, e) in &c.parts {
                                    d.subtract(s, e);
                                }
                            }
                        }
                        results.insert(page, (p.epoch, lsn));
                        report.delta_lsns.extend(lsn);
                    }
                    Ok(())
                })?;
                self.finish_sync(&mut report, &d2h, |p| results.get(&p).copied().unwrap_or((0, None)));
            }
            Ok(report)
        }

        pub(super) fn apply_on_mirror(
            &self,
            m: &mut Mirror,
            page: PageId,
            delta: &Delta,
            expected_epoch: Option<u64>,
        ) -> Result<Lsn> {
            let g = crate::device::gpu().map_err(|e| DeviceError::NoDevice(e.to_string()))?;
            let args = KernelArgs::from_delta(delta);
            let lsn = self.commit(|txn| {
                let ops = [RouteOp { page, delta, expected_epoch }];
                router::validate(txn.core(), &ops)?;
                if m.len() as u64 != txn.core().pages.get(&page).map_or(0, |p| p.size()) {
                    return Err(DeviceError::Invalid(format!("mirror of page {page} has the wrong size")).into());
                }
                // The CPU copy is canonical: log and apply there first (the router marks the bytes
                // dirty); the kernel then clears them. A failed launch leaves them dirty for sync.
                let lsn = txn.route(&ops)?.start;
                if let Some(a) = &args {
                    g.launch_delta(m, a)?;
                }
                if args.is_some() {
                    if let Some(d) = txn.core_mut().pages.get_mut(&page).and_then(|p| p.dirty.as_mut()) {
                        // The kernel wrote exactly these bytes on the device: not dirty.
                        delta.for_each_run(|o, b| d.subtract(o, o + b.len() as u64));
                    }
                }
                Ok(lsn)
            })?;
            if args.is_some() {
                if let Err(e) = g.doorbell_copy().and_then(|b| b.wait()) {
                    if let Some(d) = self.core.write().pages.get_mut(&page).and_then(|p| p.dirty.as_mut()) {
                        d.mark_delta(delta);
                    }
                    return Err(e.into());
                }
                crate::device::Counters::add(&self.device_manager().counters.kernels, 1);
            }
            Ok(lsn)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::page::{Location, PageMeta};
    use crate::Config;

    fn no_gpu_state() -> MMSBState {
        MMSBState::open(Config { gpu: false, ..Config::default() }).unwrap()
    }

    /// A device sync takes one LSN whether or not the state has a log (as graph edits and
    /// every other change do; docs/log-format.md), and with a log it is that LSN's record.
    #[test]
    fn a_device_sync_takes_one_lsn_with_or_without_a_log() {
        for logging in [false, true] {
            let s = MMSBState::open(Config { gpu: false, logging, ..Config::default() }).unwrap();
            let page = s.create_page(64, Location::Gpu, PageMeta::default()).unwrap();
            let before = s.lsn();
            let rec = DeviceSyncRecord {
                version: DEVICE_SYNC_RECORD_VERSION,
                page,
                direction: SyncDirection::HostToDevice,
                epoch: 0,
                delta_lsn: None,
                copies: vec![(0, 64)],
                bytes: 64,
            };
            s.log_device_sync(&rec);
            assert_eq!(s.lsn(), before + 1, "logging: {logging}");
            assert_eq!(s.take_device_sync_records(), vec![encode_sync_record(&rec)]);
            if logging {
                let recs: Vec<_> = s.log_records(before + 1..before + 2).unwrap().map(Result::unwrap).collect();
                let want = crate::runtime::tlog::LogOp::Extension {
                    kind: crate::runtime::tlog::ext_kind::DEVICE_SYNC,
                    body: encode_sync_record(&rec),
                };
                assert_eq!((recs.len(), &recs[0].op), (1, &want));
            }
            // The next change follows on without a gap.
            let lsn = s.route_delta(page, &Delta::write(0, b"z").unwrap(), None).unwrap();
            assert_eq!(lsn, before + 2);
        }
    }

    /// A sync that completes after `close` is not counted either: not in the caller's
    /// `SyncReport`, not in the device counters (it used to be, while taking no LSN).
    #[test]
    fn a_device_sync_after_close_is_not_counted() {
        let s = no_gpu_state();
        let page = s.create_page(64, Location::Gpu, PageMeta::default()).unwrap();
        let copy = |direction| CopyOp { page, direction, offset: 0, len: 64, staging_offset: 0, parts: vec![(0, 64)] };
        let (h2d, d2h) = (copy(SyncDirection::HostToDevice), copy(SyncDirection::DeviceToHost));
        // Open, the same call counts both directions: the check below can fail.
        let mut open = SyncReport::default();
        s.finish_sync(&mut open, &[&h2d, &d2h], |_| (0, None));
        assert_eq!((open.syncs, open.bytes_h2d, open.bytes_d2h), (2, 64, 64));
        let counted = s.device_stats();
        assert_eq!(counted.syncs, 2);
        s.close();
        let mut report = SyncReport::default();
        s.finish_sync(&mut report, &[&h2d, &d2h], |_| (0, None));
        assert_eq!((report.syncs, report.copies, report.bytes_h2d, report.bytes_d2h), (0, 0, 0, 0));
        let after = s.device_stats();
        assert_eq!((after.syncs, after.bytes_h2d, after.bytes_d2h), (2, 64, 64));
    }

    /// A device sync that completes after `close` is a no-op: no LSN, no journal record, no
    /// log failure, with or without a log.
    #[test]
    fn a_device_sync_after_close_takes_no_lsn() {
        for logging in [false, true] {
            let s = MMSBState::open(Config { gpu: false, logging, ..Config::default() }).unwrap();
            let page = s.create_page(64, Location::Gpu, PageMeta::default()).unwrap();
            s.close();
            let closed_at = s.lsn();
            s.log_device_sync(&DeviceSyncRecord {
                version: DEVICE_SYNC_RECORD_VERSION,
                page,
                direction: SyncDirection::DeviceToHost,
                epoch: 0,
                delta_lsn: None,
                copies: vec![(0, 64)],
                bytes: 64,
            });
            assert_eq!(s.lsn(), closed_at, "logging: {logging}");
            assert!(s.take_device_sync_records().is_empty(), "logging: {logging}");
            assert_eq!(s.device_manager().last_log_failure(), None, "logging: {logging}");
        }
    }

    #[test]
    fn router_marks_dirty_for_device_pages_only() {
        let s = no_gpu_state();
        let cpu = s.create_page(4096, Location::Cpu, PageMeta::default()).unwrap();
        let gpu = s.create_page(4096, Location::Gpu, PageMeta::default()).unwrap();
        for p in [cpu, gpu] {
            s.route_delta(p, &Delta::write(10, b"abc").unwrap(), None).unwrap();
            s.update_page_at(p, 100, b"xy", None).unwrap();
        }
        assert!(s.dirty_ranges(cpu).unwrap().is_empty());
        assert_eq!(s.dirty_ranges(gpu).unwrap(), vec![(10, 13), (100, 102)]);
    }

    #[test]
    fn without_a_gpu_pages_stay_on_the_cpu_and_say_why() {
        let s = no_gpu_state();
        assert!(matches!(s.device_status(), DeviceStatus::Unavailable { .. }));
        let cpu = s.create_page(64, Location::Cpu, PageMeta::default()).unwrap();
        let gpu = s.create_page(64, Location::Gpu, PageMeta::default()).unwrap();
        let uni = s.create_page(64, Location::Unified, PageMeta::default()).unwrap();
        assert_eq!(s.device_page_status(cpu).unwrap(), PageDeviceStatus::CpuPage);
        for p in [gpu, uni] {
            assert!(matches!(s.device_page_status(p).unwrap(), PageDeviceStatus::CpuOnly { .. }));
            s.route_delta(p, &Delta::write(0, b"z").unwrap(), None).unwrap();
            let e = s.sync_device(p, SyncDirection::HostToDevice).unwrap_err();
            assert_eq!(e.code(), crate::ErrorCode::NoDevice);
        }
        assert_eq!(s.sync_device(cpu, SyncDirection::DeviceToHost).unwrap_err().code(), crate::ErrorCode::Device);
        assert_eq!(s.sync_all(SyncDirection::HostToDevice).unwrap(), SyncReport::default());
        // Deltas still apply (on the CPU) through the device entry point.
        let lsn = s.apply_on_device(gpu, &Delta::write(1, b"q").unwrap(), None).unwrap();
        assert_eq!(lsn, s.lsn());
        assert_eq!(&s.read_page(gpu).unwrap()[..2], b"zq");
        let st = s.device_stats();
        assert_eq!((st.cpu_only_pages, st.mirrors, st.syncs, st.kernels_launched), (2, 0, 0, 0));
        s.free_page(gpu).unwrap();
        assert_eq!(s.device_stats().cpu_only_pages, 1);
        s.close();
        assert_eq!(s.device_stats().cpu_only_pages, 0);
    }

    #[test]
    fn adopted_pages_are_wholly_dirty() {
        let s = no_gpu_state();
        let p = s.create_page(5000, Location::Unified, PageMeta::default()).unwrap();
        s.device_manager().on_page_freed(p); // as if the page had been materialized by recovery
        s.device_adopt_page(p).unwrap();
        assert_eq!(s.dirty_ranges(p).unwrap(), vec![(0, 5000)]);
        assert!(matches!(s.device_page_status(p).unwrap(), PageDeviceStatus::CpuOnly { .. }));
        let c = s.create_page(10, Location::Cpu, PageMeta::default()).unwrap();
        s.device_adopt_page(c).unwrap();
        assert_eq!(s.device_page_status(c).unwrap(), PageDeviceStatus::CpuPage);
    }
}
