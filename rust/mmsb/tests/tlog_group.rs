//! Group commit's batching: concurrent writers share fsyncs, a lone writer never waits for
//! company. The storage is in memory with a slow fsync (2 ms), so batching does not depend on
//! the disk of the machine running the test.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use mmsb::runtime::tlog::storage::{MemStorage, Storage, StorageFile};
use mmsb::{Config, Delta, Durability, Location, MMSBState, PageMeta};

#[derive(Debug)]
struct SlowSync(Arc<dyn Storage>);

#[derive(Debug)]
struct SlowFile(Arc<dyn StorageFile>);

impl StorageFile for SlowFile {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.0.write_at(offset, buf)
    }
    fn append(&self, buf: &[u8]) -> io::Result<u64> {
        self.0.append(buf)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_at(offset, buf)
    }
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.0.truncate(len)
    }
    fn sync(&self) -> io::Result<()> {
        std::thread::sleep(Duration::from_millis(2));
        self.0.sync()
    }
}

impl Storage for SlowSync {
    fn create(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(SlowFile(self.0.create(name)?)))
    }
    fn open(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(SlowFile(self.0.open(name)?)))
    }
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.0.read(name)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.0.rename(from, to)
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.0.remove(name)
    }
    fn list(&self) -> io::Result<Vec<String>> {
        self.0.list()
    }
    fn sync_dir(&self) -> io::Result<()> {
        self.0.sync_dir()
    }
    fn describe(&self, name: &str) -> String {
        self.0.describe(name)
    }
}

fn state() -> MMSBState {
    let config = Config { logging: true, durability: Durability::GroupCommit, ..Config::default() };
    MMSBState::open_with_storage(config, Arc::new(SlowSync(Arc::new(MemStorage::new())))).unwrap()
}

#[test]
fn eight_writers_share_fsyncs() {
    const THREADS: u64 = 8;
    const WRITES: u64 = 40;
    let s = state();
    let pages: Vec<_> =
        (0..THREADS).map(|_| s.create_page(4096, Location::Cpu, PageMeta::default()).unwrap()).collect();
    let before = s.log_info().unwrap().group_syncs;
    std::thread::scope(|sc| {
        for (k, &p) in pages.iter().enumerate() {
            let s = &s;
            sc.spawn(move || {
                for i in 0..WRITES {
                    s.route_delta(p, &Delta::write(0, &[(i as u8) ^ (k as u8); 512]).unwrap(), None).unwrap();
                }
            });
        }
    });
    let syncs = s.log_info().unwrap().group_syncs - before;
    let per_sync = (THREADS * WRITES) as f64 / syncs as f64;
    // Syncing as soon as one writer waits covered 4-5 writers per fsync (two groups taking
    // turns); the leader gathering the writers the last syncs covered makes it nearly 8.
    assert!(per_sync >= 5.0, "{per_sync:.2} writes per fsync ({syncs} fsyncs)");
    for (k, &p) in pages.iter().enumerate() {
        assert_eq!(s.read_page(p).unwrap()[..512], [((WRITES - 1) as u8) ^ (k as u8); 512]);
    }
}

#[test]
fn a_lone_writer_syncs_every_write() {
    let s = state();
    let p = s.create_page(64, Location::Cpu, PageMeta::default()).unwrap();
    let before = s.log_info().unwrap().group_syncs;
    for i in 0..20u8 {
        s.update_page(p, &[i; 8]).unwrap();
    }
    assert_eq!(s.log_info().unwrap().group_syncs - before, 20);
}
