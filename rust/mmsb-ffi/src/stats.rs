//! C ABI: monitoring (stats exports, histograms, counters, budgets, user-side latencies).
//!
//! Metric and counter numbers are the `MMSB_METRIC_*` / `MMSB_COUNTER_*` constants; they never
//! change. Text exports (`mmsb_stats_json`, `_prometheus`, `_table`) use one buffer protocol:
//! `*out_len` always receives the text's length (without the NUL); when `cap > len` the text
//! and a NUL are written and the call returns OK, otherwise it returns `BUFFER_TOO_SMALL` and
//! writes nothing to `buf` (`buf` may be NULL for a size query). Stats change between calls, so
//! wrappers retry with a larger buffer until OK.

use std::ffi::c_char;

use crate::state::{state_ref, MmsbState};
use crate::{arg_ref, arg_str, boundary, check_out, write_out, FfiError, FfiResult, MmsbStatus};
use mmsb::monitoring::http::MetricsServer;
use mmsb::monitoring::{BudgetKind, Counter, HistogramStats, Metric};
use mmsb::types::error::{ErrorCode, MonitorError};

/// Latency of routing a delta or batch (sampled on the hot path).
pub const MMSB_METRIC_DELTA_ROUTE: u32 = 0;
/// Latency of one propagation round.
pub const MMSB_METRIC_PROPAGATION_ROUND: u32 = 1;
/// Latency of a log append.
pub const MMSB_METRIC_LOG_APPEND: u32 = 2;
/// Latency of one fsync.
pub const MMSB_METRIC_FSYNC: u32 = 3;
/// Latency of a checkpoint.
pub const MMSB_METRIC_CHECKPOINT: u32 = 4;
/// Latency of a replay.
pub const MMSB_METRIC_REPLAY: u32 = 5;
/// Latency of a device sync.
pub const MMSB_METRIC_DEVICE_SYNC: u32 = 6;
/// Number of metrics (valid numbers are `0..MMSB_METRIC_COUNT`).
pub const MMSB_METRIC_COUNT: u32 = 7;

/// Live pages (gauge).
pub const MMSB_COUNTER_PAGES: u32 = 0;
/// Bytes reserved by live pages (gauge).
pub const MMSB_COUNTER_BYTES_ALLOCATED: u32 = 1;
/// Deltas routed.
pub const MMSB_COUNTER_DELTAS_ROUTED: u32 = 2;
/// Payload bytes of routed deltas (a dense delta counts its whole span).
pub const MMSB_COUNTER_DELTA_BYTES: u32 = 3;
/// Log size in bytes (gauge).
pub const MMSB_COUNTER_LOG_BYTES: u32 = 4;
/// Log segments (gauge).
pub const MMSB_COUNTER_LOG_SEGMENTS: u32 = 5;
/// Checkpoints written.
pub const MMSB_COUNTER_CHECKPOINTS: u32 = 6;
/// Events dropped.
pub const MMSB_COUNTER_EVENTS_DROPPED: u32 = 7;
/// Budget violations.
pub const MMSB_COUNTER_BUDGET_VIOLATIONS: u32 = 8;
/// Propagation rounds.
pub const MMSB_COUNTER_PROPAGATION_ROUNDS: u32 = 9;
/// Pages recomputed by propagation.
pub const MMSB_COUNTER_PAGES_RECOMPUTED: u32 = 10;
/// A replication follower: LSNs behind its stream (gauge; 0 on other states).
pub const MMSB_COUNTER_REPLICA_LSN_BEHIND: u32 = 11;
/// A replication follower: microseconds behind its stream, 0 when caught up (gauge).
pub const MMSB_COUNTER_REPLICA_US_BEHIND: u32 = 12;
/// A replication follower: failed writes of its durable position (a restart re-reads more).
pub const MMSB_COUNTER_REPLICA_POSITION_ERRORS: u32 = 13;
/// Number of counters (valid numbers are `0..MMSB_COUNTER_COUNT`).
pub const MMSB_COUNTER_COUNT: u32 = 14;

