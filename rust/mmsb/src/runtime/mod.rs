//! Layer 02: the state, the delta router, the transaction log and replay.

pub(crate) mod reentry;
pub mod router;
pub mod state;
/// The transaction log.
pub mod tlog;
