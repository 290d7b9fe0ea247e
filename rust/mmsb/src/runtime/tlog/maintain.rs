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

use crate::runtime::state::{Lsn, MMSBState};
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
    state.tlog.as_ref().ok_or_else(|| {
        StateError::Unsupported("the transaction log (open the state with a directory or `logging: true`)".into())
            .into()
    })
}

fn io(log: &Tlog, what: &str, name: &str) -> impl FnOnce(std::io::Error) -> crate::types::error::Error {
    let ctx = format!("{what} {}", log.storage.describe(name));
    move |e| LogError::io(ctx, e).into()
}

impl MMSBState {
    /// Writes a checkpoint of every page at the current LSN (atomically: temp file, fsync,
    /// rename, directory fsync), then removes checkpoints beyond the previous generation and the
    /// segments wholly before the older retained checkpoint. Writers wait while the pages are
    /// written; readers do not. Returns the checkpoint's LSN.
    pub fn checkpoint(&self) -> Result<Lsn> {
        let log = log_of(self)?;
        let _m = log.maint.lock();
        let timer = self.monitor.start(crate::monitoring::Metric::Checkpoint);
        let lsn = self.checkpoint_locked(log)?;
        timer.stop(&self.monitor);
        self.monitor.incr(crate::monitoring::Counter::Checkpoints, 1);
        self.events.emit(crate::types::event::Event::Checkpoint { lsn });
        Ok(lsn)
    }

    fn checkpoint_locked(&self, log: &Tlog) -> Result<Lsn> {
        // PAGE FILES HOOK: file-backed pages checkpoint without copying them.
        if let Some(pf) = &self.pagefiles {
            return self.checkpoint_external(log, pf);
        }
        let core = self.core.read();
        if self.is_closed() {
            return Err(StateError::Closed.into());
        }
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
        let ext = self.checkpoint_extension(&core);
        let (name, _) = checkpoint::write(log.storage.as_ref(), &core, &ext)?;
        let mut w = log.w.lock();
        // Roll so that the log before the checkpoint ends with a whole segment, removable later.
        if w.offset > SEGMENT_HEADER_LEN as u64 {
            log.roll(&mut w)?;
        }
        drop(core);
        w.checkpoints.insert(k, name);
        w.bytes_since_checkpoint = 0;
        prune(log, &mut w, CHECKPOINT_GENERATIONS)?;
        Ok(k)
    }

