//! C ABI: readers of a state directory from other processes (`Reader`, docs/page-files.md).
//!
//! A reader takes no lock and never blocks the writer. Its handle may be used from several
//! threads at once; `mmsb_reader_wait` blocks the calling thread (run it on a thread of its own
//! when the caller must stay responsive, as the Julia wrapper does).

use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::{arg_ref, arg_str, boundary, check_out, write_out, FfiError, MmsbStatus};
use mmsb::runtime::reader::{ReadInfo, Reader, ReaderView, WriterStatus};
use mmsb::types::page::PageId;

/// Opaque reader of a state directory; free with `mmsb_reader_free`.
pub struct MmsbReader {
    // Shared with the threads of `mmsb_reader_wait_async`.
    reader: Arc<Reader>,
}

/// Opaque background wait of `mmsb_reader_wait_async`; free with `mmsb_reader_wait_free`.
pub struct MmsbReaderWait {
    result: Arc<(AtomicBool, AtomicU64)>,
    cancel: Arc<AtomicBool>,
    reader: Arc<Reader>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for MmsbReaderWait {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Release);
        self.reader.wake_waiters();
        if let Some(t) = self.thread.take() {
            // The thread never panics (nothing in it can); a join error is ignored all the same.
            let _ = t.join();
        }
    }
}

/// The registrant's `arg`, sent to the waiting thread (never dereferenced here).
struct NotifyArg(*mut c_void);
// SAFETY: `mmsb_reader_wait_async` requires `f(arg)` to be callable from any thread.
unsafe impl Send for NotifyArg {}

impl NotifyArg {
    // A method, so that closures capture the whole wrapper (which is Send), not its field.
    fn get(&self) -> *mut c_void {
        self.0
    }
}

/// Opaque zero-copy view of a page's mapped bytes (read-only); keeps them mapped until
/// `mmsb_reader_view_free`, even after the reader is freed. No snapshot isolation.
pub struct MmsbReaderView {
    view: ReaderView,
}

impl crate::page::ViewHandle for MmsbReaderView {
    fn bytes(&self) -> (*const u8, usize) {
        (self.view.as_ptr(), self.view.len())
    }
}

/// `MmsbReaderStatus::writer_state`: a writer process is running.
pub const MMSB_WRITER_RUNNING: u32 = 1;
/// `MmsbReaderStatus::writer_state`: the writer is recovering the directory (reads fail with
/// `MMSB_STATUS_CODE_BUSY` until it is open).
pub const MMSB_WRITER_RECOVERING: u32 = 2;
/// `MmsbReaderStatus::writer_state`: the last writer closed the state.
pub const MMSB_WRITER_CLOSED: u32 = 3;
/// `MmsbReaderStatus::writer_state`: the writer process named in the header is gone (crashed).
pub const MMSB_WRITER_CRASHED: u32 = 4;

/// What a reader sees of the writer, filled by `mmsb_reader_status`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct MmsbReaderStatus {
    /// The last LSN applied to the page files.
    pub lsn: u64,
    /// The last LSN acknowledged to the writer's caller.
    pub durable_lsn: u64,
    /// +1 at each writer open: a change means the writer restarted and recovered.
    pub generation: u64,
    /// The writer's process id (0: none).
    pub writer_pid: u32,
    /// One of `MMSB_WRITER_*`.
    pub writer_state: u32,
}

/// One consistent page read, filled by `mmsb_reader_read`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct MmsbReadInfo {
    /// The page's epoch the bytes belong to.
    pub epoch: u64,
    /// The LSN of the page's last change at that epoch.
    pub lsn: u64,
    /// The page's size in bytes.
    pub size: u64,
}

impl From<ReadInfo> for MmsbReadInfo {
    fn from(i: ReadInfo) -> MmsbReadInfo {
        // Every field named (no `..`): a field added to the original does not compile until it is
        // mirrored here.
        let ReadInfo { epoch, lsn, size } = i;
        MmsbReadInfo { epoch, lsn, size }
    }
}

