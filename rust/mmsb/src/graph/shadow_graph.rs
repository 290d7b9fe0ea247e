//! The ShadowPageGraph: explicit, typed dependency edges between pages.
//!
//! Nodes are pages; an edge `from -> to` says that `to` is recomputed from `from` by the edge's
//! [`CommandList`]. Nothing is implied: a page is in the graph exactly while it has an edge, and
//! at most one edge joins an ordered pair of pages (put every step in that edge's command list).
//! The graph stays acyclic: an edge that would close a cycle is rejected with
//! [`GraphError::Cycle`], which names the cycle.
//!
//! Every node keeps its height (`0` for a page without sources, else `1 + max(height of
//! sources)`), updated incrementally as edges come and go. Sources always have a smaller height
//! than their dependents, which is what lets propagation run in `(height, PageId)` order and
//! lets the cycle check prune its search.
//!
//! Cost: an edge whose target's height grows (or, on removal, shrinks) updates the heights
//! of everything downstream of it, so building a long chain from its tail backwards is
//! quadratic; building it head first (sources before dependents) is linear.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;

use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction::{Incoming, Outgoing};
use serde::{Deserialize, Serialize};

use crate::graph::command::CommandList;
use crate::types::error::GraphError;
use crate::types::page::PageId;
use crate::types::IdHasher;

/// Identifies an edge. Ids grow with insertion, so they also give the edges' insertion order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[repr(transparent)]
pub struct EdgeId(pub u64);

impl fmt::Display for EdgeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "edge {}", self.0)
    }
}

/// What an edge means. Propagation treats every kind alike; the kind tells consumers (device
/// sync, compiler instrumentation) which edges are theirs.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EdgeKind {
    /// A data dependency: the dependent page's bytes derive from the source's.
    Data = 0,
    /// A control dependency (propagated like the others; the kind is for consumers).
    Control = 1,
    /// An edge that device synchronisation owns.
    GpuSync = 2,
    /// An edge that compiler instrumentation owns (IR pages).
    Compiler = 3,
}

impl EdgeKind {
    /// Decodes the C ABI representation.
    pub fn from_u32(v: u32) -> Option<EdgeKind> {
        [EdgeKind::Data, EdgeKind::Control, EdgeKind::GpuSync, EdgeKind::Compiler].into_iter().find(|k| *k as u32 == v)
    }
}

#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) page: PageId,
    pub(crate) height: u32,
    /// The last propagation round that scheduled this node (dedupes the round's heap).
    pub(crate) mark: u64,
}

#[derive(Debug)]
pub(crate) struct EdgeData {
    pub(crate) id: EdgeId,
    pub(crate) kind: EdgeKind,
    pub(crate) commands: CommandList,
}

/// A borrowed view of one edge.
#[derive(Debug, Clone, Copy)]
pub struct EdgeView<'a> {
    /// The edge's id.
    pub id: EdgeId,
    /// The source page.
    pub from: PageId,
    /// The dependent page.
    pub to: PageId,
    /// What the edge is for.
    pub kind: EdgeKind,
    /// The transform it runs.
    pub commands: &'a CommandList,
}

/// The dependency graph between pages.
#[derive(Debug, Default)]
pub struct ShadowPageGraph {
    pub(crate) g: StableDiGraph<Node, EdgeData>,
    nodes: HashMap<PageId, NodeIndex, IdHasher>,
    edges: HashMap<EdgeId, EdgeIndex, IdHasher>,
    next_edge: u64,
    /// Number of propagation rounds run so far.
    pub(crate) round: u64,
}

impl ShadowPageGraph {
    /// An empty graph.
    pub fn new() -> ShadowPageGraph {
        ShadowPageGraph::default()
    }

    /// An empty graph with room for `nodes` pages and `edges` edges.
    pub fn with_capacity(nodes: usize, edges: usize) -> ShadowPageGraph {
        ShadowPageGraph {
            g: StableDiGraph::with_capacity(nodes, edges),
            nodes: HashMap::with_capacity_and_hasher(nodes, IdHasher::default()),
            edges: HashMap::with_capacity_and_hasher(edges, IdHasher::default()),
            ..ShadowPageGraph::default()
        }
    }

    /// True while `page` has at least one edge (such a page cannot be freed).
    pub fn contains(&self, page: PageId) -> bool {
        self.nodes.contains_key(&page)
    }

