//! Checkpoints and compaction.
//!
//! Retention: the two newest checkpoints (the previous generation is the fallback if the newest
//! does not verify) and the log from the older of them on. Segments wholly before the older
//! checkpoint are removed.
//!
//! Compaction folds every record up to the compaction point `C` into `Compacted` records, one
//! per maximal run that contains no extension record and does not cross a retained checkpoint
//! LSN: per page, the deltas of the run are composed with ⊕ and counted (the epoch advance);
//! pages created and freed inside the run vanish. Replay to any LSN ≥ `C`, to any retained
//! checkpoint LSN and to the end of any run returns exactly what it returned before; LSNs
//! strictly inside a run become `LsnOutOfRange`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::monitoring::Monitor;
use crate::runtime::events::EventSystem;
use crate::runtime::extension::Extensions;
use crate::runtime::pagefiles::PageFiles;
use crate::runtime::state::{Config, Core, CoreLock, Lsn, MMSBState};
use crate::runtime::tlog::checkpoint;
use crate::runtime::tlog::format::{
    blob_name, parse_blob_name, parse_segment_name, seal_record, segment_name, SegmentHeader, FLAG_CHAIN_START,
    RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, TMP_SUFFIX,
};
use crate::runtime::tlog::record::{CompactedBody, CreateBody, Record, RecordType};
use crate::runtime::tlog::recover::{list, walk, OnInvalid};
use crate::runtime::tlog::{SegMeta, Tlog, Writer};
use crate::types::delta::Delta;
use crate::types::error::{LogError, Result, StateError};
use crate::types::page::PageId;

/// Checkpoints kept (the newest and the previous generation).
pub const CHECKPOINT_GENERATIONS: usize = 2;

/// The fold of a run of page records.
#[derive(Debug, Default)]
struct Fold {
    first: Lsn,
    last: Lsn,
    next_page_id: u64,
    creates: BTreeMap<PageId, CreateBody>,
    frees: BTreeSet<PageId>,
    deltas: BTreeMap<PageId, (u64, Delta)>,
}

impl Fold {
    fn create(&mut self, c: CreateBody) {
        self.next_page_id = self.next_page_id.max(c.id.0.saturating_add(1));
        self.creates.insert(c.id, c);
    }
    fn free(&mut self, id: PageId) {
        self.deltas.remove(&id);
        if self.creates.remove(&id).is_none() {
            self.frees.insert(id);
        }
    }
    fn delta(&mut self, page: PageId, n: u64, d: &Delta) {
        let e = self.deltas.entry(page).or_insert_with(|| (0, Delta::empty()));
        e.0 += n;
        e.1 = e.1.compose(d);
    }
    fn add(&mut self, rec: Record) {
        match rec {
            Record::PageCreate(c) => self.create(c),
            Record::PageFree(id) => self.free(id),
            Record::Batch(ops) => {
                for (p, d) in &ops {
                    self.delta(*p, 1, d);
                }
            }
            Record::Compacted(c) => {
                for id in c.frees {
                    self.free(id);
                }
                for cb in c.creates {
                    self.create(cb);
                }
                for (p, n, d) in &c.deltas {
                    self.delta(*p, *n, d);
                }
                self.next_page_id = self.next_page_id.max(c.next_page_id);
            }
            Record::Extension { .. } => unreachable!("extension records are never folded"),
        }
    }
    fn finish(self) -> (Lsn, u64, Record) {
        let body = CompactedBody {
            next_page_id: self.next_page_id,
            frees: self.frees.into_iter().collect(),
            creates: self.creates.into_values().collect(),
            deltas: self.deltas.into_iter().map(|(p, (n, d))| (p, n, d)).collect(),
        };
        (self.first, self.last - self.first + 1, Record::Compacted(body))
    }
}

fn log_of(state: &MMSBState) -> Result<&Tlog> {
    if state.is_closed() {
        return Err(StateError::Closed.into());
    }
    if state.is_read_only() {
        return Err(StateError::ReadOnly.into());
    }
    state.tlog.as_deref().ok_or_else(|| {
        StateError::Unsupported("the transaction log (open the state with a directory or `logging: true`)".into())
            .into()
    })
}

fn io(log: &Tlog, what: &str, name: &str) -> impl FnOnce(std::io::Error) -> crate::types::error::Error {
    let ctx = format!("{what} {}", log.storage.describe(name));
    move |e| LogError::io(ctx, e).into()
}

/// What checkpoints and compaction work on: the state's parts, borrowed from the state (an
/// explicit `checkpoint()`/`compact_log()`, or the inline maintenance of a state without a
/// directory) or from the maintenance thread's shares of them ([`Shares`]).
pub(crate) struct Maint<'a> {
    core: &'a CoreLock,
    log: &'a Tlog,
    pagefiles: Option<&'a PageFiles>,
    monitor: &'a Monitor,
    events: &'a EventSystem,
    config: &'a Config,
    /// The state is closed (the thread: it was told to stop).
    closed: &'a dyn Fn() -> bool,
}

