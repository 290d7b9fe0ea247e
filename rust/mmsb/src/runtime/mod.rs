//! Layer 02: the state, the delta router, the transaction log and replay.

pub(crate) mod reentry;
/// Replication hook (issue 22).
pub mod replica_hook;
pub mod router;
pub mod state;
/// The transaction log. Its format constants are not part of the C ABI (`ffi/log.rs` is):
/// cbindgen:ignore
pub mod tlog;
