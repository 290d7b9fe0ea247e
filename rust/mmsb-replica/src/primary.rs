//! The primary: a state whose every log record is published, in LSN order, to its stream.
//!
//! The core calls [`Publisher`] (a `RecordObserver`) under the state's lock for each appended
//! record; it queues the record for one publishing task, which sends windows of records
//! pipelined, each with `Nats-Expected-Last-Sequence` (so two primaries can never interleave:
//! the second's publish fails) and a message id derived from the LSN (so a re-send after a
//! lost acknowledgement is dropped by the duplicate window). A write in
//! `Durability::Replicated` returns once the stream acknowledged its record (R=3 quorum).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use mmsb::runtime::replica_hook::{ObserverSlot, RawRecord, RecordObserver};
use mmsb::runtime::tlog::record::Record;
use mmsb::runtime::tlog::storage::Storage;
use mmsb::types::error::ReplicaError;
use mmsb::{Config, LogOp, Lsn, MMSBState};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::checkpoint::{self, CheckpointHeader};
use crate::nats::{block_on, last_message, retry, runtime, Target, REPLICATION_TIMEOUT, REQUEST_TIMEOUT};
use crate::wire::{self, Envelope, KIND_TERM};

/// Messages sent and not yet acknowledged, at most.
const MAX_IN_FLIGHT: usize = 1024;
/// One message carries at most this many records, and this many body bytes (unless a single
/// record is larger): below the NATS server's default 1 MiB payload limit.
const MAX_RECORDS_PER_MESSAGE: usize = 1024;
const MAX_MESSAGE_BYTES: usize = 256 << 10;

/// A queued log record (or term record: `kind` `KIND_TERM`, `count` 0).
struct Outgoing {
    lsn: Lsn,
    count: u64,
    kind: u8,
    body: Vec<u8>,
}

impl Outgoing {
    fn last_lsn(&self) -> Lsn {
        (self.lsn + self.count).saturating_sub(1).max(self.lsn)
    }
}

/// Why the primary stopped publishing.
#[derive(Debug, Clone)]
enum Fault {
    Fenced { term: u64 },
    Failed(String),
}

#[derive(Debug, Default)]
struct Progress {
    /// Highest LSN the stream acknowledged.
    acked_lsn: Lsn,
    /// Stream sequence of the last acknowledged message.
    acked_seq: u64,
    fault: Option<Fault>,
}

/// The observer the core calls; shared with the publishing task.
pub(crate) struct Publisher {
    target: Target,
    state_id: u128,
    term: u64,
    /// Taken by `Primary::close`: the task ends once it has sent what was queued.
    tx: Mutex<Option<mpsc::UnboundedSender<Outgoing>>>,
    progress: Mutex<Progress>,
    /// Threads waiting in `wait` for an LSN's acknowledgement. Each acknowledgement wakes
    /// only those it covers: with a condition variable every acknowledgement woke every
    /// waiting writer (8 in the benchmark), most of them to sleep again, on a 2-core machine.
    waiters: Mutex<Vec<(Lsn, std::thread::Thread)>>,
    /// Messages published (acknowledged) since open.
    published: AtomicU64,
    /// Stream messages copied back into the log at open.
    copied_back: AtomicU64,
    /// The highest LSN the local log has made durable (`RecordObserver::committed`), for
    /// statistics: records are published as soon as they are appended, before their fsync, so
    /// the stream may run ahead of it (a restarted primary copies such records back, see
    /// `Primary::start_with`).
    local_durable: AtomicU64,
    /// Records up to this LSN are in the stream already: `appended` does not queue them (the
    /// records a restarted primary copies back from the stream into its log).
    skip_through: AtomicU64,
}

impl Publisher {
    fn error(&self, f: &Fault) -> mmsb::Error {
        match f {
            Fault::Fenced { term } => ReplicaError::Fenced { stream: self.target.stream.clone(), term: *term }.into(),
            Fault::Failed(why) => self.target.failed("publish", why),
        }
    }

    fn queue(&self, e: &Envelope<'_>) {
        let o = Outgoing { lsn: e.lsn, count: e.count, kind: e.kind, body: e.body.to_vec() };
        // The task ends only when every sender is gone; a failed send can only follow a fault,
        // which `admit` and `wait` report.
        if let Some(tx) = &*self.tx.lock() {
            let _ = tx.send(o);
        }
    }

