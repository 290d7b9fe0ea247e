//! DeviceSync command buffers and the copy planner.
//!
//! Callers describe *intentions* ([`SyncCommand`]: this page, this direction, these ranges);
//! [`plan`] turns a buffer of them into few, large copies ([`CopyOp`]) laid out back to back in a
//! staging buffer per direction. Ranges closer than `merge_gap` are copied as one (a PCIe copy
//! has a fixed cost of a few microseconds, worth several KiB of bandwidth), and a page whose
//! requested bytes exceed `whole_page_percent` of it is copied whole.

use std::collections::BTreeMap;

use crate::types::error::DeviceError;
use crate::types::page::PageId;

pub use crate::types::event::SyncDirection;

/// One intention: move `ranges` of `page` in `direction`. Empty `ranges` means the whole page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncCommand {
    /// The page to sync.
    pub page: PageId,
    /// Which way the bytes move.
    pub direction: SyncDirection,
    /// Half-open byte ranges `(start, end)`, in any order, possibly overlapping.
    pub ranges: Vec<(u64, u64)>,
}

/// An ordered buffer of sync intentions, planned and executed together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandBuffer {
    cmds: Vec<SyncCommand>,
}

impl CommandBuffer {
    /// An empty buffer.
    pub fn new() -> CommandBuffer {
        CommandBuffer::default()
    }

    /// Appends an intention.
    pub fn push(&mut self, cmd: SyncCommand) -> &mut Self {
        self.cmds.push(cmd);
        self
    }

    /// The intentions, in submission order.
    pub fn commands(&self) -> &[SyncCommand] {
        &self.cmds
    }

    /// Number of intentions.
    pub fn len(&self) -> usize {
        self.cmds.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.cmds.is_empty()
    }
}

/// Tuning of the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannerConfig {
    /// Ranges separated by fewer bytes than this are copied as one.
    pub merge_gap: u64,
    /// When the requested bytes reach this percentage of the page, copy the whole page.
    pub whole_page_percent: u8,
    /// Alignment of each copy's start in the staging buffer (a power of two).
    pub staging_align: u64,
}

impl Default for PlannerConfig {
    fn default() -> PlannerConfig {
        PlannerConfig { merge_gap: 4096, whole_page_percent: 50, staging_align: 256 }
    }
}

/// One planned copy: `len` bytes at `offset` of `page`, through `staging_offset` of the staging
/// buffer of its direction. `parts` are the requested ranges inside it: a device→host copy only
/// routes the bytes of its parts, so that gap bytes (which the device may hold stale) never
/// overwrite the CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOp {
    /// The page copied.
    pub page: PageId,
    /// Which way the bytes move.
    pub direction: SyncDirection,
    /// First byte of the page copied.
    pub offset: u64,
    /// Bytes copied (the requested parts plus the gaps merged between them).
    pub len: u64,
    /// Where the copy sits in its direction's staging buffer.
    pub staging_offset: u64,
    /// The requested ranges `(start, end)` inside the copy, in page offsets.
    pub parts: Vec<(u64, u64)>,
}

/// The copies for a command buffer, with the staging bytes each direction needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The copies, in execution order.
    pub copies: Vec<CopyOp>,
    /// Staging bytes the host-to-device copies need.
    pub staging_h2d: u64,
    /// Staging bytes the device-to-host copies need.
    pub staging_d2h: u64,
    /// Bytes requested (before gap merging), per direction.
    pub requested_h2d: u64,
    /// Bytes requested device to host, before gap merging.
    pub requested_d2h: u64,
}

impl Plan {
    /// Bytes that will cross the bus per direction (`(h2d, d2h)`).
    pub fn copy_bytes(&self) -> (u64, u64) {
        let sum = |d| self.copies.iter().filter(|c| c.direction == d).map(|c| c.len).sum();
        (sum(SyncDirection::HostToDevice), sum(SyncDirection::DeviceToHost))
    }
}

/// A half-open byte range `(start, end)`.
pub type Range = (u64, u64);

