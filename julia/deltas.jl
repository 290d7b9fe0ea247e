# Delta objects: built, combined and applied in Julia, routed to pages by the core.

"""
    Delta

A change to a page's bytes, held by the core (a native handle freed by the
finalizer or by `close`). Constructors (byte positions are 1-based, as
everywhere in the Julia API: position 1 is the page's first byte, `view[1]`):
- `Delta(bytes; at = 1)`: write `bytes` to bytes `at` to `at + length(bytes) - 1`;
- `Delta(bytes, mask; at = 1)`: dense masked write (`mask::AbstractVector{Bool}`,
  one entry per byte: byte `at + i - 1` is written where `mask[i]`);
- `Delta(pos => bytes, ...)`: sparse write, one run of `bytes` from the 1-based
  position `pos` per pair (`Delta(runs...)` for a vector `runs` of pairs);
- [`delta_diff`](@ref)`(old, new)`: the smallest delta turning `old` into `new`;
- [`decode_delta`](@ref)`(bytes)`: from its encoding.

`Delta(bytes; at = k)` writes what `update_page!(state, page, bytes; at = k)`
does. The previous release's positional forms `Delta(offset, bytes)`,
`Delta(offset, bytes, mask)` and `Delta([offset => bytes, ...])` took 0-based
offsets; they still work, with a deprecation warning, for one release.

Combine with [`compose`](@ref) / `⊕`, apply to bytes with [`apply`](@ref), route
to a page with [`route_delta!`](@ref) or [`route_batch!`](@ref).
"""
mutable struct Delta
    ptr::Ptr{LibMMSB.MmsbDelta}
    function Delta(ptr::Ptr{LibMMSB.MmsbDelta})
        return finalizer(close, new(ptr))
    end
end

function Base.unsafe_convert(::Type{Ptr{LibMMSB.MmsbDelta}}, d::Delta)
    p = d.ptr
    p == C_NULL && throw(closed_error("delta"))
    return p
end

function new_delta(f)
    out = Ref{Ptr{LibMMSB.MmsbDelta}}(C_NULL)
    check(f(out))
    return Delta(out[])
end

# The 0-based offset the C API takes for the 1-based position `at`.
function delta_at(at::Integer)
    at >= 1 || throw(MMSBError(LibMMSB.MMSB_STATUS_CODE_INVALID_ARGUMENT,
                               "at is a 1-based byte position (the first byte is at = 1), got $at"))
    return UInt64(at - 1)
end

delta_write(off::UInt64, b) = new_delta(out -> LibMMSB.mmsb_delta_new_write(off, b, length(b), out))

function delta_dense(off::UInt64, bytes, mask)
    b = contiguous(bytes)
    m = mask_bits(mask, length(b))
    return GC.@preserve m new_delta(out -> LibMMSB.mmsb_delta_new_dense(off, mask_ptr(m), cld(length(b), 8), b,
                                                                       length(b), out))
end

function delta_sparse(runs::AbstractVector{<:Pair}; one_based::Bool)
    offsets, lens, data = sparse_parts(runs; one_based = one_based)
    return new_delta(out -> LibMMSB.mmsb_delta_new_sparse(offsets, lens, length(offsets), data, length(data), out))
end

Delta(bytes::Union{AbstractVector{UInt8},AbstractString}; at::Integer = 1) = delta_write(delta_at(at), contiguous(bytes))
Delta(bytes::AbstractVector{UInt8}, mask::AbstractVector{Bool}; at::Integer = 1) = delta_dense(delta_at(at), bytes, mask)
Delta(runs::Pair...) = delta_sparse(collect(Pair, runs); one_based = true)

# The previous release's 0-based positional forms (see deprecated.jl's note):
# they convert, so old code keeps writing the same bytes, and warn.
function Delta(offset::Integer, bytes::Union{AbstractVector{UInt8},AbstractString})
    Base.depwarn("`Delta(offset, bytes)` is deprecated: byte positions are 1-based, use " *
                 "`Delta(bytes; at = offset + 1)`", :Delta)
    return delta_write(u64_arg(offset, "offset"), contiguous(bytes))
end

function Delta(offset::Integer, bytes::AbstractVector{UInt8}, mask::AbstractVector{Bool})
    Base.depwarn("`Delta(offset, bytes, mask)` is deprecated: byte positions are 1-based, use " *
                 "`Delta(bytes, mask; at = offset + 1)`", :Delta)
    return delta_dense(u64_arg(offset, "offset"), bytes, mask)
end

function Delta(runs::AbstractVector{<:Pair})
    Base.depwarn("`Delta([offset => bytes, ...])` is deprecated: byte positions are 1-based, use " *
                 "`Delta(offset + 1 => bytes, ...)`", :Delta)
    return delta_sparse(runs; one_based = false)
end

"""
    delta_diff(old, new) -> Delta

The smallest delta turning the bytes `old` into `new` (same length, offset 0).
"""
function delta_diff(old::AbstractVector{UInt8}, new::AbstractVector{UInt8})
    a, b = contiguous(old), contiguous(new)
    length(a) == length(b) || throw(MMSBError(LibMMSB.MMSB_STATUS_CODE_LENGTH_MISMATCH,
                                              "diff of $(length(a)) bytes against $(length(b)) bytes"))
    return new_delta(out -> LibMMSB.mmsb_delta_new_diff(a, b, length(a), out))
end

"""
    compose(a::Delta, b::Delta) -> Delta
    a ⊕ b

The delta that applies `a` then `b` (`b` wins where both write).
"""
compose(a::Delta, b::Delta) = new_delta(out -> LibMMSB.mmsb_delta_compose(a, b, out))