impl<'a> Maint<'a> {
    fn of(state: &'a MMSBState, log: &'a Tlog, closed: &'a dyn Fn() -> bool) -> Maint<'a> {
        Maint {
            core: &state.core,
            log,
            pagefiles: state.pagefiles.as_deref(),
            monitor: &state.monitor,
            events: &state.events,
            config: state.config(),
            closed,
        }
    }

    fn check_open(&self) -> Result<()> {
        if (self.closed)() {
            return Err(StateError::Closed.into());
        }
        Ok(())
    }

    /// A checkpoint taken now, announced (counter, latency, event) like every checkpoint.
    fn checkpoint_announced(&self, write: impl FnOnce(&Self) -> Result<Lsn>) -> Result<Lsn> {
        let timer = self.monitor.start(crate::monitoring::Metric::Checkpoint);
        let k = write(self)?;
        timer.stop(self.monitor);
        self.monitor.incr(crate::monitoring::Counter::Checkpoints, 1);
        self.events.emit(crate::types::event::Event::Checkpoint { lsn: k });
        Ok(k)
    }

    /// The explicit checkpoint: of file-backed pages, see [`Maint::checkpoint_external`]; of
    /// anonymous pages, every page is copied out under the shared lock (writers wait, readers do
    /// not), which is the fastest way when the caller asks for one and waits for it. The
    /// maintenance thread takes [`Maint::checkpoint_from_log`] instead, which blocks nobody.
    fn checkpoint_now(&self) -> Result<Lsn> {
        // PAGE FILES HOOK: file-backed pages checkpoint without copying them.
        if let Some(pf) = self.pagefiles {
            return self.checkpoint_external(pf);
        }
        let log = self.log;
        let core = self.core.read();
        self.check_open()?;
        let k = core.lsn;
        {
            let w = log.w.lock();
            if let Some(why) = &w.poisoned {
                return Err(LogError::Poisoned(why.clone()).into());
            }
            if w.checkpoints.contains_key(&k) {
                return Ok(k);
            }
        }
        let ext = checkpoint_section(&core);
        let (name, _) = checkpoint::write(log.storage.as_ref(), &core, &ext)?;
        let mut w = log.w.lock();
        // Roll so that the log before the checkpoint ends with a whole segment, removable later.
        if w.offset > SEGMENT_HEADER_LEN as u64 {
            log.roll(&mut w)?;
        }
        drop(core);
        w.checkpoints.insert(k, name);
        log.set_since_checkpoint(&mut w, 0);
        let doomed = prune_plan(log, &mut w, CHECKPOINT_GENERATIONS);
        drop(w);
        prune_files(log, doomed)?;
        Ok(k)
    }

    /// A checkpoint of anonymous pages that takes none of the state's locks: the log is rolled
    /// (under the log's writer lock, a hand-over as short as a writer's own roll) at LSN `k`,
    /// and the state at `k` is rebuilt from the newest checkpoint at or before `k` plus the log
    /// from it up to `k` (replay's code path, `replay_to`'s result), off to the side, and written
    /// out. Only the segments that hold records after that checkpoint and up to `k` are read: the
    /// records since the last pass, once. The log is the truth the state was built from, so this
    /// is the state at `k` exactly; the cost is a second copy of the pages in memory while it
    /// runs and the base checkpoint read back. Copy-on-write of the live pages would need every
    /// route to check for a snapshot in progress; copying in chunks under the lock would give a
    /// checkpoint of no one LSN.
    fn checkpoint_from_log(&self) -> Result<Lsn> {
        let log = self.log;
        let storage = log.storage.as_ref();
        self.check_open()?;
        // Step 1: the hand-over in.
        let (k, pos, ckpts) = {
            let mut w = log.w.lock();
            if let Some(why) = &w.poisoned {
                return Err(LogError::Poisoned(why.clone()).into());
            }
            if w.checkpoints.contains_key(&w.last_lsn) {
                return Ok(w.last_lsn);
            }
            // Everything up to `k` is in whole segments (the group-commit stage written out), and
            // the log before the checkpoint is removable later.
            if w.offset > SEGMENT_HEADER_LEN as u64 {
                try_roll(log, &mut w)?;
            }
            (w.last_lsn, w.pos, w.checkpoints.clone())
        };
        // Step 2: no lock. Empty extensions of this state's kinds, filled by the replay (a short
        // shared lock: `fresh` copies nothing).
        let ext = Extensions { log: self.core.read().ext.iter().map(|e| e.fresh()).collect(), state: Vec::new() };
        let listing = list(storage)?;
        let chain_base = listing.chain.first().and_then(|s| s.header).map_or(0, |h| h.base_lsn);
        let base = crate::runtime::tlog::replay::base_checkpoint(storage, &ckpts, chain_base, k)?;
        let b = base.as_ref().map_or(0, |c| c.lsn);
        // Only the segments with records in `b + 1 ..= k`: those wholly at or before the base
        // (the next one starts at or before it) and those that start at or after `k` (the
        // writer's, large by now) are not read. Replay accepts a chain that starts mid-way.
        let starts = |i: usize| listing.chain.get(i).and_then(|s| s.header).map(|h| h.base_lsn);
        let first = (0..listing.chain.len()).find(|&i| starts(i + 1).is_none_or(|n| n > b)).unwrap_or(0);
        let end = (first..listing.chain.len()).find(|&i| starts(i).is_some_and(|s| s >= k));
        let chain = &listing.chain[first..end.unwrap_or(listing.chain.len())];
        let config = Config {
            dir: None,
            logging: false,
            tolerant_recovery: false,
            log_size_cap: 0,
            file_backed_pages: false,
            record_observer: None,
            ..self.config.clone()
        };
        let snap = crate::runtime::tlog::replay::replay_chain_to(
            storage,
            chain,
            base.as_ref(),
            k,
            config,
            ext,
            crate::runtime::tlog::replay::load_checkpoint,
        )?;
        drop(base);
        let written = {
            let core = snap.core.read();
            let ext = checkpoint_section(&core);
            checkpoint::write(storage, &core, &ext)
        };
        drop(snap);
        let (name, _) = written?;
        // Step 3: the hand-over out: register it; files go after the lock is released.
        let mut w = log.w.lock();
        w.checkpoints.insert(k, name);
        // What was appended after `k` counts towards the next checkpoint.
        let since = w.pos.saturating_sub(pos);
        log.set_since_checkpoint(&mut w, since);
        let doomed = prune_plan(log, &mut w, CHECKPOINT_GENERATIONS);
        drop(w);
        prune_files(log, doomed)?;
        Ok(k)
    }

    /// A checkpoint of file-backed pages: under the exclusive lock only the next image interval
    /// starts and the index is copied; the mappings are flushed and the index written without
    /// the lock (see `runtime::pagefiles`).
    fn checkpoint_external(&self, pf: &PageFiles) -> Result<Lsn> {
        let log = self.log;
        let snap = {
            let core = self.core.write();
            self.check_open()?;
            let w = log.w.lock();
            if let Some(why) = &w.poisoned {
                return Err(LogError::Poisoned(why.clone()).into());
            }
            if w.checkpoints.contains_key(&core.lsn) {
                return Ok(core.lsn);
            }
            drop(w);
            crate::runtime::pagefiles::snapshot(pf, &core)?
        };
        let written = crate::runtime::pagefiles::flush(pf, &snap).and_then(|()| {
            Ok(checkpoint::write_external(log.storage.as_ref(), snap.lsn, snap.next_page_id, &snap.index, &snap.ext)?)
        });
        let (name, _) = written.inspect_err(|_| pf.flush_all_next())?;
        let mut w = log.w.lock();
        // Roll so that the log before the checkpoint ends with a whole segment, removable later.
        if w.offset > SEGMENT_HEADER_LEN as u64 {
            log.roll(&mut w)?;
        }
        w.checkpoints.insert(snap.lsn, name);
        log.set_since_checkpoint(&mut w, 0);
        let doomed = prune_plan(log, &mut w, CHECKPOINT_GENERATIONS);
        let oldest = w.checkpoints.keys().next().copied().unwrap_or(snap.lsn);
        drop(w);
        prune_files(log, doomed)?;
        pf.prune(oldest)?;
        Ok(snap.lsn)
    }

    /// One maintenance pass if the log is over its cap: checkpoint, then compaction up to it.
    /// `background`: the maintenance thread, which checkpoints anonymous pages from the log
    /// ([`Maint::checkpoint_from_log`]) and does not compact: the checkpoint's prune drops the
    /// segments wholly before the older retained checkpoint whole, and the records between the
    /// two retained checkpoints stay as written (the fallback's replay, and `replay_to` any LSN
    /// in them). Folding that interval, then writing a checkpoint that supersedes it, rewrote
    /// about the pages' size per pass and read the interval a second time; a sustained 64 KiB
    /// writer lost 70-90% of its rate to it (issue 21). The retained log stays bounded: two
    /// intervals, each at most [`STOP_AT`] times the cap.
    fn pass(&self, background: bool) -> Result<()> {
        let log = self.log;
        let _m = log.maint.lock();
        if !log.over_cap_locked() {
            return Ok(());
        }
        if background && self.pagefiles.is_none() {
            self.checkpoint_announced(Maint::checkpoint_from_log)?;
            return Ok(());
        }
        let k = self.checkpoint_announced(Maint::checkpoint_now)?;
        self.compact(Some(k))
    }

    /// Compaction in three steps, so that writers wait only for the two short hand-overs, never
    /// while the log is read back, folded and written (issue 21: that held the state's exclusive
    /// lock for 0.4-0.65 s):
    /// 1. under the log's writer lock: roll twice, so that everything logged so far (up to
    ///    `mark`) lies in segments before an empty segment `A`, and writers go on in `A + 1`;
    /// 2. no lock: fold the chain up to `mark` into a new chain start that takes `A`'s number and
    ///    salt (so `A + 1` chains to it as it chained to the empty `A`), written to a temp file
    ///    and fsynced;
    /// 3. no lock: rename it over `A` and fsync the directory (readers of the chain wait on
    ///    `Tlog::maint`, which the caller holds; writers append to `A + 1` on, which neither
    ///    chain start changes), then the writer's lock only to update what it tracks; the
    ///    segments before `A` are leftovers, removed last (or at the next open).
    fn compact(&self, upto: Option<Lsn>) -> Result<()> {
        let log = self.log;
        let storage = log.storage.as_ref();
        // Step 1: the hand-over in.
        let (mark, a, a_salt, mut ckpts, since_before) = {
            self.check_open()?;
            let mut w = log.w.lock();
            if let Some(why) = &w.poisoned {
                return Err(LogError::Poisoned(why.clone()).into());
            }
            try_roll(log, &mut w)?;
            let (a, a_salt) = (w.segno, w.salt);
            try_roll(log, &mut w)?;
            let ckpts: BTreeSet<Lsn> = w.checkpoints.keys().copied().collect();
            (w.last_lsn, a, a_salt, ckpts, w.bytes_since_checkpoint)
        };
        // Records the replication observer does not hold yet stay as logged (issue 22).
        let keep_after = retained_after(log);
        let upto = upto.unwrap_or(mark).min(mark).min(keep_after);

        // Step 2: read back and fold, no lock held.
        let listing = list(storage)?;
        let Some(end) = listing.chain.iter().position(|s| s.segno == a) else {
            return Err(LogError::Corrupt {
                file: storage.describe(&segment_name(a)),
                offset: 0,
                reason: "the segment just started for compaction is not in the chain".into(),
            }
            .into());
        };
        let chain = &listing.chain[..=end];
        let Some(base) = chain.first().and_then(|s| s.header).map(|h| h.base_lsn) else {
            return Ok(());
        };
        // Checkpoint files the writer does not track (one whose directory fsync failed after its
        // rename) are boundaries too: recovery may start from any checkpoint it finds, and a run
        // folded across one made the next open fail ("straddles the checkpoint").
        ckpts.extend(listing.checkpoints.keys().copied());
        let newest_ckpt = ckpts.last().copied().unwrap_or(0);
        // Records at or before the oldest retained checkpoint can never be replayed again (replay
        // starts from a checkpoint): the new chain starts there.
        let base = ckpts.first().map_or(base, |&k| k.max(base)).min(keep_after.max(base));

        // Fold, collecting the new segment's records as (lsn, count, kind, body).
        let mut out: Vec<(Lsn, u64, RecordType, Vec<u8>)> = Vec::new();
        let mut fold: Option<Fold> = None;
        let flush = |fold: &mut Option<Fold>, out: &mut Vec<(Lsn, u64, RecordType, Vec<u8>)>| {
            if let Some(f) = fold.take() {
                let (lsn, count, rec) = f.finish();
                let mut body = Vec::new();
                rec.encode(&mut body);
                out.push((lsn, count, RecordType::Compacted, body));
            }
        };
        let walked = walk(storage, chain, OnInvalid::Stop, |h, body, file, off| {
            if h.last_lsn() <= base {
                return Ok(true);
            }
            let foldable = h.last_lsn() <= upto && h.kind != RecordType::Extension as u8;
            if !foldable {
                flush(&mut fold, &mut out);
                let kind = RecordType::from_u8(h.kind).ok_or_else(|| LogError::Corrupt {
                    file: storage.describe(file),
                    offset: off,
                    reason: format!("unknown record type {}", h.kind),
                })?;
                out.push((h.lsn, h.count, kind, body.to_vec()));
                return Ok(true);
            }
            let rec = Record::decode(h.kind, h.count, body).map_err(|reason| LogError::Corrupt {
                file: storage.describe(file),
                offset: off,
                reason,
            })?;
            let f = fold.get_or_insert_with(|| Fold { first: h.lsn, ..Fold::default() });
            f.add(rec);
            f.last = h.last_lsn();
            if ckpts.contains(&f.last) {
                flush(&mut fold, &mut out);
            }
            Ok(true)
        })?;
        flush(&mut fold, &mut out);
        if walked.last_lsn != mark.max(base) {
            return Err(LogError::Corrupt {
                file: storage.describe(""),
                offset: 0,
                reason: format!("the log ends at LSN {} but {} was logged", walked.last_lsn, mark),
            }
            .into());
        }

        // The new chain start: `A`'s number and salt, every record up to `mark`.
        let header = SegmentHeader { flags: FLAG_CHAIN_START, segno: a, salt: a_salt, prev_salt: 0, base_lsn: base };
        let name = segment_name(a);
        let tmp = format!("{name}{TMP_SUFFIX}");
        let file = storage.create(&tmp).map_err(io(log, "create", &tmp))?;
        let mut bytes = header.encode().to_vec();
        let mut since_ckpt = 0u64;
        for (lsn, count, kind, body) in &out {
            let at = bytes.len();
            bytes.resize(at + RECORD_HEADER_LEN, 0);
            bytes.extend_from_slice(body);
            seal_record(&mut bytes[at..], header.salt, *lsn, *count, *kind as u8);
            if *lsn > newest_ckpt {
                since_ckpt += (bytes.len() - at) as u64;
            }
        }
        let written = file.write_at(0, &bytes).and_then(|()| file.sync());
        if let Err(e) = written {
            let _ = storage.remove(&tmp);
            return Err(io(log, "write", &tmp)(e));
        }

        // Step 3: the hand-over out.
        {
            let w = log.w.lock();
            if (self.closed)() || w.poisoned.is_some() {
                let _ = storage.remove(&tmp);
                return Err(match &w.poisoned {
                    Some(why) => LogError::Poisoned(why.clone()).into(),
                    None => StateError::Closed.into(),
                });
            }
        }
        if let Err(e) = storage.rename(&tmp, &name) {
            let _ = storage.remove(&tmp);
            return Err(io(log, "rename", &tmp)(e));
        }
        if let Err(e) = storage.sync_dir() {
            // Whether the new chain start survives a power loss is now unknown, so neither chain
            // can take appends safely (the old one is dropped at open if the rename is durable).
            log.w.lock().poisoned = Some(format!("fsync of the directory after compaction failed: {e}"));
            return Err(io(log, "fsync the directory of", &name)(e));
        }
        let mut w = log.w.lock();
        // The new chain start is durable; segments before it are leftovers now. `A + 1` on (the
        // writer's) are untouched, with their own sync state.
        w.unsynced.retain(|u| u.segno > a);
        w.segments.retain(|&segno, _| segno > a);
        w.segments.insert(a, SegMeta { base_lsn: base, len: bytes.len() as u64, blob: 0 });
        let since = since_ckpt + w.bytes_since_checkpoint.saturating_sub(since_before);
        log.set_since_checkpoint(&mut w, since);
        log.monitor.set(crate::monitoring::Counter::LogSegments, w.segments.len() as u64);
        drop(w);
        for s in &listing.chain[..end] {
            remove_segment(log, s.segno)?;
        }
        storage.sync_dir().map_err(io(log, "fsync the directory of", &name))?;
        Ok(())
    }
}

/// The checkpoint's extension section of `core` (the graph snapshot); empty without one.
fn checkpoint_section(core: &Core) -> Vec<u8> {
    core.ext.iter().find_map(|e| e.checkpoint_section()).unwrap_or_default()
}

impl MMSBState {
    /// Writes a checkpoint of every page at the current LSN (atomically: temp file, fsync,
    /// rename, directory fsync), then removes checkpoints beyond the previous generation and the
    /// segments wholly before the older retained checkpoint. Writers wait while anonymous pages
    /// are written (the maintenance thread's checkpoints do not hold them up); readers do not.
    /// Returns the checkpoint's LSN. A failure of the maintenance thread that no call has
    /// reported yet is returned first, instead of checkpointing (see [`MMSBState::try_close`]).
    pub fn checkpoint(&self) -> Result<Lsn> {
        let log = log_of(self)?;
        log.bg.take_error()?;
        let closed = || self.is_closed();
        let m = Maint::of(self, log, &closed);
        let _m = log.maint.lock();
        m.checkpoint_announced(Maint::checkpoint_now)
    }

