//! C ABI: pages (create, free, read, views, writes).

use std::ffi::c_char;

use crate::state::{state_ref, MmsbState};
use crate::{
    arg_bytes, arg_ref, arg_slice, arg_str, boundary, check_out, write_out, FfiError, FfiResult, MmsbStatus,
    MMSB_NO_EPOCH,
};
use mmsb::runtime::router::RouteOp;
use mmsb::types::delta::Delta;
use mmsb::types::page::{Location, PageId, PageInfo, PageMeta, PageView};
use mmsb::MMSBState;

/// Descriptive fields of a page, filled by `mmsb_page_info`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct MmsbPageInfo {
    pub id: u64,
    pub size: u64,
    pub capacity: u64,
    pub epoch: u64,
    /// 0 cpu, 1 gpu, 2 unified.
    pub location: u8,
}

impl From<&PageInfo> for MmsbPageInfo {
    fn from(i: &PageInfo) -> MmsbPageInfo {
        // Every field named (no `..`): a field added to the original does not compile until it is
        // mirrored here or left out on purpose.
        let PageInfo {
            id,
            size,
            capacity,
            epoch,
            location,
            name: _, // variable length: `mmsb_page_name`
        } = i;
        MmsbPageInfo { id: id.0, size: *size, capacity: *capacity, epoch: *epoch, location: *location as u8 }
    }
}

/// Opaque zero-copy view of a page's bytes; keeps them mapped until `mmsb_view_free`.
pub struct MmsbView {
    view: PageView,
}

/// A view handle's bytes: what `mmsb_view_bytes` and `mmsb_reader_view_bytes` hand out.
pub(crate) trait ViewHandle {
    /// The address and length of the viewed bytes, valid while the handle lives.
    fn bytes(&self) -> (*const u8, usize);
}

impl ViewHandle for MmsbView {
    fn bytes(&self) -> (*const u8, usize) {
        (self.view.as_ptr(), self.view.len())
    }
}

/// The body of the view-opening calls (`mmsb_page_view`, `mmsb_reader_view`): checks `out`,
/// opens the view with `open`, registers it as a handle and writes it to `*out`.
///
/// # Safety
/// `out` NULL or writable; `open` upholds its own call's contract.
pub(crate) unsafe fn open_view<V>(out: *mut *mut V, open: impl FnOnce() -> FfiResult<V>) -> MmsbStatus {
    boundary(|| {
        check_out(out, "out")?;
        let h = crate::new_handle(open()?);
        // SAFETY: checked non-NULL above; writable per the caller's contract.
        unsafe { write_out(out, h, "out") }
    })
}

/// The body of the view-bytes calls (`mmsb_view_bytes`, `mmsb_reader_view_bytes`).
///
/// # Safety
/// `view` NULL or a live view handle; `out_ptr`, `out_len` NULL or writable.
pub(crate) unsafe fn view_bytes<V: ViewHandle>(
    view: *const V,
    out_ptr: *mut *const u8,
    out_len: *mut usize,
) -> MmsbStatus {
    boundary(|| {
        check_out(out_ptr, "out_ptr")?;
        check_out(out_len, "out_len")?;
        // SAFETY: forwarded contract.
        let (ptr, len) = unsafe { arg_ref(view, "view") }?.bytes();
        // SAFETY: both checked non-NULL above.
        unsafe {
            write_out(out_ptr, ptr, "out_ptr")?;
            write_out(out_len, len, "out_len")
        }
    })
}

/// The shared tail of the page-write calls (`mmsb_page_write`, `_masked`, `_sparse`): routes
/// `delta` (compare-and-set on `expected_epoch` unless it is `MMSB_NO_EPOCH`) and writes its
/// LSN to the optional `out_lsn`.
///
/// # Safety
/// `out_lsn` NULL or writable.
unsafe fn route_write(s: &MMSBState, page: u64, delta: &Delta, expected_epoch: u64, out_lsn: *mut u64) -> FfiResult {
    let lsn = s.route_delta(PageId(page), delta, epoch_arg(expected_epoch))?;
    // SAFETY: optional out-parameter, per the caller's contract.
    unsafe { opt_out(out_lsn, lsn) };
    Ok(())
}

pub(crate) fn epoch_arg(expected_epoch: u64) -> Option<u64> {
    (expected_epoch != MMSB_NO_EPOCH).then_some(expected_epoch)
}

