//! Pages: page-aligned byte buffers with an id, an epoch, a location and metadata.
//!
//! A page's bytes live in a memory map (anonymous, or a file in the state's directory), so the
//! backing is page-aligned and its address never moves while the page exists. Bytes change only
//! through deltas routed by the state; readers either copy under the state's lock or hold a
//! [`PageView`], which keeps the mapping alive even after the page is freed.

use std::fmt;
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use memmap2::{MmapMut, MmapOptions};
use serde::{Deserialize, Serialize};

use crate::types::error::PageError;

/// Identifies a page for its whole life, on the CPU and on a device alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[repr(transparent)]
pub struct PageId(pub u64);

impl fmt::Display for PageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Where a page's canonical bytes live. The CPU mirror always exists.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Location {
    #[default]
    /// Host memory only.
    Cpu = 0,
    /// Device memory, with a CPU mirror.
    Gpu = 1,
    /// Managed memory shared by host and device.
    Unified = 2,
}

impl Location {
    /// Decodes the C ABI / log representation.
    pub fn from_u8(v: u8) -> Option<Location> {
        match v {
            0 => Some(Location::Cpu),
            1 => Some(Location::Gpu),
            2 => Some(Location::Unified),
            _ => None,
        }
    }
}

/// Descriptive metadata. Not interpreted by MMSB, but bounded: it is kept in memory, in the
/// page's create record in the log and in every checkpoint (see [`PageMeta::validate`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageMeta {
    /// A name for people and tools (no NUL, bounded length).
    pub name: String,
    /// Key-value tags (bounded count and length).
    pub tags: Vec<(String, String)>,
}

impl PageMeta {
    /// Longest page name, in bytes of UTF-8 (the size of a path: names are labels, not data).
    pub const MAX_NAME_BYTES: usize = 4096;
    /// Most tags on one page.
    pub const MAX_TAGS: usize = 64;
    /// Longest tag key or value, in bytes of UTF-8.
    pub const MAX_TAG_BYTES: usize = 4096;

    /// Checks the limits above, and that the name has no NUL (C reads it NUL-terminated).
    pub fn validate(&self) -> Result<(), crate::types::error::PageError> {
        use crate::types::error::PageError::InvalidName;
        if self.name.len() > Self::MAX_NAME_BYTES {
            return Err(InvalidName(format!(
                "{} bytes long; names may have 0..={} bytes",
                self.name.len(),
                Self::MAX_NAME_BYTES
            )));
        }
        if self.name.contains('\0') {
            return Err(InvalidName("names may not contain NUL".into()));
        }
        if self.tags.len() > Self::MAX_TAGS {
            return Err(InvalidName(format!("{} tags; a page may have 0..={} tags", self.tags.len(), Self::MAX_TAGS)));
        }
        if let Some((k, v)) = self.tags.iter().find(|(k, v)| k.len().max(v.len()) > Self::MAX_TAG_BYTES) {
            return Err(InvalidName(format!(
                "a tag has a key of {} and a value of {} bytes; each may have 0..={} bytes",
                k.len(),
                v.len(),
                Self::MAX_TAG_BYTES
            )));
        }
        Ok(())
    }
}

/// The OS page size (cached).
pub fn os_page_size() -> usize {
    static SIZE: OnceLock<usize> = OnceLock::new();
    *SIZE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions; it returns -1 on error, handled below.
        let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(v).ok().filter(|&v| v > 0).unwrap_or(4096)
    })
}

/// Rounds `size` up to a whole number of OS pages (at least one).
pub fn round_to_os_pages(size: u64) -> Option<u64> {
    let ps = os_page_size() as u64;
    let n = size.max(1).checked_add(ps - 1)? / ps;
    n.checked_mul(ps)
}

/// A page's OS-page-rounded capacity (as u64 and usize) and its length as usize, or
/// `InvalidSize` when the capacity overflows or does not fit this address space (`len` fits
/// once the capacity does: it is not larger).
fn sizes(len: u64) -> Result<(u64, usize, usize), PageError> {
    let capacity = round_to_os_pages(len).ok_or(PageError::InvalidSize { requested: len, max: u64::MAX })?;
    let cap =
        usize::try_from(capacity).map_err(|_| PageError::InvalidSize { requested: len, max: usize::MAX as u64 })?;
    Ok((capacity, cap, usize::try_from(len).expect("len <= capacity, which fits usize")))
}

