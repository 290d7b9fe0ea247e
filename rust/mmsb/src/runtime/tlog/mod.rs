//! The transaction log (TLog): durable framing, group commit, checkpoints, replay to any LSN,
//! compaction and crash recovery. The on-disk format and the promises are written down in
//! `docs/log-format.md`.
//!
//! - [`storage`]: the file I/O trait, with a disk and an in-memory implementation;
//! - `fault`: a fault-injecting storage for crash tests (only with the `testing` feature);
//! - [`format`](mod@format): byte layout of segments, records and checkpoints;
//! - [`record`]: the record-type registry and record bodies;
//! - [`checkpoint`]: checkpoint files;
//! - [`checksum`]: CRC32C checksums;
//! - `writer` (this file): appends, segment rollover, the group-commit stage;
//! - `group`: the group-commit coordinator;
//! - [`recover`]: walking the segment chain, torn-tail truncation, opening a state;
//! - [`replay`]: applying records, `replay_to`, epoch slices;
//! - [`maintain`]: checkpoint and compaction;
//! - [`inspect`]: reading a state directory without its writer (`open_at`, the `mmsb` tool);
//! - [`api`]: the `MMSBState` methods (public API and the hooks `runtime/state.rs` calls).

// Docs for this module's items come with the commit-path restructuring (issue 16), which
// rewrites it; `missing_docs` is denied everywhere else.
#[allow(clippy::cast_possible_truncation)] // casts not reviewed yet: only the log paths are
pub mod api;
pub mod checkpoint;
pub mod checksum;
// Test scaffolding: not in the default build (nor in the shared library).
#[cfg(any(test, feature = "testing"))]
#[allow(clippy::cast_possible_truncation)] // casts not reviewed yet: only the log paths are
pub mod fault;
pub mod format;
#[allow(clippy::cast_possible_truncation)] // casts not reviewed yet: only the log paths are
mod group;
pub mod inspect;
pub mod maintain;
pub mod record;
#[allow(clippy::cast_possible_truncation)] // casts not reviewed yet: only the log paths are
pub mod recover;
pub mod replay;
pub mod replica;
#[allow(clippy::cast_possible_truncation)] // casts not reviewed yet: only the log paths are
pub mod storage;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::monitoring::{Counter, Metric, Monitor};
use crate::runtime::state::{Durability, Lsn};
use crate::runtime::tlog::format::{
    blob_align, blob_name, record_crc, write_record_header, write_record_header_flags, BlobRef, SegmentHeader,
    RECORD_FLAG_BLOB, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use crate::runtime::tlog::record::RecordType;
use crate::runtime::tlog::storage::{Storage, StorageFile};
use crate::types::error::{Error, LogError, Result};

pub(crate) use api::Pending;
pub use api::{LogEntry, LogInfo, LogOp, LogSlice};
use group::{GroupSync, Ticket};
pub use record::ext_kind;

/// A retained segment of the chain.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegMeta {
    pub(crate) base_lsn: Lsn,
    pub(crate) len: u64,
    /// Bytes of the segment's blob file in use (0 without one).
    pub(crate) blob: u64,
}

/// A segment the writer left without an fsync (`Durability::None` rolls without one); synced,
/// oldest first, before anything newer is (see [`Tlog::sync_now`]).
#[derive(Debug)]
pub(crate) struct Unsynced {
    pub(crate) segno: u64,
    pub(crate) file: Arc<dyn StorageFile>,
    pub(crate) blob: Option<Arc<dyn StorageFile>>,
}