/// # Safety
/// `r` NULL or a live reader.
unsafe fn reader_ref<'a>(r: *const MmsbReader) -> Result<&'a Reader, FfiError> {
    // SAFETY: forwarded contract.
    Ok(&unsafe { arg_ref(r, "reader") }?.reader)
}

/// Opens a reader of the state directory `dir` (UTF-8, `dir_len` bytes, not NUL-terminated).
/// Takes no lock: works while a writer runs, after it closed, and after it crashed. Fails with
/// `MMSB_STATUS_CODE_UNSUPPORTED` when no writer with `file_backed_pages` ever opened `dir` (no
/// shared header), `MMSB_STATUS_CODE_UNSUPPORTED_VERSION` for another header layout.
///
/// # Safety
/// `dir` valid for `dir_len` bytes; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_open_reader(dir: *const c_char, dir_len: usize, out: *mut *mut MmsbReader) -> MmsbStatus {
    boundary(|| {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let dir = unsafe { arg_str(dir, dir_len, "dir") }?;
        if dir.is_empty() {
            return Err(FfiError::invalid("dir is empty; give the state directory to read"));
        }
        let reader = Arc::new(Reader::open(dir)?);
        let h = crate::new_handle(MmsbReader { reader });
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, h, "out") }
    })
}

/// Frees a reader (views of it stay valid). NULL is accepted.
///
/// # Safety
/// `r` NULL or a reader not yet freed, with no call on it running.
#[no_mangle]
pub unsafe extern "C" fn mmsb_reader_free(r: *mut MmsbReader) {
    // SAFETY: forwarded contract; unknown and already freed pointers are ignored.
    unsafe { crate::free_handle(r, "reader") }
}

/// The writer's LSNs, generation, pid and state.
///
/// # Safety
/// `r` a live reader; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_reader_status(r: *const MmsbReader, out: *mut MmsbReaderStatus) -> MmsbStatus {
    boundary(|| {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let r = unsafe { reader_ref(r) }?;
        let (writer_pid, writer_state) = match r.writer() {
            WriterStatus::Running(p) => (p, MMSB_WRITER_RUNNING),
            WriterStatus::Recovering(p) => (p, MMSB_WRITER_RECOVERING),
            WriterStatus::Closed => (0, MMSB_WRITER_CLOSED),
            WriterStatus::Crashed(p) => (p, MMSB_WRITER_CRASHED),
        };
        let s = MmsbReaderStatus {
            lsn: r.lsn(),
            durable_lsn: r.durable_lsn(),
            generation: r.generation(),
            writer_pid,
            writer_state,
        };
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, s, "out") }
    })
}

/// Blocks until the writer's LSN reaches `lsn`, `timeout_ms` passes (`UINT64_MAX`: no limit),
/// or no writer runs that could reach it (closed or crashed); writes the LSN then to
/// `*out_lsn` (compare it with `lsn`: a timeout is not an error). Sleeps on a futex; the writer
/// pays a wake-up only while someone waits.
///
/// # Safety
/// `r` a live reader; `out_lsn` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_reader_wait(
    r: *const MmsbReader,
    lsn: u64,
    timeout_ms: u64,
    out_lsn: *mut u64,
) -> MmsbStatus {
    boundary(|| {
        check_out(out_lsn, "out_lsn")?;
        // SAFETY: forwarded contract.
        let r = unsafe { reader_ref(r) }?;
        let timeout = (timeout_ms != u64::MAX).then(|| Duration::from_millis(timeout_ms));
        let now = r.wait_for(lsn, timeout);
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_lsn, now, "out_lsn") }
    })
}

