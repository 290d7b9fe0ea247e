//! The core's replication hook (issue 22) without a network: an observer that records what a
//! primary appends, a replica that applies it, checkpoint images and promotion from one.

use std::sync::{Arc, Mutex};

use mmsb::graph::{Command, CommandList, EdgeKind};
use mmsb::runtime::replica_hook::{ObserverSlot, RawRecord, RecordObserver};
use mmsb::{Config, Delta, Durability, ErrorCode, Location, MMSBState, PageMeta, RouteOp};

type Rec = (u64, u64, u8, Vec<u8>);

#[derive(Default)]
struct Capture {
    records: Mutex<Vec<Rec>>,
    fenced: Mutex<bool>,
    waited: Mutex<Vec<u64>>,
    committed: Mutex<Vec<u64>>,
}

impl RecordObserver for Capture {
    fn admit(&self) -> mmsb::Result<()> {
        if *self.fenced.lock().unwrap() {
            return Err(mmsb::types::error::ReplicaError::Fenced { stream: "s".into(), term: 2 }.into());
        }
        Ok(())
    }
    fn appended(&self, r: RawRecord<'_>) {
        self.records.lock().unwrap().push((r.lsn, r.count, r.kind, r.body.to_vec()));
    }
    fn committed(&self, last_lsn: u64) {
        self.committed.lock().unwrap().push(last_lsn);
    }
    fn wait(&self, last_lsn: u64) -> mmsb::Result<()> {
        assert!(self.committed.lock().unwrap().contains(&last_lsn), "wait before committed");
        self.waited.lock().unwrap().push(last_lsn);
        Ok(())
    }
}

fn primary(obs: &Arc<Capture>, durability: Durability) -> MMSBState {
    let slot = ObserverSlot(obs.clone() as Arc<dyn RecordObserver>);
    MMSBState::open(Config { durability, record_observer: Some(slot), blob_min: 64, ..Config::default() }).unwrap()
}

fn apply_all(replica: &MMSBState, recs: &[Rec]) {
    for (lsn, count, kind, body) in recs {
        replica.apply_replicated(RawRecord { lsn: *lsn, count: *count, kind: *kind, body }).unwrap();
    }
}

fn assert_same(a: &MMSBState, b: &MMSBState) {
    assert_eq!(a.lsn(), b.lsn());
    assert_eq!(a.page_ids().unwrap(), b.page_ids().unwrap());
    for id in a.page_ids().unwrap() {
        assert_eq!(a.read_page(id).unwrap(), b.read_page(id).unwrap(), "page {id}");
        assert_eq!(a.page_info(id).unwrap().epoch, b.page_info(id).unwrap().epoch, "epoch of {id}");
    }
}

fn workload(s: &MMSBState) {
    let a = s.create_page(4096, Location::Cpu, PageMeta::default()).unwrap();
    let b = s.create_page(100, Location::Cpu, PageMeta::default()).unwrap();
    let c = s.create_page(100, Location::Cpu, PageMeta::default()).unwrap();
    s.update_page(a, &[7u8; 3000]).unwrap(); // a blob-sized payload (blob_min 64)
    let d1 = Delta::write(5, b"hello").unwrap();
    let d2 = Delta::write(0, b"xy").unwrap();
    s.route_batch(&[
        RouteOp { page: b, delta: &d1, expected_epoch: None },
        RouteOp { page: a, delta: &d2, expected_epoch: None },
    ])
    .unwrap();
    s.add_dependency(b, c, EdgeKind::Data, CommandList::new().with(Command::Copy { src_off: 0, dst_off: 0, len: 100 }))
        .unwrap();
    s.propagate(&[b]).unwrap();
    s.free_page(a).unwrap();
}

#[test]
fn a_replica_applying_the_observed_records_is_byte_identical() {
    let obs = Arc::new(Capture::default());
    let p = primary(&obs, Durability::Replicated);
    workload(&p);
    let recs = obs.records.lock().unwrap().clone();
    // Every LSN once, in order.
    let mut next = 1;
    for (lsn, count, _, _) in &recs {
        assert_eq!(*lsn, next);
        next += count;
    }
    assert_eq!(next - 1, p.lsn());
    // Replicated writes waited for the observer, each for its own last LSN.
    assert_eq!(obs.waited.lock().unwrap().last().copied(), Some(p.lsn()));
    let r = MMSBState::replica(Config::default()).unwrap();
    apply_all(&r, &recs);
    assert_same(&p, &r);
    assert_eq!(r.update_page(r.page_ids().unwrap()[0], b"x").unwrap_err().code(), ErrorCode::ReadOnly);
}

