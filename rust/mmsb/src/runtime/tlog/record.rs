//! Record types (the registry of type bytes) and their bodies.
//!
//! Structured bodies (page creation, compaction headers) are postcard; delta payloads and masks
//! are the raw `Delta::encode` bytes, so the hot path copies payloads once and never encodes
//! byte by byte.

use serde::{Deserialize, Serialize};

use crate::types::delta::{Delta, EncodedDelta};
use crate::types::page::{Location, PageId, PageMeta};

/// The registry of record type bytes. Values are part of the on-disk format: never reuse one.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    /// A page was created (one LSN).
    PageCreate = 1,
    /// A page was freed (one LSN).
    PageFree = 2,
    /// A routed batch of deltas (one LSN per delta).
    Batch = 3,
    /// The fold of a run of records by `compact_log` (the LSNs of the run).
    Compacted = 4,
    /// A record of another layer (one LSN): body is `kind: u8` then the layer's bytes.
    Extension = 5,
    /// Alignment padding: no LSN, zero body, skipped by every reader (reserved; not written).
    Pad = 6,
}

impl RecordType {
    /// Decodes a type byte (`None` for an unknown one).
    pub fn from_u8(v: u8) -> Option<RecordType> {
        Some(match v {
            1 => RecordType::PageCreate,
            2 => RecordType::PageFree,
            3 => RecordType::Batch,
            4 => RecordType::Compacted,
            5 => RecordType::Extension,
            6 => RecordType::Pad,
            _ => return None,
        })
    }
}

/// Extension kinds reserved for other layers (the `kind` byte of an `Extension` record).
/// Recovery hands extension records to `MMSBState::apply_log_extension` (runtime/state.rs).
pub mod ext_kind {
    /// ShadowPageGraph: an edge was added.
    pub const GRAPH_EDGE_ADD: u8 = 1;
    /// ShadowPageGraph: an edge was removed.
    pub const GRAPH_EDGE_REMOVE: u8 = 2;
    /// Device layer: a host/device synchronisation completed.
    pub const DEVICE_SYNC: u8 = 3;
    /// ShadowPageGraph: the whole graph was replaced by a restored snapshot.
    pub const GRAPH_RESTORE: u8 = 4;
}

/// Body of a `PageCreate` record (postcard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateBody {
    /// The new page.
    pub id: PageId,
    /// Its size in bytes.
    pub size: u64,
    /// Where its canonical bytes live.
    pub location: Location,
    /// Its name and tags.
    pub meta: PageMeta,
}

/// Body of a `Compacted` record: the net effect of a run of page records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompactedBody {
    /// `next_page_id` after the run (pages created and freed inside it leave only this trace).
    pub next_page_id: u64,
    /// Pages that existed before the run and were freed in it.
    pub frees: Vec<PageId>,
    /// Pages created in the run and still alive at its end (zeroed, epoch 0 on creation).
    pub creates: Vec<CreateBody>,
    /// Per page: how many deltas the run applied (the epoch advance) and their composition.
    pub deltas: Vec<(PageId, u64, Delta)>,
}

#[derive(Serialize, Deserialize)]
struct CompactedHead {
    next_page_id: u64,
    frees: Vec<PageId>,
    creates: Vec<CreateBody>,
    deltas: u64,
}

/// A decoded record body.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A page was created.
    PageCreate(CreateBody),
    /// A page was freed.
    PageFree(PageId),
    /// Deltas applied atomically, in order.
    Batch(Vec<(PageId, Delta)>),
    /// The net effect of a compacted run of records.
    Compacted(CompactedBody),
    /// A record of a layer above the log (graph, device), replayed by that layer.
    Extension {
        /// The layer's record kind.
        kind: u8,
        /// Its encoded body.
        body: Vec<u8>,
    },
}

impl Record {
    /// The record's type byte.
    pub fn kind(&self) -> RecordType {
        match self {
            Record::PageCreate(_) => RecordType::PageCreate,
            Record::PageFree(_) => RecordType::PageFree,
            Record::Batch(_) => RecordType::Batch,
            Record::Compacted(_) => RecordType::Compacted,
            Record::Extension { .. } => RecordType::Extension,
        }
    }

