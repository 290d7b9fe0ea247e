"""
    MMSB.LibMMSB

Low-level bindings: one plain `ccall` wrapper per function of the C header
`rust/mmsb-ffi/include/mmsb.h`, with the same name, argument order and meaning.
Nothing here checks status codes or manages handles; the user API in `MMSB`
does that. Arguments are left untyped on purpose: `ccall` converts them with
`Base.cconvert`/`Base.unsafe_convert`, so callers may pass the `MMSB` handle
objects themselves, which keeps them rooted for the duration of the call.

The library is the constant name `libmmsb`; `MMSB.__init__` puts the folder of
the file it picked on `Libdl.DL_LOAD_PATH` (Julia 1.5 rejects a non-constant
library expression in `ccall`).

To wrap a new C function: add it here (same name, same argument order), then
use it from the user-level file of its subsystem.
"""
module LibMMSB

"Library name given to `ccall`; its folder is put on `Libdl.DL_LOAD_PATH` in `MMSB.__init__`."
const libmmsb = Sys.iswindows() ? "mmsb" : "libmmsb"

"The ABI version these bindings were written against (`MMSB_ABI_VERSION`)."
const MMSB_ABI_VERSION = UInt32(1)

"Sentinel for \"no expected epoch\" (no compare-and-set)."
const MMSB_NO_EPOCH = typemax(UInt64)

"Longest page name `mmsb_page_create` accepts, in bytes of UTF-8."
const MMSB_MAX_PAGE_NAME_BYTES = 4096

"Status code returned by every C function (0 = OK)."
const MmsbStatus = UInt32

# Status codes (enum MmsbStatusCode). Numbers are never reused.
const MMSB_STATUS_CODE_OK = MmsbStatus(0)
const MMSB_STATUS_CODE_INVALID_ARGUMENT = MmsbStatus(1)
const MMSB_STATUS_CODE_NULL_POINTER = MmsbStatus(2)
const MMSB_STATUS_CODE_UNKNOWN_PAGE = MmsbStatus(3)
const MMSB_STATUS_CODE_OUT_OF_BOUNDS = MmsbStatus(4)
const MMSB_STATUS_CODE_LENGTH_MISMATCH = MmsbStatus(5)
const MMSB_STATUS_CODE_EPOCH_CONFLICT = MmsbStatus(6)
const MMSB_STATUS_CODE_CLOSED = MmsbStatus(7)
const MMSB_STATUS_CODE_ALLOCATION_FAILED = MmsbStatus(8)
const MMSB_STATUS_CODE_IO = MmsbStatus(9)
const MMSB_STATUS_CODE_CORRUPT = MmsbStatus(10)
const MMSB_STATUS_CODE_UNSUPPORTED_VERSION = MmsbStatus(11)
const MMSB_STATUS_CODE_CYCLE = MmsbStatus(12)
const MMSB_STATUS_CODE_UNKNOWN_EDGE = MmsbStatus(13)
const MMSB_STATUS_CODE_NO_DEVICE = MmsbStatus(14)
const MMSB_STATUS_CODE_DEVICE = MmsbStatus(15)
const MMSB_STATUS_CODE_PANIC = MmsbStatus(16)
const MMSB_STATUS_CODE_PAGE_IN_USE = MmsbStatus(17)
const MMSB_STATUS_CODE_BUFFER_TOO_SMALL = MmsbStatus(18)
const MMSB_STATUS_CODE_READ_ONLY = MmsbStatus(19)
const MMSB_STATUS_CODE_MALFORMED = MmsbStatus(20)
const MMSB_STATUS_CODE_CALLBACK = MmsbStatus(21)
const MMSB_STATUS_CODE_BUDGET = MmsbStatus(22)
const MMSB_STATUS_CODE_UNSUPPORTED = MmsbStatus(23)
const MMSB_STATUS_CODE_BUSY = MmsbStatus(24)
const MMSB_STATUS_CODE_REENTRANT = MmsbStatus(25)
const MMSB_STATUS_CODE_LSN_OUT_OF_RANGE = MmsbStatus(26)
const MMSB_STATUS_CODE_LSN_COMPACTED = MmsbStatus(27)
const MMSB_STATUS_CODE_FENCED = MmsbStatus(28)
const MMSB_STATUS_CODE_REPLICA_GAP = MmsbStatus(29)
const MMSB_STATUS_CODE_FOREIGN_STATE = MmsbStatus(30)
const MMSB_STATUS_CODE_REPLICATION = MmsbStatus(31)
const MMSB_OK = MMSB_STATUS_CODE_OK

# Opaque handle types (only ever used behind a Ptr).
"Opaque batch handle (`MmsbBatch`)."
struct MmsbBatch end
"Opaque configuration handle (`MmsbConfig`)."
struct MmsbConfig end
"Opaque delta handle (`MmsbDelta`)."
struct MmsbDelta end
"Opaque state handle (`MmsbState`)."
struct MmsbState end
"Opaque view handle (`MmsbView`)."
struct MmsbView end

