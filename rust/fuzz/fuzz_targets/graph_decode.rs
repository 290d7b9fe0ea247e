//! Untrusted bytes → graph persistence: `decode_record`, `decode_snapshot`, `restore` and
//! `replay_record` never panic, and whatever decodes re-encodes and decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mmsb::graph::persist::{decode_record, decode_snapshot, encode_record, replay_record, restore};
use mmsb::graph::ShadowPageGraph;
use mmsb::PageId;

fn size(p: PageId) -> Option<u64> {
    (p.0 < 8).then(|| 64 * (p.0 + 1))
}

fuzz_target!(|data: &[u8]| {
    let (first, rest) = data.split_at(data.len().min(1));
    if first.first().is_some_and(|b| b & 1 == 0) {
        if let Ok(s) = decode_snapshot(rest) {
            let bytes = postcard::to_allocvec(&s).unwrap();
            assert_eq!(decode_snapshot(&bytes).unwrap(), s);
            let _ = restore(&s, size);
        }
    } else {
        let mut g = ShadowPageGraph::new();
        let mut at = rest;
        // A sequence of length-prefixed records replayed onto one graph.
        while let Some((&n, tail)) = at.split_first() {
            let (rec, tail) = tail.split_at(tail.len().min(usize::from(n)));
            at = tail;
            if let Ok(r) = decode_record(rec) {
                assert_eq!(decode_record(&encode_record(&r)).unwrap(), r);
                let _ = replay_record(&mut g, &r, size);
            }
        }
    }
});
