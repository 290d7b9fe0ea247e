//! Layer 02: the state, the delta router, the transaction log and replay.

/// The one entry point of every change (`MMSBState::commit`) and the change observers.
pub(crate) mod commit;
pub mod events;
pub mod extension;
// Issue 21: the dense page registry (`Core::pages`).
pub(crate) mod page_table;
/// File-backed pages (`Config::file_backed_pages`): page files, image intervals, external checkpoints.
pub(crate) mod pagefiles;
/// Readers in other processes (`Reader`), through the shared header of `shared`.
pub mod reader;
pub(crate) mod reentry;
/// Replication hook (issue 22).
pub mod replica_hook;
pub mod router;
/// The shared header and page table (layout) and the writer's side of it.
pub mod shared;
#[allow(clippy::cast_possible_truncation)] // casts not reviewed yet: only the log paths are
pub mod state;
pub mod stats;
pub mod tlog;