/// Writer state, behind the log's mutex (taken while the state's exclusive lock is held, or by
/// maintenance and the group-commit leader).
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) file: Arc<dyn StorageFile>,
    /// The current segment's blob file, once it has one.
    pub(crate) blob: Option<Arc<dyn StorageFile>>,
    /// End of the blob bytes in use in the current segment's blob file.
    pub(crate) blob_len: u64,
    /// End of the blob file's preallocated range (see `BLOB_PREALLOC`).
    pub(crate) blob_reserved: u64,
    /// End of the zero-filled range of the current segment file (synced modes; see `ZERO_FILL`
    /// and `Tlog::zero_ahead`): synced, or written before a sync that is in progress; 0 when
    /// none.
    pub(crate) filled: u64,
    /// Older segments not yet fsynced (`Durability::None` only), oldest first.
    pub(crate) unsynced: Vec<Unsynced>,
    pub(crate) segno: u64,
    pub(crate) salt: u64,
    /// End of valid data in the current segment.
    pub(crate) offset: u64,
    /// Record bytes appended since open (monotonic): the group-commit position.
    pub(crate) pos: u64,
    pub(crate) last_lsn: Lsn,
    pub(crate) buf: Vec<u8>,
    /// `Durability::GroupCommit` only: records appended but not yet written, which belong at
    /// `stage_at` (the stage ends at `offset`). The group-commit leader writes them with one
    /// write before its fsync: 8 writers each writing their own record kept the file busy
    /// during the fsync and cost a lock hand-off per writer. Their writers are all waiting for
    /// that fsync, so nothing acknowledged is ever only here. Anything else that writes or reads
    /// the current segment calls `Tlog::flush_stage` first.
    pub(crate) stage: Vec<u8>,
    pub(crate) stage_at: u64,
    /// `Durability::GroupCommit` only: records appended since the last group sync took its
    /// batch (see `group`).
    pub(crate) batch: u32,
    pub(crate) poisoned: Option<String>,
    /// The retained chain, by segment number.
    pub(crate) segments: BTreeMap<u64, SegMeta>,
    /// Retained checkpoints, by LSN (at most two: the newest and the previous generation).
    pub(crate) checkpoints: BTreeMap<Lsn, String>,
    /// Record bytes appended since the newest checkpoint (drives `log_size_cap`).
    pub(crate) bytes_since_checkpoint: u64,
    pub(crate) maintenance_failures: u64,
    /// The last failed automatic maintenance pass: its error, status code and the LSN the log
    /// was at.
    pub(crate) last_maintenance_error: Option<(String, crate::types::error::ErrorCode, Lsn)>,
    /// Records skipped by tolerant recovery at the last open.
    pub(crate) skipped_regions: u64,
    /// Bytes cut off a torn tail at the last open.
    pub(crate) truncated_bytes: u64,
    /// Where the last open moved files it did not replay (see `Storage::quarantine`).
    pub(crate) quarantined: Vec<String>,
}

/// Blob files are preallocated this much at a time, ahead of the writes: writes into reserved
/// blocks skip ext4's delayed allocation, which measured 1.3-1.4x faster for 64 KiB appends,
/// preallocation included. At most this much stays reserved past a segment's last blob byte
/// until the segment is removed.
const BLOB_PREALLOC: u64 = 1 << 20;

/// In the synced modes the segment file is filled with zeros (and synced) this far ahead of the
/// records: an fdatasync after overwriting blocks that exist and keep the file's size writes
/// the data only, 80 us here, while one after an append also writes the inode and block
/// allocation, 160-190 us, growing with the bytes. Readers stop at the zeros like at the end of
/// the file (a record never starts with a zero LSN); a rollover cuts them off.
const ZERO_FILL: u64 = 1 << 20;

static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// The group-commit stage is written out early once it would grow past this (many writers, or
/// writers that do not wait), so it stays small.
const STAGE_MAX: u64 = 256 << 10;

/// Writes zeros over `from..to` of `file`.
fn write_zeros(file: &dyn StorageFile, from: u64, to: u64) -> std::io::Result<()> {
    let parts: Vec<&[u8]> = (from..to)
        .step_by(ZEROS.len())
        .map(|at| &ZEROS[..usize::try_from(to - at).map_or(ZEROS.len(), |n| n.min(ZEROS.len()))])
        .collect();
    file.write_vectored_at(from, &parts)
}

/// The log of one state.
#[derive(Debug)]
pub(crate) struct Tlog {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) durability: Durability,
    pub(crate) segment_size: u64,
    pub(crate) log_size_cap: u64,
    /// `Config::replay_budget` (see `maintain::Tlog::maintain_at`).
    pub(crate) replay_budget: u64,
    /// `Config::blob_min`.
    pub(crate) blob_min: u64,
    pub(crate) w: Mutex<Writer>,
    /// `Writer::bytes_since_checkpoint` as of the last append or maintenance step: what the
    /// per-commit cap check reads ([`Tlog::over_cap`]) without taking the writer's lock, which
    /// every commit's check took before (a hand-off per commit with several writers).
    pub(crate) since_checkpoint: AtomicU64,
    sync: GroupSync,
    /// Serialises checkpoint, compaction and log readers against file removal.
    pub(crate) maint: Mutex<()>,
    pub(crate) auto_running: AtomicBool,
    /// The maintenance thread's signal and handle (`maintain::Background`): with a directory,
    /// writers over the cap only signal it.
    pub(crate) bg: maintain::Background,
    /// How long the open that attached this log took to load the checkpoint and replay the
    /// log after it, in microseconds (`LogInfo::recovery_micros`).
    pub(crate) recovery_micros: std::sync::atomic::AtomicU64,
    /// The state's monitor: append and fsync latencies, log bytes and segments.
    pub(crate) monitor: Arc<Monitor>,
    /// Replication hook (`Config::record_observer`, issue 22).
    pub(crate) observer: Option<crate::runtime::replica_hook::ObserverSlot>,
}

