//! Monitoring: latency histograms, counters, gauges and budgets (the architecture's "utils"
//! layer, exposed as `get_stats` / `track_*` / `print_stats`).
//!
//! Every [`MMSBState`](crate::MMSBState) owns one [`Monitor`]. It keeps
//! - one HdrHistogram per [`Metric`] (nanoseconds, 3 significant digits, auto-resizing);
//! - one atomic cell per [`Counter`]; some counters are gauges ([`Counter::is_gauge`]) that go
//!   down as well as up;
//! - optional [`Budget`]s, whose violations bump [`Counter::BudgetViolations`] and go to a sink.
//!
//! # Cost, and the sampling rule
//! Monitoring is always on, so it must cost next to nothing on a 64-byte in-memory route
//! (about 20 ns on the development host; `benches/monitoring.rs` measures the ratio). Hence:
//! - **Counters are exact.** Every event is counted. Counters updated on the route path are
//!   written with a plain load + store while the state's exclusive lock is held (no locked
//!   read-modify-write, which alone would cost a third of a route); all others use `fetch_add`.
//!   The route path's bytes are summed before the lock is taken, so the critical section only
//!   gains two stores.
//! - **Hot-path latencies are sampled.** Timers started with [`Monitor::start_sampled`] (the
//!   route path) time about 1 in [`Monitor::sample_every`] events (default
//!   [`DEFAULT_SAMPLE_EVERY`]): after each sampled event the monitor skips a pseudo-random number
//!   of events drawn uniformly from `0..=2N-2` (mean `N - 1`), so periodic workloads do not
//!   alias with the sampler. A metric that has a latency budget is timed on every event.
//!   [`HistogramStats::sampled`] says how many recorded values came from sampled timers.
//! - **Explicit values are never sampled.** [`Monitor::record`], [`Monitor::start`] timers and
//!   the `track_*` calls record every value.
//! - Timers read the TSC where it is invariant (see the `clock` module), else `Instant`.
//! - Histograms sit behind one uncontended `parking_lot::Mutex` each; they are touched only by
//!   sampled or explicit records.
//!
//! - **Budgets cost nothing until set**: one bit of the flags word the fast path loads anyway.
//!   Max-latency budgets fire on every value above the limit; p99 and log-size budgets fire
//!   once per crossing and re-arm when the value falls back.
//!
//! [`Monitor::set_enabled`]`(false)` turns off histograms, monotonic counters and budgets
//! (gauges keep tracking levels, so they stay right when monitoring is turned back on).

mod clock;
pub mod http;
mod probe;
mod stats;

use std::ffi::CStr;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use hdrhistogram::Histogram;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;

pub use clock::ClockKind;
pub(crate) use probe::{RouteProbe, RouteTally};
pub use stats::{HistogramStats, Stats, SAMPLING_RULE};

use clock::Clock;

/// Default sampling rate of hot-path timers: about 1 event in 256 is timed. A sampled route
/// costs about 40 ns (two TSC reads and a histogram record), so at 1 in 256 sampling adds
/// about 0.15 ns to a 20 ns route; a million routes still give about 4000 samples. Lower it
/// with [`Monitor::set_sample_every`] for short runs. (C: `MMSB_DEFAULT_SAMPLE_EVERY`.)
///
pub const DEFAULT_SAMPLE_EVERY: u32 = 256;

/// Declares a C-numbered monitoring enum from one line per variant, so that its number, its
/// export name (stats JSON key, Prometheus name stem, table row, serde name, `mmsb_*_name`
/// C string) and its Prometheus `# HELP` text cannot drift apart. A `[gauge]` mark makes
/// `is_gauge_marked` true for that variant.
macro_rules! numbered_names {
    (
        $(#[$meta:meta])*
        pub enum $ty:ident {
            $(
                $(#[$vmeta:meta])*
                $var:ident = $num:literal $([$gauge:ident])? => $name:literal, $help:literal;
            )*
        }
    ) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        pub enum $ty {
            $(
                $(#[$vmeta])*
                #[serde(rename = $name)]
                $var = $num,
            )*
        }

        impl $ty {
            #[doc = concat!("Number of ", stringify!($ty), " values.")]
            pub const COUNT: usize = [$($ty::$var),*].len();
            /// Every value, in numeric order.
            pub const ALL: [$ty; $ty::COUNT] = [$($ty::$var),*];

            /// Decodes the C ABI number.
            pub fn from_u32(v: u32) -> Option<$ty> {
                $ty::ALL.get(v as usize).copied()
            }

            /// Stable snake_case name, used as the key in every export.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$var => $name,)*
                }
            }

            /// The name as a static C string (for the C ABI's `mmsb_*_name`).
            pub fn c_name(self) -> &'static CStr {
                match self {
                    $($ty::$var => const { static_c_str(concat!($name, "\0")) },)*
                }
            }

            /// One-line description (Prometheus `# HELP`).
            pub fn help(self) -> &'static str {
                match self {
                    $($ty::$var => $help,)*
                }
            }

            #[allow(dead_code)] // only counters mark gauges
            const fn is_gauge_marked(self) -> bool {
                match self {
                    $($ty::$var => numbered_names!(@gauge $($gauge)?),)*
                }
            }
        }

        // `from_u32` and the C constants index `ALL` by number: numbers must be 0, 1, 2...
        const _: () = {
            let mut i = 0;
            while i < $ty::COUNT {
                assert!($ty::ALL[i] as usize == i, "numbers must count up from 0 in declaration order");
                i += 1;
            }
        };
    };
    (@gauge) => { false };
    (@gauge gauge) => { true };
}

