//! The `mmsb` binary on state directories written by the core API: `verify` on sound and damaged
//! copies (exit codes, one line with the file and offset), `dump --json` against the writes,
//! `pages --at` against `MMSBState::open_at`, and every command while a writer in another
//! process holds the directory and keeps writing.
//!
//! With `MMSB_KEEP_DIRS` set, the directories end up there (damaged ones with a `-damaged`
//! suffix) for `scripts/test.sh` to run `mmsb verify` over.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mmsb::runtime::tlog::format::RECORD_HEADER_LEN;
use mmsb::runtime::tlog::inspect::read_dir;
use mmsb::{Config, Delta, Location, Lsn, MMSBState, PageId, PageMeta, RouteOp};
use serde_json::Value;

fn mmsb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmsb")).args(args).output().unwrap()
}

fn run(args: &[&str]) -> (i32, String, String) {
    let o = mmsb(args);
    (o.status.code().unwrap_or(-1), String::from_utf8(o.stdout).unwrap(), String::from_utf8(o.stderr).unwrap())
}

/// A scratch directory on disk (not tmpfs) under /work/tmp when it exists.
fn scratch() -> tempfile::TempDir {
    let base = Path::new("/work/tmp");
    if base.is_dir() {
        tempfile::tempdir_in(base).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// Copies the plain files of `from` into `to` (created).
fn copy_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// With `MMSB_KEEP_DIRS` set, keeps a copy of `dir` there as `name` for `scripts/test.sh`.
fn keep(dir: &Path, name: &str) {
    if let Some(keep) = std::env::var_os("MMSB_KEEP_DIRS") {
        let to = PathBuf::from(keep).join(name);
        let _ = std::fs::remove_dir_all(&to);
        copy_files(dir, &to);
    }
}

fn config(dir: &Path) -> Config {
    Config { dir: Some(dir.to_path_buf()), segment_size: 4096, ..Config::default() }
}

fn meta(name: &str, tags: &[(&str, &str)]) -> PageMeta {
    PageMeta { name: name.into(), tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
}

/// What each LSN of the test directory did: (kind, page).
type Ops = BTreeMap<Lsn, (&'static str, u64)>;

/// Writes a directory with many segments, page creations with names and tags, a free, single
/// writes, a two-delta batch with a dense delta, a blob record (32 KiB or more of payload) and,
/// with `checkpoint`, a checkpoint early on (which drops the segments before it). Returns what
/// each LSN did.
fn write_dir(dir: &Path, checkpoint: bool) -> Ops {
    let s = MMSBState::open(config(dir)).unwrap();
    let mut ops = Ops::new();
    let create = |s: &MMSBState, size, m: PageMeta, ops: &mut Ops| {
        let id = s.create_page(size, Location::Cpu, m).unwrap();
        ops.insert(s.lsn(), ("create", id.0));
        id
    };
    let a = create(&s, 64, meta("alpha", &[("role", "input")]), &mut ops);
    let b = create(&s, 256, meta("beta", &[]), &mut ops);
    let big = create(&s, 64 << 10, meta("big", &[("kind", "blob"), ("x", "y")]), &mut ops);
    let gone = create(&s, 16, meta("gone", &[]), &mut ops);
    for i in 0..300u64 {
        let (p, size) = if i % 3 == 0 { (b, 256) } else { (a, 64) };
        let d = Delta::write((i * 8) % (size - 8), &[(i % 250) as u8 + 1; 8]).unwrap();
        let lsn = s.route_delta(p, &d, None).unwrap();
        ops.insert(lsn, ("delta", p.0));
        if i == 30 && checkpoint {
            s.checkpoint().unwrap();
        }
        if i == 60 {
            let dense = Delta::dense(3, &[0b1010_0101, 0b1], &[9; 9]).unwrap();
            let one = Delta::write(40, b"batch").unwrap();
            let batch = [
                RouteOp { page: a, delta: &dense, expected_epoch: None },
                RouteOp { page: b, delta: &one, expected_epoch: None },
            ];
            let lsns = s.route_batch(&batch).unwrap();
            ops.insert(lsns.start, ("delta", a.0));
            ops.insert(lsns.start + 1, ("delta", b.0));
        }
        if i == 200 {
            let bytes: Vec<u8> = (0..40_000u32).map(|k| (k % 251) as u8).collect();
            let lsn = s.route_delta(big, &Delta::write(100, &bytes).unwrap(), None).unwrap();
            ops.insert(lsn, ("delta", big.0));
            s.free_page(gone).unwrap();
            ops.insert(s.lsn(), ("free", gone.0));
        }
    }
    drop(s);
    ops
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

/// (first LSN, segment file name, byte offset) of every record.
fn record_positions(dir: &Path) -> Vec<(Lsn, String, u64)> {
    read_dir(dir, |d| {
        let mut v = Vec::new();
        d.records(0..=Lsn::MAX, |r, _| {
            v.push((r.lsn, r.file.clone(), r.offset));
            Ok(())
        })?;
        Ok(v)
    })
    .unwrap()
}

/// Asserts `verify` fails with exit 1 and one line per problem naming `file` (and `offset`).
fn assert_damaged(dir: &Path, file: &str, offset: Option<u64>) -> String {
    let (code, out, err) = run(&["verify", dir.to_str().unwrap()]);
    assert_eq!(code, 1, "verify of a damaged copy: stdout {out} stderr {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(!lines.is_empty());
    assert!(lines.iter().all(|l| l.starts_with("mmsb: damaged: ")), "{err}");
    let want = match offset {
        Some(o) => format!("{file}: byte {o}:"),
        None => file.to_string(),
    };
    assert!(lines.iter().any(|l| l.contains(&want)), "no line names {want}: {err}");
    err
}

#[test]
fn verify_passes_a_sound_directory_and_fails_damaged_copies_naming_the_file_and_offset() {
    let d = scratch();
    let dir = d.path().join("state");
    write_dir(&dir, true);
    let (code, out, err) = run(&["verify", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "sound directory: {out} {err}");
    assert!(out.contains("ok: ") && err.is_empty(), "{out} {err}");
    keep(&dir, "cli-sound");

    let segs = segment_files(&dir);
    assert!(segs.len() >= 4, "the test needs several segments, got {}", segs.len());
    let ckpt_lsn = MMSBState::open(config(&dir)).unwrap().log_info().unwrap().last_checkpoint_lsn;
    assert!(ckpt_lsn > 0);
    let name = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_string();

    // Segments that are not the newest, with records after the checkpoint only, in file order.
    let positions = record_positions(&dir);
    let candidates: Vec<String> = segs[..segs.len() - 1]
        .iter()
        .map(|p| name(p))
        .filter(|n| {
            let lsns: Vec<Lsn> = positions.iter().filter(|r| r.1 == *n).map(|r| r.0).collect();
            lsns.len() >= 4 && lsns.iter().all(|&l| l > ckpt_lsn + 1)
        })
        .collect();
    assert!(candidates.len() >= 2, "the test needs two middle segments after the checkpoint: {candidates:?}");
    let offsets_in = |n: &str| positions.iter().filter(|r| r.1 == n).map(|r| r.2).collect::<Vec<u64>>();

    // A bit flip in a record of a segment that is not the newest.
    let offset = offsets_in(&candidates[1])[1];
    let flip = d.path().join("flip");
    copy_files(&dir, &flip);
    let path = flip.join(&candidates[1]);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[usize::try_from(offset).unwrap() + RECORD_HEADER_LEN] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let err = assert_damaged(&flip, &path.display().to_string(), Some(offset));
    assert!(err.contains("checksum"), "{err}");
    keep(&flip, "cli-bitflip-damaged");

    // A segment that is not the newest, cut short in the middle of a record.
    let cut = d.path().join("cut");
    copy_files(&dir, &cut);
    let victim = cut.join(&candidates[0]);
    let record = offsets_in(&candidates[0])[2];
    assert!(record + 7 < std::fs::metadata(&victim).unwrap().len());
    std::fs::OpenOptions::new().write(true).open(&victim).unwrap().set_len(record + 7).unwrap();
    // The message names the record that is cut short.
    assert_damaged(&cut, &victim.display().to_string(), Some(record));
    keep(&cut, "cli-truncated-damaged");

    // A missing middle segment: the message names the file after the gap and the missing one.
    let gap = d.path().join("gap");
    copy_files(&dir, &gap);
    let missing = &candidates[0];
    std::fs::remove_file(gap.join(missing)).unwrap();
    let next = segs.iter().map(|p| name(p)).find(|n| n > missing).unwrap();
    let err = assert_damaged(&gap, &gap.join(&next).display().to_string(), Some(0));
    assert!(err.contains(missing.as_str()), "the missing segment is not named: {err}");
    keep(&gap, "cli-missing-segment-damaged");

    // Recovery agrees: each damaged copy fails to open with Corrupt, and verify changed nothing.
    for copy in [&flip, &cut, &gap] {
        let e = MMSBState::open(config(copy)).unwrap_err();
        assert_eq!(e.code(), mmsb::ErrorCode::Corrupt, "{}: {e}", copy.display());
    }
    // Usage and I/O errors are 2.
    assert_eq!(run(&["verify", d.path().join("nope").to_str().unwrap()]).0, 2);
    assert_eq!(run(&["verify"]).0, 2);
    assert_eq!(run(&["frobnicate", dir.to_str().unwrap()]).0, 2);
}

fn hex_bytes(h: &str) -> Vec<u8> {
    (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()).collect()
}

/// Applies one `dump --json` line to a model of the pages.
fn apply_json(model: &mut BTreeMap<u64, (u64, Vec<u8>)>, v: &Value) {
    let page = v["page"].as_u64().unwrap_or(0);
    match v["kind"].as_str().unwrap() {
        "create" => {
            model.insert(page, (0, vec![0; usize::try_from(v["size"].as_u64().unwrap()).unwrap()]));
        }
        "free" => {
            model.remove(&page).unwrap();
        }
        "delta" => {
            let (epoch, bytes) = model.get_mut(&page).unwrap();
            *epoch += 1;
            for r in v["runs"].as_array().unwrap() {
                let data = hex_bytes(r["hex"].as_str().unwrap());
                assert_eq!(data.len() as u64, r["len"].as_u64().unwrap());
                let o = usize::try_from(r["offset"].as_u64().unwrap()).unwrap();
                bytes[o..o + data.len()].copy_from_slice(&data);
            }
        }
        k => panic!("unexpected kind {k} in {v}"),
    }
}

#[test]
fn dump_json_matches_the_writes_and_pages_at_matches_open_at() {
    let d = scratch();
    let dir = d.path().join("state");
    let ops = write_dir(&dir, false);
    let last = *ops.keys().next_back().unwrap();
    let (code, out, err) = run(&["dump", dir.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let dumped: Ops = lines
        .iter()
        .map(|v| {
            let kind = match v["kind"].as_str().unwrap() {
                "create" => "create",
                "free" => "free",
                "delta" => "delta",
                k => panic!("unexpected kind {k}"),
            };
            (v["lsn"].as_u64().unwrap(), (kind, v["page"].as_u64().unwrap()))
        })
        .collect();
    assert_eq!(dumped.len(), lines.len(), "an LSN appears twice");
    assert_eq!(dumped, ops, "dump --json differs from the writes");
    assert!(lines.iter().any(|v| v["blob"] == true), "the 40 KB write is a blob record");
    assert!(lines.iter().any(|v| v["encoding"] == "dense"));
    let create = lines.iter().find(|v| v["kind"] == "create").unwrap();
    assert_eq!((create["name"].as_str(), create["tags"][0][1].as_str()), (Some("alpha"), Some("input")));

    // Replaying the dump gives the state open_at gives, at several LSNs, and pages --at says so.
    let mut model = BTreeMap::new();
    let checks: Vec<Lsn> = vec![1, 4, 5, 40, 66, 67, last - 25, last - 24, last];
    for v in &lines {
        apply_json(&mut model, v);
        let lsn = v["lsn"].as_u64().unwrap();
        if !checks.contains(&lsn) {
            continue;
        }
        let s = MMSBState::open_at(&dir, lsn).unwrap();
        assert_eq!(s.lsn(), lsn);
        assert!(s.is_read_only());
        let mut ids = s.page_ids().unwrap();
        ids.sort();
        let got: BTreeMap<u64, (u64, Vec<u8>)> =
            ids.iter().map(|&id| (id.0, (s.page_info(id).unwrap().epoch, s.read_page(id).unwrap()))).collect();
        assert!(got == model, "LSN {lsn}: open_at differs from the replayed dump");

        let (code, out, err) = run(&["pages", dir.to_str().unwrap(), "--at", &lsn.to_string(), "--json"]);
        assert_eq!(code, 0, "{err}");
        let rows: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(rows.len(), ids.len());
        for (row, &id) in rows.iter().zip(&ids) {
            let info = s.page_info(id).unwrap();
            let m = s.page_meta(id).unwrap();
            assert_eq!(row["lsn"].as_u64(), Some(lsn));
            assert_eq!(row["page"].as_u64(), Some(id.0));
            assert_eq!(row["size"].as_u64(), Some(info.size));
            assert_eq!(row["epoch"].as_u64(), Some(info.epoch));
            assert_eq!(row["name"].as_str(), Some(m.name.as_str()));
            assert_eq!(row["tags"].as_array().unwrap().len(), m.tags.len());
            assert_eq!(row["crc32c"].as_u64(), Some(u64::from(crc32c::crc32c(&s.read_page(id).unwrap()))));
        }
    }
    // --from/--to select LSNs; a batch gives only its deltas in the range.
    let (_, out, _) = run(&["dump", dir.to_str().unwrap(), "--json", "--from", "66", "--to", "67"]);
    let got: Vec<u64> =
        out.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["lsn"].as_u64().unwrap()).collect();
    assert_eq!(got, vec![66, 67]);
    // Text output: one line per entry as well.
    let (code, out, _) = run(&["dump", dir.to_str().unwrap()]);
    assert_eq!((code, out.lines().count()), (0, ops.len()));
    let (code, out, _) = run(&["pages", dir.to_str().unwrap()]);
    assert!(code == 0 && out.starts_with(&format!("LSN {last}: 3 pages")), "{out}");
    let (code, out, _) = run(&["info", dir.to_str().unwrap()]);
    assert!(code == 0 && out.contains(&format!("replayable   0..={last}")), "{out}");
    let (code, out, _) = run(&["info", dir.to_str().unwrap(), "--json"]);
    let info: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(code, 0);
    assert_eq!(info["last_lsn"].as_u64(), Some(last));
    assert_eq!(info["segments"].as_array().unwrap().len(), segment_files(&dir).len());
    // What an open replays: every record after the newest checkpoint; timed on request.
    let d = mmsb::runtime::tlog::inspect::read_dir(&dir, |d| d.info()).unwrap();
    let ckpt = d.checkpoints.iter().rev().find(|c| c.problem.is_none()).map_or(0, |c| c.lsn);
    assert_eq!(info["replay"]["checkpoint_lsn"].as_u64(), Some(ckpt));
    let after = ops.range(ckpt + 1..).count() as u64;
    // One record per LSN, but the batch of two deltas is one record.
    let records = info["replay"]["records"].as_u64().unwrap();
    assert!(after > 1 && (after - 1..=after).contains(&records), "{records} records for {after} LSNs: {info}");
    assert!(info["replay"]["bytes"].as_u64().unwrap() > 0, "{info}");
    assert!(info["recovery_micros"].is_null(), "{info}");
    let (code, out, _) = run(&["info", dir.to_str().unwrap(), "--time-recovery"]);
    assert!(code == 0 && out.contains("replay       ") && out.contains("recovery     "), "{out}");
    let (code, out, _) = run(&["info", dir.to_str().unwrap(), "--json", "--time-recovery"]);
    let timed: Value = serde_json::from_str(&out).unwrap();
    assert!(code == 0 && timed["recovery_micros"].as_u64().unwrap() > 0, "{out}");
    // An LSN past the end: exit 2 and the replayable range in the message.
    let (code, _, err) = run(&["pages", dir.to_str().unwrap(), "--at", &(last + 1).to_string()]);
    assert_eq!(code, 2);
    assert!(err.contains(&format!("replayable range 0..={last}")), "{err}");
    keep(&dir, "cli-dump");
}

/// Names, sizes and modification times of every file under `dir` (one level of subdirectories).
fn files_of(dir: &Path) -> BTreeMap<String, (u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        out.insert(e.file_name().to_string_lossy().into_owned(), (m.len(), m.modified().unwrap()));
    }
    out
}

const WRITER_DIR: &str = "MMSB_CLI_TEST_WRITER_DIR";
const WRITER_IDLE: &str = "MMSB_CLI_TEST_WRITER_IDLE";

/// Child: opens the directory (taking its LOCK) and writes `n` as 8 bytes to page 1 at LSN
/// `n + 1`, checkpointing and compacting along the way (log_size_cap); with WRITER_IDLE it only
/// holds the directory open. Runs until killed.
#[test]
#[ignore = "child process of the tests below"]
fn writer_child() {
    let dir = PathBuf::from(std::env::var_os(WRITER_DIR).expect("run by the tests of this file"));
    let cfg = Config { log_size_cap: 128 << 10, ..config(&dir) };
    let s = MMSBState::open(cfg).unwrap();
    let page = match s.page_ids().unwrap().first() {
        Some(&p) => p,
        None => s.create_page(64, Location::Cpu, meta("counter", &[])).unwrap(),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY").unwrap();
    out.flush().unwrap();
    if std::env::var_os(WRITER_IDLE).is_some() {
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    // The cap's maintenance thread checkpoints and drops whole segments; compaction (which
    // rewrites segments under the readers) runs only when asked, so ask now and then.
    loop {
        let n = s.lsn();
        s.update_page(page, &n.to_le_bytes()).unwrap();
        if n.is_multiple_of(8192) {
            s.compact_log().unwrap();
        }
    }
}

/// Starts `writer_child` on `dir` and waits until it is ready.
fn spawn_writer(dir: &Path, idle: bool) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "writer_child", "--nocapture", "--ignored", "--test-threads", "1"]).env(WRITER_DIR, dir);
    if idle {
        cmd.env(WRITER_IDLE, "1");
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("the writer exited before it was ready").unwrap();
        if line.ends_with("READY") {
            break;
        }
    }
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

/// The state of the child writer's directory at LSN `lsn` is known: page 1 (created at LSN 1)
/// holds `lsn - 1` (the LSN before the write) with epoch `lsn - 1` (one per write since).
fn check_writer_state(s: &MMSBState, lsn: Lsn) {
    assert_eq!(s.lsn(), lsn);
    if lsn < 2 {
        return;
    }
    let p = PageId(1);
    let bytes = s.read_page(p).unwrap();
    assert_eq!(u64::from_le_bytes(bytes[..8].try_into().unwrap()), lsn - 1, "page bytes at LSN {lsn}");
    assert_eq!(s.page_info(p).unwrap().epoch, lsn - 1, "epoch at LSN {lsn}");
}

#[test]
fn commands_and_open_at_change_nothing_and_need_no_lock() {
    let d = scratch();
    let dir = d.path().join("state");
    write_dir(&dir, false);
    // A writer process holds the directory (its LOCK) but does not write.
    let mut writer = spawn_writer(&dir, true);
    assert_eq!(MMSBState::open(config(&dir)).unwrap_err().code(), mmsb::ErrorCode::Busy, "the child holds the lock");
    let before = files_of(&dir);
    std::thread::sleep(Duration::from_millis(20)); // an mtime change would show
    let s = MMSBState::open_at(&dir, 50).unwrap();
    assert_eq!(s.lsn(), 50);
    assert_eq!(s.create_page(8, Location::Cpu, PageMeta::default()).unwrap_err().code(), mmsb::ErrorCode::ReadOnly);
    for args in [&["info"][..], &["verify"], &["dump"], &["dump", "--json"], &["pages"], &["pages", "--at", "50"]] {
        let mut a = args.to_vec();
        a.insert(1, dir.to_str().unwrap());
        let (code, _, err) = run(&a);
        assert_eq!(code, 0, "{a:?}: {err}");
    }
    writer.kill().unwrap();
    writer.wait().unwrap();
    assert_eq!(files_of(&dir), before, "reading the directory changed its files");
}

#[test]
fn open_at_and_the_tool_read_a_directory_while_another_process_writes_it() {
    let d = scratch();
    let dir = d.path().join("state");
    std::fs::create_dir_all(&dir).unwrap();
    let mut writer = spawn_writer(&dir, false);
    let started = Instant::now();
    let (mut reads, mut last, mut verified) = (0u64, 0u64, 0u64);
    let mut saw_compaction = false;
    while started.elapsed() < Duration::from_secs(3) || reads < 20 {
        let (lsn, s, runs) = read_dir(&dir, |d| {
            let lsn = d.last_lsn();
            Ok((lsn, d.replay_to(lsn)?, d.info()?.compacted_runs.len()))
        })
        .unwrap();
        assert!(lsn >= last, "the LSN went back from {last} to {lsn}");
        check_writer_state(&s, lsn);
        saw_compaction |= runs > 0;
        // An older LSN: replayable unless it fell inside a compacted run or before the
        // oldest retained checkpoint meanwhile.
        let older = lsn.saturating_sub(37).max(2);
        match MMSBState::open_at(&dir, older) {
            Ok(s) => check_writer_state(&s, older),
            Err(e) => assert!(
                matches!(e.code(), mmsb::ErrorCode::LsnCompacted | mmsb::ErrorCode::LsnOutOfRange),
                "open_at({older}): {e}"
            ),
        }
        last = lsn;
        reads += 1;
        if reads.is_multiple_of(5) {
            let (code, out, err) = run(&["verify", dir.to_str().unwrap()]);
            assert_eq!(code, 0, "verify while writing: {out} {err}");
            let (code, out, err) = run(&["pages", dir.to_str().unwrap(), "--json"]);
            assert_eq!(code, 0, "{err}");
            let row: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
            assert!(row["lsn"].as_u64().unwrap() >= lsn);
            assert_eq!(row["epoch"].as_u64().unwrap() + 1, row["lsn"].as_u64().unwrap());
            verified += 1;
        }
    }
    writer.kill().unwrap();
    writer.wait().unwrap();
    eprintln!("{reads} reads and {verified} verify/pages runs while writing; the writer reached LSN {last}");
    assert!(last > 1000, "the writer wrote too little to test anything (LSN {last})");
    assert!(saw_compaction, "the writer never compacted while read");
    // The writer was killed: an open recovers what it wrote, and the directory verifies.
    let (code, out, err) = run(&["verify", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out} {err}");
    keep(&dir, "cli-killed-writer");
}

/// `mmsb stats` reads a live writer's shared header: its pid, LSNs and pages, then the closed
/// state; a directory without file-backed pages has no header and is a one-line error.
#[test]
fn stats_reads_the_shared_header_of_a_live_then_closed_writer() {
    let d = scratch();
    let cfg = Config { file_backed_pages: true, ..config(d.path()) };
    let s = MMSBState::open(cfg).unwrap();
    let a = s.create_page(4096, Location::Cpu, PageMeta::default()).unwrap();
    let b = s.create_page(8192, Location::Cpu, PageMeta::default()).unwrap();
    for i in 0..10u8 {
        s.update_page_at(if i % 2 == 0 { a } else { b }, u64::from(i), &[i; 8], None).unwrap();
    }
    let (code, out, err) = run(&["stats", "--json", d.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["writer"], "running");
    assert_eq!(v["pid"].as_u64(), Some(u64::from(std::process::id())));
    assert_eq!(v["lsn"].as_u64(), Some(s.lsn()));
    assert_eq!(v["pages"].as_u64(), Some(2));
    assert_eq!(v["page_bytes"].as_u64(), Some(4096 + 8192));
    s.free_page(a).unwrap();
    let lsn = s.lsn();
    s.close();
    let (code, out, err) = run(&["stats", d.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("writer        closed"), "{out}");
    assert!(out.contains(&format!("lsn           {lsn}")), "{out}");
    assert!(out.contains("pages         1 (8192 bytes)"), "{out}");

    let plain = scratch();
    let s = MMSBState::open(config(plain.path())).unwrap();
    s.create_page(64, Location::Cpu, PageMeta::default()).unwrap();
    let (code, _, err) = run(&["stats", plain.path().to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with("mmsb: error:"), "{err}");
}
