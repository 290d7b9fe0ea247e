//! Walking the segment chain, and recovery at open.
//!
//! The chain starts at the highest-numbered segment flagged `CHAIN_START` (or, if none is left,
//! the lowest-numbered one); each later segment must carry the next number, the previous
//! segment's salt and the next LSN. Recovery replays the newest valid checkpoint, then the
//! records after it, and stops at the first record that does not verify:
//! - nothing valid after it (a torn tail): the tail is cut off and the cut is fsynced;
//! - valid records after it: `LogError::Corrupt`, unless `tolerant_recovery`, which skips to the
//!   next valid record and takes a fresh checkpoint so the damaged region is not needed again.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::runtime::state::{Config, Core, CoreLock, Lsn};
use crate::runtime::tlog::checkpoint;
use crate::runtime::tlog::format::{
    blob_name, check_record, check_record_seeded, parse_blob_name, parse_checkpoint_name, parse_segment_name,
    record_body, salt_crc, segment_name, BlobRef, Invalid, RecordHeader, SegmentHeader, FLAG_CHAIN_START, PAD_KIND,
    RECORD_FLAG_BLOB, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, TMP_SUFFIX,
};
use crate::runtime::tlog::replay::apply_record;
use crate::runtime::tlog::storage::{FileBytes, FsStorage, MemStorage, Storage};
use crate::runtime::tlog::{SegMeta, Tlog, Writer};
use crate::types::error::{LogError, Result};

/// A segment file found in the directory.
#[derive(Debug, Clone)]
pub(crate) struct SegFile {
    pub(crate) name: String,
    pub(crate) segno: u64,
    /// `None`: the header does not verify.
    pub(crate) header: Option<SegmentHeader>,
    /// File length when listed.
    pub(crate) len: u64,
}

/// What the directory holds.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Segments from the chain start on, ascending.
    pub(crate) chain: Vec<SegFile>,
    /// Segments below the chain start (left by an interrupted compaction or cleanup) and their
    /// blob files: older generations, removed once recovery succeeds (segments first).
    pub(crate) leftovers: Vec<String>,
    /// Blob files whose segment file is not there (left by an interrupted removal or
    /// quarantine, or their segment was lost): moved into quarantine. They hold payloads, never
    /// records: whether records are missing is decided by the segments.
    pub(crate) orphan_blobs: Vec<String>,
    /// Checkpoint LSNs and names, ascending.
    pub(crate) checkpoints: BTreeMap<Lsn, String>,
    pub(crate) temps: Vec<String>,
}

pub(crate) fn list(storage: &dyn Storage) -> Result<Listing> {
    let names = storage.list().map_err(|e| LogError::io(format!("list {}", storage.describe("")), e))?;
    let mut l = Listing::default();
    let mut segs = Vec::new();
    let mut blobs = Vec::new();
    for n in names {
        // Only the log's own temp files (a segment or checkpoint name + ".tmp"): any other file
        // in the directory is the user's and is never touched.
        let own_temp = n
            .strip_suffix(TMP_SUFFIX)
            .is_some_and(|b| parse_segment_name(b).is_some() || parse_checkpoint_name(b).is_some());
        if own_temp {
            l.temps.push(n);
        } else if let Some(segno) = parse_segment_name(&n) {
            let mut head = [0u8; SEGMENT_HEADER_LEN];
            let ioe = |e| LogError::io(format!("read {}", storage.describe(&n)), e);
            let file = storage.open(&n).map_err(ioe)?;
            let len = file.len().map_err(ioe)?;
            let read = len >= SEGMENT_HEADER_LEN as u64 && file.read_at(0, &mut head).is_ok();
            let header = if read { SegmentHeader::decode(&head, &storage.describe(&n))? } else { None };
            let header = header.filter(|h| h.segno == segno);
            segs.push(SegFile { name: n, segno, header, len });
        } else if let Some(lsn) = parse_checkpoint_name(&n) {
            l.checkpoints.insert(lsn, n);
        } else if let Some(segno) = parse_blob_name(&n) {
            blobs.push((segno, n));
        }
    }
    segs.sort_by_key(|s| s.segno);
    let start = segs.iter().rposition(|s| s.header.is_some_and(|h| h.flags & FLAG_CHAIN_START != 0)).unwrap_or(0);
    l.leftovers = segs.drain(..start).map(|s| s.name).collect();
    l.chain = segs;
    let old: Vec<u64> = l.leftovers.iter().filter_map(|n| parse_segment_name(n)).collect();
    for (segno, n) in blobs {
        if old.contains(&segno) {
            l.leftovers.push(n);
        } else if !l.chain.iter().any(|s| s.segno == segno) {
            l.orphan_blobs.push(n);
        }
    }
    Ok(l)
}

/// Where a walk stopped early.
#[derive(Debug, Clone)]
pub(crate) struct Cut {
    /// Index into the chain.
    pub(crate) seg: usize,
    /// Byte offset (0: the segment header itself is the problem).
    pub(crate) offset: u64,
    pub(crate) reason: String,
    /// Everything from `offset` to the end of the segment is zero bytes: the writer's zero fill
    /// (or records that never reached the disk), not torn bytes.
    pub(crate) zeros: bool,
}

/// Outcome of a walk.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    pub(crate) last_lsn: Lsn,
    /// Each visited segment: number, header, valid bytes, and end of the blob bytes its valid
    /// records use.
    pub(crate) seg_ends: Vec<(u64, SegmentHeader, u64, u64)>,
    pub(crate) cut: Option<Cut>,
    /// Damaged regions skipped (tolerant mode).
    pub(crate) skipped: u64,
}