/// A NUL-terminated literal as a `CStr`, checked at compile time.
const fn static_c_str(s: &'static str) -> &'static CStr {
    match CStr::from_bytes_with_nul(s.as_bytes()) {
        Ok(c) => c,
        Err(_) => panic!("a name must not contain NUL"),
    }
}

numbered_names! {
    /// A latency histogram. The numbers are part of the C ABI and never change.
    pub enum Metric {
        /// Routing a delta or batch (`route_batch`, `update_page`), including lock wait.
        DeltaRoute = 0 => "delta_route", "Latency of routing a delta or batch, lock wait included";
        /// One propagation round of the PropagationEngine.
        PropagationRound = 1 => "propagation_round", "Latency of one propagation round";
        /// Appending a record to the transaction log.
        LogAppend = 2 => "log_append", "Latency of appending a record to the transaction log";
        /// One fsync of the log.
        Fsync = 3 => "fsync", "Latency of one log fsync";
        /// Writing a checkpoint.
        Checkpoint = 4 => "checkpoint", "Latency of writing a checkpoint";
        /// Replaying the log (recovery or an epoch slice).
        Replay = 5 => "replay", "Latency of a log replay";
        /// Synchronising a page with a device.
        DeviceSync = 6 => "device_sync", "Latency of a page sync with a device";
    }
}

impl Metric {
    const fn budget_bit(self) -> u64 {
        1 << (BUDGET_SHIFT + self as u32)
    }
}

numbered_names! {
    /// A counter or gauge. The numbers are part of the C ABI and never change.
    pub enum Counter {
        /// Live pages (gauge).
        Pages = 0 [gauge] => "pages", "Live pages";
        /// Bytes reserved by live pages, OS-page rounded: allocator pressure (gauge).
        BytesAllocated = 1 [gauge] => "bytes_allocated", "Bytes reserved by live pages (allocator pressure)";
        /// Deltas routed.
        DeltasRouted = 2 => "deltas_routed", "Deltas routed";
        /// Payload bytes of routed deltas: the bytes sparse runs write; for dense deltas the whole
        /// span, masked-out bytes included ([`Delta::payload_len`](crate::Delta::payload_len)).
        DeltaBytes = 3 => "delta_bytes", "Payload bytes of routed deltas (dense deltas count their whole span)";
        /// Current size of the transaction log in bytes (gauge).
        LogBytes = 4 [gauge] => "log_bytes", "Current size of the transaction log in bytes";
        /// Current number of log segments (gauge).
        LogSegments = 5 [gauge] => "log_segments", "Current number of log segments";
        /// Checkpoints written.
        Checkpoints = 6 => "checkpoints", "Checkpoints written";
        /// Events dropped (full subscriber queues, failing budget sinks).
        EventsDropped = 7 => "events_dropped", "Events dropped";
        /// Budget violations observed.
        BudgetViolations = 8 => "budget_violations", "Budget violations observed";
        /// Propagation rounds run.
        PropagationRounds = 9 => "propagation_rounds", "Propagation rounds run";
        /// Pages recomputed by propagation.
        PagesRecomputed = 10 => "pages_recomputed", "Pages recomputed by propagation";
        /// A replication follower: LSNs the stream holds beyond the follower's (gauge; 0 on
        /// other states). Set by the `mmsb-replica` crate.
        ReplicaLsnBehind = 11 [gauge] => "replica_lsn_behind", "Follower: LSNs behind its stream";
        /// A replication follower: microseconds since the oldest unapplied message was
        /// published, 0 when caught up (gauge; 0 on other states).
        ReplicaMicrosBehind = 12 [gauge] => "replica_us_behind", "Follower: microseconds behind its stream";
        /// A replication follower: failed writes (appends, fsyncs, new bases) of its durable
        /// position (0 on other states). Nothing is lost: a restart resumes from an older
        /// position and reads more of the stream. Set by the `mmsb-replica` crate.
        ReplicaPositionErrors = 13 => "replica_pos_errors", "Follower: failed writes of its durable position";
    }
}

impl Counter {
    /// Gauges measure a level and go down as well as up; the others only grow (until `reset`).
    pub fn is_gauge(self) -> bool {
        self.is_gauge_marked()
    }
}

/// A limit that, when exceeded, raises a [`BudgetViolation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Latency limits for one metric; `None` removes that limit.
    /// - `max_ns`: every recorded value above it is a violation.
    /// - `p99_ns`: the metric's p99 crossing above it is a violation (once per crossing: it
    ///   re-arms when the p99 falls back to the limit). Checked in O(1) per value: the p99 is
    ///   above the limit exactly when more than 1% of the recorded values are.
    Latency {
        /// The metric limited.
        metric: Metric,
        /// Limit on its p99, in nanoseconds.
        p99_ns: Option<u64>,
        /// Limit on every value, in nanoseconds.
        max_ns: Option<u64>,
    },
    /// The [`Counter::LogBytes`] gauge crossing above this many bytes is a violation (once per
    /// crossing: it re-arms when the log shrinks back to the limit). `None` removes it.
    LogBytes(Option<u64>),
}

