//! Followers: read-only states that apply a stream in order through the core's replay path,
//! serve reads, keep a durable position (optional directory) and report their lag; and
//! promotion of a follower to primary.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use futures_util::StreamExt;
use mmsb::monitoring::Counter;
use mmsb::runtime::replica_hook::RawRecord;
use mmsb::types::error::{LogError, ReplicaError};
use mmsb::{Config, Lsn, MMSBState};
use parking_lot::{Condvar, Mutex};

use crate::checkpoint;
use crate::nats::{block_on, last_message, open_stream, retry, runtime, Target};
use crate::position::{self, PositionLog};
use crate::primary::{Identity, Primary};
use crate::wire::{self, Envelope, KIND_TERM};

/// Messages fetched (and checked as a whole) per round.
const BATCH: usize = 512;
/// Records applied under one exclusive lock of the replica state.
const APPLY_CHUNK: usize = 4096;
/// How long a batch waits for messages the server said are pending (see `Puller::step`).
const BATCH_LINGER: Duration = Duration::from_millis(5);
/// How long one fetch waits for messages when the follower is caught up.
const FETCH_WAIT: Duration = Duration::from_millis(100);
/// How often the durable position is written (and the stream's last LSN read for the lag).
const SAVE_EVERY: Duration = Duration::from_secs(1);
const LAG_EVERY: Duration = Duration::from_millis(250);
/// A follower that is behind and got no message for this long starts a new consumer.
const STALL_AFTER: Duration = Duration::from_secs(2);

/// Options of [`Follower::follow`].
#[derive(Debug, Clone, Default)]
pub struct FollowOptions {
    /// Where the follower keeps its durable position: a base image with the stream sequence
    /// it continues from, and a log of the messages applied since (appended per batch,
    /// fsynced about once a second and at close; folded into a new base once larger than
    /// it). A restarted follower resumes from it. `None`: a restart starts from the stream's
    /// checkpoint.
    pub dir: Option<PathBuf>,
    /// Limits of the replica state (`max_page_size` must admit the primary's pages); its
    /// directory, logging and durability are ignored.
    pub config: Config,
}

/// How far a follower is behind its stream.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Lag {
    /// The follower's LSN.
    pub applied_lsn: Lsn,
    /// The stream's last LSN when last looked at (every 250 ms).
    pub stream_lsn: Lsn,
    /// `stream_lsn - applied_lsn` (0 when ahead of the last look).
    pub lsn_behind: u64,
    /// Seconds since the last applied message was published, when messages are pending; 0
    /// when caught up.
    pub seconds_behind: f64,
    /// Stream sequence of the last applied message.
    pub applied_seq: u64,
    /// The term of the last term record seen.
    pub term: u64,
    /// Stream messages applied since this follower was opened (a resumed follower applies only
    /// what its durable position lacks).
    pub applied_since_open: u64,
    /// Failed writes of the durable position since open (also the state's
    /// `replica_pos_errors` counter). Nothing is lost: a restart resumes from an older
    /// position and reads more of the stream.
    pub position_errors: u64,
}

/// Why a follower stopped applying.
#[derive(Debug, Clone)]
enum Fault {
    Gap { expected: Lsn, got: Lsn },
    Foreign { expected: u128, found: u128, seq: u64 },
    Malformed { seq: u64, reason: String },
}

#[derive(Debug, Default)]
struct Status {
    state_id: Option<u128>,
    term: u64,
    /// Sequence the next fetch starts at.
    next_seq: u64,
    stream_lsn: Lsn,
    /// Server time (ns since the epoch) of the last applied message, and pending count then.
    last_published_ns: i128,
    pending: u64,
    fault: Option<Fault>,
    /// Messages applied since open.
    applied: u64,
}

struct Shared {
    target: Target,
    state: Arc<MMSBState>,
    status: Mutex<Status>,
    changed: Condvar,
    stop: AtomicBool,
    /// The durable position (with `FollowOptions::dir`), written by the follower's task.
    position: Mutex<Option<PositionLog>>,
    /// Failed writes of the position; the first one is logged, later ones only counted.
    position_errors: AtomicU64,
}

