# Readers of a state directory, from this or another process (C: mmsb_open_reader & co).

"""
    MMSBReader

A reader of a state directory whose writer (in this or another process) uses
file-backed pages (`mmsb_start(dir = ..., file_backed_pages = true)`). Open one
with [`mmsb_open(dir; readonly = true)`](@ref mmsb_open). A reader takes no
lock and never blocks the writer; it works while the writer runs, after it
closed, and after it crashed.

- [`lsn`](@ref)`(r)`: the writer's last applied LSN; [`durable_lsn`](@ref)`(r)`:
  the last one acknowledged to its caller; `MMSB.generation(r)`: +1 at each
  writer open (a change means the writer restarted); [`writer_status`](@ref)`(r)`.
- [`wait_lsn`](@ref)`(r, n)`: waits until the LSN reaches `n` without
  blocking other tasks.
- [`read_page`](@ref)`(r, page)`, [`read_page!`](@ref)`(buf, r, page)`: a
  consistent snapshot of a page (never torn bytes).
- [`page_view`](@ref)`(r, page)`: a zero-copy [`PageView`](@ref) of the mapped
  bytes (live, no snapshot); it stays valid after the reader is closed.
- [`page_ids`](@ref)`(r)`: the pages the writer has now.

`close(r)` frees it (idempotent; also done by the finalizer).
"""
mutable struct MMSBReader
    ptr::Ptr{LibMMSB.MmsbReader}
    dir::String
    lock::ReentrantLock   # held around every native call, so close never frees under one
    function MMSBReader(p::Ptr{LibMMSB.MmsbReader}, dir::String)
        return finalizer(r -> free_handle!(LibMMSB.mmsb_reader_free, r), new(p, dir, ReentrantLock()))
    end
end

"""
    mmsb_open(dir; readonly = true) -> MMSBReader
    mmsb_open(f, dir; readonly = true)

Opens a reader of the state directory `dir` (see [`MMSBReader`](@ref)). Only
`readonly = true` is supported: to write, open the state with
[`mmsb_start`](@ref)`(dir = dir, ...)`. Throws an [`MMSBError`](@ref) named
`"unsupported"` when no writer with file-backed pages ever opened `dir`, and
`"unsupported_version"` for a header of another layout. The do-block form
closes the reader afterwards.
"""
function mmsb_open(dir::AbstractString; readonly::Bool = true)
    readonly || throw(ArgumentError("mmsb_open opens readers only (readonly = true); open a writer with " *
                                    "mmsb_start(dir = ...)"))
    d = String(dir)
    out = Ref{Ptr{LibMMSB.MmsbReader}}(C_NULL)
    st = LibMMSB.mmsb_open_reader(d, sizeof(d), out)
    st == LibMMSB.MMSB_OK || throw(last_error(st))
    return MMSBReader(out[], d)
end

mmsb_open(f::Function, dir::AbstractString; kw...) = with_close(f, mmsb_open(dir; kw...))

"Runs `f(ptr)` on the live reader under its lock; throws the error of a failed status."
function rcall(f, r::MMSBReader)
    lock(r.lock) do
        p = r.ptr
        p == C_NULL && throw(closed_error("reader"))
        st = f(p)
        st == LibMMSB.MMSB_OK || throw(last_error(st))
        return nothing
    end
end

"""
    close(r::MMSBReader)

Frees the reader (idempotent). Its [`PageView`](@ref)s stay valid.
"""
Base.close(r::MMSBReader) = lock(() -> free_handle!(LibMMSB.mmsb_reader_free, r), r.lock)

Base.isopen(r::MMSBReader) = r.ptr != C_NULL

function reader_status(r::MMSBReader)
    out = Ref(LibMMSB.MmsbReaderStatus())
    rcall(p -> LibMMSB.mmsb_reader_status(p, out), r)
    return out[]
end

lsn(r::MMSBReader) = Int(reader_status(r).lsn)

"""
    durable_lsn(r::MMSBReader) -> Int

The writer's last LSN acknowledged to its caller (durable as the writer's
durability promises); [`lsn`](@ref)`(r)` may be ahead of it.
"""
durable_lsn(r::MMSBReader) = Int(reader_status(r).durable_lsn)

"""
    MMSB.generation(r::MMSBReader) -> Int

The writer generation: +1 at each writer open. A change means the writer
restarted (after a crash, LSNs may go back to the recovered one).
"""
generation(r::MMSBReader) = Int(reader_status(r).generation)

const WRITER_STATES = Dict(LibMMSB.MMSB_WRITER_RUNNING => :running, LibMMSB.MMSB_WRITER_RECOVERING => :recovering,
                           LibMMSB.MMSB_WRITER_CLOSED => :closed, LibMMSB.MMSB_WRITER_CRASHED => :crashed)

