//! Untrusted bytes → the body of a `GRAPH_RESTORE` log record, replayed through the graph's
//! `LogExtension::replay` onto a graph that already has edges: never panics; a body that fails
//! leaves the graph exactly as it was; one that is applied gives the snapshot's edges, keeps the
//! round counter and never lowers the next edge id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mmsb::graph::persist::{decode_snapshot, encode_snapshot, restore, EdgeRecord};
use mmsb::graph::{CommandList, EdgeKind, ShadowPageGraph};
use mmsb::runtime::extension::LogExtension;
use mmsb::runtime::tlog::ext_kind;
use mmsb::PageId;

fn size(p: PageId) -> Option<u64> {
    (p.0 < 8).then(|| 64 * (p.0 + 1))
}

/// The graph the record is replayed onto: a short chain, so a restore has something to replace.
fn existing() -> ShadowPageGraph {
    let mut g = ShadowPageGraph::new();
    for (from, to) in [(1, 2), (2, 3), (1, 4)] {
        g.add_edge(PageId(from), PageId(to), EdgeKind::Data, CommandList::new(), 64, 64).unwrap();
    }
    g
}

fuzz_target!(|data: &[u8]| {
    let mut g = existing();
    let before = encode_snapshot(&g);
    let next = g.next_edge_id();
    let rounds = g.rounds();
    match g.replay(ext_kind::GRAPH_RESTORE, data, &size) {
        Err(_) => assert_eq!(encode_snapshot(&g), before, "a failed restore changed the graph"),
        Ok(()) => {
            let s = decode_snapshot(data).expect("an applied body decodes");
            let (want, _) = restore(&s, size).expect("an applied snapshot restores");
            let edges = |g: &ShadowPageGraph| g.edges().into_iter().map(EdgeRecord::from).collect::<Vec<_>>();
            assert_eq!(edges(&g), edges(&want));
            assert!(g.next_edge_id() >= next.max(want.next_edge_id()));
            assert_eq!(g.rounds(), rounds);
        }
    }
});
