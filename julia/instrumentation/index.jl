# The instance index (issue 19, items 12 and 13): what `precompile_statements`
# and `ir_callers` need, stored in a page so they work on a reopened or
# replayed state and in a reader. One text (IR text chain layout), rewritten
# by each flush as deltas (only the bytes that changed are logged):
#
#   mmsb-instrumentation-index 1
#   i <source> <lowered> <typed> <optimized> <lines> <label> <signature> <precompile>
#   c <caller optimized> <callee optimized> <how>
#
# fields separated by tabs; page ids in decimal (<lines> 0 when no line table
# is stored); <precompile> is empty when the signature is not concrete or
# cannot be named from Main. Instances in the order they were first captured;
# after each, one `c` line per edge from it to a callee: <how> is `invoke` (an `:invoke`
# statement of the caller's optimized code) or `inferred` (the compiler
# recorded the caller as depending on the callee, a backedge: the call was
# inlined, or left dynamic with the target known to inference).

const INDEX_HEADER = "mmsb-instrumentation-index 1"

function _sync_index!(m::InstrumentationManager, t::ToolsState, world::UInt)
    known = Base.IdSet{Any}(t.order)
    fresh = Any[spec for spec in keys(m.instances) if !(spec in known)]
    sort!(fresh; by = s -> m.instances[s].label) # deterministic within one flush
    append!(t.order, fresh)
    filter!(spec -> _lookup(m.instances, spec) !== nothing, t.order)
    pos = IdDict{Any,Int}()
    for (i, spec) in enumerate(t.order)
        pos[m.instances[spec]] = i
    end
    # Edges by caller position: the `c` lines follow their caller's `i` line, so
    # an instance captured later adds text at the end (fewer bytes change).
    edges = [Dict{Int,Symbol}() for _ in t.order]
    for spec in t.order
        e = m.instances[spec]
        for c in e.callees
            callee = _lookup(m.instances, c)
            callee === nothing || (edges[pos[e]][pos[callee]] = :invoke)
        end
    end
    for spec in t.order
        callee = m.instances[spec]
        for caller in _backedge_callers(callee.mi)
            e = _lookup(m.instances, caller.specTypes)
            (e === nothing || e.mi !== caller) && continue
            get!(edges[pos[e]], pos[callee], :inferred)
        end
    end
    memo = IdDict{Any,String}() # argument types repeat across signatures
    io = IOBuffer()
    println(io, INDEX_HEADER)
    for (i, spec) in enumerate(t.order)
        e = m.instances[spec]
        lines = get(t.lines, spec, nothing)
        sig = get!(() -> _clean(_memo_sprint(spec, memo, Main)), t.spec_text, spec)
        pc = get!(() -> _precompile_line(spec, sig), t.precompile, spec)
        print(io, "i\t", e.method.source.page.value, '\t', e.method.lowered.page.value, '\t', e.typed.page.value, '\t',
              e.optimized.page.value, '\t', lines === nothing ? 0 : lines[3].head.value, '\t', _clean(e.label), '\t',
              sig, '\t', pc, '\n')
        for to in sort!(collect(keys(edges[i])))
            print(io, "c\t", e.optimized.page.value, '\t', m.instances[t.order[to]].optimized.page.value, '\t',
                  edges[i][to], '\n')
        end
    end
    _put_text!(m, t, :index, String(take!(io)))
    return nothing
end

"""
The `precompile(...)` line for an instance signature, or \"\" (not concrete,
or not nameable from Main). `sig`: the signature as printed from Main and
cleaned, when the caller has it already (`_clean` maps characters one by one,
so cleaning the line or its parts gives the same text).
"""
function _precompile_line(@nospecialize(spec), sig::Union{Nothing,String} = nothing)
    (spec isa DataType && Base.isdispatchtuple(spec)) || return ""
    _named_from_main(spec) || return ""
    sig === nothing && (sig = _clean(sprint(show, spec; context = :module => Main)))
    return string("precompile(", sig, ")")
end

# Whether every type in `T` lives in a module reachable from Main by names (so the printed form parses back).
function _named_from_main(@nospecialize(T))
    T isa Union && return _named_from_main(T.a) && _named_from_main(T.b)
    T isa UnionAll && return _named_from_main(T.body)
    T isa DataType || return true
    return _reachable(parentmodule(T)) && all(_named_from_main, T.parameters)
end

function _reachable(mod::Module)
    loaded = Base.loaded_modules_array()
    while true
        (mod === Main || mod === Core || mod === Base || any(x -> x === mod, loaded)) && return true
        p = parentmodule(mod)
        p === mod && return false
        (isdefined(p, nameof(mod)) && getfield(p, nameof(mod)) === mod) || return false
        mod = p
    end
end

"One instance of the stored index."
struct IndexEntry
    source::PageId
    lowered::PageId
    typed::PageId
    optimized::PageId
    lines::PageId      # PageId(0): no line table stored
    label::String
    signature::String
    precompile::String
end

