//! Checkpoint files: every page (id, size, location, meta, epoch, bytes), the next page id and
//! the LSN, plus an opaque extension section for other layers (the graph snapshot).
//!
//! Written atomically: a temp file is filled, fsynced, renamed over its final name, and the
//! directory is fsynced. The previous generation stays until the new one is complete.

use serde::{Deserialize, Serialize};

use crate::runtime::state::{Core, Lsn};
use crate::runtime::tlog::checksum;
use crate::runtime::tlog::format::{
    checkpoint_name, le32, le64, CHECKPOINT_HEADER_LEN, CHECKPOINT_MAGIC, FORMAT_VERSION, TMP_SUFFIX,
};
use crate::runtime::tlog::storage::{FileBytes, Storage, StorageFile};
use crate::types::error::{LogError, PageError};
use crate::types::page::{os_page_size, Location, PageBuf, PageId, PageMeta};

/// One page in the checkpoint index (postcard); its bytes follow the index in index order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CkptPage {
    /// The page.
    pub id: PageId,
    /// Its size in bytes.
    pub size: u64,
    /// Where its canonical bytes live.
    pub location: Location,
    /// Its name and tags.
    pub meta: PageMeta,
    /// Its epoch at the checkpoint.
    pub epoch: u64,
}

/// A checkpoint read back (and verified, or lazily opened: see [`open_lazy`]). Page bytes are
/// slices of `raw`.
#[derive(Debug)]
pub struct CheckpointData {
    /// The LSN the checkpoint captures.
    pub lsn: Lsn,
    /// The id the next created page gets.
    pub next_page_id: u64,
    /// Every live page, in index order.
    pub pages: Vec<CkptPage>,
    raw: FileBytes,
    /// Where each page's image starts in `raw` (empty for an external checkpoint).
    offs: Vec<usize>,
    ext_start: usize,
    ext_len: usize,
    /// The page bytes are not in the checkpoint but in the page files (`CKPT_FLAG_EXTERNAL`):
    /// `pages()` yields nothing; see `runtime::pagefiles::load_external`.
    pub external: bool,
    /// Opened by [`open_lazy`]: the file, and the alignment of its mappable page images.
    lazy: Option<(std::fs::File, u64)>,
}

/// Checkpoint header flag (bytes 12..16): the page bytes live in the page files, not here
/// (`docs/page-files.md`). Older readers see a data length that does not match the index and
/// take the checkpoint for invalid.
pub const CKPT_FLAG_EXTERNAL: u32 = 1;

/// Version of the checkpoint format written by this build: the log's `FORMAT_VERSION`, 3 since
/// page images are aligned to OS pages so that open can map them instead of reading them
/// (`docs/log-format.md`, "Checkpoints"); this build reads 1..=3.
pub const CHECKPOINT_VERSION: u32 = FORMAT_VERSION;

/// The header of a checkpoint, decoded.
struct Header {
    version: u32,
    external: bool,
    lsn: Lsn,
    next_page_id: u64,
    /// Index, data and extension lengths.
    lens: [u64; 3],
    /// Version 3: images of pages of at least this many bytes start at a multiple of it, and
    /// the bytes after them up to the next multiple are zero (0: no alignment).
    align: u64,
    /// Version 3: CRC32C of the index followed by the extension section.
    meta_crc: u32,
}

impl Header {
    /// `Ok(None)`: not a checkpoint header (magic or CRC wrong).
    fn decode(h: &[u8], file: impl FnOnce() -> String) -> Result<Option<Header>, LogError> {
        let Some(h) = h.get(..CHECKPOINT_HEADER_LEN) else { return Ok(None) };
        if h[0..8] != CHECKPOINT_MAGIC || checksum::crc32c(&h[0..56]) != le32(&h[56..60]) {
            return Ok(None);
        }
        let version = le32(&h[8..12]);
        if version > CHECKPOINT_VERSION {
            return Err(LogError::UnsupportedVersion { file: file(), found: version, supported: CHECKPOINT_VERSION });
        }
        let flags = le32(&h[12..16]);
        let shift = (flags >> 8) & 0xff;
        let align = if version >= 3 && shift != 0 {
            // At most 2^30 (a 1 GiB OS page); anything larger is not ours.
            if shift > 30 {
                return Ok(None);
            }
            1u64 << shift
        } else {
            0
        };
        Ok(Some(Header {
            version,
            external: flags & CKPT_FLAG_EXTERNAL != 0,
            lsn: le64(&h[16..24]),
            next_page_id: le64(&h[24..32]),
            lens: [le64(&h[32..40]), le64(&h[40..48]), le64(&h[48..56])],
            align,
            meta_crc: le32(&h[60..64]),
        }))
    }

