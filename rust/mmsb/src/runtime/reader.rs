//! [`Reader`]: follows a writer with file-backed pages from another process (or the same one),
//! through the shared header and page table of `runtime::shared` (layout there; rules in
//! `docs/page-files.md`, "Readers").
//!
//! A reader takes no lock and never writes page bytes, so it never blocks the writer. A page
//! read is a snapshot: the bytes are copied between two reads of the page's seqlock (and of the
//! writer's generation and state) and the copy is retried until nothing changed in between.
//! Waiting for an LSN blocks on a futex in the header; the writer wakes it only when a waiter
//! announced itself.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memmap2::{Mmap, MmapMut, MmapOptions};
use parking_lot::Mutex;

use crate::runtime::pagefiles::{page_file_name, PAGES_DIR};
use crate::runtime::shared::{
    a32, a64, off, writer_state, HEADER_FILE, HEADER_LEN, HEADER_MAGIC, SHARED_VERSION, SLOT_LEN, TABLE_FILE,
    TABLE_MAGIC,
};
use crate::runtime::state::Lsn;
use crate::types::error::{LogError, PageError, ReaderError, Result};
use crate::types::page::{round_to_os_pages, PageId};
use crate::types::IdHasher;

/// What a reader knows of the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterStatus {
    /// A writer process is running (its pid).
    Running(u32),
    /// The writer is recovering the directory after an open; reads fail with `Busy` meanwhile.
    Recovering(u32),
    /// The last writer closed the state; the page files hold its final state.
    Closed,
    /// The header names a writer process that no longer exists: it crashed. The page files
    /// hold every change it applied, possibly some that its log never made durable; the next
    /// writer's recovery decides (and bumps the generation).
    Crashed(u32),
}

/// One consistent read of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadInfo {
    /// The page's epoch (count of changes) the bytes belong to.
    pub epoch: u64,
    /// The LSN of the page's last change at that epoch.
    pub lsn: Lsn,
    /// The page's size in bytes.
    pub size: u64,
}

/// A page's slot as last read.
#[derive(Debug, Clone, Copy)]
struct Slot {
    index: usize,
    size: u64,
}

/// The mapped page table and what was found in it.
#[derive(Debug)]
struct Table {
    generation: u64,
    map: Option<Arc<Mmap>>,
    slots: HashMap<PageId, Slot, IdHasher>,
    /// Header page-table generation when `slots` was filled (`None`: rescan; not a sentinel
    /// value, which a damaged header could hold).
    scanned: Option<u64>,
    files: HashMap<PageId, Arc<Mmap>, IdHasher>,
}

/// A reader of a state directory (see the module docs). `Send` and `Sync`.
#[derive(Debug)]
pub struct Reader {
    dir: PathBuf,
    pages: PathBuf,
    header: MmapMut,
    table: Mutex<Table>,
}

/// A zero-copy, read-only view of a page's mapped bytes, kept mapped while the view lives. The
/// bytes may change under it (no snapshot isolation): use [`Reader::read_into`] for a snapshot.
#[derive(Debug, Clone)]
pub struct ReaderView {
    /// The page viewed.
    pub id: PageId,
    len: usize,
    map: Arc<Mmap>,
}

impl ReaderView {
    /// Address of the first byte (page-aligned), valid while the view lives.
    pub fn as_ptr(&self) -> *const u8 {
        self.map.as_ptr()
    }

    /// The page's size.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty page (never: pages have at least one byte).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Copies `src` to `dst` with relaxed atomic loads: the writer process may be changing the
/// bytes meanwhile (the seqlock check afterwards discards such a copy), and atomic loads keep
/// the racing read defined.
fn copy_racy(src: *const u8, dst: &mut [u8]) {
    let words = dst.len() / 8;
    let (head, tail) = dst.split_at_mut(words * 8);
    for (i, chunk) in head.chunks_exact_mut(8).enumerate() {
        // SAFETY: `src` is page-aligned (a mapping) and valid for `dst.len()` bytes, so word `i`
        // is aligned and in range; AtomicU64 accepts any bit pattern.
        let w = unsafe { &*(src.add(i * 8) as *const AtomicU64) }.load(Ordering::Relaxed);
        chunk.copy_from_slice(&w.to_ne_bytes());
    }
    for (j, b) in tail.iter_mut().enumerate() {
        // SAFETY: in range as above; bytes need no alignment.
        *b = unsafe { &*(src.add(words * 8 + j) as *const AtomicU8) }.load(Ordering::Relaxed);
    }
}

fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let tsp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: FUTEX_WAIT reads the aligned u32 at `word` (a shared mapping that outlives the
    // call) and sleeps; `tsp` is NULL or points at a live timespec. Spurious returns (EAGAIN,
    // EINTR, timeout) are fine: the caller re-checks.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, tsp, 0usize, 0u32);
    }
}