"Mirror of `struct MmsbPageInfo` (location: 0 cpu, 1 gpu, 2 unified)."
struct MmsbPageInfo
    id::UInt64
    size::UInt64
    capacity::UInt64
    epoch::UInt64
    location::UInt8
end
MmsbPageInfo() = MmsbPageInfo(0, 0, 0, 0, 0)

# --- errors and version -----------------------------------------------------

mmsb_abi_version() = ccall((:mmsb_abi_version, libmmsb), UInt32, ())

mmsb_last_error_code() = ccall((:mmsb_last_error_code, libmmsb), MmsbStatus, ())

mmsb_last_error_message(buf, cap, out_len) =
    ccall((:mmsb_last_error_message, libmmsb), MmsbStatus, (Ptr{UInt8}, Csize_t, Ptr{Csize_t}), buf, cap, out_len)

mmsb_status_name(code) = ccall((:mmsb_status_name, libmmsb), Cstring, (MmsbStatus,), code)

# --- deltas -----------------------------------------------------------------

mmsb_delta_new_write(offset, bytes, len, out) = ccall((:mmsb_delta_new_write, libmmsb), MmsbStatus,
    (UInt64, Ptr{UInt8}, Csize_t, Ptr{Ptr{MmsbDelta}}), offset, bytes, len, out)

mmsb_delta_new_dense(offset, mask, mask_len, data, len, out) = ccall((:mmsb_delta_new_dense, libmmsb), MmsbStatus,
    (UInt64, Ptr{UInt8}, Csize_t, Ptr{UInt8}, Csize_t, Ptr{Ptr{MmsbDelta}}), offset, mask, mask_len, data, len, out)

mmsb_delta_new_sparse(offsets, lens, nruns, data, data_len, out) = ccall((:mmsb_delta_new_sparse, libmmsb),
    MmsbStatus, (Ptr{UInt64}, Ptr{UInt64}, Csize_t, Ptr{UInt8}, Csize_t, Ptr{Ptr{MmsbDelta}}),
    offsets, lens, nruns, data, data_len, out)

mmsb_delta_new_diff(old, new, len, out) = ccall((:mmsb_delta_new_diff, libmmsb), MmsbStatus,
    (Ptr{UInt8}, Ptr{UInt8}, Csize_t, Ptr{Ptr{MmsbDelta}}), old, new, len, out)

mmsb_delta_compose(a, b, out) = ccall((:mmsb_delta_compose, libmmsb), MmsbStatus,
    (Ptr{MmsbDelta}, Ptr{MmsbDelta}, Ptr{Ptr{MmsbDelta}}), a, b, out)

mmsb_delta_encode(delta, buf, cap, out_len) = ccall((:mmsb_delta_encode, libmmsb), MmsbStatus,
    (Ptr{MmsbDelta}, Ptr{UInt8}, Csize_t, Ptr{Csize_t}), delta, buf, cap, out_len)

mmsb_delta_decode(bytes, len, out) = ccall((:mmsb_delta_decode, libmmsb), MmsbStatus,
    (Ptr{UInt8}, Csize_t, Ptr{Ptr{MmsbDelta}}), bytes, len, out)

mmsb_delta_stats(delta, out_written, out_dense) = ccall((:mmsb_delta_stats, libmmsb), MmsbStatus,
    (Ptr{MmsbDelta}, Ptr{UInt64}, Ptr{UInt8}), delta, out_written, out_dense)

mmsb_delta_apply(delta, buf, len) = ccall((:mmsb_delta_apply, libmmsb), MmsbStatus,
    (Ptr{MmsbDelta}, Ptr{UInt8}, Csize_t), delta, buf, len)

mmsb_delta_free(delta) = ccall((:mmsb_delta_free, libmmsb), Cvoid, (Ptr{MmsbDelta},), delta)

mmsb_route_delta(state, page, delta, expected_epoch, out_lsn) = ccall((:mmsb_route_delta, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, UInt64, Ptr{MmsbDelta}, UInt64, Ptr{UInt64}), state, page, delta, expected_epoch, out_lsn)

mmsb_batch_new(out) = ccall((:mmsb_batch_new, libmmsb), MmsbStatus, (Ptr{Ptr{MmsbBatch}},), out)

mmsb_batch_push(batch, page, delta, expected_epoch) = ccall((:mmsb_batch_push, libmmsb), MmsbStatus,
    (Ptr{MmsbBatch}, UInt64, Ptr{MmsbDelta}, UInt64), batch, page, delta, expected_epoch)