#[test]
fn out_of_order_and_bad_records_are_refused_and_change_nothing() {
    let obs = Arc::new(Capture::default());
    let p = primary(&obs, Durability::GroupCommit);
    workload(&p);
    assert!(obs.waited.lock().unwrap().is_empty(), "only Replicated writes wait for the observer");
    // Every write reports its local commit, with its last LSN.
    let ends: Vec<u64> = obs.records.lock().unwrap().iter().map(|r| r.0 + r.1 - 1).collect();
    assert_eq!(*obs.committed.lock().unwrap(), ends);
    let recs = obs.records.lock().unwrap().clone();
    let r = MMSBState::replica(Config::default()).unwrap();
    apply_all(&r, &recs[..2]);
    let before: Vec<_> = r.page_ids().unwrap().iter().map(|&id| r.read_page(id).unwrap()).collect();
    // A gap (skips a record), a replay of an old one, a delta out of bounds in the second op.
    let (lsn, count, kind, body) = &recs[3];
    let gap = r.apply_replicated(RawRecord { lsn: *lsn, count: *count, kind: *kind, body }).unwrap_err();
    assert_eq!(gap.code(), ErrorCode::Corrupt, "{gap}");
    let (lsn, count, kind, body) = &recs[0];
    assert!(r.apply_replicated(RawRecord { lsn: *lsn, count: *count, kind: *kind, body }).is_err());
    let bad = {
        let d1 = Delta::write(0, b"ok").unwrap();
        let d2 = Delta::write(4090, b"far too long").unwrap();
        let mut body = Vec::new();
        mmsb::runtime::tlog::record::encode_batch(
            [(mmsb::PageId(1), &d1), (mmsb::PageId(1), &d2)].into_iter(),
            2,
            &mut body,
        );
        body
    };
    let e = r.apply_replicated(RawRecord { lsn: r.lsn() + 1, count: 2, kind: 3, body: &bad }).unwrap_err();
    assert!(e.to_string().contains("out of bounds"), "{e}");
    let after: Vec<_> = r.page_ids().unwrap().iter().map(|&id| r.read_page(id).unwrap()).collect();
    assert_eq!(before, after);
    assert_eq!(r.lsn(), recs[1].0 + recs[1].1 - 1);
}

#[test]
fn images_bootstrap_replicas_and_promoted_states_continue_the_lsns() {
    let obs = Arc::new(Capture::default());
    let p = primary(&obs, Durability::Replicated);
    workload(&p);
    let (lsn, image) = p.checkpoint_image().unwrap();
    assert_eq!(lsn, p.lsn());
    let r = MMSBState::replica_from_image(Config::default(), &image).unwrap();
    assert_same(&p, &r);
    let mut bad = image.clone();
    let n = bad.len() / 2;
    bad[n] ^= 1;
    assert_eq!(MMSBState::replica_from_image(Config::default(), &bad).unwrap_err().code(), ErrorCode::Corrupt);

    // Promotion: a writable state from the image, in memory and in a directory.
    let dir = tempfile::tempdir().unwrap();
    for cfg in
        [Config { logging: true, ..Config::default() }, Config { dir: Some(dir.path().join("s")), ..Config::default() }]
    {
        let w = MMSBState::open_from_image(cfg, &image).unwrap();
        assert_same(&p, &w);
        let id = w.page_ids().unwrap()[0];
        assert_eq!(w.update_page(id, b"after").unwrap(), lsn + 1);
        // Its log replays from the image on.
        assert_eq!(w.replay_to(lsn).unwrap().read_page(id).unwrap(), p.read_page(id).unwrap());
    }
    // Reopening the directory recovers the promoted state and its new write.
    let w = MMSBState::open(Config { dir: Some(dir.path().join("s")), ..Config::default() }).unwrap();
    assert_eq!(w.lsn(), lsn + 1);
    let e = MMSBState::open_from_image(Config { dir: Some(dir.path().join("s")), ..Config::default() }, &image);
    assert_eq!(e.unwrap_err().code(), ErrorCode::InvalidArgument);
}

#[test]
fn a_fenced_observer_refuses_writes_before_they_are_logged() {
    let obs = Arc::new(Capture::default());
    let p = primary(&obs, Durability::Replicated);
    let id = p.create_page(16, Location::Cpu, PageMeta::default()).unwrap();
    *obs.fenced.lock().unwrap() = true;
    let e = p.update_page(id, b"nope").unwrap_err();
    assert_eq!(e.code(), ErrorCode::Fenced);
    assert!(e.to_string().contains("fenced"), "{e}");
    assert_eq!(p.lsn(), 1);
    assert_eq!(p.read_page(id).unwrap(), vec![0u8; 16]);
    assert_eq!(obs.records.lock().unwrap().len(), 1);
}

#[test]
fn replicated_durability_needs_an_observer() {
    let e = MMSBState::open(Config { durability: Durability::Replicated, ..Config::default() }).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert_eq!(Durability::from_u32(3), Some(Durability::Replicated));
}

#[test]
fn a_batch_applies_like_one_by_one_and_stops_at_a_bad_record() {
    let obs = Arc::new(Capture::default());
    let p = primary(&obs, Durability::None);
    workload(&p);
    let recs = obs.records.lock().unwrap().clone();
    let raw: Vec<RawRecord<'_>> =
        recs.iter().map(|(lsn, count, kind, body)| RawRecord { lsn: *lsn, count: *count, kind: *kind, body }).collect();
    let r = MMSBState::replica(Config::default()).unwrap();
    r.apply_replicated_batch(&raw).unwrap();
    assert_same(&p, &r);

    // A record with a cut body in the middle: the ones before it are applied, it is not.
    let r = MMSBState::replica(Config::default()).unwrap();
    let k = raw.len() / 2;
    let mut bad = raw.clone();
    bad[k].body = &bad[k].body[..bad[k].body.len() / 2];
    let e = r.apply_replicated_batch(&bad).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Corrupt, "{e}");
    assert_eq!(r.lsn(), raw[k].lsn - 1);
}

