//! Serialized forms of graph changes and of whole graphs, for the transaction log and
//! checkpoints (postcard encoding).
//!
//! - A [`GraphRecord`] is one change: an edge added (with its id, kind and commands) or removed.
//!   Replaying the records of a log in order with [`replay_record`] rebuilds the graph.
//! - A [`GraphSnapshot`] is every edge at one point, for checkpoints; [`restore`] rebuilds it.
//!   `MMSBState::restore_graph` logs the snapshot it restores as one record
//!   (`ext_kind::GRAPH_RESTORE`, the snapshot's bytes as in a checkpoint); [`replace`] applies
//!   it, live and on replay alike.
//!
//! Edge ids are kept, so records after a checkpoint still name the right edges.
//!
//! **Callbacks are not restorable.** A callback command serializes only as a marker
//! ("callback, not restorable"); restoring or replaying an edge that had one drops the edge
//! (reported to the caller, who must add it again with live code), and a later removal of such
//! an edge replays as a no-op.

use serde::{Deserialize, Serialize};

use crate::graph::command::CommandList;
use crate::graph::shadow_graph::{EdgeId, EdgeKind, EdgeView, ShadowPageGraph};
use crate::types::error::{GraphError, PageError, Result};
use crate::types::page::PageId;

/// One edge, as logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeRecord {
    /// The edge's id.
    pub id: EdgeId,
    /// The source page.
    pub from: PageId,
    /// The dependent page.
    pub to: PageId,
    /// What the edge is for.
    pub kind: EdgeKind,
    /// The transform it runs.
    pub commands: CommandList,
}

impl From<EdgeView<'_>> for EdgeRecord {
    fn from(e: EdgeView<'_>) -> EdgeRecord {
        EdgeRecord { id: e.id, from: e.from, to: e.to, kind: e.kind, commands: e.commands.clone() }
    }
}

/// One logged change of the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GraphRecord {
    /// An edge was added.
    EdgeAdded(EdgeRecord),
    /// An edge was removed.
    EdgeRemoved {
        /// The removed edge's id.
        id: EdgeId,
    },
}

/// Every edge of a graph, for a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphSnapshot {
    /// [`GraphSnapshot::FORMAT_VERSION`] when written by this build.
    pub version: u32,
    /// The id the next new edge gets (ids are never reused, even after a restore).
    pub next_edge_id: EdgeId,
    /// Edges by ascending id.
    pub edges: Vec<EdgeRecord>,
}

impl GraphSnapshot {
    /// Version of the snapshot format written by this build.
    pub const FORMAT_VERSION: u32 = 1;
}

/// What replaying one record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// The record changed the graph.
    Applied,
    /// The record named a callback edge (added: dropped; removed: it was never restored).
    Skipped,
}

fn malformed(what: &str, e: postcard::Error) -> GraphError {
    GraphError::Malformed(format!("{what}: {e}"))
}

/// Encodes a record.
pub fn encode_record(r: &GraphRecord) -> Vec<u8> {
    postcard::to_allocvec(r).expect("graph records always serialize")
}

/// Decodes a record written by [`encode_record`] (the whole buffer).
pub fn decode_record(bytes: &[u8]) -> Result<GraphRecord, GraphError> {
    postcard::from_bytes(bytes).map_err(|e| malformed("graph record", e))
}

/// The snapshot of `graph`.
pub fn snapshot(graph: &ShadowPageGraph) -> GraphSnapshot {
    GraphSnapshot {
        version: GraphSnapshot::FORMAT_VERSION,
        next_edge_id: graph.next_edge_id(),
        edges: graph.edges().into_iter().map(EdgeRecord::from).collect(),
    }
}

/// Encodes the snapshot of `graph`.
pub fn encode_snapshot(graph: &ShadowPageGraph) -> Vec<u8> {
    snapshot_bytes(&snapshot(graph))
}