    fn set_fault(&self, f: Fault) {
        let mut p = self.progress.lock();
        if p.fault.is_none() {
            p.fault = Some(f);
        }
        drop(p);
        self.wake(Lsn::MAX);
    }

    /// Wakes the waiters whose LSN is acknowledged (`upto`; `Lsn::MAX`: all, after a fault).
    /// Call after updating `progress`. A waiter removes itself when it returns, so one may be
    /// woken more than once; `wait` re-checks the progress each time.
    fn wake(&self, upto: Lsn) {
        for (lsn, t) in self.waiters.lock().iter() {
            if *lsn <= upto {
                t.unpark();
            }
        }
    }
}

impl RecordObserver for Publisher {
    // Called under the state's exclusive lock: lock order is state, then `progress` (never
    // take the state's lock while holding `progress`).
    fn admit(&self) -> mmsb::Result<()> {
        match &self.progress.lock().fault {
            Some(f) => Err(self.error(f)),
            None => Ok(()),
        }
    }

    fn appended(&self, r: RawRecord<'_>) {
        if r.lsn + r.count.max(1) - 1 <= self.skip_through.load(Ordering::Acquire) {
            return;
        }
        self.queue(&Envelope {
            state_id: self.state_id,
            term: self.term,
            lsn: r.lsn,
            count: r.count,
            kind: r.kind,
            body: r.body,
        });
    }

    fn committed(&self, last_lsn: Lsn) {
        self.local_durable.fetch_max(last_lsn, Ordering::Relaxed);
    }

    fn wait(&self, last_lsn: Lsn) -> mmsb::Result<()> {
        let deadline = Instant::now() + REPLICATION_TIMEOUT;
        let me = std::thread::current();
        let mut registered = false;
        let r = loop {
            {
                let p = self.progress.lock();
                if p.acked_lsn >= last_lsn {
                    break Ok(());
                }
                if let Some(f) = &p.fault {
                    break Err(self.error(f));
                }
            }
            if !registered {
                // Registered, then checked again: an acknowledgement between the check above
                // and the registration would otherwise be missed.
                self.waiters.lock().push((last_lsn, me.clone()));
                registered = true;
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                break Err(self.target.failed(
                    "wait for the acknowledgement",
                    format!("LSN {last_lsn} not acknowledged within {REPLICATION_TIMEOUT:?}"),
                ));
            }
            std::thread::park_timeout(deadline - now);
        };
        if registered {
            self.waiters.lock().retain(|(_, t)| t.id() != me.id());
        }
        r
    }

    // Called by compaction (under the log's writer lock: `progress` is a leaf lock there).
    // Records the stream has not acknowledged stay in the local log as logged, so a restart
    // can publish them (`Primary::start_with` re-publishes the log past the stream's end).
    fn retained_after(&self) -> Lsn {
        self.progress.lock().acked_lsn
    }
}

/// The next message from `window[from..]`: a term record alone, else up to
/// `MAX_RECORDS_PER_MESSAGE` consecutive records.
/// Returns how many records it holds, its bytes, its id and its last LSN.
fn next_message(p: &Publisher, window: &VecDeque<Outgoing>, from: usize) -> (usize, bytes::Bytes, String, Lsn) {
    let first = &window[from];
    let head = Envelope {
        state_id: p.state_id,
        term: p.term,
        lsn: first.lsn,
        count: first.count,
        kind: first.kind,
        body: b"",
    };
    let mut n = 1;
    if first.kind != KIND_TERM {
        let mut bytes = first.body.len();
        while let Some(o) = window.get(from + n) {
            if o.kind == KIND_TERM
                || n >= MAX_RECORDS_PER_MESSAGE
                || bytes + o.body.len() + wire::SUB_HEADER_LEN > MAX_MESSAGE_BYTES
            {
                break;
            }
            bytes += o.body.len() + wire::SUB_HEADER_LEN;
            n += 1;
        }
    }
    let last = &window[from + n - 1];
    let e = if n == 1 {
        Envelope { body: &first.body, ..head }.encode()
    } else {
        let mut body = Vec::new();
        for o in window.range(from..from + n) {
            wire::push_sub(&mut body, &wire::Sub { lsn: o.lsn, count: o.count, kind: o.kind, body: &o.body });
        }
        Envelope { count: last.last_lsn() + 1 - first.lsn, kind: wire::KIND_RECORDS, body: &body, ..head }.encode()
    };
    (n, e.into(), head.message_id(), last.last_lsn())
}

type AckFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = (usize, Result<jetstream::publish::PublishAck, String>, bool)> + Send>,
>;

