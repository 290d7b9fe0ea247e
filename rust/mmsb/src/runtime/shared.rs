//! The shared header and page table that let readers in other processes follow a writer with
//! file-backed pages (`docs/page-files.md`, "Readers"). This file is the layout and the writer's
//! side; `runtime::reader` is the readers' side.
//!
//! `pages/header` (4096 bytes, mapped by the writer and every reader), little-endian:
//!
//! | offset | size | field                                                         |
//! |-------:|-----:|---------------------------------------------------------------|
//! | 0      | 8    | magic `MMSBSHD1`                                              |
//! | 8      | 4    | version (1)                                                   |
//! | 12     | 4    | header length (4096)                                          |
//! | 16     | 4    | writer pid (0: none)                                          |
//! | 20     | 4    | futex word: bumped by each wake-up                            |
//! | 24     | 8    | generation: +1 at each writer open                            |
//! | 32     | 8    | LSN: the last change applied to the page files                |
//! | 40     | 8    | durable LSN: the last change acknowledged to its caller       |
//! | 48     | 8    | page-table generation: +1 at each page create or free         |
//! | 56     | 4    | waiters: readers blocked in a wait (the writer wakes only then)|
//! | 60     | 4    | writer state: 1 recovering, 2 open, 3 closed                  |
//!
//! `pages/table`: a 64-byte header (magic `MMSBPTB1`, version u32, slot length u32 = 64,
//! capacity u64 = slot count, generation u64 = the writer generation that wrote it) and then
//! `capacity` slots of 64 bytes: seq u64 (a seqlock: odd while the writer changes the slot or
//! the page's bytes), page id u64 (0: empty), size u64, epoch u64, LSN of the last change u64.
//! The writer rewrites the table (temp file + rename) at each open and grows it in place.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use memmap2::{MmapMut, MmapOptions};
use parking_lot::Mutex;

use crate::runtime::state::{Core, Lsn};
use crate::types::error::{LogError, Result};
use crate::types::page::PageId;
use crate::types::IdHasher;

/// Magic of `pages/header`.
pub const HEADER_MAGIC: [u8; 8] = *b"MMSBSHD1";
/// Magic of `pages/table`.
pub const TABLE_MAGIC: [u8; 8] = *b"MMSBPTB1";
/// Layout version of both files.
pub const SHARED_VERSION: u32 = 1;
/// Length of `pages/header`.
pub const HEADER_LEN: usize = 4096;
/// Length of the table header and of each slot.
pub const SLOT_LEN: usize = 64;
const SLOT_LEN_U32: u32 = 64;
const HEADER_LEN_U32: u32 = 4096;
const _: () = assert!(SLOT_LEN_U32 as usize == SLOT_LEN && HEADER_LEN_U32 as usize == HEADER_LEN);
/// Name of the header inside `pages/`.
pub const HEADER_FILE: &str = "header";
/// Name of the page table inside `pages/`.
pub const TABLE_FILE: &str = "table";

/// Byte offsets of the fields of `pages/header`, of the table header and of a table slot (for
/// tools that read them, such as a stats command: aligned, read with atomic loads).
pub mod off {
    /// Header: writer pid (u32).
    pub const PID: usize = 16;
    /// Header: futex word (u32).
    pub const FUTEX: usize = 20;
    /// Header: writer generation (u64).
    pub const GENERATION: usize = 24;
    /// Header: last applied LSN (u64).
    pub const LSN: usize = 32;
    /// Header: last acknowledged LSN (u64).
    pub const DURABLE: usize = 40;
    /// Header: page-table generation (u64).
    pub const TABLE_GEN: usize = 48;
    /// Header: readers waiting (u32).
    pub const WAITERS: usize = 56;
    /// Header: writer state (u32, see `writer_state`).
    pub const STATE: usize = 60;
    /// Table header: capacity in slots (u64).
    pub const CAPACITY: usize = 16;
    /// Slot: seqlock (u64, odd while changing).
    pub const SEQ: usize = 0;
    /// Slot: page id (u64, 0 for a free slot).
    pub const ID: usize = 8;
    /// Slot: page size (u64).
    pub const SIZE: usize = 16;
    /// Slot: page epoch (u64).
    pub const EPOCH: usize = 24;
    /// Slot: LSN of the page's last change (u64).
    pub const SLOT_LSN: usize = 32;
}

