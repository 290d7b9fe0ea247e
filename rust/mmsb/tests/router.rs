//! The state and router: errors change nothing, batches are atomic, compare-and-set works, and
//! concurrent routing equals serial application in LSN order.
#![allow(clippy::cast_possible_truncation)] // test data and sizes: truncation is intended or impossible here

use std::sync::Arc;

use mmsb::{Config, Delta, ErrorCode, Location, MMSBState, PageId, PageMeta, RouteOp};

fn state_with_page(size: u64) -> (MMSBState, PageId) {
    let s = MMSBState::in_memory();
    let p = s.create_page(size, Location::Cpu, PageMeta::default()).unwrap();
    (s, p)
}

#[test]
fn invalid_inputs_are_errors_and_change_nothing() {
    let (s, p) = state_with_page(64);
    s.update_page(p, b"hello").unwrap();
    let before = (s.read_page(p).unwrap(), s.page_info(p).unwrap().epoch, s.lsn());

    let cases: Vec<(mmsb::Error, ErrorCode)> = vec![
        (s.route_delta(PageId(999), &Delta::write(0, b"x").unwrap(), None).unwrap_err(), ErrorCode::UnknownPage),
        (s.route_delta(p, &Delta::write(60, b"too long").unwrap(), None).unwrap_err(), ErrorCode::OutOfBounds),
        (s.update_page_at(p, u64::MAX, b"x", None).unwrap_err(), ErrorCode::OutOfBounds),
        (s.route_delta(p, &Delta::write(0, b"x").unwrap(), Some(0)).unwrap_err(), ErrorCode::EpochConflict),
        (s.create_page(0, Location::Cpu, PageMeta::default()).unwrap_err(), ErrorCode::InvalidArgument),
        (s.create_page(u64::MAX, Location::Cpu, PageMeta::default()).unwrap_err(), ErrorCode::InvalidArgument),
    ];
    for (err, code) in cases {
        assert_eq!(err.code(), code, "{err}");
        assert!(!err.to_string().is_empty());
    }
    assert_eq!((s.read_page(p).unwrap(), s.page_info(p).unwrap().epoch, s.lsn()), before);
}

#[test]
fn batches_are_all_or_nothing() {
    let (s, p) = state_with_page(16);
    let q = s.create_page(16, Location::Cpu, PageMeta::default()).unwrap();
    let a = Delta::write(0, b"aaaa").unwrap();
    let bad = Delta::write(15, b"bb").unwrap();
    let ops =
        [RouteOp { page: p, delta: &a, expected_epoch: None }, RouteOp { page: q, delta: &bad, expected_epoch: None }];
    let lsn_before = s.lsn();
    assert!(s.route_batch(&ops).is_err());
    assert_eq!(s.read_page(p).unwrap(), vec![0; 16]);
    assert_eq!(s.lsn(), lsn_before);

    // Epoch expectations count earlier ops of the same batch.
    let b = Delta::write(4, b"bbbb").unwrap();
    let ops = [
        RouteOp { page: p, delta: &a, expected_epoch: Some(0) },
        RouteOp { page: p, delta: &b, expected_epoch: Some(1) },
    ];
    let r = s.route_batch(&ops).unwrap();
    assert_eq!(r, lsn_before + 1..lsn_before + 3);
    assert_eq!(&s.read_page(p).unwrap()[..8], b"aaaabbbb");
    assert_eq!(s.page_info(p).unwrap().epoch, 2);
}

#[test]
fn closed_state_rejects_everything_but_views_survive() {
    let (s, p) = state_with_page(8);
    s.update_page(p, b"abc").unwrap();
    let v = s.view(p).unwrap();
    s.close();
    s.close();
    assert_eq!(s.read_page(p).unwrap_err().code(), ErrorCode::Closed);
    assert_eq!(s.update_page(p, b"x").unwrap_err().code(), ErrorCode::Closed);
    assert_eq!(s.create_page(8, Location::Cpu, PageMeta::default()).unwrap_err().code(), ErrorCode::Closed);
    // SAFETY: the view keeps the mapping alive; nothing writes to it after close.
    let bytes = unsafe { std::slice::from_raw_parts(v.as_ptr(), v.len()) };
    assert_eq!(&bytes[..3], b"abc");
}

#[test]
fn free_page_then_unknown() {
    let (s, p) = state_with_page(8);
    s.free_page(p).unwrap();
    assert_eq!(s.free_page(p).unwrap_err().code(), ErrorCode::UnknownPage);
    assert_eq!(s.read_page(p).unwrap_err().code(), ErrorCode::UnknownPage);
}

#[test]
fn page_sizes_round_to_os_pages() {
    let (s, p) = state_with_page(10);
    let info = s.page_info(p).unwrap();
    assert_eq!(info.size, 10);
    assert_eq!(info.capacity % 4096, 0);
    let v = s.view(p).unwrap();
    assert_eq!(v.as_ptr() as usize % 4096, 0);
    let cfg = Config { max_page_size: 100, ..Config::default() };
    let small = MMSBState::open(cfg).unwrap();
    assert!(small.create_page(101, Location::Cpu, PageMeta::default()).is_err());
}

/// Many threads routing at once give the same final state as applying the deltas serially in
/// LSN order.
#[test]
fn concurrent_routing_equals_serial_lsn_order() {
    let s = Arc::new(MMSBState::in_memory());
    let pages: Vec<PageId> = (0..4).map(|_| s.create_page(256, Location::Cpu, PageMeta::default()).unwrap()).collect();
    // Page creation takes LSNs too; deltas follow.
    let base = s.lsn();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let s = Arc::clone(&s);
            let pages = pages.clone();
            std::thread::spawn(move || {
                let mut log = Vec::new();
                let mut x = t.wrapping_mul(0x9E37_79B9) + 1;
                for i in 0..2000u64 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let page = pages[(x % 4) as usize];
                    let off = (x >> 8) % 240;
                    let bytes = [(t as u8) << 4 | (i % 16) as u8; 16];
                    let d = if i % 3 == 0 {
                        let mask = [(x >> 20) as u8, (x >> 28) as u8];
                        Delta::dense(off, &mask, &bytes).unwrap()
                    } else {
                        Delta::write(off, &bytes[..(1 + (x >> 40) % 16) as usize]).unwrap()
                    };
                    let lsn = s.route_delta(page, &d, None).unwrap();
                    log.push((lsn, page, d));
                }
                log
            })
        })
        .collect();
    let mut all: Vec<_> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    all.sort_by_key(|(lsn, _, _)| *lsn);
    let lsns: Vec<u64> = all.iter().map(|e| e.0).collect();
    assert_eq!(lsns, (base + 1..=base + all.len() as u64).collect::<Vec<_>>(), "LSNs are dense and unique");

    let serial = MMSBState::in_memory();
    for _ in 0..4 {
        serial.create_page(256, Location::Cpu, PageMeta::default()).unwrap();
    }
    for (_, page, d) in &all {
        serial.route_delta(*page, d, None).unwrap();
    }
    for p in &pages {
        assert_eq!(s.read_page(*p).unwrap(), serial.read_page(*p).unwrap());
        assert_eq!(s.page_info(*p).unwrap().epoch, serial.page_info(*p).unwrap().epoch);
    }
}