/// The publishing task. Records go out as soon as they are appended (the local fsync runs
/// meanwhile; a `Replicated` write waits for both), grouped
/// into messages, many messages in flight, each with the expected last sequence of the one
/// before; acknowledgements come back in order. After a failed publish it waits out what is in
/// flight, reads the stream's last message to learn what the stream really has, and sends the
/// rest again from there (same ids): a newer term there fences this primary; otherwise it
/// retries until `REPLICATION_TIMEOUT` passes without progress.
async fn publish_loop(
    js: jetstream::Context,
    stream: stream::Stream,
    p: Arc<Publisher>,
    mut last_seq: u64,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    use futures_util::StreamExt;
    let subject = p.target.subject();
    // Records not yet acknowledged, in LSN order; `window[..sent]` are in flight.
    let mut window: VecDeque<Outgoing> = VecDeque::new();
    let mut sent = 0usize;
    let mut in_flight: futures_util::stream::FuturesOrdered<AckFuture> = futures_util::stream::FuturesOrdered::new();
    let mut closed = false;
    let mut stalled_since: Option<Instant> = None;
    loop {
        let mut error: Option<(bool, String)> = None;
        // Whatever else is queued goes into the same messages.
        while !closed {
            match rx.try_recv() {
                Ok(o) => window.push_back(o),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => closed = true,
            }
        }
        while sent < window.len() && in_flight.len() < MAX_IN_FLIGHT {
            let (n, payload, id, _) = next_message(&p, &window, sent);
            let expected = last_seq + in_flight.len() as u64;
            let msg = PublishMessage::build().payload(payload).message_id(id).expected_last_sequence(expected);
            match js.send_publish(subject.clone(), msg).await {
                Ok(f) => {
                    in_flight.push_back(Box::pin(async move {
                        match f.await {
                            Ok(ack) => (n, Ok(ack), false),
                            Err(e) => (n, Err(e.to_string()), e.kind() == PublishErrorKind::WrongLastSequence),
                        }
                    }));
                    sent += n;
                }
                Err(e) => {
                    error = Some((false, e.to_string()));
                    break;
                }
            }
        }
        if error.is_none() {
            if closed && window.is_empty() {
                return;
            }
            tokio::select! {
                r = rx.recv(), if !closed => match r {
                    Some(o) => window.push_back(o),
                    None => closed = true,
                },
                Some((n, r, wrong_seq)) = in_flight.next(), if !in_flight.is_empty() => match r {
                    Ok(ack) if !ack.duplicate && ack.sequence == last_seq + 1 => {
                        last_seq = ack.sequence;
                        let acked = window.drain(..n).next_back().map_or(0, |o| o.last_lsn());
                        sent -= n;
                        let mut pr = p.progress.lock();
                        pr.acked_lsn = pr.acked_lsn.max(acked);
                        pr.acked_seq = last_seq;
                        drop(pr);
                        p.published.fetch_add(1, Ordering::Relaxed);
                        p.wake(acked);
                        stalled_since = None;
                    }
                    Ok(ack) => error = Some((false, format!("acknowledged as sequence {} (duplicate: {}), expected {}", ack.sequence, ack.duplicate, last_seq + 1))),
                    Err(why) => error = Some((wrong_seq, why)),
                },
            }
        }
        let Some((wrong_seq, why)) = error else { continue };
        // Learn what the stream really holds once nothing is in flight.
        while in_flight.next().await.is_some() {}
        sent = 0;
        match last_message(&p.target, &stream).await {
            Ok(Some((seq, bytes))) => match wire::decode(&bytes) {
                Ok(e) if e.state_id == p.state_id && e.term > p.term => {
                    p.set_fault(Fault::Fenced { term: e.term });
                    return;
                }
                Ok(e) if e.state_id == p.state_id && e.term == p.term => {
                    // Ours: everything up to its last LSN is in the stream.
                    last_seq = seq;
                    let have = e.last_lsn();
                    // (Our term record precedes every record of our term, so it is in there too.)
                    while window.front().is_some_and(|o| o.kind == KIND_TERM || o.last_lsn() <= have) {
                        window.pop_front();
                    }
                    let mut pr = p.progress.lock();
                    pr.acked_lsn = pr.acked_lsn.max(have);
                    pr.acked_seq = seq;
                    drop(pr);
                    p.wake(have);
                }
                Ok(e) => {
                    p.set_fault(Fault::Failed(format!(
                        "the stream's last message (sequence {seq}) is state {:032x} term {} LSN {}: another primary writes to it",
                        e.state_id,
                        e.term,
                        e.last_lsn()
                    )));
                    return;
                }
                Err(r) => {
                    p.set_fault(Fault::Failed(format!("the stream's last message is not ours: {r}")));
                    return;
                }
            },
            Ok(None) => {
                p.set_fault(Fault::Failed("the stream was emptied under the primary".into()));
                return;
            }
            Err(_) => {}
        }
        let since = *stalled_since.get_or_insert_with(Instant::now);
        if since.elapsed() > REPLICATION_TIMEOUT {
            p.set_fault(Fault::Failed(format!("no acknowledgement for {REPLICATION_TIMEOUT:?}: {why}")));
            return;
        }
        if !wrong_seq {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The raw messages of the stream from the first one holding a record past LSN `local` (or a
/// term record at `local` or later) to sequence `last_seq`. Messages cover ascending LSN
/// ranges, so a binary search over sequences finds the first one.
async fn stream_after(
    target: &Target,
    stream: &stream::Stream,
    local: Lsn,
    last_seq: u64,
) -> mmsb::Result<Vec<(u64, bytes::Bytes)>> {
    let get = |seq: u64| async move {
        let m = stream.get_raw_message(seq).await.map_err(|e| target.failed("read a stream message", e))?;
        let end = match wire::decode(&m.payload) {
            // A term record covers no LSN; it sits at the LSN its term starts after.
            Ok(e) if e.is_term() => e.lsn,
            Ok(e) => e.last_lsn(),
            Err(reason) => {
                return Err(ReplicaError::Malformed { stream: target.stream.clone(), seq, reason }.into());
            }
        };
        Ok::<_, mmsb::Error>((end, m.payload))
    };
    let first_seq = stream.get_info().await.map_err(|e| target.failed("read the stream info", e))?.state.first_sequence;
    // The first sequence in lo..=hi whose message ends past `local`; `last_seq`'s does.
    let (mut lo, mut hi) = (first_seq, last_seq);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if get(mid).await?.0 > local {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    read_range(target, stream, lo, last_seq).await
}

/// The messages `from..=to` of the stream, read through one pull consumer (batches of up to
/// `COPY_BATCH` per round trip; it used to be one direct get, so one round trip, per message).
/// Purges only remove a prefix, so the sequences are consecutive; anything else is a transport
/// failure (`retry` starts over).
async fn read_range(
    target: &Target,
    stream: &stream::Stream,
    from: u64,
    to: u64,
) -> mmsb::Result<Vec<(u64, bytes::Bytes)>> {
    use futures_util::StreamExt;
    const COPY_BATCH: usize = 512;
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: from },
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(10),
            ..Default::default()
        })
        .await
        .map_err(|e| target.failed("create a consumer to copy back", e))?;
    let mut msgs = consumer
        .stream()
        .max_messages_per_batch(COPY_BATCH)
        .expires(REQUEST_TIMEOUT)
        .messages()
        .await
        .map_err(|e| target.failed("copy back", e))?;
    let mut out = Vec::with_capacity(usize::try_from(to + 1 - from).unwrap_or(0));
    let mut next = from;
    while next <= to {
        let m = match tokio::time::timeout(REQUEST_TIMEOUT, msgs.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Err(target.failed("copy back", e)),
            Ok(None) => return Err(target.failed("copy back", "the message stream ended")),
            Err(_) => return Err(target.failed("copy back", format!("no message {next} within {REQUEST_TIMEOUT:?}"))),
        };
        let seq = m.info().map_err(|e| target.failed("copy back: message metadata", e))?.stream_sequence;
        if seq != next {
            return Err(target.failed("copy back", format!("expected stream sequence {next}, got {seq}")));
        }
        out.push((seq, m.payload.clone()));
        next += 1;
    }
    Ok(out)
}

/// Appends the records of `msgs` past the state's LSN to its log and applies them, checking
/// that they are this state's, in this or an older term, and continue the log without a gap;
/// the state must then be at `upto`.
fn copy_back(
    target: &Target,
    state: &MMSBState,
    id: Identity,
    msgs: &[(u64, bytes::Bytes)],
    upto: Lsn,
) -> mmsb::Result<()> {
    let malformed = |seq: u64, reason: String| -> mmsb::Error {
        ReplicaError::Malformed { stream: target.stream.clone(), seq, reason }.into()
    };
    for (seq, bytes) in msgs {
        let e = wire::decode(bytes).map_err(|r| malformed(*seq, r))?;
        if e.state_id != id.state_id {
            return Err(ReplicaError::ForeignState {
                stream: target.stream.clone(),
                expected: id.state_id,
                found: e.state_id,
                seq: *seq,
            }
            .into());
        }
        if e.term > id.term {
            return Err(ReplicaError::Fenced { stream: target.stream.clone(), term: e.term }.into());
        }
        for sub in e.records().map_err(|r| malformed(*seq, r))? {
            let at = state.lsn();
            if sub.last_lsn() <= at {
                continue;
            }
            if sub.lsn != at + 1 {
                return Err(ReplicaError::Gap { stream: target.stream.clone(), expected: at + 1, got: sub.lsn }.into());
            }
            state.append_replicated(RawRecord { lsn: sub.lsn, count: sub.count, kind: sub.kind, body: sub.body })?;
        }
    }
    if state.lsn() != upto {
        return Err(target.failed(
            "copy back the stream's records",
            format!("the stream's last LSN is {upto} but its records end at LSN {}", state.lsn()),
        ));
    }
    Ok(())
}

/// The identity a directory-backed primary keeps beside its log (`replica.id`): which state
/// it is and the term it writes in, so a restarted primary knows whether it was fenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    pub state_id: u128,
    pub term: u64,
}

const IDENTITY_FILE: &str = "replica.id";

impl Identity {
    fn parse(text: &str, file: &str) -> mmsb::Result<Identity> {
        let mut it = text.split_whitespace();
        let parsed = (|| {
            Some(Identity { state_id: u128::from_str_radix(it.next()?, 16).ok()?, term: it.next()?.parse().ok()? })
        })();
        parsed.ok_or_else(|| {
            mmsb::types::error::LogError::Corrupt {
                file: file.into(),
                offset: 0,
                reason: "expected `<state id hex> <term>`".into(),
            }
            .into()
        })
    }

    /// The identity kept in a state's log storage (a primary opened with its own storage);
    /// the log ignores files it does not name.
    fn load_from(storage: &dyn Storage) -> mmsb::Result<Option<Identity>> {
        if !storage.list().map_err(|e| io_err("list", storage, e))?.iter().any(|n| n == IDENTITY_FILE) {
            return Ok(None);
        }
        let bytes = storage.read(IDENTITY_FILE).map_err(|e| io_err("read", storage, e))?;
        Identity::parse(&String::from_utf8_lossy(&bytes), &storage.describe(IDENTITY_FILE)).map(Some)
    }

    fn store_to(&self, storage: &dyn Storage) -> mmsb::Result<()> {
        let tmp = format!("{IDENTITY_FILE}.tmp");
        let text = format!("{:032x} {}\n", self.state_id, self.term);
        storage
            .create(&tmp)
            .and_then(|f| f.write_at(0, text.as_bytes()).and_then(|()| f.sync()))
            .and_then(|()| storage.rename(&tmp, IDENTITY_FILE))
            .and_then(|()| storage.sync_dir())
            .map_err(|e| io_err("write", storage, e))
    }

    fn load(dir: &Path) -> mmsb::Result<Option<Identity>> {
        let path = dir.join(IDENTITY_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(mmsb::types::error::LogError::io(format!("read {}", path.display()), e).into()),
        };
        Identity::parse(&text, &path.display().to_string()).map(Some)
    }

    pub(crate) fn store(&self, dir: &Path) -> mmsb::Result<()> {
        let path = dir.join(IDENTITY_FILE);
        let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
        let io = |e| mmsb::types::error::LogError::io(format!("write {}", path.display()), e);
        std::fs::write(&tmp, format!("{:032x} {}\n", self.state_id, self.term)).map_err(io)?;
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?)
    }
}

