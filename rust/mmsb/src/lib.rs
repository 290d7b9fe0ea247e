//! MMSB, the Memory-Mapped State Bus: page-aligned state that changes only through
//! deterministic deltas (`state ⊕ Δ → state′`), a transaction log, and a dependency graph that
//! propagates changes (`state′ ⊗ dependency → propagated_state`).
//!
//! The modules follow the layers of the architecture (`docs/architecture.md`):
//! - [`types`]: pages, deltas, errors (layer 01);
//! - [`runtime`]: the state, the delta router, the transaction log and replay (layer 02);
//! - [`device`]: GPU mirrors and device synchronisation (layer 03);
//! - [`graph`]: the ShadowPageGraph, propagation and events (layer 05);
//! - [`monitoring`]: latency histograms, counters and budgets (utils);
//! - `compose`: the composition root, which registers the graph and the device layer with
//!   every state (`MMSBState::open`).
//!
//! The C ABI over all of them is the `mmsb-ffi` crate (`rust/mmsb-ffi`, header
//! `include/mmsb.h`); this crate is plain Rust.
//!
//! Layer 04 (compiler instrumentation) lives in the Julia package, on top of this crate.

// Lints: `[workspace.lints]` in the root Cargo.toml.
// Every public item is documented.
#![deny(missing_docs)]

mod compose;
pub mod device;
pub mod graph;
pub mod monitoring;
pub mod runtime;
pub mod types;

pub use monitoring::{Budget, BudgetViolation, Counter, Metric, Monitor, Stats};
pub use runtime::reader::{ReadInfo, Reader, ReaderView, WriterStatus};
pub use runtime::router::RouteOp;
pub use runtime::state::{Config, Durability, Lsn, MMSBState};
pub use runtime::tlog::{LogEntry, LogInfo, LogOp, LogSlice};
pub use types::delta::Delta;
pub use types::error::{Error, ErrorCode, Result};
pub use types::page::{Location, PageId, PageInfo, PageMeta, PageView};
