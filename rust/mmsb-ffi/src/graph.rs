//! C ABI: dependency edges, command lists, propagation and event subscriptions.
//!
//! Propagation runs on the calling thread, and so do C transform callbacks; they run while the
//! state's lock is held and must not call into the same state (that would deadlock) nor unwind.

use std::ffi::c_void;
use std::time::Duration;

use crate::state::{state_ref, MmsbState};
use crate::{arg_ref, arg_slice, boundary, check_out, write_out, write_page_ids, FfiError, FfiResult, MmsbStatus};
use mmsb::graph::command::{Command, CommandList, Lane, SemiOp};
use mmsb::graph::events::{Event, NotifyFn, OverflowPolicy, Subscription};
use mmsb::graph::propagation::RoundStats;
use mmsb::graph::shadow_graph::{EdgeId, EdgeKind};
use mmsb::types::page::PageId;

/// Edge kind: data dependency.
pub const MMSB_EDGE_DATA: u32 = 0;
/// Edge kind: control dependency.
pub const MMSB_EDGE_CONTROL: u32 = 1;
/// Edge kind: GPU synchronisation.
pub const MMSB_EDGE_GPU_SYNC: u32 = 2;
/// Edge kind: compiler (instrumentation) dependency.
pub const MMSB_EDGE_COMPILER: u32 = 3;

/// Lane-wise op: wrapping add (IEEE add for float lanes).
pub const MMSB_OP_ADD: u32 = 0;
/// Lane-wise op: bitwise xor.
pub const MMSB_OP_XOR: u32 = 1;
/// Lane-wise op: bitwise or.
pub const MMSB_OP_OR: u32 = 2;
/// Lane-wise op: bitwise and.
pub const MMSB_OP_AND: u32 = 3;
/// Lane-wise op: minimum (floats: NaN ignored, -0 < +0).
pub const MMSB_OP_MIN: u32 = 4;
/// Lane-wise op: maximum (floats: NaN ignored, -0 < +0).
pub const MMSB_OP_MAX: u32 = 5;

/// Lane type: u8.
pub const MMSB_LANE_U8: u32 = 0;
/// Lane type: little-endian u32.
pub const MMSB_LANE_U32: u32 = 1;
/// Lane type: little-endian f32.
pub const MMSB_LANE_F32: u32 = 2;
/// Lane type: little-endian f64.
pub const MMSB_LANE_F64: u32 = 3;

/// Overflow policy: the emitter waits up to the timeout, then drops the event (counted, lagged).
pub const MMSB_POLICY_BLOCK: u32 = 0;
/// Overflow policy: discard the oldest queued event (counted).
pub const MMSB_POLICY_DROP_OLDEST: u32 = 1;
/// Overflow policy ("error"): drop the new event, count it, mark the subscription lagged.
pub const MMSB_POLICY_DROP_NEWEST: u32 = 2;

/// Event kind bit: a delta was applied (`page`, `a` = LSN, `b` = epoch after it).
pub const MMSB_EVENT_DELTA_APPLIED: u32 = 1;
/// Event kind bit: a propagation round ended (`a` = round, `b` = recomputed, `c` = cut off).
pub const MMSB_EVENT_PROPAGATION_DONE: u32 = 2;
/// Event kind bit: a checkpoint was written (`a` = LSN).
pub const MMSB_EVENT_CHECKPOINT: u32 = 4;
/// Event kind bit: a device sync (`page`, `code` = 0 host to device, 1 device to host).
pub const MMSB_EVENT_DEVICE_SYNC: u32 = 8;
/// Event kind bit: an instrumentation hook (`page`, `code` = hook kind).
pub const MMSB_EVENT_INSTRUMENTATION: u32 = 16;
/// Event kind bit: a budget was crossed (`code` = metric, `a` = value, `b` = limit).
pub const MMSB_EVENT_BUDGET: u32 = 32;
/// Every event kind.
pub const MMSB_EVENT_ALL: u32 = 63;

