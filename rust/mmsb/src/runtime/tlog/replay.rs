//! Applying records to a state (recovery and replay), `replay_to`, and epoch slices.

use std::collections::VecDeque;
use std::ops::Range;

use crate::runtime::extension::Extensions;
use crate::runtime::state::{Config, Core, Lsn, MMSBState};
use crate::runtime::tlog::api::{LogEntry, LogOp, LogSlice};
use crate::runtime::tlog::checkpoint::{self, CheckpointData};
use crate::runtime::tlog::format::RecordHeader;
use crate::runtime::tlog::record::{for_each_batch_delta, CreateBody, Record, RecordType};
use crate::runtime::tlog::recover::{list, walk, OnInvalid, Recoverable, SegFile};
use crate::runtime::tlog::storage::Storage;
use crate::runtime::tlog::Tlog;
use crate::types::delta::Delta;
use crate::types::error::{LogError, Result, StateError};
use crate::types::page::{Page, PageId};

/// The smallest page image a lazy open maps instead of reading (see `load_checkpoint`).
pub(crate) const LAZY_MIN_BYTES: u64 = 64 << 10;
/// The most page images one open maps (each is a VMA: see `load_checkpoint`).
pub(crate) const LAZY_MAX_MAPS: usize = 4096;

/// Replaces `core` with the checkpoint's pages.
pub(crate) fn load_checkpoint(state: &impl Recoverable, core: &mut Core, c: &CheckpointData) -> Result<()> {
    core.pages.clear();
    // Bytes behind a valid checksum are still untrusted (a hostile or buggy writer): ids must be
    // unique and below `next_page_id`, or a later create would silently replace a page.
    let mut ids: Vec<u64> = c.pages.iter().map(|p| p.id.0).collect();
    ids.sort_unstable();
    if ids.first() == Some(&0)
        || ids.windows(2).any(|w| w[0] == w[1])
        || ids.last().is_some_and(|&l| l >= c.next_page_id)
    {
        return Err(LogError::Corrupt {
            file: format!("checkpoint at LSN {}", c.lsn),
            offset: 0,
            reason: "page ids are duplicated, zero, or not below the next page id".into(),
        }
        .into());
    }
    if c.external {
        // PAGE FILES HOOK: the bytes are in the page files of the directory.
        let dir = state.recovery_config().dir.clone().ok_or_else(|| LogError::Corrupt {
            file: format!("checkpoint at LSN {}", c.lsn),
            offset: 0,
            reason: "its page bytes are in page files, and this state has no directory".into(),
        })?;
        crate::runtime::pagefiles::load_external(state, core, c, &dir)?;
    }
    // A lazily opened checkpoint's aligned images are mapped copy-on-write (issue 21, fast
    // open), unless pages must live in page files. Each such mapping is a VMA of its own (the
    // kernel merges neighbouring anonymous maps but not file maps placed top-down at rising
    // offsets), and a process has `vm.max_map_count` of them (65,530 by default): so only
    // images of `LAZY_MIN_BYTES` or more are mapped, at most `LAZY_MAX_MAPS` per open, and a
    // mapping that fails is read instead. Small images gain nothing from a map anyway: each
    // costs one `mmap` either way.
    let mut left = if state.recovery_config().file_backed_pages { 0 } else { LAZY_MAX_MAPS };
    for (i, (p, bytes)) in c.pages().enumerate() {
        let lazy = if left > 0 && p.size >= LAZY_MIN_BYTES { c.mapped_page(i).and_then(|r| r.ok()) } else { None };
        let buf = match lazy {
            Some(buf) => {
                left -= 1;
                buf
            }
            None => {
                let buf = state.allocate_page(p.id, p.size)?;
                // SAFETY: the buffer was just allocated and is not shared yet.
                unsafe { buf.as_mut_slice() }.copy_from_slice(bytes);
                buf
            }
        };
        let mut page = Page::new(p.id, p.location, p.meta.clone(), buf);
        page.epoch = p.epoch;
        core.pages.insert(p.id, page);
    }
    core.next_page_id = c.next_page_id;
    core.lsn = c.lsn;
    state.restore_checkpoint_section(core, c.extension())
}