/// Encodes a snapshot (a checkpoint's extension section, the body of a `GRAPH_RESTORE` record).
pub fn snapshot_bytes(s: &GraphSnapshot) -> Vec<u8> {
    postcard::to_allocvec(s).expect("graph snapshots always serialize")
}

/// Decodes a snapshot written by [`encode_snapshot`], checking its version.
pub fn decode_snapshot(bytes: &[u8]) -> Result<GraphSnapshot, GraphError> {
    let s: GraphSnapshot = postcard::from_bytes(bytes).map_err(|e| malformed("graph snapshot", e))?;
    check_version(&s)?;
    Ok(s)
}

/// Refuses a snapshot of a newer format than this build reads.
fn check_version(s: &GraphSnapshot) -> Result<(), GraphError> {
    if s.version > GraphSnapshot::FORMAT_VERSION {
        return Err(GraphError::Malformed(format!(
            "graph snapshot has format version {}; this build reads up to {}",
            s.version,
            GraphSnapshot::FORMAT_VERSION
        )));
    }
    Ok(())
}

/// Rebuilds a graph from a snapshot. `page_size` gives the size of each page the edges name
/// (commands are validated again; a snapshot of a newer format is refused). Returns the graph
/// and the ids of the callback edges that were dropped.
pub fn restore(
    snapshot: &GraphSnapshot,
    page_size: impl Fn(PageId) -> Option<u64>,
) -> Result<(ShadowPageGraph, Vec<EdgeId>)> {
    check_version(snapshot)?;
    let mut g = ShadowPageGraph::new();
    let mut dropped = Vec::new();
    for e in &snapshot.edges {
        if replay_record(&mut g, &GraphRecord::EdgeAdded(e.clone()), &page_size)? == ReplayOutcome::Skipped {
            dropped.push(e.id);
        }
    }
    g.reserve_edge_ids(snapshot.next_edge_id);
    Ok((g, dropped))
}

/// Replaces `graph` by the restored `snapshot`: what `MMSBState::restore_graph` does and what
/// its record replays to. The snapshot is checked in full (by [`restore`]) before anything
/// changes, so an error leaves `graph` as it was. Returns the ids of the callback edges that
/// were dropped.
pub fn replace(
    graph: &mut ShadowPageGraph,
    snapshot: &GraphSnapshot,
    page_size: impl Fn(PageId) -> Option<u64>,
) -> Result<Vec<EdgeId>> {
    let (restored, dropped) = restore(snapshot, page_size)?;
    install(graph, restored);
    Ok(dropped)
}

/// Puts `restored` in place of `graph`, keeping the round counter; the next edge id never goes
/// down (ids are never reused, even after restoring an older snapshot).
pub fn install(graph: &mut ShadowPageGraph, mut restored: ShadowPageGraph) {
    restored.round = graph.round;
    restored.reserve_edge_ids(graph.next_edge_id());
    *graph = restored;
}