"""
    instance_index(src) -> (instances::Vector{IndexEntry}, edges::Vector{CompilerEdge})

The index as stored in the pages of `src` (a live, reopened or replayed state,
or a reader): every captured instance and every caller → callee edge between
their optimized pages (`kind` `:invoke` or `:inferred`). Empty when nothing
was stored.
"""
function instance_index(src::PageSource)
    text = _read_text(src, :index)
    insts = IndexEntry[]
    edges = CompilerEdge[]
    isempty(text) && return (instances = insts, edges = edges)
    lines = split(text, '\n'; keepempty = false)
    first(lines) == INDEX_HEADER || error("unknown instrumentation index layout: $(repr(first(lines)))")
    for line in lines[2:end]
        f = _fields(line)
        if f[1] == "i" && length(f) == 9
            ids = map(x -> PageId(parse(UInt64, x)), f[2:6])
            push!(insts, IndexEntry(ids..., f[7], f[8], f[9]))
        elseif f[1] == "c" && length(f) == 4
            push!(edges, CompilerEdge(PageId(parse(UInt64, f[2])), PageId(parse(UInt64, f[3])), Symbol(f[4])))
        else
            error("malformed line in the instrumentation index: $(repr(line))")
        end
    end
    return (instances = insts, edges = edges)
end

"""
    precompile_statements(src) -> Vector{String}
    precompile_statements()

One `precompile(Tuple{...})` line per captured instance whose signature is
concrete (what a package author pastes into a precompile workload, as
SnoopCompile's output), sorted. Types are printed as seen from `Main`;
functions of a module bound nowhere (`Module(:X)`) cannot be named from a
file and are left out. Read from the index page, so `src` may be a live
state, a state reopened with `open_at`, one replayed with `replay_log` (the
instances captured up to that LSN), or a reader (`mmsb_open`).
"""
function precompile_statements(src::PageSource)
    out = String[e.precompile for e in instance_index(src).instances if !isempty(e.precompile)]
    return sort!(unique!(out))
end
precompile_statements() = precompile_statements(default_instrumentation_state())

# The stored entry of the instance `f(::types...)`: by its printed signature,
# else (as `ir_pages`) the most specific stored signature covering the call
# among those that can be evaluated here.
function _index_entry(src::PageSource, insts::Vector{IndexEntry}, @nospecialize(f), @nospecialize(types))
    tt = _call_signature(f, types)
    if src isa MMSBState
        m = instrumentation_manager(src)
        if m !== nothing
            opt = lock(() -> (e = _lookup(m.instances, tt); e === nothing ? nothing : e.optimized.page), m.lock)
            if opt === nothing
                opt = try
                    lock(() -> _find_instance(m, tt).optimized.page, m.lock)
                catch err
                    err isa ArgumentError || rethrow()
                    nothing
                end
            end
            i = opt === nothing ? nothing : findfirst(e -> e.optimized == opt, insts)
            i === nothing || return insts[i]
        end
    end
    s = _clean(sprint(show, tt; context = :module => Main))
    i = findfirst(e -> e.signature == s, insts)
    i === nothing || return insts[i]
    best, bestT = nothing, nothing
    for e in insts
        T = try
            Core.eval(Main, Meta.parse(e.signature))
        catch
            continue
        end
        (T isa Type && tt <: T) || continue
        (bestT === nothing || T <: bestT) && ((best, bestT) = (e, T))
    end
    best === nothing && throw(ArgumentError("no captured method instance for $tt in the stored index (call it, then flush_instrumentation)"))
    return best
end

_irpages(src::PageSource, e::IndexEntry) = IRPages(e.source, e.lowered, e.typed, e.optimized, e.label, src)

"""
    ir_callers(src, f, types; kinds = (:invoke, :inferred)) -> Vector{IRPages}
    ir_callers(f, types; kw...)

The captured instances that call the captured instance of `f(::types...)`,
read from the index page (so `src` may also be a reopened or replayed state,
or a reader), sorted by label. `:invoke`: the caller's optimized code has an
`:invoke` of it (also a `:calls` edge, caller → callee). `:inferred`: the
compiler recorded the caller as depending on it (a backedge), because the
call was inlined or left as a dynamic call whose target inference knew.
Invalidation spreads this way: these are the captured instances a
redefinition of `f` invalidates.
"""
function ir_callers(src::PageSource, @nospecialize(f), @nospecialize(types); kinds = (:invoke, :inferred))
    idx = instance_index(src)
    target = _index_entry(src, idx.instances, f, types).optimized
    by_page = Dict(e.optimized => e for e in idx.instances)
    out = IRPages[]
    for e in idx.edges
        (e.to == target && e.kind in kinds) || continue
        c = get(by_page, e.from, nothing)
        c === nothing || push!(out, _irpages(src, c))
    end
    return sort!(out; by = p -> p.label)
end
ir_callers(@nospecialize(f), @nospecialize(types); kw...) = ir_callers(default_instrumentation_state(), f, types; kw...)
