//! Monitoring: stats correctness, budgets, sampling, exports and the C ABI.

use std::ffi::c_char;
use std::ptr;
use std::sync::{Arc, Mutex};

use mmsb::monitoring::{BudgetKind, HistogramStats};
use mmsb::{Budget, BudgetViolation, Counter, Delta, Location, MMSBState, Metric, Monitor, PageMeta};
use mmsb_ffi::state::{mmsb_state_free, mmsb_state_open, MmsbState};
use mmsb_ffi::stats::*;

/// True when `got` is within HdrHistogram's 3-significant-digit precision of `want`.
fn close_to(got: u64, want: u64) -> bool {
    got.abs_diff(want) as f64 <= want as f64 * 1e-3 + 1.0
}

fn collecting_sink(m: &Monitor) -> Arc<Mutex<Vec<BudgetViolation>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    m.set_sink(Some(Box::new(move |v| s.lock().unwrap().push(v))));
    seen
}

#[test]
fn percentiles_of_known_latencies() {
    let m = Monitor::new();
    for ns in 1..=100_000u64 {
        m.record(Metric::LogAppend, ns);
    }
    let s = m.snapshot();
    let h: &HistogramStats = s.histogram(Metric::LogAppend);
    assert_eq!(h.count, 100_000);
    assert_eq!(h.sampled, 0, "explicit records are never sampled");
    assert_eq!(h.min_ns, 1);
    assert!(close_to(h.max_ns, 100_000), "max {}", h.max_ns);
    assert!(close_to(h.p50_ns, 50_000), "p50 {}", h.p50_ns);
    assert!(close_to(h.p90_ns, 90_000), "p90 {}", h.p90_ns);
    assert!(close_to(h.p99_ns, 99_000), "p99 {}", h.p99_ns);
    assert!(close_to(h.p999_ns, 99_900), "p999 {}", h.p999_ns);
    assert!((h.mean_ns - 50_000.5).abs() <= 50.0, "mean {}", h.mean_ns);
    assert_eq!(h.sum_ns, 100_000 * 100_001 / 2);
    // Other histograms are untouched.
    assert_eq!(s.histogram(Metric::Fsync).count, 0);
}

#[test]
fn user_side_tracking_goes_to_the_shared_histograms() {
    let state = MMSBState::in_memory();
    state.track_delta_latency(1_000);
    state.track_delta_latency(3_000);
    state.track_propagation_latency(7_000);
    let s = state.get_stats();
    let d = s.histogram(Metric::DeltaRoute);
    assert_eq!((d.count, d.min_ns), (2, 1_000));
    assert!(close_to(d.max_ns, 3_000), "{}", d.max_ns);
    let p = s.histogram(Metric::PropagationRound);
    assert_eq!((p.count, p.min_ns), (1, 7_000));
}

