//! Deltas: the only way page bytes change (`state ⊕ Δ → state′`).
//!
//! A delta is a partial map from byte offsets to bytes. Two representations share one meaning:
//! - **sparse**: sorted, disjoint, non-adjacent runs of `(offset, bytes)`;
//! - **dense**: a span starting at `offset` with one mask bit per byte and a payload.
//!
//! Composition `a ⊕ b` ("b after a") is the union of writes where `b` wins, with the empty delta
//! as identity; it is associative. Equality is semantic: two deltas are equal when they write the
//! same bytes at the same offsets, whatever their representation.
//!
//! This module holds the algebra; `encode` the byte encoding (the log's wire format) and
//! `simd` the byte kernels (difference scan, masked copy and apply) with their run-time dispatch.

#[warn(clippy::cast_possible_truncation)] // the log encoding: reviewed, keep it so
mod encode;
mod simd;

use std::fmt;

use crate::types::error::DeltaError;

pub(crate) use encode::EncodedDelta;
use encode::{dense_encoded_len, sparse_encoded_len};
use simd::{apply_dense, masked_copy, next_difference};

/// A run of written bytes in a sparse delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// First byte written.
    pub offset: u64,
    /// Bytes written.
    pub len: u64,
}

impl Run {
    fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// A borrowed view of a delta's representation (see [`Delta::parts`]); the invariants of
/// each form are those documented on the private representation.
#[derive(Debug, Clone, Copy)]
pub enum DeltaParts<'a> {
    /// Sorted, disjoint, non-adjacent runs; `data` holds their bytes concatenated in order.
    Sparse {
        /// The runs.
        runs: &'a [Run],
        /// Their bytes, concatenated.
        data: &'a [u8],
    },
    /// `data.len()` bytes at `offset`, one mask bit per byte (LSB first); `mask.len()` is
    /// `ceil(data.len() / 64)` and bits past the end are zero.
    Dense {
        /// First byte covered.
        offset: u64,
        /// Which bytes are written, one bit each.
        mask: &'a [u64],
        /// The bytes (zero where the mask bit is clear).
        data: &'a [u8],
    },
}

#[derive(Clone)]
enum Repr {
    /// Invariant: runs sorted, `len > 0`, `runs[i].end() < runs[i+1].offset`, and
    /// `data.len() == sum(len)`, concatenated in run order.
    Sparse { runs: Vec<Run>, data: Vec<u8> },
    /// Invariant: `mask.len() == ceil(data.len() / 64)`, mask bits past `data.len()` are zero,
    /// and `data[i] == 0` where the mask bit is clear (so equal deltas have equal bytes).
    Dense { offset: u64, mask: Vec<u64>, data: Vec<u8> },
}

/// A deterministic byte write to one page.
///
/// **Bounds rule** (the same for every constructor and entry point): a delta fits a page of
/// `size` bytes iff every byte it writes lies in `[0, size)` and every offset it was built
/// with (a write's or dense delta's `offset`, each sparse run's offset, empty runs included)
/// is at most `size`. Masked-out bytes are not written, so they may lie past the end; an empty
/// delta at an offset past the end does not fit. Offsets whose end overflows `u64` are refused
/// when the delta is built.
#[derive(Clone)]
pub struct Delta {
    repr: Repr,
    /// The largest offset the delta was built with (0 for none). Not part of its meaning (equal
    /// deltas may differ here), only of its bounds: see the bounds rule above.
    anchor: u64,
}

/// Size of a sparse run header in the encoding; also the gap below which `diff` merges runs.
const RUN_HEADER: u64 = 12;

fn checked_end(offset: u64, len: u64) -> Result<u64, DeltaError> {
    offset.checked_add(len).ok_or(DeltaError::Overflow { offset, len })
}

impl Delta {
    /// The identity of ⊕: writes nothing.
    pub fn empty() -> Delta {
        Delta { repr: Repr::Sparse { runs: Vec::new(), data: Vec::new() }, anchor: 0 }
    }