/// A C transform: read `src_len` bytes at `src` (the source page), update `dst_len` bytes at
/// `dst` (the dependent page's new bytes). Return 0 on success; anything else fails the round
/// for that page (nothing is applied to it) with `MMSB_STATUS_CALLBACK`.
pub type MmsbTransformFn = Option<
    unsafe extern "C" fn(user_data: *mut c_void, src: *const u8, src_len: usize, dst: *mut u8, dst_len: usize) -> i32,
>;

/// Opaque list of transform commands. Create with `mmsb_command_list_new`, free with
/// `mmsb_command_list_free`; `mmsb_add_dependency` copies it, so it may be freed or reused.
pub struct MmsbCommandList {
    list: CommandList,
}

/// A subscription's wake-up, called as `f(arg)` (see `mmsb_subscription_set_notify`). Its
/// return value is ignored: the signature is libuv's `uv_async_send`, so that an event loop's
/// async handle can be registered directly.
pub type MmsbNotifyFn = Option<unsafe extern "C" fn(arg: *mut c_void) -> i32>;

/// Opaque event subscription. Stays valid after its state is closed or freed (it then reports
/// closed and yields no new events). Free with `mmsb_subscription_free`.
pub struct MmsbSubscription {
    sub: Subscription,
}

/// What one propagation round did.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct MmsbRoundStats {
    pub round: u64,
    /// Pages whose transforms ran.
    pub recomputed: u64,
    /// Recomputed pages whose bytes did not change (propagation stopped there).
    pub cutoff: u64,
    pub deltas_routed: u64,
}

impl From<RoundStats> for MmsbRoundStats {
    fn from(s: RoundStats) -> MmsbRoundStats {
        // Every field named (no `..`), as for the other mirrors.
        let RoundStats { round, recomputed, cutoff, deltas_routed } = s;
        MmsbRoundStats { round, recomputed, cutoff, deltas_routed }
    }
}

/// One event. `kind` is one `MMSB_EVENT_*` bit; the other fields depend on it (see those
/// constants); unused fields are 0.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MmsbEvent {
    pub kind: u32,
    pub code: u32,
    pub page: u64,
    pub a: u64,
    pub b: u64,
    pub c: u64,
}

impl From<Event> for MmsbEvent {
    fn from(e: Event) -> MmsbEvent {
        let kind = e.kind() as u32;
        let z = MmsbEvent { kind, ..MmsbEvent::default() };
        match e {
            Event::DeltaApplied { lsn, page, epoch } => MmsbEvent { page: page.0, a: lsn, b: epoch, ..z },
            Event::PropagationDone { round, recomputed, cutoff } => {
                MmsbEvent { a: round, b: recomputed, c: cutoff, ..z }
            }
            Event::Checkpoint { lsn } => MmsbEvent { a: lsn, ..z },
            Event::DeviceSync { page, direction } => MmsbEvent { page: page.0, code: direction as u32, ..z },
            Event::Instrumentation { kind: k, page } => MmsbEvent { page: page.0, code: k, ..z },
            Event::Budget { metric, value, limit } => MmsbEvent { code: metric, a: value, b: limit, ..z },
        }
    }
}

/// Borrows a command list mutably for a push.
///
/// # Safety
/// `list` NULL or a live handle not used concurrently.
unsafe fn list_mut<'a>(list: *mut MmsbCommandList) -> FfiResult<&'a mut CommandList> {
    // SAFETY: forwarded contract.
    Ok(&mut unsafe { list.as_mut() }.ok_or_else(|| FfiError::null("list"))?.list)
}

/// Creates an empty command list.
///
/// # Safety
/// `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_command_list_new(out: *mut *mut MmsbCommandList) -> MmsbStatus {
    boundary(|| {
        check_out(out, "out")?;
        let h = crate::new_handle(MmsbCommandList { list: CommandList::new() });
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, h, "out") }
    })
}

/// Frees a command list. NULL is accepted.
///
/// # Safety
/// `list` NULL or a handle from `mmsb_command_list_new` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn mmsb_command_list_free(list: *mut MmsbCommandList) {
    // SAFETY: forwarded contract; unknown and already freed pointers are ignored.
    unsafe { crate::free_handle(list, "command list") }
}