#[test]
fn counters_are_exact_and_gauges_go_down() {
    let state = MMSBState::in_memory();
    let a = state.create_page(4096, Location::Cpu, PageMeta::default()).unwrap();
    let b = state.create_page(10_000, Location::Cpu, PageMeta::default()).unwrap();
    let cap_a = state.page_info(a).unwrap().capacity;
    let cap_b = state.page_info(b).unwrap().capacity;
    let m = state.monitor();
    assert_eq!(m.counter(Counter::Pages), 2);
    assert_eq!(m.counter(Counter::BytesAllocated), cap_a + cap_b);

    let d = Delta::write(100, &[7u8; 64]).unwrap();
    for _ in 0..1000 {
        state.route_delta(a, &d, None).unwrap();
    }
    let dense = Delta::dense(0, &[0b1010_0101], &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    state.route_delta(b, &dense, None).unwrap();
    // An update that changes 3 bytes carries 3 bytes.
    state.update_page_at(b, 50, &[9, 9, 9], None).unwrap();
    // A rejected delta counts nothing.
    assert!(state.route_delta(a, &Delta::write(4096, &[1]).unwrap(), None).is_err());
    assert_eq!(state.counter(Counter::DeltasRouted), 1002);
    // The dense delta carries its 8-byte span, though its mask writes 4 of them.
    assert_eq!(state.counter(Counter::DeltaBytes), 1000 * 64 + 8 + 3);

    state.free_page(a).unwrap();
    assert_eq!(m.counter(Counter::Pages), 1);
    assert_eq!(m.counter(Counter::BytesAllocated), cap_b);

    state.reset_stats();
    assert_eq!(state.counter(Counter::DeltasRouted), 0);
    assert_eq!(m.counter(Counter::Pages), 1, "reset keeps gauges");
    state.close();
    assert_eq!(m.counter(Counter::Pages), 0);
    assert_eq!(m.counter(Counter::BytesAllocated), 0);
}

#[test]
fn concurrent_routes_are_counted_exactly() {
    let state = Arc::new(MMSBState::in_memory());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let st = state.clone();
            std::thread::spawn(move || {
                let p = st.create_page(256, Location::Cpu, PageMeta::default()).unwrap();
                let d = Delta::write(0, &[1u8; 8]).unwrap();
                for _ in 0..2_000 {
                    st.route_delta(p, &d, None).unwrap();
                    st.monitor().incr(Counter::PagesRecomputed, 1);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let m = state.monitor();
    assert_eq!(state.counter(Counter::DeltasRouted), 8_000);
    assert_eq!(state.counter(Counter::DeltaBytes), 64_000);
    assert_eq!(m.counter(Counter::PagesRecomputed), 8_000);
}

#[test]
fn route_latency_is_sampled_and_counted_in_full() {
    let state = MMSBState::in_memory();
    state.monitor().set_sample_every(64);
    let p = state.create_page(4096, Location::Cpu, PageMeta::default()).unwrap();
    let d = Delta::write(0, &[1u8; 64]).unwrap();
    let n = 64_000;
    for _ in 0..n {
        state.route_delta(p, &d, None).unwrap();
    }
    let s = state.get_stats();
    assert_eq!(s.sample_every, 64);
    assert_eq!(s.counter(Counter::DeltasRouted), n);
    let h = s.histogram(Metric::DeltaRoute);
    // About n / 64 = 1000 samples; the pseudo-random skips give some spread.
    assert!((800..=1200).contains(&h.count), "{} samples", h.count);
    assert_eq!(h.sampled, h.count);
    assert!(h.min_ns > 0 && h.max_ns >= h.p50_ns);

    state.monitor().set_sample_every(1);
    state.reset_stats();
    for _ in 0..100 {
        state.route_delta(p, &d, None).unwrap();
    }
    assert_eq!(state.get_stats().histogram(Metric::DeltaRoute).count, 100);
}

#[test]
fn disabled_monitor_costs_nothing_and_records_nothing() {
    let state = MMSBState::in_memory();
    state.monitor().set_enabled(false);
    let p = state.create_page(64, Location::Cpu, PageMeta::default()).unwrap();
    state.route_delta(p, &Delta::write(0, &[1]).unwrap(), None).unwrap();
    let s = state.get_stats();
    assert_eq!(s.counter(Counter::DeltasRouted), 0);
    assert_eq!(s.histogram(Metric::DeltaRoute).count, 0);
    assert_eq!(s.counter(Counter::Pages), 1, "gauges are kept while disabled");
}

#[test]
fn max_budget_fires_above_the_limit_only() {
    let m = Monitor::new();
    let seen = collecting_sink(&m);
    m.set_budget(Budget::Latency { metric: Metric::Fsync, p99_ns: None, max_ns: Some(1_000_000) });
    m.record(Metric::Fsync, 999_999);
    m.record(Metric::Fsync, 1_000_000);
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(m.counter(Counter::BudgetViolations), 0);
    m.record(Metric::Fsync, 1_500_000);
    let v = seen.lock().unwrap().clone();
    assert_eq!(
        v,
        vec![BudgetViolation {
            kind: BudgetKind::LatencyMax,
            metric: Some(Metric::Fsync),
            observed: 1_500_000,
            limit: 1_000_000
        }]
    );
    assert_eq!(m.counter(Counter::BudgetViolations), 1);
    // Removing the budget stops the checks; the counter survives.
    m.set_budget(Budget::Latency { metric: Metric::Fsync, p99_ns: None, max_ns: None });
    m.record(Metric::Fsync, 9_000_000);
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(m.counter(Counter::BudgetViolations), 1);
}

#[test]
fn p99_budget_fires_when_the_tail_crosses() {
    let m = Monitor::new();
    let seen = collecting_sink(&m);
    for _ in 0..1000 {
        m.record(Metric::Checkpoint, 100);
    }
    // Set after some history: the budget counts what is already recorded.
    m.set_budget(Budget::Latency { metric: Metric::Checkpoint, p99_ns: Some(500), max_ns: None });
    // 10 slow values out of 1010 (< 1%) leave the p99 at 100.
    for _ in 0..10 {
        m.record(Metric::Checkpoint, 10_000);
    }
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(m.snapshot().histogram(Metric::Checkpoint).p99_ns, 100);
    // The 11th makes it 11 of 1011 (> 1%): the p99 crosses, once.
    for _ in 0..20 {
        m.record(Metric::Checkpoint, 10_000);
    }
    let v = seen.lock().unwrap().clone();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].kind, BudgetKind::LatencyP99);
    assert_eq!(v[0].limit, 500);
    assert!(close_to(v[0].observed, 10_000), "{}", v[0].observed);
    assert!(m.snapshot().histogram(Metric::Checkpoint).p99_ns > 500);
    // Fast values bring the p99 back under; the next crossing fires again.
    for _ in 0..3000 {
        m.record(Metric::Checkpoint, 100);
    }
    assert!(m.snapshot().histogram(Metric::Checkpoint).p99_ns <= 500);
    assert_eq!(seen.lock().unwrap().len(), 1);
    for _ in 0..100 {
        m.record(Metric::Checkpoint, 10_000);
    }
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!(m.counter(Counter::BudgetViolations), 2);
}

#[test]
fn route_budget_times_every_event_and_the_sink_may_use_the_state() {
    let state = Arc::new(MMSBState::in_memory());
    state.monitor().set_sample_every(1_000_000);
    let weak = Arc::downgrade(&state);
    let lsns = Arc::new(Mutex::new(Vec::new()));
    let l = lsns.clone();
    // The sink reads the state: this would deadlock if it ran under the state's lock.
    state.monitor().set_sink(Some(Box::new(move |_| {
        if let Some(st) = weak.upgrade() {
            l.lock().unwrap().push(st.lsn());
        }
    })));
    state.set_budget(Budget::Latency { metric: Metric::DeltaRoute, p99_ns: None, max_ns: Some(1) });
    let p = state.create_page(64, Location::Cpu, PageMeta::default()).unwrap();
    for _ in 0..10 {
        state.route_delta(p, &Delta::write(0, &[1, 2]).unwrap(), None).unwrap();
    }
    // Every route takes more than 1 ns, and with a budget every route is timed.
    assert_eq!(lsns.lock().unwrap().len(), 10);
    assert_eq!(state.monitor().counter(Counter::BudgetViolations), 10);
    assert_eq!(state.get_stats().histogram(Metric::DeltaRoute).count, 10);
}

#[test]
fn log_bytes_budget() {
    let m = Monitor::new();
    let seen = collecting_sink(&m);
    m.set_budget(Budget::LogBytes(Some(1 << 20)));
    m.add(Counter::LogBytes, 1 << 19);
    m.add(Counter::LogBytes, 1 << 19);
    assert!(seen.lock().unwrap().is_empty());
    m.add(Counter::LogBytes, 1);
    assert_eq!(seen.lock().unwrap()[0].kind, BudgetKind::LogBytes);
    assert_eq!(seen.lock().unwrap()[0].observed, (1 << 20) + 1);
}

#[test]
fn concurrent_routes_snapshots_resets_and_budgets_do_not_deadlock() {
    let state = Arc::new(MMSBState::in_memory());
    state.monitor().set_sample_every(4);
    let weak = Arc::downgrade(&state);
    // A sink that reads the state and records into the monitor, from whichever thread fires.
    state.monitor().set_sink(Some(Box::new(move |_| {
        if let Some(st) = weak.upgrade() {
            let _ = st.lsn();
            st.monitor().record(Metric::Replay, 1);
        }
    })));
    state.set_budget(Budget::Latency { metric: Metric::DeltaRoute, p99_ns: Some(1), max_ns: Some(1) });
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let routers: Vec<_> = (0..3)
        .map(|_| {
            let st = state.clone();
            std::thread::spawn(move || {
                let p = st.create_page(128, Location::Cpu, PageMeta::default()).unwrap();
                for i in 0..3_000u64 {
                    st.route_delta(p, &Delta::write(i % 64, &[1, 2, 3]).unwrap(), None).unwrap();
                }
            })
        })
        .collect();
    let st = state.clone();
    let s2 = stop.clone();
    let observer = std::thread::spawn(move || {
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = st.get_stats().to_json();
            st.reset_stats();
            st.set_budget(Budget::LogBytes(Some(10)));
            st.monitor().add(Counter::LogBytes, 11);
            st.monitor().sub(Counter::LogBytes, 11);
        }
    });
    for r in routers {
        r.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    observer.join().unwrap();
    state.monitor().set_sink(None);
    assert_eq!(state.monitor().counter(Counter::Pages), 3);
    assert_eq!(state.monitor().counter(Counter::LogBytes), 0);
}

/// Runs in a child process with `MMSB_CLOCK=instant` (the clock is chosen once per process).
#[test]
#[ignore = "run by portable_clock_fallback in a child process"]
fn portable_clock_child() {
    assert_eq!(std::env::var("MMSB_CLOCK").as_deref(), Ok("instant"));
    let m = Monitor::new();
    assert_eq!(m.clock_kind(), mmsb::monitoring::ClockKind::Instant);
    let t = m.start(Metric::Fsync);
    std::thread::sleep(std::time::Duration::from_millis(5));
    let ns = t.stop(&m).unwrap();
    assert!((5_000_000..2_000_000_000).contains(&ns), "{ns}");
    assert_eq!(m.snapshot().clock, mmsb::monitoring::ClockKind::Instant);
}

#[test]
fn portable_clock_fallback() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "portable_clock_child", "--ignored", "--test-threads=1"])
        .env("MMSB_CLOCK", "instant")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("1 passed"), "{text}{}", String::from_utf8_lossy(&out.stderr));
}

