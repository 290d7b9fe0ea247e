# Zero-copy, read-only views of a page's bytes.

"""
    PageView <: AbstractVector{UInt8}

A zero-copy, read-only view of a page's bytes (from [`page_view`](@ref)). It
holds the native view handle, which keeps the bytes mapped, and a reference to
its state. The bytes are live: they change as deltas are routed to the page
(use [`read_page`](@ref) for a consistent snapshot).

`close(view)` releases it (idempotent); closing its state or freeing its page
closes it too. Indexing a closed view throws an [`MMSBError`](@ref) named
`"closed"`. Do not close a view while another thread reads it.
"""
mutable struct PageView <: AbstractVector{UInt8}
    handle::Threads.Atomic{UInt}  # the MmsbView*; swapped to 0 by the one close that frees it
    ptr::Ptr{UInt8}
    len::Int
    page::PageId
    state::MMSBState              # the parent outlives its children
    function PageView(h::Ptr{LibMMSB.MmsbView}, ptr::Ptr{UInt8}, len::Integer, page::PageId, s::MMSBState)
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
    ptr = Ref{Ptr{UInt8}}(C_NULL)
    len = Ref{Csize_t}(0)
    st = LibMMSB.mmsb_view_bytes(h, ptr, len)
    if st != LibMMSB.MMSB_OK
        err = last_error(st)
        LibMMSB.mmsb_view_free(h)
        throw(err)
    end
    return register_view!(s, PageView(h, ptr[], Int(len[]), page, s))
end

function page_view(f::Function, s::MMSBState, page::PageId)
    v = page_view(s, page)
    try
        return f(v)
    finally
        close(v)
    end
end

"""
    close(view::PageView)

Releases the view (idempotent); indexing it afterwards throws an
[`MMSBError`](@ref).
"""
function Base.close(v::PageView)
    v.ptr = C_NULL
    h = Threads.atomic_xchg!(v.handle, UInt(0))
    h == 0 || LibMMSB.mmsb_view_free(Ptr{LibMMSB.MmsbView}(h))
    return nothing
end

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

# Pages change only through deltas (the same error on every Julia version).
Base.setindex!(v::PageView, x, i::Int) =
    throw(MMSBError(LibMMSB.MMSB_STATUS_CODE_READ_ONLY, "page views are read-only; write with update_page"))

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
