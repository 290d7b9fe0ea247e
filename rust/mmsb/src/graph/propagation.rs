//! The PropagationEngine: `state′ ⊗ dependency → propagated_state`, one round at a time.
//!
//! A round starts from a batch of changed pages and schedules their dependents in
//! `(height, PageId)` order. In that order every source of a page is final before the page is
//! recomputed (sources have smaller heights), so a diamond's bottom sees both updated parents
//! and runs once (no glitches), and ties break by page id, so the same inputs give the same
//! order every time.
//!
//! The queue is an ordered map from *heights* to buckets of pages. A page only ever schedules
//! pages of greater height, so when the smallest pending height comes up its bucket is
//! complete: it is sorted by page id once and run. That is the order a heap of
//! `(height, PageId)` would give, without a heap operation per page.
//!
//! Recomputing a page copies its current bytes, applies every incoming edge's commands in
//! `(source PageId, EdgeId)` order, and diffs the result against the current bytes. An unchanged
//! page is **cut off**: its dependents are not scheduled (unless another changed source
//! schedules them). A changed page's [`Delta`] is routed through the [`PageStore`] right away,
//! so its dependents read the new bytes. Each page is recomputed at most once per round.
//!
//! Transforms see the dependent page's current bytes, so accumulating commands (`Op` with
//! `Add`, say) accumulate once per round in which the page is recomputed; transforms that
//! overwrite their destination (copy, fill, copy then op) make a page a pure function of its
//! sources, which is what makes early cutoff exact.
//!
//! A callback that called back into its own state (refused, see `runtime::reentry`) aborts the
//! round with `StateError::Reentrant`, whatever it returned.
//!
//! A failing callback aborts the round with [`GraphError::Callback`]: nothing is applied to
//! that page; pages recomputed earlier in the round keep their new bytes (their deltas were
//! routed like any other), and later pages are not recomputed.

use std::collections::BTreeMap;