    /// A checkpoint of file-backed pages: under the exclusive lock only the next image interval
    /// starts and the index is copied; the mappings are flushed and the index written without
    /// the lock (see `runtime::pagefiles`).
    fn checkpoint_external(&self, log: &Tlog, pf: &crate::runtime::pagefiles::PageFiles) -> Result<Lsn> {
        let snap = {
            let core = self.core.write();
            if self.is_closed() {
                return Err(StateError::Closed.into());
            }
            let w = log.w.lock();
            if let Some(why) = &w.poisoned {
                return Err(LogError::Poisoned(why.clone()).into());
            }
            if w.checkpoints.contains_key(&core.lsn) {
                return Ok(core.lsn);
            }
            drop(w);
            self.pagefiles_snapshot(pf, &core)?
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
        w.bytes_since_checkpoint = 0;
        prune(log, &mut w, CHECKPOINT_GENERATIONS)?;
        let oldest = w.checkpoints.keys().next().copied().unwrap_or(snap.lsn);
        drop(w);
        pf.prune(oldest)?;
        Ok(snap.lsn)
    }

    /// Compacts the log up to the current LSN (see the module docs for the exact rule).
    pub fn compact_log(&self) -> Result<()> {
        let log = log_of(self)?;
        let _m = log.maint.lock();
        self.compact_locked(log, None)
    }

    /// Checkpoint, then compaction up to that checkpoint: what `log_size_cap` triggers.
    pub(crate) fn auto_maintain(&self, log: &Tlog) -> Result<()> {
        let _m = log.maint.lock();
        if !log.over_cap_locked() {
            return Ok(());
        }
        let timer = self.monitor.start(crate::monitoring::Metric::Checkpoint);
        let k = self.checkpoint_locked(log)?;
        timer.stop(&self.monitor);
        // Observers see automatic checkpoints like explicit ones.
        self.monitor.incr(crate::monitoring::Counter::Checkpoints, 1);
        self.events.emit(crate::types::event::Event::Checkpoint { lsn: k });
        self.compact_locked(log, Some(k))
    }

    /// Compaction in three steps, so that writers wait only for the two short hand-overs, never
    /// while the log is read back, folded and written (issue 21: that held the state's exclusive
    /// lock for 0.4-0.65 s):
    /// 1. under the log's writer lock: roll twice, so that everything logged so far (up to
    ///    `mark`) lies in segments before an empty segment `A`, and writers go on in `A + 1`;
    /// 2. no lock: fold the chain up to `mark` into a new chain start that takes `A`'s number and
    ///    salt (so `A + 1` chains to it as it chained to the empty `A`), written to a temp file
    ///    and fsynced;
    /// 3. under the state's lock: rename it over `A` and fsync the directory; the segments before
    ///    it are leftovers, removed after the lock is released (or at the next open).
    fn compact_locked(&self, log: &Tlog, upto: Option<Lsn>) -> Result<()> {
        let storage = log.storage.as_ref();
        // Step 1: the hand-over in.
        let (mark, a, a_salt, mut ckpts, since_before) = {
            if self.is_closed() {
                return Err(StateError::Closed.into());
            }
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
        let upto = upto.unwrap_or(mark).min(mark);

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
        let base = ckpts.first().map_or(base, |&k| k.max(base));

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

        // Step 3: the hand-over out. The state's lock keeps readers of the live log out while
        // the chain changes under them.
        let core = self.core.write();
        let mut w = log.w.lock();
        if self.is_closed() || w.poisoned.is_some() {
            let _ = storage.remove(&tmp);
            return Err(match &w.poisoned {
                Some(why) => LogError::Poisoned(why.clone()).into(),
                None => StateError::Closed.into(),
            });
        }
        if let Err(e) = storage.rename(&tmp, &name) {
            let _ = storage.remove(&tmp);
            return Err(io(log, "rename", &tmp)(e));
        }
        if let Err(e) = storage.sync_dir() {
            // Whether the new chain start survives a power loss is now unknown, so neither chain
            // can take appends safely (the old one is dropped at open if the rename is durable).
            w.poisoned = Some(format!("fsync of the directory after compaction failed: {e}"));
            return Err(io(log, "fsync the directory of", &name)(e));
        }
        // The new chain start is durable; segments before it are leftovers now. `A + 1` on (the
        // writer's) are untouched, with their own sync state.
        w.unsynced.retain(|u| u.segno > a);
        w.segments.retain(|&segno, _| segno > a);
        w.segments.insert(a, SegMeta { base_lsn: base, len: bytes.len() as u64, blob: 0 });
        w.bytes_since_checkpoint = since_ckpt + w.bytes_since_checkpoint.saturating_sub(since_before);
        log.monitor.set(crate::monitoring::Counter::LogSegments, w.segments.len() as u64);
        drop(w);
        drop(core);
        for s in &listing.chain[..end] {
            remove_segment(log, s.segno)?;
        }
        storage.sync_dir().map_err(io(log, "fsync the directory of", &name))?;
        Ok(())
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

/// Keeps the `keep` newest checkpoints and the segments from the older of them on.
pub(crate) fn prune(log: &Tlog, w: &mut Writer, keep: usize) -> Result<()> {
    let storage = log.storage.as_ref();
    while w.checkpoints.len() > keep {
        let (_, name) = w.checkpoints.pop_first().expect("non-empty");
        storage.remove(&name).map_err(io(log, "remove", &name))?;
    }
    let Some(&oldest) = w.checkpoints.keys().next() else { return Ok(()) };
    // Segments numbered below the retained chain are leftovers of a compaction whose removals
    // failed. They go first: once the chain's first segment is pruned below, recovery would
    // take a leftover for the start of the chain and cut everything after it as a stale tail
    // (acknowledged writes lost; found by the log_faults fuzz target).
    if let Some(&first) = w.segments.keys().next() {
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
    // A segment is wholly before `oldest` when the next one starts at or before it.
    let segs: Vec<(u64, SegMeta)> = w.segments.iter().map(|(k, v)| (*k, *v)).collect();
    for pair in segs.windows(2) {
        let ((segno, _), (_, next)) = (pair[0], pair[1]);
        if next.base_lsn <= oldest && segno != w.segno {
            remove_segment(log, segno)?;
            w.segments.remove(&segno);
            w.unsynced.retain(|u| u.segno != segno);
        } else {
            break;
        }
    }
    storage.sync_dir().map_err(io(log, "fsync the directory after pruning", ""))?;
    Ok(())
}

/// Removes a segment and its blob file (the segment first: a blob file without its segment is
/// an orphan that the next open removes, a segment without its blob file would be damage).
pub(crate) fn remove_segment(log: &Tlog, segno: u64) -> Result<()> {
    let (seg, blob) = (segment_name(segno), blob_name(segno));
    log.storage.remove(&seg).map_err(io(log, "remove", &seg))?;
    log.storage.remove(&blob).map_err(io(log, "remove", &blob))
}

impl Tlog {
    fn over_cap_locked(&self) -> bool {
        self.log_size_cap > 0 && self.w.lock().bytes_since_checkpoint > self.log_size_cap
    }
}