    /// Compacts the log up to the current LSN (see the module docs for the exact rule). A
    /// failure of the maintenance thread not reported yet is returned first, as by
    /// [`MMSBState::checkpoint`].
    pub fn compact_log(&self) -> Result<()> {
        let log = log_of(self)?;
        log.bg.take_error()?;
        let closed = || self.is_closed();
        let m = Maint::of(self, log, &closed);
        let _m = log.maint.lock();
        m.compact(None)
    }

    /// Checkpoint, then compaction up to that checkpoint: what `log_size_cap` triggers in a state
    /// without a directory (an in-memory log: no disk I/O to take off the writer's thread).
    pub(crate) fn auto_maintain(&self, log: &Tlog) -> Result<()> {
        let closed = || self.is_closed();
        Maint::of(self, log, &closed).pass(false)
    }

    /// Waits until the maintenance thread has no pass running and none asked for, then returns
    /// its failure that no call has reported yet (as [`MMSBState::checkpoint`] does). With
    /// writers still running this may wait for several passes; without a maintenance thread it
    /// returns at once. For tests and tools that read `log_info` (`oldest_lsn`, `checkpoints`)
    /// or copy the directory and want no pass half done.
    pub fn wait_for_maintenance(&self) -> Result<()> {
        let log = log_of(self)?;
        log.bg.wait_idle();
        log.bg.take_error()
    }

