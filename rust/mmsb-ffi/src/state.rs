//! C ABI: configuration and state handles.

use std::ffi::c_char;
use std::path::PathBuf;
use std::sync::Arc;

use crate::{arg_ref, arg_str, boundary, check_out, write_out, FfiError, MmsbStatus};
use mmsb::runtime::state::{Config, Durability, MMSBState};
use mmsb::types::error::StateError;

/// Opaque configuration builder. Create with `mmsb_config_new`, free with `mmsb_config_free`.
pub struct MmsbConfig {
    pub(crate) config: Config,
    /// What the caller set logging to, if anything. `Config::logging == false` also means "not
    /// asked for" (a directory logs anyway), so only here can an explicit 0 be told apart.
    pub(crate) logging: Option<bool>,
    /// The replication target (`mmsb_config_set_replication`): NATS URLs and stream name.
    pub(crate) replicate: Option<(String, String)>,
}

impl MmsbConfig {
    /// Records an explicit logging switch (`mmsb_config_set_logging` or the `logging` key).
    pub(crate) fn set_logging(&mut self, on: bool) {
        self.config.logging = on;
        self.logging = Some(on);
    }

    /// The configuration to open, rejecting what `Config` alone cannot express: logging turned
    /// off explicitly for a directory-backed state, which would otherwise log anyway.
    fn validated(&self) -> Result<Config, StateError> {
        if self.logging == Some(false) && self.config.dir.is_some() {
            return Err(StateError::InvalidConfig(
                "logging is off but a directory is set: a directory-backed state is the logged one \
                 (it recovers from its log); open an in-memory state (no directory) to run without a log"
                    .into(),
            ));
        }
        Ok(self.config.clone())
    }
}

/// Opaque state handle. Create with `mmsb_state_open`, free with `mmsb_state_free`.
pub struct MmsbState {
    pub(crate) state: Arc<MMSBState>,
    /// The primary or follower of a replicated state (`replica.rs`), kept as long as the handle.
    #[cfg_attr(not(feature = "replication"), allow(dead_code))] // only read by replication
    pub(crate) replica: Option<crate::replica::Replica>,
}

impl MmsbState {
    /// A handle for a state that does not replicate.
    pub(crate) fn plain(state: MMSBState) -> MmsbState {
        MmsbState { state: Arc::new(state), replica: None }
    }
}

/// Creates a configuration with defaults (in memory, durability none).
///
/// # Safety
/// `out` must be NULL (an error) or valid for a pointer write.
#[no_mangle]
pub unsafe extern "C" fn mmsb_config_new(out: *mut *mut MmsbConfig) -> MmsbStatus {
    boundary(|| {
        check_out(out, "out")?;
        let cfg = crate::new_handle(MmsbConfig { config: Config::default(), logging: None, replicate: None });
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, cfg, "out") }
    })
}

/// Frees a configuration. NULL is accepted and ignored.
///
/// # Safety
/// `cfg` must be NULL or a pointer from `mmsb_config_new` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn mmsb_config_free(cfg: *mut MmsbConfig) {
    // SAFETY: forwarded contract; unknown and already freed pointers are ignored.
    unsafe { crate::free_handle(cfg, "config") }
}

/// Borrows a config mutably for a setter.
///
/// # Safety
/// `cfg` must be NULL or a live config handle not used concurrently.
unsafe fn cfg_mut<'a>(cfg: *mut MmsbConfig) -> Result<&'a mut MmsbConfig, FfiError> {
    // SAFETY: forwarded contract.
    unsafe { cfg.as_mut() }.ok_or_else(|| FfiError::null("config"))
}

/// Sets the state directory (UTF-8, `len` bytes, not NUL-terminated). `len == 0` means in-memory.
///
/// # Safety
/// `cfg` a live config; `dir` valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn mmsb_config_set_dir(cfg: *mut MmsbConfig, dir: *const c_char, len: usize) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let cfg = unsafe { cfg_mut(cfg) }?;
        // SAFETY: forwarded contract.
        let dir = unsafe { arg_str(dir, len, "dir") }?;
        cfg.config.dir = if dir.is_empty() { None } else { Some(PathBuf::from(dir)) };
        Ok(())
    })
}

