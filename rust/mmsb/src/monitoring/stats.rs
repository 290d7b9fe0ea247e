//! Snapshots of a [`Monitor`](super::Monitor) and their exports: JSON, Prometheus text and an
//! aligned table.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::{ClockKind, Counter, Metric};

/// The sampling rule, as stated in every export (JSON `sampling.rule`).
pub const SAMPLING_RULE: &str = "counters count every event; hot-path latencies (delta_route) time about 1 event in \
     sample_every, at pseudo-random intervals, except metrics with a latency budget, which are timed on \
     every event; explicit records (track_*, exact timers) are never sampled";

/// Summary of one latency histogram, in nanoseconds. Percentiles are HdrHistogram's (3
/// significant digits: each is within 0.1% of the true value).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HistogramStats {
    #[serde(skip)]
    /// The metric summarised.
    pub metric: Metric,
    /// Values recorded.
    pub count: u64,
    /// Of `count`, values from sampled hot-path timers (each stands for about `sample_every`
    /// events).
    pub sampled: u64,
    /// Smallest value.
    pub min_ns: u64,
    /// Mean value.
    pub mean_ns: f64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Largest value.
    pub max_ns: u64,
    /// Exact sum of the recorded values.
    pub sum_ns: u64,
}

impl HistogramStats {
    pub(crate) fn from_hist(metric: Metric, h: &Histogram<u64>, sampled: u64, sum_ns: u64) -> HistogramStats {
        if h.is_empty() {
            return HistogramStats {
                metric,
                count: 0,
                sampled: 0,
                min_ns: 0,
                mean_ns: 0.0,
                p50_ns: 0,
                p90_ns: 0,
                p99_ns: 0,
                p999_ns: 0,
                max_ns: 0,
                sum_ns: 0,
            };
        }
        HistogramStats {
            metric,
            count: h.len(),
            sampled,
            min_ns: h.min(),
            mean_ns: h.mean(),
            p50_ns: h.value_at_quantile(0.5),
            p90_ns: h.value_at_quantile(0.9),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
            sum_ns,
        }
    }
}

/// A snapshot of a monitor: every histogram and counter, and the sampling rule in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Whether the monitor records at all.
    pub enabled: bool,
    /// Hot-path timers time about 1 event in this many (see the module docs).
    pub sample_every: u32,
    /// The clock the timers read.
    pub clock: ClockKind,
    /// Indexed by `Metric as usize`.
    pub histograms: [HistogramStats; Metric::COUNT],
    /// Indexed by `Counter as usize`.
    pub counters: [u64; Counter::COUNT],
}

impl Serialize for Stats {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Hand-written so keys keep the enums' order (serde_json's Map would sort them).
        struct Named<'a, K, V>(&'a [K], &'a [V], fn(&K) -> &'static str);
        impl<K, V: Serialize> Serialize for Named<'_, K, V> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.len()))?;
                for (k, v) in self.0.iter().zip(self.1) {
                    m.serialize_entry((self.2)(k), v)?;
                }
                m.end()
            }
        }
        #[derive(Serialize)]
        struct Sampling {
            every: u32,
            rule: &'static str,
        }
        let mut m = s.serialize_map(Some(5))?;
        m.serialize_entry("enabled", &self.enabled)?;
        m.serialize_entry("clock", &self.clock)?;
        m.serialize_entry("sampling", &Sampling { every: self.sample_every, rule: SAMPLING_RULE })?;
        m.serialize_entry("histograms", &Named(&Metric::ALL, &self.histograms, |m| m.name()))?;
        m.serialize_entry("counters", &Named(&Counter::ALL, &self.counters, |c| c.name()))?;
        m.end()
    }
}

impl Stats {
    /// The summary of one histogram.
    pub fn histogram(&self, metric: Metric) -> &HistogramStats {
        &self.histograms[metric as usize]
    }

    /// The value of one counter or gauge.
    pub fn counter(&self, counter: Counter) -> u64 {
        self.counters[counter as usize]
    }