mmsb_batch_route(state, batch, out_first_lsn, out_count) = ccall((:mmsb_batch_route, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, Ptr{MmsbBatch}, Ptr{UInt64}, Ptr{UInt64}), state, batch, out_first_lsn, out_count)

mmsb_batch_free(batch) = ccall((:mmsb_batch_free, libmmsb), Cvoid, (Ptr{MmsbBatch},), batch)

# --- pages ------------------------------------------------------------------

mmsb_page_create(state, size, location, name, name_len, out_id) = ccall((:mmsb_page_create, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, UInt64, UInt8, Ptr{UInt8}, Csize_t, Ptr{UInt64}), state, size, location, name, name_len, out_id)

mmsb_page_free(state, page) = ccall((:mmsb_page_free, libmmsb), MmsbStatus, (Ptr{MmsbState}, UInt64), state, page)

mmsb_page_info(state, page, out) = ccall((:mmsb_page_info, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, UInt64, Ptr{MmsbPageInfo}), state, page, out)

mmsb_page_name(state, page, buf, cap, out_len) = ccall((:mmsb_page_name, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, UInt64, Ptr{UInt8}, Csize_t, Ptr{Csize_t}), state, page, buf, cap, out_len)

mmsb_page_read(state, page, offset, buf, len) = ccall((:mmsb_page_read, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, UInt64, UInt64, Ptr{UInt8}, Csize_t), state, page, offset, buf, len)

mmsb_page_view(state, page, out) = ccall((:mmsb_page_view, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, UInt64, Ptr{Ptr{MmsbView}}), state, page, out)

mmsb_view_bytes(view, out_ptr, out_len) = ccall((:mmsb_view_bytes, libmmsb), MmsbStatus,
    (Ptr{MmsbView}, Ptr{Ptr{UInt8}}, Ptr{Csize_t}), view, out_ptr, out_len)

mmsb_view_free(view) = ccall((:mmsb_view_free, libmmsb), Cvoid, (Ptr{MmsbView},), view)

# --- readers of a state directory from other processes (ffi/reader.rs) ---------------------

"Opaque reader handle (`MmsbReader`)."
struct MmsbReader end
"Opaque reader view handle (`MmsbReaderView`)."
struct MmsbReaderView end
"Opaque background wait handle (`MmsbReaderWait`)."
struct MmsbReaderWait end

const MMSB_WRITER_RUNNING = UInt32(1)
const MMSB_WRITER_RECOVERING = UInt32(2)
const MMSB_WRITER_CLOSED = UInt32(3)
const MMSB_WRITER_CRASHED = UInt32(4)

"Mirror of `struct MmsbReaderStatus`."
struct MmsbReaderStatus
    lsn::UInt64
    durable_lsn::UInt64
    generation::UInt64
    writer_pid::UInt32
    writer_state::UInt32
end
MmsbReaderStatus() = MmsbReaderStatus(0, 0, 0, 0, 0)

"Mirror of `struct MmsbReadInfo`."
struct MmsbReadInfo
    epoch::UInt64
    lsn::UInt64
    size::UInt64
end
MmsbReadInfo() = MmsbReadInfo(0, 0, 0)

mmsb_open_reader(dir, dir_len, out) = ccall((:mmsb_open_reader, libmmsb), MmsbStatus,
    (Ptr{UInt8}, Csize_t, Ptr{Ptr{MmsbReader}}), dir, dir_len, out)

mmsb_reader_free(r) = ccall((:mmsb_reader_free, libmmsb), Cvoid, (Ptr{MmsbReader},), r)

mmsb_reader_status(r, out) = ccall((:mmsb_reader_status, libmmsb), MmsbStatus,
    (Ptr{MmsbReader}, Ptr{MmsbReaderStatus}), r, out)

mmsb_reader_wait(r, lsn, timeout_ms, out_lsn) = ccall((:mmsb_reader_wait, libmmsb), MmsbStatus,
    (Ptr{MmsbReader}, UInt64, UInt64, Ptr{UInt64}), r, lsn, timeout_ms, out_lsn)

mmsb_reader_wait_async(r, lsn, timeout_ms, f, arg, out) = ccall((:mmsb_reader_wait_async, libmmsb), MmsbStatus,
    (Ptr{MmsbReader}, UInt64, UInt64, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Ptr{MmsbReaderWait}}),
    r, lsn, timeout_ms, f, arg, out)

mmsb_reader_wait_poll(w, out_done, out_lsn) = ccall((:mmsb_reader_wait_poll, libmmsb), MmsbStatus,
    (Ptr{MmsbReaderWait}, Ptr{UInt8}, Ptr{UInt64}), w, out_done, out_lsn)

mmsb_reader_wait_free(w) = ccall((:mmsb_reader_wait_free, libmmsb), Cvoid, (Ptr{MmsbReaderWait},), w)