fn busy_state() -> MMSBState {
    let state = MMSBState::in_memory();
    let p = state.create_page(4096, Location::Cpu, PageMeta::default()).unwrap();
    state.route_delta(p, &Delta::write(0, &[1u8; 64]).unwrap(), None).unwrap();
    for (i, m) in Metric::ALL.iter().enumerate() {
        state.monitor().record(*m, 1_000 * (i as u64 + 1));
        state.monitor().record(*m, 2_000_000 * (i as u64 + 1));
    }
    state
}

#[test]
fn json_is_parseable_and_complete() {
    let state = busy_state();
    let json: serde_json::Value = serde_json::from_str(&state.get_stats().to_json()).unwrap();
    assert_eq!(json["enabled"], true);
    assert_eq!(json["sampling"]["every"], mmsb::monitoring::DEFAULT_SAMPLE_EVERY);
    assert!(json["sampling"]["rule"].as_str().unwrap().contains("1 event in"));
    for m in Metric::ALL {
        let h = &json["histograms"][m.name()];
        for k in ["count", "sampled", "min_ns", "mean_ns", "p50_ns", "p90_ns", "p99_ns", "p999_ns", "max_ns", "sum_ns"]
        {
            assert!(h[k].is_number(), "{}.{k} missing in {h}", m.name());
        }
        assert!(h["count"].as_u64().unwrap() >= 2);
    }
    for c in Counter::ALL {
        assert!(json["counters"][c.name()].is_u64(), "counter {} missing", c.name());
    }
    assert_eq!(json["counters"]["deltas_routed"], 1);
    assert_eq!(json["counters"]["delta_bytes"], 64);
}