#[test]
fn append_replicated_logs_records_at_their_lsns() {
    // A primary's records, appended to another writable state's log (what a primary does with
    // records the stream has and its log lost): same pages, same LSNs, and in its log after a
    // reopen.
    let obs = Arc::new(Capture::default());
    let p = primary(&obs, Durability::None);
    workload(&p);
    let recs = obs.records.lock().unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config { dir: Some(dir.path().join("s")), durability: Durability::GroupCommit, ..Config::default() };
    let s = MMSBState::open(cfg.clone()).unwrap();
    // Out of order: refused, nothing logged.
    let (lsn, count, kind, body) = &recs[1];
    let e = s.append_replicated(RawRecord { lsn: *lsn, count: *count, kind: *kind, body }).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Corrupt, "{e}");
    assert_eq!(s.lsn(), 0);
    for (lsn, count, kind, body) in &recs {
        s.append_replicated(RawRecord { lsn: *lsn, count: *count, kind: *kind, body }).unwrap();
    }
    assert_same(&p, &s);
    // New writes continue after them.
    let id = s.page_ids().unwrap()[0];
    assert_eq!(s.update_page_at(id, 0, &[9], None).unwrap(), p.lsn() + 1);
    s.close();
    drop(s);
    let s = MMSBState::open(cfg).unwrap();
    assert_eq!(s.lsn(), p.lsn() + 1);
    assert_eq!(s.replay_to(p.lsn()).unwrap().read_page(id).unwrap(), p.read_page(id).unwrap());
}

/// An observer that holds records up to `held` (a primary: what its stream acknowledged).
struct Holding {
    held: Mutex<u64>,
}

impl RecordObserver for Holding {
    fn admit(&self) -> mmsb::Result<()> {
        Ok(())
    }
    fn appended(&self, _: RawRecord<'_>) {}
    fn committed(&self, _: u64) {}
    fn wait(&self, _: u64) -> mmsb::Result<()> {
        Ok(())
    }
    fn retained_after(&self) -> u64 {
        *self.held.lock().unwrap()
    }
}

/// The LSNs of the log's entries from `from` on, each with whether it is a compacted run.
fn entries_from(s: &MMSBState, from: u64) -> Vec<(u64, bool)> {
    s.log_records(from..s.lsn() + 1)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.lsn, matches!(e.op, mmsb::LogOp::Compacted { .. })))
        .collect()
}

#[test]
fn compaction_keeps_the_records_the_observer_does_not_hold() {
    // Issue 22: a primary whose stream lagged behind must still have the unpublished records
    // as logged after checkpoints and compaction, so that a restart can publish them.
    let obs = Arc::new(Holding { held: Mutex::new(0) });
    let dir = tempfile::tempdir().unwrap();
    let slot = ObserverSlot(obs.clone() as Arc<dyn RecordObserver>);
    let cfg = Config {
        dir: Some(dir.path().join("s")),
        durability: Durability::GroupCommit,
        record_observer: Some(slot),
        ..Config::default()
    };
    let s = MMSBState::open(cfg.clone()).unwrap();
    let page = s.create_page(4096, Location::Cpu, PageMeta::default()).unwrap();
    for i in 0..40u64 {
        s.update_page_at(page, i * 8, &[u8::try_from(i + 1).unwrap(); 8], None).unwrap();
    }
    // The observer holds LSNs up to 10: 11..=41 must stay, one entry per LSN.
    *obs.held.lock().unwrap() = 10;
    for _ in 0..3 {
        s.checkpoint().unwrap();
        s.compact_log().unwrap();
    }
    let unheld: Vec<(u64, bool)> = (11..=41).map(|l| (l, false)).collect();
    assert_eq!(entries_from(&s, 11), unheld);
    s.close();
    drop(s);
    // Also after a reopen (pruning at open keeps them too).
    let s = MMSBState::open(cfg.clone()).unwrap();
    assert_eq!(entries_from(&s, 11), unheld);
    // Once the observer holds everything, compaction folds them as usual.
    *obs.held.lock().unwrap() = u64::MAX;
    for _ in 0..3 {
        s.checkpoint().unwrap();
        s.compact_log().unwrap();
    }
    // (The range is folded into fewer entries, or gone: then `log_records` refuses it.)
    if let Ok(it) = s.log_records(11..s.lsn() + 1) {
        let n = it.map(|e| e.unwrap()).filter(|e| !matches!(e.op, mmsb::LogOp::Compacted { .. })).count();
        assert!(n < unheld.len(), "nothing was compacted once the observer held it all");
    }
    let expected: Vec<u8> = (0..40u64).flat_map(|i| [u8::try_from(i + 1).unwrap(); 8]).collect();
    assert_eq!(&s.read_page(page).unwrap()[..320], &expected[..]);
}