    fn with_anchor(mut self, anchor: u64) -> Delta {
        self.anchor = anchor;
        self
    }

    /// Writes `bytes` at `offset`.
    pub fn write(offset: u64, bytes: &[u8]) -> Result<Delta, DeltaError> {
        checked_end(offset, bytes.len() as u64)?;
        if bytes.is_empty() {
            return Ok(Delta::empty().with_anchor(offset));
        }
        let runs = vec![Run { offset, len: bytes.len() as u64 }];
        Ok(Delta { repr: Repr::Sparse { runs, data: bytes.to_vec() }, anchor: offset })
    }

    /// Builds a sparse delta from runs applied in order (a later run wins where runs overlap).
    pub fn sparse<'a, I>(runs: I) -> Result<Delta, DeltaError>
    where
        I: IntoIterator<Item = (u64, &'a [u8])>,
    {
        let mut acc = Delta::empty();
        let mut sorted = true;
        let mut last_end = 0u64;
        let mut out_runs = Vec::new();
        let mut data = Vec::new();
        let mut pending = Vec::new();
        let mut anchor = 0u64;
        for (offset, bytes) in runs {
            let end = checked_end(offset, bytes.len() as u64)?;
            anchor = anchor.max(offset);
            if bytes.is_empty() {
                continue;
            }
            pending.push((offset, bytes));
            if sorted && (out_runs.is_empty() || offset > last_end) {
                out_runs.push(Run { offset, len: bytes.len() as u64 });
                data.extend_from_slice(bytes);
                last_end = end;
            } else {
                sorted = false;
            }
        }
        if sorted {
            return Ok(Delta { repr: Repr::Sparse { runs: out_runs, data }, anchor });
        }
        // Overlapping, adjacent or unsorted runs: fold with ⊕ so the later run wins.
        for (offset, bytes) in pending {
            acc = acc.compose(&Delta::write(offset, bytes)?);
        }
        Ok(acc.with_anchor(anchor))
    }

    /// A dense delta over `data.len()` bytes at `offset`; `mask_bits` holds one bit per byte,
    /// least significant bit first (`ceil(len / 8)` bytes; bits past `len` are ignored).
    pub fn dense(offset: u64, mask_bits: &[u8], data: &[u8]) -> Result<Delta, DeltaError> {
        let n = data.len();
        if mask_bits.len() != n.div_ceil(8) {
            return Err(DeltaError::MaskLengthMismatch { mask_bytes: mask_bits.len() as u64, payload_bytes: n as u64 });
        }
        checked_end(offset, n as u64)?;
        let mut mask = vec![0u64; n.div_ceil(64)];
        let whole = mask_bits.chunks_exact(8);
        let rest = whole.remainder();
        for (w, chunk) in mask.iter_mut().zip(whole) {
            *w = u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
        }
        if !rest.is_empty() {
            // Only the last word can be partial; a variable-length copy per word would be a
            // memmove call each.
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            *mask.last_mut().expect("a partial chunk implies a word") = u64::from_le_bytes(b);
        }
        Ok(Delta::from_dense_parts(offset, mask, data))
    }

    /// A dense delta whose mask has one byte per payload byte (non-zero = written).
    pub fn dense_bytemask(offset: u64, mask: &[u8], data: &[u8]) -> Result<Delta, DeltaError> {
        if mask.len() != data.len() {
            return Err(DeltaError::MaskLengthMismatch {
                mask_bytes: mask.len() as u64,
                payload_bytes: data.len() as u64,
            });
        }
        checked_end(offset, data.len() as u64)?;
        let mut words = vec![0u64; data.len().div_ceil(64)];
        for (i, &m) in mask.iter().enumerate() {
            if m != 0 {
                words[i / 64] |= 1 << (i % 64);
            }
        }
        Ok(Delta::from_dense_parts(offset, words, data))
    }

    /// The canonical dense delta of raw parts: bits past the end cleared, the span cut after
    /// its last written byte (so masked-out bytes past a page's end never count against its
    /// bounds), and the payload copied with its unmasked bytes zeroed.
    fn from_dense_parts(offset: u64, mut mask: Vec<u64>, data: &[u8]) -> Delta {
        let n = data.len();
        if n == 0 {
            return Delta::empty().with_anchor(offset);
        }
        if !n.is_multiple_of(64) {
            if let Some(last) = mask.last_mut() {
                *last &= (1u64 << (n % 64)) - 1;
            }
        }
        let Some(w) = mask.iter().rposition(|&m| m != 0) else {
            return Delta::empty().with_anchor(offset);
        };
        let n = w * 64 + (64 - mask[w].leading_zeros() as usize);
        mask.truncate(w + 1);
        let data = &data[..n];
        Delta { repr: Repr::Dense { offset, data: masked_copy(data, &mask), mask }, anchor: offset }
    }

    /// The smallest delta (in encoded bytes, up to run merging) that turns `old` into `new`.
    pub fn diff(old: &[u8], new: &[u8]) -> Result<Delta, DeltaError> {
        Delta::diff_at(0, old, new)
    }

    /// Like [`Delta::diff`], for buffers that sit at `base` in the page.
    pub fn diff_at(base: u64, old: &[u8], new: &[u8]) -> Result<Delta, DeltaError> {
        if old.len() != new.len() {
            return Err(DeltaError::LengthMismatch { old: old.len() as u64, new: new.len() as u64 });
        }
        checked_end(base, old.len() as u64)?;
        let n = old.len();
        let mut runs: Vec<Run> = Vec::new();
        let mut changed = 0u64;
        let mut i = next_difference(old, new, 0);
        while i < n {
            let mut j = i;
            while j < n && old[j] != new[j] {
                j += 1;
            }
            changed += (j - i) as u64;
            let start = base + i as u64;
            let end = base + j as u64;
            match runs.last_mut() {
                // Bridging a short gap costs fewer bytes than a new run header.
                Some(last) if start - last.end() <= RUN_HEADER => last.len = end - last.offset,
                _ => runs.push(Run { offset: start, len: end - start }),
            }
            i = next_difference(old, new, j);
        }
        let (Some(first), Some(last)) = (runs.first(), runs.last()) else {
            return Ok(Delta::empty().with_anchor(base));
        };
        let span = last.end() - first.offset;
        let sparse_size = sparse_encoded_len(runs.len() as u64, runs.iter().map(|r| r.len).sum());
        if dense_encoded_len(span) < sparse_size {
            let lo = (first.offset - base) as usize;
            let hi = lo + span as usize;
            let mut mask = vec![0u64; (span as usize).div_ceil(64)];
            let mut data = vec![0u8; span as usize];
            for (k, (o, nw)) in old[lo..hi].iter().zip(&new[lo..hi]).enumerate() {
                if o != nw {
                    mask[k / 64] |= 1 << (k % 64);
                    data[k] = *nw;
                }
            }
            debug_assert_eq!(mask.iter().map(|m| m.count_ones() as u64).sum::<u64>(), changed);
            return Ok(Delta { repr: Repr::Dense { offset: first.offset, mask, data }, anchor: base });
        }
        let mut data = Vec::with_capacity(runs.iter().map(|r| r.len as usize).sum());
        for r in &runs {
            let lo = (r.offset - base) as usize;
            data.extend_from_slice(&new[lo..lo + r.len as usize]);
        }
        Ok(Delta { repr: Repr::Sparse { runs, data }, anchor: base })
    }

    /// Borrows the raw representation, for consumers that ship a delta elsewhere as is (the
    /// device layer flattens it into kernel arguments).
    pub fn parts(&self) -> DeltaParts<'_> {
        match &self.repr {
            Repr::Sparse { runs, data } => DeltaParts::Sparse { runs, data },
            Repr::Dense { offset, mask, data } => DeltaParts::Dense { offset: *offset, mask, data },
        }
    }