/// The page-aligned backing of one page. Shared by the registry and any live views.
pub struct PageBuf {
    ptr: *mut u8,
    len: usize,
    capacity: usize,
    // Owns the mapping that `ptr` points into; unmapped on drop.
    map: MmapMut,
}

// SAFETY: PageBuf owns its mapping; `ptr` stays valid for `capacity` bytes until drop. Mutation
// happens only through `write_at`/`as_mut_slice`, whose callers hold the state's exclusive lock
// (documented on those methods), so sharing the handle between threads is sound.
unsafe impl Send for PageBuf {}
// SAFETY: see above; shared access only reads through raw pointers.
unsafe impl Sync for PageBuf {}

impl PageBuf {
    /// Allocates an anonymous, zeroed, page-aligned buffer of `len` logical bytes.
    pub fn anonymous(len: u64) -> Result<PageBuf, PageError> {
        let (_, cap, ulen) = sizes(len)?;
        let mut map = MmapOptions::new()
            .len(cap)
            .map_anon()
            .map_err(|source| PageError::AllocationFailed { size: len, source })?;
        let ptr = map.as_mut_ptr();
        Ok(PageBuf { ptr, len: ulen, capacity: cap, map })
    }

    /// Maps (creating if needed) `path` as the backing of a zeroed page of `len` bytes. An
    /// existing file is zeroed through the mapping, never truncated: a reader in another process
    /// may map it, and its access to a truncated range would be SIGBUS.
    pub fn file_backed(path: &Path, len: u64) -> Result<PageBuf, PageError> {
        let (capacity, cap, ulen) = sizes(len)?;
        let alloc_err = |source| PageError::AllocationFailed { size: len, source };
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts.open(path).map_err(alloc_err)?;
        let existed = file.metadata().map_err(alloc_err)?.len() > 0;
        file.set_len(capacity).map_err(alloc_err)?;
        // SAFETY: the file lies in the state's directory, whose LOCK this process holds: no other
        // process writes it (readers only map it read-only); it is `capacity` bytes long now.
        let mut map = unsafe { MmapOptions::new().len(cap).map_mut(&file) }.map_err(alloc_err)?;
        if existed {
            map.fill(0);
        }
        let ptr = map.as_mut_ptr();
        Ok(PageBuf { ptr, len: ulen, capacity: cap, map })
    }

