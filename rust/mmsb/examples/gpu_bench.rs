//! GPU benchmark of the device layer, each figure against a baseline measured in the same run:
//! - host→device `sync_device` of a fully dirty page vs a plain pinned `cuMemcpyHtoDAsync` of the
//!   same bytes (target ≥ 0.80), and device→host (informational);
//! - delta kernels (dense full mask, dense half mask, sparse) vs a device-to-device copy of the
//!   page (target ≥ 0.70 for the dense full mask);
//! - a kernel on a unified page just written by the host, with and without prefetch.
//!
//! Build here with `cargo build --release --examples`; run `target/release/examples/gpu_bench
//! [MiB]` on the GPU machine (see `benchmark/gpu_check.sh`). Without a driver it prints
//! `SKIPPED: ...` and exits 0.
#![allow(clippy::cast_possible_truncation)] // benchmark sizes and timings: truncation is intended or impossible here

use std::time::Instant;

use mmsb::device::cuda::Mirror;
use mmsb::device::kernels::KernelArgs;
use mmsb::device::{device_status, gpu_handle, DeviceStatus, SyncDirection};
use mmsb::{Config, Delta, Location, MMSBState, PageMeta};

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

const REPS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median seconds of `REPS` runs of `f` after one warm-up; `prep` runs untimed before each.
fn time(mut prep: impl FnMut() -> Res, mut f: impl FnMut() -> Res) -> Res<f64> {
    prep()?;
    f()?;
    let mut t = Vec::with_capacity(REPS);
    for _ in 0..REPS {
        prep()?;
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64());
    }
    Ok(median(t))
}

fn gbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e9
}

fn report(name: &str, secs: f64, base: f64, bytes: usize, target: Option<f64>) {
    let ratio = base / secs;
    let verdict = match target {
        Some(t) if ratio >= t => format!(" target>={t:.2} PASS"),
        Some(t) => format!(" target>={t:.2} BELOW"),
        None => String::new(),
    };
    println!(
        "RESULT {name}: {:.3} ms ({:.1} GB/s) vs baseline {:.3} ms ({:.1} GB/s): ratio={ratio:.3}{verdict}",
        secs * 1e3,
        gbps(bytes, secs),
        base * 1e3,
        gbps(bytes, base)
    );
}

