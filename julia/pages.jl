# Pages: creation, description, reads and the update_page! family of writes.

"""
    PageId(n)

The identifier of a page within its state (returned by [`create_page`](@ref)).
"""
struct PageId
    value::UInt64
end
Base.show(io::IO, p::PageId) = print(io, "PageId(", Int(p.value), ")")
Base.UInt64(p::PageId) = p.value

"""
    PageInfo

What [`page_info`](@ref) reports: `id`, `size` (bytes), `capacity` (bytes of
backing memory), `epoch` (bumped by every delta routed to the page),
`location` (`:cpu`, `:gpu` or `:unified`) and `name`.
"""
struct PageInfo
    id::PageId
    size::Int
    capacity::Int
    epoch::Int
    location::Symbol
    name::String
end

const LOCATIONS = (:cpu, :gpu, :unified)

location_code(loc::Symbol) = (i = findfirst(==(loc), LOCATIONS)) === nothing ?
    throw(ArgumentError("location must be one of $LOCATIONS, not $(repr(loc))")) : UInt8(i - 1)

epoch_arg(::Nothing) = LibMMSB.MMSB_NO_EPOCH
epoch_arg(e::Integer) = UInt64(e)

function u64_arg(x::Integer, what)
    x < 0 && throw(MMSBError(LibMMSB.MMSB_STATUS_CODE_INVALID_ARGUMENT, "$what must be non-negative, got $x"))
    return UInt64(x)
end

# Byte vectors the C side can read directly; anything else is copied first.
const ContiguousBytes = Union{Vector{UInt8},SubArray{UInt8,1,Vector{UInt8},<:Tuple{AbstractUnitRange{Int}},true}}
contiguous(x::ContiguousBytes) = x
contiguous(x::AbstractVector{UInt8}) = collect(UInt8, x)
contiguous(x::AbstractString) = Vector{UInt8}(codeunits(String(x)))

"""
    create_page(state, size; location=:cpu, name="") -> PageId

Allocates a zeroed page of `size` bytes (`location` is `:cpu`, `:gpu` or
`:unified`; `name` is free text of at most `MMSB.LibMMSB.MMSB_MAX_PAGE_NAME_BYTES`
(4096) bytes, kept in the page's metadata; longer is an [`MMSBError`](@ref)
named `"invalid_argument"`).

A `:gpu` or `:unified` page always keeps its bytes on the CPU (that is where
deltas apply and what the log records) and gets a device mirror when it can.
When it cannot (no GPU, the state started without `gpu = true`, or the mirror
could not be allocated), the page is created CPU-only: a documented fallback,
not an error, so the same code and logs work on machines without a GPU. It is
visible: a warning is logged (once per session) with the reason, and
[`page_device_status`](@ref) reports `:cpu_only` and the reason for the page.
"""
function create_page(s::MMSBState, size::Integer; location::Symbol = :cpu, name::AbstractString = "")
    n = String(name)
    out = Ref{UInt64}(0)
    scall(LibMMSB.mmsb_page_create, s, u64_arg(size, "size"), location_code(location), n, sizeof(n), out)
    page = PageId(out[])
    location === :cpu || warn_if_cpu_only(s, page, location)
    return page
end

function warn_if_cpu_only(s::MMSBState, page::PageId, location::Symbol)
    st = page_device_status(s, page)
    st.status === :cpu_only &&
        @warn "MMSB: $location page $(page.value) lives on the CPU only: $(st.reason) (see page_device_status)" maxlog = 1
    return nothing
end

"""
    free_page!(state, page)

Removes a page; its open [`PageView`](@ref)s are closed.
"""
function free_page!(s::MMSBState, page::PageId)
    scall(LibMMSB.mmsb_page_free, s, page.value)
    close_views!(s, page)
    return nothing
end

"""
    page_ids(state) -> Vector{PageId}

The ids of all pages of the state, ascending.
"""
page_ids(s::MMSBState) = page_list((buf, cap, n) -> release(s, LibMMSB.mmsb_page_list(enter(s), buf, cap, n)))