/// Budget kind for `mmsb_set_budget`: every recorded latency above the value is a violation.
pub const MMSB_BUDGET_LATENCY_MAX: u32 = 0;
/// Budget kind: the metric's p99 rising above the value is a violation (once per crossing).
pub const MMSB_BUDGET_LATENCY_P99: u32 = 1;
/// Budget kind: the log growing past the value (bytes) is a violation (once per crossing);
/// `metric` is ignored.
pub const MMSB_BUDGET_LOG_BYTES: u32 = 2;

/// Hot-path latencies time about 1 event in this many unless changed with
/// `mmsb_monitor_set_sample_every`.
pub const MMSB_DEFAULT_SAMPLE_EVERY: u32 = 256;

/// Summary of one latency histogram (nanoseconds), filled by `mmsb_stats_histogram`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct MmsbHistogramStats {
    /// Values recorded.
    pub count: u64,
    /// Of `count`, values from sampled hot-path timers.
    pub sampled: u64,
    pub min_ns: u64,
    pub mean_ns: f64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    /// Exact sum of the recorded values.
    pub sum_ns: u64,
}

impl From<&HistogramStats> for MmsbHistogramStats {
    fn from(h: &HistogramStats) -> MmsbHistogramStats {
        // Every field named (no `..`): a field added to the original does not compile until it is
        // mirrored here or left out on purpose.
        let HistogramStats {
            metric: _, // the caller asked for it by number
            count,
            sampled,
            min_ns,
            mean_ns,
            p50_ns,
            p90_ns,
            p99_ns,
            p999_ns,
            max_ns,
            sum_ns,
        } = *h;
        MmsbHistogramStats { count, sampled, min_ns, mean_ns, p50_ns, p90_ns, p99_ns, p999_ns, max_ns, sum_ns }
    }
}

fn metric_arg(v: u32) -> FfiResult<Metric> {
    Metric::from_u32(v).ok_or_else(|| MonitorError::UnknownMetric(format!("metric number {v}")).into())
}

fn counter_arg(v: u32) -> FfiResult<Counter> {
    Counter::from_u32(v).ok_or_else(|| MonitorError::UnknownMetric(format!("counter number {v}")).into())
}

/// Writes `text` with the buffer protocol of this module.
///
/// # Safety
/// `buf` NULL or valid for `cap` bytes; `out_len` NULL (an error) or writable.
unsafe fn emit_text(text: &str, buf: *mut c_char, cap: usize, out_len: *mut usize) -> FfiResult {
    // SAFETY: forwarded contract.
    unsafe { write_out(out_len, text.len(), "out_len") }?;
    if cap <= text.len() {
        return Err(FfiError::with_code(
            ErrorCode::BufferTooSmall,
            format!("text needs {} bytes plus a NUL, buffer has {cap}", text.len()),
        ));
    }
    if buf.is_null() {
        return Err(FfiError::null("buf"));
    }
    // SAFETY: buf is valid for cap > text.len() bytes; we write text.len() + 1.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
        buf.add(text.len()).write(0);
    }
    Ok(())
}

/// Writes the stats of a state as text produced by `render`, with the module's buffer protocol.
///
/// # Safety
/// As [`emit_text`]; `state` NULL or live.
unsafe fn stats_text(
    state: *const MmsbState,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
    render: fn(&mmsb::monitoring::Stats) -> String,
) -> MmsbStatus {
    boundary(|| {
        check_out(out_len, "out_len")?;
        // SAFETY: forwarded contract.
        let s = unsafe { state_ref(state) }?;
        let text = render(&s.get_stats());
        // SAFETY: forwarded contract.
        unsafe { emit_text(&text, buf, cap, out_len) }
    })
}