fn create(state: &impl Recoverable, core: &mut Core, c: &CreateBody) -> Result<(), String> {
    if core.pages.contains_key(&c.id) {
        return Err(format!("page {} is created twice", c.id));
    }
    // (Found by the log_decode fuzz target: id u64::MAX overflowed `next_page_id`.)
    let next = c.id.0.checked_add(1).filter(|_| c.id.0 != 0).ok_or_else(|| format!("invalid page id {}", c.id))?;
    if c.size == 0 {
        return Err(format!("page {} is created with size 0", c.id));
    }
    // The same limit as `create_page`: a record claiming a huge page must not make recovery
    // allocate it (found by the log_decode fuzz target: a 5 GB page ran it out of memory).
    let max = state.recovery_config().max_page_size;
    if c.size > max {
        return Err(format!(
            "page {} is created with {} bytes, more than max_page_size ({max} bytes); \
             if the log was written with a larger max_page_size, open it with that",
            c.id, c.size
        ));
    }
    let buf = state.allocate_page(c.id, c.size).map_err(|e| e.to_string())?;
    core.pages.insert(c.id, Page::new(c.id, c.location, c.meta.clone(), buf));
    core.next_page_id = core.next_page_id.max(next);
    Ok(())
}

fn apply_delta(core: &mut Core, page: PageId, d: &Delta, epochs: u64, tolerant: bool) -> Result<(), String> {
    let Some(p) = core.pages.get_mut(&page) else {
        return if tolerant { Ok(()) } else { Err(format!("delta for unknown page {page}")) };
    };
    d.check_bounds(p.size()).map_err(|e| format!("delta for page {page}: {e}"))?;
    let epoch = p.epoch.checked_add(epochs).ok_or_else(|| format!("epoch of page {page} overflows"))?;
    // SAFETY: `core` is borrowed mutably, so the caller holds the state's exclusive lock (or owns
    // a state nobody else can see yet); no other access to this buffer runs.
    d.apply_unchecked(unsafe { p.buf().as_mut_slice() });
    p.epoch = epoch;
    Ok(())
}

/// Applies a `Batch` record's deltas up to LSN `upto`, read in place from `body`. The deltas
/// after `upto` are still checked, so a record is accepted or refused whole, as by
/// `Record::decode`.
fn apply_batch(core: &mut Core, h: &RecordHeader, body: &[u8], upto: Lsn, tolerant: bool) -> Result<(), String> {
    for_each_batch_delta(h.count, body, |k, page, d| {
        let lsn = h.lsn + k;
        if lsn > upto {
            return Ok(());
        }
        let Some(p) = core.pages.get_mut(&page) else {
            return if tolerant { Ok(()) } else { Err(format!("delta for unknown page {page}")) };
        };
        d.check_bounds(p.size()).map_err(|e| format!("delta for page {page}: {e}"))?;
        let epoch = p.epoch.checked_add(1).ok_or_else(|| format!("epoch of page {page} overflows"))?;
        // SAFETY: `core` is borrowed mutably, so the caller holds the state's exclusive lock (or
        // owns a state nobody else can see yet); no other access to this buffer runs.
        d.apply_unchecked(unsafe { p.buf().as_mut_slice() });
        p.epoch = epoch;
        Ok(())
    })?;
    if h.lsn <= upto {
        core.lsn = upto.min(h.last_lsn());
    }
    Ok(())
}

/// Applies one verified record (the LSNs up to `upto` of it). Errors describe the corruption;
/// on error part of a batch may have been applied (recovery and replay then drop the state;
/// followers check the record first).
pub(crate) fn apply_record(
    state: &impl Recoverable,
    core: &mut Core,
    h: &RecordHeader,
    body: &[u8],
    upto: Lsn,
    tolerant: bool,
) -> Result<(), String> {
    if h.kind == RecordType::Batch as u8 {
        return apply_batch(core, h, body, upto, tolerant);
    }
    apply_decoded(state, core, h, Record::decode(h.kind, h.count, body)?, upto, tolerant)
}

