//! Monitoring methods of [`MMSBState`]: `get_stats`, `print_stats`, `track_*`, budgets, and the
//! bookkeeping the router calls.

use crate::monitoring::{Budget, Counter, Monitor, Stats, Timer};
use crate::runtime::router::RouteOp;
use crate::runtime::state::{Core, MMSBState};

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

/// Exact route counts and the route-sampling countdown, kept in the state's `Core` beside the
/// LSN (see `Core::routed`): the route writes that cache line anyway.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RouteTally {
    pub(crate) deltas: u64,
    pub(crate) bytes: u64,
    /// Routes left before the next timed one (see [`Monitor::route_countdown`]).
    pub(crate) countdown: u32,
}

/// The route path's monitoring, in three steps around the state's lock:
/// [`RouteProbe::start`] before taking it (starts the sampled timer and sums the bytes, so
/// neither adds to the critical section), [`RouteProbe::commit`] while holding it (exact
/// counts with plain adds), [`RouteProbe::finish`] after releasing it (records the latency;
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
        let (timer, enabled) = monitor.start_route();
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

    /// Publishes the counts into the state's core, whose exclusive lock the caller holds (that
    /// lock is what makes plain adds exact), and counts down to the next timed route.
    #[inline]
    pub(crate) fn commit(&self, core: &mut Core, monitor: &Monitor) {
        if self.enabled {
            core.routed.deltas += self.deltas;
            core.routed.bytes += self.bytes;
            monitor.route_countdown(&mut core.routed.countdown);
        }
    }

    /// Records the latency (if sampled). Call after releasing the state's lock.
    #[inline]
    pub(crate) fn finish(self, monitor: &Monitor) {
        self.timer.stop(monitor);
    }
}
