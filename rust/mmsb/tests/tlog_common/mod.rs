//! Helpers shared by the tlog_* integration tests.
#![allow(dead_code)]

pub mod kill;

use std::path::Path;

use mmsb::{Config, Durability, MMSBState, PageId, PageInfo};

/// Everything observable about a state's pages, for equality checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub lsn: u64,
    pub pages: Vec<(PageInfo, Vec<u8>)>,
}

pub fn snapshot(s: &MMSBState) -> Snapshot {
    let pages = s
        .page_ids()
        .unwrap()
        .into_iter()
        .map(|id: PageId| (s.page_info(id).unwrap(), s.read_page(id).unwrap()))
        .collect();
    Snapshot { lsn: s.lsn(), pages }
}

/// A `Snapshot` plus each page's dependents in the graph: everything a reopen must reproduce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphSnapshot {
    pub base: Snapshot,
    pub deps: Vec<(PageId, Vec<PageId>)>,
}

pub fn graph_snapshot(s: &MMSBState) -> GraphSnapshot {
    let base = snapshot(s);
    let deps = base.pages.iter().map(|(i, _)| (i.id, s.dependents(i.id).unwrap())).collect();
    GraphSnapshot { base, deps }
}

pub fn disk_config(dir: &Path) -> Config {
    Config { dir: Some(dir.to_path_buf()), durability: Durability::None, ..Config::default() }
}

pub fn mem_config() -> Config {
    Config { logging: true, ..Config::default() }
}

/// Copies every file of `from` into a new directory `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// With `MMSB_KEEP_DIRS` set (scripts/test.sh sets it), copies the plain files of the state
/// directory `dir` to `$MMSB_KEEP_DIRS/name`, where `mmsb verify` then checks them: every test
/// directory left behind must verify (names ending in `-damaged` must fail it).
pub fn keep_dir(dir: &Path, name: &str) {
    let Some(keep) = std::env::var_os("MMSB_KEEP_DIRS") else { return };
    let to = Path::new(&keep).join(name);
    let _ = std::fs::remove_dir_all(&to);
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// The segment files of a state directory, sorted.
pub fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

/// A scratch directory on disk (not tmpfs) under /work/tmp when it exists.
pub fn scratch() -> tempfile::TempDir {
    let base = Path::new("/work/tmp");
    if base.is_dir() {
        tempfile::tempdir_in(base).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}