/// One parsed sample: metric name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// A small parser of the Prometheus text format 0.0.4: returns (name, labels, value) samples,
/// and fails on any line that is neither a comment nor `name{labels} value`, or on a sample
/// whose family has no HELP and TYPE before it.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut helped = std::collections::HashSet::new();
    let mut typed = std::collections::HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(rest.len() > name.len() + 1, "empty HELP: {line}");
            helped.insert(name.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (name, ty) = (it.next().unwrap(), it.next().unwrap());
            assert!(["counter", "gauge", "summary", "histogram", "untyped"].contains(&ty), "{line}");
            assert!(helped.contains(name), "TYPE before HELP: {line}");
            typed.insert(name.to_string(), ty.to_string());
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "unexpected line {line:?}");
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => {
                let l = l.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let labels = l
                    .split(',')
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap();
                        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap();
                        (k.to_string(), v.to_string())
                    })
                    .collect();
                (n, labels)
            }
            None => (series, Vec::new()),
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name {name}"
        );
        let family = typed
            .keys()
            .filter(|f| name == f.as_str() || name == format!("{f}_sum") || name == format!("{f}_count"))
            .max_by_key(|f| f.len())
            .unwrap_or_else(|| panic!("sample before its HELP/TYPE: {line}"));
        if typed[family] == "counter" {
            assert!(name.ends_with("_total"), "counter without _total: {name}");
        }
        samples.push((name.to_string(), labels, value));
    }
    samples
}

