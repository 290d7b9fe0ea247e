//! Untrusted bytes → `Delta::decode`: never panics; whatever decodes re-encodes to the same bytes
//! (the encoding is canonical up to unmasked payload bytes) and applies within its bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mmsb::Delta;

fuzz_target!(|data: &[u8]| {
    let Ok((d, used)) = Delta::decode(data) else { return };
    assert!(used <= data.len());
    let mut again = Vec::new();
    d.encode(&mut again);
    let (d2, used2) = Delta::decode(&again).expect("re-encoding decodes");
    assert_eq!(used2, again.len());
    assert_eq!(d, d2);
    let extent = d.extent();
    if extent <= 1 << 16 {
        let mut page = vec![0u8; extent as usize];
        d.apply(&mut page).expect("a delta fits its own extent");
        assert!(d.compose(&d) == d, "⊕ is idempotent on the same delta");
    }
});
