//! C ABI: delta handles, routing and batches.

use crate::page::{epoch_arg, opt_out, route_one};
use crate::state::{state_ref, MmsbState};
use crate::{arg_bytes, arg_ref, arg_slice, boundary, check_out, write_out, FfiError, FfiResult, MmsbStatus};
use mmsb::runtime::router::RouteOp;
use mmsb::types::delta::Delta;
use mmsb::types::error::ErrorCode;
use mmsb::types::page::PageId;

/// Opaque delta handle. Free with `mmsb_delta_free`.
pub struct MmsbDelta {
    pub(crate) delta: Delta,
}

/// Opaque batch of deltas routed atomically by `mmsb_batch_route`. Free with `mmsb_batch_free`.
pub struct MmsbBatch {
    ops: Vec<(PageId, Delta, Option<u64>)>,
}

#[allow(clippy::cast_possible_truncation, reason = "the lengths were checked to sum to data.len(), a usize")]
pub(crate) fn sparse_from_parts(offsets: &[u64], lens: &[u64], data: &[u8]) -> FfiResult<Delta> {
    let total = lens.iter().try_fold(0u64, |a, &l| a.checked_add(l));
    if total != Some(data.len() as u64) {
        return Err(FfiError::with_code(
            ErrorCode::LengthMismatch,
            match total {
                Some(t) => format!("run lengths sum to {t} but data has {} bytes", data.len()),
                None => "run lengths overflow".to_string(),
            },
        ));
    }
    let mut at = 0usize;
    let runs = offsets.iter().zip(lens).map(|(&o, &l)| {
        let s = &data[at..at + l as usize];
        at += l as usize;
        (o, s)
    });
    Ok(Delta::sparse(runs.collect::<Vec<_>>())?)
}

/// Boxes a delta into a handle written to `out`.
///
/// # Safety
/// `out` checked non-NULL by the caller.
unsafe fn emit(out: *mut *mut MmsbDelta, delta: Delta) -> FfiResult {
    let h = crate::new_handle(MmsbDelta { delta });
    // SAFETY: forwarded contract.
    unsafe { write_out(out, h, "out") }
}

/// Creates a delta writing `len` bytes at `offset`.
///
/// # Safety
/// `bytes` valid for `len` bytes; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_delta_new_write(
    offset: u64,
    bytes: *const u8,
    len: usize,
    out: *mut *mut MmsbDelta,
) -> MmsbStatus {
    boundary(|| {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let bytes = unsafe { arg_bytes(bytes, len, "bytes") }?;
        let d = Delta::write(offset, bytes)?;
        // SAFETY: out checked above.
        unsafe { emit(out, d) }
    })
}

/// Creates a dense masked delta (`mask_len == ceil(len / 8)`, LSB-first bits).
///
/// # Safety
/// `mask` valid for `mask_len` bytes, `data` for `len`; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_delta_new_dense(
    offset: u64,
    mask: *const u8,
    mask_len: usize,
    data: *const u8,
    len: usize,
    out: *mut *mut MmsbDelta,
) -> MmsbStatus {
    boundary(|| {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let (mask, data) = unsafe { (arg_bytes(mask, mask_len, "mask")?, arg_bytes(data, len, "data")?) };
        let d = Delta::dense(offset, mask, data)?;
        // SAFETY: out checked above.
        unsafe { emit(out, d) }
    })
}

/// Creates a sparse delta from runs (see `mmsb_page_write_sparse`).
///
/// # Safety
/// `offsets`, `lens` valid for `nruns` u64; `data` for `data_len` bytes; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_delta_new_sparse(
    offsets: *const u64,
    lens: *const u64,
    nruns: usize,
    data: *const u8,
    data_len: usize,
    out: *mut *mut MmsbDelta,
) -> MmsbStatus {
    boundary(|| {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let (o, l, d) = unsafe {
            (arg_slice(offsets, nruns, "offsets")?, arg_slice(lens, nruns, "lens")?, arg_bytes(data, data_len, "data")?)
        };
        let delta = sparse_from_parts(o, l, d)?;
        // SAFETY: out checked above.
        unsafe { emit(out, delta) }
    })
}