/// Values of the header's writer state.
pub mod writer_state {
    /// A writer opened the directory and is recovering it.
    pub const RECOVERING: u32 = 1;
    /// A writer has it open.
    pub const OPEN: u32 = 2;
    /// The last writer closed it.
    pub const CLOSED: u32 = 3;
}

/// An atomic u64 at `base + at`.
///
/// # Safety
/// `base + at` must be 8-byte aligned and inside a live mapping of at least `at + 8` bytes that
/// outlives the returned reference.
pub(crate) unsafe fn a64<'a>(base: *const u8, at: usize) -> &'a AtomicU64 {
    // SAFETY: alignment and extent are the caller's obligation; AtomicU64 has the layout of u64
    // and every bit pattern is valid.
    unsafe { &*(base.add(at) as *const AtomicU64) }
}

/// An atomic u32 at `base + at`.
///
/// # Safety
/// As for [`a64`], with 4-byte alignment.
pub(crate) unsafe fn a32<'a>(base: *const u8, at: usize) -> &'a AtomicU32 {
    // SAFETY: see `a64`.
    unsafe { &*(base.add(at) as *const AtomicU32) }
}

/// `FUTEX_WAKE` of every waiter on `word` (shared, not process-private: readers are other
/// processes).
pub(crate) fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only reads the address, which is a valid aligned u32 in a shared mapping.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX, 0usize, 0usize, 0u32);
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> crate::types::error::Error {
    move |e| LogError::io(what, e).into()
}

fn create_file(path: &Path) -> std::io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o644);
    }
    opts.open(path)
}

/// The page table as the writer holds it.
#[derive(Debug)]
struct Table {
    file: File,
    map: MmapMut,
    capacity: u64,
    slots: HashMap<PageId, u64, IdHasher>,
    free: Vec<u64>,
}

impl Table {
    fn create(dir: &Path, generation: u64, capacity: u64) -> Result<Table> {
        let path = dir.join(TABLE_FILE);
        let tmp = dir.join("table.tmp");
        let what = format!("create {}", path.display());
        let mut file = create_file(&tmp).map_err(io(what.clone()))?;
        let mut h = [0u8; SLOT_LEN];
        h[0..8].copy_from_slice(&TABLE_MAGIC);
        h[8..12].copy_from_slice(&SHARED_VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&SLOT_LEN_U32.to_le_bytes());
        h[16..24].copy_from_slice(&capacity.to_le_bytes());
        h[24..32].copy_from_slice(&generation.to_le_bytes());
        file.write_all(&h).map_err(io(what.clone()))?;
        file.set_len((1 + capacity) * SLOT_LEN as u64).map_err(io(what.clone()))?;
        std::fs::rename(&tmp, &path).map_err(io(what.clone()))?;
        // SAFETY: our own file in the locked directory, just sized; readers map it read-only.
        let map = unsafe { MmapOptions::new().map_mut(&file) }.map_err(io(what))?;
        Ok(Table { file, map, capacity, slots: HashMap::default(), free: (0..capacity).rev().collect() })
    }

    fn slot(&self, i: u64, field: usize) -> &AtomicU64 {
        let i = usize::try_from(i).expect("a slot index below the capacity, which is mapped");
        // SAFETY: slot `i` < capacity lies inside the mapping (header + capacity slots); fields
        // are 8-byte aligned offsets inside the 64-byte slot; the mapping lives as long as self.
        unsafe { a64(self.map.as_ptr(), (1 + i) * SLOT_LEN + field) }
    }

