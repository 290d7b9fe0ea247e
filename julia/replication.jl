# --- replication through NATS JetStream (docs/replication.md) ------------------
# Needs a libmmsb built with the cargo feature `replication`
# (`cargo build --release -p mmsb-cdylib --features replication`); without it
# these throw an MMSBError named "unsupported".

"""
    mmsb_follow(url, stream; dir=nothing) -> MMSBState
    mmsb_follow(f, url, stream; dir=nothing)

Opens a read-only follower of the replicated state `stream` at the NATS servers
`url` (comma-separated): it starts from its durable position in `dir` (if
given), else from the stream's newest checkpoint, and applies the stream in the
background. Reads work as on any state; writes throw an [`MMSBError`](@ref)
named `"read_only"`. See [`replica_lag`](@ref) and [`promote!`](@ref). The
do-block form closes the follower after `f(follower)`.
"""
function mmsb_follow(url::AbstractString, stream::AbstractString; dir = nothing)
    u, s = String(url), String(stream)
    d = dir === nothing ? "" : String(dir)
    out = Ref{Ptr{LibMMSB.MmsbState}}(C_NULL)
    check(LibMMSB.mmsb_follow(u, sizeof(u), s, sizeof(s), d, sizeof(d), out))
    return MMSBState(out[], (dir = nothing, durability = :none, logging = false, follow = (url = u, stream = s)))
end

mmsb_follow(f::Function, url::AbstractString, stream::AbstractString; kw...) =
    with_close(f, mmsb_follow(url, stream; kw...))

"""
    promote!(follower; dir=nothing, durability=:replicated) -> MMSBState

Promotes a follower to primary: it catches up with the stream, fences the old
primary (whose next write throws an [`MMSBError`](@ref) named `"fenced"`), and
returns a new writable state (in `dir`, or in memory) that publishes to the
stream. The follower stops following; close it.
"""
function promote!(s::MMSBState; dir = nothing, durability::Symbol = :replicated)
    check_durability(durability)
    with_config(dir, durability) do cfg
        # In memory, the new primary still logs (it publishes its log).
        dir === nothing && check(LibMMSB.mmsb_config_set_logging(cfg, UInt8(1)))
        out = Ref{Ptr{LibMMSB.MmsbState}}(C_NULL)
        scall(LibMMSB.mmsb_promote, s, cfg, out)
        replicate = get(s.config, :follow, nothing)
        return MMSBState(out[], (dir = dir === nothing ? nothing : String(dir), durability = durability,
                                 logging = true, replicate = replicate))
    end
end

"""
    replica_lag(state) -> NamedTuple

How far a follower is behind its stream: `applied_lsn`, `stream_lsn` (looked up
every 250 ms), `lsn_behind`, `seconds_behind` (`Float64`; 0 when caught up) and
`term`. For a primary, `applied_lsn == stream_lsn` is the LSN JetStream
acknowledged. A state that does not replicate throws an [`MMSBError`](@ref)
named `"invalid_argument"`; a follower stopped by a bad stream throws its error
(`"replica_gap"`, `"foreign_state"`, `"malformed"`).
"""
function replica_lag(s::MMSBState)
    out = Ref(LibMMSB.MmsbReplicaLag())
    scall(LibMMSB.mmsb_replica_lag, s, out)
    l = out[]
    return (applied_lsn = Int(l.applied_lsn), stream_lsn = Int(l.stream_lsn), lsn_behind = Int(l.lsn_behind),
            seconds_behind = l.seconds_behind, term = Int(l.term))
end

# print_stats adds this line for replicated states.
function print_replica_lag(io::IO, s::MMSBState)
    (haskey(s.config, :follow) || get(s.config, :replicate, nothing) !== nothing) || return nothing
    l = replica_lag(s)
    println(io, "replication: applied LSN $(l.applied_lsn), stream LSN $(l.stream_lsn), ",
            "$(l.lsn_behind) LSNs / $(round(l.seconds_behind; digits = 3)) s behind, term $(l.term)")
    return nothing
end