/// How a walk treats a record that does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnInvalid {
    /// Stop there (readers of a live log: the tail may be mid-append).
    Stop,
    /// Stop there, and report whether valid records follow (recovery). Damage followed by a
    /// valid record at or before `covered + 1` (the checkpoint's LSN + 1) is skipped.
    Recover { tolerant: bool, covered: Lsn },
}

/// Visits the chain's records in LSN order: `f(header, body, segment name, offset)`; `f`
/// returns `false` to stop. Reads one segment at a time.
pub(crate) fn walk(
    storage: &dyn Storage,
    chain: &[SegFile],
    mode: OnInvalid,
    f: impl FnMut(&RecordHeader, &[u8], &str, u64) -> Result<bool>,
) -> Result<Walk> {
    walk_in(storage, chain, mode, false, f)
}

/// [`walk`]; `exclusive`: the caller holds the storage exclusively (recovery under the LOCK),
/// so segments may be mapped instead of copied ([`Storage::read_exclusive`]), and a segment
/// the checkpoint covers wholly is not read at all (see [`covered_segment`]).
pub(crate) fn walk_in(
    storage: &dyn Storage,
    chain: &[SegFile],
    mode: OnInvalid,
    exclusive: bool,
    mut f: impl FnMut(&RecordHeader, &[u8], &str, u64) -> Result<bool>,
) -> Result<Walk> {
    let mut out = Walk::default();
    let mut prev: Option<(u64, u64)> = None; // (segno, salt)
    let mut i = 0;
    let mut resume_at: Option<usize> = None;
    // After skipping damage (tolerant recovery) the next record may jump ahead in LSN.
    let mut jump_lsn = false;
    while i < chain.len() {
        let seg = &chain[i];
        if exclusive && resume_at.is_none() && !jump_lsn {
            if let Some(skipped) = covered_segment(storage, chain, i, mode, prev, out.last_lsn)? {
                out.last_lsn = skipped.next_base;
                out.seg_ends.push((seg.segno, skipped.header, seg.len, skipped.blob_len));
                prev = Some((skipped.header.segno, skipped.header.salt));
                i += 1;
                continue;
            }
        }
        let read = |name: &str| {
            if exclusive {
                storage.read_exclusive(name)
            } else {
                storage.read(name).map(FileBytes::Owned)
            }
        };
        let data = read(&seg.name).map_err(|e| LogError::io(format!("read {}", storage.describe(&seg.name)), e))?;
        let blob = match read(&blob_name(seg.segno)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileBytes::Owned(Vec::new()),
            Err(e) => return Err(LogError::io(format!("read {}", storage.describe(&blob_name(seg.segno))), e).into()),
        };
        let mut blob_end = 0u64;
        let header_ok = match (seg.header, prev) {
            (None, _) => Err("segment header does not verify"),
            (Some(h), Some((pno, psalt))) if resume_at.is_none() => {
                if h.segno != pno + 1 || h.prev_salt != psalt {
                    Err("segment does not chain to the previous one (stale generation)")
                } else if h.base_lsn != out.last_lsn {
                    Err("segment's base LSN does not follow the previous segment")
                } else {
                    Ok(h)
                }
            }
            (Some(h), _) => Ok(h),
        };
        let h = match header_ok {
            Ok(h) => h,
            Err(reason) => {
                let cut = Cut { seg: i, offset: 0, reason: reason.into(), zeros: false };
                match settle(storage, chain, mode, cut, &mut out, None)? {
                    Some((seg, _)) => {
                        // A segment whose header does not verify cannot be read (its salt is
                        // unknown): resume at the next one. Resuming at this one again looped
                        // forever (tolerant recovery over a damaged header in front of records).
                        i = if seg == i { i + 1 } else { seg };
                        resume_at = Some(SEGMENT_HEADER_LEN);
                        prev = None;
                        jump_lsn = true;
                        continue;
                    }
                    None => return Ok(out),
                }
            }
        };
        if prev.is_none() && resume_at.is_none() {
            out.last_lsn = h.base_lsn;
        }
        let mut off = resume_at.take().unwrap_or(SEGMENT_HEADER_LEN);
        let seed = salt_crc(h.salt);
        while off < data.len() {
            let rec = &data[off..];
            let r = check_record_seeded(rec, seed, &blob);
            let bad = match r {
                Ok(rh) if rh.kind == PAD_KIND => {
                    off += RECORD_HEADER_LEN + rh.len as usize;
                    continue;
                }
                Ok(rh) if rh.lsn == out.last_lsn + 1 || (jump_lsn && rh.lsn > out.last_lsn) => {
                    jump_lsn = false;
                    // Strict recovery skips only damage a checkpoint covers: judged by the LSN of
                    // the record it resumes at, never by a segment header's base LSN (a damaged
                    // or forged base let it skip uncovered records).
                    if let OnInvalid::Recover { tolerant: false, covered } = mode {
                        if rh.lsn > out.last_lsn + 1 && rh.lsn > covered + 1 {
                            return Err(LogError::Corrupt {
                                file: storage.describe(&seg.name),
                                offset: off as u64,
                                reason: format!(
                                    "LSNs {}..={} are missing before this record, and the checkpoint at LSN \
                                     {covered} does not cover them",
                                    out.last_lsn + 1,
                                    rh.lsn - 1
                                ),
                            }
                            .into());
                        }
                    }
                    let stored = &rec[RECORD_HEADER_LEN..RECORD_HEADER_LEN + rh.len as usize];
                    if !f(&rh, &record_body(&rh, stored, &blob), &seg.name, off as u64)? {
                        out.seg_ends.push((seg.segno, h, off as u64, blob_end));
                        return Ok(out);
                    }
                    if rh.flags & RECORD_FLAG_BLOB != 0 {
                        let r = BlobRef::parse(stored).expect("checked by check_record");
                        blob_end = blob_end.max(r.off + r.total);
                    }
                    out.last_lsn = rh.last_lsn();
                    off += RECORD_HEADER_LEN + rh.len as usize;
                    continue;
                }
                Ok(_) => "record LSN out of sequence",
                Err(Invalid::Truncated) => "record is truncated",
                Err(Invalid::Bad(why)) => why,
            };
            let zeros = data[off..].iter().all(|&b| b == 0);
            let bad = Cut { seg: i, offset: off as u64, reason: bad.into(), zeros };
            out.seg_ends.push((seg.segno, h, off as u64, blob_end));
            match settle(storage, chain, mode, bad, &mut out, Some((&data, h.salt, &blob)))? {
                Some((seg, at)) if seg == i => {
                    off = at;
                    jump_lsn = true;
                    out.seg_ends.pop();
                }
                Some((seg, _)) => {
                    i = seg;
                    prev = None;
                    resume_at = Some(SEGMENT_HEADER_LEN);
                    jump_lsn = true;
                    break;
                }
                None => return Ok(out),
            }
        }
        if off >= data.len() {
            out.seg_ends.push((seg.segno, h, data.len() as u64, blob_end));
            prev = Some((h.segno, h.salt));
            i += 1;
        }
    }
    Ok(out)
}