use petgraph::stable_graph::{EdgeIndex, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction::{Incoming, Outgoing};

use crate::graph::shadow_graph::ShadowPageGraph;
use crate::types::delta::Delta;
use crate::types::error::{GraphError, PageError, Result};
use crate::types::page::PageId;

/// Where a round reads page bytes and routes its deltas.
pub trait PageStore {
    /// The page's current bytes.
    fn bytes(&self, page: PageId) -> Result<&[u8]>;
    /// Applies (routes) `delta` to `page`; later `bytes` calls see the result.
    fn route(&mut self, page: PageId, delta: &Delta) -> Result<()>;
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundStats {
    /// The round's number (1 for the graph's first round).
    pub round: u64,
    /// Pages whose transforms ran.
    pub recomputed: u64,
    /// Recomputed pages whose bytes did not change (their dependents were not scheduled).
    pub cutoff: u64,
    /// Deltas routed (`recomputed - cutoff`).
    pub deltas_routed: u64,
}

/// A scheduled page: its id and node index.
type Scheduled = (u64, u32);

/// Reusable buffers for rounds. Holding one across rounds avoids reallocating them.
#[derive(Debug, Default)]
pub struct PropagationEngine {
    /// Pages scheduled at each pending height.
    buckets: BTreeMap<u32, Vec<Scheduled>>,
    /// Emptied buckets, kept for reuse.
    pool: Vec<Vec<Scheduled>>,
    incoming: Vec<(PageId, u64, EdgeIndex)>,
    scratch: Vec<u8>,
}

impl PropagationEngine {
    /// An engine with empty buffers.
    pub fn new() -> PropagationEngine {
        PropagationEngine::default()
    }

    /// Runs one round from the pages in `changed` (pages outside the graph have no dependents
    /// and are ignored; duplicates are harmless).
    pub fn run(
        &mut self,
        graph: &mut ShadowPageGraph,
        store: &mut impl PageStore,
        changed: &[PageId],
    ) -> Result<RoundStats> {
        graph.round += 1;
        let round = graph.round;
        let mut stats = RoundStats { round, ..RoundStats::default() };
        // A failed round may have left work behind.
        while let Some((_, mut b)) = self.buckets.pop_first() {
            b.clear();
            self.pool.push(b);
        }
        for &page in changed {
            if let Some(n) = graph.node(page) {
                self.schedule_dependents(graph, n, round);
            }
        }
        while let Some((_, mut level)) = self.buckets.pop_first() {
            if level.len() > 1 {
                level.sort_unstable();
            }
            let result = level.iter().try_for_each(|&(page, n)| {
                self.recompute(graph, store, PageId(page), NodeIndex::new(n as usize), &mut stats)
            });
            level.clear();
            self.pool.push(level);
            result?;
        }
        Ok(stats)
    }

    /// Recomputes one page; if it changed, routes its delta and schedules its dependents.
    fn recompute(
        &mut self,
        graph: &mut ShadowPageGraph,
        store: &mut impl PageStore,
        page: PageId,
        n: NodeIndex,
        stats: &mut RoundStats,
    ) -> Result<()> {
        self.incoming.clear();
        for e in graph.g.edges_directed(n, Incoming) {
            self.incoming.push((graph.g[e.source()].page, e.weight().id.0, e.id()));
        }
        if self.incoming.len() > 1 {
            self.incoming.sort_unstable_by_key(|&(src, id, _)| (src, id));
        }
        let delta = {
            let old = store.bytes(page)?;
            self.scratch.clear();
            self.scratch.extend_from_slice(old);
            for &(src, _, e) in &self.incoming {
                let commands = &graph.g[e].commands;
                if commands.is_empty() {
                    continue;
                }
                let result = commands.execute(store.bytes(src)?, &mut self.scratch);
                // A transform that called back into its own state was refused; report that,
                // whatever status it returned, rather than an opaque callback failure.
                if crate::runtime::reentry::take_refused() {
                    return Err(crate::runtime::reentry::round_error(src, page));
                }
                result.map_err(|status| GraphError::Callback { from: src, to: page, status })?;
            }
            stats.recomputed += 1;
            if self.scratch[..] == old[..] {
                stats.cutoff += 1;
                return Ok(());
            }
            Delta::diff(old, &self.scratch)?
        };
        store.route(page, &delta)?;
        stats.deltas_routed += 1;
        self.schedule_dependents(graph, n, stats.round);
        Ok(())
    }

    fn schedule_dependents(&mut self, graph: &mut ShadowPageGraph, n: NodeIndex, round: u64) {
        let mut next = graph.g.neighbors_directed(n, Outgoing).detach();
        while let Some(m) = next.next_node(&graph.g) {
            let node = &mut graph.g[m];
            if node.mark != round {
                node.mark = round;
                #[allow(clippy::cast_possible_truncation, reason = "`NodeIndex<u32>`: `index()` widened a u32")]
                let entry = (node.page.0, m.index() as u32);
                let pool = &mut self.pool;
                self.buckets.entry(node.height).or_insert_with(|| pool.pop().unwrap_or_default()).push(entry);
            }
        }
    }
}

/// A plain in-memory [`PageStore`]: for tests, benchmarks, and dry runs of a graph.
///
/// Page bytes live in one arena and page ids index a dense table, which suits the small,
/// dense ids `MMSBState` hands out (ids of 2^32 and above are refused with a panic).
/// Replacing a page by one of another size leaves the old bytes unused in the arena.
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    data: Vec<u8>,
    /// `(offset, len)` in `data`, by page id.
    slots: Vec<Option<(usize, usize)>>,
    /// Deltas routed so far.
    pub routed: u64,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }

    fn slot(&self, page: PageId) -> Option<(usize, usize)> {
        *self.slots.get(usize::try_from(page.0).ok()?)?
    }

    /// Adds or replaces a page.
    pub fn insert(&mut self, page: PageId, bytes: Vec<u8>) {
        assert!(page.0 < 1 << 32, "MemStore indexes pages by id; {page} is too large");
        let i = usize::try_from(page.0).expect("below 2^32 (asserted above)");
        if i >= self.slots.len() {
            self.slots.resize(i + 1, None);
        }
        match self.slots[i] {
            Some((off, len)) if len == bytes.len() => self.data[off..off + len].copy_from_slice(&bytes),
            _ => {
                self.slots[i] = Some((self.data.len(), bytes.len()));
                self.data.extend_from_slice(&bytes);
            }
        }
    }

    /// A page's bytes.
    pub fn get(&self, page: PageId) -> Option<&[u8]> {
        let (off, len) = self.slot(page)?;
        Some(&self.data[off..off + len])
    }

    /// A page's bytes, mutably (changes made here are not deltas: tests use it to set inputs).
    pub fn get_mut(&mut self, page: PageId) -> Option<&mut [u8]> {
        let (off, len) = self.slot(page)?;
        Some(&mut self.data[off..off + len])
    }
}