    /// The file length the header implies.
    fn total(&self) -> Option<u64> {
        self.lens.iter().try_fold(CHECKPOINT_HEADER_LEN as u64 + 4, |a, &l| a.checked_add(l))
    }
}

/// Where each page image starts (file offsets) and where the data section ends, for images
/// laid out from `at` in index order: contiguous, except that (version 3) an image of at least
/// `align` bytes starts at a multiple of `align` and is followed by zeros up to the next one.
/// `None` on overflow.
fn layout(pages: &[CkptPage], mut at: u64, align: u64) -> Option<(Vec<u64>, u64)> {
    let up = |v: u64| v.checked_add(align - 1).map(|v| v / align * align);
    let mut offs = Vec::with_capacity(pages.len());
    for p in pages {
        if align != 0 && p.size >= align {
            at = up(at)?;
            offs.push(at);
            at = up(at.checked_add(p.size)?)?;
        } else {
            offs.push(at);
            at = at.checked_add(p.size)?;
        }
    }
    Some((offs, at))
}

impl CheckpointData {
    /// Iterates `(page, bytes)` in index order (nothing for an external checkpoint). For a
    /// lazily opened checkpoint the bytes are a read-only map of the file: touching them reads
    /// them.
    pub fn pages(&self) -> impl Iterator<Item = (&CkptPage, &[u8])> {
        self.pages.iter().zip(&self.offs).map(|(p, &at)| {
            let len = usize::try_from(p.size).expect("checked against the file's length");
            (p, &self.raw[at..at + len])
        })
    }

    /// Page `i`'s image mapped copy-on-write ([`PageBuf::private_file`]), when this checkpoint
    /// was opened lazily and the image is aligned; `None`: copy `pages()`' bytes instead.
    pub fn mapped_page(&self, i: usize) -> Option<Result<PageBuf, PageError>> {
        let (file, align) = self.lazy.as_ref()?;
        let p = self.pages.get(i)?;
        if p.size < *align {
            return None;
        }
        Some(PageBuf::private_file(file, self.offs[i] as u64, p.size))
    }

    /// True when opened by [`open_lazy`] without verifying the page images' checksum.
    pub fn is_lazy(&self) -> bool {
        self.lazy.is_some()
    }

    /// The extension section (empty when no layer wrote one).
    pub fn extension(&self) -> &[u8] {
        &self.raw[self.ext_start..self.ext_start + self.ext_len]
    }
}

/// Buffers small writes so a checkpoint of many small pages is not one syscall per page.
struct Out<'a> {
    file: &'a dyn StorageFile,
    at: u64,
    buf: Vec<u8>,
    crc: u32,
}

impl Out<'_> {
    const CHUNK: usize = 1 << 20;

    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.crc = checksum::crc32c_append(self.crc, bytes);
        if self.buf.len() + bytes.len() > Self::CHUNK {
            self.flush()?;
        }
        if bytes.len() >= Self::CHUNK {
            self.file.write_at(self.at, bytes)?;
            self.at += bytes.len() as u64;
        } else {
            self.buf.extend_from_slice(bytes);
        }
        Ok(())
    }

    /// Where the next byte goes.
    fn pos(&self) -> u64 {
        self.at + self.buf.len() as u64
    }

    /// Zero padding up to file offset `to` (an aligned image's start or end).
    fn zeros_to(&mut self, to: u64) -> std::io::Result<()> {
        static ZEROS: [u8; 4096] = [0; 4096];
        while self.pos() < to {
            let n = usize::try_from(to - self.pos()).unwrap_or(usize::MAX).min(ZEROS.len());
            self.put(&ZEROS[..n])?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_at(self.at, &self.buf)?;
            self.at += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }
}