/// The stats as JSON: `{"enabled", "clock", "sampling": {"every", "rule"}, "histograms":
/// {name: {count, sampled, min_ns, mean_ns, p50_ns, p90_ns, p99_ns, p999_ns, max_ns, sum_ns}},
/// "counters": {name: value}}`.
///
/// Buffer protocol (shared by `mmsb_stats_prometheus` and `mmsb_stats_table`): `*out_len`
/// always receives the text's length without the NUL. If `cap > *out_len` the text and a NUL
/// are written to `buf` and the call returns OK; otherwise it returns
/// `MMSB_STATUS_CODE_BUFFER_TOO_SMALL` and leaves `buf` untouched (`buf == NULL, cap == 0` is a
/// size query). Stats keep changing, so retry with `*out_len + 1` (or more) until OK.
///
/// # Safety
/// `state` a live handle; `buf` NULL or valid for `cap` bytes; `out_len` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_stats_json(
    state: *const MmsbState,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> MmsbStatus {
    // SAFETY: forwarded contract.
    unsafe { stats_text(state, buf, cap, out_len, |s| s.to_json()) }
}

/// The stats in Prometheus text format 0.0.4 (summaries in seconds with quantiles 0.5, 0.9,
/// 0.99, 0.999; counters with `_total`; gauges), with `mmsb_stats_json`'s buffer protocol.
///
/// # Safety
/// As `mmsb_stats_json`.
#[no_mangle]
pub unsafe extern "C" fn mmsb_stats_prometheus(
    state: *const MmsbState,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> MmsbStatus {
    // SAFETY: forwarded contract.
    unsafe { stats_text(state, buf, cap, out_len, |s| s.to_prometheus()) }
}

/// The stats as an aligned human-readable table (`print_stats`), with `mmsb_stats_json`'s
/// buffer protocol. Per latency metric: `calls`, the exact count from the counters ("-" where
/// none counts them), beside `timed`, the values behind the percentiles ("N sampled" where a
/// hot-path timer times only a sample of the calls).
///
/// # Safety
/// As `mmsb_stats_json`.
#[no_mangle]
pub unsafe extern "C" fn mmsb_stats_table(
    state: *const MmsbState,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> MmsbStatus {
    // SAFETY: forwarded contract.
    unsafe { stats_text(state, buf, cap, out_len, |s| s.to_table()) }
}

/// Fills `*out` with the summary of histogram `metric` (an `MMSB_METRIC_*` number).
///
/// # Safety
/// `state` a live handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_stats_histogram(
    state: *const MmsbState,
    metric: u32,
    out: *mut MmsbHistogramStats,
) -> MmsbStatus {
    boundary(|| {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let s = unsafe { state_ref(state) }?;
        let m = metric_arg(metric)?;
        let stats = s.get_stats();
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, MmsbHistogramStats::from(stats.histogram(m)), "out") }
    })
}

/// The value of counter `counter` (an `MMSB_COUNTER_*` number).
///
/// # Safety
/// `state` a live handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_stats_counter(state: *const MmsbState, counter: u32, out: *mut u64) -> MmsbStatus {
    boundary(|| {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let s = unsafe { state_ref(state) }?;
        let c = counter_arg(counter)?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, s.counter(c), "out") }
    })
}

/// Records a caller-measured latency of `nanos` ns into histogram `metric` (never sampled).
/// Julia's `track_delta_latency!` passes `MMSB_METRIC_DELTA_ROUTE`, `track_propagation_latency!`
/// `MMSB_METRIC_PROPAGATION_ROUND`. Budgets on the metric apply.
///
/// # Safety
/// `state` a live handle.
#[no_mangle]
pub unsafe extern "C" fn mmsb_track_latency(state: *const MmsbState, metric: u32, nanos: u64) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { state_ref(state) }?;
        s.monitor().record(metric_arg(metric)?, nanos);
        Ok(())
    })
}

/// Sets one budget: `kind` is an `MMSB_BUDGET_*` number, `metric` an `MMSB_METRIC_*` number
/// (ignored for `MMSB_BUDGET_LOG_BYTES`), `value` the limit in ns (latency) or bytes (log);
/// `value == 0` removes that budget. A metric's max and p99 limits are independent.
/// Violations bump `MMSB_COUNTER_BUDGET_VIOLATIONS` and go to the state's event sink.
///
/// # Safety
/// `state` a live handle.
#[no_mangle]
pub unsafe extern "C" fn mmsb_set_budget(state: *const MmsbState, kind: u32, metric: u32, value: u64) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { state_ref(state) }?;
        let kind = BudgetKind::from_u32(kind)
            .ok_or_else(|| FfiError::from(MonitorError::InvalidValue(format!("unknown budget kind {kind}"))))?;
        let metric = if kind == BudgetKind::LogBytes { Metric::DeltaRoute } else { metric_arg(metric)? };
        s.monitor().set_budget_limit(kind, metric, (value != 0).then_some(value));
        Ok(())
    })
}

