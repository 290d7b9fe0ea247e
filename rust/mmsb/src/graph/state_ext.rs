//! The graph and event methods of [`MMSBState`].
//!
//! Graph edits and propagation rounds take the state's write lock, so concurrent routes see
//! whole rounds or none of them. Callbacks run on the calling thread, under that lock: a call
//! they make back into the same state is refused with `Reentrant` (see `runtime::reentry`)
//! and fails the round with that error, instead of waiting forever for the lock.

use std::ops::Range;

use crate::graph::command::CommandList;
use crate::graph::events::{Event, EventSystem, OverflowPolicy, Subscription};
use crate::graph::persist::{self, EdgeRecord, GraphSnapshot};
use crate::graph::propagation::{PageStore, PropagationEngine, RoundStats};
use crate::graph::shadow_graph::{EdgeId, EdgeKind, ShadowPageGraph};
use crate::runtime::extension::{LogExtension, PageSizes};
use crate::runtime::router::RouteOp;
use crate::runtime::state::{Core, Lsn, MMSBState};
use crate::runtime::tlog::{ext_kind, Pending};
use crate::types::delta::Delta;
use crate::types::error::{PageError, Result, StateError};
use crate::types::page::PageId;

/// The state's pages as a [`PageStore`]: deltas go through the DeltaRouter (validated,
/// logged, applied, announced), exactly like routed ones.
struct CoreStore<'a> {
    state: &'a MMSBState,
    core: &'a mut Core,
    /// Log records to wait for (group commit) once the lock is released.
    pending: Vec<Pending>,
}

impl PageStore for CoreStore<'_> {
    fn bytes(&self, page: PageId) -> Result<&[u8]> {
        let p = self.core.pages.get(&page).ok_or(PageError::UnknownPage(page))?;
        // SAFETY: we hold the state's exclusive lock (through `&mut Core`), and `route` needs
        // `&mut self`, so no write can happen while this borrow lives.
        Ok(unsafe { p.buf().as_slice() })
    }

    fn route(&mut self, page: PageId, delta: &Delta) -> Result<()> {
        let ops = [RouteOp { page, delta, expected_epoch: None }];
        let (_, pending) = self.state.route_locked(self.core, &ops)?;
        self.pending.push(pending);
        Ok(())
    }
}

/// The state's graph: a log extension (`runtime::extension`) in its `Core`, which
/// `crate::compose` registers with every state.
fn graph(core: &Core) -> &ShadowPageGraph {
    core.extension::<ShadowPageGraph>().expect("the composition root (compose.rs) registers the graph with every state")
}

/// The state's graph, mutably.
fn graph_mut(core: &mut Core) -> &mut ShadowPageGraph {
    core.extension_mut::<ShadowPageGraph>()
        .expect("the composition root (compose.rs) registers the graph with every state")
}

/// The graph plugs into the state as a log extension: it keeps its edges under the state's
/// lock, replays its edge records, writes the checkpoint's extension section and keeps pages
/// with edges from being freed.
impl LogExtension for ShadowPageGraph {
    fn record_kinds(&self) -> &'static [u8] {
        &[ext_kind::GRAPH_EDGE_ADD, ext_kind::GRAPH_EDGE_REMOVE]
    }

    fn replay(&mut self, _kind: u8, body: &[u8], page_size: PageSizes<'_>) -> Result<()> {
        let record = persist::decode_record(body)?;
        persist::replay_record(self, &record, page_size).map(|_| ())
    }

    fn checkpoint_section(&self) -> Option<Vec<u8>> {
        Some(persist::encode_snapshot(self))
    }

    /// Callback edges are not restorable and are dropped (documented in `graph::persist`).
    fn restore_section(&mut self, bytes: &[u8], page_size: PageSizes<'_>) -> Result<bool> {
        let snapshot = persist::decode_snapshot(bytes)?;
        let (graph, _dropped) = persist::restore(&snapshot, page_size)?;
        *self = graph;
        Ok(true)
    }

    fn blocks_free(&self, page: PageId) -> Option<String> {
        self.contains(page).then(|| "it has dependency edges".to_string())
    }

    fn fresh(&self) -> Box<dyn LogExtension> {
        Box::new(ShadowPageGraph::default())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// Puts the graph back into the core even if a callback panics mid-round.
struct GraphOut<'a> {
    core: &'a mut Core,
    graph: ShadowPageGraph,
}

impl Drop for GraphOut<'_> {
    fn drop(&mut self) {
        *graph_mut(self.core) = std::mem::take(&mut self.graph);
    }
}