# Page ids from a C call `f(buf, cap, out_count)` that fails with BUFFER_TOO_SMALL (and writes
# the count it needs) when `buf` is short: retried with room for twice that count, since pages
# may be added meanwhile.
function page_list(f)
    buf = Vector{UInt64}(undef, 16)
    count = Ref{Csize_t}(0)
    while true
        st = f(buf, length(buf), count)
        if st == LibMMSB.MMSB_STATUS_CODE_BUFFER_TOO_SMALL
            resize!(buf, 2 * Int(count[]))
            continue
        end
        check(st)
        return [PageId(x) for x in view(buf, 1:Int(count[]))]
    end
end

function raw_info(s::MMSBState, page::PageId)
    out = Ref(LibMMSB.MmsbPageInfo())
    scall(LibMMSB.mmsb_page_info, s, page.value, out)
    return out[]
end

"""
    page_info(state, page) -> PageInfo

The page's id, size, capacity, epoch, location and name.
"""
function page_info(s::MMSBState, page::PageId)
    i = raw_info(s, page)
    return PageInfo(PageId(i.id), Int(i.size), Int(i.capacity), i.epoch, LOCATIONS[i.location + 1], page_name(s, page))
end

"""
    page_epoch(state, page) -> Int

The page's epoch: the number of deltas routed to it. Pass it as
`expected_epoch` to a write to make it a compare-and-set.
"""
page_epoch(s::MMSBState, page::PageId) = Int(raw_info(s, page).epoch)

"""
    page_name(state, page) -> String

The name given to [`create_page`](@ref).
"""
function page_name(s::MMSBState, page::PageId)
    len = Ref{Csize_t}(0)
    buf = Vector{UInt8}(undef, 64)
    scall(LibMMSB.mmsb_page_name, s, page.value, buf, length(buf), len)
    if len[] >= length(buf)
        resize!(buf, len[] + 1)
        scall(LibMMSB.mmsb_page_name, s, page.value, buf, length(buf), len)
    end
    return String(buf[1:Int(len[])])
end

# Byte positions in the Julia API are 1-based, as Julia's indices are: `at = 1`
# is the page's first byte, the same byte as `view[1]`. The C API takes 0-based
# offsets: `position_arg` converts. `offset` (0-based) is the keyword of the
# previous release, still accepted by read_page and read_page! with a warning.
function position_arg(at::Integer, offset::Union{Nothing,Integer}, fname::Symbol)
    if offset !== nothing
        at == 1 || throw(ArgumentError("give `at` (a 1-based byte position) or the deprecated `offset`, not both"))
        Base.depwarn("`$fname(...; offset = n)` is deprecated: byte positions are 1-based, use `at = n + 1`", fname)
        return u64_arg(offset, "offset")
    end
    at >= 1 || throw(MMSBError(LibMMSB.MMSB_STATUS_CODE_INVALID_ARGUMENT,
                               "at is a 1-based byte position (the first byte is at = 1), got $at"))
    return UInt64(at - 1)
end

"""
    read_page(state, page; at=1, len=size-at+1) -> Vector{UInt8}

A copy of `len` bytes of the page from the 1-based byte position `at` (a
consistent snapshot): bytes `at` to `at + len - 1`, the same bytes as
`view[at:at+len-1]` of a [`PageView`](@ref). `at` may be `size + 1` with
`len = 0`. (`offset = n`, 0-based, is the deprecated spelling of `at = n + 1`.)
"""
function read_page(s::MMSBState, page::PageId; at::Integer = 1, len::Union{Nothing,Integer} = nothing,
                   offset::Union{Nothing,Integer} = nothing)
    off = position_arg(at, offset, :read_page)
    # Bounds first: a huge `len` is an out_of_bounds error, not an OutOfMemoryError.
    size = raw_info(s, page).size
    off <= size || throw(MMSBError(LibMMSB.MMSB_STATUS_CODE_OUT_OF_BOUNDS,
                                   "at = $(off + 1) is past the end of page $(page.value) ($size bytes: at is at most $(size + 1))"))
    n = len === nothing ? size - off : u64_arg(len, "len")
    n <= size - off || throw(MMSBError(LibMMSB.MMSB_STATUS_CODE_OUT_OF_BOUNDS,
                                       "$n bytes at at = $(off + 1) are out of bounds for page $(page.value) ($size bytes)"))
    return read_page!(Vector{UInt8}(undef, n), s, page; at = Int(off) + 1)
