//! Reading a state directory without its writer: the state right after any replayable LSN
//! ([`MMSBState::open_at`]), what the directory holds ([`DirLog::info`]), its records
//! ([`DirLog::records`]), and a check of every record, the segment chain and the checkpoints
//! ([`DirLog::verify`]). The `mmsb` command-line tool (`rust/mmsb-cli`) is built on these.
//!
//! Nothing here takes the writer's `LOCK` or creates, changes or removes a file: files are opened
//! read-only through [`ReadOnlyDir`], a [`Storage`] whose writing methods fail. A writer may run
//! meanwhile, in this process or another: the record it is appending (a torn tail, or the zero
//! fill ahead of its records) ends the readable log, which is not an error; a file that one of
//! its checkpoints or compactions removes under the reader makes [`read_dir`] start over with a
//! fresh listing.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use crate::runtime::extension::Extensions;
use crate::runtime::state::{Config, Core, Lsn, MMSBState};
use crate::runtime::tlog::checkpoint;
use crate::runtime::tlog::format::{blob_name, SegmentHeader, FLAG_CHAIN_START, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::runtime::tlog::record::{Record, RecordType};
use crate::runtime::tlog::recover::{self, list, walk, Listing, OnInvalid, Walk};
use crate::runtime::tlog::replay::{base_checkpoint, replay_chain_to};
use crate::runtime::tlog::storage::{check_name, list_files, Storage, StorageFile, QUARANTINE_DIR};
use crate::types::error::{Error, LogError, Result};
use crate::types::page::{PageId, PageMeta};

/// A state directory opened read-only: a [`Storage`] that reads files and refuses every change
/// with `PermissionDenied`. Opening it takes no lock and creates nothing (a missing directory is
/// an error, never created).
#[derive(Debug)]
pub struct ReadOnlyDir {
    dir: PathBuf,
}

impl ReadOnlyDir {
    /// Opens `dir`, which must be an existing directory.
    pub fn new(dir: &Path) -> io::Result<ReadOnlyDir> {
        if !std::fs::metadata(dir)?.is_dir() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a directory", dir.display())));
        }
        Ok(ReadOnlyDir { dir: dir.to_path_buf() })
    }

    fn path(&self, name: &str) -> io::Result<PathBuf> {
        check_name(name)?;
        Ok(self.dir.join(name))
    }
}

fn refused(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, format!("{what}: the state directory is opened read-only"))
}

/// A file of a [`ReadOnlyDir`], opened `O_RDONLY`.
#[derive(Debug)]
struct ReadOnlyFile(File);

impl StorageFile for ReadOnlyFile {
    fn write_at(&self, _: u64, _: &[u8]) -> io::Result<()> {
        Err(refused("write"))
    }
    fn append(&self, _: &[u8]) -> io::Result<u64> {
        Err(refused("append"))
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.0.read_exact_at(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn truncate(&self, _: u64) -> io::Result<()> {
        Err(refused("truncate"))
    }
    fn sync(&self) -> io::Result<()> {
        // Nothing was written through this handle.
        Ok(())
    }
}

impl Storage for ReadOnlyDir {
    fn create(&self, name: &str) -> io::Result<std::sync::Arc<dyn StorageFile>> {
        Err(refused(&format!("create {}", self.describe(name))))
    }
    fn open(&self, name: &str) -> io::Result<std::sync::Arc<dyn StorageFile>> {
        Ok(std::sync::Arc::new(ReadOnlyFile(File::open(self.path(name)?)?)))
    }
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.path(name)?)
    }
    fn rename(&self, from: &str, _: &str) -> io::Result<()> {
        Err(refused(&format!("rename {}", self.describe(from))))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        Err(refused(&format!("remove {}", self.describe(name))))
    }
    fn list(&self) -> io::Result<Vec<String>> {
        list_files(&self.dir)
    }
    fn sync_dir(&self) -> io::Result<()> {
        Err(refused("fsync the directory"))
    }
    fn describe(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
    fn quarantine(&self, name: &str) -> io::Result<String> {
        Err(refused(&format!("quarantine {}", self.describe(name))))
    }
}

/// A segment of the chain, as [`DirLog::info`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// File name (`log-N.seg`).
    pub name: String,
    /// Segment number.
    pub segno: u64,
    /// Flagged `CHAIN_START` (a fresh log, or the output of a compaction).
    pub chain_start: bool,
    /// The LSN of the last record before it, from its header; `None` when the header does not
    /// verify.
    pub base_lsn: Option<Lsn>,
    /// The LSNs of its readable records; `None` when it has none.
    pub lsns: Option<RangeInclusive<Lsn>>,
    /// Its readable records.
    pub records: u64,
    /// File length.
    pub bytes: u64,
    /// Bytes up to the end of its last readable record (the rest is a torn tail or zero fill).
    pub valid_bytes: u64,
    /// Length of its blob file (0 without one).
    pub blob_bytes: u64,
    /// False for segments after the point where the readable log ends (not read).
    pub read: bool,
}

