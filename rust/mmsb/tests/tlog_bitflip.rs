//! Exhaustive damage test: a small log (several segments, two checkpoint generations, graph
//! records and a checkpoint graph section) is damaged in every possible single way: each byte of
//! each file xor 0x01 and xor 0xFF, each file truncated at every length (every record boundary
//! among them) and deleted, every two segments swapped, every segment duplicated under the next
//! free number. Recovery must either fail with an error or produce exactly one of the states the
//! writer went through; never other bytes. Damage outside the newest segment and its blob file
//! must never open at an LSN below the last acknowledged one: an error, or the full state.
//! Truncating or deleting the newest segment is a crash before those writes as far as anyone
//! can tell: recovery must keep every record still there. And recovery deletes no file that
//! holds anything: each one is still there or in quarantine.

mod tlog_common;

use std::sync::Arc;

use mmsb::graph::{Command, CommandList, EdgeKind};
use mmsb::runtime::tlog::storage::{MemStorage, Storage};
use mmsb::{Config, Location, MMSBState, PageMeta};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Snap {
    base: tlog_common::Snapshot,
    edges: usize,
}

fn snap(s: &MMSBState) -> Snap {
    Snap { base: tlog_common::snapshot(s), edges: s.with_graph(|g| g.edge_count()).unwrap() }
}

fn config() -> Config {
    // blob_min 9: the 9-byte updates and the propagated copy are blob records, so every byte of
    // the blob files is flipped and cut too; page creations and graph edges stay inline.
    Config { logging: true, segment_size: 400, blob_min: 9, ..Config::default() }
}

fn tolerant() -> Config {
    Config { tolerant_recovery: true, ..config() }
}

type Files = Vec<(String, Vec<u8>)>;

/// [`build`], once per test binary.
fn build_once() -> &'static (Files, Vec<Snap>) {
    static BUILT: std::sync::OnceLock<(Files, Vec<Snap>)> = std::sync::OnceLock::new();
    BUILT.get_or_init(build)
}

/// Builds the log; returns its files and every state the writer acknowledged.
fn build() -> (Files, Vec<Snap>) {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let s = MMSBState::open_with_storage(config(), storage.clone()).unwrap();
    let mut states = vec![snap(&s)];
    let a = s.create_page(48, Location::Cpu, PageMeta { name: "a".into(), tags: vec![] }).unwrap();
    states.push(snap(&s));
    let b = s.create_page(32, Location::Cpu, PageMeta::default()).unwrap();
    states.push(snap(&s));
    for i in 0..14u8 {
        match i {
            4 => {
                let cmds = CommandList::new().with(Command::Copy { src_off: 0, dst_off: 0, len: 16 });
                s.add_dependency(a, b, EdgeKind::Data, cmds).unwrap();
            }
            5 | 10 => {
                s.checkpoint().unwrap();
            }
            7 => {
                s.propagate(&[a]).unwrap();
            }
            _ => {
                s.update_page_at(a, u64::from(i) * 2, &[i + 1; 9], None).unwrap();
            }
        }
        states.push(snap(&s));
    }
    let files = storage.list().unwrap().into_iter().map(|n| (n.clone(), storage.read(&n).unwrap())).collect();
    (files, states)
}

fn recover(files: &[(String, Vec<u8>)]) -> mmsb::Result<Snap> {
    recover_with(files, config())
}

fn recover_with(files: &[(String, Vec<u8>)], config: Config) -> mmsb::Result<Snap> {
    recover_keeping(files, config).0
}