/// Which limit a [`BudgetViolation`] broke. The numbers are part of the C ABI.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetKind {
    /// A value above the latency maximum.
    LatencyMax = 0,
    /// The p99 crossed above its limit.
    LatencyP99 = 1,
    /// The log grew above its size limit.
    LogBytes = 2,
}

impl BudgetKind {
    /// Decodes the C ABI number.
    pub fn from_u32(v: u32) -> Option<BudgetKind> {
        match v {
            0 => Some(BudgetKind::LatencyMax),
            1 => Some(BudgetKind::LatencyP99),
            2 => Some(BudgetKind::LogBytes),
            _ => None,
        }
    }
}

/// A budget that was exceeded, as passed to the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BudgetViolation {
    /// Which limit was broken.
    pub kind: BudgetKind,
    /// The metric, for latency budgets.
    pub metric: Option<Metric>,
    /// The value that broke the limit: the recorded latency (max), the p99 after recording
    /// (p99), or the log size (log bytes).
    pub observed: u64,
    /// The limit in force.
    pub limit: u64,
}

/// Receives budget violations. It runs on the recording thread, possibly while the state's lock
/// is held, so it must not call back into the state: queue the violation and return (the
/// EventSystem does). A panicking sink counts as a dropped event.
pub type BudgetSink = Box<dyn Fn(BudgetViolation) + Send + Sync>;
/// The sink as stored: cloned out of its lock before it is called.
type SharedSink = Arc<dyn Fn(BudgetViolation) + Send + Sync>;

const ENABLED: u64 = 1;
const LOG_BYTES_BUDGET: u64 = 1 << 1;
/// Set by the route path's countdown (kept under the state's lock, see
/// [`Monitor::route_countdown`]): the next route is timed. A bit of the flags the route loads
/// anyway, so an untimed route reads nothing else of the monitor and writes nothing to it.
const SAMPLE_ROUTE: u64 = 1 << 2;
const BUDGET_SHIFT: u32 = 8;
/// Limit value meaning "no limit".
const UNLIMITED: u64 = u64::MAX;

/// The sampling countdown of the hot paths other than routing (replay, propagation), on a
/// cache line of its own. (Routing keeps its countdown and its counts in the state's core,
/// beside the LSN: see `RouteProbe`.)
#[repr(C, align(64))]
struct RouteLine {
    /// Hot-path events to skip before the next sampled one.
    skip: AtomicU32,
    /// xorshift32 state for the skip lengths (never 0).
    rng: AtomicU32,
}

/// What every hot-path call reads and almost nothing writes, apart from [`RouteLine`] so that
/// routing threads do not invalidate it for each other.
#[repr(C, align(64))]
struct ReadMostly {
    /// `ENABLED`, `LOG_BYTES_BUDGET` and one budget bit per metric: one load decides the fast path.
    flags: AtomicU64,
    sample_every: AtomicU32,
    clock: Clock,
}

struct Slot {
    hist: Histogram<u64>,
    /// Values recorded from sampled timers.
    sampled: u64,
    /// Exact sum of recorded values (Prometheus `_sum`).
    sum: u64,
    /// State of the p99 budget: the limit `over` counts against (`UNLIMITED`: none yet), how
    /// many recorded values exceed it, and whether the p99 is above it now.
    p99_limit: u64,
    over: u64,
    p99_above: bool,
}

impl Slot {
    fn new() -> Slot {
        // 3 significant digits, auto-resizing: starts tiny and grows to the largest value seen.
        let hist = Histogram::new(3).expect("3 significant digits is a valid precision");
        Slot { hist, sampled: 0, sum: 0, p99_limit: UNLIMITED, over: 0, p99_above: false }
    }