fn io_err(what: &str, storage: &dyn Storage, e: std::io::Error) -> mmsb::Error {
    mmsb::types::error::LogError::io(format!("{what} {}", storage.describe(IDENTITY_FILE)), e).into()
}

/// Statistics of a primary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrimaryStats {
    /// The state's last LSN.
    pub lsn: Lsn,
    /// Highest LSN the stream acknowledged.
    pub acked_lsn: Lsn,
    /// Stream sequence of the last acknowledged message.
    pub acked_seq: u64,
    /// The term this primary writes in.
    pub term: u64,
    /// Messages acknowledged since open.
    pub published: u64,
    /// Stream messages copied back into the local log at open (a log that ended before the
    /// stream, see [`Primary::open`]).
    pub copied_back: u64,
}

/// A state that replicates its log to a JetStream stream.
pub struct Primary {
    state: Arc<MMSBState>,
    publisher: Arc<Publisher>,
    js: jetstream::Context,
}

impl std::fmt::Debug for Primary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Primary").field("target", &self.publisher.target).finish_non_exhaustive()
    }
}

impl Primary {
    /// Opens `config`'s state (its directory, or in memory) as the primary of `target`'s
    /// stream, creating the stream when it does not exist. A directory that replicated before
    /// resumes: records its log has and the stream lacks are published first. Refused with
    /// `ErrorCode::Fenced` when a follower was promoted since (the stream has a newer term),
    /// `ErrorCode::ForeignState` when the stream belongs to another state, and
    /// `InvalidArgument` when the stream already holds a state this primary has no log of.
    pub fn open(target: Target, config: Config) -> mmsb::Result<Primary> {
        Primary::open_inner(target, config, None)
    }