/// Writes the checkpoint of `core` (the caller holds the state's lock, so it is consistent).
/// The pages are written straight from their buffers (large ones without a copy), images of
/// at least an OS page aligned to OS pages (see [`layout`]). Returns the file name and its size.
pub(crate) fn write(storage: &dyn Storage, core: &Core, ext: &[u8]) -> Result<(String, u64), LogError> {
    let mut ids: Vec<PageId> = core.pages.keys().copied().collect();
    ids.sort_unstable();
    let index: Vec<CkptPage> = ids
        .iter()
        .map(|id| {
            let p = &core.pages[id];
            CkptPage { id: *id, size: p.size(), location: p.location, meta: p.meta.clone(), epoch: p.epoch }
        })
        .collect();
    let align = os_page_size() as u64;
    write_file(storage, core.lsn, core.next_page_id, &index, ext, 0, align, |out, offs, end| {
        for (id, &at) in ids.iter().zip(offs) {
            out.zeros_to(at)?;
            // SAFETY: the caller holds the state's lock for the whole call, which excludes
            // writers of page buffers.
            out.put(unsafe { core.pages[id].buf().as_slice() })?;
        }
        out.zeros_to(end)
    })
}

/// Writes an external checkpoint (the index without page bytes; see `CKPT_FLAG_EXTERNAL`).
pub(crate) fn write_external(
    storage: &dyn Storage,
    lsn: Lsn,
    next_page_id: u64,
    index: &[CkptPage],
    ext: &[u8],
) -> Result<(String, u64), LogError> {
    write_file(storage, lsn, next_page_id, index, ext, CKPT_FLAG_EXTERNAL, 0, |_, _, _| Ok(()))
}

#[allow(clippy::too_many_arguments)]
fn write_file(
    storage: &dyn Storage,
    lsn: Lsn,
    next_page_id: u64,
    index: &[CkptPage],
    ext: &[u8],
    flags: u32,
    align: u64,
    data: impl FnOnce(&mut Out<'_>, &[u64], u64) -> std::io::Result<()>,
) -> Result<(String, u64), LogError> {
    let name = checkpoint_name(lsn);
    let tmp = format!("{name}{TMP_SUFFIX}");
    let io = |what: &str| {
        let what = format!("{what} checkpoint {}", storage.describe(&tmp));
        move |e| LogError::io(what, e)
    };
    let too_big = || {
        LogError::io(format!("lay out checkpoint {}", storage.describe(&tmp)), std::io::Error::other("size overflows"))
    };
    let encoded = postcard::to_allocvec(index).expect("postcard encodes plain structs");
    let data_start = CHECKPOINT_HEADER_LEN as u64 + encoded.len() as u64;
    let external = flags & CKPT_FLAG_EXTERNAL != 0;
    let (offs, end) =
        if external { (Vec::new(), data_start) } else { layout(index, data_start, align).ok_or_else(too_big)? };
    let data_len = end - data_start;
    let shift = if align == 0 { 0 } else { align.trailing_zeros() };
    debug_assert!(align == 0 || align.is_power_of_two());
    let mut h = [0u8; CHECKPOINT_HEADER_LEN];
    h[0..8].copy_from_slice(&CHECKPOINT_MAGIC);
    h[8..12].copy_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(flags | shift << 8).to_le_bytes());
    h[16..24].copy_from_slice(&lsn.to_le_bytes());
    h[24..32].copy_from_slice(&next_page_id.to_le_bytes());
    h[32..40].copy_from_slice(&(encoded.len() as u64).to_le_bytes());
    h[40..48].copy_from_slice(&data_len.to_le_bytes());
    h[48..56].copy_from_slice(&(ext.len() as u64).to_le_bytes());
    let hcrc = checksum::crc32c(&h[0..56]);
    h[56..60].copy_from_slice(&hcrc.to_le_bytes());
    // The index and extension section have a checksum of their own: a lazy open checks them
    // without reading the page images.
    let meta_crc = checksum::crc32c_append(checksum::crc32c(&encoded), ext);
    h[60..64].copy_from_slice(&meta_crc.to_le_bytes());
    let index = encoded;

    let file = storage.create(&tmp).map_err(io("create"))?;
    let mut out = Out { file: file.as_ref(), at: 0, buf: Vec::with_capacity(Out::CHUNK), crc: 0 };
    let body = (|| -> std::io::Result<()> {
        out.put(&h)?;
        out.put(&index)?;
        data(&mut out, &offs, end)?;
        out.put(ext)?;
        let crc = out.crc;
        out.put(&crc.to_le_bytes())?;
        out.flush()?;
        out.file.sync()
    })();
    if let Err(e) = body {
        let _ = storage.remove(&tmp);
        return Err(io("write")(e));
    }
    let size = out.at;
    storage.rename(&tmp, &name).map_err(io("rename"))?;
    if let Err(e) = storage.sync_dir() {
        // The caller does not track a checkpoint that failed: take it away (best effort; one
        // left behind is still a compaction boundary, see `maintain.rs`).
        let _ = storage.remove(&name);
        return Err(io("sync directory after")(e));
    }
    Ok((name, size))
}

