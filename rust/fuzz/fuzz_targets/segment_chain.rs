//! The segment chain's continuity fields (segment number, `prev_salt`, base LSN, `CHAIN_START`)
//! and whole-file damage. A real log of several segments, blob files and a checkpoint is written
//! once; each input then edits header fields (re-sealing the header checksum, so the edit looks
//! valid), deletes, empties, cuts at a record boundary, swaps or duplicates files, or flips a
//! byte, up to three times. Strict recovery either fails or opens at a state the writer had, and
//! at the last acknowledged one unless the newest segment or its blob file was damaged (then a
//! torn tail is all recovery can see).
//! No recovery (strict or tolerant) makes a file with a non-zero byte disappear, unless a
//! checkpoint covers its records; a recovered log reopens to the same state.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use std::sync::{Arc, OnceLock};

use common::{snapshot, Input};
use libfuzzer_sys::fuzz_target;
use mmsb::runtime::tlog::format::{
    blob_name, check_record, parse_blob_name, parse_checkpoint_name, parse_segment_name, segment_name, SegmentHeader,
    FLAG_CHAIN_START, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use mmsb::runtime::tlog::storage::{MemStorage, Storage};
use mmsb::{Config, Location, MMSBState, PageMeta};

type Snap = (u64, Vec<(mmsb::PageInfo, Vec<u8>)>, usize);

struct Log {
    files: Vec<(String, Vec<u8>)>,
    states: Vec<Snap>,
    /// Segment numbers whose records an intact checkpoint covers (retention may remove them).
    covered: Vec<u64>,
    ckpt: (String, Vec<u8>),
}

fn config(tolerant: bool) -> Config {
    Config { logging: true, segment_size: 256, blob_min: 9, tolerant_recovery: tolerant, ..Config::default() }
}

fn log() -> &'static Log {
    static LOG: OnceLock<Log> = OnceLock::new();
    LOG.get_or_init(|| {
        let storage = Arc::new(MemStorage::new());
        let s = MMSBState::open_with_storage(config(false), storage.clone()).unwrap();
        let mut states = vec![snapshot(&s)];
        let a = s.create_page(64, Location::Cpu, PageMeta::default()).unwrap();
        states.push(snapshot(&s));
        for i in 0..24u8 {
            if i == 8 {
                s.checkpoint().unwrap();
            }
            s.update_page_at(a, u64::from(i), &vec![i + 1; 4 + usize::from(i % 3) * 8], None).unwrap();
            states.push(snapshot(&s));
        }
        let files: Vec<(String, Vec<u8>)> =
            storage.list().unwrap().into_iter().map(|n| (n.clone(), storage.read(&n).unwrap())).collect();
        let ckpt = files.iter().find(|f| parse_checkpoint_name(&f.0).is_some()).unwrap().clone();
        let k = parse_checkpoint_name(&ckpt.0).unwrap();
        let bases: Vec<(u64, u64)> = files
            .iter()
            .filter_map(|(n, d)| Some((parse_segment_name(n)?, SegmentHeader::decode(d, n).ok()??.base_lsn)))
            .collect();
        let covered = bases.windows(2).filter(|w| w[1].1 <= k).map(|w| w[0].0).collect();
        assert!(bases.len() >= 3, "several segments");
        Log { files, states, covered, ckpt }
    })
}