/// A segment recovery does not read (see [`covered_segment`]).
struct Covered {
    header: SegmentHeader,
    /// The next segment's base LSN: this one's last record.
    next_base: Lsn,
    blob_len: u64,
}

/// Segment `i` when recovery need not verify it: the checkpoint it recovers from covers all of
/// it. The headers say so (it chains to the segment before it, the next segment chains to it
/// and starts at or before the checkpoint's LSN), and so does its own framing: the LSN fields
/// of its records, walked by their lengths without checksums, end exactly at the file's end
/// with the next segment's base LSN (a base LSN lowered by damage or forgery never makes
/// records past the checkpoint skippable). Verifying such a segment checksummed records that
/// are never replayed (damage in them was skipped anyway, `OnInvalid::Recover`), blob payloads
/// included: after a day of writes that was most of the open (issue 21: 0.2-1.0 s of a 1 GiB
/// state's reopen went to the 400 MB of log its newest checkpoint covered). Its bytes are still
/// verified where they are used: `replay_to`, compaction, `mmsb verify`.
fn covered_segment(
    storage: &dyn Storage,
    chain: &[SegFile],
    i: usize,
    mode: OnInvalid,
    prev: Option<(u64, u64)>,
    last_lsn: Lsn,
) -> Result<Option<Covered>> {
    let OnInvalid::Recover { covered, .. } = mode else { return Ok(None) };
    let (Some(h), Some(next)) = (chain[i].header, chain.get(i + 1).and_then(|n| n.header)) else { return Ok(None) };
    let chains_in = match prev {
        Some((pno, psalt)) => h.segno == pno + 1 && h.prev_salt == psalt && h.base_lsn == last_lsn,
        None => true,
    };
    let chains_out = next.segno == h.segno + 1 && next.prev_salt == h.salt && next.base_lsn >= h.base_lsn;
    if !(chains_in && chains_out && next.base_lsn <= covered) {
        return Ok(None);
    }
    let name = &chain[i].name;
    let data = storage.read_exclusive(name).map_err(|e| LogError::io(format!("read {}", storage.describe(name)), e))?;
    if framed_last_lsn(&data, h.base_lsn) != Some(next.base_lsn) {
        return Ok(None);
    }
    let bname = blob_name(h.segno);
    let blob_len = match storage.open(&bname).and_then(|b| b.len()) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(LogError::io(format!("read {}", storage.describe(&bname)), e).into()),
    };
    Ok(Some(Covered { header: h, next_base: next.base_lsn, blob_len }))
}

/// The last LSN of a segment's records by their framing alone (lengths and LSN fields, no
/// checksum): `base` when it holds none; `None` unless the records end exactly at its end and
/// their LSNs follow each other from `base` on.
fn framed_last_lsn(data: &[u8], base: Lsn) -> Option<Lsn> {
    let le64 = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let (mut off, mut last) = (SEGMENT_HEADER_LEN, base);
    while off < data.len() {
        let h = data.get(off..off + RECORD_HEADER_LEN)?;
        let len = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes")) as usize;
        let (lsn, count) = (le64(&h[8..16]), le64(&h[16..24]));
        if h[24] != PAD_KIND {
            if lsn != last + 1 || count == 0 {
                return None;
            }
            last = lsn.checked_add(count - 1)?;
        }
        off = off.checked_add(RECORD_HEADER_LEN + len)?;
    }
    (off == data.len()).then_some(last)
}

/// What follows a record that does not verify.
enum After {
    /// Nothing valid: a torn tail.
    Nothing,
    /// Bytes that cannot be verified (behind a damaged segment header) and nowhere to resume.
    Unreadable,
    /// The next valid record: segment index, offset, its first LSN.
    At(usize, usize, Lsn),
}

