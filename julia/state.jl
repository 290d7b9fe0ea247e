# MMSBState: the handle of one native state, its configuration and life cycle.

"""
    MMSBState

A running MMSB state (pages, router and, with a directory, the log), created by
[`mmsb_start`](@ref). Safe to use from several threads at once: the core
serialises mutations and gives each a log sequence number (LSN).

`close(state)` closes it: later calls on it throw an [`MMSBError`](@ref) with
name `"closed"`, its pages, files and directory lock are released and every
[`PageView`](@ref) of it is closed. `close` is idempotent and may run while
other threads use the state: calls in flight finish (or fail with `"closed"`),
and the native handle is freed by the last of them to return.

Close a state you are done with (or use the do-block form of
[`mmsb_start`](@ref)): a state started with `dir` holds a lock on that folder
until it is closed, and one that is merely dropped keeps the lock until the
garbage collector finalizes it, which may be much later, so a new
`mmsb_start(dir = ...)` on the same folder fails with a `"busy"` error saying
the folder "is in use by another open state" meanwhile.
"""
mutable struct MMSBState
    ptr::Ptr{LibMMSB.MmsbState}
    inflight::Threads.Atomic{Int}  # native calls in progress; FREED once the handle is freed
    closing::Threads.Atomic{Bool}  # set by close
    config::NamedTuple
    lock::ReentrantLock        # guards `views`, `prune_at` and `roots`
    views::Vector{WeakRef}     # open PageViews, closed with the state or their page
    prune_at::Int
    roots::Vector{Any}         # Julia functions the core may call (graph transforms)
    function MMSBState(ptr::Ptr{LibMMSB.MmsbState}, config::NamedTuple)
        s = new(ptr, Threads.Atomic{Int}(0), Threads.Atomic{Bool}(false), config, ReentrantLock(), WeakRef[], 64,
                Any[])
        return finalizer(free_state!, s)
    end
end

# Finalizer: no other reference exists, so no call is in flight. Takes no lock
# (finalizers must not wait); views free themselves.
free_state!(s::MMSBState) = free_handle!(LibMMSB.mmsb_state_free, s)

# --- in-flight calls ---------------------------------------------------------
# Every native call on a state runs between `enter` and `leave`, which count the
# calls in flight. `close` closes the native state at once (later calls fail with
# CLOSED) and frees the handle as soon as no call is in flight: itself, or the
# last call to leave. Freeing swaps the count from 0 to FREED, so a later
# `enter` sees a negative count and throws instead of touching freed memory.
const FREED = typemin(Int) ÷ 2

"Counts a native call on `s` in; returns the handle pointer (throws if freed)."
@inline function enter(s::MMSBState)
    if Threads.atomic_add!(s.inflight, 1) < 0
        Threads.atomic_sub!(s.inflight, 1)
        throw(closed_error("state"))
    end
    return s.ptr
end

"Counts a native call on `s` out; after `close`, the last one out frees the handle."
@inline function leave(s::MMSBState)
    if Threads.atomic_sub!(s.inflight, 1) == 1 && s.closing[]
        try_free!(s)
    end
    return nothing
end

function try_free!(s::MMSBState)
    if Threads.atomic_cas!(s.inflight, 0, FREED) == 0
        free_handle!(LibMMSB.mmsb_state_free, s)
    end
    return nothing
end

"""
    MMSB.check(s::MMSBState, status)

Ends a call on `s` that began with `enter(s)`: fetches the error of a failed
call first (same thread, nothing in between), then counts the call out, then
throws the [`MMSBError`](@ref) if there was one.
"""
@inline function check(s::MMSBState, status::UInt32)
    err = status == LibMMSB.MMSB_OK ? nothing : last_error(status)
    leave(s)
    err === nothing || throw(err)
    return nothing
end

"""
    MMSB.scall(f, s::MMSBState, args...)

Calls the LibMMSB wrapper `f(handle, args...)` on state `s` as one counted call
(see `enter`/`leave`) and throws the [`MMSBError`](@ref) of a failure, fetched
before anything else runs. The arguments are evaluated before the call is
counted, and a conversion that throws inside `f` still counts the call out.
"""
function scall(f, s::MMSBState, args...)
    p = enter(s)
    st = try
        f(p, args...)
    catch
        leave(s)
        rethrow()
    end
    return check(s, st)
end

