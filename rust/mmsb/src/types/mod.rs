//! Layer 01: pages, deltas and errors.

#[allow(clippy::cast_possible_truncation)] // casts not reviewed yet: only the log paths are
pub mod delta;
pub mod dirty;
pub mod error;
pub mod event;
pub mod lsn;
pub mod page;
pub mod route;

use std::hash::{BuildHasherDefault, Hasher};

/// A hasher for dense integer ids (page ids): one multiply, no SipHash on the hot path.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHash(u64);

impl Hasher for IdHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        // Fibonacci hashing spreads sequential ids over the table's high bits.
        self.0 = v.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// `BuildHasher` for [`IdHash`].
pub type IdHasher = BuildHasherDefault<IdHash>;
