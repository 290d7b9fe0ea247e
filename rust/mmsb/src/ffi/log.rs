//! C ABI: the transaction log (logging switch, checkpoints, replay, compaction, statistics).
//! Numeric log options (`log_size_cap`, `segment_size`, `tolerant_recovery`, `logging`) also go
//! through `mmsb_config_set_u64`.

use std::sync::Arc;

use crate::ffi::state::{state_ref, MmsbConfig, MmsbState};
use crate::ffi::{boundary, check_out, write_out, FfiError, MmsbStatus};

/// Statistics of a state's log, filled by `mmsb_log_info`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct MmsbLogInfo {
    /// The last LSN assigned.
    pub lsn: u64,
    /// Bytes in the retained log segments.
    pub log_bytes: u64,
    /// Retained log segments.
    pub segments: u64,
    /// Retained checkpoints.
    pub checkpoints: u64,
    /// LSN of the newest checkpoint (0 if none).
    pub last_checkpoint_lsn: u64,
    /// Oldest LSN `mmsb_state_replay` can reach.
    pub oldest_lsn: u64,
}

/// Turns the transaction log on (1) or off (0) for an in-memory state. A state with a
/// directory always logs: opening one with logging set to 0 fails with
/// `MMSB_STATUS_INVALID_ARGUMENT` (use an in-memory state to run without a log).
///
/// # Safety
/// `cfg` a live config not used concurrently.
#[no_mangle]
pub unsafe extern "C" fn mmsb_config_set_logging(cfg: *mut MmsbConfig, on: u8) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let cfg = unsafe { cfg.as_mut() }.ok_or_else(|| FfiError::null("config"))?;
        cfg.set_logging(match on {
            0 => false,
            1 => true,
            _ => return Err(FfiError::invalid(format!("logging takes 0 or 1, not {on}"))),
        });
        Ok(())
    })
}

/// Writes a checkpoint of every page; its LSN goes to `*out_lsn` (NULL allowed).
///
/// # Safety
/// `state` a live handle; `out_lsn` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_state_checkpoint(state: *const MmsbState, out_lsn: *mut u64) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { state_ref(state) }?;
        let lsn = s.checkpoint()?;
        if !out_lsn.is_null() {
            // SAFETY: non-NULL and writable per contract.
            unsafe { write_out(out_lsn, lsn, "out_lsn") }?;
        }
        Ok(())
    })
}

/// Rebuilds the state as of `lsn` into a new, read-only state handle (`*out_state`, free it
/// with `mmsb_state_free`). The live state is not disturbed. Fails with
/// `MMSB_STATUS_INVALID_ARGUMENT` when `lsn` is outside the retained log.
///
/// # Safety
/// `state` a live handle; `out_state` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_state_replay(
    state: *const MmsbState,
    lsn: u64,
    out_state: *mut *mut MmsbState,
) -> MmsbStatus {
    boundary(|| {
        check_out(out_state, "out_state")?;
        // SAFETY: forwarded contract.
        let s = unsafe { state_ref(state) }?;
        let replayed = s.replay_to(lsn)?;
        let h = crate::ffi::new_handle(MmsbState { state: Arc::new(replayed) });
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_state, h, "out_state") }
    })
}

/// Compacts the log up to the current LSN (see docs/log-format.md for the rule).
///
/// # Safety
/// `state` a live handle.
#[no_mangle]
pub unsafe extern "C" fn mmsb_state_compact(state: *const MmsbState) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { state_ref(state) }?;
        s.compact_log()?;
        Ok(())
    })
}

/// Fills `*out` with the log's statistics. Fails with `MMSB_STATUS_UNSUPPORTED` when the state
/// has no log.
///
/// # Safety
/// `state` a live handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_log_info(state: *const MmsbState, out: *mut MmsbLogInfo) -> MmsbStatus {
    boundary(|| {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let s = unsafe { state_ref(state) }?;
        let i = s.log_info()?;
        let info = MmsbLogInfo {
            lsn: i.lsn,
            log_bytes: i.log_bytes,
            segments: i.segments,
            checkpoints: i.checkpoints,
            last_checkpoint_lsn: i.last_checkpoint_lsn,
            oldest_lsn: i.oldest_lsn,
        };
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, info, "out") }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::state::{mmsb_config_free, mmsb_config_new, mmsb_config_set_u64, mmsb_state_free, mmsb_state_open};
    use crate::ffi::MMSB_OK;
    use crate::types::error::ErrorCode;
    use crate::types::page::{Location, PageMeta};

    #[test]
    fn checkpoint_replay_compact_info_through_the_c_abi() {
        let mut cfg = std::ptr::null_mut();
        // SAFETY: valid out-pointers and handles throughout; each handle is freed once.
        unsafe {
            assert_eq!(mmsb_config_new(&mut cfg), MMSB_OK);
            assert_eq!(mmsb_config_set_logging(cfg, 1), MMSB_OK);
            assert_eq!(mmsb_config_set_logging(cfg, 7), ErrorCode::InvalidArgument as u32);
            let key = "log_size_cap";
            assert_eq!(mmsb_config_set_u64(cfg, key.as_ptr().cast(), key.len(), 0), MMSB_OK);
            let mut st = std::ptr::null_mut();
            assert_eq!(mmsb_state_open(cfg, &mut st), MMSB_OK);
            mmsb_config_free(cfg);
            let s = state_ref(st).ok().unwrap();
            let p = s.create_page(16, Location::Cpu, PageMeta::default()).unwrap();
            s.update_page(p, b"abc").unwrap();
            let mut lsn = 0;
            assert_eq!(mmsb_state_checkpoint(st, &mut lsn), MMSB_OK);
            assert_eq!(lsn, 2);
            s.update_page(p, b"xyz").unwrap();
            let mut info = MmsbLogInfo::default();
            assert_eq!(mmsb_log_info(st, &mut info), MMSB_OK);
            assert_eq!((info.lsn, info.checkpoints, info.last_checkpoint_lsn), (3, 1, 2));
            let mut old = std::ptr::null_mut();
            assert_eq!(mmsb_state_replay(st, 2, &mut old), MMSB_OK);
            assert_eq!(&state_ref(old).ok().unwrap().read_page(p).unwrap()[..3], b"abc");
            assert_eq!(mmsb_state_replay(st, 99, &mut old), ErrorCode::InvalidArgument as u32);
            assert_eq!(mmsb_state_compact(st), MMSB_OK);
            assert_eq!(mmsb_state_replay(st, 1, std::ptr::null_mut()), ErrorCode::NullPointer as u32);
            mmsb_state_free(old);
            mmsb_state_free(st);
            assert_eq!(mmsb_log_info(std::ptr::null(), &mut info), ErrorCode::NullPointer as u32);
        }
    }
}
