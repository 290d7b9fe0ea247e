//! The page registry: a dense table indexed by `PageId`, each slot holding the page inline with
//! its buffer's address and length, so routing to a page costs one cache miss (the slot) before
//! the data, at 10 pages or 100k alike (a hash map cost three: the bucket, the buffer handle, the
//! data; issue 21).
//!
//! Ids are handed out in increasing order and never reused, so a table indexed by id alone would
//! keep a slot for every page ever freed. The dense part therefore covers `base .. base + len`
//! only while at most half of it (plus a little slack) is holes; pages whose ids fall past that go
//! to an overflow hash map, and the table is rebuilt around the live ids when the overflow holds
//! more pages than the dense part (amortised O(1) per insert). The interface is the subset of `HashMap` the crate uses, so callers do not
//! change.

use std::collections::HashMap;

use crate::types::page::{Page, PageId};
use crate::types::IdHasher;

/// Slots a dense table may have beyond twice its live pages before ids go to the overflow.
const SLACK: usize = 1024;

/// One slot: the page and, cached beside it, where its bytes are (the buffer's address never
/// changes while the page exists, see `types::page`). A slot is two cache lines (128 bytes);
/// aligned to 128 so they are one aligned pair, which the CPU's adjacent-line prefetch brings in
/// together. A route reads both at once (the `Option`'s marker lies in the page's name, in the
/// second line), so the slot costs one miss's latency, not two in a row; the first line holds
/// all that the route then reads and writes (see `Page`'s field order).
#[derive(Debug)]
#[repr(C, align(128))]
struct Slot {
    data: *mut u8,
    len: usize,
    page: Page,
}

// SAFETY: `data` points into the page's own buffer (`page.buf()`), which is `Send + Sync`; the
// pointer is only dereferenced by callers holding the state's lock, as for the buffer itself.
unsafe impl Send for Slot {}
// SAFETY: as above.
unsafe impl Sync for Slot {}

impl Slot {
    fn new(page: Page) -> Slot {
        let data = page.buf().as_ptr() as *mut u8;
        let len = page.buf().len();
        Slot { data, len, page }
    }
}

/// A page found for routing: the page and its bytes' address and length.
pub(crate) struct Entry<'a> {
    pub(crate) page: &'a mut Page,
    pub(crate) data: *mut u8,
    pub(crate) len: usize,
}

/// The registry of live pages (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct PageTable {
    /// Id of `dense[0]`.
    base: u64,
    dense: Vec<Option<Slot>>,
    dense_live: usize,
    overflow: HashMap<PageId, Slot, IdHasher>,
}

impl PageTable {
    #[inline]
    fn index(&self, id: PageId) -> Option<usize> {
        let i = usize::try_from(id.0.checked_sub(self.base)?).ok()?;
        (i < self.dense.len()).then_some(i)
    }

    #[inline]
    fn slot(&self, id: PageId) -> Option<&Slot> {
        match self.index(id) {
            Some(i) => self.dense[i].as_ref(),
            None if self.overflow.is_empty() => None,
            None => self.overflow.get(&id),
        }
    }

    #[inline]
    fn slot_mut(&mut self, id: PageId) -> Option<&mut Slot> {
        match self.index(id) {
            Some(i) => self.dense[i].as_mut(),
            None if self.overflow.is_empty() => None,
            None => self.overflow.get_mut(&id),
        }
    }

    #[inline]
    pub(crate) fn get(&self, id: &PageId) -> Option<&Page> {
        self.slot(*id).map(|s| &s.page)
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, id: &PageId) -> Option<&mut Page> {
        self.slot_mut(*id).map(|s| &mut s.page)
    }

