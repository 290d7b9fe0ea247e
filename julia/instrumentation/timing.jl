# Inference timing (issue 19, item 9): what `@snoop_inference` gives, per
# flush, stored in the timing log (a text of the directory page, appended by
# each flush that has timings):
#
#   flush <n> <world> <source>
#   <depth> <inclusive ns> <exclusive ns> <label>
#
# in pre-order (depth 1: an inference entry point; depth k+1: inferred while
# inferring the node of depth k above it). <source> says what the version
# gives: `frames` (1.10, 1.11: Core.Compiler.Timings times every inference
# frame, with the tree of which inference triggered which), `entries` (1.5:
# the entry points of inference, timed in our hook; a nested one only when an
# inference reached the entry point again, as a generator does; 1.5 has no
# per-frame timer: `Core.Compiler.Timings` came with 1.6, and its `typeinf`
# calls callees' inference directly, never through the hook), or
# `entries+edges` (1.12, whose `Timings` is an empty stub: the entry points
# timed in our hook, and below each the callees its `CodeInstance` names in
# `edges` with the compiler's own `time_infer_total`, see `_ci_children`).
# On only with `enable_instrumentation(state; timing = true)`.

const _TIMING_HOOK = Ref(false)   # our hook times entry points (1.5, 1.12)
const _TIMING_DEPTH = zeros(Int, 1024)
const _TIMING_EVENTS = Tuple{Core.MethodInstance,Int,Int,UInt64,UInt64,Any}[]  # (mi, thread, depth, start, stop, returned)
# 1.12: the CodeInstances already placed in a tree (each is shown once, under
# the first entry point whose inference named it); bounded.
const _TIMING_SEEN = Base.IdSet{Any}()
const _TIMING_SEEN_LOCK = ReentrantLock()

"""
Forwards one inference to the compiler's entry point and times it (1.5, 1.12).
Our own rendering (recording off on this thread) is not timed.
"""
@noinline function _timed_typeinf(args::Tuple)
    tid = Threads.threadid()
    (tid <= length(_IN_HOOK) && !_IN_HOOK[tid]) || return _ORIGINAL[](args...)
    mi = args[1]
    mi isa Core.MethodInstance || return _ORIGINAL[](args...)
    d = (_TIMING_DEPTH[tid] += 1)
    t0 = time_ns()
    ret = nothing
    try
        ret = _ORIGINAL[](args...)
        return ret
    finally
        t1 = time_ns()
        _TIMING_DEPTH[tid] -= 1
        lock(_QUEUE_LOCK)
        try
            # 1.12: what the entry point returned (its `CodeInstance`: the tree below it).
            push!(_TIMING_EVENTS, (mi, tid, d, t0, t1, _HAS_CI_TIMES ? ret : nothing))
        finally
            unlock(_QUEUE_LOCK)
        end
    end
end

"Turns inference timing on or off for the process (Timings on 1.10/1.11, our hook elsewhere)."
function _set_timing!(on::Bool)
    if _HAS_TIMINGS
        if on && !_MEASURING[]
            _reset_timings!()
            _MEASURING[] = true
            _set_measure_typeinf!(true)
        elseif !on && _MEASURING[]
            _set_measure_typeinf!(false)
            _MEASURING[] = false
        end
    elseif on && !_TIMING_HOOK[]
        # Compiled before the hook calls it: compiling it from inside inference would recurse.
        args = _warmup_args()
        precompile(_timed_typeinf, (typeof(args),))
        _timed_typeinf(args)
        lock(_QUEUE_LOCK)
        try
            empty!(_TIMING_EVENTS)
        finally
            unlock(_QUEUE_LOCK)
        end
        _TIMING_HOOK[] = true
    elseif !on
        _TIMING_HOOK[] = false
    end
    return nothing
end

# Our own work (flush, reanalyze!) infers too: not the user's inference, not timed.
function _pause_timing!()
    _MEASURING[] || return false
    _set_measure_typeinf!(false)
    return true
end
_resume_timing!(was::Bool) = (was && _MEASURING[] && _set_measure_typeinf!(true); nothing)