#[test]
fn prometheus_text_parses() {
    let state = busy_state();
    let text = state.get_stats().to_prometheus();
    let samples = parse_prometheus(&text);
    let stats = state.get_stats();
    for m in Metric::ALL {
        let base = format!("mmsb_{}_duration_seconds", m.name());
        let quantiles: Vec<_> =
            samples.iter().filter(|(n, l, _)| *n == base && l.iter().any(|(k, _)| k == "quantile")).collect();
        assert_eq!(quantiles.len(), 4, "{base}");
        let count = samples.iter().find(|(n, _, _)| *n == format!("{base}_count")).unwrap().2;
        assert_eq!(count, stats.histogram(m).count as f64, "{base}");
        assert!(samples.iter().any(|(n, _, _)| *n == format!("{base}_sum")));
    }
    let routed = samples.iter().find(|(n, _, _)| n == "mmsb_deltas_routed_total").unwrap();
    assert_eq!(routed.2, 1.0);
    assert!(samples.iter().any(|(n, _, v)| n == "mmsb_pages" && *v == 1.0));
    // The p50 of fsync (4 µs and 8 ms recorded) is reported in seconds.
    let p50 =
        samples.iter().find(|(n, l, _)| n == "mmsb_fsync_duration_seconds" && l[0].1 == "0.5").map(|s| s.2).unwrap();
    assert!((p50 - 4e-6).abs() < 1e-8, "{p50}");
}

#[test]
fn table_is_aligned() {
    let state = busy_state();
    state.monitor().record(Metric::Replay, 123_456_789_012);
    let table = state.stats_table();
    let widths: Vec<usize> = table.lines().map(|l| l.chars().count()).collect();
    assert!(widths.len() >= 2 + Metric::COUNT + Counter::COUNT, "{table}");
    assert!(widths.iter().all(|&w| w == widths[0]), "ragged table:\n{table}");
    for m in Metric::ALL {
        assert!(table.lines().any(|l| l.starts_with(m.name())), "{} missing:\n{table}", m.name());
    }
    for c in Counter::ALL {
        assert!(table.lines().any(|l| l.split_whitespace().next() == Some(c.name())), "{}", c.name());
    }
}

