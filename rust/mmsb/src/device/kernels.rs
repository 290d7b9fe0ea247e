//! Delta kernels: CUDA C source (compiled at run time with NVRTC), the flattened argument layout
//! they read, and a CPU reference that executes the same index arithmetic thread by thread.
//!
//! A delta reaches the device as one byte blob (one host→device copy) plus scalars:
//! - **dense** (`mmsb_apply_dense(page, offset, len, blob)`): `blob = mask[W] ++ data[len]` where
//!   `W = ceil(len / 64)` little-endian `u64` mask words (bit `i % 64` of word `i / 64` selects
//!   byte `i`). Each thread owns one 8-byte chunk; when the destination and the data are 8-byte
//!   aligned it blends a whole `u64` with an expanded byte mask, otherwise it writes byte by byte.
//! - **sparse** (`mmsb_apply_sparse(page, n_runs, blob)`): `blob = offsets[n] ++ prefix[n + 1] ++
//!   data[total]` (`u64` each; `prefix[r]` is where run `r` starts in `data`, `prefix[n] = total`,
//!   run lengths are the differences). Each thread owns one data byte and finds its run by binary
//!   search over `prefix`.
//!
//! Both kernels use grid-stride loops, so any grid covers all the work. The blob's data section
//! starts at a multiple of 8 bytes from its start, and device allocations are 256-byte aligned.

use super::index;
use crate::types::delta::{Delta, DeltaParts};

/// The CUDA C source of the delta kernels.
pub const KERNELS_CU: &str = r#"
typedef unsigned long long u64;
typedef unsigned char u8;

__device__ __forceinline__ u64 mmsb_expand_byte_mask(unsigned int m) {
    u64 v = 0;
#pragma unroll
    for (int b = 0; b < 8; ++b) {
        if (m & (1u << b)) v |= 0xFFull << (8 * b);
    }
    return v;
}

extern "C" __global__ void mmsb_apply_dense(u8* __restrict__ page, u64 offset, u64 len,
                                            const u8* __restrict__ blob) {
    const u64* mask = (const u64*)blob;
    const u64 words = (len + 63) / 64;
    const u8* data = blob + 8 * words;
    u8* dst = page + offset;
    const u64 chunks = (len + 7) / 8;
    const bool aligned = ((((u64)dst) | ((u64)data)) & 7) == 0;
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 t = (u64)blockIdx.x * blockDim.x + threadIdx.x; t < chunks; t += stride) {
        const unsigned int m = (unsigned int)((mask[t >> 3] >> ((t & 7) * 8)) & 0xFF);
        if (m == 0) continue;
        const u64 base = t * 8;
        if (aligned && base + 8 <= len) {
            const u64 src = *(const u64*)(data + base);
            if (m == 0xFF) {
                *(u64*)(dst + base) = src;
            } else {
                const u64 bm = mmsb_expand_byte_mask(m);
                const u64 old = *(const u64*)(dst + base);
                *(u64*)(dst + base) = (old & ~bm) | (src & bm);
            }
        } else {
            for (int b = 0; b < 8; ++b) {
                const u64 i = base + b;
                if (i < len && ((m >> b) & 1u)) dst[i] = data[i];
            }
        }
    }
}

extern "C" __global__ void mmsb_apply_sparse(u8* __restrict__ page, u64 n_runs,
                                             const u8* __restrict__ blob) {
    const u64* offsets = (const u64*)blob;
    const u64* prefix = offsets + n_runs;
    const u8* data = (const u8*)(prefix + n_runs + 1);
    const u64 total = prefix[n_runs];
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 g = (u64)blockIdx.x * blockDim.x + threadIdx.x; g < total; g += stride) {
        u64 lo = 0, hi = n_runs; /* prefix[lo] <= g < prefix[hi] */
        while (hi - lo > 1) {
            const u64 mid = lo + (hi - lo) / 2;
            if (prefix[mid] <= g) lo = mid; else hi = mid;
        }
        page[offsets[lo] + (g - prefix[lo])] = data[g];
    }
}
"#;

/// Kernel names in [`KERNELS_CU`].
pub const DENSE_KERNEL: &str = "mmsb_apply_dense";
/// Kernel names in [`KERNELS_CU`].
pub const SPARSE_KERNEL: &str = "mmsb_apply_sparse";

/// Threads per block for both kernels.
pub const BLOCK_THREADS: u32 = 256;
/// Upper bound on blocks; the grid-stride loops cover the rest.
pub const MAX_BLOCKS: u32 = 16_384;

/// A delta flattened into what a kernel receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelArgs {
    /// A dense masked delta.
    Dense {
        /// First byte of the page it covers.
        offset: u64,
        /// Bytes it covers.
        len: u64,
        /// Mask words then payload, as the dense kernel reads them.
        blob: Vec<u8>,
    },
    /// A sparse delta.
    Sparse {
        /// Number of runs.
        n_runs: u64,
        /// Run headers then run bytes, as the sparse kernel reads them.
        blob: Vec<u8>,
    },
}