/// Clears histograms and monotonic counters; gauges and budgets stay.
///
/// # Safety
/// `state` a live handle.
#[no_mangle]
pub unsafe extern "C" fn mmsb_stats_reset(state: *const MmsbState) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        unsafe { state_ref(state) }?.reset_stats();
        Ok(())
    })
}

/// Turns monitoring on (`enabled != 0`) or off. Off, only gauges are tracked.
///
/// # Safety
/// `state` a live handle.
#[no_mangle]
pub unsafe extern "C" fn mmsb_monitor_set_enabled(state: *const MmsbState, enabled: u8) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        unsafe { state_ref(state) }?.monitor().set_enabled(enabled != 0);
        Ok(())
    })
}

/// Hot-path latencies (delta routing) time about 1 event in `n` per thread (`n >= 1`; 1 times
/// every event). Counters always count every event.
///
/// # Safety
/// `state` a live handle.
#[no_mangle]
pub unsafe extern "C" fn mmsb_monitor_set_sample_every(state: *const MmsbState, n: u32) -> MmsbStatus {
    boundary(|| {
        if n == 0 {
            return Err(MonitorError::InvalidValue("sample_every must be at least 1".into()).into());
        }
        // SAFETY: forwarded contract.
        unsafe { state_ref(state) }?.monitor().set_sample_every(n);
        Ok(())
    })
}

/// A static, NUL-terminated name for a metric number ("unknown" when out of range).
#[no_mangle]
pub extern "C" fn mmsb_metric_name(metric: u32) -> *const c_char {
    Metric::from_u32(metric).map_or(c"unknown", Metric::c_name).as_ptr()
}

/// A static, NUL-terminated name for a counter number ("unknown" when out of range).
#[no_mangle]
pub extern "C" fn mmsb_counter_name(counter: u32) -> *const c_char {
    Counter::from_u32(counter).map_or(c"unknown", Counter::c_name).as_ptr()
}

/// Opaque running metrics endpoint (from `mmsb_metrics_serve`). Stop and free it with
/// `mmsb_metrics_stop`.
pub struct MmsbMetricsServer {
    server: MetricsServer,
}

/// Serves the state's `mmsb_stats_prometheus` text over HTTP (`GET /metrics`, Prometheus /
/// OpenMetrics text format 0.0.4) on the loopback address `addr` (`addr_len` bytes of UTF-8 such
/// as "127.0.0.1" or "::1"; NULL for 127.0.0.1) and `port` (0: the system picks a free port,
/// see `mmsb_metrics_server_port`). Off unless called. One thread answers one connection at a
/// time, reading at most 8 KiB of request with 2 s timeouts; once the state is closed it answers
/// 503. Fails with `MMSB_STATUS_CODE_INVALID_ARGUMENT` for an address that is not loopback and
/// `MMSB_STATUS_CODE_IO` when the port cannot be bound (in use, no permission).
///
/// # Safety
/// `state` a live handle; `addr` NULL or valid for `addr_len` bytes; `out_server` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_metrics_serve(
    state: *const MmsbState,
    addr: *const c_char,
    addr_len: usize,
    port: u16,
    out_server: *mut *mut MmsbMetricsServer,
) -> MmsbStatus {
    boundary(|| {
        check_out(out_server, "out_server")?;
        // SAFETY: forwarded contract (this also refuses a closed state).
        unsafe { state_ref(state) }?;
        // SAFETY: forwarded contract; checked live just above.
        let handle = unsafe { arg_ref(state, "state") }?;
        let ip = if addr.is_null() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            // SAFETY: forwarded contract.
            let text = unsafe { arg_str(addr, addr_len, "addr") }?;
            text.parse().map_err(|_| FfiError::invalid(format!("addr {text:?} is not an IP address")))?
        };
        let server = MetricsServer::start(&handle.state, ip, port)?;
        let h = crate::new_handle(MmsbMetricsServer { server });
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_server, h, "out_server") }
    })
}

