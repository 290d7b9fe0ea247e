//! GPU tests of the device layer. Each `gpu_*` test needs a CUDA driver and a device; without
//! them it prints `SKIPPED: no CUDA driver: <reason>` and returns (run with `--nocapture` to see
//! it). `benchmark/gpu_check.sh` runs them on a GPU machine.
#![allow(clippy::cast_possible_truncation)] // test data and sizes: truncation is intended or impossible here

use std::sync::Arc;

use mmsb::device::{device_status, DeviceStatus, PageDeviceStatus, SyncDirection};
use mmsb::{Config, Delta, Location, MMSBState, PageId, PageMeta};

/// A GPU-enabled state, or `None` (after printing why) when there is no GPU.
fn gpu_state(test: &str) -> Option<MMSBState> {
    if let DeviceStatus::Unavailable { reason } = device_status() {
        println!("SKIPPED: no CUDA driver: {reason} ({test})");
        return None;
    }
    let s = MMSBState::open(Config { gpu: true, ..Config::default() }).expect("open");
    assert!(s.device_status().is_available());
    Some(s)
}

fn page(s: &MMSBState, size: u64, loc: Location) -> PageId {
    let p = s.create_page(size, loc, PageMeta::default()).expect("create");
    assert!(
        matches!(s.device_page_status(p).unwrap(), PageDeviceStatus::Mirrored { .. }),
        "page got no mirror: {:?}",
        s.device_page_status(p)
    );
    p
}

fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn assert_coherent(s: &MMSBState, p: PageId) {
    s.sync_device(p, SyncDirection::HostToDevice).unwrap();
    assert!(s.dirty_ranges(p).unwrap().is_empty());
    assert!(s.read_mirror(p).unwrap() == s.read_page(p).unwrap(), "mirror differs from the CPU page");
}

#[test]
fn gpu_detects_device() {
    let Some(s) = gpu_state("gpu_detects_device") else { return };
    let DeviceStatus::Available { name, total_mem, .. } = device_status() else { unreachable!() };
    assert!(!name.is_empty());
    assert!(*total_mem > 0);
    println!("device: {}", s.device_status().describe());
}

#[test]
fn gpu_host_to_device_sync_copies_only_dirty_ranges() {
    let Some(s) = gpu_state("gpu_host_to_device_sync_copies_only_dirty_ranges") else { return };
    let p = page(&s, 1 << 20, Location::Gpu);
    assert_eq!(s.read_mirror(p).unwrap(), vec![0u8; 1 << 20], "a new mirror is zeroed like its page");
    s.route_delta(p, &Delta::write(100, b"hello").unwrap(), None).unwrap();
    s.route_delta(p, &Delta::write(900_000, &[7u8; 3000]).unwrap(), None).unwrap();
    let r = s.sync_device(p, SyncDirection::HostToDevice).unwrap();
    assert_eq!(r.syncs, 1);
    assert_eq!(r.copies, 2, "far-apart ranges are separate copies");
    assert_eq!(r.bytes_h2d, 5 + 3000);
    assert_coherent(&s, p);
    let st = s.device_stats();
    assert_eq!((st.syncs, st.bytes_h2d, st.dirty_bytes_pending, st.mirrors), (1, 3005, 0, 1));
    // The doorbell confirmed completion before the record was written.
    let recs = s.take_device_sync_records();
    assert_eq!(recs.len(), 1);
    let rec = mmsb::device::decode_sync_record(&recs[0]).unwrap();
    assert_eq!((rec.page, rec.direction, rec.bytes), (p, SyncDirection::HostToDevice, 3005));
}

#[test]
fn gpu_whole_page_sync_when_mostly_dirty() {
    let Some(s) = gpu_state("gpu_whole_page_sync_when_mostly_dirty") else { return };
    let n = 8 << 20;
    let p = page(&s, n as u64, Location::Gpu);
    s.route_delta(p, &Delta::write(0, &pattern(n, 1)).unwrap(), None).unwrap();
    let r = s.sync_device(p, SyncDirection::HostToDevice).unwrap();
    assert_eq!((r.copies, r.bytes_h2d), (1, n as u64));
    assert_coherent(&s, p);
}

#[test]
fn gpu_device_to_host_routes_differences_as_deltas() {
    let Some(s) = gpu_state("gpu_device_to_host_routes_differences_as_deltas") else { return };
    let p = page(&s, 64 << 10, Location::Gpu);
    s.route_delta(p, &Delta::write(10, b"synced").unwrap(), None).unwrap();
    s.sync_device(p, SyncDirection::HostToDevice).unwrap();
    // A CPU write the device has not seen: a device-to-host sync makes the device win.
    s.route_delta(p, &Delta::write(10, b"SYNCED").unwrap(), None).unwrap();
    let before = s.lsn();
    let r = s.sync_device(p, SyncDirection::DeviceToHost).unwrap();
    assert_eq!(r.delta_lsns, vec![before + 1], "the difference was routed (and so logged) as a delta");
    assert_eq!(&s.read_page(p).unwrap()[10..16], b"synced");
    assert!(s.dirty_ranges(p).unwrap().is_empty());
    // Nothing differs any more: no delta.
    assert!(s.sync_device(p, SyncDirection::DeviceToHost).unwrap().delta_lsns.is_empty());
    // Each sync also took one LSN for its own record (with or without a log, as every change
    // does): the delta's, the first sync's, the second sync's.
    assert_eq!(s.lsn(), before + 3);
}