    /// Tracks the p99 budget in O(1) per value: the p99 exceeds `limit` exactly when more than
    /// 1% of the values do. Returns the p99 when it has just crossed above the limit.
    fn p99_crossed(&mut self, ns: u64, limit: u64) -> Option<u64> {
        if self.p99_limit != limit {
            // New limit: recount once from the histogram (values in the limit's own bucket are
            // counted as not above it), then keep the count exactly.
            let above = limit.saturating_add(1);
            self.over = if self.hist.max() >= above { self.hist.count_between(above, self.hist.max()) } else { 0 };
            self.over = self.over.saturating_sub(u64::from(ns > limit)); // `ns` is counted below
            self.p99_limit = limit;
            self.p99_above = false;
        }
        self.over += u64::from(ns > limit);
        let above = self.over.saturating_mul(100) > self.hist.len();
        let crossed = above && !self.p99_above;
        self.p99_above = above;
        crossed.then(|| self.hist.value_at_quantile(0.99))
    }
}

struct LatencyLimits {
    max_ns: AtomicU64,
    p99_ns: AtomicU64,
}

/// Latency histograms, counters and budgets of one state. All methods take `&self` and are
/// safe to call from any thread.
pub struct Monitor {
    hot: ReadMostly,
    route: RouteLine,
    shared: [AtomicU64; Counter::COUNT],
    slots: [Mutex<Slot>; Metric::COUNT],
    limits: [LatencyLimits; Metric::COUNT],
    log_bytes_limit: AtomicU64,
    sink: RwLock<Option<SharedSink>>,
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("enabled", &self.is_enabled())
            .field("sample_every", &self.sample_every())
            .field("clock", &self.hot.clock.kind())
            .finish_non_exhaustive()
    }
}

impl Default for Monitor {
    fn default() -> Monitor {
        Monitor::new()
    }
}

/// A running latency measurement; record it with [`Timer::stop`]. Dropping it records nothing
/// (so an early `?` return leaves failed operations out of the histogram).
#[must_use = "a timer records nothing until stopped"]
#[derive(Debug, Clone, Copy)]
pub struct Timer {
    metric: Metric,
    start: u64,
    mode: TimerMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerMode {
    /// Not sampled, or monitoring disabled: `stop` does nothing.
    Off,
    Exact,
    Sampled,
}

impl Timer {
    /// True when `stop` will record a value.
    pub fn is_active(&self) -> bool {
        self.mode != TimerMode::Off
    }

    /// Records the elapsed time into the metric's histogram; returns it in ns when recorded.
    #[inline]
    pub fn stop(self, monitor: &Monitor) -> Option<u64> {
        if self.mode == TimerMode::Off {
            return None;
        }
        let ns = monitor.hot.clock.ticks_to_ns(monitor.hot.clock.now().saturating_sub(self.start));
        monitor.record_value(self.metric, ns, self.mode == TimerMode::Sampled);
        Some(ns)
    }
}

impl Monitor {
    /// An enabled monitor with no budgets and no sink.
    pub fn new() -> Monitor {
        Monitor {
            hot: ReadMostly {
                flags: AtomicU64::new(ENABLED),
                sample_every: AtomicU32::new(DEFAULT_SAMPLE_EVERY),
                clock: Clock::get(),
            },
            route: RouteLine { skip: AtomicU32::new(0), rng: AtomicU32::new(0x9E37_79B9) },
            shared: Default::default(),
            slots: std::array::from_fn(|_| Mutex::new(Slot::new())),
            limits: std::array::from_fn(|_| LatencyLimits {
                max_ns: AtomicU64::new(UNLIMITED),
                p99_ns: AtomicU64::new(UNLIMITED),
            }),
            log_bytes_limit: AtomicU64::new(UNLIMITED),
            sink: RwLock::new(None),
        }
    }

    /// A monitor that records nothing until [`Monitor::set_enabled`]`(true)` (gauges still
    /// track levels).
    pub fn disabled() -> Monitor {
        let m = Monitor::new();
        m.set_enabled(false);
        m
    }

    /// Turns recording on or off at run time.
    pub fn set_enabled(&self, enabled: bool) {
        if enabled {
            self.hot.flags.fetch_or(ENABLED, Relaxed);
        } else {
            self.hot.flags.fetch_and(!ENABLED, Relaxed);
        }
    }

    /// True when recording.
    pub fn is_enabled(&self) -> bool {
        self.hot.flags.load(Relaxed) & ENABLED != 0
    }

    /// About one hot-path event in `n` is timed (`n >= 1`; 1 times every event).
    pub fn set_sample_every(&self, n: u32) {
        self.hot.sample_every.store(n.max(1), Relaxed);
        self.route.skip.store(0, Relaxed); // start the new rate now, not after the old skip
    }