    /// True when the delta writes nothing.
    pub fn is_empty(&self) -> bool {
        match &self.repr {
            Repr::Sparse { runs, .. } => runs.is_empty(),
            Repr::Dense { mask, .. } => mask.iter().all(|&m| m == 0),
        }
    }

    /// True for the dense representation.
    pub fn is_dense(&self) -> bool {
        matches!(self.repr, Repr::Dense { .. })
    }

    /// Number of bytes the delta writes.
    pub fn written_bytes(&self) -> u64 {
        match &self.repr {
            Repr::Sparse { data, .. } => data.len() as u64,
            Repr::Dense { mask, .. } => mask.iter().map(|m| m.count_ones() as u64).sum(),
        }
    }

    /// Bytes of payload the delta carries: what its runs write (sparse), or its whole span,
    /// masked-out bytes included (dense). O(1), unlike [`Delta::written_bytes`], so the route
    /// path can count it on every delta (monitoring's `delta_bytes`).
    #[inline]
    pub fn payload_len(&self) -> u64 {
        match &self.repr {
            Repr::Sparse { data, .. } | Repr::Dense { data, .. } => data.len() as u64,
        }
    }

    /// The half-open byte range the delta touches, if any.
    pub fn span(&self) -> Option<(u64, u64)> {
        match &self.repr {
            Repr::Sparse { runs, .. } => Some((runs.first()?.offset, runs.last()?.end())),
            Repr::Dense { .. } => {
                let mut span: Option<(u64, u64)> = None;
                self.for_each_run(|o, b| {
                    let end = o + b.len() as u64;
                    span = Some(span.map_or((o, end), |(s, _)| (s, end)));
                });
                span
            }
        }
    }

