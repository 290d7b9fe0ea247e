//! The hook replication hangs on (issue 22; the `mmsb-replica` crate implements it).
//!
//! Kept to one trait and four call sites in the log (`runtime/tlog/mod.rs`, `api.rs`): the
//! observer may refuse a write before it is logged (a fenced primary), sees every record right
//! after it was appended, in LSN order, with its encoded body (the bytes recovery and replay
//! decode), learns when each record is locally durable, and makes a writer wait after that
//! (`Durability::Replicated`).

use std::sync::Arc;

use crate::runtime::state::Lsn;
use crate::types::error::Result;

/// One appended log record: LSNs `lsn..lsn + count`, its record type byte and body (the same
/// bytes `MMSBState::apply_replicated` accepts).
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// The record's first LSN.
    pub lsn: Lsn,
    /// How many LSNs it covers (a batch covers one per delta).
    pub count: u64,
    /// The record type byte (`runtime::tlog::record::RecordType`).
    pub kind: u8,
    /// The record body.
    pub body: &'a [u8],
}

/// Sees every record a state appends to its log.
pub trait RecordObserver: Send + Sync + 'static {
    /// Before a record is appended, under the state's exclusive lock: an error refuses the
    /// write, and nothing is logged or applied.
    fn admit(&self) -> Result<()>;
    /// Right after the record was appended, under the state's exclusive lock (so calls come
    /// in LSN order). Must not block: queue the record.
    fn appended(&self, record: RawRecord<'_>);
    /// After the local log made the record `..=last_lsn` as durable as the state's durability
    /// asks (fsynced in `GroupCommit`, `Always` and `Replicated`), outside the lock, for every
    /// write. (The `mmsb-replica` primary publishes at `appended` already, overlapping the
    /// round trip with the fsync, and repairs a stream that got ahead of a crashed log with
    /// `MMSBState::append_replicated`; it uses this call for its statistics.)
    fn committed(&self, last_lsn: Lsn);
    /// After `committed`, for writes in `Durability::Replicated`: returns once the observer
    /// has made the record durable too.
    fn wait(&self, last_lsn: Lsn) -> Result<()>;
    /// The highest LSN whose records the observer holds elsewhere (a primary: the LSN its
    /// stream acknowledged). Compaction and checkpoint pruning keep every record past it as
    /// it was logged (not folded, not removed), so a primary whose stream lagged behind can
    /// still publish them after a restart. The default keeps nothing back.
    fn retained_after(&self) -> Lsn {
        Lsn::MAX
    }
}

/// A `Config` slot for a [`RecordObserver`] (cloneable, printable).
#[derive(Clone)]
pub struct ObserverSlot(pub Arc<dyn RecordObserver>);

impl std::fmt::Debug for ObserverSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObserverSlot(..)")
    }
}
