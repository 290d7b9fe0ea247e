//! C ABI: configuration and state handles.

use std::ffi::c_char;
use std::path::PathBuf;
use std::sync::Arc;

use crate::ffi::{arg_ref, arg_str, boundary, check_out, write_out, FfiError, MmsbStatus};
use crate::runtime::state::{Config, Durability, MMSBState};

/// Opaque configuration builder. Create with `mmsb_config_new`, free with `mmsb_config_free`.
pub struct MmsbConfig {
    pub(crate) config: Config,
}

/// Opaque state handle. Create with `mmsb_state_open`, free with `mmsb_state_free`.
pub struct MmsbState {
    pub(crate) state: Arc<MMSBState>,
}

/// Creates a configuration with defaults (in memory, durability none).
///
/// # Safety
/// `out` must be NULL (an error) or valid for a pointer write.
#[no_mangle]
pub unsafe extern "C" fn mmsb_config_new(out: *mut *mut MmsbConfig) -> MmsbStatus {
    boundary(|| {
        check_out(out, "out")?;
        let cfg = crate::ffi::new_handle(MmsbConfig { config: Config::default() });
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
    unsafe { crate::ffi::free_handle(cfg, "config") }
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

/// Sets the durability mode: 0 none, 1 group commit, 2 always.
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

/// Sets a numeric option by name: `max_page_size`, `log_size_cap`, `segment_size`,
/// `file_backed_pages` (0/1), `tolerant_recovery` (0/1), `gpu` (0/1), `logging` (0/1).
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
        let c = &mut cfg.config;
        let flag = |v: u64| match v {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(FfiError::invalid(format!("{key} takes 0 or 1, not {v}"))),
        };
        match key {
            "max_page_size" => c.max_page_size = value,
            "log_size_cap" => c.log_size_cap = value,
            "segment_size" => c.segment_size = value,
            "file_backed_pages" => c.file_backed_pages = flag(value)?,
            "tolerant_recovery" => c.tolerant_recovery = flag(value)?,
            "gpu" => c.gpu = flag(value)?,
            "logging" => c.logging = flag(value)?,
            _ => return Err(FfiError::invalid(format!("unknown configuration key {key:?}"))),
        }
        Ok(())
    })
}

/// Opens a state. `cfg` may be NULL for the defaults; it is only read (free it yourself).
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
            unsafe { arg_ref(cfg, "config") }?.config.clone()
        };
        let state = MMSBState::open(config)?;
        let h = crate::ffi::new_handle(MmsbState { state: Arc::new(state) });
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, h, "out") }
    })
}

/// Closes a state: later calls on it fail with `MMSB_STATUS_CLOSED`. Safe to call while other
/// threads use the handle, and more than once. The handle itself stays valid until freed.
///
/// # Safety
/// `state` must be NULL (an error) or a live handle.
#[no_mangle]
pub unsafe extern "C" fn mmsb_state_close(state: *const MmsbState) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        unsafe { arg_ref(state, "state") }?.state.close();
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
    unsafe { crate::ffi::free_handle(state, "state") }
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
    if s.is_closed() {
        return Err(crate::types::error::StateError::Closed.into());
    }
    Ok(s)
}
