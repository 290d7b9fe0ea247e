//! The graph and the log together: edges survive checkpoints and reopen, propagated deltas are
//! logged, and replay reproduces the propagated state exactly.

use mmsb::graph::{Command, CommandList, EdgeKind};
use mmsb::{Config, Durability, Location, MMSBState, PageId, PageMeta};

fn copy_all(len: u64) -> CommandList {
    CommandList::new().with(Command::Copy { src_off: 0, dst_off: 0, len })
}

fn open(dir: &std::path::Path) -> MMSBState {
    MMSBState::open(Config { dir: Some(dir.to_path_buf()), durability: Durability::None, ..Config::default() }).unwrap()
}

fn page(s: &MMSBState) -> PageId {
    s.create_page(16, Location::Cpu, PageMeta::default()).unwrap()
}

#[test]
fn edges_and_propagated_state_survive_checkpoint_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c, lsn_mid, bytes_mid);
    {
        let s = open(dir.path());
        a = page(&s);
        b = page(&s);
        c = page(&s);
        s.add_dependency(a, b, EdgeKind::Data, copy_all(16)).unwrap();
        s.update_page(a, b"first").unwrap();
        s.propagate(&[a]).unwrap();
        assert_eq!(&s.read_page(b).unwrap()[..5], b"first");
        s.checkpoint().unwrap();
        // After the checkpoint: a new edge, more writes, a propagation.
        s.add_dependency(b, c, EdgeKind::Data, copy_all(16)).unwrap();
        s.update_page(a, b"second").unwrap();
        s.propagate(&[a]).unwrap();
        lsn_mid = s.lsn();
        bytes_mid = s.read_page(c).unwrap();
        assert_eq!(&bytes_mid[..6], b"second");
        s.update_page(a, b"third!").unwrap();
    }
    let s = open(dir.path());
    assert_eq!(s.dependents(a).unwrap(), vec![b]);
    assert_eq!(s.dependents(b).unwrap(), vec![c]);
    assert_eq!(s.topo_order().unwrap(), vec![a, b, c]);
    // The graph is live after reopen: propagation continues from the recovered state.
    s.propagate(&[a]).unwrap();
    assert_eq!(&s.read_page(c).unwrap()[..6], b"third!");
    // Replay to the LSN recorded mid-run gives the propagated bytes of that moment.
    let past = s.replay_to(lsn_mid).unwrap();
    assert_eq!(past.read_page(c).unwrap(), bytes_mid);
    assert!(past.is_read_only());
    // A page with edges cannot be freed.
    assert_eq!(s.free_page(b).unwrap_err().code(), mmsb::ErrorCode::PageInUse);
}

#[test]
fn removed_edges_stay_removed_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b);
    {
        let s = open(dir.path());
        a = page(&s);
        b = page(&s);
        let e = s.add_dependency(a, b, EdgeKind::Control, copy_all(4)).unwrap();
        s.remove_dependency(e).unwrap();
        s.free_page(b).unwrap();
    }
    let s = open(dir.path());
    assert!(s.dependents(a).unwrap().is_empty());
    assert_eq!(s.read_page(b).unwrap_err().code(), mmsb::ErrorCode::UnknownPage);
}

#[test]
fn closing_releases_the_directory_while_the_handle_lives() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let p = page(&s);
    s.update_page(p, b"kept").unwrap();
    // A second state cannot share the directory while the first is open...
    assert!(MMSBState::open(Config { dir: Some(dir.path().to_path_buf()), ..Config::default() }).is_err());
    s.close();
    // ...but can once it is closed, even though `s` is still alive.
    let again = open(dir.path());
    assert_eq!(&again.read_page(p).unwrap()[..4], b"kept");
    drop(s);
}

/// A state with three pages and the edges `a -> b -> c`; returns the pages.
fn chain(s: &MMSBState) -> [PageId; 3] {
    let p = [page(s), page(s), page(s)];
    s.add_dependency(p[0], p[1], EdgeKind::Data, copy_all(16)).unwrap();
    s.add_dependency(p[1], p[2], EdgeKind::Control, copy_all(8)).unwrap();
    p
}