#[test]
fn table_shows_sampled_counts_beside_the_exact_ones() {
    let state = MMSBState::in_memory();
    let p = state.create_page(64, Location::Cpu, PageMeta::default()).unwrap();
    for i in 0..500u32 {
        state.route_delta(p, &Delta::write(0, &i.to_le_bytes()).unwrap(), None).unwrap();
    }
    let stats = state.get_stats();
    let h = stats.histograms.iter().find(|h| h.metric == Metric::DeltaRoute).unwrap();
    assert!(h.sampled > 0 && h.count < 500, "delta_route is sampled: {h:?}");
    let table = state.stats_table();
    let header = table.lines().nth(1).unwrap();
    assert_eq!(header.split_whitespace().take(3).collect::<Vec<_>>(), ["latency", "calls", "timed"], "{table}");
    let row: Vec<&str> = table.lines().find(|l| l.starts_with("delta_route")).unwrap().split_whitespace().collect();
    assert_eq!(row[1], stats.counter(Counter::DeltasRouted).to_string(), "the exact count: {table}");
    assert_eq!(row[1], "500");
    assert_eq!((row[2], row[3]), (h.count.to_string().as_str(), "sampled"), "{table}");
    // Nothing timed yet: no durations, not durations of 0.
    let replay: Vec<&str> = table.lines().find(|l| l.starts_with("replay")).unwrap().split_whitespace().collect();
    assert_eq!(replay[1..], ["-", "0", "-", "-", "-", "-", "-", "-", "-"], "{table}");
    // A metric timed on every call says so by saying nothing; one without a counter shows "-".
    state.monitor().record(Metric::Fsync, 1_000);
    let table = state.stats_table();
    let fsync: Vec<&str> = table.lines().find(|l| l.starts_with("fsync")).unwrap().split_whitespace().collect();
    assert_eq!(&fsync[..3], ["fsync", "-", "1"], "{table}");
    assert_ne!(fsync[3], "sampled");
    assert!(table.contains("\"sampled\": a sample of the calls"), "{table}");
}

// ---- C ABI ----

struct Handle(*mut MmsbState);

impl Handle {
    fn open() -> Handle {
        let mut h = ptr::null_mut();
        // SAFETY: NULL config means defaults; `h` is a valid out-pointer.
        assert_eq!(unsafe { mmsb_state_open(ptr::null(), &mut h) }, 0);
        Handle(h)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from mmsb_state_open and is freed once.
        unsafe { mmsb_state_free(self.0) };
    }
}

type TextFn = unsafe extern "C" fn(*const MmsbState, *mut c_char, usize, *mut usize) -> u32;

/// Drives the buffer protocol the way a wrapper does: size query, then retry until OK.
fn fetch_text(h: &Handle, f: TextFn) -> String {
    let mut len = 0usize;
    // SAFETY: NULL buffer with cap 0 is a size query; `len` is writable.
    let st = unsafe { f(h.0, ptr::null_mut(), 0, &mut len) };
    assert_eq!(st, 18, "size query returns BUFFER_TOO_SMALL");
    assert!(len > 0);
    loop {
        let mut buf = vec![0u8; len + 1];
        let cap = buf.len();
        // SAFETY: buf is valid for cap bytes.
        let st = unsafe { f(h.0, buf.as_mut_ptr().cast(), cap, &mut len) };
        if st == 0 {
            assert_eq!(buf[len], 0, "NUL-terminated");
            buf.truncate(len);
            return String::from_utf8(buf).unwrap();
        }
        assert_eq!(st, 18);
    }
}

