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
                let s = SparseRef::read(&mut r)?;
                let runs = s.runs().collect();
                let anchor = s.first_offset;
                Ok((Delta { repr: Repr::Sparse { runs, data: s.data.to_vec() }, anchor }, r.at))
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

/// A delta read in place from its encoding, for replay's hot path: a sparse delta borrows its
/// run headers and bytes from the record (no allocation; replay of small deltas spent a fifth of
/// its time decoding into fresh vectors), a dense one is decoded.
pub(crate) enum EncodedDelta<'a> {
    /// A sparse delta, validated as [`Delta::decode`] validates it.
    Sparse(SparseRef<'a>),
    /// Any other encoding, decoded.
    Decoded(Delta),
}

/// A validated sparse encoding: `heads` holds the run headers as encoded (12 bytes each).
pub(crate) struct SparseRef<'a> {
    heads: &'a [u8],
    data: &'a [u8],
    first_offset: u64,
    last: Run,
}

impl<'a> SparseRef<'a> {
    /// Reads and checks a sparse encoding after its tag (the one validator of both decoders).
    #[inline]
    fn read(r: &mut Reader<'a>) -> Result<SparseRef<'a>, DeltaError> {
        let n = wire_usize(r.u32()?)?;
        if n.checked_mul(RUN_HEADER_BYTES).is_none_or(|h| h > r.remaining()) {
            return Err(DeltaError::Malformed("run count exceeds the input"));
        }
        let heads = r.take(n * RUN_HEADER_BYTES)?;
        let mut total = 0usize;
        let mut prev_end: Option<u64> = None;
        let mut last = Run { offset: 0, len: 0 };
        for h in heads.chunks_exact(RUN_HEADER_BYTES) {
            let (offset, len) = run_head(h);
            if len == 0 {
                return Err(DeltaError::Malformed("empty run"));
            }
            let end = offset.checked_add(u64::from(len)).ok_or(DeltaError::Malformed("run end overflows"))?;
            if prev_end.is_some_and(|p| offset <= p) {
                return Err(DeltaError::Malformed("runs not sorted and disjoint"));
            }
            prev_end = Some(end);
            total = total.checked_add(wire_usize(len)?).ok_or(DeltaError::Malformed("run lengths overflow"))?;
            last = Run { offset, len: u64::from(len) };
        }
        let data = r.take(total)?;
        let first_offset = heads.get(..RUN_HEADER_BYTES).map_or(0, |h| run_head(h).0);
        Ok(SparseRef { heads, data, first_offset, last })
    }

    #[inline]
    fn runs(&self) -> impl Iterator<Item = Run> + 'a {
        self.heads.chunks_exact(RUN_HEADER_BYTES).map(|h| {
            let (offset, len) = run_head(h);
            Run { offset, len: u64::from(len) }
        })
    }
}

#[inline]
fn run_head(h: &[u8]) -> (u64, u32) {
    (u64::from_le_bytes(h[..8].try_into().expect("8 bytes")), u32::from_le_bytes(h[8..12].try_into().expect("4 bytes")))
}

impl Delta {
    /// Decodes one delta from the front of `bytes` as [`Delta::decode`] does (same checks, same
    /// errors), borrowing a sparse one in place; returns it and the bytes consumed.
    #[inline]
    pub(crate) fn decode_in_place(bytes: &[u8]) -> Result<(EncodedDelta<'_>, usize), DeltaError> {
        if bytes.first() == Some(&TAG_SPARSE) {
            let mut r = Reader { buf: bytes, at: 1 };
            let s = SparseRef::read(&mut r)?;
            return Ok((EncodedDelta::Sparse(s), r.at));
        }
        let (d, used) = Delta::decode(bytes)?;
        Ok((EncodedDelta::Decoded(d), used))
    }
}

impl EncodedDelta<'_> {
    /// [`Delta::check_bounds`] of the decoded delta.
    #[inline]
    pub(crate) fn check_bounds(&self, page_size: u64) -> Result<(), DeltaError> {
        match self {
            EncodedDelta::Sparse(s) => {
                // Runs are sorted, so the last one ends furthest; the anchor (the first run's
                // offset) lies below that end.
                if s.last.end() > page_size {
                    return Err(DeltaError::OutOfBounds { offset: s.last.offset, len: s.last.len, page_size });
                }
                Ok(())
            }
            EncodedDelta::Decoded(d) => d.check_bounds(page_size),
        }
    }

    /// [`Delta::apply_unchecked`] of the decoded delta: `page` must pass [`Self::check_bounds`].
    #[inline]
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the runs lie inside `page` (checked by check_bounds), whose length is a usize"
    )]
    pub(crate) fn apply_unchecked(&self, page: &mut [u8]) {
        match self {
            EncodedDelta::Sparse(s) => {
                let mut at = 0usize;
                for r in s.runs() {
                    let (o, len) = (r.offset as usize, r.len as usize);
                    page[o..o + len].copy_from_slice(&s.data[at..at + len]);
                    at += len;
                }
            }
            EncodedDelta::Decoded(d) => d.apply_unchecked(page),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Decoding in place must accept, refuse and bound-check exactly what `Delta::decode` does
    /// and apply the same bytes: over well-formed encodings, every prefix and every byte changed.
    #[test]
    fn in_place_decoding_agrees_with_decode() {
        let w = |o, b: &[u8]| Delta::write(o, b).unwrap();
        let deltas = [
            Delta::empty(),
            w(3, b"abc"),
            w(0, &[7; 64]),
            w(5, b"xy").compose(&w(40, b"zzz")).compose(&w(4000, &[1; 96])),
            Delta::dense(2, &[0b1010_0101, 0b11], &[9; 10]).unwrap(),
        ];
        for d in &deltas {
            let mut enc = Vec::new();
            d.encode(&mut enc);
            enc.extend_from_slice(&[0xAB, 0xCD]); // trailing bytes belong to the next field
            let mut variants: Vec<Vec<u8>> = (0..enc.len()).map(|n| enc[..n].to_vec()).collect();
            for i in 0..enc.len() {
                for x in [0x01, 0x80, 0xFF] {
                    let mut v = enc.clone();
                    v[i] ^= x;
                    variants.push(v);
                }
            }
            variants.push(enc);
            for v in &variants {
                agree(v);
            }
        }
    }

    fn agree(bytes: &[u8]) {
        match (Delta::decode(bytes), Delta::decode_in_place(bytes)) {
            (Ok((d, used)), Ok((e, used2))) => {
                assert_eq!(used, used2, "{bytes:?}");
                for size in [0, 1, d.extent().saturating_sub(1), d.extent(), d.min_page_size(), 4096, 8192] {
                    let (a, b) = (d.check_bounds(size), e.check_bounds(size));
                    assert_eq!(a, b, "page size {size}: {bytes:?}");
                    if a.is_ok() && size <= 8192 {
                        let size = usize::try_from(size).unwrap();
                        let base: Vec<u8> = (0..size).map(|i| u8::try_from(i % 251).unwrap()).collect();
                        let (mut p, mut q) = (base.clone(), base);
                        d.apply_unchecked(&mut p);
                        e.apply_unchecked(&mut q);
                        assert_eq!(p, q, "{bytes:?}");
                    }
                }
            }
            (Err(a), Err(b)) => assert_eq!(a, b, "{bytes:?}"),
            (a, b) => panic!("decode {:?} but in place {:?}: {bytes:?}", a.map(|x| x.1), b.map(|x| x.1)),
        }
    }
}