impl PageStore for MemStore {
    fn bytes(&self, page: PageId) -> Result<&[u8]> {
        Ok(self.get(page).ok_or(PageError::UnknownPage(page))?)
    }

    fn route(&mut self, page: PageId, delta: &Delta) -> Result<()> {
        let p = self.get_mut(page).ok_or(PageError::UnknownPage(page))?;
        delta.apply(p)?;
        self.routed += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::command::{Command, CommandList, Lane, SemiOp};
    use crate::graph::shadow_graph::EdgeKind;

    /// Records every routed delta on top of a MemStore.
    #[derive(Default)]
    struct Recording {
        mem: MemStore,
        log: Vec<(PageId, Delta)>,
    }

    impl PageStore for Recording {
        fn bytes(&self, page: PageId) -> Result<&[u8]> {
            self.mem.bytes(page)
        }
        fn route(&mut self, page: PageId, delta: &Delta) -> Result<()> {
            self.log.push((page, delta.clone()));
            self.mem.route(page, delta)
        }
    }

    fn p(n: u64) -> PageId {
        PageId(n)
    }

    fn add_u8(g: &mut ShadowPageGraph, a: u64, b: u64, dst_off: u64) {
        let cmds =
            CommandList::new().with(Command::Op { op: SemiOp::Add, lane: Lane::U8, src_off: 0, dst_off, len: 1 });
        g.add_edge(p(a), p(b), EdgeKind::Data, cmds, 4, 4).unwrap();
    }

    fn copy(g: &mut ShadowPageGraph, a: u64, b: u64, dst_off: u64) {
        let cmds = CommandList::new().with(Command::Copy { src_off: 0, dst_off, len: 1 });
        g.add_edge(p(a), p(b), EdgeKind::Data, cmds, 4, 4).unwrap();
    }

    fn store(n: u64) -> Recording {
        let mut s = Recording::default();
        for i in 1..=n {
            s.mem.insert(p(i), vec![0; 4]);
        }
        s
    }

    #[test]
    fn diamond_updates_bottom_once_with_both_parents() {
        // 1 -> {2, 3} -> 4; 4 copies byte 0 of 2 into byte 0 and of 3 into byte 1.
        let mut g = ShadowPageGraph::new();
        copy(&mut g, 1, 2, 0);
        copy(&mut g, 1, 3, 0);
        copy(&mut g, 2, 4, 0);
        copy(&mut g, 3, 4, 1);
        let mut s = store(4);
        s.mem.get_mut(p(1)).unwrap()[0] = 7;
        let stats = PropagationEngine::new().run(&mut g, &mut s, &[p(1)]).unwrap();
        assert_eq!(stats, RoundStats { round: 1, recomputed: 3, cutoff: 0, deltas_routed: 3 });
        let order: Vec<PageId> = s.log.iter().map(|(q, _)| *q).collect();
        assert_eq!(order, [p(2), p(3), p(4)], "4 routed once, after both parents");
        assert_eq!(s.mem.get(p(4)).unwrap(), [7, 7, 0, 0]);
    }

    #[test]
    fn early_cutoff_stops_propagation() {
        // 1 -> 2 -> 3 -> 4, where 2 only looks at byte 1 of page 1.
        let mut g = ShadowPageGraph::new();
        let cmds = CommandList::new().with(Command::Copy { src_off: 1, dst_off: 0, len: 1 });
        g.add_edge(p(1), p(2), EdgeKind::Data, cmds, 4, 4).unwrap();
        copy(&mut g, 2, 3, 0);
        copy(&mut g, 3, 4, 0);
        let mut s = store(4);
        s.mem.get_mut(p(1)).unwrap()[0] = 9; // a byte page 2 ignores
        let stats = PropagationEngine::new().run(&mut g, &mut s, &[p(1)]).unwrap();
        assert_eq!(stats, RoundStats { round: 1, recomputed: 1, cutoff: 1, deltas_routed: 0 });
        assert!(s.log.is_empty());
        s.mem.get_mut(p(1)).unwrap()[1] = 5;
        let stats = PropagationEngine::new().run(&mut g, &mut s, &[p(1)]).unwrap();
        assert_eq!(stats, RoundStats { round: 2, recomputed: 3, cutoff: 0, deltas_routed: 3 });
        assert_eq!(s.mem.get(p(4)).unwrap()[0], 5);
    }

    #[test]
    fn accumulating_ops_apply_once_per_round() {
        let mut g = ShadowPageGraph::new();
        add_u8(&mut g, 1, 2, 0);
        add_u8(&mut g, 1, 3, 0);
        add_u8(&mut g, 2, 4, 0);
        add_u8(&mut g, 3, 4, 0);
        let mut s = store(4);
        s.mem.get_mut(p(1)).unwrap()[0] = 1;
        PropagationEngine::new().run(&mut g, &mut s, &[p(1)]).unwrap();
        // 2 = 1, 3 = 1, 4 = 0 + 2 + 3 = 2: page 4 summed both parents exactly once.
        assert_eq!(s.mem.get(p(4)).unwrap()[0], 2);
    }

    #[test]
    fn failing_callback_applies_nothing_to_its_page() {
        let mut g = ShadowPageGraph::new();
        copy(&mut g, 1, 2, 0);
        let cmds = CommandList::new()
            .with(Command::Fill { dst_off: 0, len: 4, value: 0xEE })
            .with(Command::rust_callback(|_, _| Err(42)));
        g.add_edge(p(1), p(3), EdgeKind::Data, cmds, 4, 4).unwrap();
        let mut s = store(3);
        s.mem.get_mut(p(1)).unwrap()[0] = 1;
        let e = PropagationEngine::new().run(&mut g, &mut s, &[p(1)]).unwrap_err();
        assert!(
            matches!(e, crate::Error::Graph(GraphError::Callback { from, to, status: 42 }) if from == p(1) && to == p(3)),
            "{e}"
        );
        assert_eq!(s.mem.get(p(3)).unwrap(), [0; 4], "the fill before the failing callback is discarded");
        assert_eq!(s.mem.get(p(2)).unwrap()[0], 1, "the page recomputed earlier in the round keeps its bytes");
    }

    #[test]
    fn rounds_are_deterministic() {
        let build = || {
            let mut g = ShadowPageGraph::new();
            for (a, b) in [(1, 5), (2, 5), (1, 3), (3, 4), (5, 4), (2, 6), (6, 4), (4, 7)] {
                add_u8(&mut g, a, b, (a + b) % 4);
            }
            g
        };
        let run = || {
            let mut g = build();
            let mut s = store(7);
            s.mem.get_mut(p(1)).unwrap()[0] = 3;
            s.mem.get_mut(p(2)).unwrap()[0] = 5;
            let stats = PropagationEngine::new().run(&mut g, &mut s, &[p(2), p(1)]).unwrap();
            (stats, s.log)
        };
        let (a, b) = (run(), run());
        assert_eq!(a.0, b.0);
        assert_eq!(a.1, b.1);
        let order: Vec<u64> = a.1.iter().map(|(q, _)| q.0).collect();
        assert_eq!(order, [3, 5, 6, 4], "(height, page id) order");
        // Page 7 reads byte 0 of page 4, which no edge into 4 writes: recomputed, cut off.
        assert_eq!(a.0, RoundStats { round: 1, recomputed: 5, cutoff: 1, deltas_routed: 4 });
    }
}