mmsb_reader_page_size(r, page, out_size) = ccall((:mmsb_reader_page_size, libmmsb), MmsbStatus,
    (Ptr{MmsbReader}, UInt64, Ptr{UInt64}), r, page, out_size)

mmsb_reader_read(r, page, buf, len, out_info) = ccall((:mmsb_reader_read, libmmsb), MmsbStatus,
    (Ptr{MmsbReader}, UInt64, Ptr{UInt8}, Csize_t, Ptr{MmsbReadInfo}), r, page, buf, len, out_info)

mmsb_reader_page_list(r, out, cap, out_count) = ccall((:mmsb_reader_page_list, libmmsb), MmsbStatus,
    (Ptr{MmsbReader}, Ptr{UInt64}, Csize_t, Ptr{Csize_t}), r, out, cap, out_count)

mmsb_reader_view(r, page, out) = ccall((:mmsb_reader_view, libmmsb), MmsbStatus,
    (Ptr{MmsbReader}, UInt64, Ptr{Ptr{MmsbReaderView}}), r, page, out)

mmsb_reader_view_bytes(view, out_ptr, out_len) = ccall((:mmsb_reader_view_bytes, libmmsb), MmsbStatus,
    (Ptr{MmsbReaderView}, Ptr{Ptr{UInt8}}, Ptr{Csize_t}), view, out_ptr, out_len)

mmsb_reader_view_free(view) = ccall((:mmsb_reader_view_free, libmmsb), Cvoid, (Ptr{MmsbReaderView},), view)

mmsb_page_update(state, page, offset, bytes, len, expected_epoch, out_lsn) = ccall((:mmsb_page_update, libmmsb),
    MmsbStatus, (Ptr{MmsbState}, UInt64, UInt64, Ptr{UInt8}, Csize_t, UInt64, Ptr{UInt64}),
    state, page, offset, bytes, len, expected_epoch, out_lsn)

mmsb_page_write(state, page, offset, bytes, len, expected_epoch, out_lsn) = ccall((:mmsb_page_write, libmmsb),
    MmsbStatus, (Ptr{MmsbState}, UInt64, UInt64, Ptr{UInt8}, Csize_t, UInt64, Ptr{UInt64}),
    state, page, offset, bytes, len, expected_epoch, out_lsn)

mmsb_page_write_masked(state, page, offset, mask, mask_len, data, len, expected_epoch, out_lsn) =
    ccall((:mmsb_page_write_masked, libmmsb), MmsbStatus,
        (Ptr{MmsbState}, UInt64, UInt64, Ptr{UInt8}, Csize_t, Ptr{UInt8}, Csize_t, UInt64, Ptr{UInt64}),
        state, page, offset, mask, mask_len, data, len, expected_epoch, out_lsn)

mmsb_page_write_sparse(state, page, offsets, lens, nruns, data, data_len, expected_epoch, out_lsn) =
    ccall((:mmsb_page_write_sparse, libmmsb), MmsbStatus,
        (Ptr{MmsbState}, UInt64, Ptr{UInt64}, Ptr{UInt64}, Csize_t, Ptr{UInt8}, Csize_t, UInt64, Ptr{UInt64}),
        state, page, offsets, lens, nruns, data, data_len, expected_epoch, out_lsn)

mmsb_page_list(state, out, cap, out_count) = ccall((:mmsb_page_list, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, Ptr{UInt64}, Csize_t, Ptr{Csize_t}), state, out, cap, out_count)

# --- configuration and state ------------------------------------------------

mmsb_config_new(out) = ccall((:mmsb_config_new, libmmsb), MmsbStatus, (Ptr{Ptr{MmsbConfig}},), out)

mmsb_config_free(cfg) = ccall((:mmsb_config_free, libmmsb), Cvoid, (Ptr{MmsbConfig},), cfg)

mmsb_config_set_dir(cfg, dir, len) = ccall((:mmsb_config_set_dir, libmmsb), MmsbStatus,
    (Ptr{MmsbConfig}, Ptr{UInt8}, Csize_t), cfg, dir, len)

mmsb_config_set_durability(cfg, mode) = ccall((:mmsb_config_set_durability, libmmsb), MmsbStatus,
    (Ptr{MmsbConfig}, UInt32), cfg, mode)

mmsb_config_set_u64(cfg, key, key_len, value) = ccall((:mmsb_config_set_u64, libmmsb), MmsbStatus,
    (Ptr{MmsbConfig}, Ptr{UInt8}, Csize_t, UInt64), cfg, key, key_len, value)

mmsb_state_open(cfg, out) = ccall((:mmsb_state_open, libmmsb), MmsbStatus,
    (Ptr{MmsbConfig}, Ptr{Ptr{MmsbState}}), cfg, out)

mmsb_state_close(state) = ccall((:mmsb_state_close, libmmsb), MmsbStatus, (Ptr{MmsbState},), state)