/// Reads and verifies a checkpoint, page images included. `Ok(None)`: not a valid checkpoint
/// (torn or corrupt).
pub fn read(storage: &dyn Storage, name: &str) -> Result<Option<CheckpointData>, LogError> {
    let raw = storage.read(name).map_err(|e| LogError::io(format!("read checkpoint {}", storage.describe(name)), e))?;
    let Some(h) = Header::decode(&raw, || storage.describe(name))? else { return Ok(None) };
    if h.total() != Some(raw.len() as u64) {
        return Ok(None);
    }
    let end = raw.len() - 4;
    if checksum::crc32c(&raw[..end]) != le32(&raw[end..]) {
        return Ok(None);
    }
    // The whole-file CRC covers the index and the extension section too (their own CRC is for
    // the lazy open).
    Ok(parse(FileBytes::Owned(raw), &h, None, false))
}

/// Opens a checkpoint without reading its page images (issue 21, fast open): the header, the
/// file's length, the index and the extension section are checked (their own CRC), the file is
/// mapped, and [`CheckpointData::mapped_page`] maps each aligned image copy-on-write, so pages
/// fault in on first touch. The whole-file CRC over the images is NOT checked here (that would
/// read every byte): it was computed from memory when the checkpoint was written, and a full
/// check is `read` (`mmsb verify`, `replay_to`'s base, the maintenance thread); see
/// `docs/reliability.md`. Falls back to [`read`] for storages without OS files, checkpoints
/// before version 3, external ones (small), and an alignment this machine cannot map.
pub fn open_lazy(storage: &dyn Storage, name: &str) -> Result<Option<CheckpointData>, LogError> {
    use std::os::unix::fs::FileExt;
    let describe = || storage.describe(name);
    let ioe = |what: &'static str| move |e| LogError::io(format!("{what} checkpoint {}", storage.describe(name)), e);
    let Some(file) = storage.os_file(name).map_err(ioe("open"))? else { return read(storage, name) };
    let flen = file.metadata().map_err(ioe("stat"))?.len();
    let mut head = [0u8; CHECKPOINT_HEADER_LEN];
    if flen < CHECKPOINT_HEADER_LEN as u64 {
        return Ok(None);
    }
    file.read_exact_at(&mut head, 0).map_err(ioe("read"))?;
    let Some(h) = Header::decode(&head, describe)? else { return Ok(None) };
    if h.version < 3 || h.external || h.align == 0 || !h.align.is_multiple_of(os_page_size() as u64) {
        return read(storage, name);
    }
    // The length the header promises, before anything is mapped: a truncated file is refused
    // here (the previous generation is tried), never a SIGBUS at first touch.
    if h.total() != Some(flen) {
        return Ok(None);
    }
    // SAFETY: read-only. The caller holds the directory's LOCK (recovery), so no MMSB writer
    // changes the file: checkpoints are written to new files and renamed, never rewritten in
    // place; retention unlinks old ones, which leaves a mapping valid. Its length was checked
    // above; a file cut by something outside MMSB meanwhile would fault (SIGBUS), the
    // assumption `Storage::read_exclusive` and page files make too.
    let map = unsafe { memmap2::MmapOptions::new().map(&file) }.map_err(ioe("map"))?;
    Ok(parse(FileBytes::Mapped(map), &h, Some((file, h.align)), true))
}

