# MMSBState: the handle of one native state, its configuration and life cycle.

"""
    MMSBState

A running MMSB state (pages, router and, with a directory, the log), created by
[`mmsb_start`](@ref). Safe to use from several threads at once: the core
serialises mutations and gives each a log sequence number (LSN).

`close(state)` closes it: later calls on it throw an [`MMSBError`](@ref) with
name `"closed"`, its pages are released and every [`PageView`](@ref) of it is
closed. `close` is idempotent and may run while other threads use the state;
the small native handle itself is freed by the finalizer once the state is
unreachable (so a concurrent call can never touch freed memory).
"""
mutable struct MMSBState
    ptr::Ptr{LibMMSB.MmsbState}
    config::NamedTuple
    lock::ReentrantLock        # guards `views`, `prune_at` and `roots`
    views::Vector{WeakRef}     # open PageViews, closed with the state or their page
    prune_at::Int
    roots::Vector{Any}         # Julia functions the core may call (graph transforms)
    function MMSBState(ptr::Ptr{LibMMSB.MmsbState}, config::NamedTuple)
        s = new(ptr, config, ReentrantLock(), WeakRef[], 64, Any[])
        return finalizer(free_state!, s)
    end
end

# Finalizer: no other reference exists, so no other thread uses the handle.
# Takes no lock (finalizers must not wait); views free themselves.
function free_state!(s::MMSBState)
    p = s.ptr
    s.ptr = C_NULL
    p == C_NULL || LibMMSB.mmsb_state_free(p)
    return nothing
end

# Passing the state itself to a LibMMSB wrapper roots it for the call.
function Base.unsafe_convert(::Type{Ptr{LibMMSB.MmsbState}}, s::MMSBState)
    p = s.ptr
    p == C_NULL && throw(closed_error("state"))
    return p
end

const DURABILITY = (none = UInt32(0), group_commit = UInt32(1), always = UInt32(2))

"""
    mmsb_start(; dir=nothing, durability=:none, logging=dir !== nothing, options...) -> MMSBState
    mmsb_start(f; kw...)

Starts a state. Keywords:
- `dir`: folder for the log, checkpoints and file-backed pages; `nothing` keeps
  everything in memory.
- `durability`: what a returned write promises: `:none` (OS buffers),
  `:group_commit` (concurrent writers share one fsync) or `:always` (one fsync
  per write).
- `logging`: keep a transaction log (needed by [`checkpoint_log!`](@ref),
  [`replay_log`](@ref)); on by default with `dir` (and then always on), off by
  default in memory.
- any other keyword is a numeric/boolean option of the core, passed by name:
  `max_page_size`, `log_size_cap`, `segment_size`, `file_backed_pages`,
  `tolerant_recovery`, `gpu` (an unknown name throws an [`MMSBError`](@ref)).

The do-block form runs `f(state)` and closes the state afterwards, also on error:

    mmsb_start(max_page_size = 1 << 20) do state
        page = create_page(state, 4096)
        update_page(state, page, rand(UInt8, 64))
    end
"""
function mmsb_start(; dir = nothing, durability::Symbol = :none, logging::Union{Nothing,Bool} = nothing, options...)
    haskey(DURABILITY, durability) ||
        throw(ArgumentError("durability must be one of $(keys(DURABILITY)), not $(repr(durability))"))
    logging === false && dir !== nothing &&
        throw(ArgumentError("a state with `dir` always keeps its transaction log (logging=false)"))
    cfgp = Ref{Ptr{LibMMSB.MmsbConfig}}(C_NULL)
    check(LibMMSB.mmsb_config_new(cfgp))
    cfg = cfgp[]
    try
        if dir !== nothing
            d = String(dir)
            check(LibMMSB.mmsb_config_set_dir(cfg, d, sizeof(d)))
        end
        check(LibMMSB.mmsb_config_set_durability(cfg, DURABILITY[durability]))
        logging === nothing || check(LibMMSB.mmsb_config_set_logging(cfg, UInt8(logging)))
        for (k, v) in options
            (v isa Integer && v >= 0) ||
                throw(ArgumentError("option $k must be a Bool or a non-negative integer, got $(repr(v))"))
            key = String(k)
            check(LibMMSB.mmsb_config_set_u64(cfg, key, sizeof(key), UInt64(v)))
        end
        out = Ref{Ptr{LibMMSB.MmsbState}}(C_NULL)
        check(LibMMSB.mmsb_state_open(cfg, out))
        config = merge((dir = dir === nothing ? nothing : String(dir), durability = durability,
                        logging = something(logging, dir !== nothing)), values(options))
        return MMSBState(out[], config)
    finally
        LibMMSB.mmsb_config_free(cfg)
    end
end

function mmsb_start(f::Function; kw...)
    state = mmsb_start(; kw...)
    try
        return f(state)
    finally
        close(state)
    end
end

"""
    close(state::MMSBState)

Closes the state (idempotent): later calls throw an [`MMSBError`](@ref) named
`"closed"`, its pages are released and its open [`PageView`](@ref)s are closed.
"""
function Base.close(s::MMSBState)
    s.ptr == C_NULL && return nothing
    check(LibMMSB.mmsb_state_close(s))
    close_views!(s, nothing)
    return nothing
end

"""
    isopen(state::MMSBState) -> Bool

Whether the state has not been closed.
"""
function Base.isopen(s::MMSBState)
    s.ptr == C_NULL && return false
    out = Ref{UInt8}(0)
    check(LibMMSB.mmsb_state_is_open(s, out))
    return out[] == 1
end

"""
    lsn(state::MMSBState) -> UInt64

The last log sequence number assigned (0 before the first delta). Every routed
delta gets the next one; the LSN order is the order in which writes applied.
"""
function lsn(s::MMSBState)
    out = Ref{UInt64}(0)
    check(LibMMSB.mmsb_state_lsn(s, out))
    return out[]
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
