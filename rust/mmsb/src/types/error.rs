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
    /// Success.
    Ok = 0,
    /// An argument is out of its allowed range or malformed (sizes, names, configuration, commands).
    InvalidArgument = 1,
    /// A required pointer was NULL (C ABI only).
    NullPointer = 2,
    /// No page has this id (never created, or freed).
    UnknownPage = 3,
    /// A write or read reaches past the end of its page, or its offset arithmetic overflows.
    OutOfBounds = 4,
    /// Two lengths that must agree do not (mask and payload, old and new buffer).
    LengthMismatch = 5,
    /// The page's epoch is not the one the caller expected; nothing was applied.
    EpochConflict = 6,
    /// The state (or handle) is closed.
    Closed = 7,
    /// Page memory could not be allocated or mapped.
    AllocationFailed = 8,
    /// A file operation failed (log, checkpoint, metrics socket), or the log is poisoned.
    Io = 9,
    /// Log or checkpoint bytes fail their checks.
    Corrupt = 10,
    /// A file has a format version this build cannot read.
    UnsupportedVersion = 11,
    /// A dependency edge would close a cycle.
    Cycle = 12,
    /// No such dependency edge.
    UnknownEdge = 13,
    /// No usable GPU (or GPU use is off).
    NoDevice = 14,
    /// The CUDA driver or the device layer failed.
    Device = 15,
    /// A Rust panic was caught at the C boundary (a bug in MMSB).
    Panic = 16,
    /// The page cannot be freed while something still uses it (an edge, a view).
    PageInUse = 17,
    /// The caller's output buffer is too small (C ABI only).
    BufferTooSmall = 18,
    /// The state is read-only (a replayed snapshot).
    ReadOnly = 19,
    /// Encoded bytes (a delta, a graph record) do not decode.
    Malformed = 20,
    /// A caller-supplied callback (a transform) reported failure.
    Callback = 21,
    /// A monitoring budget was exceeded.
    Budget = 22,
    /// The operation is not supported by this state or build.
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
        }
    }
}

/// Failures of page allocation and lookup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PageError {
    /// No page has this id.
    #[error("unknown page {0}")]
    UnknownPage(PageId),
    /// A page size of zero or above the limit.
    #[error("page size {requested} is invalid (must be 1..={max} bytes)")]
    InvalidSize {
        /// The size asked for, in bytes.
        requested: u64,
        /// The largest size allowed, in bytes.
        max: u64,
    },
    /// The page's memory could not be allocated or mapped.
    #[error("could not allocate {size} bytes for a page: {source}")]
    AllocationFailed {
        /// The size asked for, in bytes.
        size: u64,
        /// What the allocator or `mmap` reported.
        source: io::Error,
    },
    /// The page cannot be freed while something still uses it.
    #[error("page {page} is still in use: {reason}")]
    InUse {
        /// The page.
        page: PageId,
        /// What still uses it (an edge, a view).
        reason: String,
    },
    /// The page's name or tags break a rule of `PageMeta::validate` (length, NUL, count).
    #[error("page metadata is invalid: {0}")]
    InvalidName(String),
}

/// Failures of delta construction, decoding and application.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeltaError {
    /// The delta writes past the end of the page.
    #[error("{len} bytes at offset {offset} are out of bounds for a page of {page_size} bytes")]
    OutOfBounds {
        /// Where the write starts, in bytes from the page start.
        offset: u64,
        /// How many bytes it writes.
        len: u64,
        /// The page's size in bytes.
        page_size: u64,
    },
    /// A dense delta's mask and payload differ in length.
    #[error("mask covers {mask_bytes} bytes but the payload has {payload_bytes}")]
    MaskLengthMismatch {
        /// Bytes the mask covers.
        mask_bytes: u64,
        /// Bytes of payload.
        payload_bytes: u64,
    },
    /// A diff of two buffers of different lengths.
    #[error("buffers differ in length: {old} vs {new} bytes")]
    LengthMismatch {
        /// Length of the old buffer.
        old: u64,
        /// Length of the new buffer.
        new: u64,
    },
    /// `offset + len` does not fit in a `u64`.
    #[error("offset arithmetic overflows (offset {offset}, length {len})")]
    Overflow {
        /// The write's offset.
        offset: u64,
        /// The write's length.
        len: u64,
    },
    /// Encoded delta bytes do not decode; the text names the first broken rule.
    #[error("malformed delta encoding: {0}")]
    Malformed(&'static str),
    /// A run, a dense span or a run count that the encoding (and so the log) cannot hold: each
    /// is a `u32` there. Split such a write into writes of at most 4 GiB - 1 bytes.
    #[error("a delta may write at most {max} contiguous bytes in one run (and hold at most {max} runs); this one has {len}: split the write")]
    TooLarge {
        /// The run length (or run count) the delta has.
        len: u64,
        /// The most the encoding holds.
        max: u64,
    },
}