    /// Doubles the capacity in place: readers' mappings of the old extent stay valid.
    fn grow(&mut self, dir: &Path) -> Result<()> {
        let cap = self.capacity * 2;
        let what = format!("grow {}", dir.join(TABLE_FILE).display());
        self.file.set_len((1 + cap) * SLOT_LEN as u64).map_err(io(what.clone()))?;
        // SAFETY: as in `create`; the old mapping is dropped after the new one exists.
        self.map = unsafe { MmapOptions::new().map_mut(&self.file) }.map_err(io(what))?;
        self.free.extend((self.capacity..cap).rev());
        self.capacity = cap;
        // SAFETY: the capacity field of the table header, 8-byte aligned, inside the mapping.
        unsafe { a64(self.map.as_ptr(), off::CAPACITY) }.store(cap, Ordering::Release);
        Ok(())
    }

    fn fill(&self, i: u64, id: PageId, size: u64, epoch: u64, lsn: Lsn) {
        let seq = self.slot(i, off::SEQ);
        let s = seq.load(Ordering::Relaxed);
        seq.store(s | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.slot(i, off::ID).store(id.0, Ordering::Relaxed);
        self.slot(i, off::SIZE).store(size, Ordering::Relaxed);
        self.slot(i, off::EPOCH).store(epoch, Ordering::Relaxed);
        self.slot(i, off::SLOT_LSN).store(lsn, Ordering::Relaxed);
        seq.store((s | 1) + 1, Ordering::Release);
    }
}

/// The slots a write changes, each once: inline for up to four pages (a route's usual batch),
/// so a route allocates nothing here.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    inline: [u64; 4],
    len: usize,
    spill: Vec<u64>,
}

impl Slots {
    fn as_slice(&self) -> &[u64] {
        if self.spill.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spill
        }
    }

    /// Adds `i` unless present; false when it was.
    fn insert(&mut self, i: u64) -> bool {
        if self.as_slice().contains(&i) {
            return false;
        }
        if self.spill.is_empty() && self.len < self.inline.len() {
            self.inline[self.len] = i;
            self.len += 1;
        } else {
            if self.spill.is_empty() {
                self.spill.extend_from_slice(&self.inline[..self.len]);
            }
            self.spill.push(i);
        }
        true
    }
}

/// A write in progress: the table stays locked from `begin_write` to `end_write` (both run
/// under the state's exclusive lock, so this costs one uncontended lock per write).
pub(crate) struct PendingWrite<'a> {
    t: parking_lot::MutexGuard<'a, Table>,
    slots: Slots,
}

/// The writer's side: owned by a state with file-backed pages. Every method but `open` runs
/// under the state's exclusive lock (or before the state is shared), so the table's mutex is
/// never contended.
#[derive(Debug)]
pub(crate) struct SharedWriter {
    dir: PathBuf,
    header: MmapMut,
    table: Mutex<Table>,
}

