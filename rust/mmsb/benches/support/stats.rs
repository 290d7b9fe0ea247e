//! Small figures the benches compute from their own samples and from criterion's output, shared
//! by `pagefiles.rs` and `tlog.rs` (each includes this file with `#[path]`).

use std::path::{Path, PathBuf};

/// The `x` quantile (0 ..= 1) of `v`, nearest rank below; sorts `v`.
#[allow(dead_code)] // each bench includes this file; not every bench uses every helper
pub fn quantile(v: &mut [f64], x: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * x) as usize]
}

/// Mean time per iteration of a finished benchmark, from criterion's estimates.
#[allow(dead_code)] // each bench includes this file; not every bench uses every helper
pub fn mean_ns(group: &str, bench: &str) -> Option<f64> {
    let root = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let path = root.join("criterion").join(group).join(bench).join("new/estimates.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

/// `mean(a) / mean(b)` of two finished benchmarks of `group`, formatted, or "n/a" when either
/// has no estimate: a time ratio (a throughput ratio with `a` and `b` swapped).
#[allow(dead_code)] // each bench includes this file; not every bench uses every helper
pub fn time_ratio(group: &str, a: &str, b: &str) -> String {
    match (mean_ns(group, a), mean_ns(group, b)) {
        (Some(x), Some(y)) => format!("{:.2}", x / y),
        _ => "n/a".into(),
    }
}
