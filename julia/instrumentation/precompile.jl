# Inference (and, from 1.9, native code in the package image) of the flush
# path at precompile time: the first flush in a process otherwise compiles all
# of it, which made the first REPL command after `enable_instrumentation()`
# take seconds (issue 19, item 14). Each `precompile` returns false rather
# than throwing when a signature does not apply on this version.
let M = InstrumentationManager, S = MMSBState, MIs = Vector{Core.MethodInstance}
    precompile(_flush_state, (S,))
    precompile(_flush_all, ())
    precompile(_flush_locked!, (M,))
    precompile(_process!, (M, MIs))
    precompile(_walk_into_pending!, (M,))
    precompile(_walk_uncaptured, (M,))
    precompile(_take_baseline!, (M,))
    precompile(_sync_world!, (M,))
    precompile(_reanalyze_stale!, (M,))
    precompile(_note_modules!, (M, MIs))
    precompile(_infer_ir, (Core.MethodInstance, UInt))
    precompile(_infer_ir, (Core.MethodInstance, UInt, Any))
    precompile(_compiled_code, (Core.MethodInstance,))
    precompile(_clear_codes!, ())
    precompile(_lowered_ir, (Core.MethodInstance, UInt))
    precompile(_render, (Core.CodeInfo,))
    precompile(_render, (Core.CodeInfo, Any))
    precompile(_render, (Core.CodeInfo, Type))
    precompile(_render, (Core.CodeInfo, IdDict{Any,String}))
    precompile(_memo_sprint, (Any, IdDict{Any,String}))
    precompile(_memo_sprint, (Any, IdDict{Any,String}, Module))
    precompile(_call_label, (Any, IdDict{Any,String}))
    precompile(_instance_label, (Core.MethodInstance, IdDict{Any,String}))
    precompile(_render_source, (Method, Dict{String,Vector{String}}))
    precompile(_reanalyze, (S, Any))
    precompile(_reanalyze, (S, Nothing))
    precompile(_repl_flush, ())
    precompile(enable_instrumentation, (S,))
    precompile(disable_instrumentation, (S,))
    precompile(ir_text, (S, PageId))
    precompile(ir_pages, (S, Any, Any))
    precompile(instrumentation_status, (S,))
    precompile(world_log, (S,))
    # issue 19 items 9–13: the index is written by every flush.
    T = ToolsState
    precompile(_tools_sync!, (M,))
    precompile(_tools_enable!, (M, Bool, Bool, Bool))
    precompile(_tools_check, (Bool, Bool, Bool))
    precompile(_tools_disable!, (M,))
    precompile(_sync_index!, (M, T, UInt))
    precompile(_sync_timing!, (M, T, UInt))
    precompile(_sync_invalidations!, (M, T, UInt))
    precompile(_sync_locations!, (M, T, UInt))
    precompile(_put_text!, (M, T, Symbol, String))
    precompile(_write_text!, (S, ToolText, String, String))
    precompile(_backedge_callers, (Core.MethodInstance,))
    precompile(_precompile_line, (Any,))
    precompile(_precompile_line, (Any, String))
    # What the rendering prints: Base's IR printer for a `CodeInfo => type` pair.
    precompile(sprint, (typeof(show), Core.CodeInfo))
    precompile(sprint, (typeof(show), Pair{Core.CodeInfo,Any}))
    precompile(sprint, (typeof(show), Pair{Core.CodeInfo,DataType}))
end

# A small rendering run at precompile time: Base's IR printer specialized on
# our `TypeMemoIO` (and the plain path) is compiled here, not by the first
# flush. Nothing here needs the native library.
function _precompile_sample(v::Vector{Float64})
    s = 0.0
    for x in v
        s += x > 1 ? sqrt(x) : x
    end
    return s
end
try
    _self_check() # compiles the checks `enable_instrumentation` runs first
    memo = IdDict{Any,String}()
    for optimize in (false, true)
        code, rt = first(code_typed(_precompile_sample, (Vector{Float64},); optimize = optimize, debuginfo = :none))
        _render(code, rt, memo)
    end
    _render(first(code_lowered(_precompile_sample, (Vector{Float64},))), memo)
    # The label and the index's signature of an instance (a fresh memo: the types are printed, not found).
    sample = Tuple{typeof(_precompile_sample),Vector{Float64}}
    _call_label(sample, IdDict{Any,String}())
    _memo_sprint(sample, IdDict{Any,String}(), Main)
catch
    # Only a speed-up: a failure here must not stop the package from loading.
end

# What the first flush still compiled at run time (Base's IR and type printing
# reached by run-time dispatch, and specializations of Base methods on our
# types): code reached only by dynamic dispatch is not cached in the package
# image unless a `precompile` statement names it. The lists are the output of
# `julia --trace-compile` for the first `enable_instrumentation` and flush
# (benchmark/instrumentation_bench.jl's workload), one per Julia version, with
# our own closures and the workload's methods left out; a statement that does
# not apply (another patch release names Base's closures differently) is skipped.
# Every supported version has a file (empty where no list was made), so the
# package image depends on it and is rebuilt when it changes.
let file = joinpath(_INSTRUMENTATION_DIR, "precompile", "julia-$(VERSION.major).$(VERSION.minor).txt")
    if isfile(file)
        include_dependency(file)
        for line in eachline(file)
            startswith(line, "precompile(") || continue
            try
                Core.eval(@__MODULE__, Meta.parse(line))
            catch
            end
        end
    end
end
