//! The JetStream side: the crate's async runtime, connecting, and the names of a state's
//! stream, subject and checkpoint bucket.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use mmsb::types::error::ReplicaError;

/// How long a JetStream request (publish acknowledgement, stream info, fetch) may take before
/// it counts as failed and is retried.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a write in `Durability::Replicated` waits for its acknowledgement before it fails
/// (`ErrorCode::Replication`): long enough to ride out a JetStream leader election.
pub(crate) const REPLICATION_TIMEOUT: Duration = Duration::from_secs(30);
/// JetStream's duplicate window for the stream: re-sends of a record within it are dropped.
pub(crate) const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The crate's runtime: two worker threads, started on first use, shared by every primary and
/// follower of the process. The core never sees it.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mmsb-replica")
            .enable_all()
            .build()
            .expect("the replication runtime starts")
    })
}

/// Runs `f` to completion on the runtime, from a thread outside it.
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

/// Where a state replicates to: the NATS servers and the state's stream name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// NATS server URLs, comma-separated (`nats://host:4222,nats://host2:4222`).
    pub url: String,
    /// The stream's name: letters, digits, `-` and `_` (JetStream's rule for names).
    pub stream: String,
    /// JetStream replicas of the stream and the checkpoint bucket (3 for the R=3 quorum that
    /// `Replicated` promises; 1 for a single-node server).
    pub replicas: usize,
}

impl Target {
    /// A target with 3 replicas.
    pub fn new(url: impl Into<String>, stream: impl Into<String>) -> Target {
        Target { url: url.into(), stream: stream.into(), replicas: 3 }
    }

    /// The subject the stream stores.
    pub(crate) fn subject(&self) -> String {
        format!("mmsb.{}.log", self.stream)
    }

    /// The object store bucket of the stream's checkpoints.
    pub(crate) fn bucket(&self) -> String {
        format!("mmsb-ckpt-{}", self.stream)
    }

    pub(crate) fn validate(&self) -> mmsb::Result<()> {
        let ok = !self.stream.is_empty()
            && self.stream.len() <= 200
            && self.stream.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(mmsb::Error::InvalidArgument(format!(
                "stream name {:?}: use 1 to 200 letters, digits, '-' or '_'",
                self.stream
            )));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(mmsb::Error::InvalidArgument(format!("replicas is {}; JetStream allows 1..=5", self.replicas)));
        }
        if self.url.trim().is_empty() {
            return Err(mmsb::Error::InvalidArgument("the NATS URL is empty".into()));
        }
        Ok(())
    }

    /// A `ReplicaError::Failed` naming this target.
    pub(crate) fn failed(&self, what: &str, e: impl std::fmt::Display) -> mmsb::Error {
        ReplicaError::Failed {
            target: format!("{} (stream {})", self.url, self.stream),
            reason: format!("{what}: {e}"),
        }
        .into()
    }

    /// Connects and returns a JetStream context.
    pub(crate) async fn connect(&self) -> mmsb::Result<jetstream::Context> {
        let urls: Vec<async_nats::ServerAddr> = self
            .url
            .split(',')
            .map(|u| u.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|e| self.failed("parse the NATS URL", e))?;
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(REQUEST_TIMEOUT)
            .connect(urls)
            .await
            .map_err(|e| self.failed("connect", e))?;
        let mut js = jetstream::new(client);
        js.set_timeout(REQUEST_TIMEOUT);
        Ok(js)
    }

    /// The stream's configuration.
    pub(crate) fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.stream.clone(),
            subjects: vec![self.subject()],
            num_replicas: self.replicas,
            duplicate_window: DUPLICATE_WINDOW,
            storage: stream::StorageType::File,
            ..Default::default()
        }
    }
}

/// Runs `attempt` until it succeeds, fails with an error other than a transport failure
/// (`ReplicaError::Failed`), or `REPLICATION_TIMEOUT` passes: a node that dies while a
/// primary or follower starts costs a retry, not the start.
pub(crate) async fn retry<T, F, Fut>(mut attempt: F) -> mmsb::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = mmsb::Result<T>>,
{
    let deadline = std::time::Instant::now() + REPLICATION_TIMEOUT;
    loop {
        match attempt().await {
            Err(e) if e.code() == mmsb::ErrorCode::Replication && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            r => return r,
        }
    }
}

/// Opens the stream; a stream that does not exist is `InvalidArgument` (not retried).
pub(crate) async fn open_stream(target: &Target, js: &jetstream::Context) -> mmsb::Result<stream::Stream> {
    match js.get_stream(&target.stream).await {
        Ok(s) => Ok(s),
        Err(e)
            if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
            if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            Err(mmsb::Error::InvalidArgument(format!(
                "no stream {} at {}: start a primary first",
                target.stream, target.url
            )))
        }
        Err(e) => Err(target.failed("open the stream", e)),
    }
}

/// Reads the last message of the stream (`None` when it is empty) and its sequence.
pub(crate) async fn last_message(
    target: &Target,
    stream: &stream::Stream,
) -> mmsb::Result<Option<(u64, bytes::Bytes)>> {
    let info = stream.get_info().await.map_err(|e| target.failed("read the stream info", e))?;
    let last = info.state.last_sequence;
    if info.state.messages == 0 {
        return Ok(None);
    }
    let m = stream.get_raw_message(last).await.map_err(|e| target.failed("read the last message", e))?;
    Ok(Some((last, m.payload)))
}