/// Creates the smallest delta turning `old` into `new` (both `len` bytes).
///
/// # Safety
/// `old`, `new` valid for `len` bytes; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_delta_new_diff(
    old: *const u8,
    new: *const u8,
    len: usize,
    out: *mut *mut MmsbDelta,
) -> MmsbStatus {
    boundary(|| {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let (a, b) = unsafe { (arg_bytes(old, len, "old")?, arg_bytes(new, len, "new")?) };
        let d = Delta::diff(a, b)?;
        // SAFETY: out checked above.
        unsafe { emit(out, d) }
    })
}

/// Creates `a ⊕ b` (b wins where both write).
///
/// # Safety
/// `a`, `b` live deltas; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_delta_compose(
    a: *const MmsbDelta,
    b: *const MmsbDelta,
    out: *mut *mut MmsbDelta,
) -> MmsbStatus {
    boundary(|| {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let (a, b) = unsafe { (arg_ref(a, "a")?, arg_ref(b, "b")?) };
        let d = a.delta.compose(&b.delta);
        // SAFETY: out checked above.
        unsafe { emit(out, d) }
    })
}

/// Encodes a delta into `buf` (`cap` bytes); the encoded length goes to `*out_len`. With a
/// short buffer, fails with `BUFFER_TOO_SMALL` after writing the length. A delta with a run or
/// dense span over `UINT32_MAX` bytes cannot be encoded: `INVALID_ARGUMENT`.
///
/// # Safety
/// `delta` live; `buf` NULL or valid for `cap` bytes; `out_len` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_delta_encode(
    delta: *const MmsbDelta,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> MmsbStatus {
    boundary(|| {
        check_out(out_len, "out_len")?;
        // SAFETY: forwarded contract.
        let d = unsafe { arg_ref(delta, "delta") }?;
        d.delta.check_encodable().map_err(mmsb::types::error::Error::from)?;
        let n = d.delta.encoded_len();
        // SAFETY: checked above.
        unsafe { write_out(out_len, n, "out_len") }?;
        if cap < n {
            return Err(FfiError::with_code(
                ErrorCode::BufferTooSmall,
                format!("encoding needs {n} bytes, buffer has {cap}"),
            ));
        }
        if buf.is_null() {
            return Err(FfiError::null("buf"));
        }
        let mut v = Vec::with_capacity(n);
        d.delta.encode(&mut v);
        // SAFETY: buf valid for cap >= n bytes; v has n bytes.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), buf, n) };
        Ok(())
    })
}

/// Decodes a delta from exactly `len` bytes (trailing bytes are an error).
///
/// # Safety
/// `bytes` valid for `len` bytes; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_delta_decode(bytes: *const u8, len: usize, out: *mut *mut MmsbDelta) -> MmsbStatus {
    boundary(|| {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let b = unsafe { arg_bytes(bytes, len, "bytes") }?;
        let (d, used) = Delta::decode(b)?;
        if used != b.len() {
            return Err(FfiError::with_code(
                ErrorCode::Malformed,
                format!("{} trailing bytes after the delta", b.len() - used),
            ));
        }
        // SAFETY: out checked above.
        unsafe { emit(out, d) }
    })
}

/// Number of bytes the delta writes, and whether it is dense (1) or sparse (0).
///
/// # Safety
/// `delta` live; `out_written` writable; `out_dense` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_delta_stats(
    delta: *const MmsbDelta,
    out_written: *mut u64,
    out_dense: *mut u8,
) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let d = unsafe { arg_ref(delta, "delta") }?;
        // SAFETY: forwarded contract.
        unsafe {
            write_out(out_written, d.delta.written_bytes(), "out_written")?;
            opt_out(out_dense, u8::from(d.delta.is_dense()));
        }
        Ok(())
    })
}

