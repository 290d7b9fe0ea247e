//! Core data-path figures, all in one run: dense 4 KiB apply vs a 4 KiB memcpy, the sparse
//! 64-byte in-memory route, and `Delta::diff` of 4 KiB. Run: `cargo bench --bench core`.
#![allow(clippy::cast_possible_truncation)] // benchmark sizes and timings: truncation is intended or impossible here

#[path = "support/ab.rs"]
mod ab;

use std::hint::black_box;

use criterion::Criterion;
use mmsb::{Delta, Location, MMSBState, PageMeta};

const PAGE: usize = 4096;

fn pattern(seed: u8) -> Vec<u8> {
    (0..PAGE).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn apply_4k(c: &mut Criterion) {
    let src = pattern(1);
    let full = Delta::dense(0, &[0xFF; PAGE / 8], &src).unwrap();
    let half = Delta::dense(0, &[0xAA; PAGE / 8], &src).unwrap();
    let mut dst = vec![0u8; PAGE];
    let mut g = c.benchmark_group("apply_4KiB");
    g.bench_function("memcpy", |b| b.iter(|| black_box(&mut dst[..]).copy_from_slice(black_box(&src))));
    g.bench_function("dense_full_mask", |b| b.iter(|| black_box(&full).apply(black_box(&mut dst)).unwrap()));
    g.bench_function("dense_half_mask", |b| b.iter(|| black_box(&half).apply(black_box(&mut dst)).unwrap()));
    g.finish();
}

fn route_64b(c: &mut Criterion) {
    let state = MMSBState::in_memory();
    let page = state.create_page(PAGE as u64, Location::Cpu, PageMeta::default()).unwrap();
    let delta = Delta::write(128, &[0xAB; 64]).unwrap();
    c.bench_function("route_64B_sparse_in_memory", |b| {
        b.iter(|| state.route_delta(black_box(page), black_box(&delta), None).unwrap())
    });
}

fn diff_4k(c: &mut Criterion) {
    let old = pattern(1);
    let mut few = old.clone();
    for at in [100, 1000, 3000] {
        few[at..at + 16].iter_mut().for_each(|b| *b = !*b);
    }
    let all = pattern(2);
    let same = old.clone();
    let mut g = c.benchmark_group("diff_4KiB");
    // Baseline: the comparison any diff must do, as a plain slice equality (memcmp).
    g.bench_function("memcmp_baseline", |b| b.iter(|| black_box(&old[..]) == black_box(&same[..])));
    g.bench_function("identical", |b| b.iter(|| Delta::diff(black_box(&old), black_box(&same)).unwrap()));
    g.bench_function("three_16B_runs", |b| b.iter(|| Delta::diff(black_box(&old), black_box(&few)).unwrap()));
    g.bench_function("all_different", |b| b.iter(|| Delta::diff(black_box(&old), black_box(&all)).unwrap()));
    g.finish();
}

fn ratios() {
    let src = pattern(1);
    let full = Delta::dense(0, &[0xFF; PAGE / 8], &src).unwrap();
    let half = Delta::dense(0, &[0xAA; PAGE / 8], &src).unwrap();
    let mut d1 = vec![0u8; PAGE];
    let mut d2 = vec![0u8; PAGE];
    let (t_full, t_copy) = ab::interleaved(
        200,
        20_000,
        || black_box(&full).apply(black_box(&mut d1)).unwrap(),
        || black_box(&mut d2[..]).copy_from_slice(black_box(&src)),
    );
    ab::report("dense 4 KiB apply (full mask) vs memcpy", "dense", t_full, "memcpy", t_copy, "<= 2.0");
    let (t_half, t_copy) = ab::interleaved(
        200,
        20_000,
        || black_box(&half).apply(black_box(&mut d1)).unwrap(),
        || black_box(&mut d2[..]).copy_from_slice(black_box(&src)),
    );
    ab::report("dense 4 KiB apply (half mask) vs memcpy", "dense", t_half, "memcpy", t_copy, "<= 2.0");
    // The same into page-aligned 4 KiB mappings, as a route writes into a page (`PageBuf`): the
    // vectors above start 16 bytes into a cache line, so every 64-byte store of the apply spans
    // two lines, which memcpy's copy does not pay the same way.
    let mut p1 = memmap2::MmapOptions::new().len(PAGE).map_anon().unwrap();
    let mut p2 = memmap2::MmapOptions::new().len(PAGE).map_anon().unwrap();
    for (delta, mask) in [(&full, "full"), (&half, "half")] {
        let (t_dense, t_copy) = ab::interleaved(
            200,
            20_000,
            || black_box(delta).apply(black_box(&mut p1[..])).unwrap(),
            || black_box(&mut p2[..]).copy_from_slice(black_box(&src)),
        );
        let what = format!("dense 4 KiB apply ({mask} mask) vs memcpy, into page-aligned mappings");
        ab::report(&what, "dense", t_dense, "memcpy", t_copy, "<= 2.0");
    }

    // The whole masked-write path the C ABI takes: build the delta from mask bits, then route it.
    let state = MMSBState::in_memory();
    let page = state.create_page(PAGE as u64, Location::Cpu, PageMeta::default()).unwrap();
    let bits = [0xAAu8; PAGE / 8];
    let (t_build, t_copy) = ab::interleaved(
        200,
        20_000,
        || {
            black_box(Delta::dense(0, black_box(&bits), black_box(&src)).unwrap());
        },
        || black_box(&mut d2[..]).copy_from_slice(black_box(&src)),
    );
    ab::report("build a dense 4 KiB delta vs memcpy", "build", t_build, "memcpy", t_copy, "-");
    let (t_route, t_copy) = ab::interleaved(
        200,
        20_000,
        || {
            state.route_delta(page, &Delta::dense(0, black_box(&bits), black_box(&src)).unwrap(), None).unwrap();
        },
        || black_box(&mut d2[..]).copy_from_slice(black_box(&src)),
    );
    ab::report("masked 4 KiB write (build + route) vs memcpy", "write", t_route, "memcpy", t_copy, "-");
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    apply_4k(&mut c);
    route_64b(&mut c);
    diff_4k(&mut c);
    c.final_summary();
    if ab::is_bench_run() {
        ratios();
    }
}
