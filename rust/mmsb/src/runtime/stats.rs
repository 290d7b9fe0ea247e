//! The monitoring methods of [`MMSBState`] (`get_stats`, `print_stats`, `track_*`, budgets):
//! the state's side of the `monitoring` layer, which sits below the runtime and knows nothing
//! of the state.

use crate::monitoring::http::StatsSource;
use crate::monitoring::{Budget, Counter, Monitor, RouteTally, Stats};
use crate::runtime::state::MMSBState;

impl MMSBState {
    /// The state's monitor (histograms, counters, budgets, sink).
    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    /// A snapshot of every histogram and counter (`get_stats`).
    pub fn get_stats(&self) -> Stats {
        let mut stats = self.monitor.snapshot();
        let tally = self.core.read().routed;
        stats.counters[Counter::DeltasRouted as usize] += tally.deltas;
        stats.counters[Counter::DeltaBytes as usize] += tally.bytes;
        stats
    }

    /// One counter or gauge, including the route tallies kept beside the LSN (which
    /// [`Monitor::counter`] alone does not see).
    pub fn counter(&self, counter: Counter) -> u64 {
        let tally = match counter {
            Counter::DeltasRouted => self.core.read().routed.deltas,
            Counter::DeltaBytes => self.core.read().routed.bytes,
            _ => 0,
        };
        self.monitor.counter(counter).wrapping_add(tally)
    }

    /// The stats as an aligned table.
    pub fn stats_table(&self) -> String {
        self.get_stats().to_table()
    }

    /// Prints [`MMSBState::stats_table`] to stdout (`print_stats`).
    pub fn print_stats(&self) {
        print!("{}", self.stats_table());
    }

    /// Clears histograms and monotonic counters (gauges keep their levels). Takes the state's
    /// lock so no route is half-counted across the reset.
    pub fn reset_stats(&self) {
        let mut core = self.core.write();
        core.routed = RouteTally::default();
        self.monitor.reset();
        self.monitor.sample_next_route();
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

/// The metrics endpoint (`monitoring::http`) serves a state through this.
impl StatsSource for MMSBState {
    fn prometheus_text(&self) -> Option<String> {
        (!self.is_closed()).then(|| self.get_stats().to_prometheus())
    }
}
