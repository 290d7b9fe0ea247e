//! Layer 02: the state, the delta router, the transaction log and replay.

/// File-backed pages (`Config::file_backed_pages`): page files, image intervals, external checkpoints.
pub(crate) mod pagefiles;
pub(crate) mod reentry;
pub mod router;
pub mod state;
/// The transaction log. Its format constants are not part of the C ABI (`ffi/log.rs` is):
/// cbindgen:ignore
pub mod tlog;
