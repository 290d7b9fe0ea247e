//! Untrusted bytes → the readers of a file-backed directory: the shared header, the page table,
//! the page files and the pre-change image files (`pages/images-<seq>`). A real directory is
//! written once (pages created, written, a checkpoint, more writes, so images exist, then one
//! freed page) and captured while its writer runs, as a crash leaves it. Each input edits its
//! files (flipped bytes, fuzzer-chosen 8-byte fields at aligned offsets, truncation, appended
//! bytes, a removed file), then opens a `Reader` (status, page list, sizes, snapshot reads,
//! views, a wait) and `MMSBState::open_at`, which reads the images and page files of a
//! directory whose writer is gone. Never panics nor hangs; unedited, every read returns the
//! bytes the writer had.
//!
//! The header's writer pid is set by the input from pids that name no running process (or none
//! that a reader may wait for): a reader waits for a live writer to finish what it started, so
//! a header that names a live process it does not belong to is out of scope.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mmsb::runtime::shared::off;
use mmsb::{Config, Location, MMSBState, PageId, PageMeta, Reader};

#[path = "common/mod.rs"]
mod common;
use common::Input;

struct Template {
    /// Paths relative to the directory, with their bytes.
    files: Vec<(PathBuf, Vec<u8>)>,
    /// Live pages and their bytes when the files were captured.
    pages: Vec<(PageId, Vec<u8>)>,
    lsn: u64,
}

/// A directory of its own for `what` (removed by the caller; no parent left behind, since a
/// fuzz run ends with `exit`; only a failing input leaves its directory, to look at).
fn scratch(what: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
    base.join(format!("mmsb-fuzz-reader-{}-{what}", std::process::id()))
}

fn capture(dir: &Path, rel: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for e in std::fs::read_dir(dir.join(rel)).unwrap() {
        let e = e.unwrap();
        let rel = rel.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            capture(dir, &rel, out);
        } else if e.file_name() != "LOCK" {
            out.push((rel, std::fs::read(e.path()).unwrap()));
        }
    }
}

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        let dir = scratch("template");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = Config { dir: Some(dir.clone()), file_backed_pages: true, ..Config::default() };
        let s = MMSBState::open(config).unwrap();
        let ids: Vec<PageId> = [100u64, 4096, 5000, 64]
            .iter()
            .map(|&n| s.create_page(n, Location::Cpu, PageMeta::default()).unwrap())
            .collect();
        for (i, &id) in ids.iter().enumerate() {
            s.update_page_at(id, i as u64, &[i as u8 + 1; 16], None).unwrap();
        }
        s.checkpoint().unwrap();
        // Changes after the checkpoint: their first-change images go to pages/images-<seq>.
        s.update_page_at(ids[0], 10, b"after checkpoint", None).unwrap();
        s.update_page_at(ids[2], 4000, b"far", None).unwrap();
        s.free_page(ids[3]).unwrap();
        let mut files = Vec::new();
        capture(&dir, Path::new(""), &mut files);
        files.sort();
        let pages = ids[..3].iter().map(|&id| (id, s.read_page(id).unwrap())).collect();
        let lsn = s.lsn();
        s.close();
        drop(s);
        std::fs::remove_dir_all(&dir).unwrap();
        Template { files, pages, lsn }
    })
}

/// Pids no running process has, or that name no single process: the reader must not mistake
/// them for a live writer (u32::MAX once became kill(-1, 0), "some process exists").
const PIDS: [u32; 6] = [0, u32::MAX, 0x8000_0000, 0x7fff_fffe, 0x7fff_ffff, 4_000_000];

fuzz_target!(|data: &[u8]| {
    let t = template();
    let mut inp = Input(data);
    let mut files = t.files.clone();
    let edits = usize::from(inp.u8() % 5);
    for _ in 0..edits {
        let i = usize::from(inp.u8()) % files.len();
        let bytes = &mut files[i].1;
        let len = bytes.len().max(1);
        match inp.u8() % 6 {
            0 => {
                let at = usize::from(inp.u16()) % len;
                if let Some(b) = bytes.get_mut(at) {
                    *b ^= inp.u8() | 1;
                }
            }
            1 | 2 => {
                // An 8-byte field at an aligned offset (header, slots and image entries are
                // made of those), usually near the start where the fields are.
                let at = (usize::from(inp.u16()) % len) & !7;
                let v = match inp.u8() % 4 {
                    0 => inp.u64(),
                    1 => u64::MAX - u64::from(inp.u8()),
                    2 => u64::from(inp.u8()),
                    _ => 1u64 << (inp.u8() % 64),
                };
                if at + 8 <= bytes.len() {
                    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
                }
            }
            3 => {
                let at = usize::from(inp.u16()) % len;
                bytes.truncate(at);
            }
            4 => {
                let n = usize::from(inp.u8());
                bytes.extend(inp.bytes(n));
            }
            _ => {
                files.remove(i);
                if files.is_empty() {
                    return;
                }
            }
        }
    }
    let pid = PIDS[usize::from(inp.u8()) % PIDS.len()];
    let edited = edits > 0;

    static N: AtomicU64 = AtomicU64::new(0);
    let dir = scratch(&N.fetch_add(1, Ordering::Relaxed).to_string());
    for (rel, bytes) in &files {
        let mut bytes = bytes.clone();
        if rel == Path::new("pages/header") && bytes.len() >= off::PID + 4 {
            bytes[off::PID..off::PID + 4].copy_from_slice(&pid.to_le_bytes());
        }
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
    }

    if let Ok(r) = Reader::open(&dir) {
        let _ = (r.lsn(), r.durable_lsn(), r.generation(), r.writer());
        // No writer runs: a wait returns at once whatever it waits for.
        let _ = r.wait_for(u64::MAX, Some(Duration::from_secs(5)));
        let ids = r.page_ids();
        if !edited {
            let ids = ids.as_ref().expect("an unedited directory lists its pages");
            assert_eq!(ids, &t.pages.iter().map(|p| p.0).collect::<Vec<_>>());
        }
        let mut probe: Vec<PageId> = ids.unwrap_or_default().into_iter().take(8).collect();
        probe.extend([PageId(1), PageId(4), PageId(0), PageId(u64::MAX)]);
        for id in probe {
            if let Ok(size) = r.page_size(id) {
                if let Ok((bytes, info)) = r.read(id) {
                    assert_eq!(bytes.len() as u64, info.size);
                    if !edited {
                        let want = &t.pages.iter().find(|p| p.0 == id).expect("a listed page").1;
                        assert_eq!(&bytes, want, "page {id} as the writer left it");
                    }
                }
                if let Ok(v) = r.view(id) {
                    assert!(v.len() as u64 <= size);
                    // SAFETY: the view maps at least `len` bytes while it lives.
                    let _ = unsafe { std::slice::from_raw_parts(v.as_ptr(), v.len()) }.iter().fold(0u8, |a, b| a ^ b);
                }
            }
        }
    }

    for lsn in [t.lsn, u64::from(inp.u8())] {
        match MMSBState::open_at(&dir, lsn) {
            Ok(s) => {
                for id in s.page_ids().unwrap_or_default().into_iter().take(8) {
                    let _ = s.read_page(id);
                }
                if !edited && lsn == t.lsn {
                    for (id, want) in &t.pages {
                        assert_eq!(&s.read_page(*id).unwrap(), want, "open_at: page {id} at the last LSN");
                    }
                }
            }
            Err(e) => assert!(
                edited || lsn != t.lsn,
                "open_at of an unedited directory at its last LSN (writer pid {pid}): {e}"
            ),
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
});