    /// Like [`Primary::open`], with the log and checkpoints in `storage` instead of
    /// `config.dir` (which must be `None`); the primary's identity is kept there too. For
    /// crash tests with `mmsb::runtime::tlog::fault::FaultStorage`.
    pub fn open_with_storage(target: Target, config: Config, storage: Arc<dyn Storage>) -> mmsb::Result<Primary> {
        if config.dir.is_some() {
            return Err(mmsb::Error::InvalidArgument("open_with_storage takes no config.dir".into()));
        }
        Primary::open_inner(target, config, Some(storage))
    }

    fn open_inner(target: Target, config: Config, storage: Option<Arc<dyn Storage>>) -> mmsb::Result<Primary> {
        target.validate()?;
        let dir = config.dir.clone();
        let (js, stream, last) = block_on(retry(|| async {
            let js = target.connect().await?;
            let stream = js
                .get_or_create_stream(target.stream_config())
                .await
                .map_err(|e| target.failed("create the stream", e))?;
            let last = last_message(&target, &stream).await?;
            Ok::<_, mmsb::Error>((js, stream, last))
        }))?;
        let local = match (&dir, &storage) {
            (Some(d), _) => Identity::load(d)?,
            (None, Some(s)) => Identity::load_from(s.as_ref())?,
            (None, None) => None,
        };
        let last = match &last {
            Some((seq, bytes)) => {
                let e = wire::decode(bytes).map_err(|reason| ReplicaError::Malformed {
                    stream: target.stream.clone(),
                    seq: *seq,
                    reason,
                })?;
                Some((*seq, e.state_id, e.term, e.last_lsn()))
            }
            None => None,
        };
        match (local, last) {
            (Some(id), Some((seq, sid, _, _))) if id.state_id != sid => Err(ReplicaError::ForeignState {
                stream: target.stream.clone(),
                expected: id.state_id,
                found: sid,
                seq,
            }
            .into()),
            (Some(id), Some((_, _, term, _))) if term > id.term => {
                Err(ReplicaError::Fenced { stream: target.stream.clone(), term }.into())
            }
            (Some(id), Some((seq, _, _, stream_lsn))) => {
                Primary::start(target, config, storage.clone(), js, stream, id, seq, Some(stream_lsn))
            }
            (None, Some((_, sid, term, lsn))) => Err(mmsb::Error::InvalidArgument(format!(
                "the stream {} already holds state {sid:032x} (term {term}, LSN {lsn}) and this primary has no log of it: \
                 follow the stream, promote a follower, or give the primary's directory",
                target.stream
            ))),
            (local, None) => {
                // A new stream: a fresh identity unless the directory replicated to a stream
                // that was deleted since (then it starts that state's stream again).
                let id = local.unwrap_or(Identity { state_id: random_id(), term: 1 });
                Primary::start(target, config, storage.clone(), js, stream, id, 0, None)
            }
        }
        .inspect(|p| {
            // Checked above that it matches; written on first open.
            let id = Identity { state_id: p.publisher.state_id, term: p.publisher.term };
            match (&dir, &storage) {
                (Some(d), _) => drop(id.store(d)),
                (None, Some(s)) => drop(id.store_to(s.as_ref())),
                (None, None) => {}
            }
        })
    }