    /// Maps an existing page file of a recovered page without changing its bytes. The file must
    /// be exactly the capacity of a page of `len` bytes (anything else is not our file).
    pub fn open_file_backed(path: &Path, len: u64) -> Result<PageBuf, PageError> {
        let (capacity, cap, ulen) = sizes(len)?;
        let alloc_err = |source| PageError::AllocationFailed { size: len, source };
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(alloc_err)?;
        let flen = file.metadata().map_err(alloc_err)?.len();
        if flen != capacity {
            return Err(alloc_err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} holds {flen} bytes, a page of {len} bytes needs {capacity}", path.display()),
            )));
        }
        // SAFETY: the file lies in the state's directory, whose LOCK this process holds: no other
        // process writes it; its length was checked above, so the mapping covers `capacity`.
        let mut map = unsafe { MmapOptions::new().len(cap).map_mut(&file) }.map_err(alloc_err)?;
        let ptr = map.as_mut_ptr();
        Ok(PageBuf { ptr, len: ulen, capacity: cap, map })
    }

    /// Maps `len` bytes of `file` at `offset` copy-on-write (`MAP_PRIVATE`): a page image inside
    /// a checkpoint (`runtime::tlog::checkpoint::open_lazy`). Nothing is read now; each OS page
    /// faults in from the file on first touch, and writes go to private copies, never to the
    /// file. The mapping holds its own reference to the file, so closing `file` (or unlinking
    /// it: retention removes old checkpoints) leaves it valid. `offset` must be a multiple of the
    /// OS page size, and the file must hold `offset + len` bytes (checked here: a mapped range
    /// past the end of a file is SIGBUS on first touch); the bytes from `len` up to the capacity
    /// are whatever the file holds there (the checkpoint writer zeroes them). The file must not
    /// be truncated or rewritten in place while mapped: checkpoints are written to new files and
    /// renamed.
    pub fn private_file(file: &std::fs::File, offset: u64, len: u64) -> Result<PageBuf, PageError> {
        let (_, cap, ulen) = sizes(len)?;
        let alloc_err = |source| PageError::AllocationFailed { size: len, source };
        let bad = |why: String| alloc_err(std::io::Error::new(std::io::ErrorKind::InvalidData, why));
        if !offset.is_multiple_of(os_page_size() as u64) {
            return Err(bad(format!("offset {offset} is not a multiple of the OS page size {}", os_page_size())));
        }
        let flen = file.metadata().map_err(alloc_err)?.len();
        if offset.checked_add(len).is_none_or(|end| end > flen) {
            return Err(bad(format!("the file holds {flen} bytes, a page of {len} bytes at {offset} needs more")));
        }
        // SAFETY: a private (copy-on-write) mapping: this process's writes never reach the file.
        // The file covers `offset..offset + len` (checked above), so every OS page of the mapping
        // but a partial last one lies inside the file, and the kernel zero-fills the partial
        // one's tail. Callers map only files nobody truncates while mapped (see above).
        let mut map = unsafe { MmapOptions::new().offset(offset).len(cap).map_copy(file) }.map_err(alloc_err)?;
        let ptr = map.as_mut_ptr();
        Ok(PageBuf { ptr, len: ulen, capacity: cap, map })
    }

    /// Writes the mapping's dirty pages back to its file and waits (`msync(MS_SYNC)`); a no-op
    /// for anonymous buffers.
    pub fn flush(&self) -> std::io::Result<()> {
        self.map.flush()
    }

    /// Logical length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-length buffer (never produced by the allocators above).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes reserved (a whole number of OS pages).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Start of the buffer (page-aligned).
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// Copies the logical bytes into a new vector.
    ///
    /// Callers that need a consistent snapshot hold the state's lock (as `MMSBState` does).
    pub fn to_vec(&self) -> Vec<u8> {
        // SAFETY: ptr is valid for `len` bytes for the life of self; u8 has no invalid values.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }.to_vec()
    }

    /// Borrows the logical bytes.
    ///
    /// # Safety
    /// No write may happen to this buffer while the slice is alive: hold the state's lock (shared
    /// or exclusive) for the slice's lifetime.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: valid for `len` bytes; exclusion of writers is the caller's obligation.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// Borrows the logical bytes mutably.
    ///
    /// # Safety
    /// The caller must have exclusive access: hold the state's exclusive lock, with no
    /// outstanding `as_slice` borrows.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> &mut [u8] {
        // SAFETY: valid for `len` bytes; exclusivity is the caller's obligation.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl fmt::Debug for PageBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageBuf").field("len", &self.len).field("capacity", &self.capacity).finish()
    }
}

/// A page in the registry.
///
/// `repr(C)`, fields in this order: what every route reads or writes (id, epoch, dirty ranges)
/// comes first, so that it shares the registry slot's first cache line with the buffer's
/// address (`runtime::page_table`); the name and tags, which routing never reads, come last
/// (issue 21).
#[derive(Debug)]
#[repr(C)]
pub struct Page {
    /// The page's id.
    pub id: PageId,
    /// Deltas applied so far.
    pub epoch: u64,
    /// Device layer hook: byte ranges changed on the CPU since the last device sync. `None` for
    /// CPU pages, so tracking costs them nothing.
    pub dirty: Option<crate::types::dirty::DirtySet>,
    buf: Arc<PageBuf>,
    /// Where its canonical bytes live.
    pub location: Location,
    /// Its name and tags.
    pub meta: PageMeta,
}

