//! C ABI: a state directory read without its writer (`runtime::tlog::inspect`): the state right
//! after any replayable LSN, with no lock taken and no file created or changed.

use std::os::raw::c_char;

use crate::state::MmsbState;
use crate::{arg_str, boundary, check_out, write_out, FfiError, MmsbStatus};
use mmsb::runtime::tlog::inspect::read_dir;

/// The `lsn` of `mmsb_replay_dir` that asks for the newest LSN the directory holds.
pub const MMSB_LSN_NEWEST: u64 = u64::MAX;

/// Rebuilds the state of the state directory `dir` (UTF-8, `len` bytes, not NUL-terminated)
/// right after `lsn` (or its newest LSN, for `MMSB_LSN_NEWEST`) into a new, read-only, in-memory
/// state handle (`*out_state`; free it with `mmsb_state_free`). Works without the directory's
/// writer and beside it: takes no lock, opens files read-only, creates and changes nothing; a
/// record the writer is appending meanwhile ends what is read. Fails with
/// `MMSB_STATUS_CODE_LSN_OUT_OF_RANGE` (the replayable range in the message) when `lsn` is
/// outside what the directory can replay, `MMSB_STATUS_CODE_LSN_COMPACTED` when it is strictly
/// inside a compacted run, `MMSB_STATUS_CODE_IO` when `dir` is not a readable directory and
/// `MMSB_STATUS_CODE_CORRUPT` when the log up to `lsn` is damaged.
///
/// # Safety
/// `dir` valid for `len` bytes; `out_state` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_replay_dir(
    dir: *const c_char,
    len: usize,
    lsn: u64,
    out_state: *mut *mut MmsbState,
) -> MmsbStatus {
    boundary(|| {
        check_out(out_state, "out_state")?;
        // SAFETY: forwarded contract.
        let dir = unsafe { arg_str(dir, len, "dir") }?;
        if dir.is_empty() {
            return Err(FfiError::invalid("dir is empty: give a state directory"));
        }
        let replayed = read_dir(std::path::Path::new(dir), |d| {
            d.replay_to(if lsn == MMSB_LSN_NEWEST { d.last_lsn() } else { lsn })
        })?;
        let h = crate::new_handle(MmsbState::plain(replayed));
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_state, h, "out_state") }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{mmsb_state_free, mmsb_state_lsn};
    use mmsb::types::error::ErrorCode;
    use mmsb::{Config, Location, MMSBState, PageMeta};

    fn replay(dir: &str, lsn: u64) -> (u32, *mut MmsbState) {
        let mut out = std::ptr::null_mut();
        // SAFETY: `dir` is valid for its length; `out` is writable.
        let st = unsafe { mmsb_replay_dir(dir.as_ptr().cast(), dir.len(), lsn, &mut out) };
        (st, out)
    }

    #[test]
    fn replays_a_directory_its_writer_holds_open() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("state");
        let s = MMSBState::open(Config { dir: Some(path.clone()), ..Config::default() }).unwrap();
        let p = s.create_page(8, Location::Cpu, PageMeta::default()).unwrap();
        s.update_page(p, b"one").unwrap();
        s.update_page(p, b"two").unwrap();
        let dir = path.to_str().unwrap();
        for (lsn, want) in [(2, 2), (3, 3), (MMSB_LSN_NEWEST, 3)] {
            let (st, h) = replay(dir, lsn);
            assert_eq!(st, 0, "lsn {lsn}");
            let mut got = 0u64;
            // SAFETY: a live handle from mmsb_replay_dir, freed once.
            unsafe {
                assert_eq!(mmsb_state_lsn(h, &mut got), 0);
                mmsb_state_free(h);
            }
            assert_eq!(got, want);
        }
        assert_eq!(replay(dir, 4).0, ErrorCode::LsnOutOfRange as u32);
        assert_eq!(replay(d.path().join("none").to_str().unwrap(), 0).0, ErrorCode::Io as u32);
        assert_eq!(replay("", 0).0, ErrorCode::InvalidArgument as u32);
        // SAFETY: a NULL out-pointer is refused before use.
        let st = unsafe { mmsb_replay_dir(dir.as_ptr().cast(), dir.len(), 1, std::ptr::null_mut()) };
        assert_eq!(st, ErrorCode::NullPointer as u32);
    }
}
