//! The state directory as a security boundary. Covered elsewhere, not repeated here:
//! owner-only files and directory (`tlog_recovery.rs::files_are_private`,
//! `storage.rs::private_permissions`), generated names never escape the directory
//! (`storage.rs::memory_and_disk_behave_alike` rejects `../x` and `a/b`), newer segment and
//! checkpoint format versions (`tlog_recovery.rs::a_newer_format_version_is_rejected_clearly`).
//! Here: foreign files are never touched, and newer versions of the layers' own encodings
//! (graph snapshot in a checkpoint, device sync records in the log) are clear errors too.
#![allow(clippy::cast_possible_truncation)] // test data and sizes: truncation is intended or impossible here

mod tlog_common;

use std::sync::Arc;

use mmsb::device::{encode_sync_record, DeviceSyncRecord, SyncDirection};
use mmsb::graph::{Command, CommandList, EdgeKind};
use mmsb::runtime::tlog::format::{seal_record, segment_name, SegmentHeader, FLAG_CHAIN_START, RECORD_HEADER_LEN};
use mmsb::runtime::tlog::record::{ext_kind, CreateBody, Record, RecordType};
use mmsb::runtime::tlog::storage::{MemStorage, Storage};
use mmsb::{Location, MMSBState, PageId, PageMeta};

/// Regression: every `*.tmp` file in the state directory was deleted at open, including files
/// that are not the log's (a user's `notes.tmp`). Only the log's own temp names are removed.
#[test]
fn files_that_are_not_the_logs_are_never_touched() {
    let d = tlog_common::scratch();
    let dir = d.path().join("s");
    std::fs::create_dir_all(&dir).unwrap();
    let foreign = ["notes.tmp", "log-1.seg", "ckpt-x.ckpt", "README", "log-00000000000000000001.seg.bak"];
    for f in foreign {
        std::fs::write(dir.join(f), b"user data").unwrap();
    }
    // A temp file of the log itself (an interrupted checkpoint) is removed.
    std::fs::write(dir.join("ckpt-00000000000000000005.ckpt.tmp"), b"partial").unwrap();
    {
        let s = MMSBState::open(tlog_common::disk_config(&dir)).unwrap();
        let p = s.create_page(16, Location::Cpu, PageMeta::default()).unwrap();
        s.update_page(p, b"x").unwrap();
        s.checkpoint().unwrap();
        s.compact_log().unwrap();
    }
    MMSBState::open(tlog_common::disk_config(&dir)).unwrap();
    for f in foreign {
        assert_eq!(std::fs::read(dir.join(f)).unwrap(), b"user data", "{f} was touched");
    }
    assert!(!dir.join("ckpt-00000000000000000005.ckpt.tmp").exists());
}

#[test]
fn a_checkpoint_with_a_newer_graph_snapshot_version_is_a_clear_error() {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    {
        let s = MMSBState::open_with_storage(tlog_common::mem_config(), storage.clone()).unwrap();
        let a = s.create_page(16, Location::Cpu, PageMeta::default()).unwrap();
        let b = s.create_page(16, Location::Cpu, PageMeta::default()).unwrap();
        let cmds = CommandList::new().with(Command::Fill { dst_off: 0, len: 4, value: 9 });
        s.add_dependency(a, b, EdgeKind::Data, cmds).unwrap();
        s.checkpoint().unwrap();
    }
    let name = storage.list().unwrap().into_iter().find(|n| n.ends_with(".ckpt")).unwrap();
    let mut raw = storage.read(&name).unwrap();
    // Header bytes 48..56: the extension section's length.
    let ext_len = u64::from_le_bytes(raw[48..56].try_into().unwrap()) as usize;
    let ext_at = raw.len() - 4 - ext_len;
    // The snapshot's first field is its version (a postcard varint: 1 -> 2).
    assert_eq!(raw[ext_at], 1);
    raw[ext_at] = 2;
    let end = raw.len() - 4;
    let crc = crc32c::crc32c(&raw[..end]);
    raw[end..].copy_from_slice(&crc.to_le_bytes());
    storage.create(&name).unwrap().write_at(0, &raw).unwrap();
    let e = MMSBState::open_with_storage(tlog_common::mem_config(), storage).unwrap_err();
    assert!(e.to_string().contains("format version 2"), "{e}");
}

#[test]
fn a_device_sync_record_of_a_newer_version_is_a_clear_error() {
    let storage = MemStorage::new();
    let salt = 0x5eed;
    let header = SegmentHeader { flags: FLAG_CHAIN_START, segno: 1, salt, prev_salt: 0, base_lsn: 0 };
    let mut bytes = header.encode().to_vec();
    let create =
        Record::PageCreate(CreateBody { id: PageId(1), size: 64, location: Location::Cpu, meta: PageMeta::default() });
    let sync = DeviceSyncRecord {
        version: 2,
        page: PageId(1),
        direction: SyncDirection::HostToDevice,
        epoch: 0,
        delta_lsn: None,
        copies: vec![(0, 64)],
        bytes: 64,
    };
    let ext = Record::Extension { kind: ext_kind::DEVICE_SYNC, body: encode_sync_record(&sync) };
    for (lsn, (kind, rec)) in [(RecordType::PageCreate, create), (RecordType::Extension, ext)].into_iter().enumerate() {
        let at = bytes.len();
        bytes.resize(at + RECORD_HEADER_LEN, 0);
        rec.encode(&mut bytes);
        seal_record(&mut bytes[at..], salt, lsn as u64 + 1, 1, kind as u8);
    }
    storage.create(&segment_name(1)).unwrap().write_at(0, &bytes).unwrap();
    let e = MMSBState::open_with_storage(tlog_common::mem_config(), Arc::new(storage)).unwrap_err();
    assert!(e.to_string().contains("version 2"), "{e}");
}

/// Writes a one-segment log of `records` (kind, body) with valid frames.
fn log_of(records: &[(RecordType, u64, Vec<u8>)]) -> Arc<dyn Storage> {
    let storage = MemStorage::new();
    let salt = 0xfeed;
    let header = SegmentHeader { flags: FLAG_CHAIN_START, segno: 1, salt, prev_salt: 0, base_lsn: 0 };
    let mut bytes = header.encode().to_vec();
    let mut lsn = 1;
    for (kind, count, body) in records {
        let at = bytes.len();
        bytes.resize(at + RECORD_HEADER_LEN, 0);
        bytes.extend_from_slice(body);
        seal_record(&mut bytes[at..], salt, lsn, *count, *kind as u8);
        lsn += count;
    }
    storage.create(&segment_name(1)).unwrap().write_at(0, &bytes).unwrap();
    Arc::new(storage)
}

/// Regression (found by the log_decode fuzz target): bodies behind valid checksums are still
/// untrusted. A page created with id u64::MAX overflowed `next_page_id` (a panic in debug
/// builds, a wrap to 0 in release); id 0 and size 0 are refused too.
#[test]
fn hostile_page_records_behind_valid_checksums_are_errors() {
    for (id, size) in [(u64::MAX, 8), (0, 8), (5, 0)] {
        let mut body = Vec::new();
        Record::PageCreate(CreateBody { id: PageId(id), size, location: Location::Cpu, meta: PageMeta::default() })
            .encode(&mut body);
        let storage = log_of(&[(RecordType::PageCreate, 1, body)]);
        let e = MMSBState::open_with_storage(tlog_common::mem_config(), storage).unwrap_err();
        assert!(e.to_string().contains("page"), "{e}");
    }
}
