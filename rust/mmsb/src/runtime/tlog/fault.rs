//! A fault-injecting [`Storage`] for tests (crash tests, the `log_faults` fuzz target). It is
//! public so that integration tests and the fuzz crate can use it; production code never does.
//!
//! [`FaultStorage`] wraps another storage and models what a disk promises:
//! - **Power loss** ([`FaultStorage::power_loss`]): each file has durable contents, updated to
//!   its current contents by `sync`; the directory has a durable listing (name → file), updated
//!   by `sync_dir` (so a create, rename or remove survives only after the next `sync_dir`). A
//!   power loss throws away everything else and invalidates every open handle (their later
//!   calls fail with EIO), like a process that dies with the machine.
//! - **Injected errors**: the `n`th future operation of a kind fails with EIO or ENOSPC
//!   ([`FaultStorage::fail_nth`]), every operation after `n` more fails
//!   ([`FaultStorage::fail_after`], a disk that went away), or a write persists only a prefix
//!   of its bytes and then reports ENOSPC ([`Fault::ShortWrite`]). A full disk is
//!   [`FaultStorage::set_full`]: every write and create fails with ENOSPC until cleared.
//!
//! Reads, `len` and `list` never fail: the log treats read errors at open as fatal anyway, and
//! the interesting faults are the ones that happen while writing.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::runtime::tlog::storage::{Storage, StorageFile};

/// The kinds of operation a fault can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// `write_at` / `append`.
    Write,
    /// `StorageFile::sync`.
    Sync,
    /// `Storage::sync_dir`.
    SyncDir,
    /// `Storage::create`.
    Create,
    /// `Storage::rename`.
    Rename,
    /// `Storage::remove`.
    Remove,
    /// `StorageFile::truncate`.
    Truncate,
}

impl Op {
    /// Every kind, for loops over all of them.
    pub const ALL: [Op; 7] = [Op::Write, Op::Sync, Op::SyncDir, Op::Create, Op::Rename, Op::Remove, Op::Truncate];
}

/// What an injected fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// The operation does nothing and fails with EIO.
    Eio,
    /// The operation does nothing and fails with ENOSPC.
    Enospc,
    /// (Writes only; other operations treat it as EIO.) Half of the bytes are written, then
    /// the write fails with ENOSPC.
    ShortWrite,
}

impl Fault {
    /// Every kind, for loops over all of them.
    pub const ALL: [Fault; 3] = [Fault::Eio, Fault::Enospc, Fault::ShortWrite];

    fn error(self) -> io::Error {
        match self {
            Fault::Enospc | Fault::ShortWrite => io::Error::from_raw_os_error(libc::ENOSPC),
            Fault::Eio => io::Error::from_raw_os_error(libc::EIO),
        }
    }
}

/// Counters of what the storage saw and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Operations attempted, by kind.
    pub ops: BTreeMap<Op, u64>,
    /// Faults injected, by operation and fault.
    pub injected: BTreeMap<(Op, Fault), u64>,
    /// Power losses simulated.
    pub power_losses: u64,
}

impl FaultStats {
    /// All faults injected.
    pub fn injected_total(&self) -> u64 {
        self.injected.values().sum()
    }
}

type FileId = u64;

#[derive(Debug, Default)]
struct Shared {
    generation: u64,
    next_id: FileId,
    /// Current directory: name → file.
    live: BTreeMap<String, FileId>,
    /// Durable directory (as of the last `sync_dir`).
    durable_dir: BTreeMap<String, FileId>,
    /// Durable contents of each file (as of its last `sync`).
    durable_data: HashMap<FileId, Vec<u8>>,
    /// Pending one-shot faults: the op's counter value at which it fires.
    nth: Vec<(Op, u64, Fault)>,
    /// Every operation fails once this many more have run.
    after: Option<(u64, Fault)>,
    full: bool,
    stats: FaultStats,
}

impl Shared {
    /// Counts an operation and decides whether it fails.
    fn check(&mut self, op: Op) -> Option<Fault> {
        let n = {
            let c = self.stats.ops.entry(op).or_insert(0);
            *c += 1;
            *c
        };
        let mut fault = None;
        if let Some(i) = self.nth.iter().position(|&(o, at, _)| o == op && at == n) {
            fault = Some(self.nth.swap_remove(i).2);
        }
        if let Some((left, f)) = &mut self.after {
            if *left == 0 {
                fault = fault.or(Some(*f));
            } else {
                *left -= 1;
            }
        }
        if self.full && matches!(op, Op::Write | Op::Create) {
            fault = fault.or(Some(Fault::Enospc));
        }
        if let Some(f) = fault {
            *self.stats.injected.entry((op, f)).or_insert(0) += 1;
        }
        fault
    }
}

