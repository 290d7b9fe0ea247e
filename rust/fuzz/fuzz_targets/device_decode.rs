//! Untrusted bytes → `decode_sync_record` (device sync log records): never panics; whatever
//! decodes re-encodes to a body that decodes to the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mmsb::device::{decode_sync_record, encode_sync_record};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = decode_sync_record(data) {
        assert_eq!(decode_sync_record(&encode_sync_record(&r)).unwrap(), r);
    }
});