fn main() -> Res {
    let mib: usize = std::env::args().nth(1).map_or(Ok(256), |a| a.parse())?;
    let n = mib << 20;
    if let DeviceStatus::Unavailable { reason } = device_status() {
        println!("SKIPPED: no CUDA driver: {reason}");
        return Ok(());
    }
    let g = gpu_handle().ok_or("no GPU handle")?;
    println!("device: {}; page size {mib} MiB; median of {REPS} runs", device_status().describe());
    let stream = g.copy_stream().clone();
    let ctx = g.context().clone();
    let fill: Vec<u8> = (0..n).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3]).collect();

    // --- Host→device sync vs plain pinned memcpy.
    let s = MMSBState::open(Config { gpu: true, max_page_size: n as u64, ..Config::default() })?;
    let p = s.create_page(n as u64, Location::Gpu, PageMeta::default())?;
    let full = Delta::write(0, &fill)?;
    let sync = time(
        || {
            s.route_delta(p, &full, None)?; // marks the whole page dirty (untimed)
            Ok(())
        },
        || {
            s.sync_device(p, SyncDirection::HostToDevice)?;
            Ok(())
        },
    )?;
    // SAFETY: u8 accepts any bit pattern; the buffer is filled before use.
    let mut pinned = unsafe { ctx.alloc_pinned::<u8>(n) }?;
    pinned.as_mut_slice()?.copy_from_slice(&fill);
    let mut dev = stream.alloc_zeros::<u8>(n)?;
    let memcpy = time(
        || Ok(()),
        || {
            stream.memcpy_htod(&pinned, &mut dev)?;
            stream.synchronize()?;
            Ok(())
        },
    )?;
    report("h2d_sync_vs_pinned_memcpy", sync, memcpy, n, Some(0.80));
    let mirror_ok = s.read_mirror(p)? == fill;
    println!("CHECK h2d mirror equals page: {mirror_ok}");

    // --- Device→host sync (whole page, nothing differs) vs plain pinned readback.
    let d2h = time(
        || Ok(()),
        || {
            s.sync_device(p, SyncDirection::DeviceToHost)?;
            Ok(())
        },
    )?;
    // SAFETY: as above; flags 0 = cached pinned memory, right for host reads.
    let mut back = unsafe { ctx.alloc_pinned_with_flags::<u8>(n, 0) }?;
    let readback = time(
        || Ok(()),
        || {
            stream.memcpy_dtoh(&dev, &mut back)?;
            stream.synchronize()?;
            Ok(())
        },
    )?;
    report("d2h_sync_vs_pinned_memcpy (info: includes diffing against the CPU page)", d2h, readback, n, None);
    drop(s);

    // --- Delta kernels vs device-to-device copy.
    let mut m = g.alloc_mirror(n, false)?;
    let src = stream.alloc_zeros::<u8>(n)?;
    let mut dst = stream.alloc_zeros::<u8>(n)?;
    let dtod = time(
        || Ok(()),
        || {
            stream.memcpy_dtod(&src, &mut dst)?;
            stream.synchronize()?;
            Ok(())
        },
    )?;
    let half_mask: Vec<u8> = (0..n).map(|i| u8::from((i / 8) % 2 == 0)).collect();
    let cases: Vec<(&str, Delta, Option<f64>)> = vec![
        ("kernel_dense_full_mask_vs_dtod_copy", Delta::dense_bytemask(0, &vec![1u8; n], &fill)?, Some(0.70)),
        ("kernel_dense_half_mask_vs_dtod_copy", Delta::dense_bytemask(0, &half_mask, &fill)?, None),
        (
            "kernel_sparse_64KiB_runs_vs_dtod_copy",
            {
                let run = 64 << 10;
                let runs: Vec<(u64, &[u8])> =
                    (0..n / (2 * run)).map(|k| ((2 * k * run) as u64, &fill[..run])).collect();
                Delta::sparse(runs)?
            },
            None,
        ),
    ];
    for (name, delta, target) in cases {
        let args = KernelArgs::from_delta(&delta).ok_or("empty delta")?;
        let prepared = g.prepare(&args)?;
        let t = time(
            || Ok(()),
            || {
                g.launch_prepared(&mut m, &prepared)?;
                stream.synchronize()?;
                Ok(())
            },
        )?;
        report(name, t, dtod, n, target);
        let mut want = vec![0u8; n];
        delta.apply(&mut want)?;
        let mut check = g.read_mirror(&m)?;
        // The mirror accumulates cases; compare only what this delta wrote.
        let mut ok = true;
        delta.for_each_run(|o, b| ok &= check[o as usize..o as usize + b.len()] == *b);
        check.clear();
        println!("CHECK {name} wrote the delta's bytes: {ok}");
    }
    drop(m);

    // --- Unified page: the host writes it, then a kernel runs, with and without prefetch.
    let delta = Delta::dense_bytemask(0, &vec![1u8; n], &fill)?;
    let prepared = g.prepare(&KernelArgs::from_delta(&delta).ok_or("empty delta")?)?;
    let mut results = Vec::new();
    for prefetch in [false, true] {
        let mut u = g.alloc_mirror(n, true)?;
        let supported = matches!(u, Mirror::Unified { prefetch: true, .. });
        if let Mirror::Unified { prefetch: p, .. } = &mut u {
            *p = prefetch && *p;
        }
        // Both closures below need the mirror mutably; they never run at the same time.
        let u = std::cell::RefCell::new(u);
        let t = time(
            || {
                g.upload(&mut u.borrow_mut(), 0, &fill)?; // host touches every page: they migrate to the host
                Ok(())
            },
            || {
                g.launch_prepared(&mut u.borrow_mut(), &prepared)?;
                stream.synchronize()?;
                Ok(())
            },
        )?;
        println!(
            "RESULT unified_kernel_after_host_write prefetch={prefetch} (supported: {supported}): {:.3} ms ({:.1} GB/s of page)",
            t * 1e3,
            gbps(n, t)
        );
        results.push(t);
    }
    report("unified_prefetch_vs_fault_path", results[1], results[0], n, None);
    println!("DONE");
    Ok(())
}
