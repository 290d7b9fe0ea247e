//! Layer 02: the state, the delta router, the transaction log and replay.

pub mod router;
pub mod state;
pub mod tlog;