    /// Closes the state like [`MMSBState::close`], and returns the maintenance thread's failure
    /// that no call has reported yet (the C ABI's `mmsb_state_close` returns it).
    pub fn try_close(&self) -> Result<()> {
        self.close();
        match &self.tlog {
            Some(log) => log.bg.take_error(),
            None => Ok(()),
        }
    }

    /// Starts the maintenance thread: with a directory, a log and a cap (called by `open`).
    pub(crate) fn start_maintenance(&self) -> Result<()> {
        if self.config().dir.is_none() {
            return Ok(());
        }
        self.start_maintenance_on_any_storage()
    }

    /// Starts the maintenance thread on a state opened without a directory as well
    /// (`open_with_storage` with the tests' fault-injecting storages), which `open` never does.
    #[cfg(any(test, feature = "testing"))]
    pub fn start_maintenance_thread(&self) -> Result<()> {
        self.start_maintenance_on_any_storage()
    }

    fn start_maintenance_on_any_storage(&self) -> Result<()> {
        let Some(log) = &self.tlog else { return Ok(()) };
        if log.log_size_cap == 0 || self.is_read_only() || self.is_closed() {
            return Ok(());
        }
        let shares = Shares {
            core: self.core.clone(),
            log: log.clone(),
            pagefiles: self.pagefiles.clone(),
            monitor: self.monitor.clone(),
            events: self.events.clone(),
            config: self.config().clone(),
        };
        log.bg.start(shares)
    }

