# Monitoring: counters, latency histograms, budgets and text exports.
# Metrics and counters are named by symbols, e.g. :delta_route, :deltas_routed
# (the native names; see `MMSB.metric_names()` and `MMSB.counter_names()`).

"The native metric names, in number order."
metric_names() = [Symbol(unsafe_string(LibMMSB.mmsb_metric_name(i))) for i in 0:LibMMSB.MMSB_METRIC_COUNT - 1]
"The native counter names, in number order."
counter_names() = [Symbol(unsafe_string(LibMMSB.mmsb_counter_name(i))) for i in 0:LibMMSB.MMSB_COUNTER_COUNT - 1]

function metric_code(m::Symbol)
    i = findfirst(==(m), metric_names())
    i === nothing && throw(ArgumentError("unknown metric $(repr(m)); metrics are $(metric_names())"))
    return UInt32(i - 1)
end

function counter_code(c::Symbol)
    i = findfirst(==(c), counter_names())
    i === nothing && throw(ArgumentError("unknown counter $(repr(c)); counters are $(counter_names())"))
    return UInt32(i - 1)
end

# The text buffer protocol: the length always comes back; BUFFER_TOO_SMALL when
# the buffer is short. Stats change between calls, so retry until it fits.
function fetch_text(f)
    buf = Vector{UInt8}(undef, 4096)
    len = Ref{Csize_t}(0)
    while true
        st = f(buf, length(buf), len)
        if st == LibMMSB.MMSB_STATUS_CODE_BUFFER_TOO_SMALL || (st == LibMMSB.MMSB_OK && len[] >= length(buf))
            resize!(buf, 2 * Int(len[]) + 64)
            continue
        end
        check(st)
        return String(buf[1:Int(len[])])
    end
end

"""
    Stats

A snapshot of a state's monitoring, from [`get_stats`](@ref): `counters` (a
`Dict{Symbol,Int}` of exact counts and gauges, e.g. `:pages`,
`:deltas_routed`, `:log_bytes`) and `latencies` (a `Dict{Symbol,NamedTuple}`
per metric, e.g. `:delta_route`, as [`stats_histogram`](@ref) returns them).
In the REPL it shows as a table in decimal, with sizes in KiB/MiB: per metric
the exact number of operations (from the matching counter, where there is
one), how many of them were timed (hot-path timers time a sample, 1 in 256 by
default) and the percentiles of the timed ones.
"""
struct Stats
    counters::Dict{Symbol,Int}
    latencies::Dict{Symbol,NamedTuple}
end

"""
    get_stats(state) -> Stats

A snapshot of the state's monitoring (see [`Stats`](@ref)). See also
[`stats_json`](@ref) and [`print_stats`](@ref).
"""
function get_stats(s::MMSBState)
    counters = Dict(name => stats_counter(s, name) for name in counter_names())
    latencies = Dict{Symbol,NamedTuple}(name => stats_histogram(s, name) for name in metric_names())
    return Stats(counters, latencies)
end

"""
    stats_counter(state, counter::Symbol) -> Int

One counter, e.g. `stats_counter(state, :deltas_routed)`.
"""
function stats_counter(s::MMSBState, counter::Symbol)
    out = Ref{UInt64}(0)
    scall(LibMMSB.mmsb_stats_counter, s, counter_code(counter), out)
    return Int(out[])
end

"""
    stats_histogram(state, metric::Symbol) -> NamedTuple

The latency summary (nanoseconds, `Int`s) of one metric, e.g. `:delta_route`:
`count` (values recorded), `sampled` (of those, how many came from sampled
hot-path timers: those time one call in `sample_every`, see
[`set_monitoring!`](@ref), so `count` is not the number of calls; the exact
number is a counter, e.g. `:deltas_routed`), `min_ns`, `mean_ns` (a
`Float64`), `p50_ns`, `p90_ns`, `p99_ns`, `p999_ns`, `max_ns`, `sum_ns`.
"""
function stats_histogram(s::MMSBState, metric::Symbol)
    out = Ref(LibMMSB.MmsbHistogramStats())
    scall(LibMMSB.mmsb_stats_histogram, s, metric_code(metric), out)
    h = out[]
    return (count = Int(h.count), sampled = Int(h.sampled), min_ns = Int(h.min_ns), mean_ns = h.mean_ns,
            p50_ns = Int(h.p50_ns), p90_ns = Int(h.p90_ns), p99_ns = Int(h.p99_ns), p999_ns = Int(h.p999_ns),
            max_ns = Int(h.max_ns), sum_ns = Int(h.sum_ns))
end

# The counter that counts every operation a metric times (exactly), if any.
const EXACT_COUNTERS = Dict(:delta_route => :deltas_routed, :propagation_round => :propagation_rounds,
                            :checkpoint => :checkpoints)
