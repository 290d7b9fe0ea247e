//! The byte kernels of deltas: the difference scan of `diff`, the masked copy that builds a
//! dense delta and the masked apply, each with AVX-512 / AVX2 paths chosen at run time and a
//! scalar fallback that defines the result.

use std::mem::MaybeUninit;

/// For each mask byte, the u64 with 0xFF in every byte whose bit is set.
static EXPAND: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut v = 0u64;
        let mut b = 0;
        while b < 8 {
            if i & (1 << b) != 0 {
                v |= 0xFFu64 << (8 * b);
            }
            b += 1;
        }
        t[i] = v;
        i += 1;
    }
    t
};
/// Index of the first `i >= from` with `a[i] != b[i]`, or `a.len()`; compares 8 bytes at a time.
pub(super) fn next_difference(a: &[u8], b: &[u8], from: usize) -> usize {
    let n = a.len();
    let mut i = from;
    #[cfg(target_arch = "x86_64")]
    if simd_level() != Simd::Scalar {
        // SAFETY: AVX2 is available (every level above Scalar has it, checked at run time).
        i = unsafe { skip_equal_avx2(a, b, i) };
    }
    while i + 8 <= n {
        let x = u64::from_ne_bytes(a[i..i + 8].try_into().expect("8-byte slice"));
        let y = u64::from_ne_bytes(b[i..i + 8].try_into().expect("8-byte slice"));
        if x != y {
            break;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// Skips equal 64-byte blocks from `i` on: where the first block that differs starts (or the
/// last whole block ends). Why: the scalar 8-byte loop made `diff` of 4 KiB 250-370 ns, and its
/// speed swung by a third with code alignment between builds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn skip_equal_avx2(a: &[u8], b: &[u8], mut i: usize) -> usize {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    while i + 64 <= n {
        // SAFETY: i + 64 <= n, so both 64-byte reads lie inside `a` and `b` (unaligned loads).
        let equal = unsafe {
            let (pa, pb) = (a.as_ptr().add(i), b.as_ptr().add(i));
            let lo = _mm256_cmpeq_epi8(_mm256_loadu_si256(pa.cast()), _mm256_loadu_si256(pb.cast()));
            let hi = _mm256_cmpeq_epi8(_mm256_loadu_si256(pa.add(32).cast()), _mm256_loadu_si256(pb.add(32).cast()));
            _mm256_movemask_epi8(_mm256_and_si256(lo, hi)) == -1
        };
        if !equal {
            break;
        }
        i += 64;
    }
    i
}

/// Masked write of `src` into `dst` (same length): whole 64-byte words are copied or skipped,
/// mixed ones blended: with AVX2 32 bytes per instruction (the mask bits expanded to a byte
/// mask with a shuffle and a compare), otherwise eight bytes at a time through a lookup table.
pub(super) fn apply_dense(dst: &mut [u8], mask: &[u64], src: &[u8]) {
    debug_assert_eq!(dst.len(), src.len());
    #[cfg(target_arch = "x86_64")]
    {
        if simd_level() == Simd::Avx512 {
            // SAFETY: AVX-512F/BW are available (checked at run time); lengths are equal and the
            // mask covers `src.len()` bits, as apply_dense_avx512 requires.
            unsafe { apply_dense_avx512(dst, mask, src) };
            return;
        }
        if simd_level() == Simd::Avx2 {
            // SAFETY: AVX2 is available (checked at run time); lengths are equal and the mask
            // covers `src.len()` bits, as apply_dense_avx2 requires.
            unsafe { apply_dense_avx2(dst, mask, src) };
            return;
        }
    }
    apply_dense_scalar(dst, mask, src);
}

#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Simd {
    Scalar,
    Avx2,
    Avx512,
}

/// The widest blend this CPU supports, detected once.
#[cfg(target_arch = "x86_64")]
pub(super) fn simd_level() -> Simd {
    use std::sync::atomic::{AtomicU8, Ordering};
    // 0 = unknown; then 1 + the level: one relaxed load on the hot path after the first call.
    static LEVEL: AtomicU8 = AtomicU8::new(0);
    let decode = |v: u8| match v {
        3 => Simd::Avx512,
        2 => Simd::Avx2,
        _ => Simd::Scalar,
    };
    match LEVEL.load(Ordering::Relaxed) {
        0 => {
            let level = if std::env::var_os("MMSB_NO_AVX512").is_none()
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
            {
                3
            } else if std::arch::is_x86_feature_detected!("avx2") {
                2
            } else {
                1
            };
            LEVEL.store(level, Ordering::Relaxed);
            decode(level)
        }
        v => decode(v),
    }
}