/// A checkpoint file, as [`DirLog::info`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// File name (`ckpt-L.ckpt`).
    pub name: String,
    /// The LSN in its name.
    pub lsn: Lsn,
    /// File length.
    pub bytes: u64,
    /// The pages it holds; `None` when it does not verify.
    pub pages: Option<u64>,
    /// Why it cannot be used (it does not verify, has a newer format version, or its header
    /// names another LSN); `None` when it verifies.
    pub problem: Option<String>,
}

/// Where the readable log ends before the end of the newest segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEnd {
    /// The file (full path).
    pub file: String,
    /// Byte offset of the first byte not read (0: the segment header).
    pub offset: u64,
    /// Why reading stopped there.
    pub reason: String,
    /// Only zero bytes follow: the writer's zero fill (or records not written yet), not torn
    /// bytes.
    pub zeros: bool,
}

/// What a state directory holds (see [`DirLog::info`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirInfo {
    /// The directory.
    pub dir: PathBuf,
    /// The segments of the log chain, ascending.
    pub segments: Vec<SegmentInfo>,
    /// The checkpoint files, ascending by LSN.
    pub checkpoints: Vec<CheckpointInfo>,
    /// The LSN before the chain's first record (the base LSN of its first segment).
    pub chain_base: Lsn,
    /// The last LSN the directory holds: its last readable record's, or the newest valid
    /// checkpoint's if that is later.
    pub last_lsn: Lsn,
    /// The LSNs [`MMSBState::open_at`] can reach, less the inside of each compacted run; `None`
    /// when there are none (the chain does not start at LSN 0 and no checkpoint verifies).
    pub replayable: Option<RangeInclusive<Lsn>>,
    /// The compacted runs of more than one LSN, ascending: for a run `first..=last`, LSNs
    /// `first..last` cannot be replayed to (`LsnCompacted`).
    pub compacted_runs: Vec<RangeInclusive<Lsn>>,
    /// Bytes of the chain's segment and blob files.
    pub log_bytes: u64,
    /// Bytes of the checkpoint files.
    pub checkpoint_bytes: u64,
    /// Where the readable log ends early, if it does.
    pub end: Option<LogEnd>,
    /// Log files that are not part of the chain: older generations, blob files without their
    /// segment, temporaries of interrupted writes (the next open removes or quarantines them).
    pub stray_files: Vec<String>,
    /// Files in `quarantine/` (never read by MMSB; see `docs/log-format.md`).
    pub quarantined: Vec<String>,
    /// What an open of this directory replays: the newest checkpoint that verifies (its LSN, 0
    /// when none) and the readable records after it (their count and bytes, framing and blob
    /// payloads included). Nothing after a clean close of file-backed pages; after a crash,
    /// bounded by `log_size_cap`.
    pub replay: ReplayInfo,
}

/// What an open replays after the newest valid checkpoint (see [`DirInfo::replay`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayInfo {
    /// The LSN of the checkpoint the open loads (0: none, the log is replayed from its start).
    pub checkpoint_lsn: Lsn,
    /// Records after it.
    pub records: u64,
    /// Their bytes: record framing and payloads, inline or in blob files.
    pub bytes: u64,
}

/// A record of the log, as [`DirLog::records`] passes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordInfo {
    /// The segment file's name.
    pub file: String,
    /// Byte offset of the record in it.
    pub offset: u64,
    /// Its first LSN.
    pub lsn: Lsn,
    /// Its last LSN (a batch and a compacted run cover several).
    pub last_lsn: Lsn,
    /// Its type.
    pub kind: RecordType,
    /// Its payloads are in the segment's blob file.
    pub blob: bool,
    /// Bytes it takes in the segment file (header and stored body).
    pub bytes: u64,
    /// Bytes of its logical body (blob pieces included).
    pub body_bytes: u64,
}

