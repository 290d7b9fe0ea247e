//! Dirty tracking: which byte ranges of a page changed on the CPU since its last device sync.
//!
//! A [`DirtySet`] is a bounded interval set. Ranges are half-open `(start, end)`, kept sorted,
//! disjoint and non-adjacent; when more than `cap` would be needed, the ranges separated by the
//! smallest gaps are merged (down to three quarters of the cap). The set may therefore
//! over-approximate (it covers every changed byte, plus some clean gap bytes); copying a clean
//! byte host→device is harmless because the CPU bytes are canonical.

use crate::types::delta::{Delta, DeltaParts};

/// Default bound on the number of ranges kept per page.
pub const DEFAULT_MAX_RANGES: usize = 64;

/// A bounded set of dirty byte ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtySet {
    ranges: Vec<(u64, u64)>,
    cap: usize,
}

impl Default for DirtySet {
    fn default() -> DirtySet {
        DirtySet::with_cap(DEFAULT_MAX_RANGES)
    }
}

impl DirtySet {
    /// An empty set that keeps at most `cap` ranges (at least 1).
    pub fn with_cap(cap: usize) -> DirtySet {
        DirtySet { ranges: Vec::new(), cap: cap.max(1) }
    }

    /// The ranges, sorted, disjoint and non-adjacent.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// True when nothing is dirty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Total bytes covered.
    pub fn bytes(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    /// Removes and returns all ranges.
    pub fn take(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.ranges)
    }

    /// Marks `[start, end)` dirty (an empty range is ignored).
    pub fn mark(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // First range that ends at or after `start` (touching counts: adjacent ranges merge).
        let i = self.ranges.partition_point(|r| r.1 < start);
        if let Some(r) = self.ranges.get(i) {
            if r.0 <= start && end <= r.1 {
                return; // already covered: the common case once a hot region is dirty
            }
        }
        // First range that starts strictly after `end`.
        let j = i + self.ranges[i..].partition_point(|r| r.0 <= end);
        if i == j {
            self.ranges.insert(i, (start, end));
            self.enforce_cap();
        } else {
            let merged = (start.min(self.ranges[i].0), end.max(self.ranges[j - 1].1));
            self.ranges[i] = merged;
            self.ranges.drain(i + 1..j);
        }
    }

    /// Marks the bytes a delta writes. Sparse deltas mark each run while that fits the cap (else
    /// their span); dense deltas mark the span between their first and last masked byte.
    pub fn mark_delta(&mut self, delta: &Delta) {
        match delta.parts() {
            DeltaParts::Sparse { runs, .. } => {
                let (Some(first), Some(last)) = (runs.first(), runs.last()) else { return };
                if runs.len() <= self.cap {
                    for r in runs {
                        self.mark(r.offset, r.offset + r.len);
                    }
                } else {
                    self.mark(first.offset, last.offset + last.len);
                }
            }
            DeltaParts::Dense { offset, mask, .. } => {
                let Some(w0) = mask.iter().position(|&m| m != 0) else { return };
                let w1 = mask.iter().rposition(|&m| m != 0).unwrap_or(w0);
                let lo = w0 as u64 * 64 + u64::from(mask[w0].trailing_zeros());
                let hi = w1 as u64 * 64 + 64 - u64::from(mask[w1].leading_zeros());
                self.mark(offset + lo, offset + hi);
            }
        }
    }

    /// Removes `[start, end)` from the set (the bytes became clean on both sides).
    pub fn subtract(&mut self, start: u64, end: u64) {
        if start >= end || self.ranges.is_empty() {
            return;
        }
        let i = self.ranges.partition_point(|r| r.1 <= start);
        let j = self.ranges.partition_point(|r| r.0 < end);
        if i >= j {
            return;
        }
        let mut keep = Vec::with_capacity(2);
        let (first_start, _) = self.ranges[i];
        let (_, last_end) = self.ranges[j - 1];
        if first_start < start {
            keep.push((first_start, start));
        }
        if last_end > end {
            keep.push((end, last_end));
        }
        self.ranges.splice(i..j, keep);
        self.enforce_cap();
    }