/// Offsets where records of a segment file end (header end first).
fn boundaries(seg: &[u8], blob: &[u8]) -> Vec<usize> {
    let mut out = vec![SEGMENT_HEADER_LEN.min(seg.len())];
    let Ok(Some(h)) = SegmentHeader::decode(seg, "x") else { return out };
    let mut at = SEGMENT_HEADER_LEN;
    while let Ok(r) = check_record(&seg[at..], h.salt, blob) {
        at += RECORD_HEADER_LEN + r.len as usize;
        out.push(at);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let log = log();
    let mut inp = Input(data);
    let mut files = log.files.clone();
    let segs = |files: &[(String, Vec<u8>)]| -> Vec<usize> {
        (0..files.len()).filter(|&i| parse_segment_name(&files[i].0).is_some()).collect()
    };
    let tolerant = inp.u8() & 1 == 1;
    for _ in 0..1 + inp.u8() % 3 {
        let s = segs(&files);
        if s.is_empty() || files.is_empty() {
            break;
        }
        let i = s[usize::from(inp.u8()) % s.len()];
        let f = usize::from(inp.u8()) % files.len();
        match inp.u8() % 8 {
            0 => {
                // A continuity field of a segment header, re-sealed.
                let Ok(Some(mut h)) = SegmentHeader::decode(&files[i].1, "x") else { continue };
                let d = u64::from(inp.u8() % 4) + 1;
                match inp.u8() % 5 {
                    0 => h.segno = if inp.u8() & 1 == 0 { h.segno + d } else { h.segno.saturating_sub(d) },
                    1 => h.base_lsn = if inp.u8() & 1 == 0 { h.base_lsn + d } else { h.base_lsn.saturating_sub(d) },
                    2 => {
                        let j = s[usize::from(inp.u8()) % s.len()];
                        h.prev_salt = SegmentHeader::decode(&files[j].1, "x").ok().flatten().map_or(0, |o| o.salt);
                    }
                    3 => h.flags ^= FLAG_CHAIN_START,
                    _ => h.prev_salt ^= 1 << (inp.u8() % 64),
                }
                files[i].1[..SEGMENT_HEADER_LEN].copy_from_slice(&h.encode());
            }
            1 => {
                files.remove(f);
            }
            2 => {
                files[f].1.clear();
            }
            3 => {
                let blob =
                    files.iter().find(|b| b.0 == files[i].0.replace(".seg", ".blob")).map_or(vec![], |b| b.1.clone());
                let cuts = boundaries(&files[i].1, &blob);
                let at = cuts[usize::from(inp.u8()) % cuts.len()];
                files[i].1.truncate(at);
            }
            4 => {
                let j = s[usize::from(inp.u8()) % s.len()];
                let (a, b) = (files[i].1.clone(), files[j].1.clone());
                files[i].1 = b;
                files[j].1 = a;
            }
            5 => {
                // A copy under a new number after the newest (with its blob file, maybe).
                let no = files.iter().filter_map(|f| parse_segment_name(&f.0)).max().unwrap() + 1;
                let copy = files[i].1.clone();
                let blob = files.iter().find(|b| b.0 == files[i].0.replace(".seg", ".blob")).cloned();
                files.push((segment_name(no), copy));
                if let (Some(b), true) = (blob, inp.u8() & 1 == 0) {
                    files.push((blob_name(no), b.1));
                }
            }
            6 => {
                let j = s[usize::from(inp.u8()) % s.len()];
                files[j].1 = files[i].1.clone();
            }
            _ => {
                if !files[f].1.is_empty() {
                    let at = usize::from(inp.u16()) % files[f].1.len();
                    files[f].1[at] ^= inp.u8() | 1;
                }
            }
        }
    }
    let storage = Arc::new(MemStorage::new());
    for (name, d) in &files {
        storage.create(name).unwrap().write_at(0, d).unwrap();
    }
    let r = MMSBState::open_with_storage(config(tolerant), storage.clone()).map(|s| snapshot(&s));
    // Nothing with content disappears, except what an intact checkpoint covers.
    let listed = storage.list().unwrap();
    let quarantined: Vec<String> = storage.quarantined().into_iter().map(|q| q.0).collect();
    let ckpt_intact = files.contains(&log.ckpt);
    for (n, d) in &files {
        let kept = listed.contains(n) || quarantined.iter().any(|q| q.starts_with(&format!("quarantine/{n}.")));
        let covered = ckpt_intact
            && parse_segment_name(n).or_else(|| parse_blob_name(n)).is_some_and(|no| log.covered.contains(&no));
        assert!(kept || covered || d.iter().all(|&b| b == 0), "recovery deleted {n}");
    }
    let Ok(got) = r else { return };
    // What the damage changed, by comparing with the log as written (an operation may be a
    // no-op, or undo another).
    let (mut touched_segs, mut suffix_only) = (Vec::new(), true);
    let changed = log
        .files
        .iter()
        .filter(|f| !files.contains(f))
        .chain(files.iter().filter(|f| !log.files.iter().any(|o| o.0 == f.0)));
    for (n, _) in changed {
        match parse_segment_name(n).or_else(|| parse_blob_name(n)) {
            Some(no) => touched_segs.push(no),
            None => suffix_only = false,
        }
    }
    let orig: Vec<u64> = log.files.iter().filter_map(|f| parse_segment_name(&f.0)).collect();
    // Damage to the newest segment or its blob file can always look like a crash before the
    // lost writes (a torn tail), whatever else was damaged; without it, nothing may be lost.
    let newest = *orig.iter().max().unwrap();
    let newest_touched = suffix_only && touched_segs.contains(&newest);
    if !tolerant {
        assert!(log.states.contains(&got), "a state the writer never had (lsn {})", got.0);
        let full = log.states.last().unwrap();
        assert!(newest_touched || got == *full, "opened at LSN {} < {} without an error", got.0, full.0);
    }
    let again = MMSBState::open_with_storage(config(tolerant), storage).expect("a recovered log reopens");
    assert_eq!(snapshot(&again), got, "recovery is idempotent");
});