/// Recovers, and reports any input file with a non-zero byte that recovery made disappear
/// (neither in the directory nor in quarantine), except segments (and their blob files) whose
/// records an intact checkpoint covers: retention removes those.
fn recover_keeping(files: &[(String, Vec<u8>)], config: Config) -> (mmsb::Result<Snap>, Vec<String>) {
    use mmsb::runtime::tlog::format::{parse_blob_name, parse_segment_name, SegmentHeader};
    let (orig, _) = build_once();
    let covered = files
        .iter()
        .filter(|f| f.0.ends_with(".ckpt") && orig.contains(f))
        .filter_map(|f| mmsb::runtime::tlog::format::parse_checkpoint_name(&f.0))
        .max()
        .unwrap_or(0);
    // Segment number -> last LSN it holds (the next segment's base), from the undamaged log.
    let bases: Vec<(u64, u64)> = orig
        .iter()
        .filter_map(|(n, d)| Some((parse_segment_name(n)?, SegmentHeader::decode(d, n).ok()??.base_lsn)))
        .collect();
    let covered_seg = |segno: u64| bases.windows(2).any(|w| w[0].0 == segno && w[1].1 <= covered);
    let storage = Arc::new(MemStorage::new());
    for (name, data) in files {
        storage.create(name).unwrap().write_at(0, data).unwrap();
    }
    let r = MMSBState::open_with_storage(config, storage.clone()).map(|s| snap(&s));
    let listed = storage.list().unwrap();
    let quarantined: Vec<String> = storage.quarantined().into_iter().map(|(n, _)| n).collect();
    let gone = files
        .iter()
        .filter(|(_, d)| d.iter().any(|&b| b != 0))
        .filter(|(n, _)| !parse_segment_name(n).or_else(|| parse_blob_name(n)).is_some_and(covered_seg))
        .filter(|(n, _)| !listed.contains(n) && !quarantined.iter().any(|q| q.starts_with(&format!("quarantine/{n}."))))
        .map(|(n, _)| n.clone())
        .collect();
    (r, gone)
}