"""
    a ⊕ b

For two deltas, [`compose`](@ref)`(a, b)`. For bytes and a delta,
`bytes ⊕ Δ` is [`apply`](@ref)`(Δ, bytes)`: the seed's `state ⊕ Δ → state′`.
"""
⊕(a::Delta, b::Delta) = compose(a, b)
⊕(bytes::AbstractVector{UInt8}, d::Delta) = apply(d, bytes)

"""
    apply!(buf::Vector{UInt8}, delta) -> buf

Applies the delta to `buf` in place (no state involved). Throws an
[`MMSBError`](@ref) if the delta writes past the end of `buf`.
"""
function apply!(buf::Vector{UInt8}, d::Delta)
    check(LibMMSB.mmsb_delta_apply(d, buf, length(buf)))
    return buf
end

"""
    apply(delta, bytes) -> Vector{UInt8}

A copy of `bytes` with the delta applied.
"""
apply(d::Delta, bytes::AbstractVector{UInt8}) = apply!(collect(UInt8, bytes), d)

"""
    encode_delta(delta) -> Vector{UInt8}

The delta's portable encoding (what the log stores); see [`decode_delta`](@ref).
"""
function encode_delta(d::Delta)
    len = Ref{Csize_t}(0)
    buf = Vector{UInt8}(undef, 64)
    st = LibMMSB.mmsb_delta_encode(d, buf, length(buf), len)
    if st == LibMMSB.MMSB_STATUS_CODE_BUFFER_TOO_SMALL
        resize!(buf, len[])
        st = LibMMSB.mmsb_delta_encode(d, buf, length(buf), len)
    end
    check(st)
    return resize!(buf, len[])
end

"""
    decode_delta(bytes) -> Delta

The delta encoded in exactly `bytes` (see [`encode_delta`](@ref)); malformed
input throws an [`MMSBError`](@ref).
"""
function decode_delta(bytes::AbstractVector{UInt8})
    b = contiguous(bytes)
    return new_delta(out -> LibMMSB.mmsb_delta_decode(b, length(b), out))
end

function delta_stats(d::Delta)
    written = Ref{UInt64}(0)
    dense = Ref{UInt8}(0)
    check(LibMMSB.mmsb_delta_stats(d, written, dense))
    return written[], dense[] == 1
end

"""
    written_bytes(delta) -> Int

How many bytes the delta writes.
"""
written_bytes(d::Delta) = Int(delta_stats(d)[1])

"""
    isdense(delta) -> Bool

Whether the delta is stored dense (data + bit mask) rather than as sparse runs.
"""
isdense(d::Delta) = delta_stats(d)[2]

"""
    close(delta::Delta)

Frees the native delta now rather than at garbage collection (idempotent). Do
not close a delta while another thread uses it.
"""
Base.close(d::Delta) = free_handle!(LibMMSB.mmsb_delta_free, d)

"""
    isopen(delta::Delta) -> Bool

Whether the delta has not been closed.
"""
Base.isopen(d::Delta) = d.ptr != C_NULL

function Base.show(io::IO, d::Delta)
    if !isopen(d)
        print(io, "Delta(closed)")
    else
        w, dense = delta_stats(d)
        print(io, "Delta(", dense ? "dense" : "sparse", ", ", Int(w), " bytes written)")
    end
end

"""
    route_delta!(state, page, delta; expected_epoch=nothing) -> lsn

Routes a delta to a page (the delta itself is unchanged and can be reused).
With `expected_epoch` it is a compare-and-set on the page's [`page_epoch`](@ref).
"""
function route_delta!(s::MMSBState, page::PageId, d::Delta; expected_epoch::Union{Nothing,Integer} = nothing)
    return route_with(LibMMSB.mmsb_route_delta, s, page, d, expected_epoch)
end

# `route_delta!` and `apply_on_device!` (device.jl): the same checks and arguments for `cfn`.
function route_with(cfn, s::MMSBState, page::PageId, d::Delta, expected_epoch)
    e = epoch_arg(expected_epoch)
    isopen(d) || throw(closed_error("delta"))   # before the call is counted in
    st, l = with_u64_out(out -> cfn(enter(s), page.value, d, e, out))
    check(s, st)
    return Int(l)
end

"""
    route_batch!(state, ops) -> UnitRange{Int}

Routes several deltas atomically: all apply, in order, or none (one lock, one
log record). `ops` holds `page => delta` pairs or `(page, delta, expected_epoch)`
tuples. Returns the range of LSNs assigned (empty for an empty batch).
"""
function route_batch!(s::MMSBState, ops::AbstractVector)
    out = Ref{Ptr{LibMMSB.MmsbBatch}}(C_NULL)
    check(LibMMSB.mmsb_batch_new(out))
    batch = out[]
    try
        for op in ops
            page, d, e = batch_op(op)
            check(LibMMSB.mmsb_batch_push(batch, page.value, d, epoch_arg(e)))
        end
        first = Ref{UInt64}(0)
        count = Ref{UInt64}(0)
        scall(LibMMSB.mmsb_batch_route, s, batch, first, count)
        return count[] == 0 ? (1:0) : (Int(first[]):Int(first[] + count[] - 1))
    finally
        LibMMSB.mmsb_batch_free(batch)
    end
end

batch_op(op::Pair{PageId,Delta}) = (op.first, op.second, nothing)
batch_op(op::Tuple{PageId,Delta}) = (op[1], op[2], nothing)
batch_op(op::Tuple{PageId,Delta,Union{Nothing,Integer}}) = op
batch_op(op) = throw(ArgumentError("a batch entry is page => delta or (page, delta, expected_epoch); got $(repr(op))"))