/// [`apply_record`] for a record already decoded from its body (replication checks a record
/// before applying it and decodes it once). A batch here is applied from its decoded deltas;
/// [`apply_record`] reads batches in place instead.
pub(crate) fn apply_decoded(
    state: &impl Recoverable,
    core: &mut Core,
    h: &RecordHeader,
    rec: Record,
    upto: Lsn,
    tolerant: bool,
) -> Result<(), String> {
    match rec {
        Record::PageCreate(c) => create(state, core, &c)?,
        Record::PageFree(id) => {
            if core.pages.remove(&id).is_none() && !tolerant {
                return Err(format!("free of unknown page {id}"));
            }
        }
        Record::Batch(ops) => {
            for (k, (page, d)) in ops.iter().enumerate() {
                let lsn = h.lsn + k as u64;
                if lsn > upto {
                    return Ok(());
                }
                apply_delta(core, *page, d, 1, tolerant)?;
                core.lsn = lsn;
            }
        }
        Record::Compacted(c) => {
            for id in &c.frees {
                if core.pages.remove(id).is_none() && !tolerant {
                    return Err(format!("compacted free of unknown page {id}"));
                }
            }
            for cb in &c.creates {
                create(state, core, cb)?;
            }
            for (page, n, d) in &c.deltas {
                apply_delta(core, *page, d, *n, tolerant)?;
            }
            core.next_page_id = core.next_page_id.max(c.next_page_id);
        }
        Record::Extension { kind, body } => {
            state.replay_extension(core, kind, &body).map_err(|e| e.to_string())?;
        }
    }
    core.lsn = h.last_lsn();
    Ok(())
}

fn log_of(state: &MMSBState) -> Result<&Tlog> {
    if state.is_closed() {
        return Err(StateError::Closed.into());
    }
    state.tlog.as_deref().ok_or_else(|| {
        StateError::Unsupported("the transaction log (open the state with a directory or `logging: true`)".into())
            .into()
    })
}