    /// One past the last byte the delta writes (0 for the empty delta): a dense span ends at
    /// its last written byte (see `from_dense_parts`).
    pub fn extent(&self) -> u64 {
        match &self.repr {
            Repr::Sparse { runs, .. } => runs.last().map_or(0, Run::end),
            Repr::Dense { offset, data, .. } => offset + data.len() as u64,
        }
    }

    /// The smallest page size the delta fits (see the bounds rule on [`Delta`]): O(1).
    #[inline]
    pub fn min_page_size(&self) -> u64 {
        self.extent().max(self.anchor)
    }

    /// Checks that the delta fits a page of `page_size` bytes (the bounds rule on [`Delta`]).
    pub fn check_bounds(&self, page_size: u64) -> Result<(), DeltaError> {
        if self.extent() > page_size {
            let (offset, len) = match &self.repr {
                Repr::Sparse { runs, .. } => runs.last().map_or((0, 0), |r| (r.offset, r.len)),
                Repr::Dense { offset, data, .. } => (*offset, data.len() as u64),
            };
            return Err(DeltaError::OutOfBounds { offset, len, page_size });
        }
        if self.anchor > page_size {
            return Err(DeltaError::OutOfBounds { offset: self.anchor, len: 0, page_size });
        }
        Ok(())
    }

    /// Checks that the delta can be encoded (and so logged): the encoding stores each run's
    /// length, the run count and a dense span's length as `u32`, so none may exceed
    /// `u32::MAX` (a 4 GiB run would be written as length 0 and make the log unreadable).
    /// The router checks it for every routed delta, logged or not, so the rule is the same for
    /// every state; [`Delta::encode`] is only called on deltas that passed it.
    pub fn check_encodable(&self) -> Result<(), DeltaError> {
        let max = u64::from(u32::MAX);
        let len = match &self.repr {
            Repr::Sparse { runs, .. } => {
                runs.iter().map(|r| r.len).chain(std::iter::once(runs.len() as u64)).max().unwrap_or(0)
            }
            Repr::Dense { data, .. } => data.len() as u64,
        };
        if len > max {
            return Err(DeltaError::TooLarge { len, max });
        }
        Ok(())
    }

    /// Applies the delta to `page` (a masked write). Fails without writing if it does not fit.
    pub fn apply(&self, page: &mut [u8]) -> Result<(), DeltaError> {
        self.check_bounds(page.len() as u64)?;
        self.apply_unchecked(page);
        Ok(())
    }