const BYTE_COUNTERS = (:bytes_allocated, :delta_bytes, :log_bytes)

"A duration in nanoseconds, in the unit that fits (\"7.51 µs\")."
function format_ns(ns::Real)
    ns < 1e3 && return string(round(Int, ns), " ns")
    ns < 1e6 && return string(two_decimals(ns / 1e3), " µs")
    ns < 1e9 && return string(two_decimals(ns / 1e6), " ms")
    return string(two_decimals(ns / 1e9), " s")
end

# "30.90", not "30.9": columns of figures line up (Printf is not a dependency).
two_decimals(x::Real) = (n = round(Int, 100x); string(div(n, 100), ".", lpad(rem(n, 100), 2, '0')))

"A byte count in decimal, with KiB/MiB beside it from 1 KiB on (\"4096 (4.000 KiB)\")."
format_size(n::Integer) = n < 1024 ? string(n) : string(n, " (", Base.format_bytes(n), ")")

function Base.show(io::IO, st::Stats)
    c = st.counters
    print(io, "Stats(", get(c, :pages, 0), " pages, ", get(c, :deltas_routed, 0), " deltas routed, log ",
          Base.format_bytes(get(c, :log_bytes, 0)), ")")
end

function Base.show(io::IO, ::MIME"text/plain", st::Stats)
    println(io, "MMSB stats")
    names = [m for m in metric_names() if haskey(st.latencies, m)]
    w = max(7, maximum(length ∘ string, names))
    println(io, "  ", rpad("latency", w), "  ", lpad("calls", 8), "  ", lpad("timed", 12), "  ",
            join(lpad.(["min", "p50", "p90", "p99", "max"], 10), ""))
    for m in names
        h = st.latencies[m]
        exact = haskey(EXACT_COUNTERS, m) ? string(get(st.counters, EXACT_COUNTERS[m], 0)) : "-"
        timed = h.sampled > 0 ? string(h.count, " sampled") : string(h.count)
        print(io, "  ", rpad(m, w), "  ", lpad(exact, 8), "  ", lpad(timed, 12), "  ")
        h.count == 0 ? print(io, lpad("-", 10)) :
            print(io, join(lpad.(format_ns.((h.min_ns, h.p50_ns, h.p90_ns, h.p99_ns, h.max_ns)), 10), ""))
        println(io)
    end
    println(io, "  (calls: the exact count, from the counters; timed: the values behind the percentiles,",
            " \"sampled\" where a hot-path timer times only a sample of the calls)")
    println(io, "counters")
    cn = [k for k in counter_names() if haskey(st.counters, k)]
    cw = max(7, maximum(length ∘ string, cn))
    for (i, k) in enumerate(cn)
        v = st.counters[k]
        print(io, "  ", rpad(k, cw), "  ", k in BYTE_COUNTERS ? format_size(v) : string(v))
        i < length(cn) && println(io)
    end
end

"""
    stats_json(state) -> String

Every counter and histogram as a JSON document.
"""
stats_json(s::MMSBState) = fetch_text((buf, cap, len) -> release(s, LibMMSB.mmsb_stats_json(enter(s), buf, cap, len)))

"""
    stats_prometheus(state) -> String

The stats in the Prometheus text format (0.0.4).
"""
stats_prometheus(s::MMSBState) =
    fetch_text((buf, cap, len) -> release(s, LibMMSB.mmsb_stats_prometheus(enter(s), buf, cap, len)))

"""
    MetricsServer

A running Prometheus/OpenMetrics endpoint (from [`serve_metrics`](@ref)):
`server.port` is the port it listens on, `close(server)` stops it and releases
the port (also done by the finalizer), `isopen(server)` says whether it runs.
"""
mutable struct MetricsServer
    ptr::Ptr{LibMMSB.MmsbMetricsServer}
    addr::String
    port::Int
    function MetricsServer(p::Ptr{LibMMSB.MmsbMetricsServer}, addr::String, port::Integer)
        return finalizer(close, new(p, addr, port))
    end
end

"""
    serve_metrics(state; port = 9464, addr = "127.0.0.1") -> MetricsServer

Serves the state's [`stats_prometheus`](@ref) text over HTTP for a Prometheus
scraper: `GET http://addr:port/metrics` (Prometheus text format 0.0.4). Off
unless called; `addr` must be a loopback address (`"127.0.0.1"` or `"::1"`:
nothing here authenticates), and `port = 0` lets the system pick a free port
(read it from `server.port`). The core answers on a thread of its own, one
request at a time (8 KiB of request at most, 2 s timeouts); once the state is
closed it answers 503. Throws an [`MMSBError`](@ref) named `"io"` when the
port cannot be bound (in use), `"invalid_argument"` for a non-loopback
address. Stop it with `close(server)`:

    server = serve_metrics(state; port = 9464)
    ...   # scrape http://127.0.0.1:9464/metrics
    close(server)
"""
function serve_metrics(s::MMSBState; port::Integer = 9464, addr::AbstractString = "127.0.0.1")
    0 <= port <= 65535 || throw(ArgumentError("port must be in 0:65535, got $port"))
    a = String(addr)
    out = Ref{Ptr{LibMMSB.MmsbMetricsServer}}(C_NULL)
    scall(LibMMSB.mmsb_metrics_serve, s, a, sizeof(a), UInt16(port), out)
    got = Ref{UInt16}(0)
    st = LibMMSB.mmsb_metrics_server_port(out[], got)
    if st != LibMMSB.MMSB_OK
        LibMMSB.mmsb_metrics_stop(out[])
        check(st)
    end
    return MetricsServer(out[], a, got[])
