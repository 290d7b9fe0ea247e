//! C ABI: the transaction log (logging switch, checkpoints, replay, compaction, statistics).
//! Numeric log options (`log_size_cap`, `segment_size`, `tolerant_recovery`, `logging`) also go
//! through `mmsb_config_set_u64`.

use crate::state::{state_ref, MmsbConfig, MmsbState};
use crate::{boundary, check_out, copy_c_string, copy_u64s, write_out, FfiError, MmsbStatus};
use mmsb::LogInfo;

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
    /// Oldest LSN `mmsb_state_replay` can reach: the replayable range is `oldest_lsn ..= lsn`,
    /// less the inside of each compacted run (`mmsb_log_compacted_runs`).
    pub oldest_lsn: u64,
    /// Damaged regions tolerant recovery skipped at open.
    pub skipped_regions: u64,
    /// Bytes of torn tail cut off the newest segment at open.
    pub truncated_bytes: u64,
    /// Files the last open moved into `quarantine/` in the state directory instead of
    /// replaying them (see docs/log-format.md); 0 after a clean open.
    pub quarantined_files: u64,
    /// Automatic checkpoints/compactions (`log_size_cap`) that failed since open; the writes
    /// that triggered them succeeded. The message of the last one: `mmsb_log_maintenance_error`.
    pub maintenance_failures: u64,
    /// The LSN the log was at when the last automatic maintenance pass failed (0 if none did).
    pub last_maintenance_lsn: u64,
    /// The status code of that failure (`MMSB_OK` if none).
    pub last_maintenance_status: u32,
}

impl From<&LogInfo> for MmsbLogInfo {
    fn from(i: &LogInfo) -> MmsbLogInfo {
        // Every field named (no `..`): a field added to the original does not compile until it is
        // mirrored here or left out on purpose.
        let LogInfo {
            lsn,
            log_bytes,
            segments,
            checkpoints,
            last_checkpoint_lsn,
            oldest_lsn,
            bytes_since_checkpoint: _, // internal to the `log_size_cap` trigger
            skipped_regions,
            truncated_bytes,
            quarantined,
            maintenance_failures,
            last_maintenance_error: _, // variable length: `mmsb_log_maintenance_error`
            last_maintenance_code,
            last_maintenance_lsn,
            group_syncs: _,           // not in the C struct (its layout is ABI): `mmsb_log_group_syncs`
            recovery_micros: _,       // likewise: `mmsb_log_recovery_micros`
            maintenance_passes: _,    // likewise: `mmsb_log_maintenance_passes`
            maintenance_waits: _,     // likewise: `mmsb_log_maintenance_waits`
            maintenance_slowdowns: _, // likewise: `mmsb_log_maintenance_slowdowns`
        } = i;
        MmsbLogInfo {
            lsn: *lsn,
            log_bytes: *log_bytes,
            segments: *segments,
            checkpoints: *checkpoints,
            last_checkpoint_lsn: *last_checkpoint_lsn,
            oldest_lsn: *oldest_lsn,
            skipped_regions: *skipped_regions,
            truncated_bytes: *truncated_bytes,
            quarantined_files: quarantined.len() as u64,
            maintenance_failures: *maintenance_failures,
            last_maintenance_lsn: *last_maintenance_lsn,
            last_maintenance_status: crate::status_code(*last_maintenance_code) as MmsbStatus,
        }
    }
}

/// Turns the transaction log on (1) or off (0) for an in-memory state. A state with a
/// directory always logs: opening one with logging set to 0 fails with
/// `MMSB_STATUS_CODE_INVALID_ARGUMENT` (use an in-memory state to run without a log).
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
/// `MMSB_STATUS_CODE_LSN_OUT_OF_RANGE` when `lsn` is outside the retained log
/// (`MmsbLogInfo::oldest_lsn ..= lsn`) and with `MMSB_STATUS_CODE_LSN_COMPACTED` when it is
/// strictly inside a compacted run (`mmsb_log_compacted_runs`).
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
        let h = crate::new_handle(MmsbState::plain(replayed));
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
        let info = MmsbLogInfo::from(&i);
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, info, "out") }
    })
}

/// Copies the message of the last failed automatic maintenance pass (empty if none failed)
/// into `buf` of `cap` bytes (NUL-terminated, truncated to fit), its full length (without NUL)
/// to `*out_len` when non-NULL; `buf == NULL` or `cap == 0` reports the length only.
///
/// # Safety
/// `state` a live handle; `buf` NULL or valid for `cap` bytes; `out_len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_log_maintenance_error(
    state: *const MmsbState,
    buf: *mut std::ffi::c_char,
    cap: usize,
    out_len: *mut usize,
) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let i = unsafe { state_ref(state) }?.log_info()?;
        let msg = i.last_maintenance_error.unwrap_or_default();
        // SAFETY: forwarded contract.
        unsafe { copy_c_string(msg.as_bytes(), buf, cap, out_len) };
        Ok(())
    })
}

