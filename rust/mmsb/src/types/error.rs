//! Error types, one per failure domain, and the stable numeric codes they map to at the C boundary.
//!
//! Each domain error converts into the crate-wide [`Error`]; [`Error::code`] gives the
//! [`ErrorCode`] that the C ABI returns and that Julia's `MMSBError` carries.

use std::io;

use crate::types::page::PageId;

/// Stable status codes of the C ABI. Numbers are never reused or renumbered.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ErrorCode {
    #[default]
    Ok = 0,
    InvalidArgument = 1,
    NullPointer = 2,
    UnknownPage = 3,
    OutOfBounds = 4,
    LengthMismatch = 5,
    EpochConflict = 6,
    Closed = 7,
    AllocationFailed = 8,
    Io = 9,
    Corrupt = 10,
    UnsupportedVersion = 11,
    Cycle = 12,
    UnknownEdge = 13,
    NoDevice = 14,
    Device = 15,
    Panic = 16,
    PageInUse = 17,
    BufferTooSmall = 18,
    ReadOnly = 19,
    Malformed = 20,
    Callback = 21,
    Budget = 22,
    Unsupported = 23,
    /// The state directory is locked by another open state (retry once it is closed).
    Busy = 24,
    /// A callback running under a state's lock (a transform in `propagate`) called back into
    /// that state on the same thread, which would deadlock.
    Reentrant = 25,
    /// An LSN older than the retained log or newer than the current one.
    LsnOutOfRange = 26,
    /// An LSN strictly inside a compacted run (its records were merged; only the run's end
    /// can be replayed to).
    LsnCompacted = 27,
    /// Replication (issue 22): a newer primary fenced this one; it is read-only now.
    Fenced = 28,
    /// Replication: a replicated stream skips LSNs; nothing past the gap was applied.
    ReplicaGap = 29,
    /// Replication: a replicated stream holds another state's records; none was applied.
    ForeignState = 30,
    /// Replication: the replication target failed or is unreachable.
    Replication = 31,
}

impl ErrorCode {
    /// A short, stable name for the code (used by the C ABI and in Julia).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Ok => "ok",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NullPointer => "null_pointer",
            ErrorCode::UnknownPage => "unknown_page",
            ErrorCode::OutOfBounds => "out_of_bounds",
            ErrorCode::LengthMismatch => "length_mismatch",
            ErrorCode::EpochConflict => "epoch_conflict",
            ErrorCode::Closed => "closed",
            ErrorCode::AllocationFailed => "allocation_failed",
            ErrorCode::Io => "io",
            ErrorCode::Corrupt => "corrupt",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::Cycle => "cycle",
            ErrorCode::UnknownEdge => "unknown_edge",
            ErrorCode::NoDevice => "no_device",
            ErrorCode::Device => "device",
            ErrorCode::Panic => "panic",
            ErrorCode::PageInUse => "page_in_use",
            ErrorCode::BufferTooSmall => "buffer_too_small",
            ErrorCode::ReadOnly => "read_only",
            ErrorCode::Malformed => "malformed",
            ErrorCode::Callback => "callback",
            ErrorCode::Budget => "budget",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::Busy => "busy",
            ErrorCode::Reentrant => "reentrant",
            ErrorCode::LsnOutOfRange => "lsn_out_of_range",
            ErrorCode::LsnCompacted => "lsn_compacted",
            ErrorCode::Fenced => "fenced",
            ErrorCode::ReplicaGap => "replica_gap",
            ErrorCode::ForeignState => "foreign_state",
            ErrorCode::Replication => "replication",
        }
    }
}

/// Failures of page allocation and lookup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PageError {
    #[error("unknown page {0}")]
    UnknownPage(PageId),
    #[error("page size {requested} is invalid (must be 1..={max} bytes)")]
    InvalidSize { requested: u64, max: u64 },
    #[error("could not allocate {size} bytes for a page: {source}")]
    AllocationFailed { size: u64, source: io::Error },
    #[error("page {page} is still in use: {reason}")]
    InUse { page: PageId, reason: String },
    /// The page's name or tags break a rule of `PageMeta::validate` (length, NUL, count).
    #[error("page metadata is invalid: {0}")]
    InvalidName(String),
}