    /// Opens the state with the publisher attached and starts publishing: the term record of
    /// a new stream, or the log's records past `stream_lsn`.
    #[allow(clippy::too_many_arguments)]
    fn start(
        target: Target,
        config: Config,
        storage: Option<Arc<dyn Storage>>,
        js: jetstream::Context,
        stream: stream::Stream,
        id: Identity,
        last_seq: u64,
        stream_lsn: Option<Lsn>,
    ) -> mmsb::Result<Primary> {
        Primary::start_with(target, js, stream, id, last_seq, |slot| {
            let config = Config { record_observer: Some(slot), ..config };
            let state = match storage {
                Some(s) => MMSBState::open_with_storage(config, s)?,
                None => MMSBState::open(config)?,
            };
            Ok((state, stream_lsn))
        })
    }

    /// Shared by `open` and promotion: `open_state` opens the state with the given observer and
    /// says up to which LSN the stream already has it (`None`: publish a term record first).
    pub(crate) fn start_with(
        target: Target,
        js: jetstream::Context,
        stream: stream::Stream,
        id: Identity,
        last_seq: u64,
        open_state: impl FnOnce(ObserverSlot) -> mmsb::Result<(MMSBState, Option<Lsn>)>,
    ) -> mmsb::Result<Primary> {
        let (tx, rx) = mpsc::unbounded_channel();
        let publisher = Arc::new(Publisher {
            target: target.clone(),
            state_id: id.state_id,
            term: id.term,
            tx: Mutex::new(Some(tx)),
            progress: Mutex::new(Progress { acked_lsn: 0, acked_seq: last_seq, fault: None }),
            waiters: Mutex::new(Vec::new()),
            published: AtomicU64::new(0),
            copied_back: AtomicU64::new(0),
            local_durable: AtomicU64::new(0),
            skip_through: AtomicU64::new(0),
        });
        let (state, stream_lsn) = open_state(ObserverSlot(publisher.clone() as Arc<dyn RecordObserver>))?;
        let lsn = state.lsn();
        // Everything the state holds at open is in its log already (recovered or promoted).
        publisher.committed(lsn);
        match stream_lsn {
            None => {
                publisher.queue(&Envelope {
                    state_id: id.state_id,
                    term: id.term,
                    lsn,
                    count: 0,
                    kind: KIND_TERM,
                    body: b"",
                });
                if lsn > 0 {
                    // Followers start from a checkpoint: records up to `lsn` are not in the stream.
                    let (clsn, image) = state.checkpoint_image()?;
                    let h =
                        CheckpointHeader { state_id: id.state_id, term: id.term, lsn: clsn, start_seq: last_seq + 1 };
                    block_on(checkpoint::put(&target, &js, &h, &image))?;
                }
            }
            Some(s) if s > lsn => {
                // The stream has records the local log lost (published, then the machine went
                // down before the log's fsync): the stream is the truth. Copy them into the
                // log at their LSNs before any new write, without publishing them again.
                publisher.skip_through.store(s, Ordering::Release);
                let msgs = block_on(retry(|| stream_after(&target, &stream, lsn, last_seq)))?;
                copy_back(&target, &state, id, &msgs, s)?;
                publisher.copied_back.store(msgs.len() as u64, Ordering::Relaxed);
                publisher.committed(state.lsn());
                publisher.progress.lock().acked_lsn = s;
            }
            Some(s) => {
                // Re-publish what the log has beyond the stream (a crash between append and
                // acknowledgement), one message per entry, before any new write.
                let mut at = s;
                for entry in state.log_records(s + 1..lsn + 1)? {
                    let entry = entry?;
                    let (first, count, rec) = match entry.op {
                        LogOp::CreatePage { id: pid, size, location, meta } => (
                            entry.lsn,
                            1,
                            Record::PageCreate(mmsb::runtime::tlog::record::CreateBody {
                                id: pid,
                                size,
                                location,
                                meta,
                            }),
                        ),
                        LogOp::FreePage(pid) => (entry.lsn, 1, Record::PageFree(pid)),
                        LogOp::Delta { page, delta } => (entry.lsn, 1, Record::Batch(vec![(page, delta)])),
                        LogOp::Extension { kind, body } => (entry.lsn, 1, Record::Extension { kind, body }),
                        LogOp::Compacted { first_lsn, .. } => {
                            return Err(target.failed(
                                "resume",
                                format!("LSNs {first_lsn}..={} were compacted before they were published", entry.lsn),
                            ))
                        }
                    };
                    if first != at + 1 {
                        return Err(target.failed("resume", format!("the log skips from LSN {at} to {first}")));
                    }
                    let mut body = Vec::new();
                    rec.encode(&mut body);
                    publisher.queue(&Envelope {
                        state_id: id.state_id,
                        term: id.term,
                        lsn: first,
                        count,
                        kind: rec.kind() as u8,
                        body: &body,
                    });
                    at = first + count - 1;
                }
                let mut p = publisher.progress.lock();
                p.acked_lsn = s;
            }
        }
        runtime().spawn(publish_loop(js.clone(), stream, publisher.clone(), last_seq, rx));
        let primary = Primary { state: Arc::new(state), publisher, js };
        // Everything queued so far (term record, re-published tail) is acknowledged before the
        // primary is handed out, so a fenced or failing stream is an error here.
        primary.publisher.wait(lsn)?;
        Ok(primary)
    }

