//! File-backed pages (`Config::file_backed_pages`): each page's bytes live in `dir/pages/<id>.page`,
//! mapped shared, so the state's memory is the page cache and a checkpoint writes no page bytes.
//! Layout and crash story: `docs/page-files.md`. In short:
//!
//! - the kernel may write a mapped page back at any time, so a live page file is trusted at
//!   recovery only if its page did not change since the checkpoint recovered from;
//! - before the first change to a page in an interval (one interval per checkpoint, and one
//!   from each open), its bytes as they are (its state at the interval's start) are appended to
//!   the interval's image file `images-<seq>`; in the synced durabilities the image is fsynced
//!   before the log record is even written, so it is durable before the mapped bytes change;
//! - a checkpoint at LSN `R` starts a new interval under the state's lock, then, without the
//!   lock, flushes the mappings and writes a checkpoint holding the page index only (flag
//!   `CKPT_FLAG_EXTERNAL`);
//! - recovery from such a checkpoint maps the live files and overwrites every page that has an
//!   image in an interval starting at or after `R` with its first such image (its state at `R`),
//!   then replays the log after `R` as for any checkpoint.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::runtime::state::{Core, Durability, Lsn};
use crate::runtime::tlog::checkpoint::{CheckpointData, CkptPage};
use crate::runtime::tlog::checksum::{crc32c, crc32c_append};
use crate::runtime::tlog::recover::Recoverable;
use crate::types::error::{LogError, Result};
use crate::types::page::{Page, PageBuf, PageId};
use crate::types::IdHasher;

/// The folder of page and image files inside the state's directory.
pub const PAGES_DIR: &str = "pages";
/// First bytes of an image file.
pub const IMAGE_MAGIC: [u8; 8] = *b"MMSBIMG1";
/// Image file header: magic, start LSN (u64 LE), CRC32C of the first 16 bytes (u32 LE), 4 zero.
pub const IMAGE_HEADER_LEN: usize = 24;
/// Image entry header: page id (u64 LE), byte count (u64 LE), CRC32C of id, count and bytes.
pub const IMAGE_ENTRY_HEADER_LEN: usize = 20;

/// Name of page `id`'s file inside `pages/`.
pub fn page_file_name(id: PageId) -> String {
    format!("{:020}.page", id.0)
}

/// Name of image file number `seq` inside `pages/`.
pub fn image_file_name(seq: u64) -> String {
    format!("images-{seq:020}")
}

fn parse_image_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("images-")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok())?
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> crate::types::error::Error {
    move |e| LogError::io(what, e).into()
}

/// The current interval's image file.
#[derive(Debug)]
struct Interval {
    seq: u64,
    file: Option<File>,
    /// Pages imaged (or created) in this interval: their next changes need no image. These
    /// are also the pages a checkpoint ending the interval must flush.
    imaged: HashSet<PageId, IdHasher>,
    /// A page was created in this interval (the next checkpoint fsyncs `pages/`).
    created: bool,
}

/// What the next checkpoint must flush: the pages changed in the interval it ends.
#[derive(Debug)]
pub(crate) struct Dirty {
    /// Every page (after an open, whose recovery changed pages without images, or after a
    /// checkpoint that failed part way).
    pub(crate) all: bool,
    pub(crate) pages: HashSet<PageId, IdHasher>,
    pub(crate) created: bool,
}

/// The page files of one state (its writer).
#[derive(Debug)]
pub(crate) struct PageFiles {
    dir: PathBuf,
    /// Images (and image files) are fsynced before the change they precede (the synced
    /// durabilities; `None` promises nothing across a power loss).
    sync: bool,
    cur: Mutex<Interval>,
    /// The next checkpoint flushes every page (see [`Dirty::all`]).
    flush_all: std::sync::atomic::AtomicBool,
}