    /// Stops the maintenance thread and waits for it (its pass in progress finishes first). Called
    /// by `close`, before anything closes.
    pub(crate) fn stop_maintenance(&self) {
        if let Some(log) = &self.tlog {
            log.bg.stop();
        }
    }
}

/// The maintenance thread's own shares of the state's parts (it never holds the state itself,
/// which callers own and may move).
struct Shares {
    core: Arc<CoreLock>,
    log: Arc<Tlog>,
    pagefiles: Option<Arc<PageFiles>>,
    monitor: Arc<Monitor>,
    events: EventSystem,
    config: Config,
}

/// The maintenance thread: writers whose commit leaves the log over its cap signal it
/// ([`Background::request`]: an atomic swap, and a condvar notify once per pass), and it runs
/// the checkpoint and compaction. Started by `open` with a directory and a cap, stopped and
/// joined by `close` (and so by drop).
#[derive(Debug, Default)]
pub(crate) struct Background {
    /// True while the thread runs (writers signal it instead of maintaining inline).
    running: AtomicBool,
    /// A pass is asked for and not yet started.
    requested: AtomicBool,
    /// A pass runs (set before `requested` is cleared, so that one of the two is always seen
    /// while work is pending; see [`Background::wait_idle`]).
    busy: AtomicBool,
    stop: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
    handle: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The last failure no call has returned yet (`checkpoint`, `compact_log`, `try_close`).
    unreported: Mutex<Option<crate::types::error::Error>>,
    /// Passes finished (successful or not), and the condvar writers that outran the thread
    /// wait on (see [`Background::throttle`]).
    passes: AtomicU64,
    done: Condvar,
    /// Writes that waited for a pass because the log reached `STOP_AT` times its cap.
    pub(crate) waits: AtomicU64,
    /// Writes slowed down because the log reached `SLOWDOWN_AT` times its cap.
    pub(crate) slowdowns: AtomicU64,
}

/// Past this many times `log_size_cap` since the newest checkpoint, each write sleeps after its
/// commit (see [`slowdown`]).
pub(crate) const SLOWDOWN_AT: u64 = 2;
/// The longest delay of a slowed-down write, just before [`STOP_AT`]: short enough to stay far
/// below the 10 ms stall goal, long enough that two writers drop to a few thousand writes a
/// second and the thread catches up.
pub(crate) const SLOWDOWN: std::time::Duration = std::time::Duration::from_millis(1);

/// The delay of a write `over` bytes past [`SLOWDOWN_AT`] times the cap, of `span` bytes up to
/// [`STOP_AT`] times it: proportional, from nothing to [`SLOWDOWN`]. A fixed 1 ms from the first
/// byte over held a 64 KiB writer (16,000 writes a second unthrottled) to 64 MB/s while a pass
/// ran; a ramp lets the writer settle at the rate the thread keeps up with, and gives the
/// full delay only to a writer that keeps outrunning it.
pub(crate) fn slowdown(over: u64, span: u64) -> std::time::Duration {
    if span == 0 {
        return SLOWDOWN;
    }
    // In u128: `over` times the delay's nanoseconds may pass 2^64; the quotient is at most
    // `SLOWDOWN`'s nanoseconds.
    let nanos = u128::from(over.min(span)) * SLOWDOWN.as_nanos() / u128::from(span);
    std::time::Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}
/// Past this many times `log_size_cap`, each write waits for the end of one maintenance pass:
/// the hard bound on the log's size (a pass that fails releases it too).
pub(crate) const STOP_AT: u64 = 4;

/// After a failed pass the thread waits this long before the next (doubling up to
/// `RETRY_MAX`), so a full disk is not retried in a busy loop.
const RETRY_MIN: std::time::Duration = std::time::Duration::from_millis(50);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

impl Background {
    /// True while the maintenance thread runs.
    pub(crate) fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// Asks for a pass (cheap when one is already asked for).
    pub(crate) fn request(&self) {
        if !self.requested.swap(true, Ordering::AcqRel) {
            // Under the lock, so the thread cannot miss it between its check and its wait.
            let _g = self.lock.lock();
            self.cv.notify_one();
        }
    }