mmsb_state_free(state) = ccall((:mmsb_state_free, libmmsb), Cvoid, (Ptr{MmsbState},), state)

mmsb_state_is_open(state, out) = ccall((:mmsb_state_is_open, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, Ptr{UInt8}), state, out)

mmsb_state_lsn(state, out) = ccall((:mmsb_state_lsn, libmmsb), MmsbStatus, (Ptr{MmsbState}, Ptr{UInt64}), state, out)


mmsb_config_set_logging(cfg, on) = ccall((:mmsb_config_set_logging, libmmsb), MmsbStatus,
    (Ptr{MmsbConfig}, UInt8), cfg, on)

# --- log: checkpoints, replay, compaction --------------------------------------

"Mirror of `struct MmsbLogInfo`."
struct MmsbLogInfo
    lsn::UInt64
    log_bytes::UInt64
    segments::UInt64
    checkpoints::UInt64
    last_checkpoint_lsn::UInt64
    oldest_lsn::UInt64
    skipped_regions::UInt64
    truncated_bytes::UInt64
    quarantined_files::UInt64
    maintenance_failures::UInt64
    last_maintenance_lsn::UInt64
    last_maintenance_status::UInt32
end
MmsbLogInfo() = MmsbLogInfo(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)

mmsb_state_checkpoint(state, out_lsn) = ccall((:mmsb_state_checkpoint, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, Ptr{UInt64}), state, out_lsn)

mmsb_state_replay(state, lsn, out_state) = ccall((:mmsb_state_replay, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, UInt64, Ptr{Ptr{MmsbState}}), state, lsn, out_state)

mmsb_state_compact(state) = ccall((:mmsb_state_compact, libmmsb), MmsbStatus, (Ptr{MmsbState},), state)

mmsb_log_info(state, out) = ccall((:mmsb_log_info, libmmsb), MmsbStatus, (Ptr{MmsbState}, Ptr{MmsbLogInfo}), state, out)

mmsb_log_maintenance_error(state, buf, cap, out_len) = ccall((:mmsb_log_maintenance_error, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, Ptr{UInt8}, Csize_t, Ptr{Csize_t}), state, buf, cap, out_len)

mmsb_log_group_syncs(state, out) = ccall((:mmsb_log_group_syncs, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, Ptr{UInt64}), state, out)

mmsb_log_recovery_micros(state, out) = ccall((:mmsb_log_recovery_micros, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, Ptr{UInt64}), state, out)

mmsb_log_maintenance_passes(state, out) = ccall((:mmsb_log_maintenance_passes, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, Ptr{UInt64}), state, out)

mmsb_log_maintenance_waits(state, out) = ccall((:mmsb_log_maintenance_waits, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, Ptr{UInt64}), state, out)

mmsb_log_maintenance_slowdowns(state, out) = ccall((:mmsb_log_maintenance_slowdowns, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, Ptr{UInt64}), state, out)

mmsb_log_compacted_runs(state, out, cap, out_count) = ccall((:mmsb_log_compacted_runs, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, Ptr{UInt64}, Csize_t, Ptr{Csize_t}), state, out, cap, out_count)

# --- a state directory read without its writer ----------------------------------

"`lsn` of `mmsb_replay_dir` asking for the newest LSN the directory holds."
const MMSB_LSN_NEWEST = typemax(UInt64)

mmsb_replay_dir(dir, len, lsn, out_state) = ccall((:mmsb_replay_dir, libmmsb), MmsbStatus,
    (Ptr{UInt8}, Csize_t, UInt64, Ptr{Ptr{MmsbState}}), dir, len, lsn, out_state)

# --- monitoring ------------------------------------------------------------------

const MMSB_METRIC_DELTA_ROUTE = UInt32(0)
const MMSB_METRIC_PROPAGATION_ROUND = UInt32(1)
const MMSB_METRIC_LOG_APPEND = UInt32(2)
const MMSB_METRIC_FSYNC = UInt32(3)
const MMSB_METRIC_CHECKPOINT = UInt32(4)
const MMSB_METRIC_REPLAY = UInt32(5)
const MMSB_METRIC_DEVICE_SYNC = UInt32(6)
const MMSB_METRIC_COUNT = UInt32(7)
const MMSB_COUNTER_PAGES = UInt32(0)
const MMSB_COUNTER_BYTES_ALLOCATED = UInt32(1)
const MMSB_COUNTER_DELTAS_ROUTED = UInt32(2)
const MMSB_COUNTER_DELTA_BYTES = UInt32(3)
const MMSB_COUNTER_LOG_BYTES = UInt32(4)
const MMSB_COUNTER_LOG_SEGMENTS = UInt32(5)
const MMSB_COUNTER_CHECKPOINTS = UInt32(6)
const MMSB_COUNTER_EVENTS_DROPPED = UInt32(7)
const MMSB_COUNTER_BUDGET_VIOLATIONS = UInt32(8)
const MMSB_COUNTER_PROPAGATION_ROUNDS = UInt32(9)
const MMSB_COUNTER_PAGES_RECOMPUTED = UInt32(10)
const MMSB_COUNTER_REPLICA_LSN_BEHIND = UInt32(11)
const MMSB_COUNTER_REPLICA_US_BEHIND = UInt32(12)
const MMSB_COUNTER_REPLICA_POSITION_ERRORS = UInt32(13)
const MMSB_COUNTER_COUNT = UInt32(14)
const MMSB_BUDGET_LATENCY_MAX = UInt32(0)
const MMSB_BUDGET_LATENCY_P99 = UInt32(1)
const MMSB_BUDGET_LOG_BYTES = UInt32(2)

