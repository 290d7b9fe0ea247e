//! redb-style fault fuzzing of the log: a random operation sequence (create/free pages, sparse
//! and dense writes, batches, checkpoints, compactions, dependency edges and propagation) runs
//! against a reference model of the pages' bytes; after a random number of operations the
//! storage starts failing (EIO or ENOSPC, every operation from then on, or a single short
//! write); then the machine loses power, the state is reopened and compared with the model.
//!
//! Promises checked: a failed call leaves the state as it was (except a failed group-commit
//! fsync, which applied the record before waiting); after power loss, Always and GroupCommit
//! recover exactly the last acknowledged state, None recovers one of the acknowledged states.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{snapshot, Input};
use libfuzzer_sys::fuzz_target;
use mmsb::graph::{Command, CommandList, EdgeId, EdgeKind};
use mmsb::runtime::tlog::fault::{Fault, FaultStorage, Op};
use mmsb::runtime::tlog::storage::Storage;
use mmsb::types::error::LogError;
use mmsb::{Config, Delta, Durability, Error, Location, MMSBState, PageId, PageMeta, RouteOp};

/// The reference model: page bytes and the dependency edges (`to` has at most one source).
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    pages: BTreeMap<PageId, Vec<u8>>,
    /// edge id → (from, to, copy length)
    edges: BTreeMap<EdgeId, (PageId, PageId, usize)>,
}

impl Model {
    fn write(&mut self, p: PageId, off: usize, bytes: &[u8]) {
        let page = self.pages.get_mut(&p).expect("model page");
        page[off..off + bytes.len()].copy_from_slice(bytes);
    }
    /// One propagation round from `changed`: dependents in topological order, each recomputed
    /// once from its (single) source by a copy of the first `len` bytes.
    fn propagate(&mut self, changed: PageId) {
        let mut affected = vec![changed];
        let mut i = 0;
        while i < affected.len() {
            let from = affected[i];
            for (_, &(f, t, _)) in self.edges.iter() {
                if f == from && !affected.contains(&t) {
                    affected.push(t);
                }
            }
            i += 1;
        }
        // With one source per page the reachable set is a tree: BFS order is topological.
        for &p in &affected[1..] {
            let (_, &(f, _, len)) = self.edges.iter().find(|(_, e)| e.1 == p).expect("edge into dependent");
            let src = self.pages[&f][..len].to_vec();
            self.write(p, 0, &src);
        }
    }
}

fn live(s: &MMSBState) -> BTreeMap<PageId, Vec<u8>> {
    s.page_ids().unwrap().into_iter().map(|p| (p, s.read_page(p).unwrap())).collect()
}

fn pick(m: &Model, n: u8) -> Option<PageId> {
    let ids: Vec<PageId> = m.pages.keys().copied().collect();
    (!ids.is_empty()).then(|| ids[usize::from(n) % ids.len()])
}