    /// The hot-path sampling rate.
    pub fn sample_every(&self) -> u32 {
        self.hot.sample_every.load(Relaxed)
    }

    /// The clock timers read.
    pub fn clock_kind(&self) -> ClockKind {
        self.hot.clock.kind()
    }

    /// Starts an exact timer: its value is always recorded (cold paths: fsync, checkpoint…).
    #[inline]
    pub fn start(&self, metric: Metric) -> Timer {
        if self.hot.flags.load(Relaxed) & ENABLED == 0 {
            return Timer { metric, start: 0, mode: TimerMode::Off };
        }
        Timer { metric, start: self.hot.clock.now(), mode: TimerMode::Exact }
    }

    /// Starts a sampled timer for a hot path: active for about 1 event in
    /// [`Monitor::sample_every`] events, or always when the metric has a latency budget.
    #[inline]
    pub fn start_sampled(&self, metric: Metric) -> Timer {
        self.start_sampled_enabled(metric).0
    }

    // The sampling countdown (`skip`) is shared by the monitor's threads and updated with plain
    // loads and stores, not a locked read-modify-write (which would cost more than the rest of
    // monitoring): a race only perturbs which event is sampled, never a count. It lives in the
    // monitor rather than in a thread-local because thread-locals cost a `__tls_get_addr` call
    // in the cdylib.

    /// A pseudo-random skip length, uniform in `0..=2N-2` (mean `N - 1`).
    fn next_skip(&self) -> u32 {
        let span = u64::from(self.sample_every()) * 2 - 1;
        // xorshift32; a racing thread may reuse a state, which only repeats one skip length.
        let mut x = self.route.rng.load(Relaxed);
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.route.rng.store(x, Relaxed);
        #[allow(clippy::cast_possible_truncation, reason = "a remainder is at most `x`, a u32")]
        let skip = (u64::from(x) % span) as u32;
        skip
    }

    /// [`Monitor::start_sampled`] plus whether the monitor is enabled, from one load of the
    /// flags (the route probe needs both). The common case, a skipped event, is a load, a
    /// decrement and a store; the sampled case is out of line so it does not bloat the caller.
    #[inline(always)]
    pub(crate) fn start_sampled_enabled(&self, metric: Metric) -> (Timer, bool) {
        let flags = self.hot.flags.load(Relaxed);
        if flags & ENABLED == 0 {
            return (Timer { metric, start: 0, mode: TimerMode::Off }, false);
        }
        if flags & metric.budget_bit() == 0 {
            let skip = self.route.skip.load(Relaxed);
            if skip > 0 {
                self.route.skip.store(skip - 1, Relaxed);
                return (Timer { metric, start: 0, mode: TimerMode::Off }, true);
            }
        }
        (self.start_sampled_slow(metric, flags), true)
    }

    /// The route path's timer and whether the monitor is enabled, from one load of the flags:
    /// the route is timed when the countdown set `SAMPLE_ROUTE` (the bit is taken, so one route
    /// is timed per countdown) or when a budget watches `DeltaRoute` (every route is timed).
    #[inline(always)]
    pub(crate) fn start_route(&self) -> (Timer, bool) {
        let flags = self.hot.flags.load(Relaxed);
        if flags & ENABLED == 0 {
            return (Timer { metric: Metric::DeltaRoute, start: 0, mode: TimerMode::Off }, false);
        }
        if flags & (SAMPLE_ROUTE | Metric::DeltaRoute.budget_bit()) == 0 {
            return (Timer { metric: Metric::DeltaRoute, start: 0, mode: TimerMode::Off }, true);
        }
        (self.start_route_slow(flags), true)
    }

    #[cold]
    #[inline(never)]
    fn start_route_slow(&self, flags: u64) -> Timer {
        if flags & SAMPLE_ROUTE != 0 {
            self.hot.flags.fetch_and(!SAMPLE_ROUTE, Relaxed);
        }
        Timer { metric: Metric::DeltaRoute, start: self.hot.clock.now(), mode: TimerMode::Sampled }
    }

    /// Counts one committed route down; at zero, requests that the next route be timed and
    /// draws the next skip. `countdown` lives in the state's core and the caller holds the
    /// state's exclusive lock, so this is a plain decrement.
    #[inline(always)]
    pub(crate) fn route_countdown(&self, countdown: &mut u32) {
        match countdown.checked_sub(1) {
            Some(left) => *countdown = left,
            None => self.route_sample_next(countdown),
        }
    }

    #[cold]
    #[inline(never)]
    fn route_sample_next(&self, countdown: &mut u32) {
        *countdown = self.next_skip();
        self.hot.flags.fetch_or(SAMPLE_ROUTE, Relaxed);
    }