"""
    InferenceTiming

One node of [`inference_timings`](@ref): `label` (the instance), `inclusive`
and `exclusive` seconds (exclusive: not counting the inferences it
triggered), `flush` (the flush that stored it; 0 below the entry points) and
`children`.
"""
struct InferenceTiming
    label::String
    inclusive::Float64
    exclusive::Float64
    flush::Int
    children::Vector{InferenceTiming}
end

function Base.show(io::IO, ::MIME"text/plain", t::InferenceTiming)
    function walk(n, depth)
        depth > 0 && println(io, "  "^(depth - 1), rpad(string(round(n.inclusive * 1e3; digits = 3), " ms"), 14),
                             rpad(string(round(n.exclusive * 1e3; digits = 3), " ms"), 14), n.label)
        foreach(c -> walk(c, depth + 1), n.children)
    end
    println(io, "InferenceTiming ", t.label, ": ", round(t.inclusive; digits = 6), " s inclusive (inclusive, exclusive, instance)")
    walk(t, 0)
end
Base.show(io::IO, t::InferenceTiming) = print(io, "InferenceTiming(", t.label, ", ", t.inclusive, " s, ", length(t.children), " children)")

# (label, inclusive ns, exclusive ns, children) while gathering
const _TNode = Tuple{String,UInt64,UInt64,Vector{Any}}

function _from_timing(x)::_TNode
    kids = Any[_from_timing(c) for c in x.children]
    incl = UInt64(x.time)
    for k in kids
        incl += k[2]
    end
    return (_any_label(x.mi_info.mi), incl, UInt64(x.time), kids)
end

_ours(mi::Core.MethodInstance) = (d = mi.def; mod = d isa Method ? d.module : d; mod isa Module && _within(mod, (@__MODULE__)))

# Entry-point events (per thread) as a tree: an event whose interval lies inside another's is its child.
function _from_events(events)
    roots = Any[]
    for tid in unique!(map(e -> e[2], events))
        evs = sort!(filter(e -> e[2] == tid, events); by = e -> (e[4], typemax(UInt64) - e[5]))
        stack = Any[]
        for (mi, _, _, t0, t1, ret) in evs
            while !isempty(stack) && stack[end][2] < t0
                pop!(stack)
            end
            node = Any[mi, t1, t0, Any[], ret]
            isempty(stack) ? push!(roots, node) : push!(stack[end][4], node)
            push!(stack, node)
        end
    end
    function conv(n)::_TNode
        kids = Any[conv(c) for c in n[4]]
        n[5] isa Core.CodeInstance && append!(kids, lock(() -> _ci_children(n[5]), _TIMING_SEEN_LOCK))
        incl = UInt64(n[2] - n[3])
        inner = UInt64(0)
        for k in kids
            inner += k[2]
        end
        # 1.12's callee times are the compiler's (Float16: 3 significant digits):
        # never more than the entry they ran in, so inclusive = exclusive + children.
        incl = max(incl, inner)
        return (_any_label(n[1]), incl, incl - inner, kids)
    end
    return Any[conv(r) for r in roots if !_ours(r[1])]
end

"""
1.12: the inferences below an entry point, from the compiler's own records: the
callees in the `edges` of its `CodeInstance` that no earlier tree showed, each
with its `time_infer_total` as inclusive time, recursively (an inference that
triggered another names it among its edges). Exclusive: inclusive minus the
children's. A callee inferred before timing was on, and not shown since, is
taken as inferred here the first time a caller names it (the records have no
time stamp to tell).
"""
function _ci_children(ci)
    out = Any[]
    _HAS_CI_TIMES || return out
    length(_TIMING_SEEN) > 100_000 && empty!(_TIMING_SEEN)
    push!(_TIMING_SEEN, ci)
    for c in _ci_callees(ci)
        c in _TIMING_SEEN && continue
        push!(_TIMING_SEEN, c)
        mi = _invoke_target(c)
        mi === nothing && continue
        total = _ci_seconds(c, :time_infer_total)
        (isfinite(total) && total > 0) || continue
        kids = _ci_children(c)
        inner = UInt64(0)
        for k in kids
            inner += k[2]
        end
        incl = max(round(UInt64, total * 1e9), inner)
        _ours(mi) || push!(out, (_any_label(mi), incl, incl - inner, kids))
    end
    return out