/// Failures of delta construction, decoding and application.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeltaError {
    #[error("{len} bytes at offset {offset} are out of bounds for a page of {page_size} bytes")]
    OutOfBounds { offset: u64, len: u64, page_size: u64 },
    #[error("mask covers {mask_bytes} bytes but the payload has {payload_bytes}")]
    MaskLengthMismatch { mask_bytes: u64, payload_bytes: u64 },
    #[error("buffers differ in length: {old} vs {new} bytes")]
    LengthMismatch { old: u64, new: u64 },
    #[error("offset arithmetic overflows (offset {offset}, length {len})")]
    Overflow { offset: u64, len: u64 },
    #[error("malformed delta encoding: {0}")]
    Malformed(&'static str),
    /// A run, a dense span or a run count that the encoding (and so the log) cannot hold: each
    /// is a `u32` there. Split such a write into writes of at most 4 GiB - 1 bytes.
    #[error("a delta may write at most {max} contiguous bytes in one run (and hold at most {max} runs); this one has {len}: split the write")]
    TooLarge { len: u64, max: u64 },
}

/// Failures of the state itself (lifecycle, concurrency control, configuration).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("the state is closed")]
    Closed,
    #[error("epoch conflict on page {page}: expected {expected}, found {actual}; nothing was applied")]
    EpochConflict { page: PageId, expected: u64, actual: u64 },
    #[error("the state is read-only (a replayed snapshot)")]
    ReadOnly,
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("{0} is not supported by this state")]
    Unsupported(String),
    /// A call on the state from code that runs under the state's own lock on the same thread
    /// (a transform during `propagate`): refused, because waiting for the lock would deadlock.
    #[error("re-entrant call: {0}")]
    Reentrant(String),
}

/// Failures of the transaction log, checkpoints and recovery.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    #[error("log I/O failed while {context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("log corrupt in {file} at byte {offset}: {reason}")]
    Corrupt { file: String, offset: u64, reason: String },
    #[error("{file} has format version {found}; this build reads up to {supported}")]
    UnsupportedVersion { file: String, found: u32, supported: u32 },
    #[error("no log record covers LSN {0}")]
    LsnOutOfRange(u64),
    #[error("LSN {lsn} is inside the compacted run {first}..={last}: replay to {last} or to {} instead", .first - 1)]
    LsnCompacted { lsn: u64, first: u64, last: u64 },
    #[error("a previous log write failed; the log is poisoned until the state is reopened: {0}")]
    Poisoned(String),
    /// Another open state holds the directory's lock (`LOCK`): retry once that state is closed.
    #[error("{dir} is in use by another open state (its LOCK file is held); retry after that state is closed")]
    Busy { dir: String },
}

impl LogError {
    /// Wraps an I/O error with what the log was doing.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        LogError::Io { context: context.into(), source }
    }
}

/// Failures of the ShadowPageGraph and propagation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    #[error("adding {from} -> {to} would close the cycle {}", fmt_cycle(.cycle))]
    Cycle { from: PageId, to: PageId, cycle: Vec<PageId> },
    #[error("no edge {from} -> {to}")]
    UnknownEdge { from: PageId, to: PageId },
    #[error("an edge {from} -> {to} already exists")]
    EdgeExists { from: PageId, to: PageId },
    #[error("invalid transform command: {0}")]
    InvalidCommand(String),
    #[error("transform callback failed on {from} -> {to} with status {status}")]
    Callback { from: PageId, to: PageId, status: i32 },
    #[error("no edge with id {0}")]
    UnknownEdgeId(u64),
    #[error("malformed graph record: {0}")]
    Malformed(String),
}

fn fmt_cycle(cycle: &[PageId]) -> String {
    cycle.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(" -> ")
}

/// Failures of the device layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    #[error("no GPU available: {0}")]
    NoDevice(String),
    #[error("CUDA driver error: {0}")]
    Driver(String),
    #[error("device layer: {0}")]
    Invalid(String),
}

/// Failures of monitoring (budgets, exports).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MonitorError {
    #[error("unknown metric {0:?}")]
    UnknownMetric(String),
    #[error("invalid value: {0}")]
    InvalidValue(String),
    /// The metrics endpoint could not listen (address in use, no permission, ...).
    #[error("cannot serve metrics on {addr}: {source}")]
    Serve { addr: String, source: std::io::Error },
}