/// Creates a zeroed page of `size` bytes at `location` (0 cpu, 1 gpu, 2 unified) with an
/// optional UTF-8 name (`name_len` bytes, at most `MMSB_MAX_PAGE_NAME_BYTES`, no NUL; NULL/0
/// for none). Writes its id to `*out_id`. A GPU or unified page that gets no device mirror (no
/// GPU, the `gpu` option off, or allocation failed) is created CPU-only, a documented
/// fallback: `mmsb_page_device_status` reports `MMSB_PAGE_DEVICE_CPU_ONLY` and the reason.
///
/// # Safety
/// `state` a live handle; `name` valid for `name_len` bytes; `out_id` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_page_create(
    state: *const MmsbState,
    size: u64,
    location: u8,
    name: *const c_char,
    name_len: usize,
    out_id: *mut u64,
) -> MmsbStatus {
    boundary(|| {
        check_out(out_id, "out_id")?;
        // SAFETY: forwarded contract.
        let s = unsafe { state_ref(state) }?;
        // SAFETY: forwarded contract.
        let name = unsafe { arg_str(name, name_len, "name") }?;
        let location =
            Location::from_u8(location).ok_or_else(|| FfiError::invalid(format!("unknown location {location}")))?;
        let id = s.create_page(size, location, PageMeta { name: name.to_owned(), tags: Vec::new() })?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_id, id.0, "out_id") }
    })
}

/// Frees a page. Views of it stay valid until freed themselves.
///
/// # Safety
/// `state` a live handle.
#[no_mangle]
pub unsafe extern "C" fn mmsb_page_free(state: *const MmsbState, page: u64) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        unsafe { state_ref(state) }?.free_page(PageId(page))?;
        Ok(())
    })
}

/// Fills `*out` with the page's id, size, capacity, epoch and location.
///
/// # Safety
/// `state` a live handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_page_info(state: *const MmsbState, page: u64, out: *mut MmsbPageInfo) -> MmsbStatus {
    boundary(|| {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let i = unsafe { state_ref(state) }?.page_info(PageId(page))?;
        let info = MmsbPageInfo::from(&i);
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, info, "out") }
    })
}

/// Copies the page's name (UTF-8, NUL-terminated, truncated to `cap`) into `buf`; the full
/// length goes to `*out_len` (may be NULL).
///
/// # Safety
/// `state` a live handle; `buf` NULL or valid for `cap` bytes; `out_len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_page_name(
    state: *const MmsbState,
    page: u64,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let i = unsafe { state_ref(state) }?.page_info(PageId(page))?;
        // SAFETY: forwarded contract.
        unsafe { crate::copy_c_string(i.name.as_bytes(), buf, cap, out_len) };
        Ok(())
    })
}

/// Copies `len` bytes from `offset` of the page into `buf` (a consistent snapshot).
///
/// # Safety
/// `state` a live handle; `buf` valid for writes of `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn mmsb_page_read(
    state: *const MmsbState,
    page: u64,
    offset: u64,
    buf: *mut u8,
    len: usize,
) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { state_ref(state) }?;
        if len == 0 {
            // `buf` may be NULL; the offset is still checked (at most the page size).
            s.read_into(PageId(page), offset, &mut [])?;
            return Ok(());
        }
        if buf.is_null() {
            return Err(FfiError::null("buf"));
        }
        // SAFETY: non-NULL, valid for len bytes per contract; no aliasing Rust references exist.
        let out = unsafe { std::slice::from_raw_parts_mut(buf, len) };
        s.read_into(PageId(page), offset, out)?;
        Ok(())
    })
}

/// Opens a zero-copy view of the page. The bytes may change while the view lives (no snapshot).
///
/// # Safety
/// `state` a live handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_page_view(state: *const MmsbState, page: u64, out: *mut *mut MmsbView) -> MmsbStatus {
    let open = || {
        // SAFETY: forwarded contract.
        let view = unsafe { state_ref(state) }?.view(PageId(page))?;
        Ok(MmsbView { view })
    };
    // SAFETY: forwarded contract (`out` NULL or writable).
    unsafe { open_view(out, open) }
}

/// The address and length of a view's bytes; valid until `mmsb_view_free`.
///
/// # Safety
/// `view` a live view; `out_ptr`, `out_len` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_view_bytes(
    view: *const MmsbView,
    out_ptr: *mut *const u8,
    out_len: *mut usize,
) -> MmsbStatus {
    // SAFETY: forwarded contract.
    unsafe { view_bytes(view, out_ptr, out_len) }
}

/// Frees a view. NULL is accepted.
///
/// # Safety
/// `view` NULL or a view not yet freed.
#[no_mangle]
pub unsafe extern "C" fn mmsb_view_free(view: *mut MmsbView) {
    // SAFETY: forwarded contract; unknown and already freed pointers are ignored.
    unsafe { crate::free_handle(view, "view") }
}

/// Writes `len` bytes at `offset` as the smallest delta from the page's current bytes
/// (`update_page`). `expected_epoch` is `MMSB_NO_EPOCH` or the epoch to compare-and-set on.
///
/// # Safety
/// `state` a live handle; `bytes` valid for `len` bytes; `out_lsn` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_page_update(
    state: *const MmsbState,
    page: u64,
    offset: u64,
    bytes: *const u8,
    len: usize,
    expected_epoch: u64,
    out_lsn: *mut u64,
) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { state_ref(state) }?;
        // SAFETY: forwarded contract.
        let bytes = unsafe { arg_bytes(bytes, len, "bytes") }?;
        let lsn = s.update_page_at(PageId(page), offset, bytes, epoch_arg(expected_epoch))?;
        // SAFETY: out_lsn is optional; written only when non-NULL.
        unsafe { opt_out(out_lsn, lsn) };
        Ok(())
    })
}