"Mirror of `struct MmsbHistogramStats` (nanoseconds)."
struct MmsbHistogramStats
    count::UInt64
    sampled::UInt64
    min_ns::UInt64
    mean_ns::Float64
    p50_ns::UInt64
    p90_ns::UInt64
    p99_ns::UInt64
    p999_ns::UInt64
    max_ns::UInt64
    sum_ns::UInt64
end
MmsbHistogramStats() = MmsbHistogramStats(0, 0, 0, 0.0, 0, 0, 0, 0, 0, 0)

mmsb_stats_json(state, buf, cap, out_len) = ccall((:mmsb_stats_json, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, Ptr{UInt8}, Csize_t, Ptr{Csize_t}), state, buf, cap, out_len)

mmsb_stats_prometheus(state, buf, cap, out_len) = ccall((:mmsb_stats_prometheus, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, Ptr{UInt8}, Csize_t, Ptr{Csize_t}), state, buf, cap, out_len)

mmsb_stats_table(state, buf, cap, out_len) = ccall((:mmsb_stats_table, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, Ptr{UInt8}, Csize_t, Ptr{Csize_t}), state, buf, cap, out_len)

struct MmsbMetricsServer end

mmsb_metrics_serve(state, addr, addr_len, port, out_server) = ccall((:mmsb_metrics_serve, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, Ptr{UInt8}, Csize_t, UInt16, Ptr{Ptr{MmsbMetricsServer}}), state, addr, addr_len, port, out_server)

mmsb_metrics_server_port(server, out_port) = ccall((:mmsb_metrics_server_port, libmmsb), MmsbStatus,
    (Ptr{MmsbMetricsServer}, Ptr{UInt16}), server, out_port)

mmsb_metrics_stop(server) = ccall((:mmsb_metrics_stop, libmmsb), Cvoid, (Ptr{MmsbMetricsServer},), server)

mmsb_stats_histogram(state, metric, out) = ccall((:mmsb_stats_histogram, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, UInt32, Ptr{MmsbHistogramStats}), state, metric, out)

mmsb_stats_counter(state, counter, out) = ccall((:mmsb_stats_counter, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, UInt32, Ptr{UInt64}), state, counter, out)

mmsb_track_latency(state, metric, nanos) = ccall((:mmsb_track_latency, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, UInt32, UInt64), state, metric, nanos)

mmsb_set_budget(state, kind, metric, value) = ccall((:mmsb_set_budget, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, UInt32, UInt32, UInt64), state, kind, metric, value)

mmsb_stats_reset(state) = ccall((:mmsb_stats_reset, libmmsb), MmsbStatus, (Ptr{MmsbState},), state)

mmsb_monitor_set_enabled(state, enabled) = ccall((:mmsb_monitor_set_enabled, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, UInt8), state, enabled)

mmsb_monitor_set_sample_every(state, n) = ccall((:mmsb_monitor_set_sample_every, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, UInt32), state, n)

mmsb_metric_name(metric) = ccall((:mmsb_metric_name, libmmsb), Cstring, (UInt32,), metric)

mmsb_counter_name(counter) = ccall((:mmsb_counter_name, libmmsb), Cstring, (UInt32,), counter)

# --- device ------------------------------------------------------------------------

const MMSB_DEVICE_AVAILABLE = UInt32(0)
const MMSB_DEVICE_UNAVAILABLE = UInt32(1)
const MMSB_PAGE_DEVICE_CPU = UInt32(0)
const MMSB_PAGE_DEVICE_MIRRORED = UInt32(1)
const MMSB_PAGE_DEVICE_CPU_ONLY = UInt32(2)
const MMSB_SYNC_HOST_TO_DEVICE = UInt32(0)
const MMSB_SYNC_DEVICE_TO_HOST = UInt32(1)

"Mirror of `struct MmsbDeviceStats`."
struct MmsbDeviceStats
    syncs::UInt64
    bytes_h2d::UInt64
    bytes_d2h::UInt64
    kernels_launched::UInt64
    dirty_bytes_pending::UInt64
    mirrors::UInt64
    cpu_only_pages::UInt64