/// Appends "copy `len` bytes from source offset `src_off` to destination offset `dst_off`".
/// Ranges are checked against the page sizes by `mmsb_add_dependency`.
///
/// # Safety
/// `list` a live handle.
#[no_mangle]
pub unsafe extern "C" fn mmsb_command_list_push_copy(
    list: *mut MmsbCommandList,
    src_off: u64,
    dst_off: u64,
    len: u64,
) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        unsafe { list_mut(list) }?.push(Command::Copy { src_off, dst_off, len });
        Ok(())
    })
}

/// Appends "fill `len` destination bytes at `dst_off` with `value`".
///
/// # Safety
/// `list` a live handle.
#[no_mangle]
pub unsafe extern "C" fn mmsb_command_list_push_fill(
    list: *mut MmsbCommandList,
    dst_off: u64,
    len: u64,
    value: u8,
) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        unsafe { list_mut(list) }?.push(Command::Fill { dst_off, len, value });
        Ok(())
    })
}

/// Appends a lane-wise op `dst = dst op src` over `len` bytes (`op`: `MMSB_OP_*`, `lane`:
/// `MMSB_LANE_*`; `len` must be a multiple of the lane size, lanes are little-endian).
///
/// # Safety
/// `list` a live handle.
#[no_mangle]
pub unsafe extern "C" fn mmsb_command_list_push_op(
    list: *mut MmsbCommandList,
    op: u32,
    lane: u32,
    src_off: u64,
    dst_off: u64,
    len: u64,
) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let l = unsafe { list_mut(list) }?;
        let op = SemiOp::from_u32(op).ok_or_else(|| FfiError::invalid(format!("unknown op {op}")))?;
        let lane = Lane::from_u32(lane).ok_or_else(|| FfiError::invalid(format!("unknown lane type {lane}")))?;
        l.push(Command::Op { op, lane, src_off, dst_off, len });
        Ok(())
    })
}

/// Appends a C callback, called as `f(user_data, src, src_len, dst, dst_len)` over the whole
/// source page and the dependent page's new bytes. Callback edges are not restorable from the
/// log or a checkpoint (they are dropped there and must be added again). The callback runs
/// under the state's lock on the thread that called `mmsb_propagate`: any call it makes on the
/// same state fails with `MMSB_STATUS_CODE_REENTRANT`, and the round then fails with it too.
///
/// # Safety
/// `list` a live handle. `f` must be callable with `user_data` from whichever thread calls
/// `mmsb_propagate`, for as long as any edge built from this list exists; it must not unwind.
#[no_mangle]
pub unsafe extern "C" fn mmsb_command_list_push_callback(
    list: *mut MmsbCommandList,
    f: MmsbTransformFn,
    user_data: *mut c_void,
) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let l = unsafe { list_mut(list) }?;
        let f = f.ok_or_else(|| FfiError::null("f"))?;
        // SAFETY: the caller's contract above is Command::c_callback's.
        l.push(unsafe { Command::c_callback(f, user_data) });
        Ok(())
    })
}

/// Adds the edge `from -> to` of `kind` (`MMSB_EDGE_*`) with a copy of `commands` (NULL for
/// none) and writes its id to `*out_edge`. Fails with `MMSB_STATUS_CYCLE` if it would close a
/// cycle (the message names it), `MMSB_STATUS_CODE_INVALID_ARGUMENT` for an invalid command or an
/// existing edge between the pair, `MMSB_STATUS_UNKNOWN_PAGE` for a missing page.
///
/// # Safety
/// `state` a live handle; `commands` NULL or a live list; `out_edge` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_add_dependency(
    state: *const MmsbState,
    from: u64,
    to: u64,
    kind: u32,
    commands: *const MmsbCommandList,
    out_edge: *mut u64,
) -> MmsbStatus {
    boundary(|| {
        check_out(out_edge, "out_edge")?;
        // SAFETY: forwarded contract.
        let s = unsafe { state_ref(state) }?;
        let kind = EdgeKind::from_u32(kind).ok_or_else(|| FfiError::invalid(format!("unknown edge kind {kind}")))?;
        let list = if commands.is_null() {
            CommandList::new()
        } else {
            // SAFETY: non-NULL, live per contract.
            unsafe { arg_ref(commands, "commands") }?.list.clone()
        };
        let id = s.add_dependency(PageId(from), PageId(to), kind, list)?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_edge, id.0, "out_edge") }
    })
}