    /// JSON: `{"enabled", "clock", "sampling": {"every", "rule"}, "histograms": {name: {count,
    /// sampled, min_ns, mean_ns, p50_ns, p90_ns, p99_ns, p999_ns, max_ns, sum_ns}}, "counters":
    /// {name: value}}`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("stats hold only numbers and static strings")
    }

    /// Prometheus text exposition format 0.0.4: one summary per metric (seconds, quantiles 0.5,
    /// 0.9, 0.99, 0.999, with `_sum` and `_count`), a counter (`_total`) or gauge per counter,
    /// and the sampling rate as a gauge.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let secs = |ns: u64| ns as f64 / 1e9;
        for h in &self.histograms {
            let name = format!("mmsb_{}_duration_seconds", h.metric.name());
            let _ = writeln!(out, "# HELP {name} {} (seconds).", h.metric.help());
            let _ = writeln!(out, "# TYPE {name} summary");
            for (q, v) in [("0.5", h.p50_ns), ("0.9", h.p90_ns), ("0.99", h.p99_ns), ("0.999", h.p999_ns)] {
                let _ = writeln!(out, "{name}{{quantile=\"{q}\"}} {}", secs(v));
            }
            let _ = writeln!(out, "{name}_sum {}", secs(h.sum_ns));
            let _ = writeln!(out, "{name}_count {}", h.count);
        }
        for c in Counter::ALL {
            let (name, kind) = if c.is_gauge() {
                (format!("mmsb_{}", c.name()), "gauge")
            } else {
                (format!("mmsb_{}_total", c.name()), "counter")
            };
            let _ = writeln!(out, "# HELP {name} {}.", c.help());
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", self.counter(c));
        }
        let name = "mmsb_monitor_sample_every";
        let _ = writeln!(out, "# HELP {name} Hot-path latencies time about 1 event in this many.");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {}", self.sample_every);
        out
    }

    /// A human-readable table (what `print_stats` shows). Every line has the same width.
    ///
    /// A latency row shows `calls`, the exact number of calls from the counters where one
    /// counts them, beside `timed`, the values behind the percentiles, marked "sampled" where
    /// a hot-path timer times only a sample of the calls: a sampled `delta_route` of 1 beside
    /// 9 calls is then read as what it is.
    pub fn to_table(&self) -> String {
        const NAME_W: usize = 18;
        const NUM_W: usize = 10;
        const TIMED_W: usize = 16;
        let heads = ["min", "mean", "p50", "p90", "p99", "p99.9", "max"];
        let width = NAME_W + NUM_W + TIMED_W + NUM_W * heads.len();
        let mut out = String::new();
        let line = |out: &mut String, s: String| {
            debug_assert_eq!(s.chars().count(), width);
            out.push_str(&s);
            out.push('\n');
        };
        let title = format!(
            " MMSB stats ({}, clock {}, delta_route sampled 1/{}) ",
            if self.enabled { "enabled" } else { "disabled" },
            self.clock.name(),
            self.sample_every
        );
        line(&mut out, format!("{title:=^width$}"));
        let mut header = format!("{:<NAME_W$}{:>NUM_W$}{:>TIMED_W$}", "latency", "calls", "timed");
        for h in heads {
            let _ = write!(header, "{h:>NUM_W$}");
        }
        line(&mut out, header);
        line(&mut out, "-".repeat(width));
        for h in &self.histograms {
            let calls = exact_counter(h.metric).map_or_else(|| "-".to_string(), |c| self.counter(c).to_string());
            let timed = if h.sampled > 0 { format!("{} sampled", h.count) } else { h.count.to_string() };
            let mut row = format!("{:<NAME_W$}{calls:>NUM_W$}{timed:>TIMED_W$}", h.metric.name());
            #[allow(clippy::cast_possible_truncation, reason = "display only; a float-to-int `as` saturates")]
            let mean = h.mean_ns.round() as u64;
            for v in [h.min_ns, mean, h.p50_ns, h.p90_ns, h.p99_ns, h.p999_ns, h.max_ns] {
                // Nothing timed: no duration to show (not a duration of 0).
                let v = if h.count == 0 { "-".to_string() } else { fmt_ns(v) };
                let _ = write!(row, "{v:>NUM_W$}");
            }
            line(&mut out, row);
        }
        let note = "calls: exact, from the counters; timed: values behind the percentiles (\"sampled\": a sample of the calls)";
        line(&mut out, format!("{:<width$.width$}", note));
        line(&mut out, "-".repeat(width));
        let value_w = width - NAME_W;
        for c in Counter::ALL {
            line(&mut out, format!("{:<NAME_W$}{:>value_w$}", c.name(), self.counter(c)));
        }
        out
    }
}

/// The counter that counts every call a latency metric times (some of): the table shows it
/// beside a sampled count. The same pairs as the Julia `Stats` display.
fn exact_counter(metric: Metric) -> Option<Counter> {
    match metric {
        Metric::DeltaRoute => Some(Counter::DeltasRouted),
        Metric::PropagationRound => Some(Counter::PropagationRounds),
        Metric::Checkpoint => Some(Counter::Checkpoints),
        _ => None,
    }
}

/// `1234` → `"1.23us"`; at most 9 characters, ASCII only so widths line up.
fn fmt_ns(ns: u64) -> String {
    let v = ns as f64;
    match ns {
        0..=999 => format!("{ns}ns"),
        1_000..=999_999 => format!("{:.2}us", v / 1e3),
        1_000_000..=999_999_999 => format!("{:.2}ms", v / 1e6),
        _ if v < 1e14 => format!("{:.2}s", v / 1e9),
        _ => ">1e5s".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_format_short() {
        assert_eq!(fmt_ns(0), "0ns");
        assert_eq!(fmt_ns(999), "999ns");
        assert_eq!(fmt_ns(1_234), "1.23us");
        assert_eq!(fmt_ns(12_345_678), "12.35ms");
        assert_eq!(fmt_ns(3_000_000_000), "3.00s");
        assert!(fmt_ns(u64::MAX).len() <= 9);
        assert!(fmt_ns(999_999_999_999_999).len() <= 9);
    }
}