/// Damage [`DirLog::verify`] found: the file, the byte offset and why, on one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (full path).
    pub file: String,
    /// Byte offset in it (0 when the problem is the file as a whole, or its header).
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: byte {}: {}", self.file, self.offset, self.reason.replace('\n', " "))
    }
}

/// The outcome of [`DirLog::verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    /// Damage; empty when the directory is sound.
    pub problems: Vec<Problem>,
    /// Findings that are not damage: a torn tail (the record a writer is appending, or one a
    /// crash cut short; the next open cuts it), files the next open removes or quarantines.
    pub notes: Vec<String>,
    /// Records read (all of them decoded, and those after the newest checkpoint applied).
    pub records: u64,
    /// The last LSN an open would recover.
    pub last_lsn: Lsn,
}

/// What one pass over the chain found (segments in listing order).
#[derive(Debug, Default)]
struct Scan {
    walk: Walk,
    /// Per segment number: records, first and last LSN.
    per_seg: BTreeMap<u64, (u64, Option<Lsn>, Lsn)>,
    runs: Vec<RangeInclusive<Lsn>>,
    checkpoints: Vec<CheckpointInfo>,
    replay: ReplayInfo,
}

/// A state directory read without its writer (see the module docs): the listing taken at
/// [`DirLog::open`] and what one pass over the segment chain and the checkpoints found. Its
/// methods read files as they need them; a file removed meanwhile by a running writer is an
/// `Io` error of kind `NotFound`, which [`read_dir`] answers by starting over.
#[derive(Debug)]
pub struct DirLog {
    storage: ReadOnlyDir,
    listing: Listing,
    scan: Scan,
}