impl MMSBState {
    fn graph_check_open(&self) -> Result<()> {
        crate::runtime::reentry::check(self.core.key())?;
        if self.is_closed() {
            return Err(StateError::Closed.into());
        }
        Ok(())
    }

    fn graph_check_writable(&self) -> Result<()> {
        self.graph_check_open()?;
        if self.is_read_only() {
            return Err(StateError::ReadOnly.into());
        }
        Ok(())
    }

    /// Adds the edge `from -> to`: `to` is recomputed from `from` by `commands` whenever
    /// `from` changes in a propagation round. The commands are checked against both pages'
    /// sizes now. Fails on unknown pages, a cycle (named), an existing edge between the pair,
    /// or an invalid command; nothing changes then.
    pub fn add_dependency(&self, from: PageId, to: PageId, kind: EdgeKind, commands: CommandList) -> Result<EdgeId> {
        self.graph_check_writable()?;
        let mut core = self.core.write();
        self.graph_check_open()?;
        let src = core.pages.get(&from).ok_or(PageError::UnknownPage(from))?.size();
        let dst = core.pages.get(&to).ok_or(PageError::UnknownPage(to))?.size();
        let id = graph_mut(&mut core).add_edge(from, to, kind, commands, src, dst)?;
        let record = persist::GraphRecord::EdgeAdded(graph(&core).edge(id).expect("edge just added").into());
        let body = persist::encode_record(&record);
        let pending =
            match self.commit_locked(&mut core, 1, |s, c| s.tlog_extension(c, ext_kind::GRAPH_EDGE_ADD, &body)) {
                Ok((_, p)) => p,
                Err(e) => {
                    // The log refused the record: undo, so a failed call changes nothing.
                    graph_mut(&mut core).remove_edge(id)?;
                    return Err(e);
                }
            };
        drop(core);
        self.tlog_commit(pending)?;
        Ok(id)
    }

    /// Removes an edge. Pages left without edges can be freed again.
    pub fn remove_dependency(&self, edge: EdgeId) -> Result<()> {
        self.graph_check_writable()?;
        let mut core = self.core.write();
        self.graph_check_open()?;
        graph(&core).edge(edge).ok_or(crate::types::error::GraphError::UnknownEdgeId(edge.0))?;
        let record = persist::GraphRecord::EdgeRemoved { id: edge };
        let body = persist::encode_record(&record);
        let (_, pending) =
            self.commit_locked(&mut core, 1, |s, c| s.tlog_extension(c, ext_kind::GRAPH_EDGE_REMOVE, &body))?;
        graph_mut(&mut core).remove_edge(edge)?;
        drop(core);
        self.tlog_commit(pending)?;
        Ok(())
    }

    /// Runs one propagation round from `changed` (see [`crate::graph::propagation`]): every
    /// affected dependent is recomputed once, in `(height, PageId)` order, and its delta routed
    /// (logged, epoch bumped, `DeltaApplied` emitted). Emits `PropagationDone` at the end of a
    /// successful round. A failing callback ends the round with `GraphError::Callback`: the
    /// failing page is untouched, pages recomputed before it keep their (routed) new bytes.
    pub fn propagate(&self, changed: &[PageId]) -> Result<RoundStats> {
        self.graph_check_writable()?;
        let mut core = self.core.write();
        self.graph_check_open()?;
        if let Some(&p) = changed.iter().find(|p| !core.pages.contains_key(p)) {
            return Err(PageError::UnknownPage(p).into());
        }
        let (stats, pending) = self.round_locked(&mut core, changed);
        drop(core);
        self.commit_all(pending)?;
        stats
    }

