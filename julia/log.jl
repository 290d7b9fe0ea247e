# The transaction log: checkpoints, replay to an earlier LSN, compaction.
# A state keeps a log when started with `dir` (or `logging=true` in memory).

"""
    checkpoint_log!(state) -> lsn

Writes a checkpoint of every page and returns its LSN. Throws an
[`MMSBError`](@ref) when the state keeps no log.
"""
function checkpoint_log!(s::MMSBState)
    st, l = with_u64_out(out -> LibMMSB.mmsb_state_checkpoint(enter(s), out))
    check(s, st)
    return Int(l)
end

"""
    replay_log(state, lsn) -> MMSBState
    replay_log(f, state, lsn)

Rebuilds the state as it was right after `lsn` into a new, read-only
[`MMSBState`](@ref) (writes to it throw an [`MMSBError`](@ref) named
`"read_only"`); the live state is not disturbed. `lsn` must lie in the retained
log (see [`log_info`](@ref)). The do-block form closes the replayed state after
`f(replayed)`.
"""
function replay_log(s::MMSBState, lsn::Integer)
    out = Ref{Ptr{LibMMSB.MmsbState}}(C_NULL)
    scall(LibMMSB.mmsb_state_replay, s, u64_arg(lsn, "lsn"), out)
    return MMSBState(out[], (dir = nothing, durability = :none, logging = false, replay_lsn = Int(lsn)))
end

function replay_log(f::Function, s::MMSBState, lsn::Integer)
    r = replay_log(s, lsn)
    try
        return f(r)
    finally
        close(r)
    end
end

"""
    compact_log!(state)

Compacts the log up to the current LSN (merging records behind the newest
checkpoint, so that the log stays bounded).
"""
compact_log!(s::MMSBState) = (check(LibMMSB.mmsb_state_compact(s)); nothing)

"""
    LogInfo

The log's statistics, from [`log_info`](@ref): `lsn` (last assigned),
`log_bytes`, `segments`, `checkpoints`, `last_checkpoint_lsn` (0 if none) and
`oldest_lsn` (the oldest LSN [`replay_log`](@ref) can reach), all `Int`s. In
the REPL it shows one field a line, in decimal, the size also in KiB/MiB.
"""
struct LogInfo
    lsn::Int
    log_bytes::Int
    segments::Int
    checkpoints::Int
    last_checkpoint_lsn::Int
    oldest_lsn::Int
end

"""
    log_info(state) -> LogInfo

The log's statistics (see [`LogInfo`](@ref)). Throws an [`MMSBError`](@ref)
named `"unsupported"` when the state keeps no log.
"""
function log_info(s::MMSBState)
    out = Ref(LibMMSB.MmsbLogInfo())
    scall(LibMMSB.mmsb_log_info, s, out)
    i = out[]
    return LogInfo(i.lsn, i.log_bytes, i.segments, i.checkpoints, i.last_checkpoint_lsn, i.oldest_lsn)
end

Base.show(io::IO, i::LogInfo) =
    print(io, "LogInfo(lsn ", i.lsn, ", ", Base.format_bytes(i.log_bytes), " in ", i.segments, " segment",
          i.segments == 1 ? "" : "s", ", ", i.checkpoints, " checkpoint", i.checkpoints == 1 ? "" : "s", ")")

function Base.show(io::IO, ::MIME"text/plain", i::LogInfo)
    println(io, "MMSB log")
    println(io, "  lsn                  ", i.lsn)
    println(io, "  log_bytes            ", format_size(i.log_bytes))
    println(io, "  segments             ", i.segments)
    println(io, "  checkpoints          ", i.checkpoints)
    println(io, "  last_checkpoint_lsn  ", i.last_checkpoint_lsn, i.checkpoints == 0 ? " (none)" : "")
    print(io, "  oldest_lsn           ", i.oldest_lsn, " (the oldest replay_log can reach)")
end