impl Shared {
    fn lag(&self) -> Lag {
        let st = self.status.lock();
        let applied_lsn = self.state.lsn();
        let behind = st.stream_lsn.saturating_sub(applied_lsn);
        let seconds_behind = if behind == 0 && st.pending == 0 || st.last_published_ns == 0 {
            0.0
        } else {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX));
            ((now - st.last_published_ns).max(0) as f64) / 1e9
        };
        Lag {
            applied_lsn,
            stream_lsn: st.stream_lsn,
            lsn_behind: behind,
            seconds_behind,
            applied_seq: st.next_seq.saturating_sub(1),
            term: st.term,
            applied_since_open: st.applied,
            position_errors: self.position_errors.load(Ordering::Relaxed),
        }
    }

    /// Copies the lag into the state's stats gauges (so `get_stats`, the C stats calls and
    /// Julia's `print_stats` show it).
    fn export_lag(&self) {
        let l = self.lag();
        let m = self.state.monitor();
        m.set(Counter::ReplicaLsnBehind, l.lsn_behind);
        let us = Duration::try_from_secs_f64(l.seconds_behind)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        m.set(Counter::ReplicaMicrosBehind, us);
    }

    /// Appends applied messages `(seq, bytes)` to the durable position (if the follower keeps
    /// one); a failure is reported, not returned (see `position_failed`).
    fn append_position<'a>(&self, msgs: impl Iterator<Item = (u64, &'a [u8])>) {
        let appended = self.position.lock().as_mut().map(|pos| pos.append(msgs));
        if let Some(Err(e)) = appended {
            self.position_failed("append to", &e);
        }
    }

    /// A write of the durable position failed: counted in the state's stats
    /// (`replica_pos_errors`) and logged on stderr the first time. Applying goes on;
    /// nothing is lost (a restart resumes from the older position and reads more of the
    /// stream), but a follower whose disk keeps failing resumes from further and further back.
    fn position_failed(&self, what: &str, e: &mmsb::Error) {
        self.state.monitor().incr(Counter::ReplicaPositionErrors, 1);
        if self.position_errors.fetch_add(1, Ordering::Relaxed) == 0 {
            eprintln!(
                "mmsb-replica: follower of stream {}: could not {what} its durable position: {e} \
                 (it keeps applying; a restart resumes from an older position; further failures \
                 are only counted in replica_pos_errors)",
                self.target.stream
            );
        }
    }

    fn error(&self, f: &Fault) -> mmsb::Error {
        let stream = self.target.stream.clone();
        match f.clone() {
            Fault::Gap { expected, got } => ReplicaError::Gap { stream, expected, got }.into(),
            Fault::Foreign { expected, found, seq } => {
                ReplicaError::ForeignState { stream, expected, found, seq }.into()
            }
            Fault::Malformed { seq, reason } => ReplicaError::Malformed { stream, seq, reason }.into(),
        }
    }
}

/// A read-only replica of a stream's state.
pub struct Follower {
    shared: Arc<Shared>,
    js: jetstream::Context,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower").field("target", &self.shared.target).finish_non_exhaustive()
    }
}

/// The fetch-check-apply step, shared by the background task and promotion's catch-up.
struct Puller {
    stream: stream::Stream,
    consumer: Option<jetstream::consumer::Consumer<pull::Config>>,
    messages: Option<pull::Stream>,
    /// When the last message arrived (to notice a consumer that went quiet).
    last_message: Instant,
    /// The consumer sequence of the last message taken (0 for a new consumer).
    delivered: u64,
    last_save: Instant,
}