/// A storage that injects faults and simulates power loss (see the module docs).
#[derive(Debug)]
pub struct FaultStorage {
    inner: Arc<dyn Storage>,
    s: Arc<Mutex<Shared>>,
}

impl FaultStorage {
    /// Wraps `inner`; whatever it already holds counts as durable.
    pub fn new(inner: Arc<dyn Storage>) -> io::Result<FaultStorage> {
        let mut s = Shared::default();
        for name in inner.list()? {
            let data = inner.read(&name)?;
            let id = s.next_id;
            s.next_id += 1;
            s.live.insert(name.clone(), id);
            s.durable_dir.insert(name, id);
            s.durable_data.insert(id, data);
        }
        Ok(FaultStorage { inner, s: Arc::new(Mutex::new(s)) })
    }

    /// Over a fresh in-memory storage.
    pub fn in_memory() -> FaultStorage {
        FaultStorage::new(Arc::new(crate::runtime::tlog::storage::MemStorage::new())).expect("empty storage")
    }

    /// Makes the `n`th future operation of kind `op` (1 = the next one) fail with `fault`.
    pub fn fail_nth(&self, op: Op, n: u64, fault: Fault) {
        let mut s = self.s.lock();
        let at = s.stats.ops.get(&op).copied().unwrap_or(0) + n.max(1);
        s.nth.push((op, at, fault));
    }

    /// Lets `n` more operations (of any kind) succeed, then fails every later one with `fault`.
    pub fn fail_after(&self, n: u64, fault: Fault) {
        self.s.lock().after = Some((n, fault));
    }

    /// A full disk: while set, every write and create fails with ENOSPC.
    pub fn set_full(&self, full: bool) {
        self.s.lock().full = full;
    }

    /// Cancels every pending fault (and a full disk).
    pub fn heal(&self) {
        let mut s = self.s.lock();
        s.nth.clear();
        s.after = None;
        s.full = false;
    }

    /// True while a fault set by [`FaultStorage::fail_after`] is firing.
    pub fn is_failing(&self) -> bool {
        matches!(self.s.lock().after, Some((0, _)))
    }

    /// Counters so far.
    pub fn stats(&self) -> FaultStats {
        self.s.lock().stats.clone()
    }

    /// Simulates power loss: the storage goes back to its durable contents, open handles die,
    /// pending faults are cancelled.
    pub fn power_loss(&self) -> io::Result<()> {
        let mut s = self.s.lock();
        s.generation += 1;
        s.nth.clear();
        s.after = None;
        s.full = false;
        s.stats.power_losses += 1;
        for name in self.inner.list()? {
            self.inner.remove(&name)?;
        }
        let dir = s.durable_dir.clone();
        for (name, id) in &dir {
            let f = self.inner.create(name)?;
            let data = s.durable_data.get(id).cloned().unwrap_or_default();
            f.write_at(0, &data)?;
        }
        s.live = dir;
        // Files no longer named anywhere are gone for good.
        let named: std::collections::HashSet<FileId> = s.live.values().copied().collect();
        s.durable_data.retain(|id, _| named.contains(id));
        Ok(())
    }

    fn wrap(&self, file: Arc<dyn StorageFile>, id: FileId, generation: u64) -> Arc<dyn StorageFile> {
        Arc::new(FaultFile { inner: file, id, generation, s: self.s.clone() })
    }
}

#[derive(Debug)]
struct FaultFile {
    inner: Arc<dyn StorageFile>,
    id: FileId,
    generation: u64,
    s: Arc<Mutex<Shared>>,
}

fn stale() -> io::Error {
    io::Error::other("stale handle: the storage lost power")
}

impl FaultFile {
    /// Locks the shared state, failing for a handle from before a power loss.
    fn lock(&self) -> io::Result<parking_lot::MutexGuard<'_, Shared>> {
        let s = self.s.lock();
        if s.generation != self.generation {
            return Err(stale());
        }
        Ok(s)
    }
}

