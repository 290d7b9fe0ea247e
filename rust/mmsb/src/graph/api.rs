//! The graph and event methods of [`MMSBState`].
//!
//! Graph edits and propagation rounds are changes like any other: closures passed to the
//! state's commit entry point (`runtime/commit.rs`), which checks, locks, assigns LSNs and
//! waits for durability; concurrent routes see whole rounds or none of them. Callbacks run on the calling thread, under that lock: a call
//! they make back into the same state is refused with `Reentrant` (see `runtime::reentry`)
//! and fails the round with that error, instead of waiting forever for the lock.

use std::ops::Range;

use crate::graph::command::CommandList;
use crate::graph::events::{Event, EventSystem, OverflowPolicy, Subscription};
use crate::graph::persist::{self, EdgeRecord, GraphSnapshot};
use crate::graph::propagation::{PageStore, PropagationEngine, RoundStats};
use crate::graph::shadow_graph::{EdgeId, EdgeKind, ShadowPageGraph};
use crate::runtime::commit::Txn;
use crate::runtime::extension::{LogExtension, PageSizes};
use crate::runtime::router::RouteOp;
use crate::runtime::state::{Core, Lsn, MMSBState};
use crate::runtime::tlog::ext_kind;
use crate::types::delta::Delta;
use crate::types::error::{PageError, Result};
use crate::types::page::PageId;

/// The state's pages as a [`PageStore`]: deltas go through the transaction's route (validated,
/// logged, applied, observed), exactly like routed ones.
struct TxnStore<'t, 'a> {
    txn: &'t mut Txn<'a>,
}

impl PageStore for TxnStore<'_, '_> {
    fn bytes(&self, page: PageId) -> Result<&[u8]> {
        let p = self.txn.core().pages.get(&page).ok_or(PageError::UnknownPage(page))?;
        // SAFETY: we hold the state's exclusive lock (the transaction's), and `route` needs
        // `&mut self`, so no write can happen while this borrow lives.
        Ok(unsafe { p.buf().as_slice() })
    }

    fn route(&mut self, page: PageId, delta: &Delta) -> Result<()> {
        self.txn.route(&[RouteOp { page, delta, expected_epoch: None }]).map(|_| ())
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
        &[ext_kind::GRAPH_EDGE_ADD, ext_kind::GRAPH_EDGE_REMOVE, ext_kind::GRAPH_RESTORE]
    }

