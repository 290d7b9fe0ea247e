//! C ABI: device status, page syncs, device-side delta application and counters.

use std::ffi::c_char;

use crate::delta::MmsbDelta;
use crate::page::{epoch_arg, opt_out};
use crate::state::{state_ref, MmsbState};
use crate::{arg_ref, boundary, check_out, copy_c_string, write_out, FfiError, FfiResult, MmsbStatus};
use mmsb::device::{device_status, DeviceStats, PageDeviceStatus, SyncDirection};
use mmsb::types::page::PageId;

/// `mmsb_device_status` code: a GPU is usable.
pub const MMSB_DEVICE_AVAILABLE: u32 = 0;
/// `mmsb_device_status` code: no usable GPU (the reason says why); a normal state.
pub const MMSB_DEVICE_UNAVAILABLE: u32 = 1;

/// `mmsb_page_device_status` code: a CPU page (no mirror by design).
pub const MMSB_PAGE_DEVICE_CPU: u32 = 0;
/// `mmsb_page_device_status` code: a GPU or unified page with its device mirror.
pub const MMSB_PAGE_DEVICE_MIRRORED: u32 = 1;
/// `mmsb_page_device_status` code: a GPU or unified page that lives on the CPU only, because no
/// mirror could be made (no GPU, `gpu` option off, or allocation failed; the reason says which).
pub const MMSB_PAGE_DEVICE_CPU_ONLY: u32 = 2;

/// Sync direction: CPU page → device mirror (pushes the dirty ranges).
pub const MMSB_SYNC_HOST_TO_DEVICE: u32 = 0;
/// Sync direction: device mirror → CPU page (differences are routed and logged as a delta).
pub const MMSB_SYNC_DEVICE_TO_HOST: u32 = 1;

/// Counters of a state's device layer, filled by `mmsb_device_stats`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MmsbDeviceStats {
    /// Completed syncs (one per page and direction).
    pub syncs: u64,
    pub bytes_h2d: u64,
    pub bytes_d2h: u64,
    pub kernels_launched: u64,
    /// Bytes marked dirty on mirrored pages, waiting for a host-to-device sync.
    pub dirty_bytes_pending: u64,
    /// Pages with a device mirror.
    pub mirrors: u64,
    /// GPU or unified pages that stayed on the CPU (no GPU, or GPU use off).
    pub cpu_only_pages: u64,
}

impl From<DeviceStats> for MmsbDeviceStats {
    fn from(s: DeviceStats) -> MmsbDeviceStats {
        // Every field named (no `..`): a field added to the original does not compile until it is
        // mirrored here or left out on purpose.
        let DeviceStats { syncs, bytes_h2d, bytes_d2h, kernels_launched, dirty_bytes_pending, mirrors, cpu_only_pages } =
            s;
        MmsbDeviceStats { syncs, bytes_h2d, bytes_d2h, kernels_launched, dirty_bytes_pending, mirrors, cpu_only_pages }
    }
}

fn direction_arg(direction: u32) -> FfiResult<SyncDirection> {
    SyncDirection::from_u32(direction).ok_or_else(|| FfiError::invalid(format!("unknown sync direction {direction}")))
}

/// Detects the GPU (once per process; never fails for want of one). Writes
/// `MMSB_DEVICE_AVAILABLE` or `MMSB_DEVICE_UNAVAILABLE` to `*out_code`, and copies the device's
/// description or the reason there is none into `reason` (NUL-terminated, truncated to `cap`;
/// full length to `*out_len`). `reason` and `out_len` may be NULL.
///
/// # Safety
/// `out_code` writable; `reason` NULL or valid for `cap` bytes; `out_len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_device_status(
    out_code: *mut u32,
    reason: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> MmsbStatus {
    boundary(|| {
        check_out(out_code, "out_code")?;
        let st = device_status();
        // SAFETY: forwarded contract.
        unsafe { copy_c_string(st.describe().as_bytes(), reason, cap, out_len) };
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_code, st.code(), "out_code") }
    })
}

/// Where a page lives: writes `MMSB_PAGE_DEVICE_*` to `*out_code`, and for
/// `MMSB_PAGE_DEVICE_CPU_ONLY` copies why the requested GPU/unified page has no mirror into
/// `reason` (NUL-terminated, truncated to `cap`; full length to `*out_len`; empty otherwise).
/// This is how a caller sees the documented fallback of `mmsb_page_create` on a machine
/// without a GPU. `reason` and `out_len` may be NULL.
///
/// # Safety
/// `state` a live handle; `out_code` writable; `reason` NULL or valid for `cap` bytes;
/// `out_len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_page_device_status(
    state: *const MmsbState,
    page: u64,
    out_code: *mut u32,
    reason: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> MmsbStatus {
    boundary(|| {
        check_out(out_code, "out_code")?;
        // SAFETY: forwarded contract.
        let s = unsafe { state_ref(state) }?;
        let (code, why) = match s.device_page_status(PageId(page))? {
            PageDeviceStatus::CpuPage => (MMSB_PAGE_DEVICE_CPU, String::new()),
            PageDeviceStatus::Mirrored { .. } => (MMSB_PAGE_DEVICE_MIRRORED, String::new()),
            PageDeviceStatus::CpuOnly { reason } => (MMSB_PAGE_DEVICE_CPU_ONLY, reason),
        };
        // SAFETY: forwarded contract.
        unsafe { copy_c_string(why.as_bytes(), reason, cap, out_len) };
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_code, code, "out_code") }
    })
}