/// Routes a plain write of `len` bytes at `offset` (a one-run sparse delta, no diff).
///
/// # Safety
/// As `mmsb_page_update`.
#[no_mangle]
pub unsafe extern "C" fn mmsb_page_write(
    state: *const MmsbState,
    page: u64,
    offset: u64,
    bytes: *const u8,
    len: usize,
    expected_epoch: u64,
    out_lsn: *mut u64,
) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { state_ref(state) }?;
        // SAFETY: forwarded contract.
        let bytes = unsafe { arg_bytes(bytes, len, "bytes") }?;
        // An empty write keeps its offset (the delta's anchor), so it is bounds-checked too.
        // SAFETY: forwarded contract (`out_lsn`).
        unsafe { route_write(s, page, &Delta::write(offset, bytes)?, expected_epoch, out_lsn) }
    })
}

/// Routes a dense masked write: `data` has `len` bytes starting at `offset`; `mask` has
/// `mask_len == ceil(len / 8)` bytes, one bit per data byte, least significant bit first.
///
/// # Safety
/// As `mmsb_page_update`; `mask` valid for `mask_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn mmsb_page_write_masked(
    state: *const MmsbState,
    page: u64,
    offset: u64,
    mask: *const u8,
    mask_len: usize,
    data: *const u8,
    len: usize,
    expected_epoch: u64,
    out_lsn: *mut u64,
) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { state_ref(state) }?;
        // SAFETY: forwarded contract.
        let mask = unsafe { arg_bytes(mask, mask_len, "mask") }?;
        // SAFETY: forwarded contract.
        let data = unsafe { arg_bytes(data, len, "data") }?;
        let delta = Delta::dense(offset, mask, data)?;
        // SAFETY: forwarded contract (`out_lsn`).
        unsafe { route_write(s, page, &delta, expected_epoch, out_lsn) }
    })
}

/// Routes a sparse write of `nruns` runs: run `i` writes `lens[i]` bytes at `offsets[i]`, taken
/// consecutively from `data` (`data_len` must equal the sum of `lens`). Later runs win overlaps.
///
/// # Safety
/// As `mmsb_page_update`; `offsets`, `lens` valid for `nruns` u64 each; `data` for `data_len`.
#[no_mangle]
pub unsafe extern "C" fn mmsb_page_write_sparse(
    state: *const MmsbState,
    page: u64,
    offsets: *const u64,
    lens: *const u64,
    nruns: usize,
    data: *const u8,
    data_len: usize,
    expected_epoch: u64,
    out_lsn: *mut u64,
) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { state_ref(state) }?;
        // SAFETY: forwarded contract (the three buffers).
        let (offsets, lens, data) = unsafe {
            (arg_slice(offsets, nruns, "offsets")?, arg_slice(lens, nruns, "lens")?, arg_bytes(data, data_len, "data")?)
        };
        let delta = crate::delta::sparse_from_parts(offsets, lens, data)?;
        // SAFETY: forwarded contract (`out_lsn`).
        unsafe { route_write(s, page, &delta, expected_epoch, out_lsn) }
    })
}

/// Writes the ids of all pages (ascending) into `out` of `cap` entries; the count goes to
/// `*out_count`. Fails with `BUFFER_TOO_SMALL` (count still written) when `cap` is short.
///
/// # Safety
/// `state` a live handle; `out` NULL or valid for `cap` u64; `out_count` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_page_list(
    state: *const MmsbState,
    out: *mut u64,
    cap: usize,
    out_count: *mut usize,
) -> MmsbStatus {
    // SAFETY: forwarded contract (the handle, `out` and `out_count`).
    boundary(|| unsafe { crate::write_page_ids(out, cap, out_count, || Ok(state_ref(state)?.page_ids()?)) })
}

/// Routes a single op; used by `mmsb_page_*` writers and the delta API.
pub(crate) fn route_one(
    s: &mmsb::runtime::state::MMSBState,
    page: u64,
    delta: &Delta,
    expected_epoch: u64,
) -> Result<u64, FfiError> {
    let op = RouteOp { page: PageId(page), delta, expected_epoch: epoch_arg(expected_epoch) };
    Ok(s.route_batch(&[op])?.start)
}

/// Writes `v` to an optional out-parameter.
///
/// # Safety
/// `p` NULL or valid for a write.
pub(crate) unsafe fn opt_out<T>(p: *mut T, v: T) {
    if !p.is_null() {
        // SAFETY: non-NULL and writable per contract.
        unsafe { p.write(v) };
    }
}