impl StorageFile for FaultFile {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let mut s = self.lock()?;
        match s.check(Op::Write) {
            None => self.inner.write_at(offset, buf),
            Some(Fault::ShortWrite) => {
                self.inner.write_at(offset, &buf[..buf.len() / 2])?;
                Err(Fault::ShortWrite.error())
            }
            Some(f) => Err(f.error()),
        }
    }
    fn append(&self, buf: &[u8]) -> io::Result<u64> {
        let at = self.inner.len()?;
        self.write_at(at, buf)?;
        Ok(at)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let _s = self.lock()?;
        self.inner.read_at(offset, buf)
    }
    fn len(&self) -> io::Result<u64> {
        let _s = self.lock()?;
        self.inner.len()
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        let mut s = self.lock()?;
        match s.check(Op::Truncate) {
            None => self.inner.truncate(len),
            Some(f) => Err(f.error()),
        }
    }
    fn sync(&self) -> io::Result<()> {
        let mut s = self.lock()?;
        if let Some(f) = s.check(Op::Sync) {
            return Err(f.error());
        }
        let len = self.inner.len()?;
        let mut data = vec![0u8; len as usize];
        self.inner.read_at(0, &mut data)?;
        s.durable_data.insert(self.id, data);
        Ok(())
    }
}

impl Storage for FaultStorage {
    fn create(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        let mut s = self.s.lock();
        if let Some(f) = s.check(Op::Create) {
            return Err(f.error());
        }
        let file = self.inner.create(name)?;
        let id = s.next_id;
        s.next_id += 1;
        // A new file's durable contents are empty until its first sync.
        s.durable_data.insert(id, Vec::new());
        s.live.insert(name.to_owned(), id);
        Ok(self.wrap(file, id, s.generation))
    }
    fn open(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        let s = self.s.lock();
        let file = self.inner.open(name)?;
        let id = *s.live.get(name).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(self.wrap(file, id, s.generation))
    }
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.inner.read(name)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut s = self.s.lock();
        if let Some(f) = s.check(Op::Rename) {
            return Err(f.error());
        }
        self.inner.rename(from, to)?;
        if let Some(id) = s.live.remove(from) {
            s.live.insert(to.to_owned(), id);
        }
        Ok(())
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        let mut s = self.s.lock();
        if let Some(f) = s.check(Op::Remove) {
            return Err(f.error());
        }
        self.inner.remove(name)?;
        s.live.remove(name);
        Ok(())
    }
    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }
    fn sync_dir(&self) -> io::Result<()> {
        let mut s = self.s.lock();
        if let Some(f) = s.check(Op::SyncDir) {
            return Err(f.error());
        }
        s.durable_dir = s.live.clone();
        Ok(())
    }
    fn describe(&self, name: &str) -> String {
        format!("fault:{}", self.inner.describe(name))
    }
}

/// A test storage that wraps another and changes only some of what it does: implement
/// [`inner`](Self::inner) and override the methods that differ; every other one forwards to
/// `inner()` (a blanket impl makes it a [`Storage`]). [`wrap`](Self::wrap) wraps the files
/// `create` and `open` return (for example in a [`DelegatingFile`]). `release` and
/// `quarantine` keep `Storage`'s defaults, as a hand-written wrapper's would.
pub trait DelegatingStorage: Send + Sync + std::fmt::Debug {
    /// The storage every method not overridden goes to.
    fn inner(&self) -> &dyn Storage;
    /// Wraps each file `create` and `open` return (default: as it is).
    fn wrap(&self, file: Arc<dyn StorageFile>) -> Arc<dyn StorageFile> {
        file
    }
    /// [`Storage::create`].
    fn create(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        Ok(self.wrap(self.inner().create(name)?))
    }
    /// [`Storage::open`].
    fn open(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        Ok(self.wrap(self.inner().open(name)?))
    }
    /// [`Storage::read`].
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.inner().read(name)
    }
    /// [`Storage::rename`].
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.inner().rename(from, to)
    }
    /// [`Storage::remove`].
    fn remove(&self, name: &str) -> io::Result<()> {
        self.inner().remove(name)
    }
    /// [`Storage::list`].
    fn list(&self) -> io::Result<Vec<String>> {
        self.inner().list()
    }
    /// [`Storage::sync_dir`].
    fn sync_dir(&self) -> io::Result<()> {
        self.inner().sync_dir()
    }
    /// [`Storage::describe`].
    fn describe(&self, name: &str) -> String {
        self.inner().describe(name)
    }
}

impl<T: DelegatingStorage> Storage for T {
    fn create(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        DelegatingStorage::create(self, name)
    }
    fn open(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        DelegatingStorage::open(self, name)
    }
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        DelegatingStorage::read(self, name)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        DelegatingStorage::rename(self, from, to)
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        DelegatingStorage::remove(self, name)
    }
    fn list(&self) -> io::Result<Vec<String>> {
        DelegatingStorage::list(self)
    }
    fn sync_dir(&self) -> io::Result<()> {
        DelegatingStorage::sync_dir(self)
    }
    fn describe(&self, name: &str) -> String {
        DelegatingStorage::describe(self, name)
    }
}