end
MmsbDeviceStats() = MmsbDeviceStats(0, 0, 0, 0, 0, 0, 0)

mmsb_device_status(out_code, reason, cap, out_len) = ccall((:mmsb_device_status, libmmsb), MmsbStatus,
    (Ptr{UInt32}, Ptr{UInt8}, Csize_t, Ptr{Csize_t}), out_code, reason, cap, out_len)

mmsb_page_device_status(state, page, out_code, reason, cap, out_len) = ccall((:mmsb_page_device_status, libmmsb),
    MmsbStatus, (Ptr{MmsbState}, UInt64, Ptr{UInt32}, Ptr{UInt8}, Csize_t, Ptr{Csize_t}),
    state, page, out_code, reason, cap, out_len)

mmsb_page_sync(state, page, direction) = ccall((:mmsb_page_sync, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, UInt64, UInt32), state, page, direction)

mmsb_device_sync_all(state, direction) = ccall((:mmsb_device_sync_all, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, UInt32), state, direction)

mmsb_page_apply_on_device(state, page, delta, expected_epoch, out_lsn) = ccall((:mmsb_page_apply_on_device, libmmsb),
    MmsbStatus, (Ptr{MmsbState}, UInt64, Ptr{MmsbDelta}, UInt64, Ptr{UInt64}), state, page, delta, expected_epoch, out_lsn)

mmsb_device_stats(state, out) = ccall((:mmsb_device_stats, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, Ptr{MmsbDeviceStats}), state, out)


# --- graph: dependencies, propagation, events ----------------------------------------

const MMSB_EDGE_DATA = UInt32(0)
const MMSB_EDGE_CONTROL = UInt32(1)
const MMSB_EDGE_GPU_SYNC = UInt32(2)
const MMSB_EDGE_COMPILER = UInt32(3)
const MMSB_OP_ADD = UInt32(0)
const MMSB_OP_XOR = UInt32(1)
const MMSB_OP_OR = UInt32(2)
const MMSB_OP_AND = UInt32(3)
const MMSB_OP_MIN = UInt32(4)
const MMSB_OP_MAX = UInt32(5)
const MMSB_LANE_U8 = UInt32(0)
const MMSB_LANE_U32 = UInt32(1)
const MMSB_LANE_F32 = UInt32(2)
const MMSB_LANE_F64 = UInt32(3)
const MMSB_POLICY_BLOCK = UInt32(0)
const MMSB_POLICY_DROP_OLDEST = UInt32(1)
const MMSB_POLICY_DROP_NEWEST = UInt32(2)
const MMSB_EVENT_DELTA_APPLIED = UInt32(1)
const MMSB_EVENT_PROPAGATION_DONE = UInt32(2)
const MMSB_EVENT_CHECKPOINT = UInt32(4)
const MMSB_EVENT_DEVICE_SYNC = UInt32(8)
const MMSB_EVENT_INSTRUMENTATION = UInt32(16)
const MMSB_EVENT_BUDGET = UInt32(32)
const MMSB_EVENT_ALL = UInt32(63)

"Opaque command list handle (`MmsbCommandList`)."
struct MmsbCommandList end
"Opaque subscription handle (`MmsbSubscription`)."
struct MmsbSubscription end

"Mirror of `struct MmsbRoundStats`."
struct MmsbRoundStats
    round::UInt64
    recomputed::UInt64
    cutoff::UInt64
    deltas_routed::UInt64
end
MmsbRoundStats() = MmsbRoundStats(0, 0, 0, 0)

"Mirror of `struct MmsbEvent`."
struct MmsbEvent
    kind::UInt32
    code::UInt32
    page::UInt64
    a::UInt64
    b::UInt64
    c::UInt64
end

mmsb_command_list_new(out) = ccall((:mmsb_command_list_new, libmmsb), MmsbStatus, (Ptr{Ptr{MmsbCommandList}},), out)

mmsb_command_list_free(list) = ccall((:mmsb_command_list_free, libmmsb), Cvoid, (Ptr{MmsbCommandList},), list)

mmsb_command_list_push_copy(list, src_off, dst_off, len) = ccall((:mmsb_command_list_push_copy, libmmsb),
    MmsbStatus, (Ptr{MmsbCommandList}, UInt64, UInt64, UInt64), list, src_off, dst_off, len)

mmsb_command_list_push_fill(list, dst_off, len, value) = ccall((:mmsb_command_list_push_fill, libmmsb),
    MmsbStatus, (Ptr{MmsbCommandList}, UInt64, UInt64, UInt8), list, dst_off, len, value)