/// Applies one logged change to `graph` (see the module docs for callback edges).
pub fn replay_record(
    graph: &mut ShadowPageGraph,
    record: &GraphRecord,
    page_size: impl Fn(PageId) -> Option<u64>,
) -> Result<ReplayOutcome> {
    match record {
        GraphRecord::EdgeAdded(e) => {
            if !e.commands.is_restorable() {
                graph.reserve_edge_ids(EdgeId(e.id.0.saturating_add(1)));
                return Ok(ReplayOutcome::Skipped);
            }
            let src = page_size(e.from).ok_or(PageError::UnknownPage(e.from))?;
            let dst = page_size(e.to).ok_or(PageError::UnknownPage(e.to))?;
            graph.insert_edge(e.id, e.from, e.to, e.kind, e.commands.clone(), src, dst)?;
            Ok(ReplayOutcome::Applied)
        }
        GraphRecord::EdgeRemoved { id } => match graph.remove_edge(*id) {
            Ok(_) => Ok(ReplayOutcome::Applied),
            Err(GraphError::UnknownEdgeId(_)) => Ok(ReplayOutcome::Skipped),
            Err(e) => Err(e.into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::command::{Command, Lane, SemiOp};

    fn sample() -> ShadowPageGraph {
        let mut g = ShadowPageGraph::new();
        let cmds = CommandList::new()
            .with(Command::Copy { src_off: 0, dst_off: 8, len: 8 })
            .with(Command::Fill { dst_off: 0, len: 4, value: 0x5A })
            .with(Command::Op { op: SemiOp::Min, lane: Lane::F64, src_off: 8, dst_off: 0, len: 8 });
        g.add_edge(PageId(1), PageId(2), EdgeKind::Data, cmds, 16, 16).unwrap();
        let e = g.add_edge(PageId(2), PageId(3), EdgeKind::Control, CommandList::new(), 16, 16).unwrap();
        let cb = CommandList::new().with(Command::rust_callback(|_, _| Ok(())));
        g.add_edge(PageId(1), PageId(3), EdgeKind::GpuSync, cb, 16, 16).unwrap();
        g.add_edge(PageId(3), PageId(4), EdgeKind::Compiler, CommandList::new(), 16, 16).unwrap();
        g.remove_edge(e).unwrap();
        g
    }

    fn sizes(_: PageId) -> Option<u64> {
        Some(16)
    }

    #[test]
    fn records_round_trip() {
        let g = sample();
        for e in g.edges() {
            let r = GraphRecord::EdgeAdded(e.into());
            let back = decode_record(&encode_record(&r)).unwrap();
            match (&r, &back) {
                (GraphRecord::EdgeAdded(a), GraphRecord::EdgeAdded(b)) => {
                    assert_eq!((a.id, a.from, a.to, a.kind), (b.id, b.from, b.to, b.kind));
                    if a.commands.is_restorable() {
                        assert_eq!(a.commands, b.commands);
                    } else {
                        assert!(!b.commands.is_restorable());
                    }
                }
                _ => unreachable!(),
            }
        }
        let r = GraphRecord::EdgeRemoved { id: EdgeId(7) };
        assert_eq!(decode_record(&encode_record(&r)).unwrap(), r);
        assert!(matches!(decode_record(&[0xFF, 0xFF]), Err(GraphError::Malformed(_))));
    }

    #[test]
    fn snapshot_round_trip_drops_callback_edges() {
        let g = sample();
        let bytes = encode_snapshot(&g);
        let snap = decode_snapshot(&bytes).unwrap();
        let (r, dropped) = restore(&snap, sizes).unwrap();
        assert_eq!(dropped, vec![EdgeId(3)]);
        let keep: Vec<EdgeRecord> =
            g.edges().into_iter().filter(|e| e.commands.is_restorable()).map(EdgeRecord::from).collect();
        let got: Vec<EdgeRecord> = r.edges().into_iter().map(EdgeRecord::from).collect();
        assert_eq!(got, keep);
        assert_eq!(r.next_edge_id(), g.next_edge_id());
        assert_eq!(r.topo_order(), vec![PageId(1), PageId(3), PageId(2), PageId(4)]);
        // Restoring twice gives the same bytes again (ids and order are preserved).
        let (r2, _) = restore(&decode_snapshot(&encode_snapshot(&r)).unwrap(), sizes).unwrap();
        assert_eq!(encode_snapshot(&r2), encode_snapshot(&r));
    }

    #[test]
    fn replaying_a_log_rebuilds_the_graph() {
        let mut log = Vec::new();
        let mut g = ShadowPageGraph::new();
        let a = g.add_edge(PageId(1), PageId(2), EdgeKind::Data, CommandList::new(), 4, 4).unwrap();
        log.push(encode_record(&GraphRecord::EdgeAdded(g.edge(a).unwrap().into())));
        let cb = CommandList::new().with(Command::rust_callback(|_, _| Ok(())));
        let b = g.add_edge(PageId(2), PageId(3), EdgeKind::Data, cb, 4, 4).unwrap();
        log.push(encode_record(&GraphRecord::EdgeAdded(g.edge(b).unwrap().into())));
        g.remove_edge(b).unwrap();
        log.push(encode_record(&GraphRecord::EdgeRemoved { id: b }));
        let c = g.add_edge(PageId(2), PageId(4), EdgeKind::Data, CommandList::new(), 4, 4).unwrap();
        log.push(encode_record(&GraphRecord::EdgeAdded(g.edge(c).unwrap().into())));

        let mut r = ShadowPageGraph::new();
        let outcomes: Vec<ReplayOutcome> =
            log.iter().map(|b| replay_record(&mut r, &decode_record(b).unwrap(), sizes).unwrap()).collect();
        use ReplayOutcome::*;
        assert_eq!(outcomes, [Applied, Skipped, Skipped, Applied]);
        assert_eq!(encode_snapshot(&r), encode_snapshot(&g));
    }

    #[test]
    fn regression_the_largest_edge_id_is_an_error_not_an_overflow() {
        // Found by the graph_decode fuzz target: a logged edge with id u64::MAX overflowed
        // `id + 1` (a panic in debug builds, a wrapped id counter in release builds).
        let mut r = ShadowPageGraph::new();
        let edge = |commands| {
            GraphRecord::EdgeAdded(EdgeRecord {
                id: EdgeId(u64::MAX),
                from: PageId(1),
                to: PageId(2),
                kind: EdgeKind::Data,
                commands,
            })
        };
        let err = replay_record(&mut r, &edge(CommandList::new()), sizes).unwrap_err();
        assert!(err.to_string().contains("not a usable edge id"), "{err}");
        let cb = CommandList::new().with(Command::rust_callback(|_, _| Ok(())));
        assert_eq!(replay_record(&mut r, &edge(cb), sizes).unwrap(), ReplayOutcome::Skipped);
        assert_eq!(r.next_edge_id(), EdgeId(u64::MAX));
        assert!(r.add_edge(PageId(1), PageId(2), EdgeKind::Data, CommandList::new(), 4, 4).is_err());
        assert_eq!(r.edge_count(), 0);
    }

    #[test]
    fn replace_checks_everything_before_it_changes_anything() {
        let mut g = sample();
        g.round = 7;
        let before = encode_snapshot(&g);
        let older = {
            let mut o = ShadowPageGraph::new();
            o.add_edge(PageId(2), PageId(4), EdgeKind::Data, CommandList::new(), 16, 16).unwrap();
            snapshot(&o)
        };
        // An edge whose page is missing, placed after a valid one: the valid one is not kept.
        let mut bad = older.clone();
        bad.edges.push(EdgeRecord { id: EdgeId(9), from: PageId(4), to: PageId(5), ..older.edges[0].clone() });
        let no_page_5 = |p: PageId| (p.0 != 5).then_some(16);
        assert!(replace(&mut g, &bad, no_page_5).is_err());
        assert_eq!(encode_snapshot(&g), before);
        assert_eq!(g.round, 7);
        // A valid older snapshot: its edges, the round kept, the next id not lowered.
        let next = g.next_edge_id();
        assert!(next > older.next_edge_id);
        assert_eq!(replace(&mut g, &older, sizes).unwrap(), Vec::<EdgeId>::new());
        assert_eq!(g.edges().into_iter().map(EdgeRecord::from).collect::<Vec<_>>(), older.edges);
        assert_eq!((g.round, g.next_edge_id()), (7, next));
    }

    #[test]
    fn newer_versions_are_refused() {
        let mut s = snapshot(&sample());
        s.version = GraphSnapshot::FORMAT_VERSION + 1;
        let bytes = postcard::to_allocvec(&s).unwrap();
        assert!(matches!(decode_snapshot(&bytes), Err(GraphError::Malformed(m)) if m.contains("version")));
        // Restoring one that was never encoded is refused the same way.
        assert!(restore(&s, sizes).unwrap_err().to_string().contains("version"));
    }
}