#[test]
fn a_restored_graph_survives_reopen_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (p, before, lsn_before, restored, lsn_restored);
    {
        let s = open(dir.path());
        p = chain(&s);
        let old = s.graph_snapshot().unwrap();
        // A checkpoint before the restore: reopen starts from it and replays the restore record.
        s.checkpoint().unwrap();
        // Change the graph, then restore the older snapshot over it.
        let e = s.with_graph(|g| g.edges()[0].id).unwrap();
        s.remove_dependency(e).unwrap();
        let newest = s.add_dependency(p[0], p[2], EdgeKind::Data, copy_all(4)).unwrap();
        before = s.graph_snapshot().unwrap();
        lsn_before = s.lsn();
        assert!(s.restore_graph(&old).unwrap().is_empty());
        lsn_restored = s.lsn();
        assert_eq!(lsn_restored, lsn_before + 1, "the restore is one record");
        restored = s.graph_snapshot().unwrap();
        assert_eq!(restored.edges, old.edges);
        assert_eq!(s.topo_order().unwrap(), p);
        // Ids never go back: the next edge is numbered after the one added before the restore.
        assert_eq!(restored.next_edge_id.0, newest.0 + 1);
        // A change after the restore, which replay to `lsn_restored` must not show.
        s.add_dependency(p[0], p[2], EdgeKind::Data, copy_all(4)).unwrap();
    }
    let s = open(dir.path());
    let mut now = restored.clone();
    now.edges.push(s.dependency(mmsb::graph::EdgeId(restored.next_edge_id.0)).unwrap());
    now.next_edge_id.0 += 1;
    assert_eq!(s.graph_snapshot().unwrap(), now);
    assert_eq!(s.replay_to(lsn_restored).unwrap().graph_snapshot().unwrap(), restored);
    assert_eq!(s.replay_to(lsn_before).unwrap().graph_snapshot().unwrap(), before);
}

#[test]
fn a_restore_that_fails_validation_changes_and_logs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (kept, lsn);
    {
        let s = open(dir.path());
        let p = chain(&s);
        kept = s.graph_snapshot().unwrap();
        lsn = s.lsn();
        let edge = |from, to| mmsb::graph::persist::EdgeRecord {
            id: mmsb::graph::EdgeId(40),
            from,
            to,
            kind: EdgeKind::Data,
            commands: copy_all(16),
        };
        let with = |e| mmsb::graph::persist::GraphSnapshot { edges: vec![e], ..kept.clone() };
        let unknown_page = with(edge(p[0], PageId(999)));
        let out_of_bounds = mmsb::graph::persist::GraphSnapshot {
            edges: vec![mmsb::graph::persist::EdgeRecord { commands: copy_all(17), ..edge(p[0], p[1]) }],
            ..kept.clone()
        };
        let mut cycle = kept.clone();
        cycle.edges.push(edge(p[2], p[0]));
        let newer = mmsb::graph::persist::GraphSnapshot {
            version: mmsb::graph::persist::GraphSnapshot::FORMAT_VERSION + 1,
            ..kept.clone()
        };
        for (what, bad, code) in [
            ("unknown page", unknown_page, mmsb::ErrorCode::UnknownPage),
            ("command out of bounds", out_of_bounds, mmsb::ErrorCode::InvalidArgument),
            ("cycle", cycle, mmsb::ErrorCode::Cycle),
            ("newer format", newer, mmsb::ErrorCode::Malformed),
        ] {
            assert_eq!(s.restore_graph(&bad).unwrap_err().code(), code, "{what}");
            assert_eq!(s.graph_snapshot().unwrap(), kept, "{what}: the graph changed");
            assert_eq!(s.lsn(), lsn, "{what}: a record was logged");
        }
    }
    let s = open(dir.path());
    assert_eq!(s.lsn(), lsn);
    assert_eq!(s.graph_snapshot().unwrap(), kept);
}

/// One appended record: LSN, LSN count, type byte, body.
type Rec = (u64, u64, u8, Vec<u8>);

/// Keeps what a primary appends, for a replica to apply (no network).
#[derive(Default)]
struct Appended(std::sync::Mutex<Vec<Rec>>);

impl mmsb::runtime::replica_hook::RecordObserver for Appended {
    fn admit(&self) -> mmsb::Result<()> {
        Ok(())
    }
    fn appended(&self, r: mmsb::runtime::replica_hook::RawRecord<'_>) {
        self.0.lock().unwrap().push((r.lsn, r.count, r.kind, r.body.to_vec()));
    }
    fn committed(&self, _: u64) {}
    fn wait(&self, _: u64) -> mmsb::Result<()> {
        Ok(())
    }
}

#[test]
fn a_follower_applies_a_restore() {
    use mmsb::runtime::replica_hook::{ObserverSlot, RawRecord, RecordObserver};
    let obs = std::sync::Arc::new(Appended::default());
    let slot = ObserverSlot(obs.clone() as std::sync::Arc<dyn RecordObserver>);
    let primary = MMSBState::open(Config { record_observer: Some(slot), ..Config::default() }).unwrap();
    let p = chain(&primary);
    let old = primary.graph_snapshot().unwrap();
    primary.add_dependency(p[0], p[2], EdgeKind::Data, copy_all(4)).unwrap();
    primary.restore_graph(&old).unwrap();
    let replica = MMSBState::replica(Config::default()).unwrap();
    for (lsn, count, kind, body) in obs.0.lock().unwrap().iter() {
        replica.apply_replicated(RawRecord { lsn: *lsn, count: *count, kind: *kind, body }).unwrap();
    }
    assert_eq!(replica.lsn(), primary.lsn());
    assert_eq!(replica.graph_snapshot().unwrap(), primary.graph_snapshot().unwrap());
    assert_eq!(replica.topo_order().unwrap(), p);
}
