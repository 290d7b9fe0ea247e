//! Exhaustive damage test: a small log (several segments, two checkpoint generations, graph
//! records and a checkpoint graph section) is damaged in every possible single way: each byte of
//! each file xor 0x01 and xor 0xFF, and each file truncated at every length. Recovery must either
//! fail with an error or produce exactly one of the states the writer went through (a prefix);
//! never other bytes. Truncating the newest segment must always recover (a torn tail).

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

/// Builds the log; returns its files and every state the writer acknowledged.
fn build() -> (Vec<(String, Vec<u8>)>, Vec<Snap>) {
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
    let storage = MemStorage::new();
    for (name, data) in files {
        storage.create(name).unwrap().write_at(0, data).unwrap();
    }
    let s = MMSBState::open_with_storage(config, Arc::new(storage))?;
    Ok(snap(&s))
}

#[test]
fn every_single_byte_flip_and_truncation_is_detected() {
    let (files, states) = build();
    assert_eq!(recover(&files).unwrap(), *states.last().unwrap());
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.iter().filter(|n| n.ends_with(".seg")).count() >= 2, "{names:?}");
    assert!(names.iter().filter(|n| n.ends_with(".ckpt")).count() == 2, "{names:?}");
    let newest_seg = names.iter().copied().filter(|n| n.ends_with(".seg")).max().unwrap();
    let (mut cases, mut errors, mut prefixes, mut full) = (0u64, 0u64, 0u64, 0u64);
    let mut judge = |what: &str, r: mmsb::Result<Snap>, must_recover: bool| {
        cases += 1;
        match r {
            Err(e) => {
                assert!(!must_recover, "{what}: a torn tail must recover, got {e}");
                errors += 1;
            }
            Ok(got) => {
                let at = states.iter().position(|s| *s == got);
                assert!(at.is_some(), "{what}: recovery produced a state the writer never had (lsn {})", got.base.lsn);
                if at == Some(states.len() - 1) {
                    full += 1;
                } else {
                    prefixes += 1;
                }
            }
        }
    };
    for (fi, (name, data)) in files.iter().enumerate() {
        for at in 0..data.len() {
            for x in [0x01u8, 0xFF] {
                let mut damaged = files.clone();
                damaged[fi].1[at] ^= x;
                judge(&format!("{name} byte {at} ^ {x:#04x}"), recover(&damaged), false);
            }
        }
        for len in 0..data.len() {
            let mut damaged = files.clone();
            damaged[fi].1.truncate(len);
            judge(&format!("{name} cut at {len}"), recover(&damaged), name == newest_seg);
        }
    }
    eprintln!(
        "damage cases: {cases} over {} files ({} bytes): {errors} errors, {prefixes} earlier states, {full} full",
        files.len(),
        files.iter().map(|(_, d)| d.len()).sum::<usize>()
    );
    assert!(errors > 0 && prefixes > 0);
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
