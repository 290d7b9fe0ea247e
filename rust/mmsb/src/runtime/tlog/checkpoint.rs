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
use crate::runtime::tlog::storage::{Storage, StorageFile};
use crate::types::error::LogError;
use crate::types::page::{Location, PageId, PageMeta};

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

/// A checkpoint read back and verified. Page bytes are slices of `raw`.
#[derive(Debug)]
pub struct CheckpointData {
    /// The LSN the checkpoint captures.
    pub lsn: Lsn,
    /// The id the next created page gets.
    pub next_page_id: u64,
    /// Every live page, in index order.
    pub pages: Vec<CkptPage>,
    raw: Vec<u8>,
    data_start: usize,
    ext_start: usize,
    ext_len: usize,
    /// The page bytes are not in the checkpoint but in the page files (`CKPT_FLAG_EXTERNAL`):
    /// `pages()` yields nothing; see `runtime::pagefiles::load_external`.
    pub external: bool,
}

/// Checkpoint header flag (bytes 12..16): the page bytes live in the page files, not here
/// (`docs/page-files.md`). Older readers see a data length that does not match the index and
/// take the checkpoint for invalid.
pub const CKPT_FLAG_EXTERNAL: u32 = 1;

impl CheckpointData {
    /// Iterates `(page, bytes)` in index order (nothing for an external checkpoint).
    #[allow(
        clippy::cast_possible_truncation,
        reason = "read_checkpoint checked that the page sizes sum to the data section's length, a usize"
    )]
    pub fn pages(&self) -> impl Iterator<Item = (&CkptPage, &[u8])> {
        let mut at = self.data_start;
        let n = if self.external { 0 } else { self.pages.len() };
        self.pages[..n].iter().map(move |p| {
            let s = &self.raw[at..at + p.size as usize];
            at += p.size as usize;
            (p, s)
        })
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
/// Returns the file name and its size.
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
    let data_len = index.iter().map(|p| p.size).sum();
    write_file(storage, core.lsn, core.next_page_id, &index, ext, 0, data_len, |out| {
        for id in &ids {
            // SAFETY: the caller holds the state's lock for the whole call, which excludes
            // writers of page buffers.
            out.put(unsafe { core.pages[id].buf().as_slice() })?;
        }
        Ok(())
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
    write_file(storage, lsn, next_page_id, index, ext, CKPT_FLAG_EXTERNAL, 0, |_| Ok(()))
}

#[allow(clippy::too_many_arguments)]
fn write_file(
    storage: &dyn Storage,
    lsn: Lsn,
    next_page_id: u64,
    index: &[CkptPage],
    ext: &[u8],
    flags: u32,
    data_len: u64,
    data: impl FnOnce(&mut Out<'_>) -> std::io::Result<()>,
) -> Result<(String, u64), LogError> {
    let name = checkpoint_name(lsn);
    let tmp = format!("{name}{TMP_SUFFIX}");
    let io = |what: &str| {
        let what = format!("{what} checkpoint {}", storage.describe(&tmp));
        move |e| LogError::io(what, e)
    };
    let index = postcard::to_allocvec(index).expect("postcard encodes plain structs");
    let mut h = [0u8; CHECKPOINT_HEADER_LEN];
    h[0..8].copy_from_slice(&CHECKPOINT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&flags.to_le_bytes());
    h[16..24].copy_from_slice(&lsn.to_le_bytes());
    h[24..32].copy_from_slice(&next_page_id.to_le_bytes());
    h[32..40].copy_from_slice(&(index.len() as u64).to_le_bytes());
    h[40..48].copy_from_slice(&data_len.to_le_bytes());
    h[48..56].copy_from_slice(&(ext.len() as u64).to_le_bytes());
    let hcrc = checksum::crc32c(&h[0..56]);
    h[56..60].copy_from_slice(&hcrc.to_le_bytes());

    let file = storage.create(&tmp).map_err(io("create"))?;
    let mut out = Out { file: file.as_ref(), at: 0, buf: Vec::with_capacity(Out::CHUNK), crc: 0 };
    let body = (|| -> std::io::Result<()> {
        out.put(&h)?;
        out.put(&index)?;
        data(&mut out)?;
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

/// Reads and verifies a checkpoint. `Ok(None)`: not a valid checkpoint (torn or corrupt).
pub fn read(storage: &dyn Storage, name: &str) -> Result<Option<CheckpointData>, LogError> {
    let raw = storage.read(name).map_err(|e| LogError::io(format!("read checkpoint {}", storage.describe(name)), e))?;
    let Some(h) = raw.get(..CHECKPOINT_HEADER_LEN) else { return Ok(None) };
    if h[0..8] != CHECKPOINT_MAGIC || checksum::crc32c(&h[0..56]) != le32(&h[56..60]) {
        return Ok(None);
    }
    let version = le32(&h[8..12]);
    if version > FORMAT_VERSION {
        return Err(LogError::UnsupportedVersion {
            file: storage.describe(name),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let external = le32(&h[12..16]) & CKPT_FLAG_EXTERNAL != 0;
    let (lsn, next_page_id) = (le64(&h[16..24]), le64(&h[24..32]));
    let lens = [le64(&h[32..40]), le64(&h[40..48]), le64(&h[48..56])];
    let total = lens.iter().try_fold(CHECKPOINT_HEADER_LEN as u64 + 4, |a, &l| a.checked_add(l));
    if total != Some(raw.len() as u64) {
        return Ok(None);
    }
    let end = raw.len() - 4;
    if checksum::crc32c(&raw[..end]) != le32(&raw[end..]) {
        return Ok(None);
    }
    // Each length is at most `raw.len()` (their sum is), so this never fails; a checked
    // conversion all the same, as for every length read from a file.
    let [Ok(index_len), Ok(data_len), Ok(ext_len)] = lens.map(usize::try_from) else {
        return Ok(None);
    };
    let data_start = CHECKPOINT_HEADER_LEN + index_len;
    let Ok(pages) = postcard::from_bytes::<Vec<CkptPage>>(&raw[CHECKPOINT_HEADER_LEN..data_start]) else {
        return Ok(None);
    };
    let expected = if external { Some(0) } else { pages.iter().try_fold(0u64, |a, p| a.checked_add(p.size)) };
    if expected != Some(data_len as u64) {
        return Ok(None);
    }
    Ok(Some(CheckpointData {
        lsn,
        next_page_id,
        pages,
        raw,
        data_start,
        ext_start: data_start + data_len,
        ext_len,
        external,
    }))
}
