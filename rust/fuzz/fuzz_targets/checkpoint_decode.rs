//! Untrusted bytes → checkpoint files. Either verbatim, or with the header and trailing
//! checksums fixed up so that the index (postcard), the page sizes, the extension section (the
//! graph snapshot) and loading reach hostile bytes. Never panics; a checkpoint that loads
//! reopens to the same state. The same bytes as a file are opened lazily too
//! (`checkpoint::open_lazy`, format 3: page images mapped copy-on-write): never a fault, and
//! the mapped images equal the bytes a read sees.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;

use common::{snapshot, Input};
use libfuzzer_sys::fuzz_target;
use mmsb::runtime::tlog::checkpoint;
use mmsb::runtime::tlog::format::{checkpoint_name, CHECKPOINT_HEADER_LEN, CHECKPOINT_MAGIC, FORMAT_VERSION};
use mmsb::runtime::tlog::storage::{FsStorage, MemStorage, Storage};
use mmsb::{Config, MMSBState};

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let mode = inp.u8();
    let lsn = u64::from(inp.u8());
    let mut bytes;
    if mode & 1 == 0 {
        bytes = inp.0.to_vec();
    } else {
        // A header with consistent lengths and checksums around fuzzer-chosen sections.
        let n = usize::from(inp.u8());
        let index = inp.bytes(n);
        let data_len = usize::from(inp.u16() % 4096);
        let data = inp.bytes(data_len);
        let n = usize::from(inp.u8());
        let ext = inp.bytes(n);
        let mut h = [0u8; CHECKPOINT_HEADER_LEN];
        h[0..8].copy_from_slice(&CHECKPOINT_MAGIC);
        h[8..12].copy_from_slice(&(if mode & 2 == 0 { FORMAT_VERSION } else { u32::from(inp.u8()) }).to_le_bytes());
        // Format 3: an image alignment of 2^(fuzzer's choice) (12: 4 KiB pages).
        h[12..16].copy_from_slice(&(u32::from(inp.u8() % 20) << 8).to_le_bytes());
        h[16..24].copy_from_slice(&lsn.to_le_bytes());
        h[24..32].copy_from_slice(&inp.u64().to_le_bytes());
        h[32..40].copy_from_slice(&(index.len() as u64).to_le_bytes());
        h[40..48].copy_from_slice(&(data.len() as u64).to_le_bytes());
        h[48..56].copy_from_slice(&(ext.len() as u64).to_le_bytes());
        let hcrc = crc32c::crc32c(&h[0..56]);
        h[56..60].copy_from_slice(&hcrc.to_le_bytes());
        let meta = crc32c::crc32c_append(crc32c::crc32c(&index), &ext);
        h[60..64].copy_from_slice(&meta.to_le_bytes());
        bytes = [&h[..], &index, &data, &ext].concat();
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
    }
    let storage = MemStorage::new();
    let name = checkpoint_name(lsn);
    storage.create(&name).unwrap().write_at(0, &bytes).unwrap();
    // The direct decoder.
    if let Ok(Some(c)) = checkpoint::read(&storage, &name) {
        let total: usize = c.pages().map(|(_, b)| b.len()).sum();
        assert!(total <= bytes.len());
        let _ = c.extension();
    }
    lazy(&name, &bytes);
    let storage: Arc<dyn Storage> = Arc::new(storage);
    let config = Config { logging: true, max_page_size: 1 << 20, ..Config::default() };
    let Ok(s) = MMSBState::open_with_storage(config.clone(), storage.clone()) else { return };
    let first = snapshot(&s);
    drop(s);
    let s = MMSBState::open_with_storage(config, storage).expect("a recovered checkpoint reopens");
    assert_eq!(snapshot(&s), first);
});

/// The lazy open of the same bytes as a file: each image it maps equals what its slice holds.
fn lazy(name: &str, bytes: &[u8]) {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("mmsb-fuzz-ckpt-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let storage = FsStorage::new(&dir).unwrap();
    storage.create(name).unwrap().write_at(0, bytes).unwrap();
    if let Ok(Some(c)) = checkpoint::open_lazy(&storage, name) {
        for (i, (_, b)) in c.pages().enumerate() {
            if let Some(Ok(m)) = c.mapped_page(i) {
                assert_eq!(m.to_vec(), b);
            }
        }
        let _ = c.extension();
    }
    drop(storage);
    let _ = std::fs::remove_dir_all(&dir);
}
