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
`:unified`; `name` is free text, kept in the page's metadata).
"""
function create_page(s::MMSBState, size::Integer; location::Symbol = :cpu, name::AbstractString = "")
    n = String(name)
    out = Ref{UInt64}(0)
    scall(LibMMSB.mmsb_page_create, s, u64_arg(size, "size"), location_code(location), n, sizeof(n), out)
    return PageId(out[])
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
function page_ids(s::MMSBState)
    count = Ref{Csize_t}(0)
    buf = Vector{UInt64}(undef, 16)
    while true
        st = release(s, LibMMSB.mmsb_page_list(enter(s), buf, length(buf), count))
        if st == LibMMSB.MMSB_STATUS_CODE_BUFFER_TOO_SMALL # pages were added meanwhile: retry larger
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

"""
    read_page(state, page; offset=0, len=size-offset) -> Vector{UInt8}

A copy of `len` bytes of the page from `offset` (a consistent snapshot).
"""
function read_page(s::MMSBState, page::PageId; offset::Integer = 0, len::Union{Nothing,Integer} = nothing)
    off = u64_arg(offset, "offset")
    n = if len === nothing
        size = raw_info(s, page).size
        off <= size || throw(MMSBError(LibMMSB.MMSB_STATUS_CODE_OUT_OF_BOUNDS,
                                       "offset $off is past the end of page $(page.value) ($size bytes)"))
        size - off
    else
        u64_arg(len, "len")
    end
    return read_page!(Vector{UInt8}(undef, n), s, page; offset = offset)
end

"""
    read_page!(buf, state, page; offset=0) -> buf

Copies `length(buf)` bytes of the page from `offset` into `buf`.
"""
function read_page!(buf::Vector{UInt8}, s::MMSBState, page::PageId; offset::Integer = 0)
    scall(LibMMSB.mmsb_page_read, s, page.value, u64_arg(offset, "offset"), buf, length(buf))
    return buf
end

"""
    update_page!(state, page, bytes; offset=0, expected_epoch=nothing) -> lsn
    update_page!(state, page, bytes, mask; offset=0, expected_epoch=nothing) -> lsn
    update_page!(state, page, runs; offset=0, expected_epoch=nothing) -> lsn

Writes to a page through a delta and returns its log sequence number.
- `bytes` (a byte vector or string): written at `offset` as the smallest delta
  from the page's current bytes (only the bytes that change are recorded).
- `bytes, mask` (`mask::BitVector` or `Vector{Bool}`, `length(mask) ==
  length(bytes)`): a dense masked write: byte `i` is written where `mask[i]`.
- `runs`, a vector of `offset => bytes` pairs: a sparse write; later runs win
  where runs overlap; `offset` is added to every run's offset.

With `expected_epoch`, the write happens only if the page's [`page_epoch`](@ref) still
equals it, else an [`MMSBError`](@ref) named `"epoch_conflict"` is thrown and
nothing changes (compare-and-set).
"""
function update_page!(s::MMSBState, page::PageId, bytes::Union{AbstractVector{UInt8},AbstractString};
                     offset::Integer = 0, expected_epoch::Union{Nothing,Integer} = nothing)
    b = contiguous(bytes)
    off, e = u64_arg(offset, "offset"), epoch_arg(expected_epoch)
    st, l = with_u64_out(out -> LibMMSB.mmsb_page_update(enter(s), page.value, off, b, length(b), e, out))
    check(s, st)
    return Int(l)   # LSNs and epochs are Ints in Julia: they print in decimal
end

function update_page!(s::MMSBState, page::PageId, bytes::AbstractVector{UInt8}, mask::AbstractVector{Bool};
                     offset::Integer = 0, expected_epoch::Union{Nothing,Integer} = nothing)
    b = contiguous(bytes)
    m = mask_bits(mask, length(b))
    off, e = u64_arg(offset, "offset"), epoch_arg(expected_epoch)
    st, l = GC.@preserve m with_u64_out(out -> LibMMSB.mmsb_page_write_masked(enter(s), page.value, off,
                                                                              mask_ptr(m), cld(length(b), 8), b,
                                                                              length(b), e, out))
    check(s, st)
    return Int(l)
end

function update_page!(s::MMSBState, page::PageId, runs::AbstractVector{<:Pair};
                     offset::Integer = 0, expected_epoch::Union{Nothing,Integer} = nothing)
    offsets, lens, data = sparse_parts(runs, offset)
    e = epoch_arg(expected_epoch)
    st, l = with_u64_out(out -> LibMMSB.mmsb_page_write_sparse(enter(s), page.value, offsets, lens, length(offsets), data,
                                                               length(data), e, out))
    check(s, st)
    return Int(l)
end

"""
    write_page!(state, page, bytes; offset=0, expected_epoch=nothing) -> lsn

Writes `bytes` at `offset` as a plain write (one run, recorded as given, without
comparing to the current bytes: cheaper than [`update_page!`](@ref) when most
bytes change).
"""
function write_page!(s::MMSBState, page::PageId, bytes::Union{AbstractVector{UInt8},AbstractString};
                    offset::Integer = 0, expected_epoch::Union{Nothing,Integer} = nothing)
    b = contiguous(bytes)
    off, e = u64_arg(offset, "offset"), epoch_arg(expected_epoch)
    st, l = with_u64_out(out -> LibMMSB.mmsb_page_write(enter(s), page.value, off, b, length(b), e, out))
    check(s, st)
    return Int(l)
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

function sparse_parts(runs::AbstractVector{<:Pair}, offset::Integer = 0)
    base = u64_arg(offset, "offset")
    offsets = Vector{UInt64}(undef, length(runs))
    lens = Vector{UInt64}(undef, length(runs))
    data = UInt8[]
    for (i, r) in enumerate(runs)
        o = first(r)
        o isa Integer || throw(ArgumentError("a run is offset => bytes; got offset $(repr(o))"))
        b = last(r)
        b isa Union{AbstractVector{UInt8},AbstractString} ||
            throw(ArgumentError("a run is offset => bytes; got $(typeof(b)) bytes"))
        bytes = contiguous(b)
        offsets[i] = base + u64_arg(o, "run offset")
        lens[i] = length(bytes)
        append!(data, bytes)
    end
    return offsets, lens, data
end