/// Sets the durability mode: 0 none, 1 group commit, 2 always, 3 replicated (group commit plus
/// the replication target's acknowledgement; only a state with a replication target accepts it).
///
/// # Safety
/// `cfg` a live config.
#[no_mangle]
pub unsafe extern "C" fn mmsb_config_set_durability(cfg: *mut MmsbConfig, mode: u32) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let cfg = unsafe { cfg_mut(cfg) }?;
        cfg.config.durability =
            Durability::from_u32(mode).ok_or_else(|| FfiError::invalid(format!("unknown durability mode {mode}")))?;
        Ok(())
    })
}

/// Sets a numeric option by name: `max_page_size` (1 ..= 2^48), `log_size_cap` (0 = off, or
/// 256 ..= 2^64 - 1; default 256 MiB), `replay_budget` (log bytes since the newest checkpoint
/// past which the maintenance thread checkpoints, bounding the replay after a crash: 0 = off, or
/// 256 ..= 2^64 - 1; default 64 MiB), `segment_size` (256 ..= 2^32), `blob_min` (any value: 0 and 1 put every
/// payload into blob files, `UINT64_MAX` none), `file_backed_pages` (0/1), `tolerant_recovery`
/// (0/1), `gpu` (0/1), `logging` (0/1, as `mmsb_config_set_logging`). Ranges are checked by
/// `mmsb_state_open`, which fails with `MMSB_STATUS_CODE_INVALID_ARGUMENT` and a message naming the
/// accepted range.
///
/// # Safety
/// `cfg` a live config; `key` valid for `key_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn mmsb_config_set_u64(
    cfg: *mut MmsbConfig,
    key: *const c_char,
    key_len: usize,
    value: u64,
) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let cfg = unsafe { cfg_mut(cfg) }?;
        // SAFETY: forwarded contract.
        let key = unsafe { arg_str(key, key_len, "key") }?;
        let flag = |v: u64| match v {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(FfiError::invalid(format!("{key} takes 0 or 1, not {v}"))),
        };
        match key {
            "max_page_size" => cfg.config.max_page_size = value,
            "log_size_cap" => cfg.config.log_size_cap = value,
            "replay_budget" => cfg.config.replay_budget = value,
            "segment_size" => cfg.config.segment_size = value,
            "blob_min" => cfg.config.blob_min = value,
            "file_backed_pages" => cfg.config.file_backed_pages = flag(value)?,
            "tolerant_recovery" => cfg.config.tolerant_recovery = flag(value)?,
            "gpu" => cfg.config.gpu = flag(value)?,
            "logging" => cfg.set_logging(flag(value)?),
            _ => return Err(FfiError::invalid(format!("unknown configuration key {key:?}"))),
        }
        Ok(())
    })
}

/// Opens a state. `cfg` may be NULL for the defaults; it is only read (free it yourself).
/// Fails with `MMSB_STATUS_CODE_INVALID_ARGUMENT` for a configuration with a directory whose logging
/// was set to 0 (a directory-backed state always logs).
///
/// # Safety
/// `cfg` NULL or a live config; `out` valid for a pointer write.
#[no_mangle]
pub unsafe extern "C" fn mmsb_state_open(cfg: *const MmsbConfig, out: *mut *mut MmsbState) -> MmsbStatus {
    boundary(|| {
        check_out(out, "out")?;
        let config = if cfg.is_null() {
            Config::default()
        } else {
            // SAFETY: non-NULL, live per contract.
            unsafe { arg_ref(cfg, "config") }?.validated()?
        };
        // Replication hook: a configured target opens the state as that stream's primary.
        let replicate = if cfg.is_null() {
            None
        } else {
            // SAFETY: non-NULL, live per contract.
            unsafe { arg_ref(cfg, "config") }?.replicate.clone()
        };
        let h = match replicate {
            Some((url, stream)) => crate::new_handle(crate::replica::open_primary(config, &url, &stream)?),
            None => crate::new_handle(MmsbState::plain(MMSBState::open(config)?)),
        };
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, h, "out") }
    })
}