    fn replay(&mut self, kind: u8, body: &[u8], page_size: PageSizes<'_>) -> Result<()> {
        if kind == ext_kind::GRAPH_RESTORE {
            let snapshot = persist::decode_snapshot(body)?;
            return persist::replace(self, &snapshot, page_size).map(|_| ());
        }
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
struct GraphOut<'t, 'a> {
    txn: &'t mut Txn<'a>,
    graph: ShadowPageGraph,
}

impl Drop for GraphOut<'_, '_> {
    fn drop(&mut self) {
        *graph_mut(self.txn.core_mut()) = std::mem::take(&mut self.graph);
    }
}

impl MMSBState {
    /// Adds the edge `from -> to`: `to` is recomputed from `from` by `commands` whenever
    /// `from` changes in a propagation round. The commands are checked against both pages'
    /// sizes now. Fails on unknown pages, a cycle (named), an existing edge between the pair,
    /// or an invalid command; nothing changes then.
    pub fn add_dependency(&self, from: PageId, to: PageId, kind: EdgeKind, commands: CommandList) -> Result<EdgeId> {
        self.commit(|txn| {
            let core = txn.core_mut();
            let src = core.pages.get(&from).ok_or(PageError::UnknownPage(from))?.size();
            let dst = core.pages.get(&to).ok_or(PageError::UnknownPage(to))?.size();
            let id = graph_mut(core).add_edge(from, to, kind, commands, src, dst)?;
            let record = persist::GraphRecord::EdgeAdded(graph(core).edge(id).expect("edge just added").into());
            let body = persist::encode_record(&record);
            if let Err(e) = txn.log_extension(ext_kind::GRAPH_EDGE_ADD, &body) {
                // The log refused the record: undo, so a failed call changes nothing.
                graph_mut(txn.core_mut()).remove_edge(id)?;
                return Err(e);
            }
            Ok(id)
        })
    }

    /// Removes an edge. Pages left without edges can be freed again.
    pub fn remove_dependency(&self, edge: EdgeId) -> Result<()> {
        self.commit(|txn| {
            graph(txn.core()).edge(edge).ok_or(crate::types::error::GraphError::UnknownEdgeId(edge.0))?;
            let record = persist::GraphRecord::EdgeRemoved { id: edge };
            txn.log_extension(ext_kind::GRAPH_EDGE_REMOVE, &persist::encode_record(&record))?;
            graph_mut(txn.core_mut()).remove_edge(edge)?;
            Ok(())
        })
    }

    /// Runs one propagation round from `changed` (see [`crate::graph::propagation`]): every
    /// affected dependent is recomputed once, in `(height, PageId)` order, and its delta routed
    /// (logged, epoch bumped, `DeltaApplied` emitted). Emits `PropagationDone` at the end of a
    /// successful round. A failing callback ends the round with `GraphError::Callback`: the
    /// failing page is untouched, pages recomputed before it keep their (routed) new bytes.
    pub fn propagate(&self, changed: &[PageId]) -> Result<RoundStats> {
        self.commit(|txn| {
            if let Some(&p) = changed.iter().find(|p| !txn.core().pages.contains_key(p)) {
                return Err(PageError::UnknownPage(p).into());
            }
            self.round(txn, changed)
        })
    }

    /// Routes a batch and propagates from its pages under one lock: no other write can come
    /// between the batch and the round. If the round fails (a callback), the batch and the pages
    /// recomputed before the failure stay applied, as with [`MMSBState::propagate`].
    pub fn route_and_propagate(&self, ops: &[RouteOp<'_>]) -> Result<(Range<Lsn>, RoundStats)> {
        self.commit(|txn| {
            let lsns = txn.route(ops)?;
            let mut changed: Vec<PageId> = ops.iter().map(|o| o.page).collect();
            changed.sort_unstable();
            changed.dedup();
            Ok((lsns, self.round(txn, &changed)?))
        })
    }

    /// Runs a round inside the caller's transaction. Deltas routed before a failure stay
    /// applied and logged (the commit entry point still waits for their records).
    fn round(&self, txn: &mut Txn<'_>, changed: &[PageId]) -> Result<RoundStats> {
        let taken = std::mem::take(graph_mut(txn.core_mut()));
        let mut out = GraphOut { txn, graph: taken };
        let out = &mut out;
        let mut store = TxnStore { txn: &mut *out.txn };
        let started = std::time::Instant::now();
        // Transforms run on this thread under our lock: calls they make into this state are
        // refused (`Reentrant`) rather than left waiting for that lock.
        let scope = crate::runtime::reentry::CallbackScope::enter(self.core.key());
        let stats = PropagationEngine::new().run(&mut out.graph, &mut store, changed);
        drop(scope);
        if let Ok(stats) = &stats {
            let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.monitor.record(crate::monitoring::Metric::PropagationRound, ns);
            self.monitor.incr(crate::monitoring::Counter::PropagationRounds, 1);
            self.monitor.incr(crate::monitoring::Counter::PagesRecomputed, stats.recomputed);
            self.events.emit(Event::PropagationDone {
                round: stats.round,
                recomputed: stats.recomputed,
                cutoff: stats.cutoff,
            });
        }
        stats
    }

    /// Pages with an edge from `page`, ascending.
    pub fn dependents(&self, page: PageId) -> Result<Vec<PageId>> {
        self.check_open()?;
        let core = self.core.read();
        core.pages.get(&page).ok_or(PageError::UnknownPage(page))?;
        Ok(graph(&core).dependents(page))
    }

    /// Pages with an edge into `page`, ascending.
    pub fn dependencies(&self, page: PageId) -> Result<Vec<PageId>> {
        self.check_open()?;
        let core = self.core.read();
        core.pages.get(&page).ok_or(PageError::UnknownPage(page))?;
        Ok(graph(&core).sources(page))
    }

    /// The pages of the graph in propagation order (`(height, PageId)`: a topological order).
    pub fn topo_order(&self) -> Result<Vec<PageId>> {
        self.check_open()?;
        Ok(graph(&self.core.read()).topo_order())
    }

    /// One edge, as it would be logged.
    pub fn dependency(&self, edge: EdgeId) -> Result<EdgeRecord> {
        self.check_open()?;
        let core = self.core.read();
        let e = graph(&core).edge(edge).ok_or(crate::types::error::GraphError::UnknownEdgeId(edge.0))?;
        Ok(e.into())
    }

    /// Runs `f` on the graph under the shared lock.
    pub fn with_graph<R>(&self, f: impl FnOnce(&ShadowPageGraph) -> R) -> Result<R> {
        self.check_open()?;
        Ok(f(graph(&self.core.read())))
    }

    /// The graph as a checkpoint would store it.
    pub fn graph_snapshot(&self) -> Result<GraphSnapshot> {
        self.with_graph(persist::snapshot)
    }

    /// Replaces the graph by a restored snapshot (pages must exist); returns the ids of the
    /// callback edges that could not be restored. The snapshot is logged as one record
    /// (`ext_kind::GRAPH_RESTORE`), so a reopen, a replay and a follower see the restored graph.
    /// A snapshot that fails validation, or a refused append, changes nothing and logs nothing.
    pub fn restore_graph(&self, snapshot: &GraphSnapshot) -> Result<Vec<EdgeId>> {
        self.commit(|txn| {
            // Validated in full before the append: a snapshot that fails logs nothing.
            let (restored, dropped) = {
                let pages = &txn.core().pages;
                persist::restore(snapshot, |p| pages.get(&p).map(|pg| pg.size()))?
            };
            txn.log_extension(ext_kind::GRAPH_RESTORE, &persist::snapshot_bytes(snapshot))?;
            persist::install(graph_mut(txn.core_mut()), restored);
            Ok(dropped)
        })
    }

    /// Subscribes to the events in `mask` (bits of [`crate::graph::EventKind`]); see
    /// [`OverflowPolicy`] for what happens when the subscriber falls behind.
    pub fn subscribe(&self, capacity: usize, policy: OverflowPolicy, mask: u32) -> Result<Subscription> {
        self.check_open()?;
        self.events.subscribe(capacity, policy, mask)
    }

    /// The state's event hub (other layers emit through it).
    pub fn events(&self) -> &EventSystem {
        &self.events
    }
}