impl Page {
    /// Wraps a freshly allocated buffer.
    pub fn new(id: PageId, location: Location, meta: PageMeta, buf: PageBuf) -> Page {
        // Device layer hook: only pages that may have a device mirror track dirty ranges.
        let dirty = (location != Location::Cpu).then(crate::types::dirty::DirtySet::default);
        Page { id, epoch: 0, location, meta, dirty, buf: Arc::new(buf) }
    }

    /// Logical size in bytes.
    pub fn size(&self) -> u64 {
        self.buf.len() as u64
    }

    /// The shared backing buffer.
    pub fn buf(&self) -> &Arc<PageBuf> {
        &self.buf
    }

    /// A snapshot of the page's descriptive fields.
    pub fn info(&self) -> PageInfo {
        PageInfo {
            id: self.id,
            size: self.size(),
            capacity: self.buf.capacity() as u64,
            epoch: self.epoch,
            location: self.location,
            name: self.meta.name.clone(),
        }
    }
}

/// Descriptive snapshot of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageInfo {
    /// The page's id.
    pub id: PageId,
    /// Its size in bytes.
    pub size: u64,
    /// Bytes mapped for it (the size rounded up to whole OS pages).
    pub capacity: u64,
    /// Deltas applied so far.
    pub epoch: u64,
    /// Where its canonical bytes live.
    pub location: Location,
    /// Its name (empty if none).
    pub name: String,
}

/// A zero-copy, read-only handle on a page's bytes that keeps the mapping alive.
///
/// Bytes may change while a view exists (deltas keep being routed); a view gives no snapshot
/// isolation. Use `MMSBState::read_page` for a consistent copy.
#[derive(Debug, Clone)]
pub struct PageView {
    /// The page viewed.
    pub id: PageId,
    buf: Arc<PageBuf>,
}

impl PageView {
    pub(crate) fn new(id: PageId, buf: Arc<PageBuf>) -> PageView {
        PageView { id, buf }
    }

    /// Address of the first byte (page-aligned), valid while the view lives.
    pub fn as_ptr(&self) -> *const u8 {
        self.buf.as_ptr()
    }

    /// Logical length.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when the page has no bytes.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_page_aligned_and_zeroed() {
        let b = PageBuf::anonymous(100).unwrap();
        assert_eq!(b.as_ptr() as usize % os_page_size(), 0);
        assert_eq!(b.capacity() % os_page_size(), 0);
        assert_eq!(b.len(), 100);
        assert!(b.to_vec().iter().all(|&x| x == 0));
    }

    #[test]
    fn rounding() {
        let ps = os_page_size() as u64;
        assert_eq!(round_to_os_pages(0), Some(ps));
        assert_eq!(round_to_os_pages(ps), Some(ps));
        assert_eq!(round_to_os_pages(ps + 1), Some(2 * ps));
        assert_eq!(round_to_os_pages(u64::MAX), None);
    }

    #[test]
    fn private_file_mapping_is_copy_on_write() {
        let ps = os_page_size();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        let mut bytes = vec![7u8; ps];
        bytes.extend((0..ps + 10).map(|i| u8::try_from(i % 251).unwrap()));
        std::fs::write(&p, &bytes).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let b = PageBuf::private_file(&f, ps as u64, ps as u64 + 10).unwrap();
        drop(f);
        assert_eq!(b.to_vec(), bytes[ps..]);
        // SAFETY: the buffer is not shared.
        (unsafe { b.as_mut_slice() })[0] = 99;
        assert_eq!(b.to_vec()[0], 99);
        assert_eq!(std::fs::read(&p).unwrap(), bytes, "writes never reach the file");
        let f = std::fs::File::open(&p).unwrap();
        // Past the end of the file, or not OS-page-aligned: refused, never mapped.
        assert!(PageBuf::private_file(&f, ps as u64, ps as u64 + 11).is_err());
        assert!(PageBuf::private_file(&f, 1, 10).is_err());
    }

    #[test]
    fn file_backed_page_maps_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.page");
        let b = PageBuf::file_backed(&p, 10).unwrap();
        assert_eq!(b.len(), 10);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
