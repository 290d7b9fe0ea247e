//! Layer 02: the state, the delta router, the transaction log and replay.

pub mod events;
pub mod extension;
pub(crate) mod reentry;
pub mod router;
pub mod state;
pub mod stats;
/// The transaction log. Its format constants are not part of the C ABI (`ffi/log.rs` is):
/// cbindgen:ignore
pub mod tlog;
