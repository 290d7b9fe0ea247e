//! The route path's counters: [`RouteProbe`] around the state's lock and the [`RouteTally`]
//! the state keeps beside its LSN.

use crate::monitoring::{Monitor, Timer};
use crate::types::route::RouteOp;

/// Exact route counts and the route-sampling countdown, kept in the state's `Core` beside the
/// LSN (`runtime::state::Core::routed`): the route writes that cache line anyway.
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

    /// Publishes the counts into the state's tally, whose exclusive lock the caller holds (that
    /// lock is what makes plain adds exact), and counts down to the next timed route.
    #[inline]
    pub(crate) fn commit(&self, tally: &mut RouteTally, monitor: &Monitor) {
        if self.enabled {
            tally.deltas += self.deltas;
            tally.bytes += self.bytes;
            monitor.route_countdown(&mut tally.countdown);
        }
    }

    /// Records the latency (if sampled). Call after releasing the state's lock.
    #[inline]
    pub(crate) fn finish(self, monitor: &Monitor) {
        self.timer.stop(monitor);
    }
}