    /// Times the next route (after a reset, so that sampling restarts at once).
    pub(crate) fn sample_next_route(&self) {
        self.hot.flags.fetch_or(SAMPLE_ROUTE, Relaxed);
    }

    #[cold]
    #[inline(never)]
    fn start_sampled_slow(&self, metric: Metric, flags: u64) -> Timer {
        if flags & metric.budget_bit() == 0 {
            self.route.skip.store(self.next_skip(), Relaxed);
        }
        Timer { metric, start: self.hot.clock.now(), mode: TimerMode::Sampled }
    }

    /// Records one latency in nanoseconds (never sampled).
    pub fn record(&self, metric: Metric, nanos: u64) {
        if self.is_enabled() {
            self.record_value(metric, nanos, false);
        }
    }

    /// A user-side delta latency (Julia's `track_delta_latency!`): recorded into
    /// [`Metric::DeltaRoute`].
    pub fn track_delta_latency(&self, nanos: u64) {
        self.record(Metric::DeltaRoute, nanos);
    }

    /// A user-side propagation latency (Julia's `track_propagation_latency!`): recorded into
    /// [`Metric::PropagationRound`].
    pub fn track_propagation_latency(&self, nanos: u64) {
        self.record(Metric::PropagationRound, nanos);
    }

    fn record_value(&self, metric: Metric, ns: u64, sampled: bool) {
        let check = self.hot.flags.load(Relaxed) & metric.budget_bit() != 0;
        let mut violations = [None, None];
        {
            let mut slot = self.slots[metric as usize].lock();
            // Auto-resize grows the histogram to fit; beyond i64::MAX / 2 ns (146 years) clamp.
            if slot.hist.record(ns).is_err() {
                slot.hist.saturating_record(ns);
            }
            slot.sum = slot.sum.saturating_add(ns);
            slot.sampled += u64::from(sampled);
            if check {
                violations = self.check_latency(metric, ns, &mut slot);
            }
        }
        // Outside the slot lock: the sink may record.
        for v in violations.into_iter().flatten() {
            self.violate(v);
        }
    }

    fn check_latency(&self, metric: Metric, ns: u64, slot: &mut Slot) -> [Option<BudgetViolation>; 2] {
        let limits = &self.limits[metric as usize];
        let max = limits.max_ns.load(Relaxed);
        let max_violation = (ns > max).then_some(BudgetViolation {
            kind: BudgetKind::LatencyMax,
            metric: Some(metric),
            observed: ns,
            limit: max,
        });
        let p99_limit = limits.p99_ns.load(Relaxed);
        let p99_violation = if p99_limit == UNLIMITED {
            None
        } else {
            slot.p99_crossed(ns, p99_limit).map(|p99| BudgetViolation {
                kind: BudgetKind::LatencyP99,
                metric: Some(metric),
                observed: p99,
                limit: p99_limit,
            })
        };
        [max_violation, p99_violation]
    }

    #[cold]
    fn violate(&self, v: BudgetViolation) {
        self.shared[Counter::BudgetViolations as usize].fetch_add(1, Relaxed);
        let sink = self.sink.read().clone();
        if let Some(sink) = sink {
            if catch_unwind(AssertUnwindSafe(|| sink(v))).is_err() {
                self.shared[Counter::EventsDropped as usize].fetch_add(1, Relaxed);
            }
        }
    }

    /// Adds `n` to a counter (same as [`Monitor::add`]).
    #[inline]
    pub fn incr(&self, counter: Counter, n: u64) {
        self.add(counter, n);
    }

    /// Adds `n` to a counter or gauge. Monotonic counters ignore it while disabled.
    #[inline]
    pub fn add(&self, counter: Counter, n: u64) {
        let flags = self.hot.flags.load(Relaxed);
        if flags & ENABLED == 0 && !counter.is_gauge() {
            return;
        }
        let before = self.shared[counter as usize].fetch_add(n, Relaxed);
        if counter == Counter::LogBytes && flags & LOG_BYTES_BUDGET != 0 && flags & ENABLED != 0 {
            self.check_log_bytes(before, before.wrapping_add(n));
        }
    }

    /// Subtracts `n` from a gauge (wrapping: callers pair it with an earlier `add`).
    #[inline]
    pub fn sub(&self, counter: Counter, n: u64) {
        if self.hot.flags.load(Relaxed) & ENABLED == 0 && !counter.is_gauge() {
            return;
        }
        self.shared[counter as usize].fetch_sub(n, Relaxed);
    }

    /// Sets a gauge to `value` (e.g. the log's size after recovery).
    pub fn set(&self, counter: Counter, value: u64) {
        let before = self.counter(counter);
        self.shared[counter as usize].store(value, Relaxed);
        if counter == Counter::LogBytes
            && self.hot.flags.load(Relaxed) & (LOG_BYTES_BUDGET | ENABLED) == LOG_BYTES_BUDGET | ENABLED
        {
            self.check_log_bytes(before, value);
        }
    }

