//! Replication with processes on a 3-node loopback cluster: a primary process routing a
//! random workload (`Durability::Replicated`, two writer threads), two follower processes.
//! kill -9 of a follower (restarted on its durable position), of a NATS node and of the
//! primary mid-run; every acknowledged write is on both followers, whose pages equal the
//! primary's log at every sampled LSN and at the end; the restarted primary resumes; a promoted follower fences the restarted
//! old primary and the other follower converges on the new primary's writes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mmsb::{Config, MMSBState};

const NODE: &str = env!("CARGO_BIN_EXE_mmsb-replica-node");

/// A child process, killed with SIGKILL when dropped.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(log: &Path, args: &[String]) -> Proc {
        let err = std::fs::File::create(log).unwrap();
        let child = Command::new(NODE).args(args).stdout(Stdio::null()).stderr(err).spawn().unwrap();
        Proc { child, log: log.to_path_buf() }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool, logs: &[&Proc]) {
    let end = Instant::now() + timeout;
    while !ok() {
        if Instant::now() > end {
            let logs: Vec<String> = logs
                .iter()
                .map(|p| {
                    let status = p.log.parent().map(|d| {
                        ["f1", "f2"].map(|f| std::fs::read_to_string(d.join(f).join("status")).unwrap_or_default())
                    });
                    format!("{}:\n{}\nfollower status: {status:?}", p.log.display(), p.stderr())
                })
                .collect();
            panic!("timed out waiting for {what}\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn acks(path: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // The last line may be cut by kill -9: only whole lines count.
    let whole = text.rfind('\n').map_or("", |i| &text[..i]);
    whole.lines().map(|l| l.parse().unwrap()).collect()
}

/// (lsn, lsn_behind, error code) from a follower's status file.
fn status(ctl: &Path) -> Option<(u64, u64, u32)> {
    let s = std::fs::read_to_string(ctl.join("status")).ok()?;
    let v: Vec<&str> = s.split_whitespace().collect();
    Some((v.first()?.parse().ok()?, v.get(1)?.parse().ok()?, v.get(3)?.parse().ok()?))
}

fn ask(ctl: &Path, what: &str, body: &str) {
    let tmp = ctl.join(format!("{what}.req"));
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(&tmp, ctl.join(what)).unwrap();
}

fn dump(ctl: &Path, logs: &[&Proc]) -> MMSBState {
    let _ = std::fs::remove_file(ctl.join("dump.lsn"));
    ask(ctl, "dump", "");
    wait_until("a dump", Duration::from_secs(20), || ctl.join("dump.lsn").exists(), logs);
    MMSBState::replica_from_image(Config::default(), &std::fs::read(ctl.join("dump.img")).unwrap()).unwrap()
}

fn assert_same(what: &str, a: &MMSBState, b: &MMSBState) {
    assert_eq!(a.lsn(), b.lsn(), "{what}: LSN");
    assert_eq!(a.page_ids().unwrap(), b.page_ids().unwrap(), "{what}: pages");
    for id in a.page_ids().unwrap() {
        assert!(a.read_page(id).unwrap() == b.read_page(id).unwrap(), "{what}: bytes of page {id}");
        assert_eq!(a.page_info(id).unwrap().epoch, b.page_info(id).unwrap().epoch, "{what}: epoch of page {id}");
    }
}

#[test]
fn kill_nine_primary_follower_and_a_nats_node_then_promote_a_follower() {
    let Some(cluster) = common::cluster() else { return };
    let stream = common::stream_name("procs");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (ctl1, ctl2) = (d.join("f1"), d.join("f2"));
    std::fs::create_dir_all(&ctl1).unwrap();
    std::fs::create_dir_all(&ctl2).unwrap();
    let common_args = [format!("url={}", cluster.urls), format!("stream={stream}")];
    let primary_args: Vec<String> = [
        "primary".to_string(),
        format!("dir={}", d.join("p1").display()),
        format!("acks={}", d.join("acks1").display()),
        "ops=1000000".into(),
        "writers=2".into(),
        "seed=7".into(),
    ]
    .into_iter()
    .chain(common_args.clone())
    .collect();
    let f1_args: Vec<String> =
        ["follower".to_string(), format!("ctl={}", ctl1.display()), format!("dir={}", d.join("f1pos").display())]
            .into_iter()
            .chain(common_args.clone())
            .collect();
    let f2_args: Vec<String> =
        ["follower".to_string(), format!("ctl={}", ctl2.display())].into_iter().chain(common_args.clone()).collect();

    let mut p1 = Proc::spawn(&d.join("p1.log"), &primary_args);
    let acked = |n: usize| move || acks(&d.join("acks1")).len() >= n;
    wait_until("200 acknowledged writes", Duration::from_secs(30), acked(200), &[&p1]);
    let mut f1 = Proc::spawn(&d.join("f1.log"), &f1_args);
    let f2 = Proc::spawn(&d.join("f2.log"), &f2_args);
    wait_until("follower 1 running", Duration::from_secs(30), || status(&ctl1).is_some_and(|s| s.0 > 0), &[&f1]);
    ask(&ctl1, "sample", "");
    ask(&ctl2, "sample", "");
    // A follower killed mid-stream and restarted on its durable position.
    std::thread::sleep(Duration::from_millis(1500));
    f1.kill9();
    let n = acks(&d.join("acks1")).len();
    wait_until("more writes", Duration::from_secs(30), acked(n + 200), &[&p1]);
    let f1 = Proc::spawn(&d.join("f1b.log"), &f1_args);
    // A NATS node killed mid-run: the primary keeps writing (R=3 keeps a quorum of 2).
    cluster.kill("n2");
    let n = acks(&d.join("acks1")).len();
    wait_until("writes with a node down", Duration::from_secs(60), acked(n + 300), &[&p1, &f1, &f2]);
    ask(&ctl1, "sample", "");
    ask(&ctl2, "sample", "");
    std::thread::sleep(Duration::from_millis(200));
    p1.kill9();
    cluster.restart("n2");
    let acked = acks(&d.join("acks1"));
    let max_acked = *acked.iter().max().unwrap();
    assert!(acked.len() >= 700, "{} writes acknowledged", acked.len());

    // Every acknowledged write reaches both followers; they settle on the same LSN.
    for ctl in [&ctl1, &ctl2] {
        wait_until(
            "the followers to apply every acknowledged write",
            Duration::from_secs(60),
            || status(ctl).is_some_and(|s| s.0 >= max_acked && s.1 == 0),
            &[&f1, &f2],
        );
        assert_eq!(status(ctl).unwrap().2, 0, "follower error");
    }
    let (s1, s2) = (dump(&ctl1, &[&f1]), dump(&ctl2, &[&f2]));
    assert_same("the two followers", &s1, &s2);
    // Records are published before their local fsync: the dead primary's log may end before
    // the stream (by what it had staged but not yet written when killed). Its restart copies
    // them back from the stream.
    let dead = MMSBState::open(Config { dir: Some(d.join("p1")), ..Config::default() }).unwrap();
    eprintln!("the killed primary's log ends at LSN {}, the followers at {}", dead.lsn(), s1.lsn());
    dead.close();
    drop(dead);

    // The killed primary restarts on its directory and resumes publishing where the stream is.
    let resume_args: Vec<String> = primary_args
        .iter()
        .map(|a| match a.as_str() {
            a if a.starts_with("ops=") => "ops=50".to_string(),
            a if a.starts_with("acks=") => format!("acks={}", d.join("acks1b").display()),
            a => a.to_string(),
        })
        .collect();
    let mut p1b = Proc::spawn(&d.join("p1b.log"), &resume_args);
    let code = p1b.child.wait().unwrap();
    assert!(code.success(), "the restarted primary must resume: {}", p1b.stderr());
    let resumed_to = *acks(&d.join("acks1b")).iter().max().unwrap();
    assert!(resumed_to >= s1.lsn() + 100);
    for ctl in [&ctl1, &ctl2] {
        wait_until(
            "the followers to apply the resumed primary's writes",
            Duration::from_secs(30),
            || status(ctl).is_some_and(|s| s.0 >= resumed_to && s.1 == 0),
            &[&f1, &f2],
        );
    }
    // Against the primary's own log (the records it lost copied back into it): the end and
    // every sampled LSN.
    let p1_state = MMSBState::open(Config { dir: Some(d.join("p1")), ..Config::default() }).unwrap();
    assert!(p1_state.lsn() >= resumed_to);
    assert_same("follower vs primary log", &p1_state.replay_to(s1.lsn()).unwrap(), &s1);
    let mut samples = 0;
    for ctl in [&ctl1, &ctl2] {
        for e in std::fs::read_dir(ctl).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            let Some(lsn) = name.strip_prefix("sample-").and_then(|n| n.strip_suffix(".img")) else { continue };
            let lsn: u64 = lsn.parse().unwrap();
            let sample =
                MMSBState::replica_from_image(Config::default(), &std::fs::read(ctl.join(&name)).unwrap()).unwrap();
            assert_same(&format!("sample at LSN {lsn}"), &p1_state.replay_to(lsn).unwrap(), &sample);
            samples += 1;
        }
    }
    assert!(samples >= 3, "{samples} samples");
    drop(p1_state);

    let s1 = dump(&ctl1, &[&f1]);

    // Promote follower 1; the restarted old primary is fenced; follower 2 follows the new one.
    ask(&ctl1, "promote", "150");
    wait_until("the promotion", Duration::from_secs(60), || ctl1.join("promoted.done").exists(), &[&f1]);
    let promoted_lsn: u64 = std::fs::read_to_string(ctl1.join("promoted.done")).unwrap().parse().unwrap();
    assert!(promoted_lsn >= s1.lsn() + 300, "two writers x 150 writes after LSN {}", s1.lsn());
    let mut old = Proc::spawn(&d.join("p1-restart.log"), &primary_args);
    let code = old.child.wait().unwrap();
    assert_eq!(code.code(), Some(3), "the old primary must be fenced: {}", old.stderr());
    assert!(old.stderr().contains("fenced"), "{}", old.stderr());
    wait_until(
        "follower 2 to follow the promoted primary",
        Duration::from_secs(30),
        || status(&ctl2).is_some_and(|s| s.0 == promoted_lsn),
        &[&f2],
    );
    assert_eq!(status(&ctl2).unwrap().2, 0);
    assert_same("follower 2 vs the promoted primary", &dump(&ctl1, &[&f1]), &dump(&ctl2, &[&f2]));
    ask(&ctl1, "stop", "");
    ask(&ctl2, "stop", "");
}