/// Closes a state: later calls on it fail with `MMSB_STATUS_CLOSED`. Safe to call while other
/// threads use the handle, and more than once. The handle itself stays valid until freed.
/// Called from a transform of this state's own propagation round, fails with
/// `MMSB_STATUS_CODE_REENTRANT` (close after `mmsb_propagate` returns). If the background
/// maintenance thread failed and no call returned that failure yet (`mmsb_state_checkpoint`,
/// `mmsb_state_compact`), the state is closed and the failure returned.
///
/// # Safety
/// `state` must be NULL (an error) or a live handle.
#[no_mangle]
pub unsafe extern "C" fn mmsb_state_close(state: *const MmsbState) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { arg_ref(state, "state") }?.state.as_ref();
        // From a transform of this state's own round, closing would wait for the round's lock.
        s.check_reentry()?;
        // Closed either way; a failure of the maintenance thread that no call returned yet is
        // returned here (see `MMSBState::try_close`).
        s.try_close()?;
        Ok(())
    })
}

/// Closes (if needed) and frees a state handle. NULL is accepted. No other thread may use the
/// handle during or after this call.
///
/// # Safety
/// `state` must be NULL or a handle from `mmsb_state_open`. Freeing an already freed handle is
/// detected and ignored (unless its address was reused by a newer handle).
#[no_mangle]
pub unsafe extern "C" fn mmsb_state_free(state: *mut MmsbState) {
    // Dropping the last reference closes the state (MMSBState::drop).
    // SAFETY: forwarded contract; unknown and already freed pointers are ignored.
    unsafe { crate::free_handle(state, "state") }
}

/// Reports whether the state is open (1) or closed (0).
///
/// # Safety
/// `state` a live handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_state_is_open(state: *const MmsbState, out: *mut u8) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { arg_ref(state, "state") }?;
        // SAFETY: forwarded contract.
        unsafe { write_out(out, u8::from(!s.state.is_closed()), "out") }
    })
}

/// The last LSN assigned. Fails with `MMSB_STATUS_CLOSED` once the state is closed.
///
/// # Safety
/// `state` a live handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_state_lsn(state: *const MmsbState, out: *mut u64) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { state_ref(state) }?;
        // SAFETY: forwarded contract.
        unsafe { write_out(out, s.lsn(), "out") }
    })
}