impl Tlog {
    pub(crate) fn new(storage: Arc<dyn Storage>, config: &crate::Config, w: Writer, monitor: Arc<Monitor>) -> Tlog {
        Tlog {
            storage,
            // `Replicated` is `GroupCommit` for the local log; the observer adds the rest.
            durability: match config.durability {
                Durability::Replicated => Durability::GroupCommit,
                d => d,
            },
            // `Config::validate` keeps it at 256 or more; the floor guards direct constructions.
            segment_size: config.segment_size.max(SEGMENT_HEADER_LEN as u64 + RECORD_HEADER_LEN as u64),
            log_size_cap: config.log_size_cap,
            replay_budget: config.replay_budget,
            blob_min: config.blob_min,
            since_checkpoint: AtomicU64::new(w.bytes_since_checkpoint),
            w: Mutex::new(w),
            sync: GroupSync::default(),
            maint: Mutex::new(()),
            auto_running: AtomicBool::new(false),
            bg: maintain::Background::default(),
            recovery_micros: std::sync::atomic::AtomicU64::new(0),
            monitor,
            observer: config.record_observer.clone(),
        }
    }

    fn io(&self, what: &str, name: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
        let ctx = format!("{what} {}", self.storage.describe(name));
        move |e| LogError::io(ctx, e).into()
    }

