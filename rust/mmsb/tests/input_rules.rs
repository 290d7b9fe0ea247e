//! Issue 15 (API part): one bounds rule for every write, `Busy` for a locked directory,
//! `Reentrant` for callbacks that call back into their own state, and bounded page metadata.

use std::sync::{mpsc, Arc, Weak};
use std::time::Duration;

use mmsb::graph::{Command, CommandList, EdgeKind};
use mmsb::{Config, Delta, Location, MMSBState, PageId, PageMeta, RouteOp};

// Codes are compared by their stable names, so that these tests also build (and fail) against
// the code before the fix, which lacked `Busy`, `Reentrant` and the metadata limits.
const OUT_OF_BOUNDS: &str = "out_of_bounds";
const REENTRANT: &str = "reentrant";
/// `MAX_NAME` and friends.
const MAX_NAME: usize = 4096;
const MAX_TAGS: usize = 64;
const MAX_TAG: usize = 4096;

fn name(e: &mmsb::Error) -> &'static str {
    e.code().name()
}

fn state_with_page(size: u64) -> (MMSBState, PageId) {
    let s = MMSBState::in_memory();
    let p = s.create_page(size, Location::Cpu, PageMeta::default()).unwrap();
    (s, p)
}

/// `(read_page, epoch, lsn)`: what a refused write must leave unchanged.
fn snapshot(s: &MMSBState, p: PageId) -> (Vec<u8>, u64, u64) {
    (s.read_page(p).unwrap(), s.page_info(p).unwrap().epoch, s.lsn())
}

/// Every way to build a delta that writes nothing, at `offset`.
fn empty_deltas(offset: u64) -> Vec<(&'static str, Delta)> {
    vec![
        ("write, no bytes", Delta::write(offset, b"").unwrap()),
        ("dense, all-zero mask", Delta::dense(offset, &[0], &[7; 8]).unwrap()),
        ("dense bytemask, all zero", Delta::dense_bytemask(offset, &[0; 4], &[7; 4]).unwrap()),
        ("sparse, one empty run", Delta::sparse([(offset, &b""[..])]).unwrap()),
        ("diff of equal bytes", Delta::diff_at(offset, b"", b"").unwrap()),
    ]
}

#[test]
fn an_empty_write_obeys_the_same_bounds_as_any_write() {
    let (s, p) = state_with_page(64);
    // Past the end (by one byte, and far away): refused, nothing changes, no LSN is taken.
    for offset in [65, 1 << 40] {
        for (what, d) in empty_deltas(offset) {
            let before = snapshot(&s, p);
            let e = s.route_delta(p, &d, None).unwrap_err();
            assert_eq!(name(&e), OUT_OF_BOUNDS, "{what} at {offset}: {e}");
            assert_eq!(d.check_bounds(64).unwrap_err().to_string(), e.to_string(), "{what}");
            assert_eq!(snapshot(&s, p), before, "{what} at {offset} changed the state");
        }
        let e = s.update_page_at(p, offset, b"", None).unwrap_err();
        assert_eq!(name(&e), OUT_OF_BOUNDS, "update_page_at, empty, at {offset}");
        let mut none: [u8; 0] = [];
        assert_eq!(name(&s.read_into(p, offset, &mut none).unwrap_err()), OUT_OF_BOUNDS);
    }
    // At the end or inside: accepted like any write (an LSN, an epoch), bytes unchanged.
    for offset in [0, 17, 64] {
        for (what, d) in empty_deltas(offset) {
            let (bytes, epoch, lsn) = snapshot(&s, p);
            assert_eq!(s.route_delta(p, &d, None).unwrap(), lsn + 1, "{what} at {offset}");
            assert_eq!(snapshot(&s, p), (bytes, epoch + 1, lsn + 1), "{what} at {offset}");
        }
    }
    // Composition keeps the farthest offset: an out-of-range empty part still refuses the whole.
    let far = Delta::write(1 << 40, b"").unwrap().compose(&Delta::write(0, b"x").unwrap());
    assert_eq!(name(&s.route_delta(p, &far, None).unwrap_err()), OUT_OF_BOUNDS);
    let far = Delta::write(0, b"x").unwrap().compose(&Delta::write(1 << 40, b"").unwrap());
    assert_eq!(name(&s.route_delta(p, &far, None).unwrap_err()), OUT_OF_BOUNDS);
    // The same rule without a state: applying to a buffer.
    let mut buf = [0u8; 8];
    assert!(Delta::write(8, b"").unwrap().apply(&mut buf).is_ok());
    assert!(Delta::write(9, b"").unwrap().apply(&mut buf).is_err());
    assert!(Delta::dense(9, &[0], &[1; 3]).unwrap().apply(&mut buf).is_err());
}

