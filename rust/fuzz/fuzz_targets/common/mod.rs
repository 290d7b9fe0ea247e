//! Helpers shared by the fuzz targets (included with `#[path]`; each target is its own crate).
#![allow(dead_code)]

use mmsb::{MMSBState, PageId, PageInfo};

/// Reads fuzz bytes as values; past the end every read returns zeros.
pub struct Input<'a>(pub &'a [u8]);

impl Input<'_> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn u8(&mut self) -> u8 {
        let (h, t) = self.0.split_first().map_or((0, &[][..]), |(h, t)| (*h, t));
        self.0 = t;
        h
    }
    pub fn u16(&mut self) -> u16 {
        u16::from(self.u8()) << 8 | u16::from(self.u8())
    }
    pub fn u64(&mut self) -> u64 {
        let mut v = 0u64;
        for _ in 0..8 {
            v = v << 8 | u64::from(self.u8());
        }
        v
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        h.to_vec()
    }
}

/// Everything observable about a state's pages and graph.
pub fn snapshot(s: &MMSBState) -> (u64, Vec<(PageInfo, Vec<u8>)>, usize) {
    let pages = s
        .page_ids()
        .unwrap()
        .into_iter()
        .map(|id: PageId| (s.page_info(id).unwrap(), s.read_page(id).unwrap()))
        .collect();
    (s.lsn(), pages, s.with_graph(|g| g.edge_count()).unwrap())
}