    /// Applies a delta already checked with [`Delta::check_bounds`] against `page.len()`.
    pub(crate) fn apply_unchecked(&self, page: &mut [u8]) {
        match &self.repr {
            Repr::Sparse { runs, data } => {
                let mut at = 0usize;
                for r in runs {
                    let len = r.len as usize;
                    let o = r.offset as usize;
                    page[o..o + len].copy_from_slice(&data[at..at + len]);
                    at += len;
                }
            }
            Repr::Dense { offset, mask, data } => {
                let o = *offset as usize;
                apply_dense(&mut page[o..o + data.len()], mask, data);
            }
        }
    }

    /// The writes as canonical runs (sorted, disjoint, non-adjacent).
    pub fn to_runs(&self) -> Vec<(u64, Vec<u8>)> {
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        self.for_each_run(|offset, bytes| out.push((offset, bytes.to_vec())));
        out
    }

    /// Calls `f(offset, bytes)` for each canonical run, in order.
    pub fn for_each_run(&self, mut f: impl FnMut(u64, &[u8])) {
        match &self.repr {
            Repr::Sparse { runs, data } => {
                let mut at = 0usize;
                for r in runs {
                    f(r.offset, &data[at..at + r.len as usize]);
                    at += r.len as usize;
                }
            }
            Repr::Dense { offset, mask, data } => {
                let n = data.len();
                let bit = |i: usize| mask[i / 64] & (1 << (i % 64)) != 0;
                let mut i = 0;
                while i < n {
                    if mask[i / 64] == 0 {
                        i = (i / 64 + 1) * 64;
                        continue;
                    }
                    if !bit(i) {
                        i += 1;
                        continue;
                    }
                    let start = i;
                    while i < n && bit(i) {
                        i += 1;
                    }
                    f(offset + start as u64, &data[start..i]);
                }
            }
        }
    }

    /// `self ⊕ later`: the writes of both, `later` winning where they overlap.
    /// The result fits exactly the pages both fit (its anchor is the larger of the two).
    pub fn compose(&self, later: &Delta) -> Delta {
        self.compose_writes(later).with_anchor(self.anchor.max(later.anchor))
    }

    fn compose_writes(&self, later: &Delta) -> Delta {
        if later.is_empty() {
            return self.clone();
        }
        if self.is_empty() {
            return later.clone();
        }
        // Dense over the same span: a word-wide blend, no run bookkeeping.
        if let (Repr::Dense { offset: oa, mask: ma, data: da }, Repr::Dense { offset: ob, mask: mb, data: db }) =
            (&self.repr, &later.repr)
        {
            if oa == ob && da.len() == db.len() {
                let mut data = da.clone();
                apply_dense(&mut data, mb, db);
                let mask = ma.iter().zip(mb).map(|(a, b)| a | b).collect();
                return Delta { repr: Repr::Dense { offset: *oa, mask, data }, anchor: 0 };
            }
        }
        let a = self.to_runs();
        let b = later.to_runs();
        let mut merged: Vec<(u64, &[u8])> = Vec::with_capacity(a.len() + b.len());
        let mut bi = 0;
        for (ao, abytes) in &a {
            let mut lo = *ao;
            let hi = ao + abytes.len() as u64;
            // Skip later runs that end before this piece.
            while bi < b.len() && b[bi].0 + b[bi].1.len() as u64 <= lo {
                merged.push((b[bi].0, &b[bi].1));
                bi += 1;
            }
            let mut k = bi;
            while lo < hi {
                match b.get(k) {
                    Some((bo, bb)) if *bo < hi => {
                        if *bo > lo {
                            let s = (lo - ao) as usize;
                            let e = (bo - ao) as usize;
                            merged.push((lo, &abytes[s..e]));
                        }
                        lo = lo.max(bo + bb.len() as u64);
                        k += 1;
                    }
                    _ => {
                        let s = (lo - ao) as usize;
                        merged.push((lo, &abytes[s..]));
                        lo = hi;
                    }
                }
            }
        }
        merged.extend(b[bi..].iter().map(|(o, v)| (*o, v.as_slice())));
        merged.sort_by_key(|(o, _)| *o);
        Delta::from_sorted_disjoint(&merged)
    }