/// Starts `mmsb_reader_wait(r, lsn, timeout_ms, …)` on a thread of its own and returns at once
/// with its handle in `*out`; when the wait returns, its LSN is stored (see
/// `mmsb_reader_wait_poll`) and then `f(arg)` is called once from that thread (`f` may be
/// libuv's `uv_async_send`, so an event loop's async handle can be registered directly; NULL:
/// no call, poll instead). `f` must return quickly, must not unwind and must not call into
/// MMSB. The reader may be freed meanwhile (the wait keeps what it needs).
///
/// # Safety
/// `r` a live reader; `out` writable; `f` NULL or callable with `arg` from any thread until
/// `mmsb_reader_wait_free` returns.
#[no_mangle]
pub unsafe extern "C" fn mmsb_reader_wait_async(
    r: *const MmsbReader,
    lsn: u64,
    timeout_ms: u64,
    f: crate::graph::MmsbNotifyFn,
    arg: *mut c_void,
    out: *mut *mut MmsbReaderWait,
) -> MmsbStatus {
    boundary(|| {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let reader = unsafe { arg_ref(r, "reader") }?.reader.clone();
        let timeout = (timeout_ms != u64::MAX).then(|| Duration::from_millis(timeout_ms));
        let result = Arc::new((AtomicBool::new(false), AtomicU64::new(0)));
        let cancel = Arc::new(AtomicBool::new(false));
        let (res, stop, rd, arg) = (result.clone(), cancel.clone(), reader.clone(), NotifyArg(arg));
        let thread = std::thread::Builder::new()
            .name("mmsb-reader-wait".into())
            .spawn(move || {
                let now = rd.wait_for_or_cancel(lsn, timeout, &stop);
                res.1.store(now, Ordering::Release);
                res.0.store(true, Ordering::Release);
                if let Some(f) = f {
                    // SAFETY: the registrant guarantees that `f` is callable with `arg` from any
                    // thread until `mmsb_reader_wait_free` returns, which joins this thread.
                    unsafe { f(arg.get()) };
                }
            })
            .map_err(|e| FfiError::with_code(mmsb::types::error::ErrorCode::Io, format!("start a wait thread: {e}")))?;
        let h = crate::new_handle(MmsbReaderWait { result, cancel, reader, thread: Some(thread) });
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, h, "out") }
    })
}

/// Whether the background wait finished (`*out_done` 1) and, if so, the LSN it returned
/// (`*out_lsn`; compare it with the LSN waited for).
///
/// # Safety
/// `w` a live wait; `out_done`, `out_lsn` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_reader_wait_poll(
    w: *const MmsbReaderWait,
    out_done: *mut u8,
    out_lsn: *mut u64,
) -> MmsbStatus {
    boundary(|| {
        check_out(out_done, "out_done")?;
        check_out(out_lsn, "out_lsn")?;
        // SAFETY: forwarded contract.
        let w = unsafe { arg_ref(w, "wait") }?;
        let done = w.result.0.load(Ordering::Acquire);
        // SAFETY: both checked non-NULL above.
        unsafe {
            write_out(out_done, u8::from(done), "out_done")?;
            write_out(out_lsn, w.result.1.load(Ordering::Acquire), "out_lsn")
        }
    })
}

/// Cancels the background wait if it still runs, waits for its thread to end (so `f` is not
/// running and will not be called afterwards) and frees it. NULL is accepted.
///
/// # Safety
/// `w` NULL or a wait not yet freed.
#[no_mangle]
pub unsafe extern "C" fn mmsb_reader_wait_free(w: *mut MmsbReaderWait) {
    // Dropping the handle cancels and joins (see `Drop for MmsbReaderWait`).
    // SAFETY: forwarded contract; unknown and already freed pointers are ignored.
    unsafe { crate::free_handle(w, "reader wait") }
}

/// The size of page `page` in bytes (`MMSB_STATUS_CODE_UNKNOWN_PAGE` if the reader cannot see it).
///
/// # Safety
/// `r` a live reader; `out_size` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_reader_page_size(r: *const MmsbReader, page: u64, out_size: *mut u64) -> MmsbStatus {
    boundary(|| {
        check_out(out_size, "out_size")?;
        // SAFETY: forwarded contract.
        let size = unsafe { reader_ref(r) }?.page_size(PageId(page))?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_size, size, "out_size") }
    })
}