/// Writes one `LogInfo` counter to `*out`: the getters below, kept out of `MmsbLogInfo`, whose
/// layout is ABI. Fails with `MMSB_STATUS_UNSUPPORTED` when the state has no log.
///
/// # Safety
/// `state` a live handle; `out` writable.
unsafe fn log_counter(state: *const MmsbState, out: *mut u64, field: fn(&LogInfo) -> u64) -> MmsbStatus {
    boundary(|| {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let n = field(&unsafe { state_ref(state) }?.log_info()?);
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, n, "out") }
    })
}

/// Writes to `*out` the fsyncs group commit has done since open (`GroupCommit` durability;
/// records per fsync tell how well concurrent writers share them). Kept out of `MmsbLogInfo`,
/// whose layout is ABI. Fails with `MMSB_STATUS_UNSUPPORTED` when the state has no log.
///
/// # Safety
/// `state` a live handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_log_group_syncs(state: *const MmsbState, out: *mut u64) -> MmsbStatus {
    // SAFETY: forwarded contract.
    unsafe { log_counter(state, out, |i| i.group_syncs) }
}

/// Writes to `*out` how long this state's open took to recover, in microseconds: load the
/// newest checkpoint and replay the log after it (a clean close leaves nothing to replay; after
/// a crash it is bounded by `log_size_cap`). Fails with `MMSB_STATUS_UNSUPPORTED` when the
/// state has no log.
///
/// # Safety
/// `state` a live handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_log_recovery_micros(state: *const MmsbState, out: *mut u64) -> MmsbStatus {
    // SAFETY: forwarded contract.
    unsafe { log_counter(state, out, |i| i.recovery_micros) }
}

/// Writes to `*out` the maintenance passes (checkpoint + compaction) the maintenance thread
/// ran since open. Fails with `MMSB_STATUS_UNSUPPORTED` when the state has no log.
///
/// # Safety
/// `state` a live handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_log_maintenance_passes(state: *const MmsbState, out: *mut u64) -> MmsbStatus {
    // SAFETY: forwarded contract.
    unsafe { log_counter(state, out, |i| i.maintenance_passes) }
}

/// Writes to `*out` the writes that waited for a maintenance pass because the log reached four
/// times `log_size_cap`. Fails with `MMSB_STATUS_UNSUPPORTED` when the state has no log.
///
/// # Safety
/// `state` a live handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_log_maintenance_waits(state: *const MmsbState, out: *mut u64) -> MmsbStatus {
    // SAFETY: forwarded contract.
    unsafe { log_counter(state, out, |i| i.maintenance_waits) }
}

/// Writes to `*out` the writes delayed by 1 ms because the log reached twice `log_size_cap`.
/// Fails with `MMSB_STATUS_UNSUPPORTED` when the state has no log.
///
/// # Safety
/// `state` a live handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_log_maintenance_slowdowns(state: *const MmsbState, out: *mut u64) -> MmsbStatus {
    // SAFETY: forwarded contract.
    unsafe { log_counter(state, out, |i| i.maintenance_slowdowns) }
}