/// Decides what happens at a record that does not verify. Returns where to resume (past damage
/// that is skippable) or `None` to stop (with `out.cut` set).
fn settle(
    storage: &dyn Storage,
    chain: &[SegFile],
    mode: OnInvalid,
    cut: Cut,
    out: &mut Walk,
    seg_data: Option<(&[u8], u64, &[u8])>,
) -> Result<Option<(usize, usize)>> {
    let OnInvalid::Recover { tolerant, covered } = mode else {
        out.cut = Some(cut);
        return Ok(None);
    };
    let corrupt = |cut: &Cut| {
        Err(LogError::Corrupt {
            file: storage.describe(&chain[cut.seg].name),
            offset: cut.offset,
            reason: format!("{} (valid records follow, so this is not a torn tail)", cut.reason),
        }
        .into())
    };
    match valid_after(chain, &cut, out.last_lsn, seg_data) {
        After::Nothing => {
            out.cut = Some(cut);
            Ok(None)
        }
        // Damage only in records the checkpoint already covers costs replay history, not data.
        After::At(seg, off, lsn) if tolerant || lsn <= covered + 1 => {
            out.skipped += 1;
            Ok(Some((seg, off)))
        }
        After::Unreadable if tolerant => {
            out.skipped += 1;
            out.cut = Some(cut);
            Ok(None)
        }
        _ => corrupt(&cut),
    }
}

/// Finds the first valid record after a cut: in the same segment (any offset, same salt, a later
/// LSN) or a later segment that chains to this one.
fn valid_after(chain: &[SegFile], cut: &Cut, last_lsn: Lsn, seg_data: Option<(&[u8], u64, &[u8])>) -> After {
    if let Some((data, salt, blob)) = seg_data.filter(|_| !cut.zeros) {
        let from = cut.offset as usize + 1;
        let seed = salt_crc(salt);
        for p in from..data.len().saturating_sub(RECORD_HEADER_LEN - 1) {
            if let Ok(h) = check_record_seeded(&data[p..], seed, blob) {
                if h.lsn > last_lsn {
                    return After::At(cut.seg, p, h.lsn);
                }
            }
        }
    }
    let this = &chain[cut.seg];
    let later = chain.iter().enumerate().skip(cut.seg + 1).find_map(|(j, s)| {
        let h = s.header?;
        let chains = match this.header {
            Some(t) => h.prev_salt == t.salt && cut.offset != 0,
            None => h.segno == this.segno + 1 && h.base_lsn >= last_lsn,
        };
        chains.then_some(After::At(j, SEGMENT_HEADER_LEN, h.base_lsn + 1))
    });
    match later {
        Some(a) => a,
        // A header that does not verify in front of record bytes is damage, not a torn
        // creation (segment headers are written, and in synced modes fsynced, before records).
        None if cut.offset == 0 && this.header.is_none() && this.len > SEGMENT_HEADER_LEN as u64 => After::Unreadable,
        None => After::Nothing,
    }
}

/// The blob file of segment `segno` (empty when it has none).
pub(crate) fn read_blob(storage: &dyn Storage, segno: u64) -> Result<Vec<u8>> {
    let name = blob_name(segno);
    match storage.read(&name) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(LogError::io(format!("read {}", storage.describe(&name)), e).into()),
    }
}

/// What recovery and replay need of the state they rebuild: its lock, its page allocator, its
/// log extensions, and a place to attach the log. The log fills a `Recoverable` without knowing
/// what else the state holds; `MMSBState` implements it (runtime/tlog/api.rs).
pub(crate) trait Recoverable {
    /// The configuration the state was opened with.
    fn recovery_config(&self) -> &Config;
    /// The state's lock around what recovery fills.
    fn core_lock(&self) -> &CoreLock;
    /// A zeroed page buffer of `size` bytes for page `id` (its page file, with file-backed
    /// pages).
    fn allocate_page(&self, id: crate::types::page::PageId, size: u64) -> Result<crate::types::page::PageBuf>;
    /// The state's page files, with file-backed pages (`runtime::pagefiles`).
    fn page_files(&self) -> Option<&crate::runtime::pagefiles::PageFiles>;
    /// Called with the directory's LOCK held, before recovery touches any file (readers in other
    /// processes learn that a new writer generation is recovering).
    fn before_recovery(&mut self) -> Result<()>;
    /// Replays an extension record through the extension that owns its kind.
    fn replay_extension(&self, core: &mut Core, kind: u8, body: &[u8]) -> Result<()>;
    /// The checkpoint's extension section for `core`.
    fn checkpoint_section(&self, core: &Core) -> Vec<u8>;
    /// Restores a checkpoint's extension section into `core`.
    fn restore_checkpoint_section(&self, core: &mut Core, bytes: &[u8]) -> Result<()>;
    /// The monitor the log records its latencies and counters in.
    fn log_monitor(&self) -> Arc<crate::monitoring::Monitor>;
    /// Attaches the recovered log; appends continue through it.
    fn attach(&mut self, log: Tlog);
}