#[test]
fn gpu_delta_kernels_match_cpu() {
    let Some(s) = gpu_state("gpu_delta_kernels_match_cpu") else { return };
    for loc in [Location::Gpu, Location::Unified] {
        let n = 1 << 20;
        let p = page(&s, n as u64, loc);
        s.route_delta(p, &Delta::write(0, &pattern(n, 3)).unwrap(), None).unwrap();
        s.sync_device(p, SyncDirection::HostToDevice).unwrap();
        let old = s.read_page(p).unwrap();
        // Dense (masked), at aligned and unaligned offsets.
        for (off, seed) in [(0usize, 5u64), (4093, 6), (65_536 + 3, 7)] {
            let data = pattern(50_000, seed);
            let mask: Vec<u8> = pattern(50_000, seed + 100).iter().map(|b| b & 1).collect();
            let d = Delta::dense_bytemask(off as u64, &mask, &data).unwrap();
            s.apply_on_device(p, &d, None).unwrap();
        }
        // Sparse: many runs.
        let runs: Vec<(u64, Vec<u8>)> = (0..500).map(|i| (i * 2000 + 17, pattern(1 + (i as usize % 40), i))).collect();
        let d = Delta::sparse(runs.iter().map(|(o, b)| (*o, b.as_slice()))).unwrap();
        s.apply_on_device(p, &d, None).unwrap();
        // A diff (the representation `update_page` produces).
        let mut new = s.read_page(p).unwrap();
        for i in (0..n).step_by(97) {
            new[i] ^= 0x5A;
        }
        let d = Delta::diff(&s.read_page(p).unwrap(), &new).unwrap();
        s.apply_on_device(p, &d, None).unwrap();
        assert_ne!(s.read_page(p).unwrap(), old);
        assert!(s.dirty_ranges(p).unwrap().is_empty(), "kernel-applied bytes are not dirty");
        assert!(s.read_mirror(p).unwrap() == s.read_page(p).unwrap(), "{loc:?}: kernels diverged from the CPU");
    }
    assert!(s.device_stats().kernels_launched >= 10);
}

#[test]
fn gpu_unified_page_syncs_both_ways() {
    let Some(s) = gpu_state("gpu_unified_page_syncs_both_ways") else { return };
    let p = page(&s, 4 << 20, Location::Unified);
    assert_eq!(s.device_page_status(p).unwrap(), PageDeviceStatus::Mirrored { unified: true });
    s.update_page_at(p, 12345, b"unified", None).unwrap();
    assert_coherent(&s, p);
    s.route_delta(p, &Delta::write(0, b"cpu-only").unwrap(), None).unwrap();
    let r = s.sync_device(p, SyncDirection::DeviceToHost).unwrap();
    assert_eq!(r.delta_lsns.len(), 1);
    assert_eq!(&s.read_page(p).unwrap()[..8], &[0u8; 8]);
}

#[test]
fn gpu_concurrent_writers_and_syncs_stay_coherent() {
    let Some(s) = gpu_state("gpu_concurrent_writers_and_syncs_stay_coherent") else { return };
    let s = Arc::new(s);
    let pages: Vec<PageId> = (0..4).map(|_| page(&s, 256 << 10, Location::Gpu)).collect();
    let writers: Vec<_> = (0..3u64)
        .map(|t| {
            let (s, pages) = (s.clone(), pages.clone());
            std::thread::spawn(move || {
                for i in 0..300u64 {
                    let p = pages[((t + i) % 4) as usize];
                    let off = (i * 7919 + t * 131) % ((256 << 10) - 64);
                    let d = Delta::write(off, &pattern(1 + (i % 60) as usize, t * 1000 + i)).unwrap();
                    if i % 3 == 0 {
                        s.apply_on_device(p, &d, None).unwrap();
                    } else {
                        s.route_delta(p, &d, None).unwrap();
                    }
                }
            })
        })
        .collect();
    for _ in 0..50 {
        s.sync_all(SyncDirection::HostToDevice).unwrap();
    }
    for w in writers {
        w.join().unwrap();
    }
    for p in pages {
        assert_coherent(&s, p);
    }
}

#[test]
fn gpu_mirrors_are_released_with_their_pages() {
    let Some(s) = gpu_state("gpu_mirrors_are_released_with_their_pages") else { return };
    let a = page(&s, 1 << 20, Location::Gpu);
    let _b = page(&s, 1 << 20, Location::Unified);
    assert_eq!(s.device_stats().mirrors, 2);
    s.free_page(a).unwrap();
    assert_eq!(s.device_stats().mirrors, 1);
    s.close();
    assert_eq!(s.device_stats().mirrors, 0);
}

#[cfg(feature = "cuda")]
#[test]
fn gpu_doorbell_rings_after_the_stream_drains() {
    if gpu_state("gpu_doorbell_rings_after_the_stream_drains").is_none() {
        return;
    }
    let g = mmsb::device::gpu_handle().expect("available");
    let mut m = g.alloc_mirror(64 << 20, false).unwrap();
    let data = vec![3u8; 64 << 20];
    g.upload(&mut m, 0, &data).unwrap();
    let bell = g.doorbell_copy().unwrap();
    bell.wait().unwrap();
    assert!(bell.is_rung());
    assert_eq!(g.read_mirror(&m).unwrap(), data);
}