    /// Called by a writer after its commit, outside the state's lock, when the log is over its
    /// cap: signals the thread. Writers that outran the thread are slowed down, so that the log's
    /// size stays bounded: past [`SLOWDOWN_AT`] times the cap each write sleeps [`SLOWDOWN`]
    /// (the writers fall back to the thread's pace, each by a short delay, not one long stall);
    /// past [`STOP_AT`] times it each waits for the end of one pass. A pass that fails releases
    /// the waiters too (its error is recorded).
    pub(crate) fn throttle(&self, log: &Tlog) {
        let seen = self.passes.load(Ordering::Acquire);
        self.request();
        let since = log.since_checkpoint.load(Ordering::Relaxed);
        let (from, to) = (log.log_size_cap.saturating_mul(SLOWDOWN_AT), log.log_size_cap.saturating_mul(STOP_AT));
        if since <= from {
            return;
        }
        if since <= to {
            self.slowdowns.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(slowdown(since - from, to - from));
            return;
        }
        self.waits.fetch_add(1, Ordering::Relaxed);
        let mut g = self.lock.lock();
        while self.passes.load(Ordering::Acquire) == seen && !self.stop.load(Ordering::Acquire) {
            self.done.wait(&mut g);
        }
    }

    /// Waits until no pass runs and none is asked for (at once when the thread does not run).
    /// Passes that writers ask for meanwhile are waited for too.
    fn wait_idle(&self) {
        let mut g = self.lock.lock();
        while self.is_running()
            && !self.stop.load(Ordering::Acquire)
            && (self.requested.load(Ordering::Acquire) || self.busy.load(Ordering::Acquire))
        {
            self.done.wait(&mut g);
        }
    }

