//! Replication of an MMSB state through NATS JetStream (issue 22).
//!
//! - [`Primary`]: a state whose every log record is published, in LSN order, to one stream per
//!   state; writes in `Durability::Replicated` return once the stream acknowledged them.
//! - [`Follower`]: a read-only state that applies the stream through the core's replay path,
//!   resumes from its durable position, reports its [`Lag`], and can be promoted to primary
//!   (fencing the old one).
//! - Checkpoints go to the JetStream object store ([`Primary::publish_checkpoint`]); new
//!   followers start from the newest, and [`Primary::compact_stream`] trims the stream below it.
//!
//! The core (`mmsb`) has no async runtime: this crate brings one (`tokio`, two threads) and
//! hooks into the core through `mmsb::runtime::replica_hook`. See `docs/replication.md`.

mod checkpoint;
mod follower;
mod nats;
mod position;
mod primary;
pub mod wire;

pub use checkpoint::CheckpointHeader;
pub use follower::{FollowOptions, Follower, Lag};
pub use nats::Target;
pub use primary::{Primary, PrimaryStats};