/// The sections of a checkpoint whose length (and, for `read`, CRC) was checked. `None`: the
/// index, the layout or (`check_meta`) the index + extension CRC does not hold.
fn parse(raw: FileBytes, h: &Header, lazy: Option<(std::fs::File, u64)>, check_meta: bool) -> Option<CheckpointData> {
    // Each length is at most `raw.len()` (their sum is), so these never fail; checked all the
    // same, as for every length read from a file.
    let [Ok(index_len), Ok(data_len), Ok(ext_len)] = h.lens.map(usize::try_from) else { return None };
    let data_start = CHECKPOINT_HEADER_LEN + index_len;
    let ext_start = data_start + data_len;
    let index = &raw[CHECKPOINT_HEADER_LEN..data_start];
    let ext = &raw[ext_start..ext_start + ext_len];
    if check_meta && checksum::crc32c_append(checksum::crc32c(index), ext) != h.meta_crc {
        return None;
    }
    let pages = postcard::from_bytes::<Vec<CkptPage>>(index).ok()?;
    let offs = if h.external {
        (data_len == 0).then(Vec::new)?
    } else {
        let (offs, end) = layout(&pages, data_start as u64, h.align)?;
        if end != ext_start as u64 {
            return None;
        }
        offs.into_iter().map(usize::try_from).collect::<Result<Vec<_>, _>>().ok()?
    };
    Some(CheckpointData {
        lsn: h.lsn,
        next_page_id: h.next_page_id,
        pages,
        raw,
        offs,
        ext_start,
        ext_len,
        external: h.external,
        lazy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::tlog::storage::{FsStorage, MemStorage};
    use crate::types::page::Page;

    const SIZES: &[u64] = &[1, 4095, 4096, 4097, 100, 70_000, 3];

    fn core() -> Core {
        let mut core = Core { lsn: 42, next_page_id: SIZES.len() as u64 + 1, ..Core::default() };
        for (k, &size) in SIZES.iter().enumerate() {
            let id = PageId(k as u64 + 1);
            let buf = PageBuf::anonymous(size).unwrap();
            // SAFETY: not shared yet.
            let bytes = unsafe { buf.as_mut_slice() };
            bytes.iter_mut().enumerate().for_each(|(i, b)| *b = u8::try_from((i * 13 + k) % 256).unwrap());
            core.pages.insert(id, Page::new(id, Location::Cpu, PageMeta::default(), buf));
        }
        core
    }

    fn bytes_of(c: &CheckpointData) -> Vec<Vec<u8>> {
        c.pages().map(|(_, b)| b.to_vec()).collect()
    }

    fn want(core: &Core) -> Vec<Vec<u8>> {
        (1..=SIZES.len() as u64).map(|i| core.pages[&PageId(i)].buf().to_vec()).collect()
    }

    #[test]
    fn lazy_open_maps_aligned_images_and_agrees_with_a_full_read() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::new(dir.path()).unwrap();
        let core = core();
        let (name, size) = write(&storage, &core, b"ext").unwrap();
        let full = read(&storage, &name).unwrap().unwrap();
        let lazy = open_lazy(&storage, &name).unwrap().unwrap();
        assert!(lazy.is_lazy() && !full.is_lazy());
        assert_eq!(bytes_of(&full), want(&core));
        assert_eq!(bytes_of(&lazy), want(&core));
        assert_eq!(lazy.extension(), b"ext");
        let ps = os_page_size() as u64;
        for (i, p) in lazy.pages.iter().enumerate() {
            match lazy.mapped_page(i) {
                Some(b) => {
                    assert!(p.size >= ps);
                    let b = b.unwrap();
                    assert_eq!(b.to_vec(), want(&core)[i]);
                    // The capacity past the page's bytes is zero (the writer pads images).
                    // SAFETY: a private buffer nobody else holds.
                    let tail = unsafe { std::slice::from_raw_parts(b.as_ptr().add(b.len()), b.capacity() - b.len()) };
                    assert!(tail.iter().all(|&x| x == 0));
                }
                None => assert!(p.size < ps),
            }
            assert!(full.mapped_page(i).is_none());
        }
        // Aligned images: every mapped one starts on an OS page.
        assert_eq!(size, std::fs::metadata(dir.path().join(&name)).unwrap().len());
    }

    #[test]
    fn damage_is_refused_by_length_at_lazy_open_and_by_crc_at_full_read() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::new(dir.path()).unwrap();
        let (name, size) = write(&storage, &core(), b"").unwrap();
        let path = dir.path().join(&name);
        let good = std::fs::read(&path).unwrap();
        // A flipped bit in a page image: the full read refuses it; the lazy open does not read
        // images, so it accepts it (the trade-off of docs/reliability.md, "Fast open").
        let mut flipped = good.clone();
        let at = flipped.len() - 5000;
        flipped[at] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert!(read(&storage, &name).unwrap().is_none());
        assert!(open_lazy(&storage, &name).unwrap().is_some());
        // A flipped bit in the index: both refuse it.
        let mut flipped = good.clone();
        flipped[CHECKPOINT_HEADER_LEN + 1] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert!(read(&storage, &name).unwrap().is_none());
        assert!(open_lazy(&storage, &name).unwrap().is_none());
        // Truncated: refused before anything is mapped.
        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(open_lazy(&storage, &name).unwrap().is_none());
        assert!(read(&storage, &name).unwrap().is_none());
        assert_eq!(size, good.len() as u64);
    }

    /// A version 2 checkpoint (images contiguous, no metadata CRC), as earlier builds wrote it.
    fn version2(core: &Core) -> Vec<u8> {
        let index: Vec<CkptPage> = (1..=SIZES.len() as u64)
            .map(|i| {
                let p = &core.pages[&PageId(i)];
                CkptPage { id: PageId(i), size: p.size(), location: p.location, meta: p.meta.clone(), epoch: 0 }
            })
            .collect();
        let index = postcard::to_allocvec(&index).unwrap();
        let data: Vec<u8> = want(core).concat();
        let mut h = [0u8; CHECKPOINT_HEADER_LEN];
        h[0..8].copy_from_slice(&CHECKPOINT_MAGIC);
        h[8..12].copy_from_slice(&2u32.to_le_bytes());
        h[16..24].copy_from_slice(&core.lsn.to_le_bytes());
        h[24..32].copy_from_slice(&core.next_page_id.to_le_bytes());
        h[32..40].copy_from_slice(&(index.len() as u64).to_le_bytes());
        h[40..48].copy_from_slice(&(data.len() as u64).to_le_bytes());
        let hcrc = checksum::crc32c(&h[0..56]);
        h[56..60].copy_from_slice(&hcrc.to_le_bytes());
        let mut out = [&h[..], &index, &data].concat();
        let crc = checksum::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    #[test]
    fn version_2_checkpoints_still_read_in_full() {
        let core = core();
        let dir = tempfile::tempdir().unwrap();
        let fs = FsStorage::new(dir.path()).unwrap();
        let mem = MemStorage::new();
        let name = checkpoint_name(core.lsn);
        for s in [&fs as &dyn Storage, &mem] {
            s.create(&name).unwrap().write_at(0, &version2(&core)).unwrap();
            let c = open_lazy(s, &name).unwrap().unwrap();
            assert!(!c.is_lazy());
            assert_eq!((c.lsn, c.next_page_id), (core.lsn, core.next_page_id));
            assert_eq!(bytes_of(&c), want(&core));
        }
    }

    #[test]
    fn a_newer_version_is_an_error_not_a_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::new(dir.path()).unwrap();
        let (name, _) = write(&storage, &core(), b"").unwrap();
        let path = dir.path().join(&name);
        let mut b = std::fs::read(&path).unwrap();
        b[8..12].copy_from_slice(&(CHECKPOINT_VERSION + 1).to_le_bytes());
        let hcrc = checksum::crc32c(&b[0..56]);
        b[56..60].copy_from_slice(&hcrc.to_le_bytes());
        std::fs::write(&path, &b).unwrap();
        assert!(matches!(open_lazy(&storage, &name), Err(LogError::UnsupportedVersion { .. })));
        assert!(matches!(read(&storage, &name), Err(LogError::UnsupportedVersion { .. })));
    }
}