impl Puller {
    /// Fetches one batch from `next_seq`, checks all of it, then applies it. Returns how many
    /// messages it consumed; `Err` is a transport failure (retried by the caller), a bad
    /// stream is recorded as the follower's fault.
    async fn step(&mut self, sh: &Shared) -> Result<usize, String> {
        let next_seq = sh.status.lock().next_seq;
        if self.consumer.is_none() {
            let c = self
                .stream
                .create_consumer(pull::Config {
                    deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: next_seq },
                    ack_policy: AckPolicy::None,
                    inactive_threshold: Duration::from_secs(10),
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("create a consumer: {e}"))?;
            self.consumer = Some(c);
            self.delivered = 0;
        }
        if self.messages.is_none() {
            let c = self.consumer.as_ref().expect("created above");
            // A continuous pull: the client keeps requests outstanding, so messages flow
            // without a round trip per batch.
            let m = c
                .stream()
                .max_messages_per_batch(BATCH * 2)
                .expires(Duration::from_secs(5))
                .heartbeat(Duration::from_secs(1))
                .messages()
                .await
                .map_err(|e| format!("fetch: {e}"))?;
            self.messages = Some(m);
        }
        let stream = self.messages.as_mut().expect("created above");
        let mut msgs = Vec::new();
        let first = match tokio::time::timeout(FETCH_WAIT, stream.next()).await {
            Err(_) => None,
            Ok(None) => return Err("the message stream ended".into()),
            Ok(Some(Err(e))) => return Err(format!("fetch: {e}")),
            Ok(Some(Ok(m))) => Some(m),
        };
        if let Some(m) = first {
            msgs.push(m);
            // The batch runs to the end of the stream as the server saw it when it sent the
            // last message (its `pending` count), up to BATCH: a bad stream that is already
            // there is refused whole, not after the part that happened to arrive first. It
            // waits for pending messages at most BATCH_LINGER: under a steady stream of
            // writes there is always one pending, and waiting for a full batch then was the
            // lag's long tail.
            let linger = tokio::time::Instant::now() + BATCH_LINGER;
            while msgs.len() < BATCH {
                let pending = msgs.last().and_then(|m| m.info().ok()).map_or(0, |i| i.pending);
                let next = match futures_util::FutureExt::now_or_never(stream.next()) {
                    Some(n) => n,
                    None if pending == 0 => break,
                    None => match tokio::time::timeout_at(linger, stream.next()).await {
                        Ok(n) => n,
                        Err(_) => break,
                    },
                };
                match next {
                    Some(Ok(m)) => msgs.push(m),
                    Some(Err(_)) | None => {
                        self.messages = None;
                        break;
                    }
                }
            }
        }
        if msgs.is_empty() {
            let mut st = sh.status.lock();
            let behind = st.stream_lsn > sh.state.lsn();
            st.pending = 0;
            drop(st);
            self.maybe_save(sh, false);
            // A consumer on a node that died can go quiet without an error: the stream has
            // more, yet nothing came for a while. Start a new one.
            if behind && self.last_message.elapsed() > STALL_AFTER {
                self.last_message = Instant::now();
                return Err("no message for a while although the stream has more".into());
            }
            return Ok(0);
        }
        self.last_message = Instant::now();
        // Check the whole batch before applying any of it.
        let (mut sid, mut term) = {
            let st = sh.status.lock();
            (st.state_id, st.term)
        };
        let mut at = sh.state.lsn();
        // The records to apply, and the stream sequence of each one's message.
        let mut plan: Vec<RawRecord<'_>> = Vec::with_capacity(msgs.len());
        let mut plan_seq: Vec<u64> = Vec::with_capacity(msgs.len());
        let mut used = 0u64;
        let mut fault = None;
        let mut last = (next_seq, 0i128, 0u64);
        let mut lost = false;
        let mut taken = 0;
        let mut taken_seqs = Vec::with_capacity(msgs.len());
        for m in &msgs {
            let info = m.info().map_err(|e| format!("message metadata: {e}"))?;
            if info.consumer_sequence != self.delivered + 1 {
                // A delivery was lost (the consumer's node died with it in flight; without
                // acknowledgements the consumer moves on): stop before it and read again from
                // the follower's position with a new consumer, rather than see a gap.
                lost = true;
                break;
            }
            self.delivered = info.consumer_sequence;
            taken += 1;
            taken_seqs.push(info.stream_sequence);
            let seq = info.stream_sequence;
            last = (seq, info.published.unix_timestamp_nanos(), info.pending);
            let (e, subs) = match wire::decode(&m.payload).and_then(|e| Ok((e, e.records()?))) {
                Ok(x) => x,
                Err(reason) => {
                    fault = Some(Fault::Malformed { seq, reason });
                    break;
                }
            };
            match sid {
                Some(s) if s != e.state_id => {
                    fault = Some(Fault::Foreign { expected: s, found: e.state_id, seq });
                    break;
                }
                _ => sid = Some(e.state_id),
            }
            if e.is_term() {
                if e.lsn != at || e.term < term {
                    fault = Some(if e.lsn != at {
                        Fault::Gap { expected: at + 1, got: e.lsn + 1 }
                    } else {
                        Fault::Malformed { seq, reason: format!("term {} after term {term}", e.term) }
                    });
                    break;
                }
                term = e.term;
                used += 1;
                continue;
            }
            let before = plan.len();
            for sub in subs {
                if sub.last_lsn() <= at {
                    // Already in the checkpoint the follower started from.
                    continue;
                }
                if sub.lsn != at + 1 {
                    fault = Some(Fault::Gap { expected: at + 1, got: sub.lsn });
                    break;
                }
                at = sub.last_lsn();
                plan.push(RawRecord { lsn: sub.lsn, count: sub.count, kind: sub.kind, body: sub.body });
                plan_seq.push(seq);
            }
            if fault.is_some() {
                break;
            }
            used += u64::from(plan.len() > before);
        }
        if let Some(f) = fault {
            sh.status.lock().fault = Some(f);
            sh.changed.notify_all();
            return Ok(0);
        }
        if lost {
            self.reset();
            if taken == 0 {
                // Not "caught up" (promotion's catch-up stops at Ok(0)): read again.
                return Err("a delivery was lost; reading again from the follower's position".into());
            }
        }
        // Many records per exclusive lock (one lock round per record cost more than applying a
        // small delta), in chunks so readers wait at most one chunk.
        for (k, chunk) in plan.chunks(APPLY_CHUNK).enumerate() {
            if let Err(err) = sh.state.apply_replicated_batch(chunk) {
                // The records before the bad one stay applied; name the bad one's message.
                let failed = chunk.iter().position(|r| r.lsn > sh.state.lsn()).unwrap_or(0);
                let seq = plan_seq[k * APPLY_CHUNK + failed];
                sh.status.lock().fault = Some(Fault::Malformed { seq, reason: err.to_string() });
                sh.changed.notify_all();
                return Ok(0);
            }
            if k % 16 == 15 {
                sh.changed.notify_all();
            }
        }
        let mut st = sh.status.lock();
        st.state_id = sid;
        st.term = term;
        st.next_seq = last.0 + 1;
        st.last_published_ns = last.1;
        st.pending = last.2;
        st.applied += used;
        st.stream_lsn = st.stream_lsn.max(at);
        drop(st);
        sh.changed.notify_all();
        sh.append_position(taken_seqs.iter().copied().zip(msgs.iter().map(|m| &m.payload[..])));
        self.maybe_save(sh, false);
        Ok(taken)
    }