    /// The state: reads and writes as on any `MMSBState` (writes also publish).
    pub fn state(&self) -> &Arc<MMSBState> {
        &self.state
    }

    /// The stream this primary writes.
    pub fn target(&self) -> &Target {
        &self.publisher.target
    }

    /// Blocks until everything written so far is acknowledged by the stream (what
    /// `Durability::Replicated` does per write).
    pub fn sync(&self) -> mmsb::Result<()> {
        self.publisher.wait(self.state.lsn())
    }

    /// Statistics: LSN, acknowledged LSN and sequence, term.
    pub fn stats(&self) -> PrimaryStats {
        // `progress` copied and released before the state's LSN is read: `admit` takes
        // `progress` under the state's lock, so holding it while taking the state's lock
        // deadlocks against a writer; and reading the LSN second keeps `acked_lsn <= lsn`
        // (records are acknowledged only after they are appended, and the LSN never goes back),
        // which reading it first did not (an acknowledgement could land in between).
        let (acked_lsn, acked_seq) = {
            let p = self.publisher.progress.lock();
            (p.acked_lsn, p.acked_seq)
        };
        let lsn = self.state.lsn();
        PrimaryStats {
            lsn,
            acked_lsn,
            acked_seq,
            term: self.publisher.term,
            published: self.publisher.published.load(Ordering::Relaxed),
            copied_back: self.publisher.copied_back.load(Ordering::Relaxed),
        }
    }

