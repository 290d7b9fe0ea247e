# Zero-copy, read-only views of a page's bytes.

"""
    PageView <: AbstractVector{UInt8}

A zero-copy, read-only view of a page's bytes (from [`page_view`](@ref), of a
state or of an [`MMSBReader`](@ref)). It holds the native view handle, which
keeps the bytes mapped, and a reference to its state or reader. The bytes are live: they change as deltas are routed to the page
(use [`read_page`](@ref) for a consistent snapshot).

`close(view)` releases it (idempotent); closing its state or freeing its page
closes it too. Indexing a closed view throws an [`MMSBError`](@ref) named
`"closed"`. Do not close a view while another thread reads it.

Zero-copy interop: `pointer(view)` is the address of byte 1 (`pointer(view,
i)` of byte `i`), and a `PageView` converts to `Ptr{UInt8}` for `ccall`. As
with `pointer(array)`, the address is valid only while the view is open *and*
referenced: keep it referenced with `GC.@preserve view begin ... end` around
all use of the pointer (a view that is collected or closed releases the
mapping). `reinterpret(Float64, view)` reads the bytes as other numbers (a
lazy, read-only array), and `unsafe_wrap(Array, view)` wraps them as a
`Vector{UInt8}` without copying, under the same `GC.@preserve` rule; never
write through a wrapped array or a pointer: pages change only through deltas
(writes would bypass the log, epochs and events).

    GC.@preserve v begin
        x = unsafe_wrap(Array, Ptr{Float64}(pointer(v)), length(v) ÷ 8)   # a Vector{Float64}, no copy
        sum(x)
    end
"""
mutable struct PageView <: AbstractVector{UInt8}
    handle::Threads.Atomic{UInt}  # the MmsbView*; swapped to 0 by the one close that frees it
    ptr::Ptr{UInt8}
    len::Int
    page::PageId
    state::Union{MMSBState,MMSBReader}  # the parent outlives its children
    function PageView(h::Ptr, ptr::Ptr{UInt8}, len::Integer, page::PageId, s::Union{MMSBState,MMSBReader})
        v = new(Threads.Atomic{UInt}(UInt(h)), ptr, len, page, s)
        return finalizer(close, v)
    end
end

"""
    page_view(state, page) -> PageView
    page_view(f, state, page)

A zero-copy view of the page's bytes (see [`PageView`](@ref)). The do-block form
runs `f(view)` and closes the view afterwards.
"""
function page_view(s::MMSBState, page::PageId)
    out = Ref{Ptr{LibMMSB.MmsbView}}(C_NULL)
    scall(LibMMSB.mmsb_page_view, s, page.value, out)
    h = out[]
    ptr, len = view_bytes(h, LibMMSB.mmsb_view_bytes, LibMMSB.mmsb_view_free)
    return register_view!(s, PageView(h, ptr, len, page, s))
end

# A new view handle's `(pointer, length)` through `bytes_fn`; if that fails, the handle is freed
# with `free_fn` and the error thrown (`page_view` of a state, and of a reader in reader.jl).
function view_bytes(h, bytes_fn, free_fn)
    ptr = Ref{Ptr{UInt8}}(C_NULL)
    len = Ref{Csize_t}(0)
    st = bytes_fn(h, ptr, len)
    if st != LibMMSB.MMSB_OK
        err = last_error(st)
        free_fn(h)
        throw(err)
    end
    return ptr[], Int(len[])
end

# The do-block form, for a state and for a reader alike.
page_view(f::Function, s::Union{MMSBState,MMSBReader}, page::PageId) = with_close(f, page_view(s, page))

"""
    close(view::PageView)

Releases the view (idempotent); indexing it afterwards throws an
[`MMSBError`](@ref).
"""
function Base.close(v::PageView)
    v.ptr = C_NULL
    h = Threads.atomic_xchg!(v.handle, UInt(0))
    h == 0 || free_view_handle(v.state, h)
    return nothing
end

free_view_handle(::MMSBState, h::UInt) = LibMMSB.mmsb_view_free(Ptr{LibMMSB.MmsbView}(h))
free_view_handle(::MMSBReader, h::UInt) = LibMMSB.mmsb_reader_view_free(Ptr{LibMMSB.MmsbReaderView}(h))

"""
    isopen(view::PageView) -> Bool

Whether the view can still be read.
"""
Base.isopen(v::PageView) = v.ptr != C_NULL

Base.size(v::PageView) = (v.len,)
Base.IndexStyle(::Type{PageView}) = IndexLinear()