impl SharedWriter {
    /// Called with the directory's LOCK held, before recovery touches a page file: opens (or
    /// creates) the header, announces a new generation in state "recovering" (readers' reads
    /// fail with `Busy` until [`SharedWriter::publish_pages`]) and starts an empty table.
    pub(crate) fn open(pages_dir: &Path) -> Result<SharedWriter> {
        let path = pages_dir.join(HEADER_FILE);
        let what = format!("open {}", path.display());
        let valid = std::fs::read(&path).ok().is_some_and(|h| {
            h.len() == HEADER_LEN
                && h[0..8] == HEADER_MAGIC
                && h[8..12] == SHARED_VERSION.to_le_bytes()
                && h[12..16] == HEADER_LEN_U32.to_le_bytes()
        });
        if !valid {
            // Missing, or from another version: a new one (readers of an old one see ENOENT or
            // keep their old mapping, whose state says the writer is gone).
            let tmp = pages_dir.join("header.tmp");
            let mut f = create_file(&tmp).map_err(io(what.clone()))?;
            let mut h = vec![0u8; HEADER_LEN];
            h[0..8].copy_from_slice(&HEADER_MAGIC);
            h[8..12].copy_from_slice(&SHARED_VERSION.to_le_bytes());
            h[12..16].copy_from_slice(&HEADER_LEN_U32.to_le_bytes());
            f.write_all(&h).map_err(io(what.clone()))?;
            std::fs::rename(&tmp, &path).map_err(io(what.clone()))?;
        }
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(io(what.clone()))?;
        // SAFETY: a file of HEADER_LEN bytes (checked or just written) in the locked directory;
        // readers map it too and touch only the waiters field (atomically).
        let header = unsafe { MmapOptions::new().len(HEADER_LEN).map_mut(&file) }.map_err(io(what))?;
        // SAFETY: header offsets, aligned, inside the HEADER_LEN mapping that lives on.
        let state = unsafe { a32(header.as_ptr(), off::STATE) };
        // SAFETY: as above.
        let gen = unsafe { a64(header.as_ptr(), off::GENERATION) };
        state.store(writer_state::RECOVERING, Ordering::SeqCst);
        let generation = gen.fetch_add(1, Ordering::SeqCst) + 1;
        // SAFETY: as above.
        unsafe { a32(header.as_ptr(), off::PID) }.store(std::process::id(), Ordering::SeqCst);
        // Page bytes change only after this: a reader that copies across it sees the state or
        // generation change and retries (see `runtime::reader`).
        fence(Ordering::SeqCst);
        let table = Table::create(pages_dir, generation, 64)?;
        Ok(SharedWriter { dir: pages_dir.to_path_buf(), header, table: Mutex::new(table) })
    }

    fn h64(&self, at: usize) -> &AtomicU64 {
        // SAFETY: `at` is one of the 8-byte aligned header offsets, inside the HEADER_LEN mapping
        // owned by self.
        unsafe { a64(self.header.as_ptr(), at) }
    }

    fn h32(&self, at: usize) -> &AtomicU32 {
        // SAFETY: as in `h64`, 4-byte aligned.
        unsafe { a32(self.header.as_ptr(), at) }
    }

    /// After recovery: every page into the table, the LSN, and state "open".
    pub(crate) fn publish_pages(&self, core: &Core) -> Result<()> {
        {
            let mut t = self.table.lock();
            let mut ids: Vec<&PageId> = core.pages.keys().collect();
            ids.sort_unstable();
            for id in ids {
                let p = &core.pages[id];
                self.add_locked(&mut t, *id, p.size(), p.epoch, core.lsn)?;
            }
        }
        self.h64(off::TABLE_GEN).fetch_add(1, Ordering::Release);
        self.h64(off::DURABLE).store(core.lsn, Ordering::Release);
        self.h32(off::STATE).store(writer_state::OPEN, Ordering::SeqCst);
        self.publish_lsn(core.lsn);
        Ok(())
    }

    fn add_locked(&self, t: &mut Table, id: PageId, size: u64, epoch: u64, lsn: Lsn) -> Result<()> {
        if t.free.is_empty() {
            t.grow(&self.dir)?;
        }
        let i = t.free.pop().expect("grown");
        t.fill(i, id, size, epoch, lsn);
        t.slots.insert(id, i);
        Ok(())
    }

    /// Makes sure a slot is free for the next [`SharedWriter::page_added`] (which then cannot
    /// fail): called before a page creation is logged.
    pub(crate) fn reserve(&self) -> Result<()> {
        let mut t = self.table.lock();
        if t.free.is_empty() {
            t.grow(&self.dir)?;
        }
        Ok(())
    }

    /// A page was created (its file exists) at `lsn`; a slot was reserved.
    pub(crate) fn page_added(&self, id: PageId, size: u64, lsn: Lsn) {
        let mut t = self.table.lock();
        let i = t.free.pop().expect("reserved before the create was logged");
        t.fill(i, id, size, 0, lsn);
        t.slots.insert(id, i);
        drop(t);
        self.h64(off::TABLE_GEN).fetch_add(1, Ordering::Release);
        self.publish_lsn(lsn);
    }