    /// Publishes a checkpoint of the state to the stream's object store bucket (replacing the
    /// previous one), once everything up to it is acknowledged; returns its LSN. New followers
    /// start from it.
    pub fn publish_checkpoint(&self) -> mmsb::Result<Lsn> {
        // Every message acknowledged before the image is taken covers LSNs at or below the
        // image's: a follower may start reading after them.
        let start_seq = self.publisher.progress.lock().acked_seq + 1;
        let (lsn, image) = self.state.checkpoint_image()?;
        self.publisher.wait(lsn)?;
        let h = CheckpointHeader { state_id: self.publisher.state_id, term: self.publisher.term, lsn, start_seq };
        block_on(checkpoint::put(&self.publisher.target, &self.js, &h, &image))?;
        Ok(lsn)
    }

    /// Removes the stream's messages below the newest published checkpoint (never above it);
    /// returns how many were removed. Followers that are behind it restart from the checkpoint.
    pub fn compact_stream(&self) -> mmsb::Result<u64> {
        let target = &self.publisher.target;
        block_on(async {
            let Some((h, _)) = checkpoint::get(target, &self.js).await? else { return Ok(0) };
            if h.state_id != self.publisher.state_id {
                return Ok(0);
            }
            let stream = retry(|| crate::nats::open_stream(target, &self.js)).await?;
            let r = stream.purge().sequence(h.start_seq).await.map_err(|e| target.failed("purge the stream", e))?;
            Ok(r.purged)
        })
    }

    /// Closes the state (waiting for what it queued to be acknowledged, at most
    /// `REPLICATION_TIMEOUT`) and stops publishing. Idempotent; `Drop` does it too.
    pub fn close(&self) -> mmsb::Result<()> {
        let lsn = self.state.lsn();
        self.state.close();
        let r = if self.publisher.progress.lock().acked_lsn >= lsn { Ok(()) } else { self.publisher.wait(lsn) };
        self.publisher.tx.lock().take();
        r
    }

    /// The publisher's identity, for promotion bookkeeping in tests and tools.
    pub fn state_id(&self) -> u128 {
        self.publisher.state_id
    }
}

impl Drop for Primary {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// A random state id (never 0).
fn random_id() -> u128 {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS random source works");
    u128::from_le_bytes(b).max(1)
}