/// A test file that wraps another and changes only some of what it does (see
/// [`DelegatingStorage`]). `write_vectored_at` defaults to one `write_at` per part, as
/// [`StorageFile`]'s default does, so an overridden `write_at` sees vectored writes too;
/// `preallocate` keeps `StorageFile`'s default.
pub trait DelegatingFile: Send + Sync + std::fmt::Debug {
    /// The file every method not overridden goes to.
    fn inner(&self) -> &dyn StorageFile;
    /// [`StorageFile::write_at`].
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.inner().write_at(offset, buf)
    }
    /// [`StorageFile::write_vectored_at`].
    fn write_vectored_at(&self, offset: u64, parts: &[&[u8]]) -> io::Result<()> {
        let mut at = offset;
        for p in parts {
            DelegatingFile::write_at(self, at, p)?;
            at += p.len() as u64;
        }
        Ok(())
    }
    /// [`StorageFile::append`].
    fn append(&self, buf: &[u8]) -> io::Result<u64> {
        self.inner().append(buf)
    }
    /// [`StorageFile::read_at`].
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner().read_at(offset, buf)
    }
    /// [`StorageFile::len`].
    fn len(&self) -> io::Result<u64> {
        self.inner().len()
    }
    /// [`StorageFile::is_empty`] (from `len`, as its default).
    fn is_empty(&self) -> io::Result<bool> {
        Ok(DelegatingFile::len(self)? == 0)
    }
    /// [`StorageFile::truncate`].
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.inner().truncate(len)
    }
    /// [`StorageFile::sync`].
    fn sync(&self) -> io::Result<()> {
        self.inner().sync()
    }
}

impl<T: DelegatingFile> StorageFile for T {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        DelegatingFile::write_at(self, offset, buf)
    }
    fn write_vectored_at(&self, offset: u64, parts: &[&[u8]]) -> io::Result<()> {
        DelegatingFile::write_vectored_at(self, offset, parts)
    }
    fn append(&self, buf: &[u8]) -> io::Result<u64> {
        DelegatingFile::append(self, buf)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        DelegatingFile::read_at(self, offset, buf)
    }
    fn len(&self) -> io::Result<u64> {
        DelegatingFile::len(self)
    }
    fn is_empty(&self) -> io::Result<bool> {
        DelegatingFile::is_empty(self)
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        DelegatingFile::truncate(self, len)
    }
    fn sync(&self) -> io::Result<()> {
        DelegatingFile::sync(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_loss_keeps_only_synced_bytes_and_synced_names() {
        let fs = FaultStorage::in_memory();
        let a = fs.create("a").unwrap();
        a.write_at(0, b"durable").unwrap();
        a.sync().unwrap();
        fs.sync_dir().unwrap();
        a.write_at(7, b" and lost").unwrap();
        let b = fs.create("b").unwrap();
        b.write_at(0, b"synced but never named durably").unwrap();
        b.sync().unwrap();
        fs.rename("a", "c").unwrap();
        fs.power_loss().unwrap();
        assert_eq!(fs.list().unwrap(), vec!["a".to_string()]);
        assert_eq!(fs.read("a").unwrap(), b"durable");
        // Handles from before the power loss are dead.
        assert!(a.write_at(0, b"x").is_err());
        assert!(a.sync().is_err());
        assert_eq!(fs.stats().power_losses, 1);
    }

    #[test]
    fn nth_faults_short_writes_and_a_full_disk() {
        let fs = FaultStorage::in_memory();
        let f = fs.create("a").unwrap();
        fs.fail_nth(Op::Write, 2, Fault::ShortWrite);
        f.write_at(0, b"0123").unwrap();
        let e = f.write_at(4, b"456789").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(fs.read("a").unwrap(), b"0123456");
        fs.fail_nth(Op::Sync, 1, Fault::Eio);
        assert_eq!(f.sync().unwrap_err().raw_os_error(), Some(libc::EIO));
        f.sync().unwrap();
        fs.set_full(true);
        assert!(fs.create("b").is_err());
        assert!(f.write_at(0, b"x").is_err());
        fs.set_full(false);
        f.write_at(0, b"x").unwrap();
        fs.fail_after(1, Fault::Eio);
        fs.sync_dir().unwrap();
        assert!(fs.sync_dir().is_err());
        assert!(fs.remove("a").is_err());
        assert!(fs.is_failing());
        fs.heal();
        fs.remove("a").unwrap();
        let st = fs.stats();
        assert_eq!(st.injected[&(Op::Write, Fault::ShortWrite)], 1);
        assert_eq!(st.injected[&(Op::Write, Fault::Enospc)], 1);
        assert_eq!(st.injected[&(Op::Create, Fault::Enospc)], 1);
        assert_eq!(st.injected_total(), 6);
    }
}