    fn check_log_bytes(&self, before: u64, after: u64) {
        let limit = self.log_bytes_limit.load(Relaxed);
        if before <= limit && after > limit {
            self.violate(BudgetViolation { kind: BudgetKind::LogBytes, metric: None, observed: after, limit });
        }
    }

    /// Current value of a counter or gauge.
    pub fn counter(&self, counter: Counter) -> u64 {
        let i = counter as usize;
        self.shared[i].load(Relaxed)
    }

    /// Bookkeeping for a new page of `capacity` reserved bytes (gauges, always tracked).
    #[inline]
    pub fn page_created(&self, capacity: u64) {
        self.add(Counter::Pages, 1);
        self.add(Counter::BytesAllocated, capacity);
    }

    /// Bookkeeping for a freed page of `capacity` reserved bytes.
    #[inline]
    pub fn page_freed(&self, capacity: u64) {
        self.sub(Counter::Pages, 1);
        self.sub(Counter::BytesAllocated, capacity);
    }

    /// Bookkeeping for pages released at once (the state closing), given their capacities.
    pub fn pages_released(&self, capacities: impl IntoIterator<Item = u64>) {
        for c in capacities {
            self.page_freed(c);
        }
    }

    /// Sets or clears a budget.
    pub fn set_budget(&self, budget: Budget) {
        match budget {
            Budget::Latency { metric, p99_ns, max_ns } => {
                let limits = &self.limits[metric as usize];
                limits.max_ns.store(max_ns.unwrap_or(UNLIMITED), Relaxed);
                limits.p99_ns.store(p99_ns.unwrap_or(UNLIMITED), Relaxed);
                self.set_flag(metric.budget_bit(), p99_ns.is_some() || max_ns.is_some());
            }
            Budget::LogBytes(limit) => {
                self.log_bytes_limit.store(limit.unwrap_or(UNLIMITED), Relaxed);
                self.set_flag(LOG_BYTES_BUDGET, limit.is_some());
            }
        }
    }

    /// Sets one limit, keeping the metric's other limit (the C ABI's `mmsb_set_budget`).
    pub fn set_budget_limit(&self, kind: BudgetKind, metric: Metric, limit: Option<u64>) {
        let limits = &self.limits[metric as usize];
        let get = |a: &AtomicU64| Some(a.load(Relaxed)).filter(|&v| v != UNLIMITED);
        let budget = match kind {
            BudgetKind::LatencyMax => Budget::Latency { metric, p99_ns: get(&limits.p99_ns), max_ns: limit },
            BudgetKind::LatencyP99 => Budget::Latency { metric, p99_ns: limit, max_ns: get(&limits.max_ns) },
            BudgetKind::LogBytes => Budget::LogBytes(limit),
        };
        self.set_budget(budget);
    }

    /// Removes every budget.
    pub fn clear_budgets(&self) {
        for m in Metric::ALL {
            self.set_budget(Budget::Latency { metric: m, p99_ns: None, max_ns: None });
        }
        self.set_budget(Budget::LogBytes(None));
    }

    fn set_flag(&self, bit: u64, on: bool) {
        if on {
            self.hot.flags.fetch_or(bit, Relaxed);
        } else {
            self.hot.flags.fetch_and(!bit, Relaxed);
        }
    }

    /// Installs (or with `None` removes) the budget-violation sink.
    pub fn set_sink(&self, sink: Option<BudgetSink>) {
        *self.sink.write() = sink.map(Arc::from);
    }

    /// A snapshot of every histogram and counter.
    pub fn snapshot(&self) -> Stats {
        let histograms = std::array::from_fn(|i| {
            let slot = self.slots[i].lock();
            HistogramStats::from_hist(Metric::ALL[i], &slot.hist, slot.sampled, slot.sum)
        });
        let counters = Counter::ALL.map(|c| self.counter(c));
        Stats {
            enabled: self.is_enabled(),
            sample_every: self.sample_every(),
            clock: self.hot.clock.kind(),
            histograms,
            counters,
        }
    }