/// Removes an edge by id (`MMSB_STATUS_UNKNOWN_EDGE` if there is none).
///
/// # Safety
/// `state` a live handle.
#[no_mangle]
pub unsafe extern "C" fn mmsb_remove_dependency(state: *const MmsbState, edge: u64) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        unsafe { state_ref(state) }?.remove_dependency(EdgeId(edge))?;
        Ok(())
    })
}

/// Runs one propagation round from the `n` changed pages at `pages`; fills `*out_stats` when
/// it is not NULL. On `MMSB_STATUS_CALLBACK` (a callback returned non-zero) or
/// `MMSB_STATUS_CODE_REENTRANT` (a callback called into this state), pages recomputed before
/// the failing one keep their new bytes; the failing page is unchanged.
///
/// # Safety
/// `state` a live handle; `pages` valid for `n` u64; `out_stats` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_propagate(
    state: *const MmsbState,
    pages: *const u64,
    n: usize,
    out_stats: *mut MmsbRoundStats,
) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { state_ref(state) }?;
        // SAFETY: forwarded contract.
        let ids: Vec<PageId> = unsafe { arg_slice(pages, n, "pages") }?.iter().map(|&p| PageId(p)).collect();
        let stats = s.propagate(&ids)?;
        if !out_stats.is_null() {
            // SAFETY: non-NULL and writable per contract.
            unsafe { write_out(out_stats, stats.into(), "out_stats") }?;
        }
        Ok(())
    })
}

/// Writes the pages with an edge from `page` (ascending) to `out` (room for `cap`) and their
/// number to `*out_count`. If `cap` is too small, only the count is written and the call fails
/// with `MMSB_STATUS_BUFFER_TOO_SMALL`.
///
/// # Safety
/// `state` a live handle; `out` NULL or valid for `cap` u64; `out_count` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_dependents(
    state: *const MmsbState,
    page: u64,
    out: *mut u64,
    cap: usize,
    out_count: *mut usize,
) -> MmsbStatus {
    // SAFETY: forwarded contract (the handle, `out` and `out_count`).
    boundary(|| unsafe { write_page_ids(out, cap, out_count, || Ok(state_ref(state)?.dependents(PageId(page))?)) })
}

/// Writes every page of the graph in propagation order (a topological order: by height, then
/// id) to `out`; as `mmsb_dependents` for `cap` and `*out_count`.
///
/// # Safety
/// `state` a live handle; `out` NULL or valid for `cap` u64; `out_count` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_topo_order(
    state: *const MmsbState,
    out: *mut u64,
    cap: usize,
    out_count: *mut usize,
) -> MmsbStatus {
    // SAFETY: forwarded contract (the handle, `out` and `out_count`).
    boundary(|| unsafe { write_page_ids(out, cap, out_count, || Ok(state_ref(state)?.topo_order()?)) })
}

/// Subscribes to the event kinds in `mask` (`MMSB_EVENT_*` bits) with room for `capacity`
/// queued events (1..=1048576) and an overflow `policy` (`MMSB_POLICY_*`;
/// `block_timeout_ns` is used by `MMSB_POLICY_BLOCK` only). Writes the handle to `*out_sub`.
///
/// # Safety
/// `state` a live handle; `out_sub` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_subscribe(
    state: *const MmsbState,
    capacity: usize,
    policy: u32,
    block_timeout_ns: u64,
    mask: u32,
    out_sub: *mut *mut MmsbSubscription,
) -> MmsbStatus {
    boundary(|| {
        check_out(out_sub, "out_sub")?;
        // SAFETY: forwarded contract.
        let s = unsafe { state_ref(state) }?;
        let policy = OverflowPolicy::from_u32(policy, Duration::from_nanos(block_timeout_ns))
            .ok_or_else(|| FfiError::invalid(format!("unknown overflow policy {policy}")))?;
        let sub = s.subscribe(capacity, policy, mask)?;
        let h = crate::new_handle(MmsbSubscription { sub });
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_sub, h, "out_sub") }
    })
}