    /// Drops the consumer: the next step makes a new one from the follower's position.
    fn reset(&mut self) {
        self.consumer = None;
        self.messages = None;
        self.delivered = 0;
    }

    /// Makes the durable position durable when due (or `now`): an fsync of the position log,
    /// or a new base image once the log outgrew the old one.
    fn maybe_save(&mut self, sh: &Shared, now: bool) {
        let mut pos = sh.position.lock();
        let Some(pos) = pos.as_mut() else { return };
        if !now && self.last_save.elapsed() < SAVE_EVERY {
            return;
        }
        self.last_save = Instant::now();
        // A failed save keeps the older position: a restart re-applies a little more.
        let saved = if pos.wants_fold() {
            let (state_id, term, next_seq) = {
                let st = sh.status.lock();
                (st.state_id, st.term, st.next_seq)
            };
            pos.write_base(&sh.state, state_id, term, next_seq)
        } else {
            pos.sync()
        };
        if let Err(e) = saved {
            sh.position_failed("save", &e);
        }
    }
}

/// Looks up the stream's last LSN (for the lag) every `LAG_EVERY`, in a task of its own: done
/// inline it held up applying for its two round trips, a source of the lag's long tail.
async fn lag_loop(stream: stream::Stream, sh: Arc<Shared>) {
    while !sh.stop.load(Ordering::Acquire) && sh.status.lock().fault.is_none() {
        if let Ok(Some((_, bytes))) = last_message(&sh.target, &stream).await {
            if let Ok(e) = wire::decode(&bytes) {
                let mut st = sh.status.lock();
                st.stream_lsn = st.stream_lsn.max(e.last_lsn());
            }
        }
        sh.export_lag();
        tokio::time::sleep(LAG_EVERY).await;
    }
}