/// `src` with the bytes whose mask bit is clear zeroed (the dense canonical form), built in one
/// pass that writes each output byte once: a copy followed by a zeroing pass touched 4 KiB
/// twice. AVX-512 does a zeroing masked load per 64 bytes, AVX2 an AND with the expanded mask
/// per 32, the fallback eight-byte lanes through [`EXPAND`]; words with every bit set or clear
/// are a plain copy or a fill.
pub(super) fn masked_copy(src: &[u8], mask: &[u64]) -> Vec<u8> {
    let n = src.len();
    assert!(mask.len() >= n.div_ceil(64), "the mask covers every byte");
    let mut out = Vec::with_capacity(n);
    let dst = &mut out.spare_capacity_mut()[..n];
    #[cfg(target_arch = "x86_64")]
    match simd_level() {
        // SAFETY: AVX-512F/BW checked at run time; equal lengths and a covering mask (above).
        Simd::Avx512 => unsafe { masked_copy_avx512(dst, src, mask) },
        // SAFETY: AVX2 checked at run time; equal lengths and a covering mask (above).
        Simd::Avx2 => unsafe { masked_copy_avx2(dst, src, mask) },
        Simd::Scalar => masked_copy_scalar(dst, src, mask),
    }
    #[cfg(not(target_arch = "x86_64"))]
    masked_copy_scalar(dst, src, mask);
    // SAFETY: every path initialises all `n` bytes of `dst` (each kernel's contract), and
    // `n <= capacity`.
    unsafe { out.set_len(n) };
    out
}

/// Portable body of [`masked_copy`]: initialises all of `dst`.
pub(super) fn masked_copy_scalar(dst: &mut [MaybeUninit<u8>], src: &[u8], mask: &[u64]) {
    assert_eq!(dst.len(), src.len());
    let mut dwords = dst.chunks_exact_mut(64);
    let mut swords = src.chunks_exact(64);
    for ((d, s), &m) in (&mut dwords).zip(&mut swords).zip(mask) {
        for (k, (dl, sl)) in d.chunks_exact_mut(8).zip(s.chunks_exact(8)).enumerate() {
            let keep = EXPAND[((m >> (8 * k)) & 0xFF) as usize];
            let v = u64::from_le_bytes(sl.try_into().expect("8-byte lane")) & keep;
            for (o, b) in dl.iter_mut().zip(v.to_le_bytes()) {
                o.write(b);
            }
        }
    }
    let tail_word = src.len() / 64;
    for (i, (o, &b)) in dwords.into_remainder().iter_mut().zip(swords.remainder()).enumerate() {
        o.write(if mask[tail_word] & (1 << i) != 0 { b } else { 0 });
    }
}

/// AVX-512 body of [`masked_copy`]: initialises all of `dst`.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW; `dst.len() == src.len()` and
/// `mask.len() >= ceil(src.len() / 64)`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn masked_copy_avx512(dst: &mut [MaybeUninit<u8>], src: &[u8], mask: &[u64]) {
    use std::arch::x86_64::*;
    debug_assert_eq!(dst.len(), src.len());
    let n = src.len();
    let d = dst.as_mut_ptr().cast::<u8>();
    let s = src.as_ptr();
    for (w, &m) in mask.iter().enumerate().take(n.div_ceil(64)) {
        let base = w * 64;
        let len = (n - base).min(64);
        let inside = if len == 64 { u64::MAX } else { (1u64 << len) - 1 };
        // SAFETY: the load reads only lanes set in `m & inside`, all inside base..base + len <= n
        // of `src` (masked-off lanes are not accessed and read as zero); the store writes lanes
        // base..base + len of `dst`, which has n bytes. Together the words write every byte.
        unsafe {
            let v = _mm512_maskz_loadu_epi8(m & inside, s.add(base).cast());
            // A byte-masked store is several times slower than a plain one on some cores (AMD
            // Zen 4), so only the tail word uses one.
            if len == 64 {
                _mm512_storeu_si512(d.add(base).cast(), v);
            } else {
                _mm512_mask_storeu_epi8(d.add(base).cast(), inside, v);
            }
        }
    }
}

/// AVX2 body of [`masked_copy`]: initialises all of `dst`.
///
/// # Safety
/// The CPU must support AVX2; `dst.len() == src.len()` and `mask.len() >= ceil(src.len() / 64)`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn masked_copy_avx2(dst: &mut [MaybeUninit<u8>], src: &[u8], mask: &[u64]) {
    use std::arch::x86_64::*;
    debug_assert_eq!(dst.len(), src.len());
    let n = src.len();
    let words = n / 64;
    // As in apply_dense_avx2: byte i of a 32-byte block tests bit i % 8 of mask byte i / 8.
    let spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let d = dst.as_mut_ptr().cast::<u8>();
    let s = src.as_ptr();
    for (w, &m) in mask.iter().enumerate().take(words) {
        for half in 0..2 {
            let at = w * 64 + 32 * half;
            let bits = (m >> (32 * half)) as u32;
            let sel = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), spread);
            let byte_mask = _mm256_cmpeq_epi8(_mm256_and_si256(sel, bit), bit);
            // SAFETY: at + 32 <= words * 64 <= n, in bounds of both slices; unaligned access.
            unsafe {
                let v = _mm256_loadu_si256(s.add(at).cast());
                _mm256_storeu_si256(d.add(at).cast(), _mm256_and_si256(v, byte_mask));
            }
        }
    }
    let tail = words * 64;
    if tail < n {
        masked_copy_scalar(&mut dst[tail..], &src[tail..], &mask[words..]);
    }
}