/// Writes the port the endpoint listens on (the one the system picked for port 0).
///
/// # Safety
/// `server` a live handle; `out_port` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_metrics_server_port(server: *const MmsbMetricsServer, out_port: *mut u16) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { arg_ref(server, "server") }?;
        // SAFETY: forwarded contract.
        unsafe { write_out(out_port, s.server.local_addr().port(), "out_port") }
    })
}

/// Stops the endpoint (after the request in progress, if any), releases its port and frees
/// the handle. NULL is accepted. Works before or after the state is freed.
///
/// # Safety
/// `server` NULL or a handle from `mmsb_metrics_serve` not yet freed, not in use by another
/// thread.
#[no_mangle]
pub unsafe extern "C" fn mmsb_metrics_stop(server: *mut MmsbMetricsServer) {
    // SAFETY: forwarded contract; free_handle ignores stale pointers and catches panics.
    unsafe { crate::free_handle(server, "metrics server") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn constants_match_the_enums() {
        let metrics = [
            MMSB_METRIC_DELTA_ROUTE,
            MMSB_METRIC_PROPAGATION_ROUND,
            MMSB_METRIC_LOG_APPEND,
            MMSB_METRIC_FSYNC,
            MMSB_METRIC_CHECKPOINT,
            MMSB_METRIC_REPLAY,
            MMSB_METRIC_DEVICE_SYNC,
        ];
        assert_eq!(metrics.len(), MMSB_METRIC_COUNT as usize);
        assert_eq!(Metric::COUNT, MMSB_METRIC_COUNT as usize);
        for (v, m) in metrics.iter().zip(Metric::ALL) {
            assert_eq!(*v, m as u32);
        }
        let counters = [
            MMSB_COUNTER_PAGES,
            MMSB_COUNTER_BYTES_ALLOCATED,
            MMSB_COUNTER_DELTAS_ROUTED,
            MMSB_COUNTER_DELTA_BYTES,
            MMSB_COUNTER_LOG_BYTES,
            MMSB_COUNTER_LOG_SEGMENTS,
            MMSB_COUNTER_CHECKPOINTS,
            MMSB_COUNTER_EVENTS_DROPPED,
            MMSB_COUNTER_BUDGET_VIOLATIONS,
            MMSB_COUNTER_PROPAGATION_ROUNDS,
            MMSB_COUNTER_PAGES_RECOMPUTED,
            MMSB_COUNTER_REPLICA_LSN_BEHIND,
            MMSB_COUNTER_REPLICA_US_BEHIND,
            MMSB_COUNTER_REPLICA_POSITION_ERRORS,
        ];
        assert_eq!(Counter::COUNT, MMSB_COUNTER_COUNT as usize);
        for (v, c) in counters.iter().zip(Counter::ALL) {
            assert_eq!(*v, c as u32);
        }
        assert_eq!(MMSB_BUDGET_LATENCY_MAX, BudgetKind::LatencyMax as u32);
        assert_eq!(MMSB_BUDGET_LATENCY_P99, BudgetKind::LatencyP99 as u32);
        assert_eq!(MMSB_BUDGET_LOG_BYTES, BudgetKind::LogBytes as u32);
        assert_eq!(MMSB_DEFAULT_SAMPLE_EVERY, mmsb::monitoring::DEFAULT_SAMPLE_EVERY);
    }

    #[test]
    fn names_are_static_c_strings() {
        // SAFETY: the functions return static NUL-terminated strings.
        let name = |p: *const c_char| unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned();
        assert_eq!(name(mmsb_metric_name(MMSB_METRIC_FSYNC)), "fsync");
        assert_eq!(name(mmsb_metric_name(99)), "unknown");
        assert_eq!(name(mmsb_counter_name(MMSB_COUNTER_DELTA_BYTES)), "delta_bytes");
        assert_eq!(name(mmsb_counter_name(MMSB_COUNTER_COUNT)), "unknown");
    }
}