#[test]
fn masked_out_bytes_past_the_end_do_not_count() {
    let (s, p) = state_with_page(64);
    // 8 bytes at 60: the last 4 would lie past the end, but only the first 3 are written.
    let inside = Delta::dense(60, &[0b0000_0111], &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    let lsn = s.route_delta(p, &inside, None).unwrap();
    assert_eq!(lsn, s.lsn());
    assert_eq!(&s.read_page(p).unwrap()[59..], &[0, 1, 2, 3, 0]);
    let bytemask = Delta::dense_bytemask(62, &[1, 1, 0, 0, 0], &[9, 9, 9, 9, 9]).unwrap();
    s.route_delta(p, &bytemask, None).unwrap();
    assert_eq!(&s.read_page(p).unwrap()[60..], &[1, 2, 9, 9]);
    // A written byte past the end is refused, and nothing changes.
    let before = snapshot(&s, p);
    let over = Delta::dense(60, &[0b0001_0000], &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    assert_eq!(name(&s.route_delta(p, &over, None).unwrap_err()), OUT_OF_BOUNDS);
    assert_eq!(snapshot(&s, p), before);
    // Applying to a buffer follows the same rule.
    let mut buf = [0u8; 63];
    inside.apply(&mut buf).unwrap();
    assert_eq!(&buf[60..], &[1, 2, 3]);
    assert!(inside.apply(&mut [0u8; 62]).is_err());
}

#[test]
fn an_empty_batch_reports_no_lsn() {
    let (s, p) = state_with_page(16);
    s.update_page(p, b"x").unwrap();
    let before = snapshot(&s, p);
    let r = s.route_batch(&[]).unwrap();
    assert!(r.is_empty());
    assert_eq!(r, 0..0, "an empty batch must not report an LSN it was never assigned");
    assert_eq!(snapshot(&s, p), before);
    // Still refused on a closed state.
    s.close();
    assert_eq!(name(&s.route_batch(&[]).unwrap_err()), "closed");
    let _ = RouteOp { page: p, delta: &Delta::empty(), expected_epoch: None };
}

#[test]
fn a_locked_directory_is_busy_not_io() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { dir: Some(dir.path().to_path_buf()), ..Config::default() };
    let first = MMSBState::open(config.clone()).unwrap();
    let e = MMSBState::open(config.clone()).unwrap_err();
    assert_eq!((name(&e), e.code() as u32), ("busy", 24), "{e}");
    assert!(e.to_string().contains(&dir.path().display().to_string()), "{e}");
    // Retrying after the holder closes works: that is what the distinct code is for.
    first.close();
    MMSBState::open(config).unwrap().close();
}

#[test]
fn page_names_and_tags_are_bounded() {
    let s = MMSBState::in_memory();
    let ok = PageMeta { name: "n".repeat(MAX_NAME), tags: vec![] };
    s.create_page(8, Location::Cpu, ok).unwrap();
    let lsn = s.lsn();
    let long = |n: usize| "n".repeat(n);
    let bad = [
        PageMeta { name: long(MAX_NAME + 1), tags: vec![] },
        PageMeta { name: long(1 << 20), tags: vec![] },
        PageMeta { name: long(16 << 20), tags: vec![] },
        PageMeta { name: "a\0b".into(), tags: vec![] },
        PageMeta { name: String::new(), tags: vec![("k".into(), "v".into()); MAX_TAGS + 1] },
        PageMeta { name: String::new(), tags: vec![("k".into(), long(MAX_TAG + 1))] },
        PageMeta { name: String::new(), tags: vec![(long(MAX_TAG + 1), "v".into())] },
    ];
    for meta in bad {
        let e = s.create_page(8, Location::Cpu, meta).unwrap_err();
        assert_eq!(name(&e), "invalid_argument", "{e}");
        assert!(e.to_string().contains("page metadata is invalid"), "{e}");
    }
    let e = s.create_page(8, Location::Cpu, PageMeta { name: long(1 << 20), tags: vec![] }).unwrap_err();
    assert!(e.to_string().contains(&MAX_NAME.to_string()), "the limit is in the message: {e}");
    assert_eq!(s.lsn(), lsn, "a refused create takes no LSN");
    assert_eq!(s.page_ids().unwrap().len(), 1);
}

/// Runs `f` on another thread and fails the test if it has not returned after 20 s: a
/// re-entrant call used to deadlock for good.
fn within_deadline<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20)).expect("deadlocked: the call did not return within 20 s")
}