#[test]
fn c_abi_exports_and_queries() {
    let h = Handle::open();
    // SAFETY: live handle throughout; out-pointers are valid locals.
    unsafe {
        assert_eq!(mmsb_track_latency(h.0, MMSB_METRIC_FSYNC, 5_000), 0);
        assert_eq!(mmsb_track_latency(h.0, MMSB_METRIC_FSYNC, 7_000), 0);
        assert_eq!(mmsb_track_latency(h.0, 99, 1), 1, "unknown metric is an invalid argument");

        let mut hs = MmsbHistogramStats::default();
        assert_eq!(mmsb_stats_histogram(h.0, MMSB_METRIC_FSYNC, &mut hs), 0);
        assert_eq!((hs.count, hs.min_ns, hs.sum_ns), (2, 5_000, 12_000));
        assert!(close_to(hs.max_ns, 7_000));
        assert_eq!(mmsb_stats_histogram(h.0, MMSB_METRIC_FSYNC, ptr::null_mut()), 2);

        // A max budget of 6 µs: the next 7 µs value violates it; 0 removes it.
        assert_eq!(mmsb_set_budget(h.0, MMSB_BUDGET_LATENCY_MAX, MMSB_METRIC_FSYNC, 6_000), 0);
        assert_eq!(mmsb_track_latency(h.0, MMSB_METRIC_FSYNC, 7_000), 0);
        let mut v = 0u64;
        assert_eq!(mmsb_stats_counter(h.0, MMSB_COUNTER_BUDGET_VIOLATIONS, &mut v), 0);
        assert_eq!(v, 1);
        assert_eq!(mmsb_set_budget(h.0, MMSB_BUDGET_LATENCY_MAX, MMSB_METRIC_FSYNC, 0), 0);
        assert_eq!(mmsb_track_latency(h.0, MMSB_METRIC_FSYNC, 7_000), 0);
        assert_eq!(mmsb_stats_counter(h.0, MMSB_COUNTER_BUDGET_VIOLATIONS, &mut v), 0);
        assert_eq!(v, 1);
        assert_eq!(mmsb_set_budget(h.0, 7, 0, 1), 1, "unknown budget kind");
        assert_eq!(mmsb_set_budget(h.0, MMSB_BUDGET_LOG_BYTES, 12345, 100), 0, "metric ignored for log bytes");
        assert_eq!(mmsb_stats_counter(h.0, MMSB_COUNTER_COUNT, &mut v), 1);

        let json = fetch_text(&h, mmsb_stats_json);
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["histograms"]["fsync"]["count"], 4);
        assert!(parse_prometheus(&fetch_text(&h, mmsb_stats_prometheus)).len() > 20);
        assert!(fetch_text(&h, mmsb_stats_table).contains("fsync"));

        // A buffer one byte short: BUFFER_TOO_SMALL, the length still reported, nothing written.
        let mut len = 0usize;
        mmsb_stats_table(h.0, ptr::null_mut(), 0, &mut len);
        let mut buf = vec![0xAAu8; len];
        assert_eq!(mmsb_stats_table(h.0, buf.as_mut_ptr().cast(), len, &mut len), 18);
        assert_eq!(len, buf.len());
        assert!(buf.iter().all(|&b| b == 0xAA));
        assert_eq!(mmsb_stats_json(h.0, ptr::null_mut(), 0, ptr::null_mut()), 2, "NULL out_len");

        assert_eq!(mmsb_monitor_set_sample_every(h.0, 0), 1);
        assert_eq!(mmsb_monitor_set_sample_every(h.0, 8), 0);
        assert_eq!(mmsb_monitor_set_enabled(h.0, 0), 0);
        assert_eq!(mmsb_track_latency(h.0, MMSB_METRIC_FSYNC, 1), 0);
        assert_eq!(mmsb_monitor_set_enabled(h.0, 1), 0);
        assert_eq!(mmsb_stats_histogram(h.0, MMSB_METRIC_FSYNC, &mut hs), 0);
        assert_eq!(hs.count, 4, "nothing recorded while disabled");

        assert_eq!(mmsb_stats_reset(h.0), 0);
        assert_eq!(mmsb_stats_histogram(h.0, MMSB_METRIC_FSYNC, &mut hs), 0);
        assert_eq!(hs, MmsbHistogramStats::default());
        assert_eq!(mmsb_stats_reset(ptr::null()), 2);
    }
}