    /// Appends one record covering LSNs `lsn..lsn + count`; `body` writes its body. Called with
    /// the state's exclusive lock held, before the change is applied: on error nothing was logged
    /// (a partial write is truncated away, or the log is poisoned if even that fails).
    pub(crate) fn append(
        &self,
        kind: RecordType,
        lsn: Lsn,
        count: u64,
        body: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Ticket> {
        self.append_parts(kind, lsn, count, |buf, _| body(buf))
    }

    /// Like [`Tlog::append`], for bodies with large borrowed payloads: `fill` appends body bytes
    /// to the buffer and records `(at, payload)` for "`payload` follows the buffer's first `at`
    /// bytes" (ascending `at`). Payloads are checksummed and written in place (one vectored
    /// write), never copied into the buffer.
    pub(crate) fn append_parts<'a>(
        &self,
        kind: RecordType,
        lsn: Lsn,
        count: u64,
        fill: impl FnOnce(&mut Vec<u8>, &mut Vec<(usize, &'a [u8])>),
    ) -> Result<Ticket> {
        let timer = self.monitor.start(Metric::LogAppend);
        let mut w = self.w.lock();
        if let Some(why) = &w.poisoned {
            return Err(LogError::Poisoned(why.clone()).into());
        }
        // Replication hook: a fenced primary refuses the write before anything is logged.
        if let Some(o) = &self.observer {
            o.0.admit()?;
        }
        let mut buf = std::mem::take(&mut w.buf);
        buf.clear();
        buf.resize(RECORD_HEADER_LEN, 0);
        let mut tails = Vec::new();
        fill(&mut buf, &mut tails);
        // Replication hook: the body as recovery decodes it (payloads spliced in), copied only
        // when an observer wants it.
        let body = self.observer.as_ref().map(|_| {
            let mut body = Vec::with_capacity(buf.len() + tails.iter().map(|t| t.1.len()).sum::<usize>());
            let mut from = RECORD_HEADER_LEN;
            for &(at, payload) in &tails {
                body.extend_from_slice(&buf[from..at]);
                body.extend_from_slice(payload);
                from = at;
            }
            body.extend_from_slice(&buf[from..]);
            body
        });
        let r = self.write_record(&mut w, &mut buf, &tails, kind, lsn, count);
        if let (Ok(_), Some(o), Some(body)) = (&r, &self.observer, &body) {
            o.0.appended(crate::runtime::replica_hook::RawRecord { lsn, count, kind: kind as u8, body });
        }
        if buf.capacity() <= 4 << 20 {
            // Keep the buffer for the next record, unless an outsized record grew it.
            w.buf = buf;
        }
        if r.is_ok() {
            self.monitor.set(Counter::LogBytes, w.segments.values().map(|m| m.len + m.blob).sum());
            timer.stop(&self.monitor);
        }
        r
    }

    fn write_record(
        &self,
        w: &mut Writer,
        buf: &mut Vec<u8>,
        tails: &[(usize, &[u8])],
        kind: RecordType,
        lsn: Lsn,
        count: u64,
    ) -> Result<Ticket> {
        let payload = tails.iter().map(|(_, p)| p.len()).sum::<usize>();
        // A record without payload bytes is never a blob record (with `blob_min` 0 it would be
        // one with no pieces, which no reader accepts).
        if payload > 0 && payload as u64 >= self.blob_min {
            return self.write_blob_record(w, buf, tails, kind, lsn, count, payload as u64);
        }
        let len = buf.len() + payload;
        let body_len = u32::try_from(len - RECORD_HEADER_LEN).map_err(|_| {
            Error::InvalidArgument(format!("a log record of {len} bytes exceeds the 4 GiB record limit"))
        })?;
        let len = len as u64;
        self.make_room(w, len, 0)?;
        write_record_header(buf, body_len, lsn, count, kind as u8);
        // The frame in order: buffer pieces interleaved with the payloads.
        let cuts = || {
            let mut from = 0;
            tails.iter().map(move |&(at, payload)| {
                let r = (from..at, payload);
                from = at;
                r
            })
        };
        let last = tails.last().map_or(0, |t| t.0);
        let mut crc_parts: Vec<&[u8]> = Vec::with_capacity(2 * tails.len() + 1);
        for (i, (range, payload)) in cuts().enumerate() {
            crc_parts.push(if i == 0 { &buf[8..range.end] } else { &buf[range] });
            crc_parts.push(payload);
        }
        crc_parts.push(if tails.is_empty() { &buf[8..] } else { &buf[last..] });
        let crc = record_crc(w.salt, crc_parts);
        buf[4..8].copy_from_slice(&crc.to_le_bytes());
        let mut parts: Vec<&[u8]> = Vec::with_capacity(2 * tails.len() + 1);
        for (range, payload) in cuts() {
            parts.push(&buf[range]);
            parts.push(payload);
        }
        parts.push(&buf[last..]);
        if self.durability == Durability::GroupCommit {
            if w.stage.len() as u64 + len > STAGE_MAX {
                self.flush_stage(w)?;
            }
            if w.stage.is_empty() {
                w.stage_at = w.offset;
            }
            parts.iter().for_each(|p| w.stage.extend_from_slice(p));
            return self.appended(w, len, 0, lsn, count);
        }
        self.write_segment(w, &parts)?;
        self.appended(w, len, 0, lsn, count)
    }

    /// Rolls to a new segment if `len` more segment bytes (and `blob` blob bytes) would pass
    /// the segment size, then zero-fills ahead (synced modes).
    fn make_room(&self, w: &mut Writer, len: u64, blob: u64) -> Result<()> {
        if w.offset > SEGMENT_HEADER_LEN as u64 && w.offset + w.blob_len + len + blob > self.segment_size {
            self.roll(w)?;
        }
        self.zero_fill(w, len)
    }

    /// Writes a record's segment bytes at the write position. A failed write cuts any partial
    /// record so later appends follow valid data; if even that fails the file's tail is unknown
    /// and the log is poisoned (no later record may be written after it).
    fn write_segment(&self, w: &mut Writer, parts: &[&[u8]]) -> Result<()> {
        if let Err(e) = w.file.write_vectored_at(w.offset, parts) {
            if let Err(t) = w.file.truncate(w.offset) {
                w.poisoned = Some(format!("append failed ({e}) and truncating the partial record failed ({t})"));
            }
            return Err(LogError::io("append a log record", e).into());
        }
        Ok(())
    }

    /// A record whose payloads go to the segment's blob file, 64 KiB-aligned when large (see
    /// `BLOB_MIN`): the payloads are written there first, then the record (header, blob
    /// descriptor, inline bytes) to the segment, so a record never refers to unwritten bytes.
    #[allow(clippy::too_many_arguments)]
    fn write_blob_record(
        &self,
        w: &mut Writer,
        buf: &mut Vec<u8>,
        tails: &[(usize, &[u8])],
        kind: RecordType,
        lsn: Lsn,
        count: u64,
        total: u64,
    ) -> Result<Ticket> {
        // Its segment bytes follow the staged ones.
        self.flush_stage(w)?;
        let too_big = || Error::InvalidArgument(format!("a log record payload of {total} bytes exceeds 4 GiB"));
        let mut pieces = Vec::with_capacity(tails.len());
        for &(at, p) in tails {
            let at = u32::try_from(at - RECORD_HEADER_LEN).map_err(|_| too_big())?;
            pieces.push((at, u32::try_from(p.len()).map_err(|_| too_big())?));
        }
        let desc = BlobRef::encoded_len(pieces.len());
        buf.splice(RECORD_HEADER_LEN..RECORD_HEADER_LEN, std::iter::repeat_n(0u8, desc));
        let len = buf.len() as u64;
        let body_len = u32::try_from(buf.len() - RECORD_HEADER_LEN).map_err(|_| too_big())?;
        self.make_room(w, len, total)?;
        let off = w.blob_len.next_multiple_of(blob_align(total));
        BlobRef::encode(off, &pieces, &mut buf[RECORD_HEADER_LEN..RECORD_HEADER_LEN + desc]);
        write_record_header_flags(buf, body_len, lsn, count, kind as u8, RECORD_FLAG_BLOB);
        let crc = record_crc(w.salt, std::iter::once(&buf[8..]).chain(tails.iter().map(|t| t.1)));
        buf[4..8].copy_from_slice(&crc.to_le_bytes());
        let blob = self.blob_file(w)?;
        if off + total > w.blob_reserved {
            // Ignored on failure: preallocation only saves time.
            let to = (off + total).next_multiple_of(BLOB_PREALLOC);
            let from = off.max(w.blob_reserved);
            let _ = blob.preallocate(from, to - from);
            w.blob_reserved = to;
        }
        let parts: Vec<&[u8]> = tails.iter().map(|t| t.1).collect();
        if let Err(e) = blob.write_vectored_at(off, &parts) {
            // Nothing refers to these bytes; cut them so the file does not keep garbage.
            let _ = blob.truncate(w.blob_len);
            return Err(LogError::io("append to the log's blob file", e).into());
        }
        self.write_segment(w, &[buf])?;
        let grown = off + total - w.blob_len;
        w.blob_len = off + total;
        self.appended(w, len, grown, lsn, count)
    }

    /// Writes the group-commit stage (see `Writer::stage`) to the current segment. A failed
    /// write cuts what it may have left and poisons the log: the staged records' writers are
    /// waiting for a sync, which then fails for them, and no later record may follow.
    pub(crate) fn flush_stage(&self, w: &mut Writer) -> Result<()> {
        if w.stage.is_empty() {
            return Ok(());
        }
        if let Some(why) = &w.poisoned {
            return Err(LogError::Poisoned(why.clone()).into());
        }
        let r = w.file.write_vectored_at(w.stage_at, &[&w.stage]);
        w.stage.clear();
        if let Err(e) = r {
            let cut = w.file.truncate(w.stage_at);
            w.poisoned = Some(match cut {
                Ok(()) => format!("writing staged log records failed ({e})"),
                Err(t) => format!("writing staged log records failed ({e}) and truncating them failed ({t})"),
            });
            return Err(self.io("append to", &format::segment_name(w.segno))(e));
        }
        if w.stage.capacity() as u64 > 4 * STAGE_MAX {
            w.stage = Vec::new();
        }
        Ok(())
    }

    /// Takes the writer's lock and writes the group-commit stage: for readers of the files.
    pub(crate) fn flush_staged(&self) -> Result<()> {
        self.flush_stage(&mut self.w.lock())
    }

    /// In the synced modes, makes sure the `len` bytes at the write position are zero-filled
    /// (see `ZERO_FILL`); the fill is synced before any record is written into it.
    fn zero_fill(&self, w: &mut Writer, len: u64) -> Result<()> {
        if self.durability == Durability::None || w.offset + len <= w.filled {
            return Ok(());
        }
        let from = w.filled.max(w.offset);
        let to = (w.offset + len).max(w.offset + ZERO_FILL.min(self.segment_size.saturating_sub(w.offset)));
        let name = format::segment_name(w.segno);
        // Zeros past the records are what a reader takes for the end: nothing to undo.
        write_zeros(&*w.file, from, to).map_err(self.io("zero-fill", &name))?;
        if let Err(e) = w.file.sync() {
            w.poisoned = Some(format!("fsync failed: {e}"));
            return Err(self.io("fsync", &name)(e));
        }
        w.filled = to;
        Ok(())
    }

    /// Group commit: the leader zero-fills the next `ZERO_FILL` of the segment once less than
    /// half of it is left ahead of the records, just before its fsync, which then covers the
    /// zeros too. Appenders then never zero-fill (`zero_fill`) under the state's lock: one that
    /// did held it through the fill (0.8 ms) while the other writers parked on it, and cycles
    /// around a fill took 26% of a group-commit run against 9.5% for the fills themselves.
    /// Failures are ignored: the zeros only save time, and an appender that needs them fills
    /// (and reports) itself.
    pub(crate) fn zero_ahead(&self, w: &mut Writer) {
        let end = self.segment_size;
        if w.filled >= end || w.filled.saturating_sub(w.offset) >= ZERO_FILL / 2 || w.poisoned.is_some() {
            return;
        }
        let from = w.filled.max(w.offset);
        let to = (from + ZERO_FILL).min(end);
        if write_zeros(&*w.file, from, to).is_ok() {
            w.filled = to;
        }
    }

    /// The current segment's blob file, created with the segment's first blob record. In the
    /// synced modes its directory entry is made durable before any record refers to it.
    fn blob_file(&self, w: &mut Writer) -> Result<Arc<dyn StorageFile>> {
        if let Some(b) = &w.blob {
            return Ok(b.clone());
        }
        let name = blob_name(w.segno);
        // A spare (a pruned segment's blob file) is overwritten in place: its blocks and cached
        // pages are reused instead of allocated. Its old bytes stay past the ones written; no
        // record names them, and a record's CRC covers every blob byte it names.
        let file = match self.storage.reuse(&name).map_err(self.io("reuse a spare file as", &name))? {
            Some(f) => {
                // Its blocks are allocated up to its old length: no preallocation needed there.
                w.blob_reserved = f.len().unwrap_or(0);
                f
            }
            None => self.storage.create(&name).map_err(self.io("create", &name))?,
        };
        if self.durability != Durability::None {
            self.storage.sync_dir().map_err(self.io("fsync the directory of", &name))?;
        }
        w.blob = Some(file.clone());
        Ok(file)
    }

    /// Bookkeeping after a record of `len` segment bytes (and `blob` new blob-file bytes) was
    /// written; in `Always`, the fsync.
    fn appended(&self, w: &mut Writer, len: u64, blob: u64, lsn: Lsn, count: u64) -> Result<Ticket> {
        w.offset += len;
        w.pos += len + blob;
        w.last_lsn = lsn + count - 1;
        w.bytes_since_checkpoint += len + blob;
        self.since_checkpoint.store(w.bytes_since_checkpoint, Ordering::Relaxed);
        let (segno, offset, blob_len) = (w.segno, w.offset, w.blob_len);
        if let Some(m) = w.segments.get_mut(&segno) {
            m.len = offset;
            m.blob = blob_len;
        }
        if self.durability == Durability::Always {
            let timer = self.monitor.start(Metric::Fsync);
            if let Err(e) = sync_segment(&w.file, w.blob.as_ref()) {
                // After a failed fsync the kernel may have dropped the dirty pages: nothing
                // later can be promised durable, so the log stops here. The caller is told the
                // write failed, so try to cut the record away: a reopen must not resurrect it.
                let _ = w.file.truncate(w.offset - len);
                w.poisoned = Some(format!("fsync failed: {e}"));
                return Err(LogError::io("fsync the log", e).into());
            }
            timer.stop(&self.monitor);
        }
        Ok(match self.durability {
            Durability::GroupCommit => self.sync.ticket(w),
            _ => Ticket::ready(),
        })
    }

    /// Starts the next segment of the chain. In the synced modes the current one is synced
    /// first. In `Durability::None` it is not (an fsync of 64 MiB took twice as long as writing
    /// it, on every roll); it joins `unsynced`, which every later sync of the log syncs first,
    /// oldest first, so no newer segment is made durable while an older one is not. The new
    /// segment's header is synced only in the synced modes.
    pub(crate) fn roll(&self, w: &mut Writer) -> Result<()> {
        let r = self.roll_inner(w);
        match &r {
            Ok(()) => self.monitor.set(Counter::LogSegments, w.segments.len() as u64),
            Err(e) => w.poisoned = Some(format!("starting a new log segment failed: {e}")),
        }
        r
    }

    pub(crate) fn roll_inner(&self, w: &mut Writer) -> Result<()> {
        self.flush_stage(w)?;
        let synced = self.durability != Durability::None;
        if synced {
            // Only the last segment may end in zero fill (a reader stops there). Cut even past
            // `filled`: a zero fill that failed part way may have left zeros beyond it.
            w.file.truncate(w.offset).map_err(self.io("truncate", &format::segment_name(w.segno)))?;
            sync_segment(&w.file, w.blob.as_ref()).map_err(self.io("fsync", &format::segment_name(w.segno)))?;
        } else {
            w.unsynced.push(Unsynced { segno: w.segno, file: w.file.clone(), blob: w.blob.clone() });
        }
        let header = SegmentHeader {
            flags: 0,
            segno: w.segno + 1,
            salt: format::random_salt(),
            prev_salt: w.salt,
            base_lsn: w.last_lsn,
        };
        let file = self.create_segment(&header, synced)?;
        w.file = file;
        w.blob = None;
        w.blob_len = 0;
        w.blob_reserved = 0;
        w.filled = 0;
        w.segno = header.segno;
        w.salt = header.salt;
        w.offset = SEGMENT_HEADER_LEN as u64;
        w.segments.insert(header.segno, SegMeta { base_lsn: header.base_lsn, len: SEGMENT_HEADER_LEN as u64, blob: 0 });
        Ok(())
    }

    /// Creates a segment file holding just its header.
    pub(crate) fn create_segment(&self, header: &SegmentHeader, synced: bool) -> Result<Arc<dyn StorageFile>> {
        let name = format::segment_name(header.segno);
        let file = self.storage.create(&name).map_err(self.io("create", &name))?;
        file.write_at(0, &header.encode()).map_err(self.io("write the header of", &name))?;
        if synced {
            file.sync().map_err(self.io("fsync", &name))?;
            self.storage.sync_dir().map_err(self.io("fsync the directory of", &name))?;
        }
        Ok(file)
    }

    /// Syncs every segment written since the last sync, oldest first (used on close).
    pub(crate) fn sync_now(&self) -> Result<()> {
        let mut w = self.w.lock();
        if w.poisoned.is_some() {
            return Ok(());
        }
        self.sync_unsynced(&mut w)?;
        self.flush_stage(&mut w)?;
        let (pos, file, blob) = (w.pos, w.file.clone(), w.blob.clone());
        drop(w);
        sync_segment(&file, blob.as_ref()).map_err(|e| LogError::io("fsync the log on close", e))?;
        self.mark_durable(pos);
        Ok(())
    }

    /// Syncs the segments `Durability::None` rolled past without a sync, oldest first.
    pub(crate) fn sync_unsynced(&self, w: &mut Writer) -> Result<()> {
        while let Some(u) = w.unsynced.first() {
            sync_segment(&u.file, u.blob.as_ref()).map_err(self.io("fsync", &format::segment_name(u.segno)))?;
            w.unsynced.remove(0);
        }
        Ok(())
    }

    /// True when the log has grown past its cap since the newest checkpoint (as of the last
    /// append or maintenance step: a commit's check, which takes no lock).
    pub(crate) fn over_cap(&self) -> bool {
        self.log_size_cap > 0
            && !self.auto_running.load(Ordering::Relaxed)
            && self.since_checkpoint.load(Ordering::Relaxed) > self.maintain_at()
    }

    /// Sets `Writer::bytes_since_checkpoint` (maintenance), keeping [`Tlog::since_checkpoint`]
    /// in step.
    pub(crate) fn set_since_checkpoint(&self, w: &mut Writer, bytes: u64) {
        w.bytes_since_checkpoint = bytes;
        self.since_checkpoint.store(bytes, Ordering::Relaxed);
    }
}

/// Syncs a segment: its blob file first, so that a durable record never refers to blob bytes
/// that are not.
pub(crate) fn sync_segment(file: &Arc<dyn StorageFile>, blob: Option<&Arc<dyn StorageFile>>) -> std::io::Result<()> {
    if let Some(b) = blob {
        b.sync()?;
    }
    file.sync()
}
