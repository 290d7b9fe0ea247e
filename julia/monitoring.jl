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
    get_stats(state) -> NamedTuple

A snapshot of the state's monitoring: `counters` (a `Dict{Symbol,UInt64}`, e.g.
`:pages`, `:deltas_routed`, `:log_bytes`) and `latencies` (a
`Dict{Symbol,NamedTuple}` per metric, e.g. `:delta_route`, with `count`, `min_ns`,
`mean_ns`, `p50_ns`, `p90_ns`, `p99_ns`, `p999_ns`, `max_ns`). See also
[`stats_json`](@ref) and [`print_stats`](@ref).
"""
function get_stats(s::MMSBState)
    counters = Dict(name => stats_counter(s, name) for name in counter_names())
    latencies = Dict(name => stats_histogram(s, name) for name in metric_names())
    return (counters = counters, latencies = latencies)
end

"""
    stats_counter(state, counter::Symbol) -> UInt64

One counter, e.g. `stats_counter(state, :deltas_routed)`.
"""
function stats_counter(s::MMSBState, counter::Symbol)
    out = Ref{UInt64}(0)
    scall(LibMMSB.mmsb_stats_counter, s, counter_code(counter), out)
    return out[]
end

"""
    stats_histogram(state, metric::Symbol) -> NamedTuple

The latency summary (nanoseconds) of one metric, e.g. `:delta_route`: `count`,
`sampled`, `min_ns`, `mean_ns`, `p50_ns`, `p90_ns`, `p99_ns`, `p999_ns`,
`max_ns`, `sum_ns`.
"""
function stats_histogram(s::MMSBState, metric::Symbol)
    out = Ref(LibMMSB.MmsbHistogramStats())
    scall(LibMMSB.mmsb_stats_histogram, s, metric_code(metric), out)
    h = out[]
    return (count = h.count, sampled = h.sampled, min_ns = h.min_ns, mean_ns = h.mean_ns, p50_ns = h.p50_ns,
            p90_ns = h.p90_ns, p99_ns = h.p99_ns, p999_ns = h.p999_ns, max_ns = h.max_ns, sum_ns = h.sum_ns)
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
    print_stats([io=stdout,] state)

Prints the stats as an aligned table.
"""
print_stats(io::IO, s::MMSBState) =
    print(io, fetch_text((buf, cap, len) -> release(s, LibMMSB.mmsb_stats_table(enter(s), buf, cap, len))))
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