impl KernelArgs {
    /// Flattens a delta; `None` for the empty delta (nothing to launch).
    pub fn from_delta(delta: &Delta) -> Option<KernelArgs> {
        match delta.parts() {
            DeltaParts::Dense { offset, mask, data } => {
                let mut blob = Vec::with_capacity(mask.len() * 8 + data.len());
                for w in mask {
                    blob.extend_from_slice(&w.to_le_bytes());
                }
                blob.extend_from_slice(data);
                Some(KernelArgs::Dense { offset, len: data.len() as u64, blob })
            }
            DeltaParts::Sparse { runs, data } => {
                if runs.is_empty() {
                    return None;
                }
                let n = runs.len();
                let mut blob = Vec::with_capacity(8 * (2 * n + 1) + data.len());
                for r in runs {
                    blob.extend_from_slice(&r.offset.to_le_bytes());
                }
                let mut at = 0u64;
                for r in runs {
                    blob.extend_from_slice(&at.to_le_bytes());
                    at += r.len;
                }
                blob.extend_from_slice(&at.to_le_bytes());
                blob.extend_from_slice(data);
                Some(KernelArgs::Sparse { n_runs: n as u64, blob })
            }
        }
    }

    /// The blob copied to the device.
    pub fn blob(&self) -> &[u8] {
        match self {
            KernelArgs::Dense { blob, .. } | KernelArgs::Sparse { blob, .. } => blob,
        }
    }

    /// Threads of work (chunks for dense, bytes for sparse).
    pub fn work_items(&self) -> u64 {
        match self {
            KernelArgs::Dense { len, .. } => len.div_ceil(8),
            KernelArgs::Sparse { n_runs, blob } => read_u64(blob, 8 * (2 * index(*n_runs))),
        }
    }

    /// `(grid, block)` for a launch.
    pub fn launch_dims(&self) -> (u32, u32) {
        let blocks = self.work_items().div_ceil(u64::from(BLOCK_THREADS)).clamp(1, u64::from(MAX_BLOCKS));
        (u32::try_from(blocks).expect("clamped to MAX_BLOCKS, a u32"), BLOCK_THREADS)
    }
}

fn read_u64(blob: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(blob[at..at + 8].try_into().expect("8 bytes"))
}

/// Runs the kernel's code on the CPU for every `(block, thread)` of a `(grid, block)` launch,
/// with the same index arithmetic. `aligned` selects the kernel's 8-byte blend path (the device
/// takes it when destination and data are 8-byte aligned). Bounds are the caller's to check, as
/// on the device.
pub fn reference_apply(page: &mut [u8], args: &KernelArgs, dims: (u32, u32), aligned: bool) {
    let stride = u64::from(dims.0) * u64::from(dims.1);
    for block in 0..u64::from(dims.0) {
        for thread in 0..u64::from(dims.1) {
            let start = block * u64::from(dims.1) + thread;
            match args {
                KernelArgs::Dense { offset, len, blob } => {
                    dense_thread(page, *offset, *len, blob, aligned, start, stride)
                }
                KernelArgs::Sparse { n_runs, blob } => sparse_thread(page, *n_runs, blob, start, stride),
            }
        }
    }
}

fn expand_byte_mask(m: u32) -> u64 {
    (0..8).filter(|b| m & (1 << b) != 0).fold(0, |v, b| v | (0xFF << (8 * b)))
}

fn dense_thread(page: &mut [u8], offset: u64, len: u64, blob: &[u8], aligned: bool, start: u64, stride: u64) {
    let words = len.div_ceil(64);
    let data = &blob[8 * index(words)..];
    let dst = &mut page[index(offset)..];
    let chunks = len.div_ceil(8);
    let mut t = start;
    while t < chunks {
        let m = u32::try_from((read_u64(blob, 8 * index(t >> 3)) >> ((t & 7) * 8)) & 0xFF).expect("masked to 8 bits");
        if m != 0 {
            let base = index(t * 8);
            if aligned && t * 8 + 8 <= len {
                let src = u64::from_le_bytes(data[base..base + 8].try_into().expect("8 bytes"));
                let out = if m == 0xFF {
                    src
                } else {
                    let bm = expand_byte_mask(m);
                    let old = u64::from_le_bytes(dst[base..base + 8].try_into().expect("8 bytes"));
                    (old & !bm) | (src & bm)
                };
                dst[base..base + 8].copy_from_slice(&out.to_le_bytes());
            } else {
                for b in 0..8 {
                    let i = base + b;
                    if (i as u64) < len && (m >> b) & 1 != 0 {
                        dst[i] = data[i];
                    }
                }
            }
        }
        t += stride;
    }
}