/// AVX-512 body of [`apply_dense`]: each 64-bit mask word is a byte-masked store of 64 bytes.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW; `dst.len() == src.len()` and
/// `mask.len() >= ceil(src.len() / 64)`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn apply_dense_avx512(dst: &mut [u8], mask: &[u64], src: &[u8]) {
    use std::arch::x86_64::*;
    let n = src.len();
    let d = dst.as_mut_ptr();
    let s = src.as_ptr();
    for (w, &m) in mask.iter().enumerate().take(n.div_ceil(64)) {
        let base = w * 64;
        let len = (n - base).min(64);
        // Bits past the end are zero in a normalised mask; clear them anyway so the masked
        // load and store never touch bytes beyond either slice.
        let m = if len == 64 { m } else { m & ((1u64 << len) - 1) };
        // SAFETY: masked loads/stores only access bytes whose mask bit is set, all of which lie
        // in base..base + len <= n; masked-off lanes are not accessed (no fault, no write).
        unsafe {
            let v = _mm512_maskz_loadu_epi8(m, s.add(base).cast());
            _mm512_mask_storeu_epi8(d.add(base).cast(), m, v);
        }
    }
}

/// AVX2 body of [`apply_dense`].
///
/// # Safety
/// The CPU must support AVX2; `dst.len() == src.len()` and `mask.len() >= ceil(src.len() / 64)`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn apply_dense_avx2(dst: &mut [u8], mask: &[u64], src: &[u8]) {
    use std::arch::x86_64::*;
    let n = src.len();
    let words = n / 64;
    // Byte i of a 32-byte block takes mask byte i / 8 (shuffles act per 128-bit lane, and the
    // broadcast puts the same four mask bytes in both lanes) and tests bit i % 8 of it.
    let spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let d = dst.as_mut_ptr();
    let s = src.as_ptr();
    for (w, &m) in mask.iter().enumerate().take(words) {
        let base = w * 64;
        if m == 0 {
            continue;
        }
        // SAFETY: base + 64 <= n for w < words, so both pointers stay in bounds; unaligned
        // loads/stores are used throughout.
        unsafe {
            if m == u64::MAX {
                std::ptr::copy_nonoverlapping(s.add(base), d.add(base), 64);
                continue;
            }
            for half in 0..2 {
                let at = base + 32 * half;
                let bits = (m >> (32 * half)) as u32;
                let sel = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), spread);
                let byte_mask = _mm256_cmpeq_epi8(_mm256_and_si256(sel, bit), bit);
                let old = _mm256_loadu_si256(d.add(at).cast());
                let new = _mm256_loadu_si256(s.add(at).cast());
                _mm256_storeu_si256(d.add(at).cast(), _mm256_blendv_epi8(old, new, byte_mask));
            }
        }
    }
    let tail = words * 64;
    if tail < n {
        apply_dense_scalar(&mut dst[tail..], &mask[words..], &src[tail..]);
    }
}

/// Portable body of [`apply_dense`].
pub(super) fn apply_dense_scalar(dst: &mut [u8], mask: &[u64], src: &[u8]) {
    debug_assert_eq!(dst.len(), src.len());
    let mut dchunks = dst.chunks_exact_mut(64);
    let mut schunks = src.chunks_exact(64);
    for ((d, s), &m) in (&mut dchunks).zip(&mut schunks).zip(mask) {
        if m == u64::MAX {
            d.copy_from_slice(s);
        } else if m != 0 {
            for k in 0..8 {
                let mb = (m >> (8 * k)) as u8;
                let lane = 8 * k..8 * k + 8;
                match mb {
                    0 => {}
                    0xFF => d[lane.clone()].copy_from_slice(&s[lane]),
                    _ => {
                        let bm = EXPAND[mb as usize];
                        let dv = u64::from_le_bytes(d[lane.clone()].try_into().expect("8-byte lane"));
                        let sv = u64::from_le_bytes(s[lane.clone()].try_into().expect("8-byte lane"));
                        d[lane].copy_from_slice(&((dv & !bm) | (sv & bm)).to_le_bytes());
                    }
                }
            }
        }
    }
    let tail_word = src.len() / 64;
    for (i, (d, s)) in dchunks.into_remainder().iter_mut().zip(schunks.remainder()).enumerate() {
        if mask[tail_word] & (1 << i) != 0 {
            *d = *s;
        }
    }
}