end

function _drain_timing!()
    if _HAS_TIMINGS
        _MEASURING[] || return Any[], "frames"
        ts = _take_timings!()
        ts === nothing && return Any[], "frames"
        return Any[_from_timing(x) for x in ts if !_ours(x.mi_info.mi)], "frames"
    end
    lock(_QUEUE_LOCK)
    evs = try
        e = copy(_TIMING_EVENTS)
        empty!(_TIMING_EVENTS)
        e
    finally
        unlock(_QUEUE_LOCK)
    end
    return _from_events(evs), _HAS_CI_TIMES ? "entries+edges" : "entries"
end

function _timing_text(nodes, flush::Int, world::UInt, source::String)
    io = IOBuffer()
    println(io, "flush\t", flush, '\t', world, '\t', source)
    function walk(n, depth)
        print(io, depth, '\t', n[2], '\t', n[3], '\t', _clean(n[1]), '\n')
        foreach(c -> walk(c, depth + 1), n[4])
    end
    foreach(n -> walk(n, 1), nodes)
    return String(take!(io))
end

function _sync_timing!(m::InstrumentationManager, t::ToolsState, world::UInt)
    t.timing || return nothing
    nodes, source = _drain_timing!()
    isempty(nodes) && return nothing
    _append_text!(m, t, :timing, _timing_text(nodes, t.flush, world, source))
    return nothing
end

"""
    inference_timings(src) -> InferenceTiming

The inference timing tree stored in `src` (a live, reopened or replayed
state, or a reader), as `@snoop_inference` gives it: a root whose children
are the inference entry points of every flush (in order), each with the
inferences it triggered below it, and inclusive and exclusive seconds per
node. What a version measures: 1.10/1.11 every inference frame
(`Core.Compiler.Timings`), 1.5 only the entry points (timed in the
type-inference hook), 1.12 the entry points and below them the inferences
their compiled code's edges name, with the compiler's own times (untested). Needs `enable_instrumentation(state; timing = true)`;
an empty root when nothing was stored.
"""
function inference_timings(src::PageSource)
    text = _read_text(src, :timing)
    root = InferenceTiming("ROOT", 0.0, 0.0, 0, InferenceTiming[])
    stack = Any[root]
    flush = 0
    for line in split(text, '\n'; keepempty = false)
        f = _fields(line)
        if f[1] == "flush"
            flush = parse(Int, f[2])
            resize!(stack, 1)
            continue
        end
        length(f) == 4 || error("malformed line in the timing log: $(repr(line))")
        depth = parse(Int, f[1])
        1 <= depth <= length(stack) || error("timing log: depth $depth under depth $(length(stack) - 1)")
        resize!(stack, depth)
        node = InferenceTiming(f[4], parse(UInt64, f[2]) / 1e9, parse(UInt64, f[3]) / 1e9, depth == 1 ? flush : 0,
                               InferenceTiming[])
        push!(stack[end].children, node)
        push!(stack, node)
    end
    total = 0.0
    for c in root.children
        total += c.inclusive
    end
    return InferenceTiming("ROOT", total, 0.0, 0, root.children)
end
inference_timings() = inference_timings(default_instrumentation_state())

"""
    slowest_inferences(src; n = 20) -> Vector{NamedTuple}

The flat table of [`inference_timings`](@ref): per instance label, the
exclusive and inclusive seconds summed over every time it was inferred, and
`count`, slowest (exclusive) first, at most `n` rows.
"""
function slowest_inferences(src::PageSource; n::Integer = 20)
    acc = Dict{String,Tuple{Float64,Float64,Int}}()
    function walk(t)
        a = get(acc, t.label, (0.0, 0.0, 0))
        acc[t.label] = (a[1] + t.exclusive, a[2] + t.inclusive, a[3] + 1)
        foreach(walk, t.children)
    end
    foreach(walk, inference_timings(src).children)
    rows = [(label = k, exclusive = v[1], inclusive = v[2], count = v[3]) for (k, v) in acc]
    sort!(rows; by = r -> (-r.exclusive, r.label))
    return rows[1:min(length(rows), n)]
end
slowest_inferences(; kw...) = slowest_inferences(default_instrumentation_state(); kw...)