/// For each length of the newest segment, the last LSN whose record is wholly within it.
fn lsn_at_each_length(seg: &[u8], blob: &[u8]) -> Vec<u64> {
    use mmsb::runtime::tlog::format::{check_record, SegmentHeader, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
    let h = SegmentHeader::decode(seg, "x").unwrap().unwrap();
    let mut out = vec![h.base_lsn; seg.len() + 1];
    let mut at = SEGMENT_HEADER_LEN;
    while let Ok(r) = check_record(&seg[at..], h.salt, blob) {
        at += RECORD_HEADER_LEN + r.len as usize;
        out[at..].iter_mut().for_each(|l| *l = r.last_lsn());
    }
    out
}

/// How far a damage case may set recovery back.
#[derive(Clone, Copy)]
enum May {
    /// Only to an error: the full state or `Err`.
    Fail,
    /// To any earlier state the writer had (a bit flip in the newest segment's tail may turn a
    /// record into a torn one).
    Prefix,
    /// To exactly this LSN or an error (the newest segment cut short: its torn tail).
    CutTo(u64),
    /// To exactly this LSN, and no error (a torn tail always recovers).
    Recover(u64),
}

#[test]
fn every_single_byte_flip_truncation_and_whole_file_damage_is_detected() {
    let (files, states) = build();
    let full = states.last().unwrap().clone();
    assert_eq!(recover(&files).unwrap(), full);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    let segs: Vec<usize> = (0..files.len()).filter(|&i| names[i].ends_with(".seg")).collect();
    assert!(segs.len() >= 3, "{names:?}");
    assert!(names.iter().filter(|n| n.ends_with(".ckpt")).count() == 2, "{names:?}");
    assert!(names.iter().any(|n| n.ends_with(".blob")), "{names:?}");
    let newest = *segs.last().unwrap();
    let newest_seg = names[newest];
    let newest_blob = newest_seg.replace(".seg", ".blob");
    let blob_of =
        |i: usize| files.iter().find(|(n, _)| *n == names[i].replace(".seg", ".blob")).map(|(_, d)| d.clone());
    let lsn_at = lsn_at_each_length(&files[newest].1, &blob_of(newest).unwrap_or_default());
    let (mut cases, mut errors, mut prefixes, mut complete) = (0u64, 0u64, 0u64, 0u64);
    let mut judge = |what: &str, damaged: &[(String, Vec<u8>)], may: May| {
        cases += 1;
        let (r, gone) = recover_keeping(damaged, config());
        assert!(gone.is_empty(), "{what}: recovery deleted {gone:?}");
        match (r, may) {
            (Err(e), May::Recover(_)) => panic!("{what}: a torn tail must recover, got {e}"),
            (Err(_), _) => errors += 1,
            (Ok(got), may) => {
                let at = states.iter().position(|s| *s == got);
                let lsn = got.base.lsn;
                assert!(at.is_some(), "{what}: recovery produced a state the writer never had (lsn {lsn})");
                match may {
                    May::Fail => assert_eq!(lsn, full.base.lsn, "{what}: opened at an older LSN without an error"),
                    May::CutTo(l) | May::Recover(l) => assert_eq!(lsn, l, "{what}: lost records that are still there"),
                    May::Prefix => {}
                }
                if got == full {
                    complete += 1;
                } else {
                    prefixes += 1;
                }
            }
        }
    };
    for (fi, (name, data)) in files.iter().enumerate() {
        let in_newest = *name == newest_seg || *name == newest_blob;
        for at in 0..data.len() {
            for x in [0x01u8, 0xFF] {
                let mut damaged = files.clone();
                damaged[fi].1[at] ^= x;
                judge(
                    &format!("{name} byte {at} ^ {x:#04x}"),
                    &damaged,
                    if in_newest { May::Prefix } else { May::Fail },
                );
            }
        }
        for len in 0..data.len() {
            let mut damaged = files.clone();
            damaged[fi].1.truncate(len);
            let may = match () {
                _ if fi == newest => May::Recover(*lsn_at.get(len).expect("one per length")),
                _ if in_newest => May::Prefix,
                _ => May::Fail,
            };
            judge(&format!("{name} cut at {len}"), &damaged, may);
        }
        let mut damaged = files.clone();
        damaged.remove(fi);
        let may = match () {
            _ if fi == newest => May::CutTo(lsn_at[0]),
            _ if in_newest => May::Prefix,
            _ => May::Fail,
        };
        judge(&format!("{name} deleted"), &damaged, may);
    }
    for (k, &i) in segs.iter().enumerate() {
        for &j in &segs[k + 1..] {
            let mut damaged = files.clone();
            let (a, b) = (damaged[i].1.clone(), damaged[j].1.clone());
            damaged[i].1 = b;
            damaged[j].1 = a;
            judge(&format!("{} and {} swapped", names[i], names[j]), &damaged, May::Fail);
        }
        // A copy under the next free number, with and without its blob file.
        let next = mmsb::runtime::tlog::format::parse_segment_name(newest_seg).unwrap() + 1;
        let copy = mmsb::runtime::tlog::format::segment_name(next);
        let mut damaged = files.clone();
        damaged.push((copy.clone(), files[i].1.clone()));
        judge(&format!("{} duplicated as {copy}", names[i]), &damaged, May::Fail);
        if let Some(b) = blob_of(i) {
            damaged.push((mmsb::runtime::tlog::format::blob_name(next), b));
            judge(&format!("{} and its blob file duplicated as {copy}", names[i]), &damaged, May::Fail);
        }
    }
    eprintln!(
        "damage cases: {cases} over {} files ({} bytes): {errors} errors, {prefixes} earlier states, {complete} full",
        files.len(),
        files.iter().map(|(_, d)| d.len()).sum::<usize>()
    );
    assert!(errors > 0 && prefixes > 0 && complete > 0);
}

/// Regression (issue 15): a segment that is not the newest, missing or cut at a record boundary,
/// opened without an error at an older LSN, and the segments after it were deleted.
#[test]
fn regression_a_missing_or_short_middle_segment_is_corrupt_and_nothing_is_deleted() {
    let (files, states) = build();
    let segs: Vec<usize> = (0..files.len()).filter(|&i| files[i].0.ends_with(".seg")).collect();
    let middle = segs[segs.len() - 2];
    let after = &files[segs[segs.len() - 1]].0;
    let full_lsn = states.last().unwrap().base.lsn;
    let mut missing = files.clone();
    missing.remove(middle);
    let mut short = files.clone();
    let ends = {
        use mmsb::runtime::tlog::format::{check_record, SegmentHeader, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
        let seg = &files[middle].1;
        let h = SegmentHeader::decode(seg, "x").unwrap().unwrap();
        let blob =
            files.iter().find(|(n, _)| *n == files[middle].0.replace(".seg", ".blob")).map_or(vec![], |f| f.1.clone());
        let (mut at, mut ends) = (SEGMENT_HEADER_LEN, vec![SEGMENT_HEADER_LEN]);
        while let Ok(r) = check_record(&seg[at..], h.salt, &blob) {
            at += RECORD_HEADER_LEN + r.len as usize;
            ends.push(at);
        }
        ends
    };
    assert!(ends.len() >= 2, "the middle segment needs a record");
    short[middle].1.truncate(ends[ends.len() - 2]);
    for (what, damaged) in [("missing", &missing), ("short", &short)] {
        let (r, gone) = recover_keeping(damaged, config());
        match r {
            Err(mmsb::Error::Log(mmsb::types::error::LogError::Corrupt { file, reason, .. })) => {
                assert!(file.ends_with(after.as_str()), "{what}: names the file after the gap: {file}");
                assert!(reason.contains("are missing"), "{what}: names the missing range: {reason}");
            }
            Err(e) => panic!("{what}: expected Corrupt, got {e}"),
            Ok(s) => panic!("{what}: opened at LSN {} (acknowledged {full_lsn})", s.base.lsn),
        }
        assert!(gone.is_empty(), "{what}: deleted {gone:?}");
        // Tolerant recovery opens, moving the segments past the break aside instead of deleting.
        let (r, gone) = recover_keeping(damaged, tolerant());
        assert!(r.is_ok(), "{what}: tolerant recovery opens");
        assert!(gone.is_empty(), "{what}: tolerant recovery deleted {gone:?}");
    }
}

/// Tolerant recovery skips damaged regions, so its result need not be a prefix; it must still
/// finish (no panic, no endless loop) for every single-byte flip, and the state it produces must
/// reopen to itself.
#[test]
fn tolerant_recovery_terminates_on_every_single_byte_flip() {
    let (files, _) = build();
    let mut outcomes = (0u64, 0u64);
    for (fi, (_, data)) in files.iter().enumerate() {
        for at in 0..data.len() {
            for x in [0x01u8, 0xFF] {
                let mut damaged = files.clone();
                damaged[fi].1[at] ^= x;
                match recover_with(&damaged, tolerant()) {
                    Ok(_) => outcomes.0 += 1,
                    Err(_) => outcomes.1 += 1,
                }
            }
        }
    }
    eprintln!("tolerant recovery: {} recovered, {} errors", outcomes.0, outcomes.1);
    assert!(outcomes.0 > 0);
}

/// Regression (found by the log_decode fuzz target): tolerant recovery over a segment whose
/// header does not verify but which holds records resumed at that same segment forever.
#[test]
fn regression_tolerant_recovery_past_a_damaged_segment_header_terminates() {
    let (mut files, _) = build();
    let first_seg = files.iter().position(|(n, _)| n.ends_with(".seg")).unwrap();
    files[first_seg].1[0] ^= 0xFF;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(recover_with(&files, tolerant()).is_ok()).unwrap());
    let r = rx.recv_timeout(std::time::Duration::from_secs(20)).expect("tolerant recovery must finish");
    assert!(r, "tolerant recovery skips the unreadable segment");
}

/// Regression (found by the segment_chain fuzz target): strict recovery skipped damage as
/// "covered by the checkpoint" on the word of the next segment's base LSN, so a damaged (lowered)
/// base let it skip records no checkpoint covers and open at a state the writer never had.
#[test]
fn regression_a_lowered_base_lsn_never_makes_uncovered_damage_skippable() {
    use mmsb::runtime::tlog::format::{check_record, parse_checkpoint_name, SegmentHeader, RECORD_HEADER_LEN};
    let (mut files, _) = build();
    // Recover from the older checkpoint: segments after it have successors.
    let newest_ckpt = files.iter().filter_map(|f| parse_checkpoint_name(&f.0)).max().unwrap();
    files.retain(|f| parse_checkpoint_name(&f.0) != Some(newest_ckpt));
    let ck = files.iter().filter_map(|f| parse_checkpoint_name(&f.0)).max().unwrap();
    let segs: Vec<usize> = (0..files.len()).filter(|&i| files[i].0.ends_with(".seg")).collect();
    let head = |files: &Files, i: usize| SegmentHeader::decode(&files[i].1, "x").unwrap().unwrap();
    let (i, j) = segs
        .windows(2)
        .map(|w| (w[0], w[1]))
        .find(|&(i, _)| head(&files, i).base_lsn >= ck && files[i].1.len() > 56)
        .expect("a segment after the checkpoint with a successor");
    // Damage the last record of segment i (its LSNs are past the checkpoint)...
    let blob = files.iter().find(|f| f.0 == files[i].0.replace(".seg", ".blob")).map_or(vec![], |f| f.1.clone());
    let (h, mut at, mut last) = (head(&files, i), 56usize, 56usize);
    while let Ok(r) = check_record(&files[i].1[at..], h.salt, &blob) {
        last = at;
        at += RECORD_HEADER_LEN + r.len as usize;
    }
    files[i].1[last + 8] ^= 0xFF;
    assert!(recover(&files).is_err(), "uncovered damage is Corrupt");
    // ...and lower the next segment's base LSN to the checkpoint, re-sealing its header.
    let mut hj = head(&files, j);
    hj.base_lsn = ck;
    files[j].1[..56].copy_from_slice(&hj.encode());
    match recover(&files) {
        Err(mmsb::Error::Log(mmsb::types::error::LogError::Corrupt { reason, .. })) => {
            assert!(reason.contains("does not cover"), "{reason}")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}