"""
    writer_status(r::MMSBReader) -> Symbol

`:running`, `:recovering` (reads throw `"busy"` meanwhile), `:closed` (the page
files hold its final state) or `:crashed` (its process is gone; the next
writer's recovery decides what stays).
"""
writer_status(r::MMSBReader) = get(WRITER_STATES, reader_status(r).writer_state, :unknown)

page_ids(r::MMSBReader) = page_list() do buf, cap, n
    lock(r.lock) do
        r.ptr == C_NULL && throw(closed_error("reader"))
        LibMMSB.mmsb_reader_page_list(r.ptr, buf, cap, n)
    end
end

"""
    read_page!(buf, r::MMSBReader, page) -> NamedTuple

Copies a consistent snapshot of `page` into `buf` (`length(buf)` must be the
page's size) and returns `(epoch, lsn)` of that snapshot: the bytes of one
moment of the writer, never torn.
"""
function read_page!(buf::Vector{UInt8}, r::MMSBReader, page::PageId)
    info = Ref(LibMMSB.MmsbReadInfo())
    GC.@preserve buf rcall(p -> LibMMSB.mmsb_reader_read(p, page.value, buf, length(buf), info), r)
    return (epoch = Int(info[].epoch), lsn = Int(info[].lsn))
end

"""
    read_page(r::MMSBReader, page) -> Vector{UInt8}

A consistent snapshot of the page's bytes (see [`read_page!`](@ref)).
"""
function read_page(r::MMSBReader, page::PageId)
    while true
        size = Ref{UInt64}(0)
        rcall(p -> LibMMSB.mmsb_reader_page_size(p, page.value, size), r)
        buf = Vector{UInt8}(undef, size[])
        try
            read_page!(buf, r, page)
            return buf
        catch err
            # (Sizes never change; kept for a page replaced between the two calls.)
            err isa MMSBError && err.name == "length_mismatch" && continue
            rethrow()
        end
    end
end

"""
    page_view(r::MMSBReader, page) -> PageView

A zero-copy, read-only view of the page's mapped bytes (live: they change as
the writer writes; use [`read_page`](@ref) for a snapshot). `pointer(view)`
works while the view is open and referenced.
"""
function page_view(r::MMSBReader, page::PageId)
    out = Ref{Ptr{LibMMSB.MmsbReaderView}}(C_NULL)
    rcall(p -> LibMMSB.mmsb_reader_view(p, page.value, out), r)
    h = out[]
    ptr, len = view_bytes(h, LibMMSB.mmsb_reader_view_bytes, LibMMSB.mmsb_reader_view_free)
    return PageView(h, ptr, len, page, r)
end

"""
    wait_lsn(r::MMSBReader, n; timeout = Inf) -> Int

Waits until the writer's LSN reaches `n`, `timeout` seconds pass, or no writer
runs that could reach it (closed or crashed), and returns the LSN then
(compare it with `n`). Other tasks run meanwhile: the wait sleeps on a native
thread that wakes this task through a `Base.AsyncCondition` when it ends.
"""
function wait_lsn(r::MMSBReader, n::Integer; timeout::Real = Inf)
    target = u64_arg(n, "n")
    timeout >= 0 || throw(ArgumentError("timeout must be non-negative, got $timeout"))
    now = lsn(r)
    now >= target && return now
    ms = isfinite(timeout) ? UInt64(ceil(timeout * 1000)) : typemax(UInt64)
    if UV_ASYNC_SEND[] == C_NULL
        # No libuv wake-up in this Julia: poll the native wait in short slices.
        deadline = time() + timeout
        while true
            out = Ref{UInt64}(0)
            slice = UInt64(min(ms, 10))
            rcall(p -> LibMMSB.mmsb_reader_wait(p, target, slice, out), r)
            (out[] >= target || time() >= deadline) && return Int(out[])
            yield()
        end
    end
    cond = rooted_notify_condition()
    w = Ref{Ptr{LibMMSB.MmsbReaderWait}}(C_NULL)
    try
        rcall(p -> LibMMSB.mmsb_reader_wait_async(p, target, ms, UV_ASYNC_SEND[], cond.handle, w), r)
        done = Ref{UInt8}(0)
        got = Ref{UInt64}(0)
        while true
            st = LibMMSB.mmsb_reader_wait_poll(w[], done, got)
            st == LibMMSB.MMSB_OK || throw(last_error(st))
            done[] == 1 && return Int(got[])
            # A wake-up sent since the poll above is remembered by the condition.
            wait(cond)
        end
    finally
        # Joins the native thread: no wake-up of `cond` is in flight afterwards.
        LibMMSB.mmsb_reader_wait_free(w[])
        while !unroot_notify(cond)
            yield()
        end
        close(cond)
    end
end

function Base.show(io::IO, r::MMSBReader)
    if isopen(r)
        s = reader_status(r)
        print(io, "MMSBReader(", repr(r.dir), ", lsn ", Int(s.lsn), ", writer ",
              get(WRITER_STATES, s.writer_state, :unknown), ")")
    else
        print(io, "MMSBReader(", repr(r.dir), ", closed)")
    end
end
