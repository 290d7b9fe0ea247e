"""
    MMSB

The Memory-Mapped State Bus from Julia: page-aligned state that changes only
through deterministic deltas (`state ⊕ Δ → state′`). This package wraps the
Rust core (`libmmsb`, C ABI in `rust/mmsb-ffi/include/mmsb.h`).

Start with [`mmsb_start`](@ref); see `examples/demo.jl`.

The native library is found at run time (in `__init__`): the file named by the
environment variable `MMSB_LIB`, else `target/release/libmmsb.so` under this
package's root (build it with `cargo build --release`, or
`julia --project=. deps/build.jl`).
"""
module MMSB

using Libdl

# The sources live under julia/ (Julia 1.5 requires the entry file src/MMSB.jl).
# One file per subsystem; a new C subsystem (log, graph, monitoring, device) is
# one more file here plus its names in the export list below.
const SRC = joinpath(dirname(@__DIR__), "julia")
include(joinpath(SRC, "LibMMSB.jl"))
include(joinpath(SRC, "library.jl"))
include(joinpath(SRC, "errors.jl"))
include(joinpath(SRC, "state.jl"))
include(joinpath(SRC, "pages.jl"))
include(joinpath(SRC, "reader.jl"))
include(joinpath(SRC, "views.jl"))
include(joinpath(SRC, "deltas.jl"))
include(joinpath(SRC, "log.jl"))
include(joinpath(SRC, "monitoring.jl"))
include(joinpath(SRC, "device.jl"))
include(joinpath(SRC, "graph.jl"))
include(joinpath(SRC, "replication.jl"))
include(joinpath(SRC, "instrumentation", "instrumentation.jl"))

include(joinpath(SRC, "deprecated.jl"))

# The user API, in one place. Names generic enough to collide with other
# packages (`apply`, `compose`, `Event`, ...) are public but not exported:
# call them as `MMSB.apply` (listed in `PUBLIC`, documented in julia-api.md).
export MMSBError, MMSBState, PageId, PageInfo, PageView, Delta
export mmsb_start, lsn
export MMSBReader, mmsb_open, wait_lsn, durable_lsn, writer_status
export create_page, free_page!, page_ids, page_info, page_name, page_epoch
export update_page!, write_page!, read_page, read_page!, page_view
export delta_diff, ⊕, encode_delta, decode_delta
export route_delta!, route_batch!
export checkpoint_log!, replay_log, compact_log!, log_info, compacted_runs, open_at
export get_stats, stats_counter, stats_histogram, stats_json, stats_prometheus, print_stats
export track_latency!, set_budget!, reset_stats!, set_monitoring!, serve_metrics
export device_status, page_device_status, sync_page!, sync_all!, apply_on_device!, device_stats
export CopyCommand, FillCommand, OpCommand, add_dependency!, remove_dependency!, propagate!
export dependents, topo_order, Subscription, subscribe, on, poll_events, events_dropped, is_lagged
export enable_instrumentation, disable_instrumentation, flush_instrumentation, instrumentation_status
export mmsb_follow, promote!, replica_lag
export reanalyze!, ir_pages, ir_text, module_pages, method_graph, compiler_edges, world_page, world_log
export ir_callers, precompile_statements # issue 19
export inference_timings, slowest_inferences, invalidation_trees, ir_locations, statement_location, instance_index # issue 19 items 9–13

"Public names that are not exported (generic names that would collide in user code): use them as `MMSB.name`."
const PUBLIC = (:apply, :apply!, :compose, :written_bytes, :isdense, :Event, :EdgeId, :Stats, :LogInfo,
                :track_delta_latency!, :track_propagation_latency!, :MetricsServer, :generation)

function __init__()
    load_library()
    init_slots()
    init_graph()
    init_notify()
end

end # module MMSB
