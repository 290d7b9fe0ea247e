//! Monitoring methods of [`MMSBState`]: `get_stats`, `print_stats`, `track_*`, budgets, and the
//! bookkeeping the router calls.

use crate::monitoring::{Budget, Counter, Metric, Monitor, Stats, Timer};
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
}

/// The route path's monitoring, in three steps around the state's lock:
/// [`RouteProbe::start`] before taking it (starts the sampled timer and sums the bytes, so
/// neither adds to the critical section), [`RouteProbe::commit`] while holding it (exact
/// counters with plain stores), [`RouteProbe::finish`] after releasing it (records the latency;
/// a budget sink then never runs under the state's lock). A probe dropped early (a failed
/// route) records nothing.
#[derive(Debug)]
pub(crate) struct RouteProbe {
    timer: Timer,
    deltas: u64,
    bytes: u64,
    enabled: bool,
}

impl RouteProbe {
    #[inline]
    pub(crate) fn start(monitor: &Monitor, ops: &[RouteOp<'_>]) -> RouteProbe {
        let (timer, enabled) = monitor.start_sampled_enabled(Metric::DeltaRoute);
        let mut probe = RouteProbe { timer, deltas: 0, bytes: 0, enabled };
        probe.add_ops(ops);
        probe
    }

    /// Counts more ops (for paths that build their delta under the lock).
    #[inline]
    pub(crate) fn add_ops(&mut self, ops: &[RouteOp<'_>]) {
        if self.enabled {
            self.deltas += ops.len() as u64;
            // Payload, not popcount: counting mask bits costs 30 ns on a dense 4 KiB delta.
            self.bytes += ops.iter().map(|op| op.delta.payload_len()).sum::<u64>();
        }
    }

    /// Publishes the counts. The caller holds the state's exclusive lock, which is what makes
    /// the serial counter cells exact.
    #[inline]
    pub(crate) fn commit(&self, monitor: &Monitor) {
        if self.enabled {
            monitor.add_serial(Counter::DeltasRouted, self.deltas);
            monitor.add_serial(Counter::DeltaBytes, self.bytes);
        }
    }

    /// Records the latency (if sampled). Call after releasing the state's lock.
    #[inline]
    pub(crate) fn finish(self, monitor: &Monitor) {
        self.timer.stop(monitor);
    }
}