end

"""
    close(server::MetricsServer)

Stops the endpoint and releases its port (idempotent).
"""
Base.close(m::MetricsServer) = free_handle!(LibMMSB.mmsb_metrics_stop, m)

Base.isopen(m::MetricsServer) = m.ptr != C_NULL

function Base.show(io::IO, m::MetricsServer)
    host = occursin(':', m.addr) ? string("[", m.addr, "]") : m.addr
    print(io, "MetricsServer(", isopen(m) ? string("http://", host, ":", m.port, "/metrics") : "closed", ")")
end

"""
    print_stats([io=stdout,] state)

Prints the core's stats table: per latency metric the exact number of `calls`
(from the counters, "-" where none counts them) beside how many were `timed`,
marked "sampled" where a hot-path timer times only a sample of the calls, then
the percentiles and the counters. A replicated state (a primary started with
`replicate`, or a follower) adds a line with its [`replica_lag`](@ref).
"""
function print_stats(io::IO, s::MMSBState)
    print(io, fetch_text((buf, cap, len) -> release(s, LibMMSB.mmsb_stats_table(enter(s), buf, cap, len))))
    print_replica_lag(io, s)   # replicated states: the lag (replication.jl)
end
print_stats(s::MMSBState) = print_stats(stdout, s)

"""
    track_latency!(state, metric::Symbol, nanos)

Records a latency measured by the caller into a metric's histogram (budgets on
the metric apply).
"""
function track_latency!(s::MMSBState, metric::Symbol, nanos::Integer)
    scall(LibMMSB.mmsb_track_latency, s, metric_code(metric), u64_arg(nanos, "nanos"))
    return nothing
end

"""
    track_delta_latency!(state, nanos)

[`track_latency!`](@ref) for `:delta_route`.
"""
track_delta_latency!(s::MMSBState, nanos::Integer) = track_latency!(s, :delta_route, nanos)

"""
    track_propagation_latency!(state, nanos)

[`track_latency!`](@ref) for `:propagation_round`.
"""
track_propagation_latency!(s::MMSBState, nanos::Integer) = track_latency!(s, :propagation_round, nanos)

const BUDGET_KINDS = (latency_max = LibMMSB.MMSB_BUDGET_LATENCY_MAX, latency_p99 = LibMMSB.MMSB_BUDGET_LATENCY_P99,
                      log_bytes = LibMMSB.MMSB_BUDGET_LOG_BYTES)

"""
    set_budget!(state, kind::Symbol, value; metric=:delta_route)

Sets a budget: `kind` is `:latency_max` (every latency of `metric` above `value`
ns is a violation), `:latency_p99` (the metric's p99 above `value` ns) or
`:log_bytes` (the log growing past `value` bytes; `metric` is ignored).
`value == 0` removes the budget. Violations count in the `:budget_violations`
counter.
"""
function set_budget!(s::MMSBState, kind::Symbol, value::Integer; metric::Symbol = :delta_route)
    haskey(BUDGET_KINDS, kind) || throw(ArgumentError("budget kind must be one of $(keys(BUDGET_KINDS))"))
    scall(LibMMSB.mmsb_set_budget, s, BUDGET_KINDS[kind], metric_code(metric), u64_arg(value, "value"))
    return nothing
end

"""
    reset_stats!(state)

Clears the histograms and monotonic counters (gauges and budgets stay).
"""
reset_stats!(s::MMSBState) = (check(LibMMSB.mmsb_stats_reset(s)); nothing)

"""
    set_monitoring!(state, enabled::Bool; sample_every=nothing)

Turns monitoring on or off (off, only gauges are tracked); `sample_every = n`
times about one hot-path event in `n` per thread (1 times every event).
"""
function set_monitoring!(s::MMSBState, enabled::Bool; sample_every::Union{Nothing,Integer} = nothing)
    scall(LibMMSB.mmsb_monitor_set_enabled, s, UInt8(enabled))
    sample_every === nothing || scall(LibMMSB.mmsb_monitor_set_sample_every, s, UInt32(sample_every))
    return nothing
end