/// Copies a consistent snapshot of page `page` into `buf` (`len` must be the page's size,
/// else `MMSB_STATUS_CODE_LENGTH_MISMATCH`): the bytes of one moment of the writer, never torn;
/// its epoch, LSN and size go to `*out_info` (NULL: not wanted).
///
/// # Safety
/// `r` a live reader; `buf` valid for `len` bytes of writes; `out_info` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_reader_read(
    r: *const MmsbReader,
    page: u64,
    buf: *mut u8,
    len: usize,
    out_info: *mut MmsbReadInfo,
) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let r = unsafe { reader_ref(r) }?;
        if buf.is_null() && len > 0 {
            return Err(FfiError::null("buf"));
        }
        let out: &mut [u8] = if len == 0 {
            &mut []
        } else {
            // SAFETY: non-NULL and valid for `len` bytes per contract; no Rust reference aliases it.
            unsafe { std::slice::from_raw_parts_mut(buf, len) }
        };
        let info = r.read_into(PageId(page), out)?;
        if !out_info.is_null() {
            // SAFETY: non-NULL, writable per contract.
            unsafe { out_info.write(info.into()) };
        }
        Ok(())
    })
}

/// Writes the ids of the pages the reader sees (ascending) into `out` of `cap` entries; the
/// count goes to `*out_count`. `MMSB_STATUS_CODE_BUFFER_TOO_SMALL` (count still written) when
/// `cap` is short.
///
/// # Safety
/// `r` a live reader; `out` NULL or valid for `cap` u64; `out_count` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_reader_page_list(
    r: *const MmsbReader,
    out: *mut u64,
    cap: usize,
    out_count: *mut usize,
) -> MmsbStatus {
    // SAFETY: forwarded contract (the reader, `out` and `out_count`).
    boundary(|| unsafe { crate::write_page_ids(out, cap, out_count, || Ok(reader_ref(r)?.page_ids()?)) })
}

/// Opens a zero-copy, read-only view of page `page`'s mapped bytes (no snapshot isolation:
/// the writer may change them; use `mmsb_reader_read` for a snapshot).
///
/// # Safety
/// `r` a live reader; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_reader_view(
    r: *const MmsbReader,
    page: u64,
    out: *mut *mut MmsbReaderView,
) -> MmsbStatus {
    let open = || {
        // SAFETY: forwarded contract.
        let view = unsafe { reader_ref(r) }?.view(PageId(page))?;
        Ok(MmsbReaderView { view })
    };
    // SAFETY: forwarded contract (`out` NULL or writable).
    unsafe { crate::page::open_view(out, open) }
}

/// The address and length of a reader view's bytes (read-only); valid until
/// `mmsb_reader_view_free`.
///
/// # Safety
/// `view` a live reader view; `out_ptr`, `out_len` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_reader_view_bytes(
    view: *const MmsbReaderView,
    out_ptr: *mut *const u8,
    out_len: *mut usize,
) -> MmsbStatus {
    // SAFETY: forwarded contract.
    unsafe { crate::page::view_bytes(view, out_ptr, out_len) }
}