/// The newest checkpoint of `ckpts` that verifies and that a replay to `lsn` can start from: at
/// or before `lsn`, and not before the chain's first LSN (`chain_base`) unless it is `lsn`
/// itself. `None`: replay starts from the empty state, which only a chain from LSN 0 allows.
pub(crate) fn base_checkpoint(
    storage: &dyn Storage,
    ckpts: &std::collections::BTreeMap<Lsn, String>,
    chain_base: Lsn,
    lsn: Lsn,
) -> Result<Option<CheckpointData>> {
    for (k, name) in ckpts.range(..=lsn).rev() {
        if *k < chain_base && *k != lsn {
            break;
        }
        if let Some(c) = checkpoint::read(storage, name)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// Rebuilds the state right after LSN `lsn` into a new read-only in-memory state (with
/// `config`'s limits, which must name no directory and no log, and empty extensions `ext`, which
/// the replay fills): from checkpoint `base` (or the empty state) plus the records of `chain`
/// after it; `load_base` loads `base` (a checkpoint whose pages are in page files needs the
/// directory's live files). Shared by [`MMSBState::replay_to`] and the read-only directory
/// reader (`tlog::inspect`).
pub(crate) fn replay_chain_to(
    storage: &dyn Storage,
    chain: &[SegFile],
    base: Option<&CheckpointData>,
    lsn: Lsn,
    config: Config,
    ext: Extensions,
    load_base: impl FnOnce(&MMSBState, &mut Core, &CheckpointData) -> Result<()>,
) -> Result<MMSBState> {
    let out = MMSBState::from_core(Core { next_page_id: 1, ext: ext.log, ..Core::default() }, config, true, ext.state);
    {
        let mut core = out.core.write();
        if let Some(c) = base {
            load_base(&out, &mut core, c)?;
        }
        let k = core.lsn;
        if lsn > k {
            let corrupt = |file: &str, offset: u64, reason: String| LogError::Corrupt {
                file: storage.describe(file),
                offset,
                reason,
            };
            walk(storage, chain, OnInvalid::Stop, |h, body, file, off| {
                if h.last_lsn() <= k {
                    return Ok(true);
                }
                if h.lsn > lsn {
                    return Ok(false);
                }
                if h.lsn <= k || (h.kind == RecordType::Compacted as u8 && h.last_lsn() > lsn) {
                    // The LSN falls strictly inside a record that can only be applied whole.
                    return Err(LogError::LsnCompacted { lsn, first: h.lsn, last: h.last_lsn() }.into());
                }
                apply_record(&out, &mut core, h, body, lsn, false).map_err(|r| corrupt(file, off, r))?;
                Ok(core.lsn < lsn)
            })?;
        }
        if core.lsn != lsn {
            return Err(LogError::Corrupt {
                file: storage.describe(""),
                offset: 0,
                reason: format!("the log ends at LSN {} before the requested LSN {lsn}", core.lsn),
            }
            .into());
        }
    }
    Ok(out)
}

impl MMSBState {
    /// Rebuilds the state as it was right after LSN `lsn`, as a new read-only state (writes fail
    /// with `StateError::ReadOnly`); the live state is not disturbed. `lsn` may be any LSN from
    /// the oldest retained checkpoint (or 0 while the log starts at 0) to the current one, except
    /// LSNs strictly inside a compacted run (see `docs/log-format.md`, and
    /// [`MMSBState::compacted_runs`]): those are `LogError::LsnCompacted`, LSNs outside the
    /// retained range (`LogInfo::oldest_lsn ..= LogInfo::lsn`) `LogError::LsnOutOfRange`.
    pub fn replay_to(&self, lsn: Lsn) -> Result<MMSBState> {
        let timer = self.monitor.start(crate::monitoring::Metric::Replay);
        let replayed = self.replay_to_inner(lsn)?;
        timer.stop(&self.monitor);
        Ok(replayed)
    }

    fn replay_to_inner(&self, lsn: Lsn) -> Result<MMSBState> {
        let log = log_of(self)?;
        let _m = log.maint.lock();
        if lsn > self.lsn() {
            return Err(LogError::LsnOutOfRange(lsn).into());
        }
        log.flush_staged()?;
        let storage = log.storage.as_ref();
        let ckpts = log.w.lock().checkpoints.clone();
        let listing = list(storage)?;
        let chain_base = listing.chain.first().and_then(|s| s.header).map_or(0, |h| h.base_lsn);
        let base = base_checkpoint(storage, &ckpts, chain_base, lsn)?;
        if base.is_none() && chain_base != 0 {
            return Err(LogError::LsnOutOfRange(lsn).into());
        }
        let config =
            Config { dir: None, logging: false, tolerant_recovery: false, log_size_cap: 0, ..self.config().clone() };
        // The snapshot gets empty instances of this state's extensions, filled by the replay.
        let ext = self.fresh_extensions(&config);
        let dir = self.config().dir.clone();
        replay_chain_to(storage, &listing.chain, base.as_ref(), lsn, config, ext, |out, core, c| {
            if !c.external {
                return load_checkpoint(out, core, c);
            }
            // PAGE FILES HOOK: the live files, read under this state's lock, with the images.
            let dir = dir.clone().ok_or(StateError::Closed)?;
            let _live = self.core.read();
            crate::runtime::pagefiles::load_external(out, core, c, &dir)?;
            core.next_page_id = c.next_page_id;
            core.lsn = c.lsn;
            out.restore_checkpoint_extension(core, c.extension())
        })
    }

    /// The records of the epoch slice `range` (by LSN), in LSN order: one entry per page
    /// creation, page free, delta (a batch yields one entry per delta), compacted run (when it
    /// overlaps the range) and extension record. Read lazily, one segment at a time; a segment
    /// removed meanwhile by a checkpoint or compaction ends the slice with `LsnOutOfRange`.
    pub fn log_records(&self, range: Range<Lsn>) -> Result<LogSlice> {
        let log = log_of(self)?;
        let _m = log.maint.lock();
        log.flush_staged()?;
        let listing = list(log.storage.as_ref())?;
        let chain_base = listing.chain.first().and_then(|s| s.header).map_or(0, |h| h.base_lsn);
        if range.start <= chain_base && range.start < range.end {
            return Err(LogError::LsnOutOfRange(range.start).into());
        }
        Ok(LogSlice {
            storage: log.storage.clone(),
            chain: listing.chain,
            next_seg: 0,
            last_lsn: chain_base,
            range,
            pending: VecDeque::new(),
            done: false,
        })
    }

    /// The compacted runs of the retained log that [`MMSBState::replay_to`] cannot stop inside,
    /// ascending: for each run `first..=last`, LSNs `first..last` are `LogError::LsnCompacted`
    /// (the run's end `last`, and `first - 1`, are replayable). Runs of one LSN have no inside
    /// and are left out. With `LogInfo::oldest_lsn ..= LogInfo::lsn` this is the replayable
    /// range. Reads the log's segments.
    pub fn compacted_runs(&self) -> Result<Vec<std::ops::RangeInclusive<Lsn>>> {
        let log = log_of(self)?;
        let _m = log.maint.lock();
        log.flush_staged()?;
        let storage = log.storage.as_ref();
        let listing = list(storage)?;
        let mut runs = Vec::new();
        walk(storage, &listing.chain, OnInvalid::Stop, |h, _, _, _| {
            if h.kind == RecordType::Compacted as u8 && h.count > 1 {
                runs.push(h.lsn..=h.last_lsn());
            }
            Ok(true)
        })?;
        Ok(runs)
    }
}

impl LogSlice {
    /// Reads the next segment's entries into `pending`; false when the slice is exhausted.
    fn fill(&mut self) -> Result<bool> {
        while self.pending.is_empty() && !self.done {
            let Some(seg) = self.chain.get(self.next_seg) else {
                self.done = true;
                break;
            };
            self.next_seg += 1;
            if seg.header.is_some_and(|h| h.base_lsn != self.last_lsn) {
                // The segment was replaced (compaction) or the log moved on under the reader.
                return Err(LogError::LsnOutOfRange(self.last_lsn + 1).into());
            }
            let storage = self.storage.clone();
            let range = self.range.clone();
            let pending = &mut self.pending;
            let mut past_end = false;
            let walked = walk(storage.as_ref(), std::slice::from_ref(seg), OnInvalid::Stop, |h, body, file, off| {
                if h.lsn >= range.end {
                    past_end = true;
                    return Ok(false);
                }
                if h.last_lsn() < range.start {
                    return Ok(true);
                }
                let rec = Record::decode(h.kind, h.count, body).map_err(|reason| LogError::Corrupt {
                    file: storage.describe(file),
                    offset: off,
                    reason,
                })?;
                push_entries(pending, h, rec, &range);
                Ok(true)
            })
            .map_err(|e| match e {
                crate::types::error::Error::Log(LogError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    LogError::LsnOutOfRange(self.last_lsn + 1).into()
                }
                e => e,
            })?;
            self.last_lsn = walked.last_lsn;
            if past_end || walked.cut.is_some() {
                // A cut is the live tail (a record being appended): nothing valid follows.
                self.done = true;
            }
        }
        Ok(!self.pending.is_empty())
    }
}

fn push_entries(out: &mut VecDeque<LogEntry>, h: &RecordHeader, rec: Record, range: &Range<Lsn>) {
    match rec {
        Record::PageCreate(c) => out.push_back(LogEntry {
            lsn: h.lsn,
            op: LogOp::CreatePage { id: c.id, size: c.size, location: c.location, meta: c.meta },
        }),
        Record::PageFree(id) => out.push_back(LogEntry { lsn: h.lsn, op: LogOp::FreePage(id) }),
        Record::Batch(ops) => {
            for (k, (page, delta)) in ops.into_iter().enumerate() {
                let lsn = h.lsn + k as u64;
                if range.contains(&lsn) {
                    out.push_back(LogEntry { lsn, op: LogOp::Delta { page, delta } });
                }
            }
        }
        Record::Compacted(c) => {
            out.push_back(LogEntry { lsn: h.last_lsn(), op: LogOp::Compacted { first_lsn: h.lsn, body: c } })
        }
        Record::Extension { kind, body } => out.push_back(LogEntry { lsn: h.lsn, op: LogOp::Extension { kind, body } }),
    }
}

impl Iterator for LogSlice {
    type Item = Result<LogEntry>;
    fn next(&mut self) -> Option<Result<LogEntry>> {
        match self.fill() {
            Ok(true) => self.pending.pop_front().map(Ok),
            Ok(false) => None,
            Err(e) => {
                self.done = true;
                self.pending.clear();
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::tlog::record::encode_batch;
    use crate::types::page::{Location, PageMeta};

    fn header(body: &[u8], lsn: Lsn, count: u64) -> RecordHeader {
        let len = u32::try_from(body.len()).unwrap();
        RecordHeader { len, lsn, count, kind: RecordType::Batch as u8, flags: 0 }
    }

    /// A batch is read in place, but accepted or refused whole: a malformed delta after the
    /// LSN replay stops at, or trailing bytes, still refuse the record; good deltas land with
    /// their epochs, up to `upto`.
    #[test]
    fn batches_apply_in_place_up_to_an_lsn_and_are_checked_whole() {
        let s = MMSBState::in_memory();
        let p = s.create_page(256, Location::Cpu, PageMeta::default()).unwrap();
        let base = s.lsn();
        let a = Delta::write(10, b"abc").unwrap();
        let b = Delta::write(200, &[7; 56]).unwrap();
        let mut good = Vec::new();
        encode_batch([(p, &a), (p, &b)].into_iter(), 2, &mut good);

        let mut core = s.core.write();
        apply_record(&s, &mut core, &header(&good, base + 1, 2), &good, base + 1, false).unwrap();
        assert_eq!(core.lsn, base + 1);
        assert_eq!(core.pages[&p].epoch, 1);
        let bytes = core.pages[&p].buf().to_vec();
        assert_eq!(&bytes[10..13], b"abc");
        assert_eq!(bytes[200], 0, "the delta past `upto` is not applied");

        // The second delta's run length overflows the page: refused by its bounds.
        let big = Delta::write(250, &[1; 10]).unwrap();
        let mut oob = Vec::new();
        encode_batch([(p, &a), (p, &big)].into_iter(), 2, &mut oob);
        let e = apply_record(&s, &mut core, &header(&oob, base + 2, 2), &oob, Lsn::MAX, false).unwrap_err();
        assert!(e.contains("out of bounds"), "{e}");

        // A malformed second delta (its tag) and trailing bytes refuse the record even when
        // `upto` stops before them.
        let mut bad = good.clone();
        let second = 4 + 8 + a.encoded_len() + 8;
        bad[second] = 9;
        let e = apply_record(&s, &mut core, &header(&bad, base + 2, 2), &bad, base + 2, false).unwrap_err();
        assert!(e.starts_with("delta:"), "{e}");
        let mut trailing = good.clone();
        trailing.push(0);
        let e = apply_record(&s, &mut core, &header(&trailing, base + 2, 2), &trailing, base + 2, false).unwrap_err();
        assert!(e.contains("trailing bytes"), "{e}");
        let e = apply_record(&s, &mut core, &header(&good, base + 2, 3), &good, Lsn::MAX, false).unwrap_err();
        assert!(e.contains("covers 3 LSNs"), "{e}");

        // Unknown pages: an error, or skipped in tolerant recovery (the LSNs still advance).
        let mut unknown = Vec::new();
        encode_batch([(PageId(999), &a)].into_iter(), 1, &mut unknown);
        assert!(apply_record(&s, &mut core, &header(&unknown, base + 2, 1), &unknown, Lsn::MAX, false).is_err());
        apply_record(&s, &mut core, &header(&unknown, base + 2, 1), &unknown, Lsn::MAX, true).unwrap();
        assert_eq!(core.lsn, base + 2);
    }
}