    /// Builds the cheaper representation from sorted, disjoint (possibly adjacent) runs.
    fn from_sorted_disjoint(pieces: &[(u64, &[u8])]) -> Delta {
        let mut runs: Vec<Run> = Vec::with_capacity(pieces.len());
        let mut data = Vec::new();
        for (o, bytes) in pieces {
            if bytes.is_empty() {
                continue;
            }
            match runs.last_mut() {
                Some(last) if last.end() == *o => last.len += bytes.len() as u64,
                _ => runs.push(Run { offset: *o, len: bytes.len() as u64 }),
            }
            data.extend_from_slice(bytes);
        }
        let (Some(first), Some(last)) = (runs.first(), runs.last()) else {
            return Delta::empty();
        };
        let span = last.end() - first.offset;
        if runs.len() > 1 && dense_encoded_len(span) < sparse_encoded_len(runs.len() as u64, data.len() as u64) {
            let base = first.offset;
            let mut mask = vec![0u64; (span as usize).div_ceil(64)];
            let mut dense = vec![0u8; span as usize];
            let mut at = 0usize;
            for r in &runs {
                let s = (r.offset - base) as usize;
                let len = r.len as usize;
                dense[s..s + len].copy_from_slice(&data[at..at + len]);
                set_bits(&mut mask, s, len);
                at += len;
            }
            return Delta { repr: Repr::Dense { offset: base, mask, data: dense }, anchor: 0 };
        }
        Delta { repr: Repr::Sparse { runs, data }, anchor: 0 }
    }
}

fn set_bits(mask: &mut [u64], start: usize, len: usize) {
    for i in start..start + len {
        mask[i / 64] |= 1 << (i % 64);
    }
}

impl PartialEq for Delta {
    fn eq(&self, other: &Delta) -> bool {
        self.to_runs() == other.to_runs()
    }
}

impl Eq for Delta {}

impl Default for Delta {
    fn default() -> Delta {
        Delta::empty()
    }
}

