//! Layer 02: the state, the delta router, the transaction log and replay.

// Issue 21: the dense page registry (`Core::pages`).
pub(crate) mod page_table;
pub(crate) mod reentry;
pub mod router;
pub mod state;
/// The transaction log. Its format constants are not part of the C ABI (`ffi/log.rs` is):
/// cbindgen:ignore
pub mod tlog;