fn sparse_thread(page: &mut [u8], n_runs: u64, blob: &[u8], start: u64, stride: u64) {
    let n = index(n_runs);
    let offset = |r: usize| read_u64(blob, 8 * r);
    let prefix = |r: usize| read_u64(blob, 8 * (n + r));
    let data = &blob[8 * (2 * n + 1)..];
    let total = prefix(n);
    let mut g = start;
    while g < total {
        let (mut lo, mut hi) = (0usize, n);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if prefix(mid) <= g {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        page[index(offset(lo) + (g - prefix(lo)))] = data[index(g)];
        g += stride;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(delta: &Delta, page_len: usize, seed: u8) {
        #[allow(clippy::cast_possible_truncation, reason = "test pattern: the low byte is wanted")]
        let base: Vec<u8> = (0..page_len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let mut want = base.clone();
        delta.apply(&mut want).unwrap();
        let Some(args) = KernelArgs::from_delta(delta) else {
            assert!(delta.is_empty());
            return;
        };
        // The computed launch, a tiny grid (many stride iterations) and a lopsided one.
        for dims in [args.launch_dims(), (1, 1), (3, 7)] {
            for aligned in [false, true] {
                let mut got = base.clone();
                reference_apply(&mut got, &args, dims, aligned);
                assert_eq!(got, want, "dims {dims:?} aligned {aligned} delta {delta:?}");
            }
        }
    }

    #[test]
    fn fixed_cases() {
        check(&Delta::write(3, b"hello").unwrap(), 16, 0);
        check(&Delta::sparse([(0u64, &b"a"[..]), (10, &b"bcd"[..]), (63, &b"e"[..])]).unwrap(), 64, 1);
        let mask: Vec<u8> = (0..200).map(|i| (i % 3 != 0) as u8).collect();
        check(&Delta::dense_bytemask(5, &mask, &[0xAB; 200]).unwrap(), 256, 2);
        check(&Delta::dense_bytemask(0, &[1; 64], &[9; 64]).unwrap(), 64, 3);
        assert!(KernelArgs::from_delta(&Delta::empty()).is_none());
    }

    #[test]
    fn layout_is_as_documented() {
        let d = Delta::sparse([(4u64, &b"ab"[..]), (10, &b"c"[..])]).unwrap();
        let KernelArgs::Sparse { n_runs, blob } = KernelArgs::from_delta(&d).unwrap() else { panic!("sparse") };
        assert_eq!(n_runs, 2);
        let words: Vec<u64> = (0..5).map(|k| read_u64(&blob, 8 * k)).collect();
        assert_eq!(words, vec![4, 10, 0, 2, 3]);
        assert_eq!(&blob[40..], b"abc");
        let d = Delta::dense_bytemask(8, &[1, 0, 1], &[7, 8, 9]).unwrap();
        let args = KernelArgs::from_delta(&d).unwrap();
        assert_eq!(args, KernelArgs::Dense { offset: 8, len: 3, blob: vec![0b101, 0, 0, 0, 0, 0, 0, 0, 7, 0, 9] });
        assert_eq!(args.work_items(), 1);
    }

    fn arb_delta(page_len: usize) -> impl Strategy<Value = Delta> {
        let sparse = prop::collection::vec((0..page_len, prop::collection::vec(any::<u8>(), 1..40)), 0..12).prop_map(
            move |runs| {
                let runs: Vec<(u64, Vec<u8>)> = runs
                    .into_iter()
                    .map(|(o, mut b)| {
                        b.truncate(page_len - o);
                        (o as u64, b)
                    })
                    .collect();
                Delta::sparse(runs.iter().map(|(o, b)| (*o, b.as_slice()))).unwrap()
            },
        );
        let dense = (0..page_len, prop::collection::vec((any::<bool>(), any::<u8>()), 1..300)).prop_map(
            move |(o, mut bytes)| {
                bytes.truncate(page_len - o);
                let mask: Vec<u8> = bytes.iter().map(|(m, _)| u8::from(*m)).collect();
                let data: Vec<u8> = bytes.iter().map(|(_, d)| *d).collect();
                Delta::dense_bytemask(o as u64, &mask, &data).unwrap()
            },
        );
        let diffed = prop::collection::vec(any::<u8>(), page_len).prop_map(move |new| {
            let old: Vec<u8> = (0..page_len).map(|i| if i % 5 == 0 { new[i] } else { new[i] ^ 1 }).collect();
            Delta::diff(&old, &new).unwrap()
        });
        prop_oneof![sparse, dense, diffed]
    }

    proptest! {
        /// The kernels' index arithmetic (run offsets from prefix sums and binary search, mask
        /// words and byte lanes, the aligned blend, grid-stride loops) reproduces `Delta::apply`.
        #[test]
        fn reference_matches_delta_apply(delta in arb_delta(700), seed in any::<u8>()) {
            check(&delta, 700, seed);
        }
    }
}