impl fmt::Debug for Delta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.is_dense() { "dense" } else { "sparse" };
        f.debug_struct("Delta")
            .field("kind", &kind)
            .field("written", &self.written_bytes())
            .field("runs", &self.to_runs())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::mem::MaybeUninit;

    use super::encode::TAG_SPARSE;
    use super::simd::*;
    use super::*;

    // A run or dense span of 4 GiB used to be encoded with length 0 (a `u32`), which made the log
    // unreadable. The lengths are what matter, so the deltas are built without 4 GiB of data.
    #[test]
    fn spans_the_encoding_cannot_hold_are_refused() {
        let max = u64::from(u32::MAX);
        let sparse =
            |len| Delta { repr: Repr::Sparse { runs: vec![Run { offset: 0, len }], data: Vec::new() }, anchor: 0 };
        assert_eq!(sparse(max).check_encodable(), Ok(()));
        assert_eq!(sparse(max + 1).check_encodable(), Err(DeltaError::TooLarge { len: max + 1, max }));
        let dense = Delta::write(0, &[1, 2, 3]).unwrap();
        assert_eq!(dense.check_encodable(), Ok(()));
    }

    #[test]
    fn write_and_apply() {
        let mut page = vec![0u8; 16];
        Delta::write(4, b"abcd").unwrap().apply(&mut page).unwrap();
        assert_eq!(&page[4..8], b"abcd");
        assert!(Delta::write(14, b"abc").unwrap().apply(&mut page).is_err());
        assert_eq!(&page[4..8], b"abcd", "a failed apply writes nothing");
    }

    #[test]
    fn dense_mask_selects_bytes() {
        let mut page = vec![9u8; 130];
        let data: Vec<u8> = (0..130).map(|i| i as u8).collect();
        let mask: Vec<u8> = (0..130).map(|i| (i % 3 == 0) as u8).collect();
        let d = Delta::dense_bytemask(0, &mask, &data).unwrap();
        d.apply(&mut page).unwrap();
        for (i, &b) in page.iter().enumerate() {
            assert_eq!(b, if i % 3 == 0 { i as u8 } else { 9 }, "byte {i}");
        }
        assert_eq!(d.written_bytes(), (0..130).filter(|i| i % 3 == 0).count() as u64);
    }

    /// `masked_copy`'s kernels run one by one on garbage-filled buffers (so a byte a kernel
    /// failed to write shows up), each where this CPU supports it.
    fn masked_copy_paths(src: &[u8], mask: &[u64]) -> Vec<(&'static str, Vec<u8>)> {
        type Kernel = unsafe fn(&mut [MaybeUninit<u8>], &[u8], &[u64]);
        let mut kernels: Vec<(&'static str, Kernel)> = vec![("scalar", |d, s, m| masked_copy_scalar(d, s, m))];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                kernels.push(("avx2", masked_copy_avx2));
            }
            if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw") {
                kernels.push(("avx512", masked_copy_avx512));
            }
        }
        kernels
            .into_iter()
            .map(|(name, kernel)| {
                let mut out = vec![MaybeUninit::new(0xA5u8); src.len()];
                // SAFETY: the CPU supports each kernel (checked above); equal lengths, and the
                // callers' masks cover every byte.
                unsafe { kernel(&mut out, src, mask) };
                // SAFETY: every element was initialised (to 0xA5) before the call.
                (name, out.into_iter().map(|b| unsafe { b.assume_init() }).collect())
            })
            .collect()
    }

    #[test]
    fn simd_and_scalar_blends_agree() {
        #[cfg(target_arch = "x86_64")]
        eprintln!("dense apply uses {:?}", simd_level());
        let mut x = 0x1234_5678_9abc_def0u64;
        for len in [1usize, 31, 64, 100, 129, 4096, 4100] {
            let src: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut mask = vec![0u64; len.div_ceil(64)];
            for (i, m) in mask.iter_mut().enumerate() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *m = match i % 4 {
                    0 => u64::MAX,
                    1 => 0,
                    _ => x,
                };
            }
            if len % 64 != 0 {
                *mask.last_mut().unwrap() &= (1u64 << (len % 64)) - 1;
            }
            let mut a = vec![0xEEu8; len];
            let mut b = a.clone();
            apply_dense(&mut a, &mask, &src);
            apply_dense_scalar(&mut b, &mask, &src);
            assert_eq!(a, b, "len {len}");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut c = vec![0xEEu8; len];
                // SAFETY: AVX2 checked just above; lengths equal, mask covers len bits.
                unsafe { apply_dense_avx2(&mut c, &mask, &src) };
                assert_eq!(c, b, "avx2, len {len}");
            }
            // The canonical payload: every path of the one-pass masked copy gives src & mask.
            let want: Vec<u8> =
                (0..len).map(|i| if mask[i / 64] & (1 << (i % 64)) != 0 { src[i] } else { 0 }).collect();
            assert_eq!(masked_copy(&src, &mask), want, "masked copy, len {len}");
            for (path, got) in masked_copy_paths(&src, &mask) {
                assert_eq!(got, want, "masked copy ({path}), len {len}");
            }
            for (i, (&got, &s)) in a.iter().zip(&src).enumerate() {
                let set = mask[i / 64] & (1 << (i % 64)) != 0;
                assert_eq!(got, if set { s } else { 0xEE }, "len {len} byte {i}");
            }
        }
    }

    #[test]
    fn dense_rejects_mask_length_mismatch() {
        assert!(matches!(Delta::dense(0, &[0xFF], &[1; 9]), Err(DeltaError::MaskLengthMismatch { .. })));
        assert!(matches!(Delta::dense_bytemask(0, &[1; 3], &[1; 4]), Err(DeltaError::MaskLengthMismatch { .. })));
    }

    #[test]
    fn overflowing_offsets_are_errors() {
        assert!(matches!(Delta::write(u64::MAX, b"x"), Err(DeltaError::Overflow { .. })));
    }

    #[test]
    fn sparse_later_run_wins() {
        let d = Delta::sparse([(0u64, &b"aaaa"[..]), (2, &b"bb"[..])]).unwrap();
        assert_eq!(d.to_runs(), vec![(0, b"aabb".to_vec())]);
    }

    #[test]
    fn compose_later_wins_and_identity() {
        let a = Delta::write(0, b"hello").unwrap();
        let b = Delta::write(3, b"LOWORLD").unwrap();
        let c = a.compose(&b);
        let mut page = vec![0u8; 10];
        c.apply(&mut page).unwrap();
        assert_eq!(&page, b"helLOWORLD");
        assert_eq!(a.compose(&Delta::empty()), a);
        assert_eq!(Delta::empty().compose(&a), a);
    }

    #[test]
    fn next_difference_finds_every_position_from_every_start() {
        let a: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        for diff_at in (0..300).chain([300]) {
            let mut b = a.clone();
            if diff_at < 300 {
                b[diff_at] ^= 0x80;
            }
            for from in [0, 1, 7, 8, 63, 64, 65, 128, 200, 299, 300] {
                let expect = if from <= diff_at { diff_at } else { (from..300).find(|&k| a[k] != b[k]).unwrap_or(300) };
                assert_eq!(next_difference(&a, &b, from), expect, "difference at {diff_at}, from {from}");
            }
        }
    }

    #[test]
    fn diff_round_trips_and_is_small() {
        let old = vec![0u8; 4096];
        let mut new = old.clone();
        new[10] = 1;
        new[4000] = 2;
        let d = Delta::diff(&old, &new).unwrap();
        assert!(!d.is_dense());
        assert_eq!(d.written_bytes(), 2);
        let mut s = old.clone();
        d.apply(&mut s).unwrap();
        assert_eq!(s, new);
        assert!(Delta::diff(&old, &new).unwrap().encoded_len() < 64);
        let all: Vec<u8> = (0..4096).map(|i| (i % 2) as u8).collect();
        let d = Delta::diff(&old, &all).unwrap();
        assert!(d.encoded_len() <= 4096 + 32, "short gaps are bridged, not paid for with run headers");
        let mut s = old.clone();
        d.apply(&mut s).unwrap();
        assert_eq!(s, all);
    }

    #[test]
    fn codec_round_trip_and_rejects_garbage() {
        let ds = [
            Delta::empty(),
            Delta::write(7, b"xyz").unwrap(),
            Delta::dense(3, &[0b1010_0101, 0b1], &[1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap(),
        ];
        for d in &ds {
            let mut buf = Vec::new();
            d.encode(&mut buf);
            assert_eq!(buf.len(), d.encoded_len());
            let mut split = Vec::new();
            let payload = d.encode_split(&mut split).to_vec();
            split.extend_from_slice(&payload);
            assert_eq!(split, buf, "encode_split + payload == encode");
            let (back, used) = Delta::decode(&buf).unwrap();
            assert_eq!(used, buf.len());
            assert_eq!(&back, d);
            for cut in 0..buf.len() {
                assert!(Delta::decode(&buf[..cut]).is_err(), "truncation at {cut} accepted");
            }
        }
        assert!(Delta::decode(&[7]).is_err());
        // Overlapping runs are not canonical.
        let mut bad = vec![TAG_SPARSE, 2, 0, 0, 0];
        for off in [0u64, 1] {
            bad.extend_from_slice(&off.to_le_bytes());
            bad.extend_from_slice(&2u32.to_le_bytes());
        }
        bad.extend_from_slice(&[0; 4]);
        assert!(Delta::decode(&bad).is_err());
    }
}