    /// Passes finished since open.
    pub(crate) fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    /// Returns (and forgets) the failure of a pass that no call has reported yet.
    pub(crate) fn take_error(&self) -> Result<()> {
        match self.unreported.lock().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn start(&self, shares: Shares) -> Result<()> {
        let mut handle = self.handle.lock();
        if handle.is_some() {
            return Ok(());
        }
        self.stop.store(false, Ordering::Release);
        let log = shares.log.clone();
        let spawned = std::thread::Builder::new().name("mmsb-maintenance".into()).spawn(move || run(&shares));
        let h = spawned.map_err(|e| LogError::io("start the maintenance thread", e))?;
        *handle = Some(h);
        log.bg.running.store(true, Ordering::Release);
        // A log already over its cap at open is maintained right away (recovery set the writer's
        // count after the log was made: refresh the copy the commits read).
        let since = log.w.lock().bytes_since_checkpoint;
        log.since_checkpoint.store(since, Ordering::Relaxed);
        if log.over_cap() {
            self.request();
        }
        Ok(())
    }

    fn stop(&self) {
        let Some(h) = self.handle.lock().take() else { return };
        {
            let _g = self.lock.lock();
            self.stop.store(true, Ordering::Release);
            self.cv.notify_all();
            self.done.notify_all();
        }
        // The thread never panics across this (a pass's panic is caught and counted), so the
        // join fails only if something else is badly wrong; there is nothing more to do then.
        let _ = h.join();
        self.running.store(false, Ordering::Release);
    }
}

/// The maintenance thread's loop.
fn run(sh: &Shares) {
    let bg = &sh.log.bg;
    let stopped = || bg.stop.load(Ordering::Acquire);
    let m = Maint {
        core: &sh.core,
        log: &sh.log,
        pagefiles: sh.pagefiles.as_deref(),
        monitor: &sh.monitor,
        events: &sh.events,
        config: &sh.config,
        closed: &stopped,
    };
    let mut retry = RETRY_MIN;
    loop {
        {
            let mut g = bg.lock.lock();
            while !bg.requested.load(Ordering::Acquire) && !stopped() {
                bg.cv.wait(&mut g);
            }
        }
        if stopped() {
            return;
        }
        bg.busy.store(true, Ordering::Release);
        bg.requested.store(false, Ordering::Release);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.pass(true)))
            .unwrap_or_else(|_| Err(StateError::Unsupported("the maintenance pass panicked".into()).into()));
        {
            let _g = bg.lock.lock();
            bg.passes.fetch_add(1, Ordering::AcqRel);
            bg.busy.store(false, Ordering::Release);
            bg.done.notify_all();
        }
        match result {
            Ok(()) => retry = RETRY_MIN,
            Err(e) if matches!(e, crate::types::error::Error::State(StateError::Closed)) && stopped() => return,
            Err(e) => {
                record_failure(&sh.log, sh.core.read().lsn, e);
                // Back off before the next try; a stop ends the wait.
                let mut g = bg.lock.lock();
                let _ = bg.cv.wait_while_for(&mut g, |_| !stopped(), retry);
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Records a failed maintenance pass: counted and described in the log info, kept for the next
/// explicit call, and written to stderr once (the write that triggered it already succeeded, and
/// no caller waits for the pass).
pub(crate) fn record_failure(log: &Tlog, lsn: Lsn, e: crate::types::error::Error) {
    {
        let mut w = log.w.lock();
        w.maintenance_failures += 1;
        w.last_maintenance_error = Some((e.to_string(), e.code(), lsn));
    }
    if log.bg.is_running() {
        eprintln!("mmsb: background maintenance failed at LSN {lsn} (retrying): {e}");
        *log.bg.unreported.lock() = Some(e);
    }
}

/// Starts a new segment for compaction. Unlike a roll on the write path, a failure (a full disk)
/// does not poison the log: nothing was appended, so the writer is put back as it was (the
/// half-created segment removed; a leftover is overwritten by the next roll) and the
/// compaction fails with the error.
fn try_roll(log: &Tlog, w: &mut Writer) -> Result<()> {
    let (unsynced, next) = (w.unsynced.len(), segment_name(w.segno + 1));
    log.roll_inner(w).inspect_err(|_| {
        w.unsynced.truncate(unsynced);
        let _ = log.storage.remove(&next);
    })?;
    log.monitor.set(crate::monitoring::Counter::LogSegments, w.segments.len() as u64);
    Ok(())
}

/// Keeps the `keep` newest checkpoints and the segments from the older of them on (used at
/// open, under the writer's lock; maintenance splits it in two, see [`prune_plan`]).
pub(crate) fn prune(log: &Tlog, w: &mut Writer, keep: usize) -> Result<()> {
    let doomed = prune_plan(log, w, keep);
    prune_files(log, doomed)
}

/// Files [`prune_plan`] took out of the writer's books, removed by [`prune_files`] after the
/// writer's lock is released (writers never remove files, and `Tlog::maint`, which the caller
/// holds, keeps the other removers and the chain's readers out).
pub(crate) struct Doomed {
    checkpoints: Vec<String>,
    /// Segments numbered below this are leftovers of a compaction whose removals failed.
    leftovers_below: Option<u64>,
    segments: Vec<u64>,
}

/// Under the writer's lock: forgets the checkpoints beyond the `keep` newest and the segments
/// wholly before the older retained one, and says which files to remove.
pub(crate) fn prune_plan(log: &Tlog, w: &mut Writer, keep: usize) -> Doomed {
    let mut doomed = Doomed { checkpoints: Vec::new(), leftovers_below: None, segments: Vec::new() };
    while w.checkpoints.len() > keep {
        let (_, name) = w.checkpoints.pop_first().expect("non-empty");
        doomed.checkpoints.push(name);
    }
    let Some(&oldest) = w.checkpoints.keys().next() else { return doomed };
    // Segments holding records the replication observer does not hold yet stay (issue 22).
    let oldest = oldest.min(retained_after(log));
    doomed.leftovers_below = w.segments.keys().next().copied();
    // A segment is wholly before `oldest` when the next one starts at or before it.
    let segs: Vec<(u64, SegMeta)> = w.segments.iter().map(|(k, v)| (*k, *v)).collect();
    for pair in segs.windows(2) {
        let ((segno, _), (_, next)) = (pair[0], pair[1]);
        if next.base_lsn <= oldest && segno != w.segno {
            w.segments.remove(&segno);
            w.unsynced.retain(|u| u.segno != segno);
            doomed.segments.push(segno);
        } else {
            break;
        }
    }
    log.monitor.set(crate::monitoring::Counter::LogSegments, w.segments.len() as u64);
    doomed
}

/// Removes what [`prune_plan`] decided, without the writer's lock.
pub(crate) fn prune_files(log: &Tlog, doomed: Doomed) -> Result<()> {
    let storage = log.storage.as_ref();
    if doomed.checkpoints.is_empty() && doomed.leftovers_below.is_none() {
        return Ok(());
    }
    for name in &doomed.checkpoints {
        storage.remove(name).map_err(io(log, "remove", name))?;
    }
    // Segments numbered below the retained chain are leftovers of a compaction whose removals
    // failed. They go first: once the chain's first segment is pruned below, recovery would
    // take a leftover for the start of the chain and cut everything after it as a stale tail
    // (acknowledged writes lost; found by the log_faults fuzz target).
    if let Some(first) = doomed.leftovers_below {
        let names = storage.list().map_err(io(log, "list", ""))?;
        let leftovers: Vec<String> = names
            .into_iter()
            .filter(|n| parse_segment_name(n).or_else(|| parse_blob_name(n)).is_some_and(|segno| segno < first))
            .collect();
        for name in &leftovers {
            storage.remove(name).map_err(io(log, "remove", name))?;
        }
        if !leftovers.is_empty() {
            storage.sync_dir().map_err(io(log, "fsync the directory after removing leftovers", ""))?;
        }
    }
    for &segno in &doomed.segments {
        remove_segment(log, segno)?;
    }
    // Only removals need the directory synced: every open prunes, and an fsync of the directory
    // that removed nothing cost 6-30 ms of each open on a busy disk.
    if !doomed.checkpoints.is_empty() || !doomed.segments.is_empty() {
        storage.sync_dir().map_err(io(log, "fsync the directory after pruning", ""))?;
    }
    Ok(())
}

/// Removes a segment and its blob file (the segment first: a blob file without its segment is
/// an orphan that the next open removes, a segment without its blob file would be damage).
pub(crate) fn remove_segment(log: &Tlog, segno: u64) -> Result<()> {
    let (seg, blob) = (segment_name(segno), blob_name(segno));
    log.storage.remove(&seg).map_err(io(log, "remove", &seg))?;
    log.storage.retire(&blob).map_err(io(log, "retire", &blob))
}

/// The LSN past which the replication observer wants every record kept as logged
/// ([`RecordObserver::retained_after`](crate::runtime::replica_hook::RecordObserver::retained_after)).
fn retained_after(log: &Tlog) -> Lsn {
    log.observer.as_ref().map_or(Lsn::MAX, |o| o.0.retained_after())
}

impl Tlog {
    /// Log bytes since the newest checkpoint past which a maintenance pass runs: the cap, or
    /// the replay budget when it is smaller and the maintenance thread runs (a state with a
    /// directory, whose crash replays that log; an in-memory log is never replayed at an
    /// open, and maintains inline on the writer's thread, so only its cap applies).
    pub(crate) fn maintain_at(&self) -> u64 {
        if self.replay_budget > 0 && self.bg.is_running() {
            self.log_size_cap.min(self.replay_budget)
        } else {
            self.log_size_cap
        }
    }

    fn over_cap_locked(&self) -> bool {
        self.log_size_cap > 0 && self.w.lock().bytes_since_checkpoint > self.maintain_at()
    }
}

#[cfg(test)]
mod tests {
    use super::{slowdown, SLOWDOWN};
    use std::time::Duration;

    /// The back-pressure delay grows with the bytes past the slowdown point: none at it, the
    /// full `SLOWDOWN` at the stop point and beyond, in proportion between.
    #[test]
    fn slowdown_is_proportional_to_the_bytes_over() {
        let span = 512 << 20;
        assert_eq!(slowdown(0, span), Duration::ZERO);
        assert_eq!(slowdown(span / 4, span), SLOWDOWN / 4);
        assert_eq!(slowdown(span / 2, span), SLOWDOWN / 2);
        assert_eq!(slowdown(span, span), SLOWDOWN);
        assert_eq!(slowdown(3 * span, span), SLOWDOWN);
        assert_eq!(slowdown(u64::MAX, 0), SLOWDOWN);
    }
}