/// Writes the compacted runs of the retained log as pairs `first, last` (ascending, 2 u64 per
/// run) to `out` (room for `cap` u64) and the number of u64 written (twice the runs) to
/// `*out_count`. `mmsb_state_replay` to an LSN in `first ..= last - 1` fails with
/// `MMSB_STATUS_CODE_LSN_COMPACTED`; `last` and `first - 1` can be replayed to. If `cap` is too
/// small, only the count is written and the call fails with `MMSB_STATUS_CODE_BUFFER_TOO_SMALL`.
///
/// # Safety
/// `state` a live handle; `out` NULL or valid for `cap` u64; `out_count` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_log_compacted_runs(
    state: *const MmsbState,
    out: *mut u64,
    cap: usize,
    out_count: *mut usize,
) -> MmsbStatus {
    boundary(|| {
        check_out(out_count, "out_count")?;
        // SAFETY: forwarded contract.
        let runs = unsafe { state_ref(state) }?.compacted_runs()?;
        let flat = runs.iter().flat_map(|r| [*r.start(), *r.end()]);
        // SAFETY: forwarded contract; out_count checked.
        unsafe { copy_u64s(flat, 2 * runs.len(), out, cap, out_count) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{mmsb_config_free, mmsb_config_new, mmsb_config_set_u64, mmsb_state_free, mmsb_state_open};
    use crate::MMSB_OK;
    use mmsb::types::error::ErrorCode;
    use mmsb::types::page::{Location, PageMeta};

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
            assert_eq!(mmsb_state_replay(st, 99, &mut old), ErrorCode::LsnOutOfRange as u32);
            assert_eq!(mmsb_state_compact(st), MMSB_OK);
            assert_eq!(mmsb_state_replay(st, 1, std::ptr::null_mut()), ErrorCode::NullPointer as u32);
            mmsb_state_free(old);
            // Compaction folds LSNs 3..=5 (after the checkpoint at 2) into one run: inside it
            // is its own refusal.
            s.update_page(p, b"4").unwrap();
            s.update_page(p, b"5").unwrap();
            assert_eq!(mmsb_state_compact(st), MMSB_OK);
            let (mut runs, mut n) = ([0u64; 2], 0usize);
            assert_eq!(mmsb_log_compacted_runs(st, runs.as_mut_ptr(), 0, &mut n), ErrorCode::BufferTooSmall as u32);
            assert_eq!(n, 2);
            assert_eq!(mmsb_log_compacted_runs(st, runs.as_mut_ptr(), 2, &mut n), MMSB_OK);
            assert_eq!(runs, [3, 5]);
            assert_eq!(mmsb_state_replay(st, 4, &mut old), ErrorCode::LsnCompacted as u32);
            assert_eq!(
                mmsb_log_compacted_runs(st, runs.as_mut_ptr(), 2, std::ptr::null_mut()),
                ErrorCode::NullPointer as u32
            );
            mmsb_state_free(st);
            assert_eq!(mmsb_log_info(std::ptr::null(), &mut info), ErrorCode::NullPointer as u32);
        }
    }

    #[test]
    fn group_syncs_through_the_c_abi() {
        let d = tempfile::tempdir().unwrap();
        let config = mmsb::Config {
            dir: Some(d.path().into()),
            durability: mmsb::Durability::GroupCommit,
            ..Default::default()
        };
        let s = std::sync::Arc::new(mmsb::MMSBState::open(config).unwrap());
        let p = s.create_page(64, Location::Cpu, PageMeta::default()).unwrap();
        std::thread::scope(|sc| {
            for t in 0..4u8 {
                let s = &s;
                sc.spawn(move || {
                    for _ in 0..20 {
                        s.update_page_at(p, u64::from(t), &[t], None).unwrap();
                    }
                });
            }
        });
        let want = s.log_info().unwrap().group_syncs;
        assert!(want > 0, "80 group-committed writes took no fsync");
        let st = crate::new_handle(MmsbState::plain(std::sync::Arc::into_inner(s).unwrap()));
        // SAFETY: a live handle, valid or NULL out-pointers as each case says; freed once.
        unsafe {
            let mut n = 0u64;
            assert_eq!(mmsb_log_group_syncs(st, &mut n), MMSB_OK);
            assert_eq!(n, want);
            assert_eq!(mmsb_log_group_syncs(st, std::ptr::null_mut()), ErrorCode::NullPointer as u32);
            assert_eq!(mmsb_log_group_syncs(std::ptr::null(), &mut n), ErrorCode::NullPointer as u32);
            assert_eq!(crate::state::mmsb_state_close(st), MMSB_OK);
            assert_eq!(mmsb_log_group_syncs(st, &mut n), ErrorCode::Closed as u32);
            mmsb_state_free(st);
        }
        // An in-memory state without a log: unsupported, as `mmsb_log_info`.
        let st = crate::new_handle(MmsbState::plain(mmsb::MMSBState::open(mmsb::Config::default()).unwrap()));
        // SAFETY: as above.
        unsafe {
            let mut n = 0u64;
            assert_eq!(mmsb_log_group_syncs(st, &mut n), ErrorCode::Unsupported as u32);
            mmsb_state_free(st);
        }
    }

    #[test]
    fn recovery_time_and_maintenance_counters_through_the_c_abi() {
        let d = tempfile::tempdir().unwrap();
        // A small cap, so the maintenance thread runs passes while the page is written.
        let config = mmsb::Config { dir: Some(d.path().into()), log_size_cap: 4096, ..Default::default() };
        let s = mmsb::MMSBState::open(config.clone()).unwrap();
        let p = s.create_page(1024, Location::Cpu, PageMeta::default()).unwrap();
        for i in 0..200u8 {
            s.update_page(p, &[i; 1024]).unwrap();
        }
        drop(s);
        let s = mmsb::MMSBState::open(config).unwrap();
        for i in 0..50u8 {
            s.update_page(p, &[i; 1024]).unwrap();
        }
        // The thread runs a pass once woken; wait for one (bounded).
        let t = std::time::Instant::now();
        while s.log_info().unwrap().maintenance_passes == 0 && t.elapsed() < std::time::Duration::from_secs(20) {
            s.update_page(p, &[9; 1024]).unwrap();
        }
        let want = s.log_info().unwrap();
        assert!(want.recovery_micros > 0 && want.maintenance_passes > 0, "{want:?}");
        let st = crate::new_handle(MmsbState::plain(s));
        type Getter = unsafe extern "C" fn(*const MmsbState, *mut u64) -> MmsbStatus;
        let getters: [(Getter, u64); 4] = [
            (mmsb_log_recovery_micros, want.recovery_micros),
            (mmsb_log_maintenance_passes, want.maintenance_passes),
            (mmsb_log_maintenance_waits, want.maintenance_waits),
            (mmsb_log_maintenance_slowdowns, want.maintenance_slowdowns),
        ];
        // SAFETY: a live handle, valid or NULL out-pointers as each case says; freed once.
        unsafe {
            for (get, want) in getters {
                let mut n = u64::MAX;
                assert_eq!(get(st, &mut n), MMSB_OK);
                // The counters only grow; the recovery time is fixed at open.
                assert!(n >= want && n != u64::MAX, "{n} < {want}");
                assert_eq!(get(st, std::ptr::null_mut()), ErrorCode::NullPointer as u32);
                assert_eq!(get(std::ptr::null(), &mut n), ErrorCode::NullPointer as u32);
            }
            let mut n = 0;
            assert_eq!(mmsb_log_recovery_micros(st, &mut n), MMSB_OK);
            assert_eq!(n, want.recovery_micros);
            assert_eq!(crate::state::mmsb_state_close(st), MMSB_OK);
            assert_eq!(mmsb_log_recovery_micros(st, &mut n), ErrorCode::Closed as u32);
            mmsb_state_free(st);
        }
        let st = crate::new_handle(MmsbState::plain(mmsb::MMSBState::open(mmsb::Config::default()).unwrap()));
        // SAFETY: as above.
        unsafe {
            let mut n = 0u64;
            assert_eq!(mmsb_log_recovery_micros(st, &mut n), ErrorCode::Unsupported as u32);
            mmsb_state_free(st);
        }
    }

    #[test]
    fn log_info_reports_failed_maintenance_and_quarantined_files() {
        use mmsb::runtime::tlog::fault::{Fault, FaultStorage, Op};
        use mmsb::runtime::tlog::storage::Storage;
        let fs = std::sync::Arc::new(FaultStorage::in_memory());
        // A file recovery cannot replay (a segment after a header-only newest one, out of the
        // chain): quarantined by tolerant recovery.
        let cfg = mmsb::Config { logging: true, log_size_cap: 1024, tolerant_recovery: true, ..Default::default() };
        drop(mmsb::MMSBState::open_with_storage(cfg.clone(), fs.clone()).unwrap());
        fs.create("log-00000000000000000009.seg").unwrap().write_at(0, b"not a segment, but bytes").unwrap();
        let s = mmsb::MMSBState::open_with_storage(cfg, fs.clone()).unwrap();
        let p = s.create_page(256, Location::Cpu, PageMeta::default()).unwrap();
        fs.fail_nth(Op::Rename, 1, Fault::Eio);
        while s.log_info().unwrap().maintenance_failures == 0 {
            s.update_page(p, &[2; 200]).unwrap();
        }
        let lsn = s.lsn();
        let st = crate::new_handle(MmsbState::plain(s));
        // SAFETY: a live handle, valid out-pointers; the handle is freed once.
        unsafe {
            let mut info = MmsbLogInfo::default();
            assert_eq!(mmsb_log_info(st, &mut info), MMSB_OK);
            assert_eq!((info.quarantined_files, info.maintenance_failures), (1, 1));
            assert_eq!((info.last_maintenance_status, info.last_maintenance_lsn), (ErrorCode::Io as u32, lsn));
            let (mut buf, mut len) = ([0u8; 256], 0usize);
            assert_eq!(mmsb_log_maintenance_error(st, buf.as_mut_ptr().cast(), buf.len(), &mut len), MMSB_OK);
            let msg = std::str::from_utf8(&buf[..len]).unwrap();
            assert!(msg.contains("rename") && buf[len] == 0, "{msg}");
            mmsb_state_free(st);
        }
    }
}