    /// Over the cap, merges the closest neighbours until a quarter of the cap is free again, so
    /// the O(n log n) pass runs once per `cap / 4` new ranges rather than on every insert.
    fn enforce_cap(&mut self) {
        let n = self.ranges.len();
        if n <= self.cap {
            return;
        }
        let target = self.cap - self.cap / 4;
        let merges = n - target;
        // (gap, index of the range before it); ties go to the lower index, deterministically.
        let mut gaps: Vec<(u64, usize)> =
            self.ranges.windows(2).enumerate().map(|(k, w)| (w[1].0 - w[0].1, k)).collect();
        gaps.select_nth_unstable(merges - 1);
        let mut merge_after = vec![false; n];
        for &(_, k) in &gaps[..merges] {
            merge_after[k] = true;
        }
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(self.cap);
        for (k, &r) in self.ranges.iter().enumerate() {
            match out.last_mut() {
                Some(last) if merge_after[k - 1] => last.1 = r.1,
                _ => out.push(r),
            }
        }
        self.ranges = out;
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, reason = "test offsets below 600")]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn merges_overlapping_and_adjacent() {
        let mut d = DirtySet::default();
        d.mark(10, 20);
        d.mark(30, 40);
        assert_eq!(d.ranges(), &[(10, 20), (30, 40)]);
        d.mark(20, 25); // adjacent to the first
        assert_eq!(d.ranges(), &[(10, 25), (30, 40)]);
        d.mark(5, 35); // swallows both
        assert_eq!(d.ranges(), &[(5, 40)]);
        d.mark(7, 7);
        assert_eq!(d.ranges(), &[(5, 40)]);
        assert_eq!(d.bytes(), 35);
    }

    #[test]
    fn cap_coalesces_the_closest_ranges() {
        let mut d = DirtySet::with_cap(2);
        d.mark(0, 1);
        d.mark(100, 101);
        d.mark(103, 104); // gap 2 to the previous one: closest pair
        assert_eq!(d.ranges(), &[(0, 1), (100, 104)]);
    }

    #[test]
    fn subtract_splits() {
        let mut d = DirtySet::default();
        d.mark(0, 100);
        d.subtract(10, 20);
        assert_eq!(d.ranges(), &[(0, 10), (20, 100)]);
        d.subtract(0, 10);
        d.subtract(90, 200);
        assert_eq!(d.ranges(), &[(20, 90)]);
        d.subtract(0, 1000);
        assert!(d.is_empty());
    }

    #[test]
    fn delta_marks() {
        let mut d = DirtySet::default();
        d.mark_delta(&Delta::sparse([(4u64, &b"ab"[..]), (100, &b"c"[..])]).unwrap());
        assert_eq!(d.ranges(), &[(4, 6), (100, 101)]);
        let mut d = DirtySet::default();
        let mut mask = vec![0u8; 200];
        mask[3] = 1;
        mask[150] = 1;
        d.mark_delta(&Delta::dense_bytemask(1000, &mask, &[7u8; 200]).unwrap());
        assert_eq!(d.ranges(), &[(1003, 1151)]);
    }

    proptest! {
        /// The set always covers every marked byte, stays canonical and within its cap.
        #[test]
        fn covers_marks(cap in 1usize..6, marks in prop::collection::vec((0u64..500, 0u64..40), 0..40)) {
            let mut d = DirtySet::with_cap(cap);
            let mut truth = vec![false; 600];
            for (s, l) in &marks {
                d.mark(*s, s + l);
                for b in &mut truth[*s as usize..(s + l) as usize] { *b = true; }
            }
            prop_assert!(d.ranges().len() <= cap);
            for w in d.ranges().windows(2) {
                prop_assert!(w[0].1 < w[1].0, "not canonical: {:?}", d.ranges());
            }
            for (i, &t) in truth.iter().enumerate() {
                if t {
                    prop_assert!(d.ranges().iter().any(|&(s, e)| s <= i as u64 && (i as u64) < e), "byte {} lost", i);
                }
            }
            if cap >= marks.len() {
                // Without cap pressure the set is exact.
                prop_assert_eq!(d.bytes(), truth.iter().filter(|&&t| t).count() as u64);
            }
        }
    }
}