end

"""
    read_page!(buf, state, page; at=1) -> buf

Copies `length(buf)` bytes of the page from the 1-based byte position `at`
into `buf` (bytes `at` to `at + length(buf) - 1`).
"""
function read_page!(buf::Vector{UInt8}, s::MMSBState, page::PageId; at::Integer = 1,
                    offset::Union{Nothing,Integer} = nothing)
    scall(LibMMSB.mmsb_page_read, s, page.value, position_arg(at, offset, :read_page!), buf, length(buf))
    return buf
end

"""
    update_page!(state, page, bytes; at=1, expected_epoch=nothing) -> lsn
    update_page!(state, page, bytes, mask; at=1, expected_epoch=nothing) -> lsn
    update_page!(state, page, runs; at=1, expected_epoch=nothing) -> lsn

Writes to a page through a delta and returns its log sequence number (an
`Int`). Byte positions are 1-based: `at = 1` is the page's first byte.
- `bytes` (a byte vector or string): written to bytes `at` to
  `at + length(bytes) - 1` as the smallest delta from the page's current bytes
  (only the bytes that change are recorded).
- `bytes, mask` (`mask::BitVector` or `Vector{Bool}`, `length(mask) ==
  length(bytes)`): a dense masked write: byte `at + i - 1` is set to `bytes[i]`
  where `mask[i]`.
- `runs`, a vector of `pos => bytes` pairs: a sparse write of each `bytes` from
  the 1-based position `pos` (relative to `at`: byte `at + pos - 1`); later runs
  win where runs overlap.
Writing past the end throws an [`MMSBError`](@ref) named `"out_of_bounds"`.

With `expected_epoch`, the write happens only if the page's [`page_epoch`](@ref) still
equals it, else an [`MMSBError`](@ref) named `"epoch_conflict"` is thrown and
nothing changes (compare-and-set).
"""
function update_page!(s::MMSBState, page::PageId, bytes::Union{AbstractVector{UInt8},AbstractString};
                      at::Integer = 1, expected_epoch::Union{Nothing,Integer} = nothing)
    return write_bytes(LibMMSB.mmsb_page_update, :update_page!, s, page, bytes, at, expected_epoch)
end

# `update_page!` and `write_page!`: the same arguments for `cfn`, the LSN back.
function write_bytes(cfn, name::Symbol, s::MMSBState, page::PageId, bytes, at, expected_epoch)
    b = contiguous(bytes)
    off, e = position_arg(at, nothing, name), epoch_arg(expected_epoch)
    l = scall_u64(s) do p, out
        cfn(p, page.value, off, b, length(b), e, out)
    end
    return Int(l)   # LSNs and epochs are Ints in Julia: they print in decimal
end

function update_page!(s::MMSBState, page::PageId, bytes::AbstractVector{UInt8}, mask::AbstractVector{Bool};
                      at::Integer = 1, expected_epoch::Union{Nothing,Integer} = nothing)
    b = contiguous(bytes)
    m = mask_bits(mask, length(b))
    off, e = position_arg(at, nothing, :update_page!), epoch_arg(expected_epoch)
    l = GC.@preserve m scall_u64(s) do p, out
        LibMMSB.mmsb_page_write_masked(p, page.value, off, mask_ptr(m), cld(length(b), 8), b, length(b), e, out)
    end
    return Int(l)
end

function update_page!(s::MMSBState, page::PageId, runs::AbstractVector{<:Pair};
                      at::Integer = 1, expected_epoch::Union{Nothing,Integer} = nothing)
    # positions relative to `at`: run `pos` is the 0-based offset (at - 1) + (pos - 1)
    offsets, lens, data = sparse_parts(runs, position_arg(at, nothing, :update_page!); one_based = true)
    e = epoch_arg(expected_epoch)
    l = scall_u64(s) do p, out
        LibMMSB.mmsb_page_write_sparse(p, page.value, offsets, lens, length(offsets), data, length(data), e, out)
    end
    return Int(l)
end