/// Opens the storage of a state with logging on, recovers into `state`, and attaches the log.
pub(crate) fn open_into(state: &mut impl Recoverable) -> Result<()> {
    let config = state.recovery_config().clone();
    let storage: Arc<dyn Storage> = match &config.dir {
        Some(dir) => Arc::new(FsStorage::new(dir).map_err(|e| {
            if crate::runtime::tlog::storage::is_dir_locked(&e) {
                LogError::Busy { dir: dir.display().to_string() }
            } else {
                LogError::io(format!("open {}", dir.display()), e)
            }
        })?),
        None => Arc::new(MemStorage::new()),
    };
    // SHARED HEADER HOOK: with the LOCK held and before recovery touches a page file, readers
    // learn that a new writer generation is recovering.
    state.before_recovery()?;
    open_with(state, storage)
}

/// Recovers into `state` from `storage` and attaches the log, in five steps: list the files
/// (removing temporaries), load the newest valid checkpoint, replay the chain after it, decide
/// what the recovered state does not reach (refuse lost records, quarantine, cut the torn
/// tail) and attach the log where appends continue.
pub(crate) fn open_with(state: &mut impl Recoverable, storage: Arc<dyn Storage>) -> Result<()> {
    let config = state.recovery_config().clone();
    let tolerant = config.tolerant_recovery;
    let listing = list_and_clean(storage.as_ref())?;
    let ckpt = newest_checkpoint(storage.as_ref(), &listing)?;
    let ckpt_lsn = ckpt.as_ref().map_or(0, |c| c.lsn);
    // The directory's LOCK is held (or the storage is this state's own): segments may be mapped.
    let walk = replay_chain(state, storage.as_ref(), &listing, ckpt.as_ref(), tolerant, true)?;
    let last_lsn = walk.last_lsn.max(ckpt_lsn);
    if !tolerant {
        refuse_lost_records(storage.as_ref(), &listing, &walk, &dropped_segments(&listing, &walk), last_lsn)?;
    }
    // Recovery succeeds from here on.
    let settled = settle_files(state, storage.as_ref(), &listing, &walk, ckpt_lsn, ckpt.is_some(), last_lsn)?;
    attach_log(state, storage, &config, &listing, &walk, ckpt.as_ref(), last_lsn, settled)
}

/// Maps an I/O error to `LogError::Io` naming `what` was being done.
fn io(what: String) -> impl FnOnce(std::io::Error) -> LogError {
    move |e| LogError::io(what, e)
}

/// Step 1: the files of the directory, with the temporaries of interrupted writes removed.
fn list_and_clean(storage: &dyn Storage) -> Result<Listing> {
    let listing = list(storage)?;
    for t in &listing.temps {
        storage.remove(t).map_err(io(format!("remove {}", storage.describe(t))))?;
    }
    Ok(listing)
}

/// Step 2: the newest checkpoint that verifies (a newer format version is an error, not a
/// fallback), and a check that the chain does not start after it. Opened lazily
/// ([`checkpoint::open_lazy`]): its page images are mapped, not read, and their CRC is not
/// checked here (`docs/reliability.md`, "Fast open"); a checkpoint shorter than its header
/// says, or whose index does not verify, is skipped for the previous generation.
pub(crate) fn newest_checkpoint(
    storage: &dyn Storage,
    listing: &Listing,
) -> Result<Option<checkpoint::CheckpointData>> {
    let mut ckpt = None;
    for name in listing.checkpoints.values().rev() {
        if let Some(c) = checkpoint::open_lazy(storage, name)? {
            ckpt = Some(c);
            break;
        }
    }
    let ckpt_lsn = ckpt.as_ref().map_or(0, |c| c.lsn);
    let chain_base = listing.chain.first().and_then(|s| s.header).map(|h| h.base_lsn);
    if let Some(base) = chain_base {
        if base > ckpt_lsn {
            return Err(LogError::Corrupt {
                file: storage.describe(&listing.chain[0].name),
                offset: 0,
                reason: format!("the log starts after LSN {base} but the newest valid checkpoint is at LSN {ckpt_lsn}"),
            }
            .into());
        }
    }
    Ok(ckpt)
}

/// Step 3: loads the checkpoint into `state` and replays the records after it, up to the first
/// one that does not verify (or past skippable damage when `tolerant`).
pub(crate) fn replay_chain(
    state: &impl Recoverable,
    storage: &dyn Storage,
    listing: &Listing,
    ckpt: Option<&checkpoint::CheckpointData>,
    tolerant: bool,
    exclusive: bool,
) -> Result<Walk> {
    let ckpt_lsn = ckpt.map_or(0, |c| c.lsn);
    let mut core = state.core_lock().write();
    if let Some(c) = ckpt {
        crate::runtime::tlog::replay::load_checkpoint(state, &mut core, c)?;
    }
    let mode = OnInvalid::Recover { tolerant, covered: ckpt_lsn };
    walk_in(storage, &listing.chain, mode, exclusive, |h, body, file, off| {
        if h.last_lsn() <= ckpt_lsn {
            return Ok(true);
        }
        if h.lsn <= ckpt_lsn {
            return Err(LogError::Corrupt {
                file: storage.describe(file),
                offset: off,
                reason: format!("record {}..={} straddles the checkpoint at {ckpt_lsn}", h.lsn, h.last_lsn()),
            }
            .into());
        }
        apply_record(state, &mut core, h, body, Lsn::MAX, tolerant).map_err(|reason| LogError::Corrupt {
            file: storage.describe(file),
            offset: off,
            reason,
        })?;
        Ok(true)
    })
}