/// A state with pages `a -> b` whose edge runs `f(state)` as its transform.
fn graph_with_transform(
    f: impl Fn(&MMSBState) -> Result<(), i32> + Send + Sync + 'static,
) -> (Arc<MMSBState>, PageId, PageId) {
    let s = Arc::new(MMSBState::in_memory());
    let a = s.create_page(8, Location::Cpu, PageMeta::default()).unwrap();
    let b = s.create_page(8, Location::Cpu, PageMeta::default()).unwrap();
    let weak: Weak<MMSBState> = Arc::downgrade(&s);
    let cmds = CommandList::new().with(Command::Copy { src_off: 0, dst_off: 0, len: 8 }).with(Command::rust_callback(
        move |_, _| {
            let s = weak.upgrade().ok_or(-1)?;
            f(&s)
        },
    ));
    s.add_dependency(a, b, EdgeKind::Data, cmds).unwrap();
    (s, a, b)
}

#[test]
fn a_transform_calling_into_its_own_state_gets_reentrant_not_a_deadlock() {
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let (s, a, b) = graph_with_transform(move |s| {
        // Writes, reads and graph calls alike are refused, each with the same clear code.
        let codes = [
            s.update_page(PageId(1), b"x").map(|_| ()),
            s.read_page(PageId(1)).map(|_| ()),
            s.create_page(8, Location::Cpu, PageMeta::default()).map(|_| ()),
            s.propagate(&[PageId(1)]).map(|_| ()),
            s.dependents(PageId(1)).map(|_| ()),
        ]
        .into_iter()
        .map(|r| name(&r.unwrap_err()))
        .collect::<Vec<_>>();
        seen2.lock().extend(codes);
        Err(25)
    });
    s.update_page(a, b"abcdefgh").unwrap();
    let before = snapshot(&s, b);
    let s2 = s.clone();
    let e = within_deadline(move || s2.propagate(&[a]).unwrap_err());
    assert_eq!((name(&e), e.code() as u32), (REENTRANT, 25), "{e}");
    assert!(e.to_string().contains("re-entrant") && e.to_string().contains(&format!("{a} -> {b}")), "{e}");
    assert_eq!(*seen.lock(), vec![REENTRANT; 5]);
    // The failed round changed nothing and the state is fully usable afterwards.
    assert_eq!(snapshot(&s, b), before);
    s.update_page(a, b"12345678").unwrap();
    assert_eq!(s.read_page(a).unwrap(), b"12345678");
    // The same through route_and_propagate: the batch applies, the round reports Reentrant.
    let d = Delta::write(0, b"z").unwrap();
    let s2 = s.clone();
    let e = within_deadline(move || {
        s2.route_and_propagate(&[RouteOp { page: a, delta: &d, expected_epoch: None }]).unwrap_err()
    });
    assert_eq!(name(&e), REENTRANT, "{e}");
    assert_eq!(s.read_page(a).unwrap()[0], b'z');
}

#[test]
fn a_transform_that_swallows_the_refusal_still_fails_the_round() {
    let (s, a, b) = graph_with_transform(|s| {
        let _ = s.update_page(PageId(1), b"x");
        Ok(())
    });
    s.update_page(a, b"abcdefgh").unwrap();
    let s2 = s.clone();
    let e = within_deadline(move || s2.propagate(&[a]).unwrap_err());
    assert_eq!(name(&e), REENTRANT, "{e}");
    assert_eq!(s.read_page(b).unwrap(), vec![0; 8], "the refused page was not written");
}

#[test]
fn infallible_calls_from_a_transform_panic_instead_of_deadlocking() {
    let (s, a, _) = graph_with_transform(|s| {
        let _ = s.lsn();
        Ok(())
    });
    s.update_page(a, b"abcdefgh").unwrap();
    let s2 = s.clone();
    let r = within_deadline(move || std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s2.propagate(&[a]))));
    let msg = r.unwrap_err();
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("re-entrant"), "{msg}");
    // The lock was released on the way out; the next round (and everything else) works.
    s.update_page(a, b"12345678").unwrap();
    assert!(s.lsn() > 0);
}

#[test]
fn a_transform_may_use_another_state() {
    let other = Arc::new(MMSBState::in_memory());
    let q = other.create_page(8, Location::Cpu, PageMeta::default()).unwrap();
    let o2 = other.clone();
    let (s, a, b) = graph_with_transform(move |_| o2.update_page(q, b"seen").map(|_| ()).map_err(|e| e.code() as i32));
    s.update_page(a, b"abcdefgh").unwrap();
    let s2 = s.clone();
    let stats = within_deadline(move || s2.propagate(&[a]).unwrap());
    assert_eq!(stats.deltas_routed, 1);
    assert_eq!(s.read_page(b).unwrap(), b"abcdefgh");
    assert_eq!(&other.read_page(q).unwrap()[..4], b"seen");
}