    /// Routes a batch and propagates from its pages under one lock: no other write can come
    /// between the batch and the round. If the round fails (a callback), the batch and the pages
    /// recomputed before the failure stay applied, as with [`MMSBState::propagate`].
    pub fn route_and_propagate(&self, ops: &[RouteOp<'_>]) -> Result<(Range<Lsn>, RoundStats)> {
        self.graph_check_writable()?;
        let mut core = self.core.write();
        self.graph_check_open()?;
        let (lsns, first) = self.route_locked(&mut core, ops)?;
        let mut changed: Vec<PageId> = ops.iter().map(|o| o.page).collect();
        changed.sort_unstable();
        changed.dedup();
        let (stats, mut pending) = self.round_locked(&mut core, &changed);
        drop(core);
        pending.insert(0, first);
        self.commit_all(pending)?;
        Ok((lsns, stats?))
    }

    /// Runs a round under the caller's lock. Returns the log records it wrote even when the
    /// round fails part-way (deltas routed before the failure stay applied and logged).
    fn round_locked(&self, core: &mut Core, changed: &[PageId]) -> (Result<RoundStats>, Vec<Pending>) {
        let taken = std::mem::take(graph_mut(core));
        let mut out = GraphOut { core, graph: taken };
        let out = &mut out;
        let mut store = CoreStore { state: self, core: &mut *out.core, pending: Vec::new() };
        let started = std::time::Instant::now();
        // Transforms run on this thread under our lock: calls they make into this state are
        // refused (`Reentrant`) rather than left waiting for that lock.
        let scope = crate::runtime::reentry::CallbackScope::enter(self.core.key());
        let stats = PropagationEngine::new().run(&mut out.graph, &mut store, changed);
        drop(scope);
        let pending = store.pending;
        if let Ok(stats) = &stats {
            self.monitor.record(crate::monitoring::Metric::PropagationRound, started.elapsed().as_nanos() as u64);
            self.monitor.incr(crate::monitoring::Counter::PropagationRounds, 1);
            self.monitor.incr(crate::monitoring::Counter::PagesRecomputed, stats.recomputed);
            self.events.emit(Event::PropagationDone {
                round: stats.round,
                recomputed: stats.recomputed,
                cutoff: stats.cutoff,
            });
        }
        (stats, pending)
    }

    /// Waits for every log record of a round (group commit), outside the lock.
    fn commit_all(&self, pending: Vec<Pending>) -> Result<()> {
        pending.into_iter().try_for_each(|p| self.tlog_commit(p))
    }

    /// Pages with an edge from `page`, ascending.
    pub fn dependents(&self, page: PageId) -> Result<Vec<PageId>> {
        self.graph_check_open()?;
        let core = self.core.read();
        core.pages.get(&page).ok_or(PageError::UnknownPage(page))?;
        Ok(graph(&core).dependents(page))
    }

    /// Pages with an edge into `page`, ascending.
    pub fn dependencies(&self, page: PageId) -> Result<Vec<PageId>> {
        self.graph_check_open()?;
        let core = self.core.read();
        core.pages.get(&page).ok_or(PageError::UnknownPage(page))?;
        Ok(graph(&core).sources(page))
    }

    /// The pages of the graph in propagation order (`(height, PageId)`: a topological order).
    pub fn topo_order(&self) -> Result<Vec<PageId>> {
        self.graph_check_open()?;
        Ok(graph(&self.core.read()).topo_order())
    }

    /// One edge, as it would be logged.
    pub fn dependency(&self, edge: EdgeId) -> Result<EdgeRecord> {
        self.graph_check_open()?;
        let core = self.core.read();
        let e = graph(&core).edge(edge).ok_or(crate::types::error::GraphError::UnknownEdgeId(edge.0))?;
        Ok(e.into())
    }

    /// Runs `f` on the graph under the shared lock.
    pub fn with_graph<R>(&self, f: impl FnOnce(&ShadowPageGraph) -> R) -> Result<R> {
        self.graph_check_open()?;
        Ok(f(graph(&self.core.read())))
    }

    /// The graph as a checkpoint would store it.
    pub fn graph_snapshot(&self) -> Result<GraphSnapshot> {
        self.with_graph(persist::snapshot)
    }

    /// Replaces the graph by a restored snapshot (pages must exist); returns the ids of the
    /// callback edges that could not be restored.
    pub fn restore_graph(&self, snapshot: &GraphSnapshot) -> Result<Vec<EdgeId>> {
        self.graph_check_writable()?;
        let mut core = self.core.write();
        self.graph_check_open()?;
        let pages = &core.pages;
        let (mut restored, dropped) = persist::restore(snapshot, |p| pages.get(&p).map(|pg| pg.size()))?;
        let current = graph_mut(&mut core);
        restored.round = current.round;
        *current = restored;
        Ok(dropped)
    }

    /// Subscribes to the events in `mask` (bits of [`crate::graph::EventKind`]); see
    /// [`OverflowPolicy`] for what happens when the subscriber falls behind.
    pub fn subscribe(&self, capacity: usize, policy: OverflowPolicy, mask: u32) -> Result<Subscription> {
        self.graph_check_open()?;
        self.events.subscribe(capacity, policy, mask)
    }

    /// The state's event hub (other layers emit through it).
    pub fn events(&self) -> &EventSystem {
        &self.events
    }
}