    /// Clears the histograms and the monotonic counters; gauges keep their levels and budgets
    /// stay. A route racing with the reset may keep its counts: `MMSBState::reset_stats` takes
    /// the state's lock to exclude that.
    pub fn reset(&self) {
        for slot in &self.slots {
            let mut s = slot.lock();
            s.hist.reset();
            s.sampled = 0;
            s.sum = 0;
            s.p99_limit = UNLIMITED; // recount against an empty histogram
            s.over = 0;
            s.p99_above = false;
        }
        for c in Counter::ALL {
            if !c.is_gauge() {
                self.shared[c as usize].store(0, Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    #[allow(clippy::cast_possible_truncation, reason = "enum positions are below 64")]
    fn enum_numbers_are_stable() {
        for (i, m) in Metric::ALL.iter().enumerate() {
            assert_eq!(*m as usize, i);
            assert_eq!(Metric::from_u32(i as u32), Some(*m));
            assert_eq!(m.c_name().to_str().unwrap(), m.name());
        }
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            assert_eq!(Counter::from_u32(i as u32), Some(*c));
            assert_eq!(c.c_name().to_str().unwrap(), c.name());
        }
        assert_eq!(Metric::from_u32(Metric::COUNT as u32), None);
        assert_eq!(Counter::from_u32(Counter::COUNT as u32), None);
        // Budget bits must not collide with the other flags.
        assert!(Metric::DeltaRoute.budget_bit() > LOG_BYTES_BUDGET);
        assert!(Metric::DeviceSync.budget_bit() < 1 << 63);
    }

    #[test]
    fn sampling_rate_is_about_one_in_n() {
        let m = Monitor::new();
        m.set_sample_every(16);
        let n = 64_000;
        let active = (0..n).filter(|_| m.start_sampled(Metric::Replay).is_active()).count();
        // Mean skip is 15 events, so about n / 16 = 4000 samples; allow ±15 %.
        assert!((3400..=4600).contains(&active), "{active} of {n} sampled");
    }

    #[test]
    fn sample_every_one_times_everything() {
        let m = Monitor::new();
        m.set_sample_every(1);
        assert!((0..1000).all(|_| m.start_sampled(Metric::DeltaRoute).is_active()));
    }

    #[test]
    fn budgeted_metric_is_timed_on_every_event() {
        let m = Monitor::new();
        m.set_sample_every(1_000_000);
        m.set_budget(Budget::Latency { metric: Metric::Fsync, p99_ns: None, max_ns: Some(u64::MAX - 1) });
        assert!((0..100).all(|_| m.start_sampled(Metric::Fsync).is_active()));
        m.clear_budgets();
        assert!((0..100).filter(|_| m.start_sampled(Metric::Fsync).is_active()).count() < 5);
    }

    #[test]
    fn disabled_records_nothing_but_gauges() {
        let m = Monitor::disabled();
        m.record(Metric::Fsync, 10);
        m.incr(Counter::DeltasRouted, 3);
        m.page_created(4096);
        assert!(!m.start(Metric::Fsync).is_active());
        assert!(!m.start_sampled(Metric::Fsync).is_active());
        let s = m.snapshot();
        assert!(!s.enabled);
        assert_eq!(s.histogram(Metric::Fsync).count, 0);
        assert_eq!(s.counter(Counter::DeltasRouted), 0);
        assert_eq!(s.counter(Counter::Pages), 1);
        assert_eq!(s.counter(Counter::BytesAllocated), 4096);
    }

    #[test]
    fn log_bytes_budget_fires_once_per_crossing() {
        let m = Monitor::new();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        m.set_sink(Some(Box::new(move |v| {
            assert_eq!(v.kind, BudgetKind::LogBytes);
            h.fetch_add(1, Relaxed);
        })));
        m.set_budget(Budget::LogBytes(Some(1000)));
        m.add(Counter::LogBytes, 1000);
        assert_eq!(hits.load(Relaxed), 0);
        m.add(Counter::LogBytes, 1);
        m.add(Counter::LogBytes, 500);
        assert_eq!(hits.load(Relaxed), 1);
        m.sub(Counter::LogBytes, 1000);
        m.add(Counter::LogBytes, 600);
        assert_eq!(hits.load(Relaxed), 2);
        assert_eq!(m.counter(Counter::BudgetViolations), 2);
    }

    #[test]
    fn panicking_sink_counts_as_dropped_event() {
        let m = Monitor::new();
        m.set_sink(Some(Box::new(|_| panic!("sink failed"))));
        m.set_budget(Budget::Latency { metric: Metric::Checkpoint, p99_ns: None, max_ns: Some(10) });
        m.record(Metric::Checkpoint, 11);
        assert_eq!(m.counter(Counter::BudgetViolations), 1);
        assert_eq!(m.counter(Counter::EventsDropped), 1);
    }

    #[test]
    fn sink_may_record_into_the_monitor() {
        let m = Arc::new(Monitor::new());
        let weak = Arc::downgrade(&m);
        m.set_sink(Some(Box::new(move |_| {
            if let Some(m) = weak.upgrade() {
                m.incr(Counter::EventsDropped, 1);
            }
        })));
        m.set_budget(Budget::Latency { metric: Metric::Replay, p99_ns: None, max_ns: Some(5) });
        m.record(Metric::Replay, 6);
        assert_eq!(m.counter(Counter::EventsDropped), 1);
    }
}
