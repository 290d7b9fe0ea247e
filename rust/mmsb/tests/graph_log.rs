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