/// Moves up to `cap` queued events into `out_events` without blocking and writes how many to
/// `*out_count` (0 when none are queued, also after the state closed).
///
/// # Safety
/// `sub` a live handle; `out_events` NULL (only with `cap == 0`) or valid for `cap` events;
/// `out_count` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_poll_events(
    sub: *const MmsbSubscription,
    out_events: *mut MmsbEvent,
    cap: usize,
    out_count: *mut usize,
) -> MmsbStatus {
    boundary(|| {
        check_out(out_count, "out_count")?;
        // SAFETY: forwarded contract.
        let s = unsafe { arg_ref(sub, "sub") }?;
        if cap > 0 && out_events.is_null() {
            return Err(FfiError::null("out_events"));
        }
        let mut n = 0;
        while n < cap {
            let Some(ev) = s.sub.try_recv() else { break };
            // SAFETY: n < cap and out_events is valid for cap writes per contract.
            unsafe { out_events.add(n).write(ev.into()) };
            n += 1;
        }
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_count, n, "out_count") }
    })
}

/// Writes the number of events the subscription's overflow policy dropped so far.
///
/// # Safety
/// `sub` a live handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_subscription_dropped(sub: *const MmsbSubscription, out: *mut u64) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { arg_ref(sub, "sub") }?;
        // SAFETY: forwarded contract.
        unsafe { write_out(out, s.sub.dropped(), "out") }
    })
}

/// Writes 1 if the subscription lost events (policy block or drop-newest), else 0.
///
/// # Safety
/// `sub` a live handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_subscription_lagged(sub: *const MmsbSubscription, out: *mut u8) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { arg_ref(sub, "sub") }?;
        // SAFETY: forwarded contract.
        unsafe { write_out(out, u8::from(s.sub.is_lagged()), "out") }
    })
}

/// Writes 1 once the subscription's state was closed or freed (no more events will come).
///
/// # Safety
/// `sub` a live handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mmsb_subscription_closed(sub: *const MmsbSubscription, out: *mut u8) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { arg_ref(sub, "sub") }?;
        // SAFETY: forwarded contract.
        unsafe { write_out(out, u8::from(s.sub.is_closed()), "out") }
    })
}

/// The registrant's opaque argument, moved into the wake-up closure.
struct NotifyArg(*mut c_void);

// SAFETY: the pointer is only handed back to the registrant's function, which the contract of
// mmsb_subscription_set_notify requires to be callable with it from any thread.
unsafe impl Send for NotifyArg {}
// SAFETY: as above; the pointer is never dereferenced here.
unsafe impl Sync for NotifyArg {}

impl NotifyArg {
    // A method, so that closures capture the whole wrapper (which is Send), not its field.
    fn get(&self) -> *mut c_void {
        self.0
    }
}

/// Registers a wake-up for the subscription: `f(arg)` is called on the emitting thread after
/// events are queued for it (once per emit, not per event) and once when its state closes, so a
/// consumer can sleep on its own primitive (such as a libuv async handle, with `f` =
/// `uv_async_send`) instead of polling. If events are already queued, or the state already
/// closed, `f` is called once before this returns. `f` may run while the state's write lock is
/// held and never under the subscription hub's lock: it must return quickly, must not unwind and
/// must not call into MMSB. Replaces an earlier wake-up; `f` NULL removes it. Once this returns
/// (with NULL, or with a new `f`), and once `mmsb_subscription_free` returns, no call of the
/// previous wake-up is in flight, so `arg` may be freed.
///
/// # Safety
/// `sub` a live handle. `f` NULL or callable with `arg` from any thread until it is replaced,
/// removed or the subscription freed.
#[no_mangle]
pub unsafe extern "C" fn mmsb_subscription_set_notify(
    sub: *const MmsbSubscription,
    f: MmsbNotifyFn,
    arg: *mut c_void,
) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { arg_ref(sub, "sub") }?;
        let notify = f.map(|f| {
            let arg = NotifyArg(arg);
            Box::new(move || {
                // SAFETY: the registrant guarantees that `f` is callable with `arg` from any
                // thread until the wake-up is removed, which set_notify(None) and the
                // subscription's drop wait for.
                unsafe { f(arg.get()) };
            }) as NotifyFn
        });
        s.sub.set_notify(notify);
        Ok(())
    })
}

