//! CRC32C (Castagnoli), the checksum of every record, blob payload and checkpoint.
//!
//! Two implementations of the same function: `crc32c` (the SSE4.2 `crc32` instruction, three
//! streams; the least set-up, best below about 1 KiB) and `crc-fast` (carry-less multiply
//! folding; 2.2x the throughput on 64 KiB, which is what a 64 KiB append checksums). A test
//! checks that they agree at every length and split point.

use crc_fast::{CrcAlgorithm, Digest};

/// Inputs from this length on go to `crc-fast`.
const FOLD_FROM: usize = 1024;

/// CRC32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c_append(0, data)
}

/// CRC32C of the bytes whose CRC32C is `crc`, followed by `data`.
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    if data.len() < FOLD_FROM {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU has SSE4.2 (checked just above).
            return unsafe { short_sse42(crc, data) };
        }
        return crc32c::crc32c_append(crc, data);
    }
    // A finished CRC32C is the register inverted (xorout 0xFFFFFFFF): resume from the register.
    let mut d = Digest::new_with_init_state(CrcAlgorithm::Crc32Iscsi, u64::from(!crc));
    d.update(data);
    // A CRC32C fills only the low 32 bits of the u64 the crate returns.
    u32::try_from(d.finalize()).expect("a CRC32C fits 32 bits")
}

/// CRC32C of a short input with the SSE4.2 instruction, 8 bytes at a time from unaligned loads.
/// A log record is about 100 bytes at an arbitrary offset: the `crc32c` crate aligns first (up
/// to 7 single-byte steps at each end) and sets up its three-stream loop, which made checksums
/// an eighth of replaying small records.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn short_sse42(crc: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u32, _mm_crc32_u64, _mm_crc32_u8};
    let mut c = u64::from(!crc);
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        c = _mm_crc32_u64(c, u64::from_le_bytes(w.try_into().expect("8 bytes")));
    }
    // The register is 32 bits wide: `_mm_crc32_u64` leaves the upper half zero.
    let mut c = u32::try_from(c).expect("a CRC32C register fits 32 bits");
    let mut rest = words.remainder();
    if rest.len() >= 4 {
        c = _mm_crc32_u32(c, u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")));
        rest = &rest[4..];
    }
    for &b in rest {
        c = _mm_crc32_u8(c, b);
    }
    !c
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, reason = "test data: the low byte is wanted")]
mod tests {
    use super::*;

    #[test]
    fn both_implementations_agree_at_every_length_and_split() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        // Every length of the short path (8-byte words, then 4, then single bytes), then a sample.
        for len in (0..=1100).chain((1100..=data.len()).step_by(37)).chain([4096]) {
            let d = &data[..len];
            assert_eq!(crc32c(d), crc32c::crc32c(d), "length {len}");
            for cut in [0, 1, len / 3, len / 2, len.saturating_sub(1), len] {
                let (a, b) = d.split_at(cut.min(len));
                assert_eq!(crc32c_append(crc32c(a), b), crc32c::crc32c(d), "length {len} split at {cut}");
            }
        }
        // The standard check value of CRC-32/ISCSI.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(
            crc32c_append(crc32c(b"1234"), &[b'5'; 2000]),
            crc32c::crc32c_append(crc32c::crc32c(b"1234"), &[b'5'; 2000])
        );
    }
}
