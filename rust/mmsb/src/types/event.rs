//! The event types every layer emits ([`Event`], [`EventKind`], [`SyncDirection`]); the hub
//! that delivers them to subscribers is `runtime::events`.

use serde::{Deserialize, Serialize};

use crate::types::lsn::Lsn;
use crate::types::page::PageId;

/// Event kinds, as bits of a subscription mask.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A delta was applied to a page.
    DeltaApplied = 1,
    /// A propagation round finished.
    PropagationDone = 2,
    /// A checkpoint was written.
    Checkpoint = 4,
    /// A device mirror was synchronised.
    DeviceSync = 8,
    /// An instrumentation hook fired.
    Instrumentation = 16,
    /// A metric crossed its budget.
    Budget = 32,
}

impl EventKind {
    /// A mask with every event kind.
    /// cbindgen:ignore
    pub const MASK_ALL: u32 = 0x3F;
}

/// One event: a small tuple, copied to every interested subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A delta was applied: the page's epoch after it, and its LSN.
    DeltaApplied {
        /// The delta's LSN.
        lsn: Lsn,
        /// The page it changed.
        page: PageId,
        /// The page's epoch after the delta.
        epoch: u64,
    },
    /// A propagation round finished.
    PropagationDone {
        /// The round's number (1 for the first round of the state).
        round: u64,
        /// Pages recomputed in the round.
        recomputed: u64,
        /// Pages whose recomputation changed nothing, so their dependents were skipped.
        cutoff: u64,
    },
    /// A checkpoint covering the log up to `lsn` was written.
    Checkpoint {
        /// The last LSN the checkpoint covers.
        lsn: Lsn,
    },
    /// A page's device mirror was synchronised.
    DeviceSync {
        /// The page whose mirror was synchronised.
        page: PageId,
        /// Which way the bytes moved.
        direction: SyncDirection,
    },
    /// An instrumentation hook fired (`kind` is the hook's own code).
    Instrumentation {
        /// The hook's own code.
        kind: u32,
        /// The page the hook wrote.
        page: PageId,
    },
    /// A monitored metric crossed its budget.
    Budget {
        /// The metric's C number (`Metric`).
        metric: u32,
        /// The value that crossed the budget.
        value: u64,
        /// The budget's limit.
        limit: u64,
    },
}

impl Event {
    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::DeltaApplied { .. } => EventKind::DeltaApplied,
            Event::PropagationDone { .. } => EventKind::PropagationDone,
            Event::Checkpoint { .. } => EventKind::Checkpoint,
            Event::DeviceSync { .. } => EventKind::DeviceSync,
            Event::Instrumentation { .. } => EventKind::Instrumentation,
            Event::Budget { .. } => EventKind::Budget,
        }
    }
}

/// Which way bytes move.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SyncDirection {
    /// CPU page → device mirror (pushes the CPU-dirty ranges).
    HostToDevice = 0,
    /// Device mirror → CPU page; the bytes that differ are routed as a delta (and logged).
    DeviceToHost = 1,
}

impl SyncDirection {
    /// Decodes the C ABI / log representation.
    pub fn from_u32(v: u32) -> Option<SyncDirection> {
        match v {
            0 => Some(SyncDirection::HostToDevice),
            1 => Some(SyncDirection::DeviceToHost),
            _ => None,
        }
    }
}