/// Borrows the state behind a handle, failing cleanly on NULL and with `Closed` once the state
/// is closed. Every function on a state goes through here except `mmsb_state_close`,
/// `mmsb_state_is_open` and `mmsb_state_free`, so the C ABI's promise that "later calls fail
/// with CLOSED" also covers getters whose Rust methods stay infallible (the LSN, device and
/// monitoring snapshots keep their final values after a close).
///
/// # Safety
/// `state` NULL or a live handle.
pub(crate) unsafe fn state_ref<'a>(state: *const MmsbState) -> Result<&'a MMSBState, FfiError> {
    // SAFETY: forwarded contract.
    let s = unsafe { arg_ref(state, "state") }?.state.as_ref();
    // Every C entry point on a state comes here first: a C or Julia transform calling back into
    // the state that runs it gets `REENTRANT` rather than a deadlock on the state's lock.
    s.check_reentry()?;
    if s.is_closed() {
        return Err(StateError::Closed.into());
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{mmsb_config_set_logging, mmsb_log_info, MmsbLogInfo};
    use crate::{mmsb_last_error_message, MMSB_OK};
    use mmsb::types::error::ErrorCode;

    /// Opens `cfg` (then frees it); returns the status and, on success, whether the state logs.
    ///
    /// # Safety
    /// `cfg` a live config, not used afterwards.
    unsafe fn open_and_probe(cfg: *mut MmsbConfig) -> (MmsbStatus, Option<bool>) {
        let mut st = std::ptr::null_mut();
        // SAFETY: forwarded contract; `st` is writable.
        let status = unsafe { mmsb_state_open(cfg, &mut st) };
        // SAFETY: freed once, not used afterwards.
        unsafe { mmsb_config_free(cfg) };
        if status != MMSB_OK {
            return (status, None);
        }
        let mut info = MmsbLogInfo::default();
        // SAFETY: `st` is live until freed just below.
        let logs = unsafe { mmsb_log_info(st, &mut info) } == MMSB_OK;
        // SAFETY: `st` came from mmsb_state_open and is freed once.
        unsafe { mmsb_state_free(st) };
        (status, Some(logs))
    }

    /// A config with `dir` set (when given) and logging set per `how`: None leaves it, 0/1
    /// through `mmsb_config_set_logging`, 10/11 through the `logging` key of `set_u64`.
    fn config(dir: Option<&std::path::Path>, how: Option<u8>) -> *mut MmsbConfig {
        let mut cfg = std::ptr::null_mut();
        // SAFETY: valid out-pointer, then a live config handle.
        unsafe {
            assert_eq!(mmsb_config_new(&mut cfg), MMSB_OK);
            if let Some(d) = dir {
                let d = d.to_str().unwrap();
                assert_eq!(mmsb_config_set_dir(cfg, d.as_ptr().cast(), d.len()), MMSB_OK);
            }
            let key = "logging";
            match how {
                None => {}
                Some(v @ (0 | 1)) => assert_eq!(mmsb_config_set_logging(cfg, v), MMSB_OK),
                Some(v) => {
                    assert_eq!(mmsb_config_set_u64(cfg, key.as_ptr().cast(), key.len(), u64::from(v - 10)), MMSB_OK)
                }
            }
        }
        cfg
    }

    /// `replay_budget` is an option by name: checked against its range at open.
    #[test]
    fn replay_budget_is_set_by_name_and_range_checked() {
        let dir = tempfile::tempdir().unwrap();
        for (v, ok) in [(255u64, false), (1 << 20, true)] {
            let cfg = config(Some(dir.path()), None);
            let key = "replay_budget";
            // SAFETY: a live config; the key is valid for its length.
            assert_eq!(unsafe { mmsb_config_set_u64(cfg, key.as_ptr().cast(), key.len(), v) }, MMSB_OK);
            // SAFETY: a fresh config, consumed by the call.
            let (status, _) = unsafe { open_and_probe(cfg) };
            let want = if ok { MMSB_OK } else { ErrorCode::InvalidArgument as u32 };
            assert_eq!(status, want, "replay_budget {v}");
        }
    }

    #[test]
    fn a_directory_with_logging_turned_off_is_an_invalid_config() {
        let dir = tempfile::tempdir().unwrap();
        for how in [0, 10] {
            // SAFETY: a fresh config, consumed by the call.
            let (status, _) = unsafe { open_and_probe(config(Some(dir.path()), Some(how))) };
            assert_eq!(status, ErrorCode::InvalidArgument as u32, "logging off via {how}");
            let mut buf = [0 as std::ffi::c_char; 256];
            // SAFETY: `buf` is writable for its length.
            unsafe { mmsb_last_error_message(buf.as_mut_ptr(), buf.len(), std::ptr::null_mut()) };
            // SAFETY: the message is NUL-terminated within `buf`.
            let msg = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned();
            assert!(msg.contains("invalid configuration") && msg.contains("in-memory state"), "{msg}");
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "a refused open leaves the directory alone");
        }
        // Logging on, or not mentioned, with a directory: the state logs to disk.
        for how in [None, Some(1), Some(11)] {
            // SAFETY: a fresh config, consumed by the call.
            assert_eq!(unsafe { open_and_probe(config(Some(dir.path()), how)) }, (MMSB_OK, Some(true)), "{how:?}");
        }
        // Off in memory is the plain unlogged state; a directory cleared again is in memory too.
        // SAFETY: fresh configs, consumed by the calls.
        unsafe {
            assert_eq!(open_and_probe(config(None, Some(0))), (MMSB_OK, Some(false)));
            let cfg = config(Some(dir.path()), Some(0));
            assert_eq!(mmsb_config_set_dir(cfg, std::ptr::null(), 0), MMSB_OK);
            assert_eq!(open_and_probe(cfg), (MMSB_OK, Some(false)));
        }
    }
}