/// The layout version at bytes 8..12 of the header and of the table (after their magic; the
/// caller checked that at least 16 bytes are there).
fn check_version(path: &Path, bytes: &[u8]) -> Result<()> {
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != SHARED_VERSION {
        return Err(LogError::UnsupportedVersion {
            file: path.display().to_string(),
            found: version,
            supported: SHARED_VERSION,
        }
        .into());
    }
    Ok(())
}

impl Reader {
    /// Opens a reader of the state directory `dir`. Takes no lock: works while a writer runs,
    /// after it closed, and after it crashed. `NotShared` (code `Unsupported`) when no writer
    /// with file-backed pages ever opened `dir`; `UnsupportedVersion` for another layout.
    pub fn open(dir: impl AsRef<Path>) -> Result<Reader> {
        let dir = dir.as_ref().to_path_buf();
        let pages = dir.join(PAGES_DIR);
        let path = pages.join(HEADER_FILE);
        let not_shared = |reason: String| ReaderError::NotShared { dir: dir.display().to_string(), reason };
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(not_shared(format!("{} does not exist", path.display())).into())
            }
            Err(e) => return Err(LogError::io(format!("open {}", path.display()), e).into()),
        };
        let len = file.metadata().map_err(|e| LogError::io(format!("read {}", path.display()), e))?.len();
        if len < 16 {
            return Err(not_shared(format!("{} holds {len} bytes", path.display())).into());
        }
        // SAFETY: a regular file of at least 16 bytes; only the first 16 are read before the
        // length is checked against the version's header length.
        let header = unsafe { MmapOptions::new().map_mut(&file) }
            .map_err(|e| LogError::io(format!("map {}", path.display()), e))?;
        if header[0..8] != HEADER_MAGIC {
            return Err(not_shared(format!("{} is not an MMSB page header", path.display())).into());
        }
        check_version(&path, &header)?;
        if header.len() < HEADER_LEN {
            return Err(not_shared(format!("{} is truncated", path.display())).into());
        }
        let table =
            Table { generation: 0, map: None, slots: HashMap::default(), scanned: None, files: HashMap::default() };
        Ok(Reader { dir, pages, header, table: Mutex::new(table) })
    }

    fn h64(&self, at: usize) -> &AtomicU64 {
        // SAFETY: header offsets are aligned and inside the HEADER_LEN mapping (checked at open)
        // that lives as long as self.
        unsafe { a64(self.header.as_ptr(), at) }
    }

    fn h32(&self, at: usize) -> &AtomicU32 {
        // SAFETY: as in `h64`.
        unsafe { a32(self.header.as_ptr(), at) }
    }

    /// The directory read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The writer's last applied LSN (monotonic within a generation).
    pub fn lsn(&self) -> Lsn {
        self.h64(off::LSN).load(Ordering::SeqCst)
    }

    /// The writer's last LSN acknowledged to its caller (durable as its durability promises).
    pub fn durable_lsn(&self) -> Lsn {
        self.h64(off::DURABLE).load(Ordering::Acquire)
    }

    /// The writer generation: +1 at each writer open. A change means the writer restarted (and
    /// recovered): LSNs after a crash may go back to the recovered one.
    pub fn generation(&self) -> u64 {
        self.h64(off::GENERATION).load(Ordering::Acquire)
    }

    /// The writer as the header describes it (a pid whose process is gone is `Crashed`).
    pub fn writer(&self) -> WriterStatus {
        let pid = self.h32(off::PID).load(Ordering::Acquire);
        let state = self.h32(off::STATE).load(Ordering::Acquire);
        // Only a positive pid names one process: kill(0 or negative, 0) asks about process
        // groups (kill(-1, 0) succeeds whenever any process may be signalled), so a damaged or
        // hostile header with a pid of 2^31 or more would name a writer that is always alive.
        let alive = libc::pid_t::try_from(pid).ok().filter(|&p| p > 0).is_some_and(|p| {
            // SAFETY: kill with signal 0 only checks that the process exists.
            let r = unsafe { libc::kill(p, 0) };
            r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
        });
        match state {
            writer_state::CLOSED => WriterStatus::Closed,
            _ if pid == 0 || !alive => WriterStatus::Crashed(pid),
            writer_state::RECOVERING => WriterStatus::Recovering(pid),
            _ => WriterStatus::Running(pid),
        }
    }

    /// Waits until the writer's LSN reaches `lsn`, `timeout` passes, or no writer runs that
    /// could reach it (closed or crashed); returns the LSN then (compare it with `lsn`). Sleeps
    /// on the header's futex: no spinning; the writer pays a wake-up only while one waits.
    pub fn wait_for(&self, lsn: Lsn, timeout: Option<Duration>) -> Lsn {
        self.wait_for_or_cancel(lsn, timeout, &AtomicBool::new(false))
    }

    /// [`Reader::wait_for`] that also returns once `cancel` is set (see
    /// [`Reader::wake_waiters`]).
    pub fn wait_for_or_cancel(&self, lsn: Lsn, timeout: Option<Duration>, cancel: &AtomicBool) -> Lsn {
        let deadline = timeout.map(|t| Instant::now() + t);
        let word = self.h32(off::FUTEX);
        let waiters = self.h32(off::WAITERS);
        loop {
            let now = self.lsn();
            if now >= lsn || cancel.load(Ordering::Acquire) {
                return now;
            }
            if !matches!(self.writer(), WriterStatus::Running(_) | WriterStatus::Recovering(_)) {
                return now;
            }
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return now,
                },
                None => None,
            };
            let seen = word.load(Ordering::SeqCst);
            waiters.fetch_add(1, Ordering::SeqCst);
            // Re-check after announcing: either the writer sees the waiter and wakes (bumping
            // the word, so the wait returns at once), or this load sees its LSN.
            if self.lsn() < lsn {
                // A crashed writer never wakes anyone: look again once in a while.
                let nap = Duration::from_millis(200);
                futex_wait(word, seen, Some(left.map_or(nap, |l| l.min(nap))));
            }
            waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Wakes every waiter on this directory's header (they re-check and sleep again): how a
    /// canceller ends a [`Reader::wait_for_or_cancel`] at once.
    pub fn wake_waiters(&self) {
        self.h32(off::FUTEX).fetch_add(1, Ordering::SeqCst);
        crate::runtime::shared::futex_wake(self.h32(off::FUTEX));
    }

    fn refresh_table(&self, t: &mut Table) -> Result<()> {
        let generation = self.generation();
        let capacity_ok = t.map.as_ref().is_some_and(|m| {
            // SAFETY: the table header's capacity field, inside every valid table mapping.
            let cap = unsafe { a64(m.as_ptr(), off::CAPACITY) }.load(Ordering::Acquire);
            // Checked: the field is the file's bytes, and a damaged one must not overflow.
            cap.checked_add(1).and_then(|n| n.checked_mul(SLOT_LEN as u64)).is_some_and(|need| m.len() as u64 >= need)
        });
        if t.map.is_some() && t.generation == generation && capacity_ok {
            return Ok(());
        }
        let path = self.pages.join(TABLE_FILE);
        let corrupt =
            |reason: &str| LogError::Corrupt { file: path.display().to_string(), offset: 0, reason: reason.into() };
        let file = File::open(&path).map_err(|e| LogError::io(format!("open {}", path.display()), e))?;
        // SAFETY: mapped read-only; the writer only grows the file (never truncates it) and
        // replaces it by rename, so every byte of this mapping stays backed.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| LogError::io(format!("map {}", path.display()), e))?;
        if map.len() < SLOT_LEN || map[0..8] != TABLE_MAGIC {
            return Err(corrupt("not an MMSB page table").into());
        }
        check_version(&path, &map)?;
        t.generation = u64::from_le_bytes(map[24..32].try_into().expect("8 bytes"));
        t.map = Some(Arc::new(map));
        t.slots.clear();
        t.scanned = None;
        t.files.clear();
        Ok(())
    }

    fn slot_field(map: &Mmap, index: usize, field: usize) -> &AtomicU64 {
        // SAFETY: callers pass `index` < the slots the mapping covers; fields are aligned offsets
        // inside a 64-byte slot.
        unsafe { a64(map.as_ptr(), (1 + index) * SLOT_LEN + field) }
    }

    /// Rescans the table for live pages (a consistent read of each slot).
    fn scan(&self, t: &mut Table) {
        let Some(map) = &t.map else { return };
        let table_gen = self.h64(off::TABLE_GEN).load(Ordering::Acquire);
        let n = map.len() / SLOT_LEN - 1;
        t.slots.clear();
        for index in 0..n {
            let mut spins = 0u32;
            loop {
                let s1 = Self::slot_field(map, index, off::SEQ).load(Ordering::Acquire);
                // Odd: the writer is changing the slot. One that stopped (crashed, or a damaged
                // header) never finishes: take the slot as it stands, and `read_into` reports
                // the page as torn instead of spinning forever.
                let stuck = s1 & 1 == 1 && {
                    spins += 1;
                    spins.is_multiple_of(1024) && !self.writer_may_progress()
                };
                if s1 & 1 == 1 && !stuck {
                    std::hint::spin_loop();
                    continue;
                }
                let id = Self::slot_field(map, index, off::ID).load(Ordering::Relaxed);
                let size = Self::slot_field(map, index, off::SIZE).load(Ordering::Relaxed);
                fence(Ordering::Acquire);
                if Self::slot_field(map, index, off::SEQ).load(Ordering::Relaxed) == s1 {
                    if id != 0 {
                        t.slots.insert(PageId(id), Slot { index, size });
                    }
                    break;
                }
            }
        }
        t.scanned = Some(table_gen);
    }

    /// Whether a writer runs that may still finish what it started (a seqlock held odd, a new
    /// table announced but not yet renamed in).
    fn writer_may_progress(&self) -> bool {
        matches!(self.writer(), WriterStatus::Running(_) | WriterStatus::Recovering(_))
    }

    fn busy(&self) -> Result<()> {
        if self.h32(off::STATE).load(Ordering::Acquire) == writer_state::RECOVERING
            && matches!(self.writer(), WriterStatus::Recovering(_))
        {
            return Err(ReaderError::Recovering { dir: self.dir.display().to_string() }.into());
        }
        Ok(())
    }

    /// Finds `id`'s slot and mapping (rescanning when the table changed).
    fn locate(&self, t: &mut Table, id: PageId) -> Result<(Slot, Arc<Mmap>)> {
        self.refresh_table(t)?;
        if !t.slots.contains_key(&id) || t.scanned != Some(self.h64(off::TABLE_GEN).load(Ordering::Acquire)) {
            self.scan(t);
        }
        let slot = *t.slots.get(&id).ok_or(PageError::UnknownPage(id))?;
        if let Some(m) = t.files.get(&id) {
            return Ok((slot, m.clone()));
        }
        let path = self.pages.join(page_file_name(id));
        let file = File::open(&path).map_err(|e| match e.kind() {
            // Freed since the scan.
            std::io::ErrorKind::NotFound => crate::types::error::Error::from(PageError::UnknownPage(id)),
            _ => LogError::io(format!("open {}", path.display()), e).into(),
        })?;
        let cap = round_to_os_pages(slot.size).and_then(|c| usize::try_from(c).ok()).unwrap_or(usize::MAX);
        let flen = file.metadata().map_err(|e| LogError::io(format!("read {}", path.display()), e))?.len();
        if flen < cap as u64 {
            return Err(LogError::Corrupt {
                file: path.display().to_string(),
                offset: 0,
                reason: format!("holds {flen} bytes, a page of {} bytes needs {cap}", slot.size),
            }
            .into());
        }
        // SAFETY: read-only mapping of `cap` bytes of a file at least that long; the writer never
        // truncates page files (it zeroes them through its mapping), so the range stays backed.
        let map = Arc::new(
            unsafe { MmapOptions::new().len(cap).map(&file) }
                .map_err(|e| LogError::io(format!("map {}", path.display()), e))?,
        );
        t.files.insert(id, map.clone());
        Ok((slot, map))
    }

    /// Ids of the live pages, ascending.
    pub fn page_ids(&self) -> Result<Vec<PageId>> {
        self.busy()?;
        let mut t = self.table.lock();
        self.refresh_table(&mut t)?;
        self.scan(&mut t);
        let mut ids: Vec<PageId> = t.slots.keys().copied().collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// The size of page `id` in bytes.
    pub fn page_size(&self, id: PageId) -> Result<u64> {
        self.busy()?;
        let mut t = self.table.lock();
        Ok(self.locate(&mut t, id)?.0.size)
    }

    /// A consistent snapshot of page `id` into `out` (exactly the page's size; see
    /// [`Reader::page_size`]): bytes, epoch and LSN of one moment of the writer, never torn.
    pub fn read_into(&self, id: PageId, out: &mut [u8]) -> Result<ReadInfo> {
        let mut spins = 0u32;
        loop {
            self.busy()?;
            let generation = self.generation();
            let state = self.h32(off::STATE).load(Ordering::Acquire);
            let ((slot, page), tmap) = {
                let mut t = self.table.lock();
                let found = self.locate(&mut t, id)?;
                // The writer announced a new generation but has not renamed its table in yet
                // (unless it died doing so: then the old table is all there is).
                if t.generation != generation && self.writer_may_progress() {
                    drop(t);
                    std::thread::yield_now();
                    continue;
                }
                let tmap = t.map.clone().expect("located through the table");
                (found, tmap)
            };
            if out.len() as u64 != slot.size {
                return Err(
                    crate::types::error::DeltaError::LengthMismatch { old: slot.size, new: out.len() as u64 }.into()
                );
            }
            let seq = Self::slot_field(&tmap, slot.index, off::SEQ);
            let s1 = seq.load(Ordering::Acquire);
            if s1 & 1 == 0 && Self::slot_field(&tmap, slot.index, off::ID).load(Ordering::Relaxed) == id.0 {
                let epoch = Self::slot_field(&tmap, slot.index, off::EPOCH).load(Ordering::Relaxed);
                let lsn = Self::slot_field(&tmap, slot.index, off::SLOT_LSN).load(Ordering::Relaxed);
                copy_racy(page.as_ptr(), out);
                fence(Ordering::Acquire);
                let same = seq.load(Ordering::Relaxed) == s1
                    && self.h64(off::GENERATION).load(Ordering::Relaxed) == generation
                    && self.h32(off::STATE).load(Ordering::Relaxed) == state;
                if same {
                    return Ok(ReadInfo { epoch, lsn, size: slot.size });
                }
            } else if Self::slot_field(&tmap, slot.index, off::ID).load(Ordering::Relaxed) != id.0 && s1 & 1 == 0 {
                // The slot was reused or freed: rescan.
                self.table.lock().scanned = None;
            }
            spins += 1;
            if spins.is_multiple_of(64) {
                if s1 & 1 == 1 && !self.writer_may_progress() {
                    // The writer stopped inside this page's change: its bytes may be torn, and
                    // no writer will finish the change (the next writer's recovery restores it).
                    return Err(LogError::Corrupt {
                        file: self.pages.join(TABLE_FILE).display().to_string(),
                        offset: ((1 + slot.index) * SLOT_LEN) as u64,
                        reason: format!(
                            "page {id} was being changed when its writer stopped ({:?}); open the state \
                             to recover it",
                            self.writer()
                        ),
                    }
                    .into());
                }
                std::thread::yield_now();
            }
        }
    }

    /// A consistent snapshot of page `id` (see [`Reader::read_into`]).
    pub fn read(&self, id: PageId) -> Result<(Vec<u8>, ReadInfo)> {
        loop {
            let size = self.page_size(id)?;
            let len = usize::try_from(size)
                .map_err(|_| PageError::InvalidSize { requested: size, max: usize::MAX as u64 })?;
            let mut buf = vec![0u8; len];
            match self.read_into(id, &mut buf) {
                Ok(info) => return Ok((buf, info)),
                // The page was freed and its id... never reused; only a size race remains.
                Err(e) if e.code() == crate::types::error::ErrorCode::LengthMismatch => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// A zero-copy view of page `id`'s mapped bytes (no snapshot isolation; see [`ReaderView`]).
    pub fn view(&self, id: PageId) -> Result<ReaderView> {
        self.busy()?;
        let mut t = self.table.lock();
        let (slot, map) = self.locate(&mut t, id)?;
        // The mapping covers the page (checked in `locate`), so its size fits a usize.
        Ok(ReaderView { id, len: map.len().min(usize::try_from(slot.size).unwrap_or(usize::MAX)), map })
    }
}