    /// The page with its bytes' address and length, read from the slot (no trip through the
    /// buffer handle): the router's path.
    #[inline]
    pub(crate) fn entry(&mut self, id: PageId) -> Option<Entry<'_>> {
        self.slot_mut(id).map(|s| {
            debug_assert_eq!(s.data as *const u8, s.page.buf().as_ptr(), "a page's buffer moved under the table");
            Entry { data: s.data, len: s.len, page: &mut s.page }
        })
    }

    /// The size of a page, read from its slot, having asked the CPU to start loading the page's bytes at `offset`
    /// (clamped to the page): the router validates every op before it writes any, so the data's
    /// cache miss overlaps the rest of validation and the commit (and, in a batch, the other
    /// pages' misses) instead of following them (issue 21).
    #[inline]
    pub(crate) fn size_of_prefetching(&self, id: PageId, offset: u64) -> Option<u64> {
        let s = self.slot(id)?;
        let at = usize::try_from(offset).unwrap_or(usize::MAX).min(s.len.saturating_sub(1));
        prefetch(s.data.wrapping_add(at));
        Some(s.len as u64)
    }

    pub(crate) fn contains_key(&self, id: &PageId) -> bool {
        self.slot(*id).is_some()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.dense_live + self.overflow.len()
    }

    /// Adds (or replaces) the page with this id; returns the page it replaced.
    pub(crate) fn insert(&mut self, id: PageId, page: Page) -> Option<Page> {
        let slot = Slot::new(page);
        if let Some(i) = self.index(id) {
            let old = self.dense[i].replace(slot);
            if old.is_none() {
                self.dense_live += 1;
            }
            return old.map(|s| s.page);
        }
        if self.dense.is_empty() && self.overflow.is_empty() {
            self.base = id.0;
        }
        // Extend the dense part when the id is just past it and the table stays dense enough.
        let grow_to = id.0.checked_sub(self.base).and_then(|i| usize::try_from(i).ok()).and_then(|i| i.checked_add(1));
        if let Some(n) = grow_to.filter(|&n| n <= 2 * (self.dense_live + 1) + SLACK) {
            self.dense.resize_with(n, || None);
            self.dense[n - 1] = Some(slot);
            self.dense_live += 1;
            return None;
        }
        let old = self.overflow.insert(id, slot).map(|s| s.page);
        // Most pages past the dense part: lay it out again (cost O(pages + dense slots), paid
        // once per as many inserts, so amortised O(1)).
        if self.overflow.len() > self.dense_live {
            self.rebuild();
        }
        old
    }

    pub(crate) fn remove(&mut self, id: &PageId) -> Option<Page> {
        match self.index(*id) {
            Some(i) => {
                let old = self.dense[i].take()?;
                self.dense_live -= 1;
                Some(old.page)
            }
            None => self.overflow.remove(id).map(|s| s.page),
        }
    }

    pub(crate) fn clear(&mut self) {
        *self = PageTable::default();
    }

    /// Lays the table out again around the live ids: a dense part from the smallest id, as far as
    /// it stays dense enough, the rest in the overflow.
    fn rebuild(&mut self) {
        let mut slots: Vec<(PageId, Slot)> = std::mem::take(&mut self.overflow).into_iter().collect();
        let base = self.base;
        slots.extend(
            std::mem::take(&mut self.dense)
                .into_iter()
                .enumerate()
                .filter_map(|(i, s)| s.map(|s| (PageId(base + i as u64), s))),
        );
        slots.sort_unstable_by_key(|(id, _)| *id);
        self.dense_live = 0;
        self.base = slots.first().map_or(0, |(id, _)| id.0);
        // The longest prefix of ids whose span stays within twice its count plus the slack.
        let base = self.base;
        // Offsets from the base, where they fit a usize (always, on 64-bit machines).
        let off = |id: PageId| usize::try_from(id.0 - base).ok();
        let fits = |n: usize, id: PageId| off(id).is_some_and(|o| o < 2 * (n + 1) + SLACK);
        let cut = slots.iter().enumerate().rposition(|(n, (id, _))| fits(n, *id)).map_or(0, |p| p + 1);
        let span = slots.get(cut.wrapping_sub(1)).and_then(|(id, _)| off(*id)).map_or(0, |o| o + 1);
        self.dense.resize_with(span, || None);
        for (n, (id, slot)) in slots.into_iter().enumerate() {
            if n < cut {
                self.dense[off(id).expect("fits: checked for the cut")] = Some(slot);
                self.dense_live += 1;
            } else {
                self.overflow.insert(id, slot);
            }
        }
    }

    /// Live pages, dense part in id order first, then the overflow (unordered).
    pub(crate) fn values(&self) -> impl Iterator<Item = &Page> + '_ {
        self.dense.iter().flatten().chain(self.overflow.values()).map(|s| &s.page)
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &PageId> + '_ {
        self.values().map(|p| &p.id)
    }
}

