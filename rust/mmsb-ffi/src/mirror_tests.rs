//! Each `#[repr(C)]` mirror against its Rust original: every mirrored field lands in its own C
//! field (distinct values, so a swapped or dropped field fails). New fields in an original are
//! caught earlier, at compile time, by the exhaustive destructuring in each conversion.

use mmsb::device::DeviceStats;
use mmsb::graph::propagation::RoundStats;
use mmsb::monitoring::HistogramStats;
use mmsb::types::error::ErrorCode;
use mmsb::{Location, LogInfo, Metric, PageId, PageInfo};

use crate::device::MmsbDeviceStats;
use crate::graph::MmsbRoundStats;
use crate::log::MmsbLogInfo;
use crate::page::MmsbPageInfo;
use crate::stats::MmsbHistogramStats;

#[test]
fn page_info_mirror() {
    let i = PageInfo { id: PageId(1), size: 2, capacity: 3, epoch: 4, location: Location::Unified, name: "n".into() };
    let c = MmsbPageInfo::from(&i);
    assert_eq!((c.id, c.size, c.capacity, c.epoch, c.location), (1, 2, 3, 4, 2));
}

#[test]
fn log_info_mirror() {
    let i = LogInfo {
        lsn: 1,
        log_bytes: 2,
        segments: 3,
        checkpoints: 4,
        last_checkpoint_lsn: 5,
        oldest_lsn: 6,
        bytes_since_checkpoint: 7,
        skipped_regions: 8,
        truncated_bytes: 9,
        quarantined: vec![
            "a".into(),
            "b".into(),
            "c".into(),
            "d".into(),
            "e".into(),
            "f".into(),
            "g".into(),
            "h".into(),
            "i".into(),
            "j".into(),
        ],
        maintenance_failures: 11,
        last_maintenance_error: Some("e".into()),
        last_maintenance_code: ErrorCode::Io,
        last_maintenance_lsn: 12,
        group_syncs: 13,
        recovery_micros: 14,
        maintenance_passes: 15,
        maintenance_waits: 16,
        maintenance_slowdowns: 17,
    };
    let c = MmsbLogInfo::from(&i);
    assert_eq!(
        [
            c.lsn,
            c.log_bytes,
            c.segments,
            c.checkpoints,
            c.last_checkpoint_lsn,
            c.oldest_lsn,
            c.skipped_regions,
            c.truncated_bytes,
            c.quarantined_files,
            c.maintenance_failures,
            c.last_maintenance_lsn,
        ],
        [1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12]
    );
    assert_eq!(c.last_maintenance_status, ErrorCode::Io as u32);
}

#[test]
fn histogram_stats_mirror() {
    let h = HistogramStats {
        metric: Metric::DeltaRoute,
        count: 1,
        sampled: 2,
        min_ns: 3,
        mean_ns: 4.5,
        p50_ns: 5,
        p90_ns: 6,
        p99_ns: 7,
        p999_ns: 8,
        max_ns: 9,
        sum_ns: 10,
    };
    let c = MmsbHistogramStats::from(&h);
    assert_eq!(
        [c.count, c.sampled, c.min_ns, c.p50_ns, c.p90_ns, c.p99_ns, c.p999_ns, c.max_ns, c.sum_ns],
        [1, 2, 3, 5, 6, 7, 8, 9, 10]
    );
    assert_eq!(c.mean_ns, 4.5);
}

#[test]
fn device_stats_mirror() {
    let s = DeviceStats {
        syncs: 1,
        bytes_h2d: 2,
        bytes_d2h: 3,
        kernels_launched: 4,
        dirty_bytes_pending: 5,
        mirrors: 6,
        cpu_only_pages: 7,
    };
    let c = MmsbDeviceStats::from(s);
    assert_eq!(
        [c.syncs, c.bytes_h2d, c.bytes_d2h, c.kernels_launched, c.dirty_bytes_pending, c.mirrors, c.cpu_only_pages],
        [1, 2, 3, 4, 5, 6, 7]
    );
}

#[test]
fn round_stats_mirror() {
    let c = MmsbRoundStats::from(RoundStats { round: 1, recomputed: 2, cutoff: 3, deltas_routed: 4 });
    assert_eq!([c.round, c.recomputed, c.cutoff, c.deltas_routed], [1, 2, 3, 4]);
}