/// Failures of the state itself (lifecycle, concurrency control, configuration).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The state was closed; every later call fails with this.
    #[error("the state is closed")]
    Closed,
    /// A compare-and-set write found another epoch than the one expected.
    #[error("epoch conflict on page {page}: expected {expected}, found {actual}; nothing was applied")]
    EpochConflict {
        /// The page.
        page: PageId,
        /// The epoch the caller expected.
        expected: u64,
        /// The page's epoch.
        actual: u64,
    },
    /// A write to a read-only state (a replayed snapshot).
    #[error("the state is read-only (a replayed snapshot)")]
    ReadOnly,
    /// A `Config` that cannot be used; the text says which setting.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An operation this state does not offer (for example logging calls on an unlogged state).
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
    /// A file operation of the log failed.
    #[error("log I/O failed while {context}: {source}")]
    Io {
        /// What the log was doing.
        context: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// Log or checkpoint bytes fail their checks.
    #[error("log corrupt in {file} at byte {offset}: {reason}")]
    Corrupt {
        /// The file.
        file: String,
        /// Byte offset of the damage in it.
        offset: u64,
        /// Which check failed.
        reason: String,
    },
    /// A file written by a newer format version.
    #[error("{file} has format version {found}; this build reads up to {supported}")]
    UnsupportedVersion {
        /// The file.
        file: String,
        /// The version it has.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// An LSN older than the retained log or newer than the current one.
    #[error("no log record covers LSN {0}")]
    LsnOutOfRange(u64),
    /// An LSN strictly inside a compacted run, which only its end can be replayed to.
    #[error("LSN {lsn} is inside the compacted run {first}..={last}: replay to {last} or to {} instead", .first - 1)]
    LsnCompacted {
        /// The LSN asked for.
        lsn: u64,
        /// The run's first LSN.
        first: u64,
        /// The run's last LSN (the one replay can reach).
        last: u64,
    },
    /// An earlier write failed, so the log refuses writes until the state is reopened.
    #[error("a previous log write failed; the log is poisoned until the state is reopened: {0}")]
    Poisoned(String),
    /// Another open state holds the directory's lock (`LOCK`): retry once that state is closed.
    #[error("{dir} is in use by another open state (its LOCK file is held); retry after that state is closed")]
    Busy {
        /// The state directory.
        dir: String,
    },
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
    /// The edge would close a dependency cycle; it was not added.
    #[error("adding {from} -> {to} would close the cycle {}", fmt_cycle(.cycle))]
    Cycle {
        /// The edge's source page.
        from: PageId,
        /// The edge's target page.
        to: PageId,
        /// The cycle it would close, as a path of pages.
        cycle: Vec<PageId>,
    },
    /// No edge between these pages.
    #[error("no edge {from} -> {to}")]
    UnknownEdge {
        /// The source page.
        from: PageId,
        /// The target page.
        to: PageId,
    },
    /// The pages already have an edge between them.
    #[error("an edge {from} -> {to} already exists")]
    EdgeExists {
        /// The source page.
        from: PageId,
        /// The target page.
        to: PageId,
    },
    /// A transform command list that cannot run (bad lane, range or operation).
    #[error("invalid transform command: {0}")]
    InvalidCommand(String),
    /// A transform callback returned a non-zero status.
    #[error("transform callback failed on {from} -> {to} with status {status}")]
    Callback {
        /// The edge's source page.
        from: PageId,
        /// The edge's target page.
        to: PageId,
        /// The status the callback returned.
        status: i32,
    },
    /// No edge has this id.
    #[error("no edge with id {0}")]
    UnknownEdgeId(u64),
    /// A graph log record or checkpoint section that does not decode.
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
    /// No usable GPU (none found, the driver failed to load, or GPU use is off).
    #[error("no GPU available: {0}")]
    NoDevice(String),
    /// A CUDA driver call failed.
    #[error("CUDA driver error: {0}")]
    Driver(String),
    /// A device-layer request that cannot be carried out (bad direction, page without mirror).
    #[error("device layer: {0}")]
    Invalid(String),
}

/// Failures of monitoring (budgets, exports).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MonitorError {
    /// No metric or counter has this name or number.
    #[error("unknown metric {0:?}")]
    UnknownMetric(String),
    /// A monitoring setting out of range (a budget, a sampling rate).
    #[error("invalid value: {0}")]
    InvalidValue(String),
    /// The metrics endpoint could not listen (address in use, no permission, ...).
    #[error("cannot serve metrics on {addr}: {source}")]
    Serve {
        /// The address it tried.
        addr: String,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// Failures of a reader in another process (`runtime::reader`, `docs/page-files.md`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReaderError {
    /// The directory has no shared header: no writer with file-backed pages ever opened it.
    #[error("{dir} has no shared page header ({reason}); readers need a state opened with file_backed_pages = true")]
    NotShared {
        /// The directory given.
        dir: String,
        /// What was found instead of a header.
        reason: String,
    },
    /// The writer is recovering the directory (page bytes are being rebuilt): retry shortly.
    #[error("the writer of {dir} is recovering it; retry once it is open")]
    Recovering {
        /// The directory given.
        dir: String,
    },
}

/// The crate-wide error: every domain error converts into it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A page failure.
    #[error(transparent)]
    Page(#[from] PageError),
    /// A delta failure.
    #[error(transparent)]
    Delta(#[from] DeltaError),
    /// A failure of the state itself.
    #[error(transparent)]
    State(#[from] StateError),
    /// A transaction-log failure.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A dependency-graph failure.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// A device-layer failure.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// A monitoring failure.
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    /// A reader's failure (`runtime::reader`).
    #[error(transparent)]
    Reader(#[from] ReaderError),
    /// An argument no domain owns is invalid; the text says which.
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
            Error::Reader(e) => match e {
                ReaderError::NotShared { .. } => ErrorCode::Unsupported,
                ReaderError::Recovering { .. } => ErrorCode::Busy,
            },
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
        }
    }
}

/// Result with the crate-wide error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
