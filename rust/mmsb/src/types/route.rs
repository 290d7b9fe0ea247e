//! [`RouteOp`], one delta of a routed batch: the unit the runtime commits and every observer
//! (device dirty tracking, events, monitoring) is shown.

use crate::types::delta::Delta;
use crate::types::page::PageId;

/// One delta of a batch.
#[derive(Debug, Clone, Copy)]
pub struct RouteOp<'a> {
    /// The page the delta applies to.
    pub page: PageId,
    /// The delta.
    pub delta: &'a Delta,
    /// Compare-and-set: the page's epoch just before this delta must equal this value.
    pub expected_epoch: Option<u64>,
}