    /// Number of pages with edges.
    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }

    /// Number of edges.
    pub fn edge_count(&self) -> usize {
        self.g.edge_count()
    }

    /// Number of propagation rounds run on this graph.
    pub fn rounds(&self) -> u64 {
        self.round
    }

    /// The id the next added edge will get.
    pub fn next_edge_id(&self) -> EdgeId {
        EdgeId(self.next_edge.max(1))
    }

    /// Makes sure automatic ids start at `next` or later (restore and replay use it so that ids
    /// of dropped edges are never handed out again).
    pub fn reserve_edge_ids(&mut self, next: EdgeId) {
        self.next_edge = self.next_edge.max(next.0);
    }

    pub(crate) fn node(&self, page: PageId) -> Option<NodeIndex> {
        self.nodes.get(&page).copied()
    }

    /// Adds `from -> to` carrying `commands`, after checking them against the pages' sizes
    /// (`src_size` of `from`, `dst_size` of `to`). Fails without changing anything on a cycle
    /// (a self-edge included), a second edge between the same pages, or an invalid command.
    pub fn add_edge(
        &mut self,
        from: PageId,
        to: PageId,
        kind: EdgeKind,
        commands: CommandList,
        src_size: u64,
        dst_size: u64,
    ) -> Result<EdgeId, GraphError> {
        let id = self.next_edge_id();
        self.insert_edge(id, from, to, kind, commands, src_size, dst_size)
    }

    /// Like [`ShadowPageGraph::add_edge`] with a given id (restore and replay keep the ids of
    /// the log). The id must be unused; later automatic ids continue after it.
    #[allow(clippy::too_many_arguments)]
    pub fn insert_edge(
        &mut self,
        id: EdgeId,
        from: PageId,
        to: PageId,
        kind: EdgeKind,
        commands: CommandList,
        src_size: u64,
        dst_size: u64,
    ) -> Result<EdgeId, GraphError> {
        if id.0 == 0 || id.0 == u64::MAX {
            // 0 means "no edge" and MAX leaves no id after it (found by the graph_decode fuzz
            // target: `id + 1` overflowed on a logged edge id).
            return Err(GraphError::InvalidCommand(format!("{id} is not a usable edge id")));
        }
        if self.edges.contains_key(&id) {
            return Err(GraphError::InvalidCommand(format!("{id} is already in use")));
        }
        if from == to {
            return Err(GraphError::Cycle { from, to, cycle: vec![from, from] });
        }
        commands.validate(src_size, dst_size)?;
        if let (Some(a), Some(b)) = (self.node(from), self.node(to)) {
            if self.g.find_edge(a, b).is_some() {
                return Err(GraphError::EdgeExists { from, to });
            }
            if let Some(path) = self.path(b, a) {
                let mut cycle = Vec::with_capacity(path.len() + 1);
                cycle.push(from);
                cycle.extend(path);
                return Err(GraphError::Cycle { from, to, cycle });
            }
        }
        let a = self.node_or_insert(from);
        let b = self.node_or_insert(to);
        let e = self.g.add_edge(a, b, EdgeData { id, kind, commands });
        self.edges.insert(id, e);
        self.next_edge = self.next_edge.max(id.0 + 1);
        let h = self.g[a].height + 1;
        if h > self.g[b].height {
            self.raise_heights(b, h);
        }
        Ok(id)
    }

    /// Removes an edge and returns what it was; pages left without edges leave the graph.
    pub fn remove_edge(&mut self, id: EdgeId) -> Result<(PageId, PageId, EdgeKind, CommandList), GraphError> {
        let e = self.edges.remove(&id).ok_or(GraphError::UnknownEdgeId(id.0))?;
        let (a, b) = self.g.edge_endpoints(e).expect("indexed edge exists");
        let data = self.g.remove_edge(e).expect("indexed edge exists");
        let (from, to) = (self.g[a].page, self.g[b].page);
        self.lower_heights(b);
        for n in [a, b] {
            if self.g.edges_directed(n, Incoming).next().is_none()
                && self.g.edges_directed(n, Outgoing).next().is_none()
            {
                let page = self.g.remove_node(n).expect("node exists").page;
                self.nodes.remove(&page);
            }
        }
        Ok((from, to, data.kind, data.commands))
    }

    /// One edge, by id.
    pub fn edge(&self, id: EdgeId) -> Option<EdgeView<'_>> {
        let e = *self.edges.get(&id)?;
        Some(self.view(e))
    }

    fn view(&self, e: EdgeIndex) -> EdgeView<'_> {
        let (a, b) = self.g.edge_endpoints(e).expect("live edge");
        let w = &self.g[e];
        EdgeView { id: w.id, from: self.g[a].page, to: self.g[b].page, kind: w.kind, commands: &w.commands }
    }

    /// Every edge, by ascending id (insertion order).
    pub fn edges(&self) -> Vec<EdgeView<'_>> {
        let mut v: Vec<EdgeView<'_>> = self.g.edge_indices().map(|e| self.view(e)).collect();
        v.sort_unstable_by_key(|e| e.id);
        v
    }

    /// The edges into `page`, in the order propagation applies them: by source page id, then
    /// edge id.
    pub fn incoming(&self, page: PageId) -> Vec<EdgeView<'_>> {
        let Some(n) = self.node(page) else { return Vec::new() };
        let mut v: Vec<EdgeView<'_>> = self.g.edges_directed(n, Incoming).map(|e| self.view(e.id())).collect();
        v.sort_unstable_by_key(|e| (e.from, e.id));
        v
    }

    /// Pages with an edge from `page`, ascending.
    pub fn dependents(&self, page: PageId) -> Vec<PageId> {
        self.neighbors(page, Outgoing)
    }

    /// Pages with an edge into `page`, ascending.
    pub fn sources(&self, page: PageId) -> Vec<PageId> {
        self.neighbors(page, Incoming)
    }

    fn neighbors(&self, page: PageId, dir: petgraph::Direction) -> Vec<PageId> {
        let Some(n) = self.node(page) else { return Vec::new() };
        let mut v: Vec<PageId> = self.g.neighbors_directed(n, dir).map(|m| self.g[m].page).collect();
        v.sort_unstable();
        v
    }

    /// The page's height (0 for a page outside the graph).
    pub fn height(&self, page: PageId) -> u32 {
        self.node(page).map_or(0, |n| self.g[n].height)
    }

    /// Every page of the graph in `(height, PageId)` order: a topological order (sources before
    /// dependents), the same one propagation uses, and the same for the same graph every time.
    pub fn topo_order(&self) -> Vec<PageId> {
        let mut v: Vec<(u32, PageId)> = self.g.node_weights().map(|n| (n.height, n.page)).collect();
        v.sort_unstable();
        v.into_iter().map(|(_, p)| p).collect()
    }

    fn node_or_insert(&mut self, page: PageId) -> NodeIndex {
        if let Some(n) = self.node(page) {
            return n;
        }
        let n = self.g.add_node(Node { page, height: 0, mark: 0 });
        self.nodes.insert(page, n);
        n
    }

    /// A path `start -> ... -> goal` (both included), if `goal` is reachable from `start`.
    fn path(&self, start: NodeIndex, goal: NodeIndex) -> Option<Vec<PageId>> {
        let goal_h = self.g[goal].height;
        // Heights strictly increase along edges, so nothing at or above goal's height (other
        // than goal) can reach goal: prune it.
        if self.g[start].height >= goal_h {
            return None;
        }
        let mut parent: HashMap<NodeIndex, NodeIndex> = HashMap::new();
        let mut stack = vec![start];
        while let Some(n) = stack.pop() {
            for m in self.g.neighbors_directed(n, Outgoing) {
                if m == goal {
                    let mut path = vec![self.g[goal].page, self.g[n].page];
                    let mut at = n;
                    while let Some(&p) = parent.get(&at) {
                        path.push(self.g[p].page);
                        at = p;
                    }
                    path.reverse();
                    return Some(path);
                }
                if m != start && self.g[m].height < goal_h && !parent.contains_key(&m) {
                    parent.insert(m, n);
                    stack.push(m);
                }
            }
        }
        None
    }

    /// Sets `n`'s height to `h` (greater than before) and pushes the increase downstream.
    fn raise_heights(&mut self, n: NodeIndex, h: u32) {
        self.g[n].height = h;
        let mut stack = vec![n];
        while let Some(n) = stack.pop() {
            let h = self.g[n].height + 1;
            let mut next = self.g.neighbors_directed(n, Outgoing).detach();
            while let Some(m) = next.next_node(&self.g) {
                if self.g[m].height < h {
                    self.g[m].height = h;
                    stack.push(m);
                }
            }
        }
    }

    /// Recomputes `n`'s height from its sources and pushes any decrease downstream. Nodes are
    /// visited by ascending old height, so each sees its sources' final heights.
    fn lower_heights(&mut self, n: NodeIndex) {
        let mut heap = BinaryHeap::new();
        heap.push(Reverse((self.g[n].height, n)));
        while let Some(Reverse((old, n))) = heap.pop() {
            if self.g[n].height != old {
                continue; // a duplicate entry, already lowered
            }
            let h = self.g.neighbors_directed(n, Incoming).map(|s| self.g[s].height + 1).max().unwrap_or(0);
            if h == old {
                continue;
            }
            self.g[n].height = h;
            for m in self.g.neighbors_directed(n, Outgoing) {
                heap.push(Reverse((self.g[m].height, m)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u64) -> PageId {
        PageId(n)
    }

    fn add(g: &mut ShadowPageGraph, a: u64, b: u64) -> Result<EdgeId, GraphError> {
        g.add_edge(p(a), p(b), EdgeKind::Data, CommandList::new(), 8, 8)
    }

    /// Heights from scratch, for checking the incremental ones.
    fn reference_heights(g: &ShadowPageGraph) -> Vec<(PageId, u32)> {
        let mut memo: HashMap<PageId, u32> = HashMap::new();
        fn h(g: &ShadowPageGraph, page: PageId, memo: &mut HashMap<PageId, u32>) -> u32 {
            if let Some(&v) = memo.get(&page) {
                return v;
            }
            let v = g.sources(page).into_iter().map(|s| h(g, s, memo) + 1).max().unwrap_or(0);
            memo.insert(page, v);
            v
        }
        let mut out: Vec<(PageId, u32)> = g.topo_order().into_iter().map(|q| (q, h(g, q, &mut memo))).collect();
        out.sort();
        out
    }

    fn heights(g: &ShadowPageGraph) -> Vec<(PageId, u32)> {
        let mut out: Vec<(PageId, u32)> = g.topo_order().into_iter().map(|q| (q, g.height(q))).collect();
        out.sort();
        out
    }

    #[test]
    fn cycles_are_rejected_and_named() {
        let mut g = ShadowPageGraph::new();
        add(&mut g, 1, 2).unwrap();
        add(&mut g, 2, 3).unwrap();
        add(&mut g, 3, 4).unwrap();
        add(&mut g, 1, 5).unwrap();
        let e = add(&mut g, 4, 1).unwrap_err();
        match &e {
            GraphError::Cycle { from, to, cycle } => {
                assert_eq!((*from, *to), (p(4), p(1)));
                assert_eq!(cycle, &vec![p(4), p(1), p(2), p(3), p(4)]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.to_string(), "adding #4 -> #1 would close the cycle #4 -> #1 -> #2 -> #3 -> #4");
        assert!(matches!(add(&mut g, 3, 3), Err(GraphError::Cycle { cycle, .. }) if cycle == vec![p(3), p(3)]));
        assert_eq!(g.edge_count(), 4, "a rejected edge changes nothing");
        // Not a cycle: a second path to the same node.
        add(&mut g, 5, 4).unwrap();
        assert!(matches!(add(&mut g, 1, 2), Err(GraphError::EdgeExists { .. })));
    }

    #[test]
    fn heights_follow_edge_changes() {
        let mut g = ShadowPageGraph::new();
        let e12 = add(&mut g, 1, 2).unwrap();
        add(&mut g, 2, 3).unwrap();
        add(&mut g, 3, 4).unwrap();
        add(&mut g, 1, 4).unwrap();
        assert_eq!(g.height(p(4)), 3);
        g.remove_edge(e12).unwrap();
        assert_eq!(heights(&g), reference_heights(&g));
        assert_eq!(g.height(p(4)), 2);
        // Raising: prepend a long chain in front of 2.
        add(&mut g, 10, 11).unwrap();
        add(&mut g, 11, 12).unwrap();
        add(&mut g, 12, 2).unwrap();
        assert_eq!(heights(&g), reference_heights(&g));
        assert_eq!(g.topo_order().first(), Some(&p(1)));
    }

    #[test]
    fn nodes_leave_with_their_last_edge() {
        let mut g = ShadowPageGraph::new();
        let e = add(&mut g, 1, 2).unwrap();
        assert!(g.contains(p(1)) && g.contains(p(2)));
        let (from, to, kind, _) = g.remove_edge(e).unwrap();
        assert_eq!((from, to, kind), (p(1), p(2), EdgeKind::Data));
        assert!(!g.contains(p(1)) && !g.contains(p(2)));
        assert!(matches!(g.remove_edge(e), Err(GraphError::UnknownEdgeId(_))));
        // Ids keep growing after removals.
        assert!(add(&mut g, 1, 2).unwrap() > e);
    }

    #[test]
    fn invalid_commands_are_rejected_at_add_time() {
        use crate::graph::command::Command;
        let mut g = ShadowPageGraph::new();
        let cmds = CommandList::new().with(Command::Copy { src_off: 0, dst_off: 4, len: 8 });
        let e = g.add_edge(p(1), p(2), EdgeKind::Data, cmds, 8, 8).unwrap_err();
        assert!(matches!(e, GraphError::InvalidCommand(_)), "{e}");
        assert_eq!(g.node_count(), 0);
    }

    #[test]
    fn incremental_heights_match_reference_on_random_edits() {
        // A deterministic pseudo-random sequence of adds and removes.
        let mut g = ShadowPageGraph::new();
        let mut ids = Vec::new();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x.is_multiple_of(3) && !ids.is_empty() {
                let id = ids.swap_remove((x >> 8) as usize % ids.len());
                g.remove_edge(id).unwrap();
            } else {
                let a = (x >> 16) % 40 + 1;
                let b = (x >> 32) % 40 + 1;
                if let Ok(id) = add(&mut g, a, b) {
                    ids.push(id);
                }
            }
            assert_eq!(heights(&g), reference_heights(&g));
        }
    }
}