"""
    write_page!(state, page, bytes; at=1, expected_epoch=nothing) -> lsn

Writes `bytes` to bytes `at` to `at + length(bytes) - 1` of the page (`at` is
a 1-based byte position) as a plain write (one run, recorded as given, without
comparing to the current bytes: cheaper than [`update_page!`](@ref) when most
bytes change). `expected_epoch` as for [`update_page!`](@ref).
"""
function write_page!(s::MMSBState, page::PageId, bytes::Union{AbstractVector{UInt8},AbstractString};
                     at::Integer = 1, expected_epoch::Union{Nothing,Integer} = nothing)
    return write_bytes(LibMMSB.mmsb_page_write, :write_page!, s, page, bytes, at, expected_epoch)
end

# The mask as the C ABI takes it: one bit per data byte, least significant bit
# first, in the first `cld(n, 8)` bytes of the returned array (pass `mask_ptr`
# of it under `GC.@preserve`). A BitVector's chunks already are that on a
# little-endian host, so they go as they are: no copy, no allocation.
function mask_bits(mask::AbstractVector{Bool}, n::Integer)
    check_mask_length(mask, n)
    mask isa BitVector && ENDIAN_BOM == 0x04030201 && return mask.chunks
    return pack_mask(mask, n)
end

mask_ptr(m::Vector{UInt8}) = pointer(m)
mask_ptr(m::Vector{UInt64}) = Ptr{UInt8}(pointer(m))

check_mask_length(mask, n) = length(mask) == n ||
    throw(MMSBError(LibMMSB.MMSB_STATUS_CODE_LENGTH_MISMATCH, "mask has $(length(mask)) entries but data has $n bytes"))

# Packs the mask into `cld(n, 8)` new bytes, LSB first (for what `mask_bits`
# cannot pass as it is).
function pack_mask(mask::AbstractVector{Bool}, n::Integer)
    check_mask_length(mask, n)
    packed = Vector{UInt8}(undef, cld(n, 8))
    whole = 0
    if mask isa Vector{Bool} && ENDIAN_BOM == 0x04030201
        # Eight Bools (bytes 0x00/0x01) at a time: the multiply moves bit 0 of byte k to bit
        # 56 + k without carries, so the top byte is their packing, LSB first.
        whole = n >> 3
        GC.@preserve mask for k in 1:whole
            x = unsafe_load(Ptr{UInt64}(pointer(mask)), k)
            @inbounds packed[k] = ((x * 0x0102040810204080) >> 56) % UInt8
        end
    end
    packed[whole+1:end] .= 0x00
    for i in 8whole+1:n
        @inbounds mask[i] && (packed[((i - 1) >> 3) + 1] |= UInt8(1) << ((i - 1) & 7))
    end
    return packed
end

# The runs as the C ABI takes them: 0-based offsets (plus `base`), lengths and
# the bytes back to back. `one_based`: the runs' keys are 1-based positions
# (update_page!, `Delta(pos => bytes, ...)`), else 0-based offsets (the deprecated
# `Delta([offset => bytes, ...])`).
function sparse_parts(runs::AbstractVector{<:Pair}, base::Integer = 0; one_based::Bool = false)
    base = u64_arg(base, "offset")
    offsets = Vector{UInt64}(undef, length(runs))
    lens = Vector{UInt64}(undef, length(runs))
    data = UInt8[]
    for (i, r) in enumerate(runs)
        o = first(r)
        o isa Integer || throw(ArgumentError("a run is $(one_based ? "position" : "offset") => bytes; got $(repr(o)) as its $(one_based ? "position" : "offset")"))
        b = last(r)
        b isa Union{AbstractVector{UInt8},AbstractString} ||
            throw(ArgumentError("a run is $(one_based ? "position" : "offset") => bytes; got $(typeof(b)) bytes"))
        bytes = contiguous(b)
        if one_based
            o >= 1 || throw(MMSBError(LibMMSB.MMSB_STATUS_CODE_INVALID_ARGUMENT,
                                      "a run's position is 1-based (the first byte is 1), got $o"))
            offsets[i] = base + UInt64(o - 1)
        else
            offsets[i] = base + u64_arg(o, "run offset")
        end
        lens[i] = length(bytes)
        append!(data, bytes)
    end
    return offsets, lens, data
end