mmsb_command_list_push_op(list, op, lane, src_off, dst_off, len) = ccall((:mmsb_command_list_push_op, libmmsb),
    MmsbStatus, (Ptr{MmsbCommandList}, UInt32, UInt32, UInt64, UInt64, UInt64), list, op, lane, src_off, dst_off, len)

mmsb_command_list_push_callback(list, f, user_data) = ccall((:mmsb_command_list_push_callback, libmmsb),
    MmsbStatus, (Ptr{MmsbCommandList}, Ptr{Cvoid}, Ptr{Cvoid}), list, f, user_data)

mmsb_add_dependency(state, from, to, kind, commands, out_edge) = ccall((:mmsb_add_dependency, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, UInt64, UInt64, UInt32, Ptr{MmsbCommandList}, Ptr{UInt64}), state, from, to, kind, commands, out_edge)

mmsb_remove_dependency(state, edge) = ccall((:mmsb_remove_dependency, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, UInt64), state, edge)

mmsb_propagate(state, pages, n, out_stats) = ccall((:mmsb_propagate, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, Ptr{UInt64}, Csize_t, Ptr{MmsbRoundStats}), state, pages, n, out_stats)

mmsb_dependents(state, page, out, cap, out_count) = ccall((:mmsb_dependents, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, UInt64, Ptr{UInt64}, Csize_t, Ptr{Csize_t}), state, page, out, cap, out_count)

mmsb_topo_order(state, out, cap, out_count) = ccall((:mmsb_topo_order, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, Ptr{UInt64}, Csize_t, Ptr{Csize_t}), state, out, cap, out_count)

mmsb_subscribe(state, capacity, policy, block_timeout_ns, mask, out_sub) = ccall((:mmsb_subscribe, libmmsb),
    MmsbStatus, (Ptr{MmsbState}, Csize_t, UInt32, UInt64, UInt32, Ptr{Ptr{MmsbSubscription}}),
    state, capacity, policy, block_timeout_ns, mask, out_sub)

mmsb_poll_events(sub, out_events, cap, out_count) = ccall((:mmsb_poll_events, libmmsb), MmsbStatus,
    (Ptr{MmsbSubscription}, Ptr{MmsbEvent}, Csize_t, Ptr{Csize_t}), sub, out_events, cap, out_count)

mmsb_subscription_dropped(sub, out) = ccall((:mmsb_subscription_dropped, libmmsb), MmsbStatus,
    (Ptr{MmsbSubscription}, Ptr{UInt64}), sub, out)

mmsb_subscription_lagged(sub, out) = ccall((:mmsb_subscription_lagged, libmmsb), MmsbStatus,
    (Ptr{MmsbSubscription}, Ptr{UInt8}), sub, out)

mmsb_subscription_closed(sub, out) = ccall((:mmsb_subscription_closed, libmmsb), MmsbStatus,
    (Ptr{MmsbSubscription}, Ptr{UInt8}), sub, out)

mmsb_subscription_free(sub) = ccall((:mmsb_subscription_free, libmmsb), Cvoid, (Ptr{MmsbSubscription},), sub)

mmsb_subscription_set_notify(sub, f, arg) = ccall((:mmsb_subscription_set_notify, libmmsb), MmsbStatus,
    (Ptr{MmsbSubscription}, Ptr{Cvoid}, Ptr{Cvoid}), sub, f, arg)

# --- replication (cargo feature `replication`) -------------------------------------

"Mirror of `struct MmsbReplicaLag`."
struct MmsbReplicaLag
    applied_lsn::UInt64
    stream_lsn::UInt64
    lsn_behind::UInt64
    seconds_behind::Float64
    term::UInt64
end
MmsbReplicaLag() = MmsbReplicaLag(0, 0, 0, 0.0, 0)

mmsb_config_set_replication(cfg, url, url_len, stream, stream_len) =
    ccall((:mmsb_config_set_replication, libmmsb), MmsbStatus,
          (Ptr{MmsbConfig}, Ptr{UInt8}, Csize_t, Ptr{UInt8}, Csize_t), cfg, url, url_len, stream, stream_len)

mmsb_follow(url, url_len, stream, stream_len, dir, dir_len, out) = ccall((:mmsb_follow, libmmsb), MmsbStatus,
    (Ptr{UInt8}, Csize_t, Ptr{UInt8}, Csize_t, Ptr{UInt8}, Csize_t, Ptr{Ptr{MmsbState}}),
    url, url_len, stream, stream_len, dir, dir_len, out)

mmsb_promote(state, cfg, out) = ccall((:mmsb_promote, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, Ptr{MmsbConfig}, Ptr{Ptr{MmsbState}}), state, cfg, out)

mmsb_replica_lag(state, out) = ccall((:mmsb_replica_lag, libmmsb), MmsbStatus,
    (Ptr{MmsbState}, Ptr{MmsbReplicaLag}), state, out)

end # module LibMMSB
