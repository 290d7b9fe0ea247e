//! Maintenance does not hold writers out while it reads the log back (issue 21, goal 1): a
//! compaction whose read of the log is held up must not keep a concurrent route from returning.

#![allow(clippy::cast_possible_truncation)] // test data and sizes: truncation is intended or impossible here

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use mmsb::runtime::tlog::fault::{DelegatingStorage, FaultStorage};
use mmsb::runtime::tlog::storage::Storage;
use mmsb::{Config, Delta, Durability, Location, MMSBState, PageMeta};

/// In-memory storage whose whole-file reads (how the log is read back) wait at a gate while it
/// is armed.
#[derive(Debug)]
struct GatedStorage {
    inner: FaultStorage,
    /// (armed, a reader is waiting)
    gate: Mutex<(bool, bool)>,
    cv: Condvar,
}

impl GatedStorage {
    fn arm(&self, on: bool) {
        self.gate.lock().unwrap().0 = on;
        self.cv.notify_all();
    }

    fn wait_for_reader(&self) {
        let g = self.gate.lock().unwrap();
        let (_g, t) = self.cv.wait_timeout_while(g, Duration::from_secs(30), |g| !g.1).unwrap();
        assert!(!t.timed_out(), "the compaction never read the log");
    }
}

impl DelegatingStorage for GatedStorage {
    fn inner(&self) -> &dyn Storage {
        &self.inner
    }
    fn read(&self, name: &str) -> std::io::Result<Vec<u8>> {
        let mut g = self.gate.lock().unwrap();
        if g.0 {
            g.1 = true;
            self.cv.notify_all();
            g = self.cv.wait_while(g, |g| g.0).unwrap();
            g.1 = false;
        }
        drop(g);
        self.inner.read(name)
    }
}

#[test]
fn a_route_returns_while_compaction_reads_the_log() {
    for mode in [Durability::None, Durability::GroupCommit, Durability::Always] {
        let fs = Arc::new(GatedStorage {
            inner: FaultStorage::in_memory(),
            gate: Mutex::new((false, false)),
            cv: Condvar::new(),
        });
        let config = Config { logging: true, durability: mode, segment_size: 4096, ..Config::default() };
        let s = MMSBState::open_with_storage(config.clone(), fs.clone() as Arc<dyn Storage>).unwrap();
        let p = s.create_page(4096, Location::Cpu, PageMeta::default()).unwrap();
        for i in 0..200u32 {
            s.route_delta(p, &Delta::write(u64::from(i % 32) * 128, &[i as u8; 128]).unwrap(), None).unwrap();
        }
        fs.arm(true);
        let routed = std::thread::scope(|sc| {
            let compaction = sc.spawn(|| s.compact_log());
            fs.wait_for_reader();
            // The compaction is now reading the log back: a route must still go through.
            let (tx, rx) = mpsc::channel();
            let s = &s;
            sc.spawn(move || {
                let _ = tx.send(s.route_delta(p, &Delta::write(0, &[0xEE; 16]).unwrap(), None));
            });
            let routed = rx.recv_timeout(Duration::from_secs(10));
            fs.arm(false); // let the compaction (and, before the fix, the route) finish
            compaction.join().unwrap().unwrap();
            routed
        });
        let lsn =
            routed.unwrap_or_else(|_| panic!("{mode:?}: a route waited for the compaction's read of the log")).unwrap();
        assert_eq!(lsn, 202, "{mode:?}");
        // Nothing was lost across the hand-over: the state, its replay and a reopen agree.
        let want = s.read_page(p).unwrap();
        assert_eq!(&want[..16], &[0xEE; 16]);
        assert_eq!(s.replay_to(s.lsn()).unwrap().read_page(p).unwrap(), want, "{mode:?}");
        s.route_delta(p, &Delta::write(16, &[0xDD; 16]).unwrap(), None).unwrap();
        let want = s.read_page(p).unwrap();
        drop(s);
        let r = MMSBState::open_with_storage(config, fs as Arc<dyn Storage>).unwrap();
        assert_eq!(r.read_page(p).unwrap(), want, "{mode:?} after reopen");
        assert_eq!(r.lsn(), 203, "{mode:?}");
    }
}
