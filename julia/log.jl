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
    return l
end

"""
    replay_log(state, lsn) -> MMSBState
    replay_log(f, state, lsn)

Rebuilds the state as it was right after `lsn` into a new, read-only
[`MMSBState`](@ref) (writes to it throw an [`MMSBError`](@ref) named
`"read_only"`); the live state is not disturbed. `lsn` must lie in the retained
log (see [`log_info`](@ref)): an older or newer one throws an `MMSBError` named
`"lsn_out_of_range"`, one strictly inside a compacted run (see
[`compacted_runs`](@ref)) one named `"lsn_compacted"`. The do-block form closes the replayed state after
`f(replayed)`.
"""
function replay_log(s::MMSBState, lsn::Integer)
    out = Ref{Ptr{LibMMSB.MmsbState}}(C_NULL)
    scall(LibMMSB.mmsb_state_replay, s, u64_arg(lsn, "lsn"), out)
    return MMSBState(out[], (dir = nothing, durability = :none, logging = false, replay_lsn = UInt64(lsn)))
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
    log_info(state) -> NamedTuple

The log's statistics: `lsn` (last assigned), `log_bytes`, `segments`,
`checkpoints`, `last_checkpoint_lsn` (0 if none) and `oldest_lsn` (the oldest
LSN [`replay_log`](@ref) can reach: `oldest_lsn:lsn` is the replayable range,
less the inside of each run of [`compacted_runs`](@ref)). From the last open:
`skipped_regions` (damage tolerant recovery skipped), `truncated_bytes` (torn
tail cut off) and `quarantined_files` (files moved into `quarantine/` in the
state directory instead of being replayed). Automatic maintenance
(`log_size_cap`): `maintenance_failures` since open, and for the last failure
`last_maintenance_error` (the message, `""` if none), `last_maintenance_status`
(its status name, `""` if none) and `last_maintenance_lsn`. Throws an
[`MMSBError`](@ref) named `"unsupported"` when the state keeps no log.
"""
function log_info(s::MMSBState)
    out = Ref(LibMMSB.MmsbLogInfo())
    scall(LibMMSB.mmsb_log_info, s, out)
    i = out[]
    msg = ""
    if i.maintenance_failures > 0
        buf = Vector{UInt8}(undef, 256)
        len = Ref{Csize_t}(0)
        scall(LibMMSB.mmsb_log_maintenance_error, s, buf, length(buf), len)
        if len[] >= length(buf)
            resize!(buf, len[] + 1)
            scall(LibMMSB.mmsb_log_maintenance_error, s, buf, length(buf), len)
        end
        msg = String(buf[1:Int(len[])])
    end
    code = i.last_maintenance_status
    return (lsn = i.lsn, log_bytes = Int(i.log_bytes), segments = Int(i.segments), checkpoints = Int(i.checkpoints),
            last_checkpoint_lsn = i.last_checkpoint_lsn, oldest_lsn = i.oldest_lsn,
            skipped_regions = Int(i.skipped_regions), truncated_bytes = Int(i.truncated_bytes),
            quarantined_files = Int(i.quarantined_files), maintenance_failures = Int(i.maintenance_failures),
            last_maintenance_error = msg, last_maintenance_status = code == 0 ? "" : status_name(code),
            last_maintenance_lsn = i.last_maintenance_lsn)
end

"""
    compacted_runs(state) -> Vector{UnitRange{UInt64}}

The compacted runs of the retained log, ascending. [`replay_log`](@ref) to an
LSN inside a run `first:last` other than `last` throws an [`MMSBError`](@ref)
named `"lsn_compacted"` (`last` and `first - 1` can be replayed to); an LSN
outside `log_info(state).oldest_lsn:lsn(state)` one named `"lsn_out_of_range"`.
"""
function compacted_runs(s::MMSBState)
    buf = Vector{UInt64}(undef, 16)
    count = Ref{Csize_t}(0)
    while true
        st = release(s, LibMMSB.mmsb_log_compacted_runs(enter(s), buf, length(buf), count))
        if st == LibMMSB.MMSB_STATUS_CODE_BUFFER_TOO_SMALL
            resize!(buf, Int(count[]))
            continue
        end
        check(st)
        return [buf[k]:buf[k + 1] for k in 1:2:Int(count[])]
    end
end
