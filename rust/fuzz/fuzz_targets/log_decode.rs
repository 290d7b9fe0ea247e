//! Untrusted bytes → log recovery. Either the input is taken verbatim as segment files, or it
//! drives a log whose frames are valid (correct header, salt and checksums) but whose record
//! types, LSN counts and bodies are the fuzzer's, so the body decoders (`Record::decode`, graph
//! and device extension records) and replay see hostile bytes behind valid checksums. Recovery
//! never panics; when it succeeds, reopening gives the same state (recovery is idempotent).
//! Both shapes include blob files: verbatim bytes, or records whose body moved to the blob file
//! behind a valid descriptor (or a hostile one).
#![no_main]

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;

use common::{snapshot, Input};
use libfuzzer_sys::fuzz_target;
use mmsb::runtime::tlog::format::{
    blob_name, seal_blob_record, seal_record, segment_name, BlobRef, SegmentHeader, FLAG_CHAIN_START, RECORD_HEADER_LEN,
};
use mmsb::runtime::tlog::record::{CreateBody, Record};
use mmsb::runtime::tlog::storage::{MemStorage, Storage};
use mmsb::{Config, Delta, Location, MMSBState, PageId, PageMeta};

fn body(inp: &mut Input<'_>, kind: u8) -> Vec<u8> {
    let mut out = Vec::new();
    // Half the time a well-formed body of the type (then maybe damaged), else raw bytes.
    if inp.u8() & 1 == 0 {
        let page = PageId(u64::from(inp.u8() % 4));
        let rec = match kind {
            1 => Record::PageCreate(CreateBody {
                id: page,
                size: u64::from(inp.u16()),
                location: Location::Cpu,
                meta: PageMeta::default(),
            }),
            2 => Record::PageFree(page),
            3 => {
                let off = u64::from(inp.u8());
                let len = usize::from(inp.u8() % 32);
                Record::Batch(vec![(page, Delta::write(off, &inp.bytes(len)).unwrap_or_else(|_| Delta::empty()))])
            }
            _ => {
                let kind = inp.u8();
                let n = usize::from(inp.u8() % 64);
                Record::Extension { kind, body: inp.bytes(n) }
            }
        };
        rec.encode(&mut out);
        if inp.u8() == 0 && !out.is_empty() {
            let at = usize::from(inp.u16()) % out.len();
            out[at] ^= inp.u8() | 1;
        }
    } else {
        let len = usize::from(inp.u16() % 512);
        out = inp.bytes(len);
    }
    // The direct decoder of record bodies.
    let _ = Record::decode(kind, 1, &out);
    out
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let storage = MemStorage::new();
    let mode = inp.u8();
    if mode % 4 == 0 {
        let n = 1 + u64::from(inp.u8() % 3);
        for segno in 1..=n {
            let len = usize::from(inp.u16());
            let f = storage.create(&segment_name(segno)).unwrap();
            f.write_at(0, &inp.bytes(len)).unwrap();
            if inp.u8() & 1 == 0 {
                let len = usize::from(inp.u16());
                storage.create(&blob_name(segno)).unwrap().write_at(0, &inp.bytes(len)).unwrap();
            }
        }
    } else {
        let salt = inp.u64();
        let header = SegmentHeader { flags: FLAG_CHAIN_START, segno: 1, salt, prev_salt: 0, base_lsn: 0 };
        let mut bytes = header.encode().to_vec();
        let mut lsn = 1u64;
        let mut blob = Vec::new();
        for _ in 0..32 {
            if inp.is_empty() {
                break;
            }
            let kind = inp.u8() % 7;
            let count = if inp.u8() < 240 { 1 } else { 1 + u64::from(inp.u8() % 8) };
            let b = body(&mut inp, kind);
            let at = bytes.len();
            bytes.resize(at + RECORD_HEADER_LEN, 0);
            if inp.u8() < 64 {
                // A blob record: the body splits at `cut` into inline bytes and one piece.
                let cut = if b.is_empty() { 0 } else { usize::from(inp.u16()) % b.len() };
                let off = blob.len() as u64 + u64::from(inp.u8() % 8);
                let mut desc = vec![0u8; BlobRef::encoded_len(1)];
                BlobRef::encode(off, &[(cut as u32, (b.len() - cut) as u32)], &mut desc);
                if inp.u8() == 0 {
                    let i = usize::from(inp.u8()) % desc.len();
                    desc[i] ^= inp.u8() | 1;
                }
                bytes.extend_from_slice(&desc);
                bytes.extend_from_slice(&b[..cut]);
                blob.resize(off as usize, 0);
                blob.extend_from_slice(&b[cut..]);
                seal_blob_record(&mut bytes[at..], salt, lsn, count, kind, &b[cut..]);
            } else {
                bytes.extend_from_slice(&b);
                seal_record(&mut bytes[at..], salt, lsn, count, kind);
            }
            lsn += count;
        }
        if !blob.is_empty() {
            if mode % 4 == 3 && inp.u8() & 1 == 0 {
                // A torn or damaged blob file instead of a damaged segment.
                let at = usize::from(inp.u16()) % blob.len();
                if inp.u8() & 1 == 0 {
                    blob[at] ^= inp.u8() | 1;
                } else {
                    blob.truncate(at);
                }
            }
            storage.create(&blob_name(1)).unwrap().write_at(0, &blob).unwrap();
        }
        if mode % 4 == 3 && !bytes.is_empty() {
            // One damaged byte anywhere, or a torn tail.
            let at = usize::from(inp.u16()) % bytes.len();
            if inp.u8() & 1 == 0 {
                bytes[at] ^= inp.u8() | 1;
            } else {
                bytes.truncate(at);
            }
        }
        storage.create(&segment_name(1)).unwrap().write_at(0, &bytes).unwrap();
    }
    let storage: Arc<dyn Storage> = Arc::new(storage);
    let config =
        Config { logging: true, max_page_size: 1 << 20, tolerant_recovery: mode & 4 != 0, ..Config::default() };
    let Ok(s) = MMSBState::open_with_storage(config.clone(), storage.clone()) else { return };
    let first = snapshot(&s);
    drop(s);
    let s = MMSBState::open_with_storage(config, storage).expect("a recovered log reopens");
    assert_eq!(snapshot(&s), first, "recovery is idempotent");
});
