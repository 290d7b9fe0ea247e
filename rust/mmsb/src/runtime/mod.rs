//! Layer 02: the state, the delta router, the transaction log and replay.

/// File-backed pages (`Config::file_backed_pages`): page files, image intervals, external checkpoints.
/// cbindgen:ignore
pub(crate) mod pagefiles;
/// Readers in other processes (`Reader`), through the shared header of `shared`.
/// cbindgen:ignore
pub mod reader;
pub(crate) mod reentry;
pub mod router;
/// The shared header and page table (layout) and the writer's side of it.
/// cbindgen:ignore
pub mod shared;
pub mod state;
/// The transaction log. Its format constants are not part of the C ABI (`ffi/log.rs` is):
/// cbindgen:ignore
pub mod tlog;