/// Applies the delta to a caller's buffer of `len` bytes (no state involved).
///
/// # Safety
/// `delta` live; `buf` valid for reads and writes of `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn mmsb_delta_apply(delta: *const MmsbDelta, buf: *mut u8, len: usize) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let d = unsafe { arg_ref(delta, "delta") }?;
        if len == 0 {
            d.delta.check_bounds(0)?;
            return Ok(());
        }
        if buf.is_null() {
            return Err(FfiError::null("buf"));
        }
        // SAFETY: valid for len bytes per contract, exclusively ours during the call.
        let s = unsafe { std::slice::from_raw_parts_mut(buf, len) };
        d.delta.apply(s)?;
        Ok(())
    })
}

/// Frees a delta. NULL is accepted.
///
/// # Safety
/// `delta` NULL or a handle not yet freed.
#[no_mangle]
pub unsafe extern "C" fn mmsb_delta_free(delta: *mut MmsbDelta) {
    // SAFETY: forwarded contract; unknown and already freed pointers are ignored.
    unsafe { crate::free_handle(delta, "delta") }
}

/// Routes a delta to a page (the delta is only read; free it yourself).
///
/// # Safety
/// `state` live; `delta` live; `out_lsn` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_route_delta(
    state: *const MmsbState,
    page: u64,
    delta: *const MmsbDelta,
    expected_epoch: u64,
    out_lsn: *mut u64,
) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (s, d) = unsafe { (state_ref(state)?, arg_ref(delta, "delta")?) };
        let lsn = route_one(s, page, &d.delta, expected_epoch)?;
        // SAFETY: optional out-parameter.
        unsafe { opt_out(out_lsn, lsn) };
        Ok(())
    })
}

/// Creates an empty batch.
///
/// # Safety
/// `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_batch_new(out: *mut *mut MmsbBatch) -> MmsbStatus {
    boundary(|| {
        check_out(out, "out")?;
        let h = crate::new_handle(MmsbBatch { ops: Vec::new() });
        // SAFETY: checked above.
        unsafe { write_out(out, h, "out") }
    })
}

/// Appends a copy of `delta` for `page` to the batch.
///
/// # Safety
/// `batch` live and not used concurrently; `delta` live.
#[no_mangle]
pub unsafe extern "C" fn mmsb_batch_push(
    batch: *mut MmsbBatch,
    page: u64,
    delta: *const MmsbDelta,
    expected_epoch: u64,
) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let b = unsafe { batch.as_mut() }.ok_or_else(|| FfiError::null("batch"))?;
        // SAFETY: forwarded contract.
        let d = unsafe { arg_ref(delta, "delta") }?;
        b.ops.push((PageId(page), d.delta.clone(), epoch_arg(expected_epoch)));
        Ok(())
    })
}

/// Routes every delta of the batch atomically (all or nothing, one lock, one log record).
/// The first LSN and the count go to the out-parameters (both optional). An empty batch is
/// assigned no LSN: it reports first LSN 0 (never an LSN) and count 0. The batch is kept.
///
/// # Safety
/// `state`, `batch` live; out-parameters NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_batch_route(
    state: *const MmsbState,
    batch: *const MmsbBatch,
    out_first_lsn: *mut u64,
    out_count: *mut u64,
) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (s, b) = unsafe { (state_ref(state)?, arg_ref(batch, "batch")?) };
        let ops: Vec<RouteOp<'_>> =
            b.ops.iter().map(|(p, d, e)| RouteOp { page: *p, delta: d, expected_epoch: *e }).collect();
        let r = s.route_batch(&ops)?;
        // SAFETY: optional out-parameters.
        unsafe {
            opt_out(out_first_lsn, r.start);
            opt_out(out_count, r.end - r.start);
        }
        Ok(())
    })
}

/// Frees a batch. NULL is accepted.
///
/// # Safety
/// `batch` NULL or a handle not yet freed.
#[no_mangle]
pub unsafe extern "C" fn mmsb_batch_free(batch: *mut MmsbBatch) {
    // SAFETY: forwarded contract; unknown and already freed pointers are ignored.
    unsafe { crate::free_handle(batch, "batch") }
}
