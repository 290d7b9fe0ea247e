"""
    MMSB.LibMMSB

Low-level bindings: one plain `ccall` wrapper per function of the C header
`rust/mmsb/include/mmsb.h`, with the same name, argument order and meaning.
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

end # module LibMMSB