    /// Appends the body encoding.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "a compacted run's head lists its pages' ids and metadata, bounded by the pages a state holds; not \
                  checked here"
    )]
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::PageCreate(c) => encode_create(c, out),
            Record::PageFree(id) => out.extend_from_slice(&id.0.to_le_bytes()),
            Record::Batch(ops) => encode_batch(ops.iter().map(|(p, d)| (*p, d)), ops.len(), out),
            Record::Compacted(c) => {
                let head = CompactedHead {
                    next_page_id: c.next_page_id,
                    frees: c.frees.clone(),
                    creates: c.creates.clone(),
                    deltas: c.deltas.len() as u64,
                };
                let h = postcard::to_allocvec(&head).expect("postcard encodes plain structs");
                out.extend_from_slice(&(h.len() as u32).to_le_bytes());
                out.extend_from_slice(&h);
                for (page, n, d) in &c.deltas {
                    out.extend_from_slice(&page.0.to_le_bytes());
                    out.extend_from_slice(&n.to_le_bytes());
                    d.encode(out);
                }
            }
            Record::Extension { kind, body } => {
                out.push(*kind);
                out.extend_from_slice(body);
            }
        }
    }

    /// Decodes a body of type `kind`; `count` is the LSN count from the header, checked against
    /// the body where the body implies it.
    pub fn decode(kind: u8, count: u64, body: &[u8]) -> Result<Record, String> {
        let ty = RecordType::from_u8(kind).ok_or_else(|| format!("unknown record type {kind}"))?;
        let one = |r: Record| if count == 1 { Ok(r) } else { Err(format!("{ty:?} record covers {count} LSNs")) };
        match ty {
            RecordType::PageCreate => {
                let (c, rest): (CreateBody, _) =
                    postcard::take_from_bytes(body).map_err(|e| format!("page create body: {e}"))?;
                Cursor(rest).end()?;
                one(Record::PageCreate(c))
            }
            RecordType::PageFree => {
                if body.len() != 8 {
                    return Err("page free body is not 8 bytes".into());
                }
                one(Record::PageFree(PageId(super::format::le64(body))))
            }
            RecordType::Batch => {
                let mut r = Cursor(body);
                let n = r.u32()? as u64;
                if n != count {
                    return Err(format!("batch of {n} deltas covers {count} LSNs"));
                }
                let mut ops = Vec::with_capacity(n.min(1 << 16) as usize);
                for _ in 0..n {
                    let page = PageId(r.u64()?);
                    ops.push((page, r.delta()?));
                }
                r.end()?;
                Ok(Record::Batch(ops))
            }
            RecordType::Compacted => {
                let mut r = Cursor(body);
                let hl = r.u32()? as usize;
                let head: CompactedHead =
                    postcard::from_bytes(r.take(hl)?).map_err(|e| format!("compacted head: {e}"))?;
                let mut deltas = Vec::with_capacity(head.deltas.min(1 << 16) as usize);
                for _ in 0..head.deltas {
                    let page = PageId(r.u64()?);
                    let n = r.u64()?;
                    deltas.push((page, n, r.delta()?));
                }
                r.end()?;
                Ok(Record::Compacted(CompactedBody {
                    next_page_id: head.next_page_id,
                    frees: head.frees,
                    creates: head.creates,
                    deltas,
                }))
            }
            RecordType::Extension => {
                let (&k, rest) = body.split_first().ok_or("empty extension record")?;
                one(Record::Extension { kind: k, body: rest.to_vec() })
            }
            RecordType::Pad => Err("padding is not a record to apply".into()),
        }
    }
}

/// Visits the deltas of a `Batch` body in order, read in place (replay's hot path: nothing is
/// allocated for sparse deltas): `f(k, page, delta)` for the `k`-th delta. The body is checked
/// as [`Record::decode`] checks it, with the same messages, but deltas before a malformed one
/// have been visited by then: callers that must not change anything on error decode first.
pub(crate) fn for_each_batch_delta<'a>(
    count: u64,
    body: &'a [u8],
    mut f: impl FnMut(u64, PageId, EncodedDelta<'a>) -> Result<(), String>,
) -> Result<(), String> {
    let mut r = Cursor(body);
    let n = u64::from(r.u32()?);
    if n != count {
        return Err(format!("batch of {n} deltas covers {count} LSNs"));
    }
    for k in 0..n {
        let page = PageId(r.u64()?);
        let (d, used) = Delta::decode_in_place(r.0).map_err(|e| format!("delta: {e}"))?;
        r.0 = &r.0[used..];
        f(k, page, d)?;
    }
    r.end()
}

/// Body of a `PageCreate` record.
pub fn encode_create(c: &CreateBody, out: &mut Vec<u8>) {
    let b = postcard::to_allocvec(c).expect("postcard encodes plain structs");
    out.extend_from_slice(&b);
}

/// Body of a `Batch` record, written straight from borrowed deltas (the hot path).
#[allow(
    clippy::cast_possible_truncation,
    reason = "4 G deltas in one batch would take hundreds of GiB of memory; not checked here"
)]
pub fn encode_batch<'a>(ops: impl Iterator<Item = (PageId, &'a Delta)>, n: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
    for (page, d) in ops {
        out.extend_from_slice(&page.0.to_le_bytes());
        d.encode(out);
    }
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err("record body is truncated".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(super::format::le32(self.take(4)?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(super::format::le64(self.take(8)?))
    }
    fn delta(&mut self) -> Result<Delta, String> {
        let (d, used) = Delta::decode(self.0).map_err(|e| format!("delta: {e}"))?;
        self.0 = &self.0[used..];
        Ok(d)
    }
    fn end(&self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(format!("{} trailing bytes in record body", self.0.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip() {
        let recs = [
            (
                Record::PageCreate(CreateBody {
                    id: PageId(3),
                    size: 100,
                    location: Location::Gpu,
                    meta: PageMeta { name: "x".into(), tags: vec![("a".into(), "b".into())] },
                }),
                1,
            ),
            (Record::PageFree(PageId(9)), 1),
            (Record::Batch(vec![(PageId(1), Delta::write(3, b"abc").unwrap()), (PageId(2), Delta::empty())]), 2),
            (
                Record::Compacted(CompactedBody {
                    next_page_id: 7,
                    frees: vec![PageId(1)],
                    creates: vec![],
                    deltas: vec![(PageId(2), 5, Delta::write(0, b"zz").unwrap())],
                }),
                9,
            ),
            (Record::Extension { kind: ext_kind::DEVICE_SYNC, body: vec![1, 2, 3] }, 1),
        ];
        for (r, count) in recs {
            let mut b = Vec::new();
            r.encode(&mut b);
            assert_eq!(Record::decode(r.kind() as u8, count, &b).unwrap(), r);
            if r.kind() != RecordType::Extension {
                assert!(Record::decode(r.kind() as u8, count, &[&b[..], &[0]].concat()).is_err(), "{r:?}");
            }
        }
        assert!(Record::decode(99, 1, &[]).is_err());
    }
}