/// Frees a reader view. NULL is accepted.
///
/// # Safety
/// `view` NULL or a reader view not yet freed.
#[no_mangle]
pub unsafe extern "C" fn mmsb_reader_view_free(view: *mut MmsbReaderView) {
    // SAFETY: forwarded contract; unknown and already freed pointers are ignored.
    unsafe { crate::free_handle(view, "reader view") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmsb::types::error::ErrorCode;
    use mmsb::{Config, Location, MMSBState, PageMeta};

    #[test]
    fn a_reader_through_the_c_abi() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().to_str().unwrap();
        let mut r: *mut MmsbReader = std::ptr::null_mut();
        // SAFETY: every call below gets valid pointers and lengths and live handles.
        unsafe {
            assert_eq!(mmsb_open_reader(path.as_ptr().cast(), path.len(), &mut r), ErrorCode::Unsupported as u32);
            assert!(r.is_null());
            assert_eq!(mmsb_open_reader(path.as_ptr().cast(), 0, &mut r), ErrorCode::InvalidArgument as u32);
            let s =
                MMSBState::open(Config { dir: Some(d.path().into()), file_backed_pages: true, ..Config::default() })
                    .unwrap();
            let a = s.create_page(100, Location::Cpu, PageMeta::default()).unwrap();
            s.update_page_at(a, 0, b"abc", None).unwrap();
            assert_eq!(mmsb_open_reader(path.as_ptr().cast(), path.len(), &mut r), 0);
            let mut st = MmsbReaderStatus::default();
            assert_eq!(mmsb_reader_status(r, &mut st), 0);
            assert_eq!((st.lsn, st.writer_state, st.writer_pid), (2, MMSB_WRITER_RUNNING, std::process::id()));
            let mut lsn = 0;
            assert_eq!(mmsb_reader_wait(r, 5, 10, &mut lsn), 0);
            assert_eq!(lsn, 2, "a timeout returns the LSN there is");
            let mut buf = [0u8; 100];
            let mut info = MmsbReadInfo::default();
            assert_eq!(mmsb_reader_read(r, a.0, buf.as_mut_ptr(), 100, &mut info), 0);
            assert_eq!((&buf[..3], info.epoch, info.size), (&b"abc"[..], 1, 100));
            assert_eq!(mmsb_reader_read(r, a.0, buf.as_mut_ptr(), 99, &mut info), ErrorCode::LengthMismatch as u32);
            assert_eq!(mmsb_reader_read(r, 77, buf.as_mut_ptr(), 100, &mut info), ErrorCode::UnknownPage as u32);
            assert_eq!(mmsb_reader_read(r, a.0, std::ptr::null_mut(), 100, &mut info), ErrorCode::NullPointer as u32);
            let mut ids = [0u64; 1];
            let mut n = 0;
            assert_eq!(mmsb_reader_page_list(r, ids.as_mut_ptr(), 1, &mut n), 0);
            assert_eq!((n, ids[0]), (1, a.0));
            let mut v: *mut MmsbReaderView = std::ptr::null_mut();
            assert_eq!(mmsb_reader_view(r, a.0, &mut v), 0);
            let (mut p, mut len) = (std::ptr::null(), 0usize);
            assert_eq!(mmsb_reader_view_bytes(v, &mut p, &mut len), 0);
            assert_eq!((std::slice::from_raw_parts(p, 3), len), (&b"abc"[..], 100));
            // A background wait: polled, woken by a write, cancelled by free.
            let mut w: *mut MmsbReaderWait = std::ptr::null_mut();
            assert_eq!(mmsb_reader_wait_async(r, 3, u64::MAX, None, std::ptr::null_mut(), &mut w), 0);
            let (mut done, mut got) = (0u8, 0u64);
            assert_eq!(mmsb_reader_wait_poll(w, &mut done, &mut got), 0);
            assert_eq!(done, 0);
            s.update_page_at(a, 5, b"x", None).unwrap();
            while done == 0 {
                std::thread::yield_now();
                assert_eq!(mmsb_reader_wait_poll(w, &mut done, &mut got), 0);
            }
            assert_eq!(got, 3);
            mmsb_reader_wait_free(w);
            assert_eq!(mmsb_reader_wait_async(r, 100, u64::MAX, None, std::ptr::null_mut(), &mut w), 0);
            let t = std::time::Instant::now();
            mmsb_reader_wait_free(w);
            assert!(t.elapsed() < std::time::Duration::from_millis(150), "free cancels the wait at once");
            mmsb_reader_free(r);
            // The view outlives its reader.
            assert_eq!(std::slice::from_raw_parts(p, 3), b"abc");
            mmsb_reader_view_free(v);
            mmsb_reader_view_free(std::ptr::null_mut());
            mmsb_reader_free(std::ptr::null_mut());
            assert_eq!(mmsb_reader_status(std::ptr::null(), &mut st), ErrorCode::NullPointer as u32);
        }
    }
}