/// Runs `f` on a fresh [`DirLog`] of `dir`, starting over (a few times) when a file of the
/// listing vanished meanwhile (a running writer's checkpoint or compaction removed it).
pub fn read_dir<T>(dir: &Path, mut f: impl FnMut(&DirLog) -> Result<T>) -> Result<T> {
    // A writer that checkpoints and compacts often (a small `log_size_cap`) can change the
    // listing under several reads in a row: retry at once a few times, then with short sleeps.
    const TRIES: u32 = 64;
    let mut tried = 0;
    loop {
        let r = DirLog::open(dir).and_then(|d| {
            let r = f(&d);
            // A segment of the chain that was replaced meanwhile (compaction renames its new
            // chain start over a listed, empty segment while the writer keeps appending after
            // it) makes the walk end early: the answer is stale, so start over as for a
            // vanished file.
            match d.chain_changed()? {
                Some(name) => Err(LogError::io(
                    format!("read {}", d.storage.describe(&name)),
                    io::Error::new(io::ErrorKind::NotFound, "replaced by a running writer's compaction"),
                )
                .into()),
                None => r,
            }
        });
        match r {
            Err(e) if tried + 1 < TRIES && vanished(&e) && dir.is_dir() => {
                tried += 1;
                if tried < 4 {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            r => return r,
        }
    }
}

fn vanished(e: &Error) -> bool {
    matches!(e, Error::Log(LogError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound)
}

/// A segment a running writer was creating when it was listed: its header may have been
/// written since (read it again), or the file may still be shorter than a header (then it
/// holds no record yet: left out, as recovery would cut it). Without this, a reader that read
/// the records of a segment listed before its header was written took them for record bytes
/// behind a damaged header.
fn settle_new_segment(storage: &ReadOnlyDir, listing: &mut Listing) -> Result<()> {
    let Some(last) = listing.chain.last_mut().filter(|s| s.header.is_none()) else { return Ok(()) };
    let data = match storage.read(&last.name) {
        Ok(d) => d,
        Err(e) => return Err(LogError::io(format!("read {}", storage.describe(&last.name)), e).into()),
    };
    last.len = data.len() as u64;
    last.header = SegmentHeader::decode(&data, &storage.describe(&last.name))?.filter(|h| h.segno == last.segno);
    if last.header.is_none() && data.len() < SEGMENT_HEADER_LEN && listing.chain.len() > 1 {
        listing.chain.pop();
    }
    Ok(())
}

/// The configuration of states rebuilt from a directory: in memory, no log, default limits.
pub(crate) fn replay_config() -> Config {
    Config { dir: None, logging: false, ..Config::default() }
}

fn corrupt_to_problem(e: Error) -> Result<Problem> {
    match e {
        Error::Log(LogError::Corrupt { file, offset, reason }) => Ok(Problem { file, offset, reason }),
        Error::Log(e @ LogError::UnsupportedVersion { .. }) => {
            let LogError::UnsupportedVersion { file, .. } = &e else { unreachable!() };
            Ok(Problem { file: file.clone(), offset: 0, reason: e.to_string() })
        }
        e => Err(e),
    }
}

impl DirLog {
    /// The first segment of the listed chain that is gone or whose header differs now from the
    /// one listed (a running writer replaced it), if any.
    fn chain_changed(&self) -> Result<Option<String>> {
        for s in &self.listing.chain {
            let mut head = [0u8; SEGMENT_HEADER_LEN];
            let now = match self.storage.open(&s.name).and_then(|f| f.read_at(0, &mut head).map(|()| f)) {
                Ok(_) => SegmentHeader::decode(&head, &self.storage.describe(&s.name)).ok().flatten(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some(s.name.clone())),
                // Shorter than a header: a segment being created, as listed.
                Err(_) => None,
            };
            if s.header.is_some() && now != s.header {
                return Ok(Some(s.name.clone()));
            }
        }
        Ok(None)
    }

    /// Lists `dir` and reads its segment chain and checkpoints once (read-only, no lock).
    pub fn open(dir: &Path) -> Result<DirLog> {
        let storage = ReadOnlyDir::new(dir).map_err(|e| LogError::io(format!("open {}", dir.display()), e))?;
        let mut listing = list(&storage)?;
        settle_new_segment(&storage, &mut listing)?;
        let mut scan = Scan::default();
        for (&lsn, name) in &listing.checkpoints {
            let bytes = storage
                .open(name)
                .and_then(|f| f.len())
                .map_err(|e| LogError::io(format!("read {}", storage.describe(name)), e))?;
            let (pages, problem) = match checkpoint::read(&storage, name) {
                Ok(Some(c)) if c.lsn == lsn => (Some(c.pages.len() as u64), None),
                Ok(Some(c)) => (None, Some(format!("its header says LSN {}, its name LSN {lsn}", c.lsn))),
                Ok(None) => (None, Some("checkpoint does not verify (checksum, length or index)".to_string())),
                Err(e @ LogError::UnsupportedVersion { .. }) => (None, Some(e.to_string())),
                Err(e) => return Err(e.into()),
            };
            scan.checkpoints.push(CheckpointInfo { name: name.clone(), lsn, bytes, pages, problem });
        }
        // An open loads the newest checkpoint that verifies and replays what follows it.
        scan.replay.checkpoint_lsn = scan.checkpoints.iter().rev().find(|c| c.problem.is_none()).map_or(0, |c| c.lsn);
        let (per_seg, runs, replay) = (&mut scan.per_seg, &mut scan.runs, &mut scan.replay);
        scan.walk = walk(&storage, &listing.chain, OnInvalid::Stop, |h, body, file, _| {
            if h.last_lsn() > replay.checkpoint_lsn {
                replay.records += 1;
                replay.bytes += (RECORD_HEADER_LEN + body.len()) as u64;
            }
            let segno = crate::runtime::tlog::format::parse_segment_name(file).unwrap_or(0);
            let e = per_seg.entry(segno).or_insert((0, None, 0));
            e.0 += 1;
            e.1.get_or_insert(h.lsn);
            e.2 = h.last_lsn();
            if h.kind == RecordType::Compacted as u8 && h.count > 1 {
                runs.push(h.lsn..=h.last_lsn());
            }
            Ok(true)
        })?;
        Ok(DirLog { storage, listing, scan })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.storage.dir
    }

    fn chain_base(&self) -> Lsn {
        self.listing.chain.first().and_then(|s| s.header).map_or(0, |h| h.base_lsn)
    }

    fn valid_checkpoints(&self) -> BTreeMap<Lsn, String> {
        self.scan.checkpoints.iter().filter(|c| c.problem.is_none()).map(|c| (c.lsn, c.name.clone())).collect()
    }

    /// The last LSN the directory holds (see [`DirInfo::last_lsn`]).
    pub fn last_lsn(&self) -> Lsn {
        self.scan.walk.last_lsn.max(self.valid_checkpoints().keys().next_back().copied().unwrap_or(0))
    }

    /// The LSNs [`DirLog::replay_to`] can reach (see [`DirInfo::replayable`]).
    pub fn replayable(&self) -> Option<RangeInclusive<Lsn>> {
        let base = self.chain_base();
        let oldest = if base == 0 { Some(0) } else { self.valid_checkpoints().into_keys().find(|&k| k >= base) };
        oldest.map(|o| o..=self.last_lsn())
    }

    /// Where the readable log ends early, if it does.
    pub fn end(&self) -> Option<LogEnd> {
        self.scan.walk.cut.as_ref().map(|c| LogEnd {
            file: self.storage.describe(&self.listing.chain[c.seg].name),
            offset: c.offset,
            reason: c.reason.clone(),
            zeros: c.zeros,
        })
    }

    /// Says where the readable log ends, for messages.
    fn end_text(&self) -> String {
        let last = self.scan.walk.last_lsn;
        match self.end() {
            Some(e) if !e.zeros => {
                format!("its readable log ends at LSN {last}: {} at byte {}: {}", e.file, e.offset, e.reason)
            }
            _ => format!("its log ends at LSN {last}"),
        }
    }

    /// What the directory holds.
    pub fn info(&self) -> Result<DirInfo> {
        let s = &self.storage;
        let len = |name: &str| match s.open(name).and_then(|f| f.len()) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::NotFound && name.ends_with(".blob") => Ok(0),
            Err(e) => Err(LogError::io(format!("read {}", s.describe(name)), e)),
        };
        let mut segments = Vec::new();
        for seg in &self.listing.chain {
            let end = self.scan.walk.seg_ends.iter().find(|e| e.0 == seg.segno);
            let counted = self.scan.per_seg.get(&seg.segno).copied();
            let blob_bytes = len(&blob_name(seg.segno))?;
            segments.push(SegmentInfo {
                name: seg.name.clone(),
                segno: seg.segno,
                chain_start: seg.header.is_some_and(|h| h.flags & FLAG_CHAIN_START != 0),
                base_lsn: seg.header.map(|h| h.base_lsn),
                lsns: counted.and_then(|(_, first, last)| first.map(|f| f..=last)),
                records: counted.map_or(0, |c| c.0),
                bytes: seg.len,
                valid_bytes: end.map_or(0, |e| e.2),
                blob_bytes,
                read: end.is_some(),
            });
        }
        let log_bytes = segments.iter().map(|s| s.bytes + s.blob_bytes).sum();
        let mut stray_files: Vec<String> = self.listing.leftovers.clone();
        stray_files.extend(self.listing.orphan_blobs.iter().cloned());
        stray_files.extend(self.listing.temps.iter().cloned());
        stray_files.sort();
        let qdir = self.storage.dir.join(QUARANTINE_DIR);
        let quarantined = if qdir.is_dir() {
            list_files(&qdir).map_err(|e| LogError::io(format!("list {}", qdir.display()), e))?
        } else {
            Vec::new()
        };
        Ok(DirInfo {
            dir: self.storage.dir.clone(),
            checkpoint_bytes: self.scan.checkpoints.iter().map(|c| c.bytes).sum(),
            checkpoints: self.scan.checkpoints.clone(),
            segments,
            chain_base: self.chain_base(),
            last_lsn: self.last_lsn(),
            replayable: self.replayable(),
            compacted_runs: self.scan.runs.clone(),
            log_bytes,
            end: self.end(),
            stray_files,
            quarantined,
            replay: self.scan.replay,
        })
    }

    /// [`DirLog::replay_to`] (in `crate::compose`, which names the layers) with the empty
    /// extensions `ext` the rebuilt state replays extension records into.
    pub(crate) fn replay_with(&self, lsn: Lsn, ext: Extensions) -> Result<MMSBState> {
        let range = self.replayable().ok_or_else(|| LogError::Corrupt {
            file: self.storage.describe(""),
            offset: 0,
            reason: format!(
                "the log starts after LSN {} and no checkpoint there verifies: no LSN can be replayed",
                self.chain_base()
            ),
        })?;
        let outside = || LogError::LsnOutsideRange {
            lsn,
            oldest: *range.start(),
            newest: *range.end(),
            dir: self.storage.dir.display().to_string(),
            end: self.end_text(),
        };
        if !range.contains(&lsn) {
            return Err(outside().into());
        }
        let chain_base = self.chain_base();
        let base = base_checkpoint(&self.storage, &self.valid_checkpoints(), chain_base, lsn)?;
        if base.is_none() && chain_base != 0 {
            return Err(outside().into());
        }
        replay_chain_to(&self.storage, &self.listing.chain, base.as_ref(), lsn, replay_config(), ext, |out, core, c| {
            if c.external {
                // Its pages are the live page files (file-backed pages) plus the images of the
                // pages changed since. Without a running writer they are what recovery would
                // read; a running writer changes them under us, so that case is refused.
                use crate::runtime::reader::{Reader, WriterStatus};
                let dir = &self.storage.dir;
                let reader = Reader::open(dir)?;
                let live = |w: WriterStatus| matches!(w, WriterStatus::Running(_) | WriterStatus::Recovering(_));
                let unsupported = |pid: WriterStatus| -> Error {
                    crate::types::error::StateError::Unsupported(format!(
                        "replaying from the checkpoint at LSN {} of {}, whose pages are in the page files \
                         (file-backed pages), while its writer ({pid:?}) has it open; read the live state with \
                         a Reader, or replay once the writer is closed",
                        c.lsn,
                        dir.display()
                    ))
                    .into()
                };
                let (generation, writer) = (reader.generation(), reader.writer());
                if live(writer) {
                    return Err(unsupported(writer));
                }
                crate::runtime::pagefiles::load_external(out, core, c, dir)?;
                let after = reader.writer();
                if reader.generation() != generation || live(after) {
                    return Err(unsupported(after));
                }
                core.next_page_id = c.next_page_id;
                core.lsn = c.lsn;
                return out.restore_checkpoint_extension(core, c.extension());
            }
            crate::runtime::tlog::replay::load_checkpoint(out, core, c)
        })
    }

    /// Calls `f` with each record whose LSNs overlap `lsns`, in LSN order, decoded (a record
    /// that does not decode is `LogError::Corrupt` with its file and offset). Stops at the end
    /// of the readable log.
    pub fn records(
        &self,
        lsns: RangeInclusive<Lsn>,
        mut f: impl FnMut(&RecordInfo, Record) -> Result<()>,
    ) -> Result<()> {
        let s = &self.storage;
        walk(s, &self.listing.chain, OnInvalid::Stop, |h, body, file, off| {
            if h.lsn > *lsns.end() {
                return Ok(false);
            }
            if h.last_lsn() < *lsns.start() {
                return Ok(true);
            }
            let corrupt = |reason: String| LogError::Corrupt { file: s.describe(file), offset: off, reason };
            let kind = RecordType::from_u8(h.kind).ok_or_else(|| corrupt(format!("unknown record type {}", h.kind)))?;
            let rec = Record::decode(h.kind, h.count, body).map_err(corrupt)?;
            let info = RecordInfo {
                file: file.to_string(),
                offset: off,
                lsn: h.lsn,
                last_lsn: h.last_lsn(),
                kind,
                blob: h.flags & crate::runtime::tlog::format::RECORD_FLAG_BLOB != 0,
                bytes: RECORD_HEADER_LEN as u64 + u64::from(h.len),
                body_bytes: body.len() as u64,
            };
            f(&info, rec)?;
            Ok(true)
        })?;
        Ok(())
    }

    /// [`DirLog::verify`] (in `crate::compose`) with the empty extensions `ext` the records
    /// after the newest checkpoint are replayed into.
    pub(crate) fn verify_with(&self, ext: Extensions) -> Result<Verification> {
        let mut v = Verification::default();
        for c in &self.scan.checkpoints {
            if let Some(p) = &c.problem {
                v.problems.push(Problem { file: self.storage.describe(&c.name), offset: 0, reason: p.clone() });
            }
        }
        // Every readable record decodes (recovery decodes only those after its checkpoint).
        let mut records = 0u64;
        if let Err(e) = self.records(0..=Lsn::MAX, |_, _| {
            records += 1;
            Ok(())
        }) {
            v.problems.push(corrupt_to_problem(e)?);
        }
        v.records = records;
        // What recovery would decide, with its own code: a checkpoint to start from, the records
        // after it replayed, the files past the point where that stops weighed.
        let ckpt = match recover::newest_checkpoint(&self.storage, &self.listing) {
            Ok(c) => c,
            Err(e) => {
                v.problems.push(corrupt_to_problem(e)?);
                return Ok(finish(v));
            }
        };
        let ckpt_lsn = ckpt.as_ref().map_or(0, |c| c.lsn);
        let scratch = MMSBState::from_core(
            Core { next_page_id: 1, ext: ext.log, ..Core::default() },
            replay_config(),
            true,
            ext.state,
        );
        let external = ckpt.as_ref().is_some_and(|c| c.external);
        let walked = if external {
            // Its pages are in the page files (file-backed pages), which only the writer may read
            // as of this LSN: the records after it are checked (checksums, chain, decoding) as
            // recovery walks them, not applied.
            v.notes.push(format!(
                "the checkpoint at LSN {ckpt_lsn} keeps its pages in the page files: the records after it are \
                 checked, not applied"
            ));
            let mode = OnInvalid::Recover { tolerant: false, covered: ckpt_lsn };
            walk(&self.storage, &self.listing.chain, mode, |_, _, _, _| Ok(true))
        } else {
            recover::replay_chain(&scratch, &self.storage, &self.listing, ckpt.as_ref(), false, false)
        };
        let walked = match walked {
            Ok(w) => w,
            Err(e) => {
                v.problems.push(corrupt_to_problem(e)?);
                return Ok(finish(v));
            }
        };
        v.last_lsn = walked.last_lsn.max(ckpt_lsn);
        let dropped = recover::dropped_segments(&self.listing, &walked);
        if let Err(e) = recover::refuse_lost_records(&self.storage, &self.listing, &walked, &dropped, v.last_lsn) {
            v.problems.push(corrupt_to_problem(e)?);
        }
        if walked.skipped > 0 {
            // Recovery skips damage in records the checkpoint covers; the bytes are damaged all
            // the same, and replay to the LSNs before the checkpoint is lost.
            let at = self
                .end()
                .map_or_else(|| (self.storage.describe(""), 0, String::new()), |e| (e.file, e.offset, e.reason));
            v.problems.push(Problem {
                file: at.0,
                offset: at.1,
                reason: format!(
                    "{} (in records the checkpoint at LSN {ckpt_lsn} covers: an open skips them, but no LSN before \
                     it can be replayed)",
                    at.2
                ),
            });
        } else if let Some(cut) = walked.cut.as_ref().filter(|c| !c.zeros && c.offset > 0) {
            let file = self.storage.describe(&self.listing.chain[cut.seg].name);
            v.notes.push(format!(
                "torn tail: {file}: byte {}: {} (a record being appended, or one a crash cut short; the next open \
                 cuts it)",
                cut.offset, cut.reason
            ));
        }
        let mut stray: Vec<&String> = self.listing.leftovers.iter().chain(&self.listing.orphan_blobs).collect();
        stray.extend(&self.listing.temps);
        stray.sort();
        // One line however many (an interrupted compaction can leave dozens).
        let shown: Vec<String> = stray.iter().take(3).map(|f| self.storage.describe(f)).collect();
        match stray.len() {
            0 => {}
            1 => v
                .notes
                .push(format!("{}: not part of the log chain (the next open removes or quarantines it)", shown[0])),
            n => v.notes.push(format!(
                "{n} files are not part of the log chain (the next open removes or quarantines them): {}{}",
                shown.join(", "),
                if n > shown.len() { ", ..." } else { "" }
            )),
        }
        Ok(finish(v))
    }
}

/// Orders the problems by file and offset (one walk reports at most one; checkpoints and the
/// recovery rule add theirs) and drops repeats of one location.
fn finish(mut v: Verification) -> Verification {
    v.problems.sort_by(|a, b| (&a.file, a.offset).cmp(&(&b.file, b.offset)));
    v.problems.dedup_by(|a, b| a.file == b.file && a.offset == b.offset);
    v
}

impl MMSBState {
    /// The name and tags of a page.
    pub fn page_meta(&self, page: PageId) -> Result<PageMeta> {
        if self.is_closed() {
            return Err(crate::types::error::StateError::Closed.into());
        }
        let core = self.core.read();
        let p = core.pages.get(&page).ok_or(crate::types::error::PageError::UnknownPage(page))?;
        Ok(p.meta.clone())
    }
}