async fn follow_loop(mut p: Puller, sh: Arc<Shared>) {
    while !sh.stop.load(Ordering::Acquire) {
        if sh.status.lock().fault.is_some() {
            break;
        }
        let r = p.step(&sh).await;
        sh.export_lag();
        if r.is_err() {
            // A node went away or the consumer expired: start a new one where we are.
            p.reset();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The lag as the follower stops (a bad stream leaves it behind for good): the stream's
    // end as it is now.
    if let Ok(Some((_, bytes))) = last_message(&sh.target, &p.stream).await {
        if let Ok(e) = wire::decode(&bytes) {
            let mut st = sh.status.lock();
            st.stream_lsn = st.stream_lsn.max(e.last_lsn());
        }
    }
    sh.export_lag();
    p.maybe_save(&sh, true);
}

impl Follower {
    /// Opens a read-only replica of `target`'s stream and starts applying it in the
    /// background. It starts from its durable position (`opts.dir`), else from the stream's
    /// newest checkpoint, else from the stream's start. A stream with a gap, another state's
    /// records or a malformed message stops the follower with that error (see
    /// [`Follower::check`]); nothing of the batch holding the bad message is applied.
    pub fn follow(target: Target, opts: FollowOptions) -> mmsb::Result<Follower> {
        target.validate()?;
        if let Some(d) = &opts.dir {
            std::fs::create_dir_all(d).map_err(|e| LogError::io(format!("create {}", d.display()), e))?;
        }
        let local = match &opts.dir {
            Some(d) => position::resume(d, &opts.config)?,
            None => None,
        };
        let (js, stream, first_seq) = block_on(retry(|| async {
            let js = target.connect().await?;
            let stream = open_stream(&target, &js).await?;
            let first_seq =
                stream.get_info().await.map_err(|e| target.failed("read the stream info", e))?.state.first_sequence;
            Ok::<_, mmsb::Error>((js, stream, first_seq))
        }))?;
        // The local position, unless compaction removed the messages after it.
        let (state, status, resumed) = match local {
            Some(r) if r.next_seq >= first_seq => (
                r.state,
                Status { state_id: r.state_id, term: r.term, next_seq: r.next_seq.max(1), ..Status::default() },
                true,
            ),
            _ => match block_on(retry(|| checkpoint::get(&target, &js)))? {
                Some((h, image)) => (
                    MMSBState::replica_from_image(opts.config.clone(), &image)?,
                    Status {
                        state_id: Some(h.state_id),
                        term: h.term,
                        next_seq: h.start_seq.max(1),
                        ..Status::default()
                    },
                    false,
                ),
                None => (MMSBState::replica(opts.config.clone())?, Status { next_seq: 1, ..Status::default() }, false),
            },
        };
        let position = match &opts.dir {
            Some(d) => {
                let base = (!resumed).then_some((&state, status.state_id, status.term, status.next_seq));
                Some(PositionLog::open(d, base)?)
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            target,
            state: Arc::new(state),
            status: Mutex::new(status),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            position: Mutex::new(position),
            position_errors: AtomicU64::new(0),
        });
        let puller = Puller {
            stream,
            consumer: None,
            messages: None,
            last_message: Instant::now(),
            delivered: 0,
            last_save: Instant::now(),
        };
        runtime().spawn(lag_loop(puller.stream.clone(), shared.clone()));
        let task = runtime().spawn(follow_loop(puller, shared.clone()));
        Ok(Follower { shared, js, task: Mutex::new(Some(task)) })
    }

    /// The replica state: reads, views and statistics; writes fail with `ReadOnly`.
    pub fn state(&self) -> &Arc<MMSBState> {
        &self.shared.state
    }

    /// The error that stopped the follower, if one did (`ReplicaGap`, `ForeignState`,
    /// `Malformed`).
    pub fn check(&self) -> mmsb::Result<()> {
        match &self.shared.status.lock().fault {
            Some(f) => Err(self.shared.error(f)),
            None => Ok(()),
        }
    }

    /// How far behind the stream it is (also in the state's stats: the gauges
    /// `replica_lsn_behind` and `replica_us_behind`).
    pub fn lag(&self) -> Lag {
        self.shared.lag()
    }

    /// Waits until the follower's LSN reaches `lsn` (`Ok(true)`), it stops with an error, or
    /// `timeout` passes (`Ok(false)`).
    pub fn wait_for(&self, lsn: Lsn, timeout: Duration) -> mmsb::Result<bool> {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.status.lock();
        loop {
            if let Some(f) = &st.fault {
                return Err(self.shared.error(f));
            }
            if self.shared.state.lsn() >= lsn {
                return Ok(true);
            }
            if self.shared.changed.wait_until(&mut st, deadline).timed_out() {
                return Ok(self.shared.state.lsn() >= lsn);
            }
        }
    }

    /// Stops applying (the state stays readable) and writes the durable position.
    pub fn close(&self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.task.lock().take() {
            let _ = block_on(t);
        }
    }

    /// Promotes the follower to primary: stops applying, catches up with the stream, writes a
    /// term record (term + 1) with the expected last sequence of what it applied (so the old
    /// primary's next publish fails and it turns read-only with `ErrorCode::Fenced`), then
    /// opens a writable state from its pages (`config.dir`: an empty or new directory, or in
    /// memory) that publishes to the stream. Fails if the stream keeps moving (the old primary
    /// still writes) for 10 attempts.
    pub fn promote(self, config: Config) -> mmsb::Result<Primary> {
        self.close();
        self.check()?;
        let sh = self.shared.clone();
        let target = sh.target.clone();
        let js = self.js.clone();
        let (stream, seq, id) = block_on(async {
            let stream = retry(|| open_stream(&target, &js)).await?;
            let mut p = Puller {
                stream: stream.clone(),
                consumer: None,
                messages: None,
                last_message: Instant::now(),
                delivered: 0,
                last_save: Instant::now(),
            };
            for _ in 0..10 {
                // Catch up: fetch until a fetch brings nothing.
                let deadline = Instant::now() + crate::nats::REPLICATION_TIMEOUT;
                loop {
                    match p.step(&sh).await {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if Instant::now() > deadline => return Err(target.failed("catch up", e)),
                        Err(_) => p.reset(),
                    }
                }
                if let Some(f) = &sh.status.lock().fault {
                    return Err(sh.error(f));
                }
                let (state_id, term, applied_seq) = {
                    let st = sh.status.lock();
                    (st.state_id, st.term, st.next_seq.saturating_sub(1))
                };
                let Some(state_id) = state_id else {
                    return Err(mmsb::Error::InvalidArgument(format!(
                        "the stream {} holds no state yet: nothing to promote",
                        target.stream
                    )));
                };
                let env =
                    Envelope { state_id, term: term + 1, lsn: sh.state.lsn(), count: 0, kind: KIND_TERM, body: b"" };
                let msg = PublishMessage::build()
                    .payload(env.encode().into())
                    .message_id(env.message_id())
                    .expected_last_sequence(applied_seq);
                let ack = match js.send_publish(target.subject(), msg).await {
                    Ok(f) => f.await,
                    Err(e) => Err(e),
                };
                match ack {
                    Ok(ack) => return Ok((stream, ack.sequence, Identity { state_id, term: term + 1 })),
                    Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                        p.reset();
                        continue;
                    }
                    Err(e) => return Err(target.failed("publish the term record", e)),
                }
            }
            Err(target.failed("promote", "the stream kept moving (is the old primary still writing?)"))
        })?;
        let dir = config.dir.clone();
        let (_, image) = sh.state.checkpoint_image()?;
        let lsn = sh.state.lsn();
        let primary = Primary::start_with(target, js, stream, id, seq, |slot| {
            let state = MMSBState::open_from_image(Config { record_observer: Some(slot), ..config }, &image)?;
            Ok((state, Some(lsn)))
        })?;
        if let Some(d) = dir {
            id.store(&d)?;
        }
        Ok(primary)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed append of the durable position (the OS refuses the write: the log file is
    /// open read-only) is counted in the lag and the state's stats, and logged once.
    #[test]
    fn a_failed_position_append_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let state = MMSBState::replica(Config::default()).unwrap();
        let sh = Shared {
            target: Target::new("nats://127.0.0.1:1", "s"),
            state: Arc::new(state),
            status: Mutex::new(Status::default()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            position: Mutex::new(Some(PositionLog::read_only_for_test(dir.path()))),
            position_errors: AtomicU64::new(0),
        };
        let msg = wire::Envelope { state_id: 5, term: 1, lsn: 0, count: 0, kind: KIND_TERM, body: b"" }.encode();
        sh.append_position([(1u64, &msg[..])].into_iter());
        sh.append_position([(2u64, &msg[..])].into_iter());
        assert_eq!(sh.lag().position_errors, 2);
        assert_eq!(sh.state.monitor().counter(Counter::ReplicaPositionErrors), 2);
        // Without a position nothing is written and nothing fails.
        *sh.position.lock() = None;
        sh.append_position([(3u64, &msg[..])].into_iter());
        assert_eq!(sh.lag().position_errors, 2);
    }
}