/// Syncs one page with its device mirror (`MMSB_SYNC_*`) and returns once the copies completed.
/// Fails with `MMSB_STATUS_NO_DEVICE` for a GPU/unified page that has no mirror (see
/// `mmsb_device_status`), and `MMSB_STATUS_DEVICE` for a CPU page or a CUDA failure.
///
/// # Safety
/// `state` a live handle.
#[no_mangle]
pub unsafe extern "C" fn mmsb_page_sync(state: *const MmsbState, page: u64, direction: u32) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { state_ref(state) }?;
        s.sync_device(PageId(page), direction_arg(direction)?)?;
        Ok(())
    })
}

/// Syncs every mirrored page of the state in `direction`. Succeeds with nothing to do when the
/// state has no GPU.
///
/// # Safety
/// `state` a live handle.
#[no_mangle]
pub unsafe extern "C" fn mmsb_device_sync_all(state: *const MmsbState, direction: u32) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { state_ref(state) }?;
        s.sync_all(direction_arg(direction)?)?;
        Ok(())
    })
}

/// Routes `delta` to `page` (like `mmsb_route_delta`) and, when the page has a device mirror,
/// applies it there with a kernel too. `expected_epoch` is `MMSB_NO_EPOCH` or the epoch to
/// compare-and-set on; the LSN goes to `*out_lsn` (may be NULL).
///
/// # Safety
/// `state` live; `delta` live (only read); `out_lsn` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_page_apply_on_device(
    state: *const MmsbState,
    page: u64,
    delta: *const MmsbDelta,
    expected_epoch: u64,
    out_lsn: *mut u64,
) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (s, d) = unsafe { (state_ref(state)?, arg_ref(delta, "delta")?) };
        let lsn = s.apply_on_device(PageId(page), &d.delta, epoch_arg(expected_epoch))?;
        // SAFETY: optional out-parameter.
        unsafe { opt_out(out_lsn, lsn) };
        Ok(())
    })
}

/// Fills `*out` with the state's device counters.
///
/// # Safety
/// `state` a live handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_device_stats(state: *const MmsbState, out: *mut MmsbDeviceStats) -> MmsbStatus {
    boundary(|| {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let s = unsafe { state_ref(state) }?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, s.device_stats().into(), "out") }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{mmsb_state_free, mmsb_state_open};
    use mmsb::types::error::ErrorCode;
    use mmsb::types::page::{Location, PageMeta};

    #[test]
    fn status_reports_without_panicking() {
        let mut code = 99u32;
        let mut buf = [0 as c_char; 256];
        let mut len = 0usize;
        // SAFETY: all pointers are valid locals.
        let st = unsafe { mmsb_device_status(&mut code, buf.as_mut_ptr(), buf.len(), &mut len) };
        assert_eq!(st, 0);
        assert!(code == MMSB_DEVICE_AVAILABLE || code == MMSB_DEVICE_UNAVAILABLE);
        assert!(len > 0, "a description or a reason is always given");
        // SAFETY: NULL out_code is rejected before any write.
        let st = unsafe { mmsb_device_status(std::ptr::null_mut(), std::ptr::null_mut(), 0, std::ptr::null_mut()) };
        assert_eq!(st, ErrorCode::NullPointer as u32);
    }

    #[test]
    fn sync_and_stats_through_the_c_abi_without_a_gpu() {
        let mut h: *mut MmsbState = std::ptr::null_mut();
        // SAFETY: NULL config means defaults (gpu off); `h` is writable.
        assert_eq!(unsafe { mmsb_state_open(std::ptr::null(), &mut h) }, 0);
        // SAFETY: `h` is live until freed below.
        let s = unsafe { state_ref(h) }.map_err(|_| ()).unwrap();
        let p = s.create_page(128, Location::Gpu, PageMeta::default()).unwrap();
        // SAFETY: `h` is live.
        unsafe {
            assert_eq!(mmsb_page_sync(h, p.0, MMSB_SYNC_HOST_TO_DEVICE), ErrorCode::NoDevice as u32);
            assert_eq!(mmsb_page_sync(h, p.0, 7), ErrorCode::InvalidArgument as u32);
            assert_eq!(mmsb_page_sync(h, 999, MMSB_SYNC_HOST_TO_DEVICE), ErrorCode::UnknownPage as u32);
            assert_eq!(mmsb_device_sync_all(h, MMSB_SYNC_DEVICE_TO_HOST), 0);
        }
        let mut stats = MmsbDeviceStats::default();
        // SAFETY: `h` live, `stats` writable.
        assert_eq!(unsafe { mmsb_device_stats(h, &mut stats) }, 0);
        assert_eq!(stats.cpu_only_pages, 1);
        assert_eq!(stats.mirrors, 0);
        // SAFETY: `h` came from mmsb_state_open and is freed once.
        unsafe { mmsb_state_free(h) };
    }
}
