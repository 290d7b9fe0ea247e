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
log (see [`log_info`](@ref)): an older or newer one throws an `MMSBError` named
`"lsn_out_of_range"`, one strictly inside a compacted run (see
[`compacted_runs`](@ref)) one named `"lsn_compacted"`. The do-block form closes the replayed state after
`f(replayed)`.
"""
function replay_log(s::MMSBState, lsn::Integer)
    out = Ref{Ptr{LibMMSB.MmsbState}}(C_NULL)
    scall(LibMMSB.mmsb_state_replay, s, u64_arg(lsn, "lsn"), out)
    return MMSBState(out[], (dir = nothing, durability = :none, logging = false, replay_lsn = Int(lsn)))
end

replay_log(f::Function, s::MMSBState, lsn::Integer) = with_close(f, replay_log(s, lsn))

"""
    open_at(dir; lsn = nothing) -> MMSBState
    open_at(f, dir; lsn = nothing)

The state of the state directory `dir` right after `lsn` (its newest LSN when
`lsn` is `nothing`), rebuilt from its checkpoints and log into a new, read-only,
in-memory [`MMSBState`](@ref) (writes to it throw an [`MMSBError`](@ref) named
`"read_only"`). It needs no writer and works beside one, in this process or
another: it takes no lock, opens files read-only and creates or changes
nothing; a record the writer is appending meanwhile ends what is read. An `lsn`
outside what the directory can replay throws an `MMSBError` named
`"lsn_out_of_range"` whose message gives the replayable range (`first:last`), one strictly
inside a compacted run one named `"lsn_compacted"`, a `dir` that is not a
readable directory one named `"io"`. The do-block form closes the state after
`f(state)`.

```julia
s = mmsb_start(dir = "state")
# ... writes ...
open_at("state"; lsn = 2) do old   # while `s` keeps the folder open
    read_page(old, page)
end
```
"""
function open_at(dir::AbstractString; lsn::Union{Nothing,Integer} = nothing)
    d = String(dir)
    l = lsn === nothing ? LibMMSB.MMSB_LSN_NEWEST : u64_arg(lsn, "lsn")
    out = Ref{Ptr{LibMMSB.MmsbState}}(C_NULL)
    check(LibMMSB.mmsb_replay_dir(d, sizeof(d), l, out))
    s = MMSBState(out[], (dir = nothing, durability = :none, logging = false, replay_dir = d))
    # (The keyword `lsn` hides the function `lsn` here.) `show` prints the LSN it was rebuilt at.
    s.config = merge(s.config, (replay_lsn = Int(scall_u64(LibMMSB.mmsb_state_lsn, s)),))
    return s
end

open_at(f::Function, dir::AbstractString; kw...) = with_close(f, open_at(dir; kw...))

"""
    compact_log!(state)

Compacts the log up to the current LSN (merging records behind the newest
checkpoint, so that the log stays bounded).
"""
compact_log!(s::MMSBState) = (check(LibMMSB.mmsb_state_compact(s)); nothing)

"""
    LogInfo

The log's statistics, from [`log_info`](@ref), all `Int`s except the messages:
- `lsn` (last assigned), `log_bytes`, `segments`, `checkpoints`,
  `last_checkpoint_lsn` (0 if none) and `oldest_lsn` (the oldest LSN
  [`replay_log`](@ref) can reach: `oldest_lsn:lsn` is the replayable range,
  less the inside of each run of [`compacted_runs`](@ref));
- from the last open: `skipped_regions` (damage tolerant recovery skipped),
  `truncated_bytes` (torn tail cut off) and `quarantined_files` (files moved
  into `quarantine/` in the state directory instead of being replayed);
- automatic maintenance (`log_size_cap`): `maintenance_failures` since open,
  and for the last failure `last_maintenance_error` (the message, `""` if
  none), `last_maintenance_status` (its status name, `""` if none) and
  `last_maintenance_lsn`;
- `group_syncs`: fsyncs group commit has done since open (`GroupCommit`
  durability; records per fsync show how well writers share them);
- `recovery_micros`: how long the open took to recover (load the newest
  checkpoint, replay the log after it), in microseconds;
- the maintenance thread since open: `maintenance_passes` (checkpoint +
  compaction passes), `maintenance_waits` (writes that waited for a pass: the
  log reached four times `log_size_cap`) and `maintenance_slowdowns` (writes
  delayed by 1 ms: the log reached twice the cap).
In the REPL it shows one field a line, in decimal, sizes also in KiB/MiB.
"""
struct LogInfo
    lsn::Int
    log_bytes::Int
    segments::Int
    checkpoints::Int
    last_checkpoint_lsn::Int
    oldest_lsn::Int
    skipped_regions::Int
    truncated_bytes::Int
    quarantined_files::Int
    maintenance_failures::Int
    last_maintenance_error::String
    last_maintenance_status::String
    last_maintenance_lsn::Int
    group_syncs::Int
    recovery_micros::Int
    maintenance_passes::Int
    maintenance_waits::Int
    maintenance_slowdowns::Int
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
    # the counters kept out of MmsbLogInfo (its layout is ABI): one getter each
    counter(f) = (out = Ref{UInt64}(0); scall(f, s, out); Int(out[]))
    return LogInfo(i.lsn, i.log_bytes, i.segments, i.checkpoints, i.last_checkpoint_lsn, i.oldest_lsn,
                   i.skipped_regions, i.truncated_bytes, i.quarantined_files, i.maintenance_failures,
                   msg, code == 0 ? "" : status_name(code), i.last_maintenance_lsn,
                   counter(LibMMSB.mmsb_log_group_syncs), counter(LibMMSB.mmsb_log_recovery_micros),
                   counter(LibMMSB.mmsb_log_maintenance_passes), counter(LibMMSB.mmsb_log_maintenance_waits),
                   counter(LibMMSB.mmsb_log_maintenance_slowdowns))
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
    # what the last open had to repair, and failed maintenance: only when there is any
    i.skipped_regions > 0 && print(io, "\n  skipped_regions      ", i.skipped_regions, " (damage skipped at open)")
    i.truncated_bytes > 0 && print(io, "\n  truncated_bytes      ", format_size(i.truncated_bytes), " (torn tail cut at open)")
    i.quarantined_files > 0 &&
        print(io, "\n  quarantined_files    ", i.quarantined_files, " (moved into quarantine/ at open)")
    if i.maintenance_failures > 0
        print(io, "\n  maintenance_failures ", i.maintenance_failures, " (last at lsn ", i.last_maintenance_lsn, ": ",
              i.last_maintenance_status, ", ", i.last_maintenance_error, ")")
    end
    i.group_syncs > 0 && print(io, "\n  group_syncs          ", i.group_syncs, " (group commit fsyncs since open)")
    print(io, "\n  recovery             ", round(i.recovery_micros / 1000; digits = 3), " ms (checkpoint load + replay at open)")
    if i.maintenance_passes + i.maintenance_waits + i.maintenance_slowdowns > 0
        print(io, "\n  maintenance          ", i.maintenance_passes, " passes, ", i.maintenance_waits, " waits, ",
              i.maintenance_slowdowns, " slowdowns since open")
    end
end

"""
    compacted_runs(state) -> Vector{UnitRange{Int}}

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
        return [Int(buf[k]):Int(buf[k + 1]) for k in 1:2:Int(count[])]
    end
end
