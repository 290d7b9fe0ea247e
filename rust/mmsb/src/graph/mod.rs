//! Layer 05: the ShadowPageGraph, the PropagationEngine and the EventSystem
//! (`state′ ⊗ dependency → propagated_state`).
//!
//! - [`shadow_graph`]: explicit, typed, acyclic dependency edges between pages, with heights;
//! - [`command`]: the transforms edges carry (copy, fill, lane-wise semiring ops, callbacks);
//! - [`propagation`]: deterministic rounds in `(height, PageId)` order with early cutoff;
//! - [`events`]: bounded, filtered subscriptions to what the state does (defined in
//!   `runtime::events`, re-exported);
//! - [`persist`]: postcard records and snapshots of the graph for the log and checkpoints;
//! - [`api`]: the graph and event methods of `MMSBState` (edits and rounds go through the
//!   state's commit entry point).

#[allow(clippy::cast_possible_truncation)] // casts not reviewed yet: only the log paths are
pub mod api;
#[allow(clippy::cast_possible_truncation)] // casts not reviewed yet: only the log paths are
pub mod command;
pub mod persist;
#[allow(clippy::cast_possible_truncation)] // casts not reviewed yet: only the log paths are
pub mod propagation;
pub mod shadow_graph;

/// The event hub lives in `runtime` (every layer emits through it); re-exported here, where the
/// seed places the EventSystem.
pub use crate::runtime::events;

pub use command::{CTransformFn, Callback, Command, CommandList, Lane, RustTransform, SemiOp};
pub use events::{Event, EventKind, EventSystem, OverflowPolicy, Subscription, SyncDirection};
pub use propagation::{MemStore, PageStore, PropagationEngine, RoundStats};
pub use shadow_graph::{EdgeId, EdgeKind, EdgeView, ShadowPageGraph};