impl PageFiles {
    /// Creates `dir/pages` if needed. No interval is open until [`PageFiles::start_interval`].
    pub(crate) fn open(dir: &Path, durability: Durability) -> Result<PageFiles> {
        let dir = dir.join(PAGES_DIR);
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        let seq = list_images(&dir)?.last().map_or(0, |i| i.0);
        Ok(PageFiles {
            dir,
            sync: durability != Durability::None,
            cur: Mutex::new(Interval { seq, file: None, imaged: HashSet::default(), created: false }),
            flush_all: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// The `pages/` folder.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: PageId) -> PathBuf {
        self.dir.join(page_file_name(id))
    }

    /// A new zeroed page file for `id` (an old file of that id is truncated: it is never trusted).
    pub(crate) fn allocate(&self, id: PageId, size: u64) -> Result<PageBuf> {
        Ok(PageBuf::file_backed(&self.path(id), size)?)
    }

    /// Marks a page created in this interval: recovery creates it again from its log record, so
    /// its changes need no image.
    pub(crate) fn created(&self, id: PageId) {
        let mut cur = self.cur.lock();
        cur.imaged.insert(id);
        cur.created = true;
    }

    /// The next checkpoint flushes every page: after an open (recovery changed pages without
    /// images), or when a checkpoint failed after it started an interval (the pages it should
    /// have flushed are no longer known).
    pub(crate) fn flush_all_next(&self) {
        self.flush_all.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Removes a freed page's file. Its image was taken before the free was logged.
    pub(crate) fn remove(&self, id: PageId) {
        // A file left behind (the removal failed) is never read: recovery maps only the files of
        // the pages its checkpoint lists, and page ids are never reused.
        let _ = std::fs::remove_file(self.path(id));
    }

    /// Called under the state's exclusive lock before a change to `pages` is logged: appends the
    /// image of each page not yet imaged in this interval (fsynced in the synced durabilities).
    /// On error nothing was changed or logged, and the caller fails the write.
    pub(crate) fn before_change(&self, core: &Core, pages: impl Iterator<Item = PageId>) -> Result<()> {
        let mut cur = self.cur.lock();
        let mut wrote = false;
        for id in pages {
            if cur.imaged.contains(&id) {
                continue;
            }
            let Some(page) = core.pages.get(&id) else { continue };
            let name = image_file_name(cur.seq);
            let Some(file) = cur.file.as_mut() else {
                return Err(LogError::Poisoned("file-backed pages have no open image interval".into()).into());
            };
            // SAFETY: the caller holds the state's exclusive lock, so no write to the page runs.
            let bytes = unsafe { page.buf().as_slice() };
            let mut head = [0u8; IMAGE_ENTRY_HEADER_LEN];
            head[0..8].copy_from_slice(&id.0.to_le_bytes());
            head[8..16].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
            let crc = crc32c_append(crc32c(&head[0..16]), bytes);
            head[16..20].copy_from_slice(&crc.to_le_bytes());
            let written = file.write_all(&head).and_then(|()| file.write_all(bytes));
            written.map_err(io(format!("append a page image to {}", self.dir.join(&name).display())))?;
            wrote = true;
            cur.imaged.insert(id);
        }
        if wrote && self.sync {
            let name = image_file_name(cur.seq);
            if let Some(f) = cur.file.as_ref() {
                f.sync_data().map_err(io(format!("fsync {}", self.dir.join(name).display())))?;
            }
        }
        Ok(())
    }

    /// Starts a new interval at `lsn` (called under the state's exclusive lock): a new image file,
    /// durable (with its directory entry, in the synced durabilities) before any image goes into
    /// it. Returns what changed in the interval it ends.
    pub(crate) fn start_interval(&self, lsn: Lsn) -> Result<Dirty> {
        let mut cur = self.cur.lock();
        let seq = cur.seq + 1;
        let path = self.dir.join(image_file_name(seq));
        let mut h = [0u8; IMAGE_HEADER_LEN];
        h[0..8].copy_from_slice(&IMAGE_MAGIC);
        h[8..16].copy_from_slice(&lsn.to_le_bytes());
        let crc = crc32c(&h[0..16]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        let mut opts = OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let what = format!("create {}", path.display());
        let mut file = opts.open(&path).map_err(io(what.clone()))?;
        file.write_all(&h).map_err(io(what.clone()))?;
        if self.sync {
            file.sync_data().map_err(io(what.clone()))?;
            sync_dir(&self.dir).map_err(io(what))?;
        }
        let old = std::mem::replace(
            &mut *cur,
            Interval { seq, file: Some(file), imaged: HashSet::default(), created: false },
        );
        let all = self.flush_all.swap(false, std::sync::atomic::Ordering::AcqRel);
        Ok(Dirty { all, pages: old.imaged, created: old.created })
    }

    /// Removes the image files of earlier intervals that hold no image (header only): they add
    /// nothing to [`images_since`]. Called at open, where each open starts an interval: without
    /// this, every reopen without a write left one more file for the next open to list and read.
    pub(crate) fn prune_empty(&self) -> Result<()> {
        let current = self.cur.lock().seq;
        for (seq, _) in list_images(&self.dir)? {
            let p = self.dir.join(image_file_name(seq));
            let empty = std::fs::metadata(&p).is_ok_and(|m| m.len() <= IMAGE_HEADER_LEN as u64);
            if seq < current && empty {
                std::fs::remove_file(&p).map_err(io(format!("remove {}", p.display())))?;
            }
        }
        Ok(())
    }

    /// Removes the image files that no retained checkpoint needs (those of intervals that
    /// started before `oldest`, the oldest retained checkpoint), except the current one.
    pub(crate) fn prune(&self, oldest: Lsn) -> Result<()> {
        let current = self.cur.lock().seq;
        for (seq, start) in list_images(&self.dir)? {
            if seq < current && start.is_none_or(|s| s < oldest) {
                let p = self.dir.join(image_file_name(seq));
                std::fs::remove_file(&p).map_err(io(format!("remove {}", p.display())))?;
            }
        }
        Ok(())
    }
}

/// Image files in `dir`, ascending: `(seq, start LSN)`; `None` for a header that does not
/// verify (a creation torn by a crash: it never held an image).
fn list_images(dir: &Path) -> Result<Vec<(u64, Option<Lsn>)>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(format!("list {}", dir.display()))(e)),
    };
    for e in rd {
        let e = e.map_err(io(format!("list {}", dir.display())))?;
        let Some(seq) = e.file_name().to_str().and_then(parse_image_name) else { continue };
        let mut h = [0u8; IMAGE_HEADER_LEN];
        let ok = File::open(e.path()).and_then(|f| {
            use std::os::unix::fs::FileExt;
            f.read_exact_at(&mut h, 0)
        });
        let start = (ok.is_ok()
            && h[0..8] == IMAGE_MAGIC
            && crc32c(&h[0..16]) == u32::from_le_bytes(h[16..20].try_into().expect("4 bytes")))
        .then(|| u64::from_le_bytes(h[8..16].try_into().expect("8 bytes")));
        out.push((seq, start));
    }
    out.sort_unstable();
    Ok(out)
}

/// The state at `lsn` of every page imaged in an interval starting at or after `lsn`: its first
/// image in those intervals, in order. An entry that does not verify ends its file (a torn
/// append: the change it preceded was never made).
pub(crate) fn images_since(pages_dir: &Path, lsn: Lsn) -> Result<HashMap<PageId, Vec<u8>>> {
    let mut out = HashMap::new();
    for (seq, start) in list_images(pages_dir)? {
        if start.is_none_or(|s| s < lsn) {
            continue;
        }
        let p = pages_dir.join(image_file_name(seq));
        let raw = std::fs::read(&p).map_err(io(format!("read {}", p.display())))?;
        let mut at = IMAGE_HEADER_LEN;
        while let Some(h) = raw.get(at..at + IMAGE_ENTRY_HEADER_LEN) {
            let id = PageId(u64::from_le_bytes(h[0..8].try_into().expect("8 bytes")));
            let len = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
            let crc = u32::from_le_bytes(h[16..20].try_into().expect("4 bytes"));
            let body_at = at + IMAGE_ENTRY_HEADER_LEN;
            let Some(body) = usize::try_from(len).ok().and_then(|l| raw.get(body_at..body_at.checked_add(l)?)) else {
                break;
            };
            if crc32c_append(crc32c(&h[0..16]), body) != crc {
                break;
            }
            out.entry(id).or_insert_with(|| body.to_vec());
            at = body_at + body.len();
        }
    }
    Ok(out)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Fills `core` with the pages of an external checkpoint (one holding the index only) of the
/// directory `dir`: a file-backed state maps the live files and overwrites the imaged pages; any
/// other state (a replay, or a reopen without `file_backed_pages`) copies the bytes.
pub(crate) fn load_external(state: &impl Recoverable, core: &mut Core, c: &CheckpointData, dir: &Path) -> Result<()> {
    let pages_dir = dir.join(PAGES_DIR);
    let images = images_since(&pages_dir, c.lsn)?;
    for p in &c.pages {
        let buf = page_at_checkpoint(state, &pages_dir, p, images.get(&p.id))?;
        let mut page = Page::new(p.id, p.location, p.meta.clone(), buf);
        page.epoch = p.epoch;
        core.pages.insert(p.id, page);
    }
    Ok(())
}

fn page_at_checkpoint(
    state: &impl Recoverable,
    pages_dir: &Path,
    p: &CkptPage,
    image: Option<&Vec<u8>>,
) -> Result<PageBuf> {
    let path = pages_dir.join(page_file_name(p.id));
    let corrupt = |reason: String| LogError::Corrupt { file: path.display().to_string(), offset: 0, reason };
    if let Some(img) = image {
        if img.len() as u64 != p.size {
            return Err(corrupt(format!("its image holds {} bytes, the page has {}", img.len(), p.size)).into());
        }
    }
    let buf = match (state.page_files(), image) {
        // The live file is the page's state at the checkpoint (it did not change since).
        (Some(_), None) => PageBuf::open_file_backed(&path, p.size)
            .map_err(|e| corrupt(format!("the page file of page {} cannot be used: {e}", p.id)))?,
        (Some(pf), Some(_)) => pf.allocate(p.id, p.size)?,
        (None, _) => PageBuf::anonymous(p.size)?,
    };
    match image {
        // SAFETY: the buffer is not shared yet.
        Some(img) => unsafe { buf.as_mut_slice() }.copy_from_slice(img),
        None if state.page_files().is_none() => {
            let bytes = std::fs::read(&path).map_err(|e| corrupt(format!("read the page file: {e}")))?;
            let src = usize::try_from(p.size)
                .ok()
                .and_then(|n| bytes.get(..n))
                .ok_or_else(|| corrupt(format!("holds {} bytes, expected {}", bytes.len(), p.size)))?;
            // SAFETY: the buffer is not shared yet.
            unsafe { buf.as_mut_slice() }.copy_from_slice(src);
        }
        None => {}
    }
    Ok(buf)
}

/// The pieces of an external checkpoint taken under the lock.
pub(crate) struct Snapshot {
    pub(crate) lsn: Lsn,
    pub(crate) next_page_id: u64,
    pub(crate) index: Vec<CkptPage>,
    pub(crate) ext: Vec<u8>,
    pub(crate) bufs: Vec<Arc<PageBuf>>,
    /// Pages were created since the last checkpoint: their directory entries need an fsync.
    pub(crate) sync_dir: bool,
}

/// Under the exclusive lock: starts the next interval and snapshots the index (a free function:
/// the maintenance thread calls it without the state).
pub(crate) fn snapshot(pf: &PageFiles, core: &Core) -> Result<Snapshot> {
    let dirty = pf.start_interval(core.lsn)?;
    let mut ids: Vec<PageId> = core.pages.keys().copied().collect();
    ids.sort_unstable();
    let index = ids
        .iter()
        .map(|id| {
            let p = &core.pages[id];
            CkptPage { id: *id, size: p.size(), location: p.location, meta: p.meta.clone(), epoch: p.epoch }
        })
        .collect();
    // Only the pages changed since the last checkpoint have dirty OS pages to write back
    // (an msync of a clean file still costs an fsync).
    let bufs =
        ids.iter().filter(|id| dirty.all || dirty.pages.contains(id)).map(|id| core.pages[id].buf().clone()).collect();
    Ok(Snapshot {
        sync_dir: dirty.all || dirty.created,
        lsn: core.lsn,
        next_page_id: core.next_page_id,
        index,
        ext: core.ext.iter().find_map(|e| e.checkpoint_section()).unwrap_or_default(),
        bufs,
    })
}

/// Without the state's lock: writes every mapping back (the pages unchanged since the snapshot
/// then hold their checkpoint state on disk) and makes the page files' entries durable.
pub(crate) fn flush(pf: &PageFiles, snap: &Snapshot) -> Result<()> {
    for b in &snap.bufs {
        b.flush().map_err(io(format!("flush the page files in {}", pf.dir.display())))?;
    }
    if snap.sync_dir {
        sync_dir(&pf.dir).map_err(io(format!("fsync {}", pf.dir.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_image_entry_ends_its_file_and_the_first_image_wins() {
        let dir = tempfile::tempdir().unwrap();
        let pf = PageFiles::open(dir.path(), Durability::None).unwrap();
        let mut core = Core { next_page_id: 2, ..Core::default() };
        let buf = pf.allocate(PageId(1), 8).unwrap();
        // SAFETY: not shared.
        unsafe { buf.as_mut_slice() }.copy_from_slice(b"aaaaaaaa");
        core.pages.insert(PageId(1), Page::new(PageId(1), Default::default(), Default::default(), buf));
        let _ = pf.start_interval(5).unwrap();
        pf.before_change(&core, [PageId(1)].into_iter()).unwrap();
        // SAFETY: not shared.
        unsafe { core.pages[&PageId(1)].buf().as_mut_slice() }.copy_from_slice(b"bbbbbbbb");
        // Imaged once per interval.
        pf.before_change(&core, [PageId(1)].into_iter()).unwrap();
        let dirty = pf.start_interval(9).unwrap();
        assert!(dirty.pages.contains(&PageId(1)) && !dirty.created);
        pf.before_change(&core, [PageId(1)].into_iter()).unwrap();
        assert_eq!(images_since(&pf.dir, 5).unwrap()[&PageId(1)], b"aaaaaaaa");
        assert_eq!(images_since(&pf.dir, 6).unwrap()[&PageId(1)], b"bbbbbbbb");
        // Tear the second file's entry: it no longer counts.
        let p = &pf.dir.join(image_file_name(2));
        let f = OpenOptions::new().write(true).open(p).unwrap();
        f.set_len(f.metadata().unwrap().len() - 1).unwrap();
        assert!(!images_since(&pf.dir, 6).unwrap().contains_key(&PageId(1)));
        assert_eq!(images_since(&pf.dir, 5).unwrap()[&PageId(1)], b"aaaaaaaa");
    }

    #[test]
    fn prune_empty_removes_only_earlier_intervals_without_images() {
        let dir = tempfile::tempdir().unwrap();
        let pf = PageFiles::open(dir.path(), Durability::None).unwrap();
        let mut core = Core { next_page_id: 2, ..Core::default() };
        let buf = pf.allocate(PageId(1), 8).unwrap();
        core.pages.insert(PageId(1), Page::new(PageId(1), Default::default(), Default::default(), buf));
        let _ = pf.start_interval(1).unwrap(); // 1: empty
        let _ = pf.start_interval(1).unwrap(); // 2: one image
        pf.before_change(&core, [PageId(1)].into_iter()).unwrap();
        let _ = pf.start_interval(2).unwrap(); // 3: empty
        let _ = pf.start_interval(2).unwrap(); // 4: current, empty
        pf.prune_empty().unwrap();
        let left: Vec<u64> = list_images(&pf.dir).unwrap().into_iter().map(|i| i.0).collect();
        assert_eq!(left, [2, 4]);
        assert_eq!(images_since(&pf.dir, 1).unwrap().len(), 1);
    }
}
