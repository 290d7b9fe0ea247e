//! The byte encoding of a delta (little-endian; see `docs/log-format.md`): what the log writes
//! and reads back, and the sizes the algebra uses to choose a representation.

use super::{Delta, Repr, Run, RUN_HEADER};
use crate::types::error::DeltaError;

/// Encoding tag of a sparse delta.
pub(crate) const TAG_SPARSE: u8 = 0;
/// Encoding tag of a dense delta.
pub(crate) const TAG_DENSE: u8 = 1;

impl Delta {
    /// Bytes [`Delta::encode`] appends.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the encoding of an in-memory delta is no longer than its bytes plus headers, so it fits a usize"
    )]
    pub fn encoded_len(&self) -> usize {
        match &self.repr {
            Repr::Sparse { runs, data } => sparse_encoded_len(runs.len() as u64, data.len() as u64) as usize,
            Repr::Dense { data, .. } => dense_encoded_len(data.len() as u64) as usize,
        }
    }

    /// Appends the encoding minus its trailing payload bytes, and returns that payload: the full
    /// encoding is `out`'s new bytes followed by the returned slice. Lets the log write payloads
    /// straight from the delta (vectored I/O) instead of copying them.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "run count, run lengths and dense span are at most u32::MAX: Delta::check_encodable, which the router \
                  runs on every routed delta before any is logged"
    )]
    pub fn encode_split(&self, out: &mut Vec<u8>) -> &[u8] {
        match &self.repr {
            Repr::Sparse { runs, data } => {
                out.push(TAG_SPARSE);
                out.extend_from_slice(&(runs.len() as u32).to_le_bytes());
                for r in runs {
                    out.extend_from_slice(&r.offset.to_le_bytes());
                    out.extend_from_slice(&(r.len as u32).to_le_bytes());
                }
                data
            }
            Repr::Dense { offset, mask, data } => {
                out.push(TAG_DENSE);
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(&(data.len() as u32).to_le_bytes());
                let mask_bytes = data.len().div_ceil(8);
                let mut written = 0;
                for w in mask {
                    let b = w.to_le_bytes();
                    let take = (mask_bytes - written).min(8);
                    out.extend_from_slice(&b[..take]);
                    written += take;
                }
                data
            }
        }
    }

    /// Appends the wire encoding (little-endian; see `docs/log-format.md`).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        let payload = self.encode_split(out);
        out.extend_from_slice(payload);
    }

    /// Decodes one delta from the front of `bytes`; returns it and the bytes consumed.
    /// Rejects anything [`Delta::encode`] would not produce (except unmasked payload bytes,
    /// which are normalised to zero).
    pub fn decode(bytes: &[u8]) -> Result<(Delta, usize), DeltaError> {
        let mut r = Reader { buf: bytes, at: 0 };
        let tag = r.u8()?;
        match tag {
            TAG_SPARSE => {
                let n = wire_usize(r.u32()?)?;
                if n.checked_mul(RUN_HEADER_BYTES).is_none_or(|h| h > r.remaining()) {
                    return Err(DeltaError::Malformed("run count exceeds the input"));
                }
                let mut runs = Vec::with_capacity(n);
                let mut total = 0usize;
                let mut prev_end: Option<u64> = None;
                for _ in 0..n {
                    let offset = r.u64()?;
                    let len = r.u32()?;
                    if len == 0 {
                        return Err(DeltaError::Malformed("empty run"));
                    }
                    let end = offset.checked_add(u64::from(len)).ok_or(DeltaError::Malformed("run end overflows"))?;
                    if prev_end.is_some_and(|p| offset <= p) {
                        return Err(DeltaError::Malformed("runs not sorted and disjoint"));
                    }
                    prev_end = Some(end);
                    total = total.checked_add(wire_usize(len)?).ok_or(DeltaError::Malformed("run lengths overflow"))?;
                    runs.push(Run { offset, len: u64::from(len) });
                }
                let data = r.take(total)?.to_vec();
                let anchor = runs.first().map_or(0, |r| r.offset);
                Ok((Delta { repr: Repr::Sparse { runs, data }, anchor }, r.at))
            }
            TAG_DENSE => {
                let offset = r.u64()?;
                let len = wire_usize(r.u32()?)?;
                if len == 0 {
                    return Err(DeltaError::Malformed("empty dense span"));
                }
                offset.checked_add(len as u64).ok_or(DeltaError::Malformed("dense span overflows"))?;
                let mask_bytes = r.take(len.div_ceil(8))?;
                if !len.is_multiple_of(8) && mask_bytes[mask_bytes.len() - 1] >> (len % 8) != 0 {
                    return Err(DeltaError::Malformed("mask bits set past the span"));
                }
                let data = r.take(len)?;
                let d = Delta::dense(offset, mask_bytes, data)?;
                if d.is_empty() {
                    return Err(DeltaError::Malformed("dense delta with an empty mask"));
                }
                Ok((d, r.at))
            }
            _ => Err(DeltaError::Malformed("unknown delta tag")),
        }
    }
}

pub(super) fn sparse_encoded_len(runs: u64, bytes: u64) -> u64 {
    1 + 4 + RUN_HEADER * runs + bytes
}

pub(super) fn dense_encoded_len(span: u64) -> u64 {
    1 + 8 + 4 + span.div_ceil(8) + span
}

/// Bytes of one encoded run header (`offset: u64`, `len: u32`).
const RUN_HEADER_BYTES: usize = 12;
const _: () = assert!(RUN_HEADER_BYTES as u64 == RUN_HEADER);

/// A length read from the wire, as a `usize` (a length this platform cannot hold is malformed
/// input, not a truncated one).
fn wire_usize(v: u32) -> Result<usize, DeltaError> {
    usize::try_from(v).map_err(|_| DeltaError::Malformed("a length does not fit this platform's address space"))
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.at
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DeltaError> {
        if n > self.remaining() {
            return Err(DeltaError::Malformed("truncated delta"));
        }
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DeltaError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DeltaError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, DeltaError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
}
