//! Replication benchmarks, each against a baseline measured in the same run, on a 3-node
//! loopback cluster (`scripts/nats-cluster.sh`, R=3):
//! - `replicated_8_writers`: writes of 64 bytes by 8 threads in `Durability::Replicated`
//!   (local group commit + JetStream acknowledgement) vs 8 tasks publishing the same message
//!   bytes to an R=3 stream and waiting for each acknowledgement, measured right before and
//!   right after and averaged (goal: ratio >= 0.8);
//!   interleaved rounds, because this machine is shared; the same writes in `GroupCommit`
//!   without replication are printed too (the local log's fsyncs bound `Replicated`);
//! - `follower_apply`: a new follower applying N records from the stream vs `replay_to` of the
//!   same N records from the primary's local log (goal: ratio >= 0.8);
//! - `follower_lag`: at a steady 10k writes/s, the time from a write's return on the primary
//!   to its LSN on the follower (p50, p99), split into write to stream acknowledgement and
//!   acknowledgement to follower.
//!
//! Run: `cargo bench -p mmsb-replica --bench replication` (`MMSB_BENCH_SECONDS`, default 3,
//! per round; `MMSB_BENCH_ROUNDS`, default 3; `MMSB_BENCH_ONLY=write|apply|lag` for one part).

// Test data: bytes are deliberately cut from wider random or loop values.
#![allow(clippy::cast_possible_truncation)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mmsb::{Config, Durability, Location, MMSBState, PageMeta};
use mmsb_replica::wire::Envelope;
use mmsb_replica::{FollowOptions, Follower, Primary, Target};