/// Sorts and merges overlapping or adjacent ranges (empty ones dropped).
pub fn normalize(ranges: &mut Vec<(u64, u64)>) {
    ranges.retain(|(s, e)| s < e);
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for &(s, e) in ranges.iter() {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    *ranges = out;
}

/// Plans the copies for `cmds`. `page_size` gives each page's size (None: unknown page).
/// Commands for the same page and direction are merged; pages are planned in id order,
/// host→device before device→host.
pub fn plan(
    cmds: &[SyncCommand],
    page_size: impl Fn(PageId) -> Option<u64>,
    cfg: &PlannerConfig,
) -> Result<Plan, DeviceError> {
    let mut groups: BTreeMap<(SyncDirection, PageId), Vec<(u64, u64)>> = BTreeMap::new();
    for c in cmds {
        let size = page_size(c.page).ok_or_else(|| DeviceError::Invalid(format!("sync of unknown page {}", c.page)))?;
        let g = groups.entry((c.direction, c.page)).or_default();
        if c.ranges.is_empty() {
            g.push((0, size));
        }
        for &(s, e) in &c.ranges {
            if s > e || e > size {
                return Err(DeviceError::Invalid(format!(
                    "sync range {s}..{e} is out of bounds for page {} of {size} bytes",
                    c.page
                )));
            }
            g.push((s, e));
        }
    }
    let align = cfg.staging_align.max(1).next_power_of_two();
    let mut out = Plan::default();
    for ((direction, page), mut ranges) in groups {
        normalize(&mut ranges);
        if ranges.is_empty() {
            continue;
        }
        let size = page_size(page).unwrap_or(0);
        let requested: u64 = ranges.iter().map(|(s, e)| e - s).sum();
        let (staging, req) = match direction {
            SyncDirection::HostToDevice => (&mut out.staging_h2d, &mut out.requested_h2d),
            SyncDirection::DeviceToHost => (&mut out.staging_d2h, &mut out.requested_d2h),
        };
        *req += requested;
        let mut copies: Vec<(Range, Vec<Range>)> = Vec::new();
        if requested.saturating_mul(100) >= u64::from(cfg.whole_page_percent).saturating_mul(size) {
            copies.push(((0, size), ranges));
        } else {
            for r in ranges {
                match copies.last_mut() {
                    Some((span, parts)) if r.0 - span.1 < cfg.merge_gap => {
                        span.1 = r.1;
                        parts.push(r);
                    }
                    _ => copies.push((r, vec![r])),
                }
            }
        }
        for ((s, e), parts) in copies {
            let staging_offset = staging.div_ceil(align) * align;
            *staging = staging_offset + (e - s);
            out.copies.push(CopyOp { page, direction, offset: s, len: e - s, staging_offset, parts });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: PageId = PageId(1);

    fn h2d(ranges: &[(u64, u64)]) -> SyncCommand {
        SyncCommand { page: P, direction: SyncDirection::HostToDevice, ranges: ranges.to_vec() }
    }

    #[test]
    fn close_ranges_merge_far_ranges_do_not() {
        let cfg = PlannerConfig { merge_gap: 100, whole_page_percent: 90, staging_align: 1 };
        let p = plan(&[h2d(&[(0, 10), (50, 60), (1000, 1010)])], |_| Some(1 << 20), &cfg).unwrap();
        let spans: Vec<_> = p.copies.iter().map(|c| (c.offset, c.len, c.staging_offset)).collect();
        assert_eq!(spans, vec![(0, 60, 0), (1000, 10, 60)]);
        assert_eq!(p.copies[0].parts, vec![(0, 10), (50, 60)]);
        assert_eq!(p.staging_h2d, 70);
        assert_eq!(p.requested_h2d, 30);
    }

    #[test]
    fn mostly_dirty_pages_copy_whole() {
        let cfg = PlannerConfig { merge_gap: 1, whole_page_percent: 50, staging_align: 1 };
        let p = plan(&[h2d(&[(0, 30)]), h2d(&[(40, 70)])], |_| Some(100), &cfg).unwrap();
        assert_eq!(p.copies.len(), 1);
        assert_eq!((p.copies[0].offset, p.copies[0].len), (0, 100));
        assert_eq!(p.copies[0].parts, vec![(0, 30), (40, 70)]);
    }

    #[test]
    fn empty_ranges_mean_whole_page_and_bounds_are_checked() {
        let cfg = PlannerConfig::default();
        let cmd = SyncCommand { page: P, direction: SyncDirection::DeviceToHost, ranges: vec![] };
        let p = plan(&[cmd], |_| Some(5000), &cfg).unwrap();
        assert_eq!((p.copies[0].offset, p.copies[0].len), (0, 5000));
        assert_eq!(p.staging_d2h, 5000);
        assert!(plan(&[h2d(&[(0, 5001)])], |_| Some(5000), &cfg).is_err());
        assert!(plan(&[h2d(&[(0, 1)])], |_| None, &cfg).is_err());
    }

    #[test]
    fn staging_offsets_are_aligned_and_directions_separate() {
        let cfg = PlannerConfig { merge_gap: 0, whole_page_percent: 100, staging_align: 256 };
        let cmds = [
            h2d(&[(0, 10), (5000, 5003)]),
            SyncCommand { page: PageId(2), direction: SyncDirection::DeviceToHost, ranges: vec![(7, 9)] },
        ];
        let p = plan(&cmds, |_| Some(1 << 16), &cfg).unwrap();
        let offs: Vec<_> = p.copies.iter().map(|c| (c.direction, c.staging_offset)).collect();
        assert_eq!(
            offs,
            vec![
                (SyncDirection::HostToDevice, 0),
                (SyncDirection::HostToDevice, 256),
                (SyncDirection::DeviceToHost, 0)
            ]
        );
        assert_eq!(p.copy_bytes(), (13, 2));
    }

    proptest! {
        /// Every requested byte is covered by exactly one copy of its direction, copies lie in the
        /// page, and staging slots never overlap.
        #[test]
        fn plan_covers_requests(
            ranges in prop::collection::vec((0u64..4000, 0u64..300), 1..30),
            gap in 0u64..600,
            pct in 1u8..=100,
        ) {
            let size = 4096u64;
            let rs: Vec<(u64, u64)> = ranges.iter().map(|&(s, l)| (s, (s + l).min(size))).collect();
            let cfg = PlannerConfig { merge_gap: gap, whole_page_percent: pct, staging_align: 64 };
            let p = plan(&[h2d(&rs)], |_| Some(size), &cfg).unwrap();
            for &(s, e) in &rs {
                for b in s..e {
                    let n = p.copies.iter().filter(|c| c.offset <= b && b < c.offset + c.len).count();
                    prop_assert_eq!(n, 1, "byte {} covered {} times", b, n);
                }
            }
            let mut slots: Vec<_> = p.copies.iter().map(|c| (c.staging_offset, c.staging_offset + c.len)).collect();
            slots.sort_unstable();
            for w in slots.windows(2) { prop_assert!(w[0].1 <= w[1].0); }
            for c in &p.copies {
                prop_assert!(c.offset + c.len <= size);
                prop_assert_eq!(c.staging_offset % 64, 0);
                for &(s, e) in &c.parts { prop_assert!(c.offset <= s && e <= c.offset + c.len); }
            }
        }
    }
}