/// A hint to load the cache line at `p`: never faults and reads nothing the program sees, so
/// any address will do (a stale or dangling one only wastes the hint).
#[inline]
fn prefetch(p: *const u8) {
    // SAFETY: SSE is part of the x86_64 baseline, and a prefetch accesses no memory the
    // program can observe (an invalid address is ignored, never faults).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// `table[&id]`, as for a `HashMap`: panics when the page is missing.
impl std::ops::Index<&PageId> for PageTable {
    type Output = Page;
    fn index(&self, id: &PageId) -> &Page {
        self.get(id).expect("page in the registry")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::page::{Location, PageBuf, PageMeta};

    fn page(id: u64) -> Page {
        Page::new(PageId(id), Location::Cpu, PageMeta::default(), PageBuf::anonymous(8 + id % 7).unwrap())
    }

    fn ids(t: &PageTable) -> Vec<u64> {
        let mut v: Vec<u64> = t.keys().map(|p| p.0).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn behaves_like_a_map_through_growth_churn_and_rebuilds() {
        // A model map checked after every step, through dense growth, frees that leave holes,
        // ids far past the dense part (overflow) and the rebuilds they trigger.
        let mut t = PageTable::default();
        let mut model = std::collections::BTreeMap::new();
        let mut next = 1u64;
        let mut x = 12345u64;
        for step in 0..6_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if !x.is_multiple_of(3) || model.is_empty() {
                // Mostly sequential ids, sometimes a jump far ahead.
                next += if x.is_multiple_of(61) { 3_000 } else { 1 };
                assert!(t.insert(PageId(next), page(next)).is_none());
                model.insert(next, 8 + next % 7);
            } else {
                let k = *model.keys().nth(usize::try_from((x / 3) % model.len() as u64).unwrap()).unwrap();
                assert_eq!(t.remove(&PageId(k)).map(|p| p.id), Some(PageId(k)));
                model.remove(&k);
                assert!(t.remove(&PageId(k)).is_none(), "removed twice");
            }
            if step % 500 == 0 {
                assert_eq!(ids(&t), model.keys().copied().collect::<Vec<_>>());
                for (&k, &size) in &model {
                    assert_eq!(t.size_of_prefetching(PageId(k), 0), Some(size));
                    assert_eq!(t.get(&PageId(k)).map(|p| p.id), Some(PageId(k)));
                }
            }
            assert_eq!(t.len(), model.len());
        }
        for k in [0, next + 1, u64::MAX] {
            assert!(t.get(&PageId(k)).is_none() && !t.contains_key(&PageId(k)));
        }
        // Holes stay bounded: the table never holds more than about twice the live pages.
        let slots = t.dense.len() + t.overflow.len();
        assert!(slots <= 2 * t.len() + 2 * SLACK + 2, "{slots} slots for {} pages", t.len());
    }

    #[test]
    fn churn_does_not_grow_the_table_without_bound() {
        // Create one page, free the previous: ids climb forever, the live set stays at one.
        let mut t = PageTable::default();
        for id in 1..200_000u64 {
            t.insert(PageId(id), page(id));
            if id > 1 {
                t.remove(&PageId(id - 1)).unwrap();
            }
        }
        assert_eq!(ids(&t), vec![199_999]);
        assert!(t.dense.len() + t.overflow.len() <= 2 * SLACK + 2, "{} slots", t.dense.len() + t.overflow.len());
    }

    /// What a route reads and writes of a slot (the buffer's address and length, the page's id,
    /// epoch and dirty ranges) lies in its first cache line (see `Page`'s field order).
    #[test]
    fn what_a_route_touches_is_in_the_slots_first_cache_line() {
        use std::mem::{offset_of, size_of};
        let at = offset_of!(Slot, page);
        let hot = [
            (offset_of!(Slot, data), size_of::<*mut u8>()),
            (offset_of!(Slot, len), size_of::<usize>()),
            (at + offset_of!(Page, id), size_of::<PageId>()),
            (at + offset_of!(Page, epoch), size_of::<u64>()),
            (at + offset_of!(Page, dirty), size_of::<Option<crate::types::dirty::DirtySet>>()),
        ];
        for (off, len) in hot {
            assert!(off + len <= 64, "a hot field at bytes {off}..{} of the slot", off + len);
        }
        assert_eq!((std::mem::size_of::<Option<Slot>>(), std::mem::align_of::<Slot>()), (128, 128));
    }

    #[test]
    fn entry_points_at_the_pages_bytes() {
        let mut t = PageTable::default();
        t.insert(PageId(3), page(3));
        t.insert(PageId(9_000), page(9_000)); // past the dense part: the overflow
        for id in [3, 9_000] {
            let e = t.entry(PageId(id)).unwrap();
            assert_eq!(e.data as *const u8, e.page.buf().as_ptr());
            assert_eq!(e.len as u64, e.page.size());
        }
        assert!(t.entry(PageId(4)).is_none());
        t.clear();
        assert!(t.len() == 0 && t.get(&PageId(3)).is_none());
    }
}