/// Step 4a: the segments the recovered state does not reach: every segment past the cut (and
/// the cut one when its header is the problem).
pub(crate) fn dropped_segments<'a>(listing: &'a Listing, walk: &Walk) -> Vec<&'a SegFile> {
    match &walk.cut {
        Some(cut) => listing
            .chain
            .iter()
            .enumerate()
            .filter(|(j, _)| *j > cut.seg || cut.offset == 0 && *j == cut.seg)
            .map(|(_, s)| s)
            .collect(),
        None => Vec::new(),
    }
}

/// What [`settle_files`] leaves for the log's writer.
struct Settled {
    checkpoints: BTreeMap<Lsn, String>,
    quarantined: Vec<String>,
    truncated: u64,
}

/// Step 4b, once recovery is known to succeed: older generations go, except evidence (kept
/// aside); a fresh checkpoint after skipped damage; the torn tail cut.
fn settle_files(
    state: &impl Recoverable,
    storage: &dyn Storage,
    listing: &Listing,
    walk: &Walk,
    ckpt_lsn: Lsn,
    has_ckpt: bool,
    last_lsn: Lsn,
) -> Result<Settled> {
    let mut quarantined = quarantine_leftovers(storage, listing, ckpt_lsn)?;
    let mut checkpoints = listing.checkpoints.clone();
    checkpoints.retain(|lsn, _| *lsn <= ckpt_lsn && has_ckpt);
    if walk.skipped > 0 {
        checkpoint_after_skips(state, storage, &mut checkpoints, &mut quarantined, last_lsn)?;
    }
    let truncated = cut_tail(storage, listing, walk, &mut quarantined)?;
    if walk.cut.is_some() || !listing.orphan_blobs.is_empty() || !listing.leftovers.is_empty() {
        storage.sync_dir().map_err(io(format!("fsync {}", storage.describe(""))))?;
    }
    Ok(Settled { checkpoints, quarantined, truncated })
}

/// Older generations can go, unless one holds records past the checkpoint recovered from (a
/// chain start forged or damaged in front of it, a copy put there by hand, or an interrupted
/// compaction's old chain): that one is kept aside, as are blob files without their segment.
/// Returns the names quarantined.
fn quarantine_leftovers(storage: &dyn Storage, listing: &Listing, ckpt_lsn: Lsn) -> Result<Vec<String>> {
    let mut quarantined = Vec::new();
    let mut kept = Vec::new();
    for t in &listing.leftovers {
        let seg = parse_segment_name(t).map(|segno| SegFile {
            name: t.clone(),
            segno,
            header: storage
                .read(t)
                .ok()
                .and_then(|d| SegmentHeader::decode(&d, t).ok().flatten())
                .filter(|h| h.segno == segno),
            len: 0,
        });
        // (Segments come first in `leftovers`: a kept one's blob file is kept with it.)
        let kept_blob = parse_blob_name(t).is_some_and(|b| kept.contains(&b));
        match seg {
            Some(seg) if evidence(storage, &seg, ckpt_lsn)?.is_some() => {
                kept.push(seg.segno);
                set_aside(storage, t, &mut quarantined, true)?
            }
            _ if kept_blob => set_aside(storage, t, &mut quarantined, true)?,
            _ => storage.remove(t).map_err(io(format!("remove {}", storage.describe(t))))?,
        }
    }
    for b in &listing.orphan_blobs {
        quarantined.push(storage.quarantine(b).map_err(io(format!("quarantine {}", storage.describe(b))))?);
    }
    Ok(quarantined)
}

/// Tolerant recovery skipped damage: checkpoint the recovered state before any log file is
/// touched, so the damaged region is never needed again (a crash before the new chain exists
/// just repeats this recovery). The older checkpoints are evidence, not needed any more: moved
/// aside, never deleted.
fn checkpoint_after_skips(
    state: &impl Recoverable,
    storage: &dyn Storage,
    checkpoints: &mut BTreeMap<Lsn, String>,
    quarantined: &mut Vec<String>,
    last_lsn: Lsn,
) -> Result<()> {
    let mut core = state.core_lock().write();
    core.lsn = last_lsn;
    let ext = state.checkpoint_section(&core);
    let (name, _) = checkpoint::write(storage, &core, &ext)?;
    for (_, old) in std::mem::take(checkpoints) {
        if old != name {
            set_aside(storage, &old, quarantined, true)?;
        }
    }
    checkpoints.insert(last_lsn, name);
    Ok(())
}

/// Cuts a torn tail: truncates the segment where it starts; moves the files after it aside
/// (newest first, so an interrupted pass leaves a shorter chain, not a gap), removing only
/// those that hold nothing (torn creations). Returns the bytes cut off.
fn cut_tail(storage: &dyn Storage, listing: &Listing, walk: &Walk, quarantined: &mut Vec<String>) -> Result<u64> {
    let mut truncated = 0u64;
    let Some(cut) = &walk.cut else { return Ok(0) };
    for (j, s) in listing.chain.iter().enumerate().skip(cut.seg).rev() {
        let len = storage.open(&s.name).and_then(|f| f.len()).unwrap_or(0);
        let blob = blob_name(s.segno);
        if j == cut.seg && cut.offset > 0 {
            if !cut.zeros {
                truncated += len - cut.offset;
            }
            let f = storage.open(&s.name).map_err(io(format!("open {}", storage.describe(&s.name))))?;
            f.truncate(cut.offset).map_err(io(format!("truncate {}", storage.describe(&s.name))))?;
            f.sync().map_err(io(format!("fsync {}", storage.describe(&s.name))))?;
            // Blob bytes of the records cut off go too.
            let end = walk.seg_ends.iter().find(|e| e.0 == s.segno).map_or(0, |e| e.3);
            if let Ok(b) = storage.open(&blob) {
                let blen = b.len().map_err(io(format!("read {}", storage.describe(&blob))))?;
                if blen > end {
                    truncated += blen - end;
                    b.truncate(end).map_err(io(format!("truncate {}", storage.describe(&blob))))?;
                    b.sync().map_err(io(format!("fsync {}", storage.describe(&blob))))?;
                }
            }
        } else {
            truncated += len + storage.open(&blob).and_then(|f| f.len()).unwrap_or(0);
            // The segment first: a blob file without its segment is found again next time.
            set_aside(storage, &s.name, quarantined, true)?;
            set_aside(storage, &blob, quarantined, true)?;
        }
    }
    Ok(truncated)
}