"""
    MMSB.scall_u64(f, s::MMSBState) -> UInt64

The hot-path form of [`scall`](@ref) for C functions with one `uint64_t` out
parameter (an LSN, an epoch): calls `f(handle, out)` as one counted call and
returns what the function wrote to `out`. The call is counted in inside the
`try`, so a conversion that throws while `f` prepares the `ccall` still
counts it out (a leaked count would keep a closed state from ever being freed).
"""
@inline function scall_u64(f, s::MMSBState)
    st, l = with_u64_out() do out
        p = enter(s)
        try
            f(p, out)
        catch
            leave(s)
            rethrow()
        end
    end
    check(s, st)
    return l
end

"Counts a call out and returns its status (for callers that interpret it)."
@inline release(s::MMSBState, status::UInt32) = (leave(s); status)

# Passing the state itself to a LibMMSB wrapper roots it for the call (used by
# code outside these files; it is not counted as in flight).
function Base.unsafe_convert(::Type{Ptr{LibMMSB.MmsbState}}, s::MMSBState)
    p = s.ptr
    p == C_NULL && throw(closed_error("state"))
    return p
end

const DURABILITY = (none = UInt32(0), group_commit = UInt32(1), always = UInt32(2), replicated = UInt32(3))

"""
    mmsb_start(; dir=nothing, durability=:none, logging=dir !== nothing, options...) -> MMSBState
    mmsb_start(f; kw...)

Starts a state. Keywords:
- `dir`: folder for the log, checkpoints and file-backed pages; `nothing` (the
  default) keeps everything in memory. An empty `dir` (`""`) is an
  [`MMSBError`](@ref) named `"invalid_argument"`, not a quiet in-memory state.
- `durability`: what a returned write promises: `:none` (OS buffers),
  `:group_commit` (concurrent writers share one fsync), `:always` (one fsync
  per write) or `:replicated` (group commit, and JetStream acknowledged it;
  needs `replicate`).
- `replicate = (url = ..., stream = ...)`: open the state as the primary of a
  NATS JetStream stream (`docs/replication.md`): every log record is published
  to it; followers ([`mmsb_follow`](@ref)) apply it. Needs a library built with
  the cargo feature `replication`.
- `logging`: keep a transaction log (needed by [`checkpoint_log!`](@ref),
  [`replay_log`](@ref)); off by default in memory. A state with `dir` is the
  logged one: it always logs, and `logging = false` with `dir` throws an
  [`MMSBError`](@ref) named `"invalid_argument"` (leave `dir` out to run
  without a log).
- any other keyword is a numeric/boolean option of the core, passed by name:
  `max_page_size`, `log_size_cap` (default 256 MiB: past it a maintenance
  thread checkpoints and compacts the log; 0 turns that off), `replay_budget`
  (default 64 MiB: log since the newest checkpoint past which that thread
  checkpoints, which bounds the replay after a crash; 0 leaves it to the cap),
  `segment_size`, `blob_min` (payload bytes
  from which a log record keeps its payloads in the segment's blob file),
  `file_backed_pages`, `tolerant_recovery`, `gpu` (an unknown name throws an
  [`MMSBError`](@ref)).

The do-block form runs `f(state)` and closes the state afterwards, also on error:

    mmsb_start(max_page_size = 1 << 20) do state
        page = create_page(state, 4096)
        update_page!(state, page, rand(UInt8, 64))
    end
"""
function mmsb_start(; dir = nothing, durability::Symbol = :none, logging::Union{Nothing,Bool} = nothing,
                    replicate = nothing, options...)
    check_durability(durability)
    dir === nothing || !isempty(String(dir)) ||
        throw(MMSBError(LibMMSB.MMSB_STATUS_CODE_INVALID_ARGUMENT,
                        "dir is empty; pass a directory, or leave dir out (nothing) for an in-memory state"))
    with_config(dir, durability) do cfg
        logging === nothing || check(LibMMSB.mmsb_config_set_logging(cfg, UInt8(logging)))
        if replicate !== nothing
            u, n = String(replicate.url), String(replicate.stream)
            check(LibMMSB.mmsb_config_set_replication(cfg, u, sizeof(u), n, sizeof(n)))
        end
        for (k, v) in options
            (v isa Integer && v >= 0) ||
                throw(ArgumentError("option $k must be a Bool or a non-negative integer, got $(repr(v))"))
            key = String(k)
            check(LibMMSB.mmsb_config_set_u64(cfg, key, sizeof(key), UInt64(v)))
        end
        out = Ref{Ptr{LibMMSB.MmsbState}}(C_NULL)
        check_open(LibMMSB.mmsb_state_open(cfg, out))
        config = merge((dir = dir === nothing ? nothing : String(dir), durability = durability,
                        logging = something(logging, dir !== nothing), replicate = replicate), values(options))
        return MMSBState(out[], config)
    end
