//! Monitoring methods of [`MMSBState`]: `get_stats`, `print_stats`, `track_*`, budgets, and the
//! bookkeeping the router calls.

use crate::monitoring::{Budget, Counter, Monitor, Stats};
use crate::runtime::router::RouteOp;
use crate::runtime::state::MMSBState;

impl MMSBState {
    /// The state's monitor (histograms, counters, budgets, sink).
    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    /// A snapshot of every histogram and counter (`get_stats`).
    pub fn get_stats(&self) -> Stats {
        self.monitor.snapshot()
    }

    /// The stats as an aligned table.
    pub fn stats_table(&self) -> String {
        self.monitor.snapshot().to_table()
    }

    /// Prints [`MMSBState::stats_table`] to stdout (`print_stats`).
    pub fn print_stats(&self) {
        print!("{}", self.stats_table());
    }

    /// Clears histograms and monotonic counters (gauges keep their levels). Takes the state's
    /// lock so no route is half-counted across the reset.
    pub fn reset_stats(&self) {
        let _core = self.core.write();
        self.monitor.reset();
    }

    /// Records a caller-measured delta latency (Julia's `track_delta_latency!`).
    pub fn track_delta_latency(&self, nanos: u64) {
        self.monitor.track_delta_latency(nanos);
    }

    /// Records a caller-measured propagation latency (Julia's `track_propagation_latency!`).
    pub fn track_propagation_latency(&self, nanos: u64) {
        self.monitor.track_propagation_latency(nanos);
    }

    /// Sets or clears a budget (see [`Budget`]).
    pub fn set_budget(&self, budget: Budget) {
        self.monitor.set_budget(budget);
    }

    /// Counts routed deltas and their bytes. Called by the router's hook while the state's
    /// exclusive lock is held, which is what makes the serial counter cells exact.
    #[inline]
    pub(crate) fn note_routed(&self, ops: &[RouteOp<'_>]) {
        if !self.monitor.is_enabled() {
            return;
        }
        let bytes: u64 = ops.iter().map(|op| op.delta.written_bytes()).sum();
        self.monitor.add_serial(Counter::DeltasRouted, ops.len() as u64);
        self.monitor.add_serial(Counter::DeltaBytes, bytes);
    }
}