/// Step 5: builds the log's writer over the retained chain (appending to its last segment when
/// the log reaches the recovered state, else starting a fresh chain after everything), prunes
/// old checkpoint generations, and attaches the log to `state` at `last_lsn`.
#[allow(clippy::too_many_arguments)] // the steps' results, each used once
fn attach_log(
    state: &mut impl Recoverable,
    storage: Arc<dyn Storage>,
    config: &Config,
    listing: &Listing,
    walk: &Walk,
    ckpt: Option<&checkpoint::CheckpointData>,
    last_lsn: Lsn,
    settled: Settled,
) -> Result<()> {
    let Settled { checkpoints, quarantined, truncated } = settled;
    // The retained chain after the cut.
    let mut segments = BTreeMap::new();
    for (segno, h, end, blob) in &walk.seg_ends {
        segments.insert(*segno, SegMeta { base_lsn: h.base_lsn, len: *end, blob: *blob });
    }
    let bytes_since: u64 = segments.values().map(|m| m.len + m.blob - SEGMENT_HEADER_LEN as u64).sum();
    let tail = walk.seg_ends.last().copied();
    let w = Writer {
        file: Arc::new(NoFile),
        blob: None,
        blob_len: 0,
        blob_reserved: 0,
        filled: 0,
        unsynced: Vec::new(),
        segno: 0,
        salt: 0,
        offset: 0,
        pos: 0,
        last_lsn,
        buf: Vec::new(),
        stage: Vec::new(),
        stage_at: 0,
        batch: 0,
        poisoned: None,
        segments,
        checkpoints,
        bytes_since_checkpoint: bytes_since,
        maintenance_failures: 0,
        last_maintenance_error: None,
        skipped_regions: walk.skipped,
        truncated_bytes: truncated,
        quarantined,
    };
    let log = Tlog::new(storage.clone(), config, w, state.log_monitor());
    {
        let mut w = log.w.lock();
        match tail {
            // Keep appending to the last segment when the log reaches the recovered state.
            Some((segno, h, end, blob_end)) if walk.last_lsn == last_lsn && walk.skipped == 0 => {
                let name = segment_name(segno);
                w.file = storage.open(&name).map_err(io(format!("open {}", storage.describe(&name))))?;
                w.segno = segno;
                w.salt = h.salt;
                w.offset = end;
                // Appends continue after the blob bytes in use; bytes past them (a blob written
                // just before a crash, its record never) are unreferenced and get overwritten.
                let bname = blob_name(segno);
                w.blob = match storage.open(&bname) {
                    Ok(b) => Some(b),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(LogError::io(format!("open {}", storage.describe(&bname)), e).into()),
                };
                w.blob_len = blob_end;
            }
            _ => {
                // No usable log after the checkpoint: start a fresh chain after everything.
                let segno = listing.chain.last().map_or(1, |s| s.segno + 1);
                let header = SegmentHeader {
                    flags: FLAG_CHAIN_START,
                    segno,
                    salt: super::format::random_salt(),
                    prev_salt: 0,
                    base_lsn: last_lsn,
                };
                // Synced whenever the storage can lose power (any storage given to
                // `open_with_storage`, not just a directory): an unsynced chain start would take
                // every later fsynced record with it.
                let synced = config.dir.is_some() || config.durability != crate::runtime::state::Durability::None;
                w.file = log.create_segment(&header, synced)?;
                // The old chain ends before the recovered state (damage, skipped damage, or a
                // checkpoint that outlived unsynced segments): its files are moved aside whole,
                // even one a cut emptied.
                for s in &listing.chain {
                    set_aside(storage.as_ref(), &s.name, &mut w.quarantined, false)?;
                    set_aside(storage.as_ref(), &blob_name(s.segno), &mut w.quarantined, false)?;
                }
                w.segments.clear();
                w.segments.insert(segno, SegMeta { base_lsn: last_lsn, len: SEGMENT_HEADER_LEN as u64, blob: 0 });
                w.segno = segno;
                w.salt = header.salt;
                w.offset = SEGMENT_HEADER_LEN as u64;
                w.bytes_since_checkpoint = 0;
            }
        }
        // An interrupted checkpoint may have left older generations behind; after skipped
        // damage only the checkpoint just taken is kept.
        let keep = if walk.skipped > 0 { 1 } else { super::maintain::CHECKPOINT_GENERATIONS };
        super::maintain::prune(&log, &mut w, keep)?;
        if let Some(c) = &ckpt {
            let since: u64 = w
                .segments
                .values()
                .filter(|m| m.base_lsn >= c.lsn)
                .map(|m| m.len + m.blob - SEGMENT_HEADER_LEN as u64)
                .sum();
            w.bytes_since_checkpoint = since;
        }
    }
    {
        let mut core = state.core_lock().write();
        core.lsn = last_lsn;
    }
    state.attach(log);
    Ok(())
}