/// Unsubscribes and frees the handle. NULL is accepted. Works before or after the state is
/// freed.
///
/// # Safety
/// `sub` NULL or a handle from `mmsb_subscribe` not yet freed, not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn mmsb_subscription_free(sub: *mut MmsbSubscription) {
    // SAFETY: forwarded contract; free_handle ignores stale pointers and catches panics.
    unsafe { crate::free_handle(sub, "subscription") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::mmsb_page_create;
    use crate::state::{mmsb_state_free, mmsb_state_open};
    use mmsb::types::error::ErrorCode;
    use std::ptr::{null, null_mut};

    /// dst[0] = src[0] + *(u8*)user_data; fails with -5 when src[0] == 0xFF.
    unsafe extern "C" fn add_k(ud: *mut c_void, src: *const u8, src_len: usize, dst: *mut u8, dst_len: usize) -> i32 {
        assert!(src_len >= 1 && dst_len >= 1);
        // SAFETY: the library passes live slices of the given lengths; ud points to a u8 below.
        unsafe {
            if *src == 0xFF {
                return -5;
            }
            *dst = (*src).wrapping_add(*ud.cast::<u8>());
        }
        0
    }

    #[test]
    fn constants_match_the_rust_enums() {
        use mmsb::graph::events::EventKind;
        let kinds = [EdgeKind::Data, EdgeKind::Control, EdgeKind::GpuSync, EdgeKind::Compiler];
        assert_eq!(
            kinds.map(|k| k as u32),
            [MMSB_EDGE_DATA, MMSB_EDGE_CONTROL, MMSB_EDGE_GPU_SYNC, MMSB_EDGE_COMPILER]
        );
        assert_eq!(
            SemiOp::ALL.map(|o| o as u32),
            [MMSB_OP_ADD, MMSB_OP_XOR, MMSB_OP_OR, MMSB_OP_AND, MMSB_OP_MIN, MMSB_OP_MAX]
        );
        assert_eq!(Lane::ALL.map(|l| l as u32), [MMSB_LANE_U8, MMSB_LANE_U32, MMSB_LANE_F32, MMSB_LANE_F64]);
        let ev = [
            EventKind::DeltaApplied,
            EventKind::PropagationDone,
            EventKind::Checkpoint,
            EventKind::DeviceSync,
            EventKind::Instrumentation,
            EventKind::Budget,
        ];
        assert_eq!(
            ev.map(|k| k as u32),
            [
                MMSB_EVENT_DELTA_APPLIED,
                MMSB_EVENT_PROPAGATION_DONE,
                MMSB_EVENT_CHECKPOINT,
                MMSB_EVENT_DEVICE_SYNC,
                MMSB_EVENT_INSTRUMENTATION,
                MMSB_EVENT_BUDGET
            ]
        );
        assert_eq!(MMSB_EVENT_ALL, EventKind::MASK_ALL);
        let d = Duration::ZERO;
        assert_eq!(OverflowPolicy::from_u32(MMSB_POLICY_BLOCK, d), Some(OverflowPolicy::Block { timeout: d }));
        assert_eq!(OverflowPolicy::from_u32(MMSB_POLICY_DROP_OLDEST, d), Some(OverflowPolicy::DropOldest));
        assert_eq!(OverflowPolicy::from_u32(MMSB_POLICY_DROP_NEWEST, d), Some(OverflowPolicy::DropNewest));
    }

    fn ok(st: MmsbStatus) {
        assert_eq!(st, 0, "status {st}: {:?}", crate::status_from_u32(st));
    }

    #[test]
    fn c_abi_end_to_end() {
        // SAFETY: every pointer passed below is live and of the documented type.
        unsafe {
            let mut st: *mut MmsbState = null_mut();
            ok(mmsb_state_open(null(), &mut st));
            let (mut a, mut b, mut c) = (0u64, 0u64, 0u64);
            ok(mmsb_page_create(st, 8, 0, null(), 0, &mut a));
            ok(mmsb_page_create(st, 8, 0, null(), 0, &mut b));
            ok(mmsb_page_create(st, 8, 0, null(), 0, &mut c));

            let mut k: u8 = 10;
            let mut list: *mut MmsbCommandList = null_mut();
            ok(mmsb_command_list_new(&mut list));
            ok(mmsb_command_list_push_callback(list, Some(add_k), (&mut k as *mut u8).cast()));
            ok(mmsb_command_list_push_op(list, MMSB_OP_MAX, MMSB_LANE_U32, 4, 4, 4));
            assert_eq!(mmsb_command_list_push_op(list, 99, MMSB_LANE_U8, 0, 0, 1), ErrorCode::InvalidArgument as u32);
            let mut e1 = 0u64;
            ok(mmsb_add_dependency(st, a, b, MMSB_EDGE_DATA, list, &mut e1));
            mmsb_command_list_free(list);

            let mut copy: *mut MmsbCommandList = null_mut();
            ok(mmsb_command_list_new(&mut copy));
            ok(mmsb_command_list_push_copy(copy, 0, 0, 8));
            let mut e2 = 0u64;
            ok(mmsb_add_dependency(st, b, c, MMSB_EDGE_CONTROL, copy, &mut e2));
            let mut bad = 0u64;
            assert_eq!(mmsb_add_dependency(st, c, a, MMSB_EDGE_DATA, copy, &mut bad), ErrorCode::Cycle as u32);
            ok(mmsb_command_list_push_fill(copy, 4, 8, 1)); // now out of range for 8-byte pages
            assert_eq!(
                mmsb_add_dependency(st, a, c, MMSB_EDGE_DATA, copy, &mut bad),
                ErrorCode::InvalidArgument as u32
            );
            mmsb_command_list_free(copy);
            mmsb_command_list_free(null_mut());

            let mut sub: *mut MmsbSubscription = null_mut();
            ok(mmsb_subscribe(st, 16, MMSB_POLICY_DROP_OLDEST, 0, MMSB_EVENT_ALL, &mut sub));
            assert_eq!(
                mmsb_subscribe(st, 16, 7, 0, MMSB_EVENT_ALL, &mut sub.cast::<MmsbSubscription>()),
                ErrorCode::InvalidArgument as u32
            );

            let s = state_ref(st).ok().unwrap();
            // Page creation and edges take LSNs too (they are logged).
            let base = s.lsn();
            s.update_page(PageId(a), &[5, 0, 0, 0, 9, 0, 0, 0]).unwrap();
            let mut stats = MmsbRoundStats::default();
            ok(mmsb_propagate(st, &a, 1, &mut stats));
            assert_eq!((stats.round, stats.recomputed, stats.cutoff, stats.deltas_routed), (1, 2, 0, 2));
            assert_eq!(s.read_page(PageId(c)).unwrap(), [15, 0, 0, 0, 9, 0, 0, 0]);

            let mut evs = [MmsbEvent::default(); 8];
            let mut n = 0usize;
            ok(mmsb_poll_events(sub, evs.as_mut_ptr(), evs.len(), &mut n));
            assert_eq!(n, 4);
            assert_eq!(
                evs[0],
                MmsbEvent { kind: MMSB_EVENT_DELTA_APPLIED, page: a, a: base + 1, b: 1, ..Default::default() }
            );
            assert_eq!(
                evs[1],
                MmsbEvent { kind: MMSB_EVENT_DELTA_APPLIED, page: b, a: base + 2, b: 1, ..Default::default() }
            );
            assert_eq!(evs[2].page, c);
            assert_eq!(evs[3], MmsbEvent { kind: MMSB_EVENT_PROPAGATION_DONE, a: 1, b: 2, ..Default::default() });

            // A failing callback: status CALLBACK, the page is untouched.
            s.update_page(PageId(a), &[0xFF]).unwrap();
            assert_eq!(mmsb_propagate(st, &a, 1, null_mut()), ErrorCode::Callback as u32);
            assert_eq!(s.read_page(PageId(b)).unwrap(), [15, 0, 0, 0, 9, 0, 0, 0]);

            let mut out = [0u64; 4];
            ok(mmsb_dependents(st, a, out.as_mut_ptr(), 4, &mut n));
            assert_eq!(&out[..n], &[b]);
            ok(mmsb_topo_order(st, out.as_mut_ptr(), 4, &mut n));
            assert_eq!(&out[..n], &[a, b, c]);
            assert_eq!(mmsb_topo_order(st, out.as_mut_ptr(), 2, &mut n), ErrorCode::BufferTooSmall as u32);
            assert_eq!(n, 3);

            assert_eq!(crate::page::mmsb_page_free(st, b), ErrorCode::PageInUse as u32);
            ok(mmsb_remove_dependency(st, e2));
            ok(mmsb_remove_dependency(st, e1));
            assert_eq!(mmsb_remove_dependency(st, e1), ErrorCode::UnknownEdge as u32);
            ok(crate::page::mmsb_page_free(st, b));

            // Free the state first: the subscription stays usable and reports closed.
            mmsb_state_free(st);
            let mut closed = 0u8;
            ok(mmsb_subscription_closed(sub, &mut closed));
            assert_eq!(closed, 1);
            ok(mmsb_poll_events(sub, evs.as_mut_ptr(), evs.len(), &mut n));
            assert_eq!(n, 1, "the last update's DeltaApplied, queued before the state went away");
            ok(mmsb_poll_events(sub, evs.as_mut_ptr(), evs.len(), &mut n));
            assert_eq!(n, 0);
            let mut dropped = 1u64;
            ok(mmsb_subscription_dropped(sub, &mut dropped));
            assert_eq!(dropped, 0);
            let mut lagged = 1u8;
            ok(mmsb_subscription_lagged(sub, &mut lagged));
            assert_eq!(lagged, 0);
            mmsb_subscription_free(sub);
            mmsb_subscription_free(null_mut());
        }
    }

    unsafe extern "C" fn count_notify(arg: *mut c_void) -> i32 {
        // SAFETY: the test registers a pointer to a live AtomicU64.
        unsafe { &*(arg as *const std::sync::atomic::AtomicU64) }.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        0
    }

    #[test]
    fn subscription_notify_fires_from_the_c_abi() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let calls = AtomicU64::new(0);
        let arg = &calls as *const AtomicU64 as *mut c_void;
        // SAFETY: live handles throughout; `calls` outlives the subscription.
        unsafe {
            let mut st: *mut MmsbState = null_mut();
            ok(mmsb_state_open(null(), &mut st));
            let mut page = 0u64;
            ok(mmsb_page_create(st, 8, 0, null(), 0, &mut page));
            let mut sub = null_mut();
            ok(mmsb_subscribe(st, 8, MMSB_POLICY_DROP_OLDEST, 0, MMSB_EVENT_ALL, &mut sub));
            assert_eq!(
                mmsb_subscription_set_notify(null_mut(), Some(count_notify), arg),
                ErrorCode::NullPointer as u32
            );
            ok(mmsb_subscription_set_notify(sub, Some(count_notify), arg));
            assert_eq!(calls.load(Ordering::SeqCst), 0);
            ok(crate::page::mmsb_page_update(st, page, 0, [1u8].as_ptr(), 1, u64::MAX, null_mut()));
            assert_eq!(calls.load(Ordering::SeqCst), 1, "one wake-up per emitted delta");
            // Removed: a further write does not call it.
            ok(mmsb_subscription_set_notify(sub, None, null_mut()));
            ok(crate::page::mmsb_page_update(st, page, 0, [2u8].as_ptr(), 1, u64::MAX, null_mut()));
            assert_eq!(calls.load(Ordering::SeqCst), 1);
            // Registered again with events queued: called at once; and when the state is freed.
            ok(mmsb_subscription_set_notify(sub, Some(count_notify), arg));
            assert_eq!(calls.load(Ordering::SeqCst), 2);
            mmsb_state_free(st);
            assert_eq!(calls.load(Ordering::SeqCst), 3);
            mmsb_subscription_free(sub);
        }
    }
}