end

function check_durability(durability::Symbol)
    haskey(DURABILITY, durability) ||
        throw(ArgumentError("durability must be one of $(keys(DURABILITY)), not $(repr(durability))"))
    return nothing
end

# `f(cfg)` on a new C config with `dir` (when not `nothing`) and `durability` set (`mmsb_start`,
# `promote!`); the config is freed afterwards.
function with_config(f, dir, durability::Symbol)
    cfgp = Ref{Ptr{LibMMSB.MmsbConfig}}(C_NULL)
    check(LibMMSB.mmsb_config_new(cfgp))
    cfg = cfgp[]
    try
        if dir !== nothing
            d = String(dir)
            check(LibMMSB.mmsb_config_set_dir(cfg, d, sizeof(d)))
        end
        check(LibMMSB.mmsb_config_set_durability(cfg, DURABILITY[durability]))
        return f(cfg)
    finally
        LibMMSB.mmsb_config_free(cfg)
    end
end

# The folder lock error, with what usually causes it in a Julia session.
function check_open(st::UInt32)
    st == LibMMSB.MMSB_OK && return nothing
    err = last_error(st)
    st == LibMMSB.MMSB_STATUS_CODE_BUSY &&
        (err = MMSBError(err.code, err.name, err.message * "; if that state is in this Julia session, close it " *
                                             "(close(state)): one that is only dropped keeps the folder until " *
                                             "the garbage collector finalizes it"))
    throw(err)
end

# The do-block forms of the openers: `f(x)`, then `close(x)` even when `f` throws.
function with_close(f, x)
    try
        return f(x)
    finally
        close(x)
    end
end

mmsb_start(f::Function; kw...) = with_close(f, mmsb_start(; kw...))

"""
    close(state::MMSBState)

Closes the state (idempotent): later calls throw an [`MMSBError`](@ref) named
`"closed"`, its pages are released and its open [`PageView`](@ref)s are closed.
"""
function Base.close(s::MMSBState)
    Threads.atomic_xchg!(s.closing, true) && return nothing   # closed before
    if Threads.atomic_add!(s.inflight, 1) >= 0
        # Closed either way. The only failure a live handle can return is a background
        # maintenance pass nobody reported yet; `close` (also run by finalizers) does not throw.
        LibMMSB.mmsb_state_close(s.ptr)
        leave(s)                         # frees the handle unless a call is in flight
    else
        Threads.atomic_sub!(s.inflight, 1)
    end
    close_views!(s, nothing)
    return nothing
end

"""
    isopen(state::MMSBState) -> Bool

Whether the state has not been closed.
"""
Base.isopen(s::MMSBState) = !s.closing[] && s.ptr != C_NULL

"""
    lsn(state::MMSBState) -> Int

The last log sequence number assigned (0 before the first delta). Every routed
delta gets the next one; the LSN order is the order in which writes applied.
"""
function lsn(s::MMSBState)
    out = Ref{UInt64}(0)
    scall(LibMMSB.mmsb_state_lsn, s, out)
    return Int(out[])
end

function Base.show(io::IO, s::MMSBState)
    if !isopen(s)
        print(io, "MMSBState(closed)")
        return
    end
    print(io, "MMSBState(open, ", length(page_ids(s)), " pages, lsn ", Int(lsn(s)))
    dir = get(s.config, :dir, nothing)
    dir === nothing || print(io, ", dir=", repr(dir))
    haskey(s.config, :replay_lsn) && print(io, ", replay of lsn ", Int(s.config.replay_lsn))
    print(io, ")")
end

# --- registry of open views (so that closing the state or a page closes them) --

function register_view!(s::MMSBState, v)
    lock(s.lock) do
        if length(s.views) >= s.prune_at
            filter!(w -> w.value !== nothing && isopen(w.value), s.views)
            s.prune_at = max(64, 2 * length(s.views))
        end
        push!(s.views, WeakRef(v))
    end
    return v
end

function close_views!(s::MMSBState, page)
    lock(s.lock) do
        for w in s.views
            v = w.value
            v === nothing && continue
            (page === nothing || v.page == page) && close(v)
        end
        filter!(w -> w.value !== nothing && isopen(w.value), s.views)
    end
    return nothing
end