/// Drops a file recovery does not keep: moved into quarantine, or removed when it holds nothing
/// (no non-zero byte: a torn creation or zero fill) and `remove_empty`. Missing files are
/// skipped.
fn set_aside(storage: &dyn Storage, name: &str, quarantined: &mut Vec<String>, remove_empty: bool) -> Result<()> {
    let data = match storage.read(name) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(LogError::io(format!("read {}", storage.describe(name)), e).into()),
    };
    if remove_empty && data.iter().all(|&b| b == 0) {
        storage.remove(name).map_err(|e| LogError::io(format!("remove {}", storage.describe(name)), e))?;
    } else {
        let to =
            storage.quarantine(name).map_err(|e| LogError::io(format!("quarantine {}", storage.describe(name)), e))?;
        quarantined.push(to);
    }
    Ok(())
}

/// Strict recovery's rule: only the torn tail of the newest segment may be cut. Fails with
/// `Corrupt` (changing nothing) when a file the recovered state does not reach proves that
/// records past `last_lsn` existed: a segment past the cut that starts after `last_lsn` or holds
/// records past it, or record bytes behind a header that does not verify. A non-newest segment's end needs no field of its own: the next segment's
/// base LSN proves it.
pub(crate) fn refuse_lost_records(
    storage: &dyn Storage,
    listing: &Listing,
    walk: &Walk,
    dropped: &[&SegFile],
    last_lsn: Lsn,
) -> Result<()> {
    let Some(cut) = &walk.cut else { return Ok(()) };
    let cut_file = storage.describe(&listing.chain[cut.seg].name);
    // Missing files are counted from the last segment replayed: the cut one, or the one before
    // it when the cut segment's header is the break (it does not chain, so it is dropped too).
    let mut prev = match cut.seg.checked_sub(1) {
        Some(before) if cut.offset == 0 => listing.chain[before].segno,
        _ => listing.chain[cut.seg].segno,
    };
    for s in dropped {
        let missing: Vec<String> = (prev + 1..s.segno).take(4).map(segment_name).collect();
        prev = s.segno;
        let Some((what, upto)) = evidence(storage, s, last_lsn)? else { continue };
        let range = match upto {
            Some(end) => format!("LSNs {}..={end} are missing or cannot be replayed", last_lsn + 1),
            None => format!("records after LSN {last_lsn} are missing"),
        };
        let gap =
            if missing.is_empty() { String::new() } else { format!("; missing segment files: {}", missing.join(", ")) };
        return Err(LogError::Corrupt {
            file: storage.describe(&s.name),
            offset: 0,
            reason: format!(
                "{what}, but the log before it ends at LSN {last_lsn} ({cut_file} at byte {}: {}): {range}{gap}. Only the newest segment may end early; nothing was changed (tolerant recovery moves the files past the break into quarantine/)",
                cut.offset, cut.reason
            ),
        }
        .into());
    }
    Ok(())
}

/// What in segment file `s` shows records past `lsn`, and the last LSN it proves existed.
fn evidence(storage: &dyn Storage, s: &SegFile, lsn: Lsn) -> Result<Option<(String, Option<Lsn>)>> {
    let data = storage.read(&s.name).map_err(|e| LogError::io(format!("read {}", storage.describe(&s.name)), e))?;
    let Some(h) = s.header else {
        // A torn creation holds at most part of a header (zero fill past it is no record).
        let records = data.get(SEGMENT_HEADER_LEN..).is_some_and(|r| r.iter().any(|&b| b != 0));
        return Ok(records.then(|| ("its header does not verify but record bytes follow it".to_string(), None)));
    };
    let blob = read_blob(storage, s.segno)?;
    let mut top = h.base_lsn;
    let mut off = SEGMENT_HEADER_LEN;
    while let Some(Ok(r)) = data.get(off..).map(|rest| check_record(rest, h.salt, &blob)) {
        if r.kind != PAD_KIND {
            top = top.max(r.last_lsn());
        }
        off += RECORD_HEADER_LEN + r.len as usize;
    }
    Ok(if top > lsn {
        // Its base LSN proves every LSN up to it was written before this segment started.
        let upto = if h.base_lsn > lsn { h.base_lsn } else { top };
        Some((format!("it holds LSNs up to {top} (its records follow LSN {})", h.base_lsn), Some(upto)))
    } else {
        None
    })
}

/// Placeholder file for a writer before its segment is opened.
#[derive(Debug)]
struct NoFile;

impl super::storage::StorageFile for NoFile {
    fn write_at(&self, _: u64, _: &[u8]) -> std::io::Result<()> {
        Err(std::io::Error::other("no segment open"))
    }
    fn append(&self, _: &[u8]) -> std::io::Result<u64> {
        Err(std::io::Error::other("no segment open"))
    }
    fn read_at(&self, _: u64, _: &mut [u8]) -> std::io::Result<()> {
        Err(std::io::Error::other("no segment open"))
    }
    fn len(&self) -> std::io::Result<u64> {
        Ok(0)
    }
    fn truncate(&self, _: u64) -> std::io::Result<()> {
        Ok(())
    }
    fn sync(&self) -> std::io::Result<()> {
        Ok(())
    }
}