/// The crate-wide error: every domain error converts into it.
/// Failures of replication (the `mmsb-replica` crate, issue 22), carried through the core so
/// that a write refused by a fenced primary or a replica that refuses a stream reaches C and
/// Julia with its own status code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicaError {
    /// A promoted follower wrote a newer term into the stream: this primary may no longer write.
    #[error("fenced: the stream {stream} was taken over by term {term}; this primary is read-only (promote a follower, or reopen as a follower)")]
    Fenced {
        /// The stream.
        stream: String,
        /// The newer term found in it.
        term: u64,
    },
    /// The stream skips LSNs: the record after `expected - 1` has LSN `got`.
    #[error("the stream {stream} has a gap: expected LSN {expected}, found LSN {got}; nothing from LSN {got} on was applied")]
    Gap {
        /// The stream.
        stream: String,
        /// The LSN that was due.
        expected: u64,
        /// The LSN found instead.
        got: u64,
    },
    /// A message of the stream belongs to another state than the one the stream was started by.
    #[error("the stream {stream} holds records of another state (state id {found:032x}, expected {expected:032x}) at stream sequence {seq}; nothing from there on was applied")]
    ForeignState {
        /// The stream.
        stream: String,
        /// The state id the stream (or the local primary) has.
        expected: u128,
        /// The state id of the message.
        found: u128,
        /// The message's stream sequence.
        seq: u64,
    },
    /// A message of the stream is not a valid replicated record.
    #[error("the stream {stream} holds a malformed message at stream sequence {seq}: {reason}")]
    Malformed {
        /// The stream.
        stream: String,
        /// The message's stream sequence (0: the checkpoint object).
        seq: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The replication target failed (connection, timeout, JetStream error).
    #[error("replication through {target} failed: {reason}")]
    Failed {
        /// The NATS URLs and the stream.
        target: String,
        /// What failed.
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Page(#[from] PageError),
    #[error(transparent)]
    Delta(#[from] DeltaError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// The stable status code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Page(e) => match e {
                PageError::UnknownPage(_) => ErrorCode::UnknownPage,
                PageError::InvalidSize { .. } | PageError::InvalidName(_) => ErrorCode::InvalidArgument,
                PageError::AllocationFailed { .. } => ErrorCode::AllocationFailed,
                PageError::InUse { .. } => ErrorCode::PageInUse,
            },
            Error::Delta(e) => match e {
                DeltaError::OutOfBounds { .. } | DeltaError::Overflow { .. } => ErrorCode::OutOfBounds,
                DeltaError::MaskLengthMismatch { .. } | DeltaError::LengthMismatch { .. } => ErrorCode::LengthMismatch,
                DeltaError::Malformed(_) => ErrorCode::Malformed,
                DeltaError::TooLarge { .. } => ErrorCode::InvalidArgument,
            },
            Error::State(e) => match e {
                StateError::Closed => ErrorCode::Closed,
                StateError::EpochConflict { .. } => ErrorCode::EpochConflict,
                StateError::ReadOnly => ErrorCode::ReadOnly,
                StateError::InvalidConfig(_) => ErrorCode::InvalidArgument,
                StateError::Unsupported(_) => ErrorCode::Unsupported,
                StateError::Reentrant(_) => ErrorCode::Reentrant,
            },
            Error::Log(e) => match e {
                LogError::Io { .. } | LogError::Poisoned(_) => ErrorCode::Io,
                LogError::Corrupt { .. } => ErrorCode::Corrupt,
                LogError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
                LogError::Busy { .. } => ErrorCode::Busy,
                LogError::LsnOutOfRange(_) => ErrorCode::LsnOutOfRange,
                LogError::LsnCompacted { .. } => ErrorCode::LsnCompacted,
            },
            Error::Graph(e) => match e {
                GraphError::Cycle { .. } => ErrorCode::Cycle,
                GraphError::UnknownEdge { .. } | GraphError::UnknownEdgeId(_) => ErrorCode::UnknownEdge,
                GraphError::Malformed(_) => ErrorCode::Malformed,
                GraphError::EdgeExists { .. } | GraphError::InvalidCommand(_) => ErrorCode::InvalidArgument,
                GraphError::Callback { .. } => ErrorCode::Callback,
            },
            Error::Device(e) => match e {
                DeviceError::NoDevice(_) => ErrorCode::NoDevice,
                DeviceError::Driver(_) | DeviceError::Invalid(_) => ErrorCode::Device,
            },
            Error::Monitor(e) => match e {
                MonitorError::Serve { .. } => ErrorCode::Io,
                MonitorError::UnknownMetric(_) | MonitorError::InvalidValue(_) => ErrorCode::InvalidArgument,
            },
            Error::Replica(e) => match e {
                ReplicaError::Fenced { .. } => ErrorCode::Fenced,
                ReplicaError::Gap { .. } => ErrorCode::ReplicaGap,
                ReplicaError::ForeignState { .. } => ErrorCode::ForeignState,
                ReplicaError::Malformed { .. } => ErrorCode::Malformed,
                ReplicaError::Failed { .. } => ErrorCode::Replication,
            },
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
        }
    }
}

/// Result with the crate-wide error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