/// Runs one operation on the state and, if it succeeds, on the model.
fn op(s: &MMSBState, m: &mut Model, inp: &mut Input<'_>) -> mmsb::Result<()> {
    let code = inp.u8() % 10;
    let sel = inp.u8();
    let Some(p) = pick(m, sel).or(if code == 0 { Some(PageId(0)) } else { None }) else {
        return Ok(());
    };
    let size = m.pages.get(&p).map_or(0, Vec::len);
    match code {
        0 => {
            let size = 1 + u64::from(inp.u16() % 512);
            let id = s.create_page(size, Location::Cpu, PageMeta::default())?;
            m.pages.insert(id, vec![0; size as usize]);
        }
        1 => {
            s.free_page(p)?;
            m.pages.remove(&p);
        }
        2 => {
            let off = usize::from(inp.u16()) % size;
            let len = usize::from(inp.u8()).min(size - off);
            let bytes = inp.bytes(len);
            s.update_page_at(p, off as u64, &bytes, None)?;
            m.write(p, off, &bytes);
        }
        3 => {
            let off = usize::from(inp.u16()) % size;
            let len = usize::from(inp.u8() % 96).min(size - off);
            let mask: Vec<u8> = (0..len).map(|_| inp.u8() & 1).collect();
            let data: Vec<u8> = inp.bytes(len);
            let data = [data.clone(), vec![0; len - data.len()]].concat();
            let d = Delta::dense_bytemask(off as u64, &mask, &data).expect("valid dense delta");
            s.route_delta(p, &d, None)?;
            for (k, &b) in mask.iter().enumerate() {
                if b != 0 {
                    m.pages.get_mut(&p).unwrap()[off + k] = data[k];
                }
            }
        }
        4 => {
            let q = pick(m, inp.u8()).unwrap();
            let (o1, o2) = (usize::from(inp.u8()) % size, 0usize);
            let b1 = inp.bytes(8.min(size - o1));
            let b2 = inp.bytes(4.min(m.pages[&q].len()));
            let (d1, d2) = (Delta::write(o1 as u64, &b1).unwrap(), Delta::write(o2 as u64, &b2).unwrap());
            let ops = [
                RouteOp { page: p, delta: &d1, expected_epoch: None },
                RouteOp { page: q, delta: &d2, expected_epoch: None },
            ];
            s.route_batch(&ops)?;
            m.write(p, o1, &b1);
            m.write(q, o2, &b2);
        }
        5 => {
            s.checkpoint()?;
        }
        6 => {
            s.compact_log()?;
        }
        7 => {
            let q = pick(m, inp.u8()).unwrap();
            if q == p || m.edges.values().any(|e| e.1 == q) {
                return Ok(());
            }
            let len = size.min(m.pages[&q].len()).min(16);
            let cmds = CommandList::new().with(Command::Copy { src_off: 0, dst_off: 0, len: len as u64 });
            match s.add_dependency(p, q, EdgeKind::Data, cmds) {
                Ok(id) => {
                    m.edges.insert(id, (p, q, len));
                }
                // A cycle is refused; the model has nothing to do.
                Err(Error::Graph(_)) => {}
                Err(e) => return Err(e),
            }
        }
        8 => {
            let Some((&id, _)) = m.edges.iter().nth(usize::from(sel) % m.edges.len().max(1)) else { return Ok(()) };
            s.remove_dependency(id)?;
            m.edges.remove(&id);
        }
        _ => {
            s.propagate(&[p])?;
            m.propagate(p);
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let mode = match inp.u8() % 3 {
        0 => Durability::None,
        1 => Durability::GroupCommit,
        _ => Durability::Always,
    };
    let config = Config {
        logging: true,
        durability: mode,
        segment_size: 256 + u64::from(inp.u16() % 2048),
        // 0 (off) or within `LOG_SIZE_CAP_RANGE` (256 or more).
        log_size_cap: match u64::from(inp.u16() % 8192) {
            0 => 0,
            c => c.max(256),
        },
        // Small thresholds put many records' payloads in blob files.
        blob_min: [8, 64, 1024, u64::MAX][usize::from(inp.u8() % 4)],
        ..Config::default()
    };
    let fault_at = inp.u8() % 64;
    let (fault, fault_op, one_shot) = {
        let f = Fault::ALL[usize::from(inp.u8()) % 3];
        let o = Op::ALL[usize::from(inp.u8()) % Op::ALL.len()];
        (f, o, inp.u8() & 1 == 0)
    };
    let fs = Arc::new(FaultStorage::in_memory());
    let storage: Arc<dyn Storage> = fs.clone();
    let s = MMSBState::open_with_storage(config.clone(), storage.clone()).unwrap();
    let mut m = Model::default();
    let mut acked = vec![(m.clone(), snapshot(&s))];
    let mut diverged = false;
    for i in 0..64u8 {
        if inp.is_empty() {
            break;
        }
        if i == fault_at {
            if one_shot {
                fs.fail_nth(fault_op, 1 + u64::from(inp.u8() % 4), fault);
            } else {
                fs.fail_after(u64::from(inp.u8()), fault);
            }
        }
        let before = m.clone();
        let before_live = snapshot(&s);
        match op(&s, &mut m, &mut inp) {
            Ok(()) => {
                let now = snapshot(&s);
                if now != before_live {
                    assert!(!diverged, "a write succeeded after the log was poisoned");
                    acked.push((m.clone(), now));
                }
                if !diverged {
                    assert_eq!(live(&s), m.pages, "state and model differ after op {i}");
                }
            }
            Err(e) => {
                m = before;
                match &e {
                    Error::Log(LogError::Io { .. } | LogError::Poisoned(_)) => {}
                    Error::Page(_) | Error::Delta(_) | Error::Graph(_) => {}
                    other => panic!("unexpected error {other:?}"),
                }
                if !diverged && snapshot(&s) != before_live {
                    assert_eq!(mode, Durability::GroupCommit, "a failed call changed the state: {e}");
                    diverged = true;
                }
            }
        }
    }
    fs.power_loss().unwrap();
    drop(s);
    let r = MMSBState::open_with_storage(config, storage).expect("reopen after power loss");
    let got = (live(&r), snapshot(&r));
    match mode {
        Durability::None => assert!(
            acked.iter().any(|(m, snap)| m.pages == got.0 && *snap == got.1),
            "None: the recovered state is not an acknowledged prefix"
        ),
        _ => {
            let (m, snap) = acked.last().unwrap();
            assert_eq!(got.0, m.pages, "recovered bytes differ from the model");
            assert_eq!(got.1, *snap, "recovered state differs from the last acknowledged state");
        }
    }
});