fn base_dir() -> PathBuf {
    let p = Path::new("/work/tmp");
    if p.is_dir() {
        p.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Writes per second of 8 threads writing 64 bytes each in `Replicated` (or, without `urls`,
/// in `GroupCommit` with no replication: the local log's own bound).
fn replicated(urls: Option<&str>, secs: f64) -> f64 {
    let dir = tempfile::tempdir_in(base_dir()).unwrap();
    let p: Arc<dyn Fn() -> Arc<MMSBState> + Send + Sync> = match urls {
        Some(urls) => {
            let t = Target::new(urls, common::stream_name("bench-repl"));
            let cfg =
                Config { dir: Some(dir.path().join("s")), durability: Durability::Replicated, ..Config::default() };
            let p = Primary::open(t, cfg).unwrap();
            let s = p.state().clone();
            let keep = Arc::new(p);
            Arc::new(move || {
                let _ = &keep;
                s.clone()
            })
        }
        None => {
            let cfg =
                Config { dir: Some(dir.path().join("s")), durability: Durability::GroupCommit, ..Config::default() };
            let s = Arc::new(MMSBState::open(cfg).unwrap());
            Arc::new(move || s.clone())
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..8)
        .map(|w| {
            let (p, stop, count) = (p.clone(), stop.clone(), count.clone());
            std::thread::spawn(move || {
                let s = p();
                let page = s.create_page(4096, Location::Cpu, PageMeta::default()).unwrap();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    s.update_page_at(page, (i % 64) * 64, &[(w + i) as u8 | 1; 64], None).unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (c0, t0) = (count.load(Ordering::Relaxed), Instant::now());
    std::thread::sleep(Duration::from_secs_f64(secs));
    let rate = (count.load(Ordering::Relaxed) - c0) as f64 / t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    threads.into_iter().for_each(|t| t.join().unwrap());
    rate
}

/// Publishes per second of 8 tasks sending the same bytes as a 64-byte write's message to an
/// R=3 stream, each waiting for its acknowledgement.
fn raw_publish(urls: &str, secs: f64) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let stream = common::stream_name("bench-raw");
    let subject = format!("raw.{stream}");
    // The body of a one-delta batch record writing 64 bytes, in its replication message.
    let mut body = Vec::new();
    let d = mmsb::Delta::write(0, &[7u8; 64]).unwrap();
    mmsb::runtime::tlog::record::encode_batch([(mmsb::PageId(1), &d)].into_iter(), 1, &mut body);
    let msg: bytes::Bytes = Envelope { state_id: 1, term: 1, lsn: 1, count: 1, kind: 3, body: &body }.encode().into();
    rt.block_on(async {
        let client = async_nats::connect(urls.split(',').next().unwrap()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![subject.clone()],
            num_replicas: 3,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let seq = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (js, stop, count, seq, msg, subject) =
                    (js.clone(), stop.clone(), count.clone(), seq.clone(), msg.clone(), subject.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let id = seq.fetch_add(1, Ordering::Relaxed).to_string();
                        let m =
                            async_nats::jetstream::message::PublishMessage::build().payload(msg.clone()).message_id(id);
                        js.send_publish(subject.clone(), m).await.unwrap().await.unwrap();
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (c0, t0) = (count.load(Ordering::Relaxed), Instant::now());
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        let rate = (count.load(Ordering::Relaxed) - c0) as f64 / t0.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        rate
    })
}

/// Records per second of a bare pull consumer reading the stream `stream` from its start to
/// its last message (`records` LSNs in all), with the follower's consumer settings (no
/// acknowledgements, batches of up to 1024 messages), timed from the first message: the
/// transport's part of a follower's rate, without decoding, checking or applying.
fn raw_pull(urls: &str, stream: &str, records: u64) -> f64 {
    use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
    use futures_util::StreamExt;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let client = async_nats::connect(urls.split(',').next().unwrap()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut s = js.get_stream(stream).await.unwrap();
        let last = s.info().await.unwrap().state.last_sequence;
        let c = s
            .create_consumer(pull::Config {
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(10),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut msgs = c
            .stream()
            .max_messages_per_batch(1024)
            .expires(Duration::from_secs(5))
            .heartbeat(Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        let mut t0 = None;
        let mut bytes = 0usize;
        loop {
            let m = msgs.next().await.unwrap().unwrap();
            t0.get_or_insert_with(Instant::now);
            bytes += m.payload.len();
            if m.info().unwrap().stream_sequence >= last {
                break;
            }
        }
        assert!(bytes > 0);
        records as f64 / t0.unwrap().elapsed().as_secs_f64()
    })
}

/// (follower apply rate, local replay rate, raw pull rate of the same stream) over `n`
/// one-delta records.
fn apply_vs_replay(urls: &str, n: u64) -> (f64, f64, f64) {
    let dir = tempfile::tempdir_in(base_dir()).unwrap();
    let t = Target::new(urls, common::stream_name("bench-apply"));
    let cfg = Config { dir: Some(dir.path().join("s")), durability: Durability::None, ..Config::default() };
    let p = Primary::open(t.clone(), cfg).unwrap();
    let s = p.state();
    let page = s.create_page(1 << 16, Location::Cpu, PageMeta::default()).unwrap();
    for i in 0..n {
        s.update_page_at(page, (i % 1024) * 64, &[i as u8 | 1; 64], None).unwrap();
    }
    p.sync().unwrap();
    let lsn = s.lsn();
    // Timed from the first applied record on, so connecting and creating the consumer (tens
    // of milliseconds) do not count as applying.
    let f = Follower::follow(t, FollowOptions::default()).unwrap();
    let (first, t0) = loop {
        let at = f.state().lsn();
        if at > 0 {
            break (at, Instant::now());
        }
        std::thread::sleep(Duration::from_micros(50));
    };
    assert!(f.wait_for(lsn, Duration::from_secs(120)).unwrap());
    let apply = (lsn - first) as f64 / t0.elapsed().as_secs_f64();
    assert_eq!(f.state().read_page(page).unwrap(), s.read_page(page).unwrap());
    let t0 = Instant::now();
    let r = s.replay_to(lsn).unwrap();
    let replay = lsn as f64 / t0.elapsed().as_secs_f64();
    assert_eq!(r.read_page(page).unwrap(), s.read_page(page).unwrap());
    let pull = raw_pull(urls, &p.target().stream, lsn);
    (apply, replay, pull)
}

/// Lag samples at `rate` writes/s, in seconds: (write's return to its LSN on the follower,
/// the part until the stream acknowledged it, the part from the acknowledgement to the
/// follower), and the rate achieved.
fn lag(urls: &str, rate: u64, secs: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>, f64) {
    let t = Target::new(urls, common::stream_name("bench-lag"));
    let p = Primary::open(t.clone(), Config { logging: true, ..Config::default() }).unwrap();
    let s = p.state().clone();
    let page = s.create_page(1 << 16, Location::Cpu, PageMeta::default()).unwrap();
    let f = Arc::new(Follower::follow(t, FollowOptions::default()).unwrap());
    let p = Arc::new(p);
    assert!(f.wait_for(s.lsn(), Duration::from_secs(10)).unwrap());
    let total = (rate as f64 * secs) as u64;
    // A watcher notes when each follower LSN became visible, while the writes go on.
    let stop = Arc::new(AtomicBool::new(false));
    // It also notes when the stream acknowledged each LSN (the primary's acked LSN), to split
    // the lag into publish (write to acknowledgement) and delivery (acknowledgement to follower).
    let watcher = {
        let (f, p, stop) = (f.clone(), p.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen: Vec<(u64, Instant)> = Vec::new();
            let mut acked: Vec<(u64, Instant)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let lsn = f.state().lsn();
                if seen.last().is_none_or(|l| l.0 < lsn) {
                    seen.push((lsn, Instant::now()));
                }
                let a = p.stats().acked_lsn;
                if acked.last().is_none_or(|l| l.0 < a) {
                    acked.push((a, Instant::now()));
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            (seen, acked)
        })
    };
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut i = 0;
    while i < total {
        // Paced: by now, `elapsed * rate` writes are due (sleeping between bursts, not
        // spinning: the machine has 2 cores for the cluster, the follower and this).
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while i < due {
            let lsn = s.update_page_at(page, (i % 1024) * 64, &[i as u8 | 1; 64], None).unwrap();
            if i % 97 == 0 {
                samples.push((lsn, Instant::now()));
            }
            i += 1;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let achieved = total as f64 / start.elapsed().as_secs_f64();
    assert!(f.wait_for(s.lsn(), Duration::from_secs(30)).unwrap());
    std::thread::sleep(Duration::from_millis(5));
    stop.store(true, Ordering::Relaxed);
    let (seen, acked) = watcher.join().unwrap();
    let when = |v: &[(u64, Instant)], lsn: u64| v[v.partition_point(|s| s.0 < lsn).min(v.len() - 1)].1;
    let (mut lags, mut publish, mut deliver) = (Vec::new(), Vec::new(), Vec::new());
    for &(lsn, at) in &samples {
        let (fol, ack) = (when(&seen, lsn), when(&acked, lsn));
        lags.push(fol.saturating_duration_since(at).as_secs_f64());
        publish.push(ack.saturating_duration_since(at).as_secs_f64());
        deliver.push(fol.saturating_duration_since(ack).as_secs_f64());
    }
    (lags, publish, deliver, achieved)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: keep that short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let Some(c) = common::cluster() else { return };
    let secs = if quick { 0.2 } else { env("MMSB_BENCH_SECONDS", 3) as f64 };
    let rounds = if quick { 1 } else { env("MMSB_BENCH_ROUNDS", 3) };
    // `MMSB_BENCH_ONLY=write|apply|lag` runs one of the three.
    let only = std::env::var("MMSB_BENCH_ONLY").unwrap_or_default();
    let run = |what: &str| only.is_empty() || only == what;
    let mut ratios = Vec::new();
    for r in 0..if run("write") { rounds } else { 0 } {
        // The baseline is measured before and after ours and averaged: on this shared
        // machine it moves by 2x between rounds.
        let raw1 = raw_publish(&c.urls, secs);
        let ours = replicated(Some(&c.urls), secs);
        let raw2 = raw_publish(&c.urls, secs);
        let local = replicated(None, secs);
        let raw = (raw1 + raw2) / 2.0;
        println!(
            "round {r}: Replicated 8 writers {ours:.0}/s, raw JetStream publish 8 tasks {raw1:.0}/s before, \
             {raw2:.0}/s after, ratio {:.2}; GroupCommit 8 writers without replication {local:.0}/s",
            ours / raw
        );
        ratios.push(ours / raw);
    }
    let n = if quick { 2000 } else { 200_000 };
    let (mut apply_ratios, mut pull_ratios) = (Vec::new(), Vec::new());
    for r in 0..if run("apply") { rounds } else { 0 } {
        let (apply, replay, pull) = apply_vs_replay(&c.urls, n);
        println!(
            "round {r}: follower apply {apply:.0} records/s, local replay {replay:.0} records/s, ratio {:.2}; \
             raw pull consumer of the same stream {pull:.0} records/s, follower / raw pull {:.2}",
            apply / replay,
            apply / pull
        );
        apply_ratios.push(apply / replay);
        pull_ratios.push(apply / pull);
    }
    let mut lag_rounds = Vec::new();
    for r in 0..if run("lag") { rounds } else { 0 } {
        let (mut lags, mut publish, mut deliver, achieved) = lag(&c.urls, 10_000, if quick { 0.3 } else { secs });
        let (p50, p99) = (pct(&mut lags, 0.5), pct(&mut lags, 0.99));
        println!(
            "round {r}: lag at 10k writes/s (achieved {achieved:.0}/s): p50 {:.2} ms, p99 {:.2} ms ({} samples); \
             write to stream ack p50 {:.2} / p99 {:.2} ms, stream ack to follower p50 {:.2} / p99 {:.2} ms",
            p50 * 1e3,
            p99 * 1e3,
            lags.len(),
            pct(&mut publish, 0.5) * 1e3,
            pct(&mut publish, 0.99) * 1e3,
            pct(&mut deliver, 0.5) * 1e3,
            pct(&mut deliver, 0.99) * 1e3,
        );
        lag_rounds.push((p50, p99));
    }
    let minmax = |v: &[f64]| (v.iter().cloned().fold(f64::MAX, f64::min), v.iter().cloned().fold(0.0, f64::max));
    let (a, b) = minmax(&ratios);
    let (c2, d) = minmax(&apply_ratios);
    if !ratios.is_empty() {
        println!("replicated_8_writers / raw_publish: {a:.2} ..= {b:.2} over {rounds} rounds (goal >= 0.8)");
    }
    if !apply_ratios.is_empty() {
        println!("follower_apply / local_replay: {c2:.2} ..= {d:.2} over {rounds} rounds (goal >= 0.8)");
        let (e, f) = minmax(&pull_ratios);
        println!("follower_apply / raw_pull_consumer: {e:.2} ..= {f:.2} over {rounds} rounds (MMSB's part)");
    }
    let p50s: Vec<f64> = lag_rounds.iter().map(|l| l.0 * 1e3).collect();
    let p99s: Vec<f64> = lag_rounds.iter().map(|l| l.1 * 1e3).collect();
    let ((a, b), (c3, d3)) = (minmax(&p50s), minmax(&p99s));
    if !lag_rounds.is_empty() {
        println!(
            "follower lag at 10k writes/s: p50 {a:.2} ..= {b:.2} ms, p99 {c3:.2} ..= {d3:.2} ms over {rounds} rounds"
        );
    }
}