Base.@propagate_inbounds function Base.getindex(v::PageView, i::Int)
    @boundscheck checkbounds(v, i)
    p = v.ptr
    p == C_NULL && throw(closed_error("view of page $(v.page.value)"))
    return GC.@preserve v unsafe_load(p, i)
end

"""
    pointer(view::PageView[, i=1]) -> Ptr{UInt8}

The address of byte `i` of the view (1-based). Valid only while the view is
open and referenced: use it under `GC.@preserve view` (see [`PageView`](@ref)).
Throws an [`MMSBError`](@ref) named `"closed"` for a closed view.
"""
function Base.pointer(v::PageView, i::Integer = 1)
    p = v.ptr
    p == C_NULL && throw(closed_error("view of page $(v.page.value)"))
    1 <= i <= v.len + 1 || throw(BoundsError(v, i))   # one past the end, as for arrays
    return p + (i - 1)
end
Base.unsafe_convert(::Type{Ptr{UInt8}}, v::PageView) = pointer(v)
Base.unsafe_convert(::Type{Ptr{Cvoid}}, v::PageView) = Ptr{Cvoid}(pointer(v))
Base.strides(::PageView) = (1,)
Base.elsize(::Type{PageView}) = 1

"""
    unsafe_wrap(Array, view::PageView) -> Vector{UInt8}

The view's bytes as a `Vector{UInt8}`, without copying. Unsafe as
`unsafe_wrap` is: use the array only under `GC.@preserve view` while the view
is open, and never write to it (see [`PageView`](@ref)).
"""
Base.unsafe_wrap(::Type{Array}, v::PageView) = unsafe_wrap(Array, pointer(v), v.len; own = false)

# Pages change only through deltas (the same error on every Julia version).
Base.setindex!(v::PageView, x, i::Int) =
    throw(MMSBError(LibMMSB.MMSB_STATUS_CODE_READ_ONLY, "page views are read-only; write with update_page!"))

function Base.copy(v::PageView)
    out = Vector{UInt8}(undef, v.len)
    p = v.ptr
    p == C_NULL && throw(closed_error("view of page $(v.page.value)"))
    GC.@preserve v out unsafe_copyto!(pointer(out), p, v.len)
    return out
end

function Base.show(io::IO, v::PageView)
    print(io, "PageView(", v.page, ", ", v.len, " bytes", isopen(v) ? "" : ", closed", ")")
end
Base.show(io::IO, ::MIME"text/plain", v::PageView) = show(io, v)

# --- a state as a collection of its pages ------------------------------------------

"""
    state[page] -> PageView

A view of the page (as [`page_view`](@ref)). A state is also a collection of
its pages: `length(state)` pages, `for page in state` over their
[`PageId`](@ref)s in ascending order (a snapshot taken when the loop starts),
`keys(state)` (the ids), `pairs(state)` (`page => view`), `haskey(state,
page)`. The REPL shows a short table of the pages.
"""
Base.getindex(s::MMSBState, page::PageId) = page_view(s, page)

Base.length(s::MMSBState) = length(page_ids(s))
Base.keys(s::MMSBState) = page_ids(s)
Base.haskey(s::MMSBState, page::PageId) = page in page_ids(s)
Base.pairs(s::MMSBState) = (p => page_view(s, p) for p in page_ids(s))
Base.eltype(::Type{MMSBState}) = PageId
# Pages may be added or freed by other threads while a loop runs: no fixed length.
Base.IteratorSize(::Type{MMSBState}) = Base.SizeUnknown()
# In broadcasting a state is one value (`read_page.(state, pages)` reads each page).
Base.broadcastable(s::MMSBState) = Ref(s)

function Base.iterate(s::MMSBState, st = (page_ids(s), 1))
    ids, i = st
    return i > length(ids) ? nothing : (ids[i], (ids, i + 1))
end

const SHOW_PAGES = 10

function Base.show(io::IO, ::MIME"text/plain", s::MMSBState)
    show(io, s)
    isopen(s) || return
    ids = page_ids(s)
    isempty(ids) && return
    print(io, ":\n  ", rpad("page", 10), lpad("size", 12), lpad("epoch", 10), "  ", rpad("location", 9), "name")
    for p in ids[1:min(end, SHOW_PAGES)]
        i = page_info(s, p)
        print(io, "\n  ", rpad(string(Int(p.value)), 10), lpad(i.size < 1024 ? string(i.size) : Base.format_bytes(i.size), 12),
              lpad(i.epoch, 10), "  ", rpad(i.location, 9), i.name)
    end
    length(ids) > SHOW_PAGES && print(io, "\n  ⋮ (", length(ids) - SHOW_PAGES, " more)")
end