    /// A page was freed at `lsn`.
    pub(crate) fn page_removed(&self, id: PageId, lsn: Lsn) {
        let mut t = self.table.lock();
        if let Some(i) = t.slots.remove(&id) {
            t.fill(i, PageId(0), 0, 0, lsn);
            t.free.push(i);
        }
        drop(t);
        self.h64(off::TABLE_GEN).fetch_add(1, Ordering::Release);
        self.publish_lsn(lsn);
    }

    /// Before the bytes of `pages` change: their slots' seqlocks go odd. Returns the slots
    /// (each once) for [`SharedWriter::end_write`].
    pub(crate) fn begin_write(&self, pages: impl Iterator<Item = PageId>) -> PendingWrite<'_> {
        let t = self.table.lock();
        let mut out = Slots::default();
        for id in pages {
            if let Some(&i) = t.slots.get(&id) {
                if out.insert(i) {
                    let seq = t.slot(i, off::SEQ);
                    seq.store(seq.load(Ordering::Relaxed) | 1, Ordering::Relaxed);
                }
            }
        }
        // The odd seqs are visible before any byte of the write (see `Table::fill`).
        fence(Ordering::Release);
        PendingWrite { t, slots: out }
    }

    /// After the bytes changed: new epochs and LSN in the slots, seqlocks even, then the LSN in
    /// the header (and a wake-up if a reader waits).
    pub(crate) fn end_write(&self, w: PendingWrite<'_>, core: &Core, lsn: Lsn) {
        let PendingWrite { t, slots } = w;
        for &i in slots.as_slice() {
            let id = PageId(t.slot(i, off::ID).load(Ordering::Relaxed));
            if let Some(p) = core.pages.get(&id) {
                t.slot(i, off::EPOCH).store(p.epoch, Ordering::Relaxed);
            }
            t.slot(i, off::SLOT_LSN).store(lsn, Ordering::Relaxed);
            let seq = t.slot(i, off::SEQ);
            seq.store(seq.load(Ordering::Relaxed) + 1, Ordering::Release);
        }
        drop(t);
        self.publish_lsn(lsn);
    }

    /// Publishes the LSN; wakes waiting readers only when one announced itself, so a writer
    /// without waiters pays one load.
    pub(crate) fn publish_lsn(&self, lsn: Lsn) {
        self.h64(off::LSN).store(lsn, Ordering::SeqCst);
        if self.h32(off::WAITERS).load(Ordering::SeqCst) > 0 {
            self.wake();
        }
    }

    /// The last LSN acknowledged to its caller.
    pub(crate) fn publish_durable(&self, lsn: Lsn) {
        self.h64(off::DURABLE).fetch_max(lsn, Ordering::Release);
    }

    fn wake(&self) {
        let f = self.h32(off::FUTEX);
        f.fetch_add(1, Ordering::SeqCst);
        futex_wake(f);
    }

    /// The state closed: readers see state "closed" and no writer pid, and every waiter wakes.
    pub(crate) fn closed(&self, lsn: Lsn) {
        self.h64(off::DURABLE).fetch_max(lsn, Ordering::Release);
        self.h32(off::PID).store(0, Ordering::SeqCst);
        self.h32(off::STATE).store(writer_state::CLOSED, Ordering::SeqCst);
        self.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_hold_each_slot_once_inline_and_spilled() {
        let mut s = Slots::default();
        for i in [3, 1, 3, 4, 1, 9, 7, 9, 2] {
            s.insert(i);
        }
        assert_eq!(s.as_slice(), &[3, 1, 4, 9, 7, 2]);
        let mut small = Slots::default();
        small.insert(5);
        small.insert(5);
        assert_eq!(small.as_slice(), &[5]);
    }
}
