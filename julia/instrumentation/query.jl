# Queries over what a state captured.

"What the page-reading queries accept: a live or replayed state, or a reader of a state directory."
const PageSource = Union{MMSBState,MMSBReader}

"""
    IRPages

The four IR pages of one method instance, as returned by [`ir_pages`](@ref):
fields `source`, `lowered`, `typed`, `optimized` (each a `PageId`), like a
NamedTuple (`NamedTuple(p)` gives one). `show` prints the text of each page.
"""
struct IRPages
    source::PageId
    lowered::PageId
    typed::PageId
    optimized::PageId
    label::String
    state::PageSource
end

Base.NamedTuple(p::IRPages) = (source = p.source, lowered = p.lowered, typed = p.typed, optimized = p.optimized)
Base.keys(::IRPages) = (:source, :lowered, :typed, :optimized)
Base.getindex(p::IRPages, k::Symbol) = getfield(NamedTuple(p), k)
Base.iterate(p::IRPages, i = 1) = i > 4 ? nothing : (getfield(p, i), i + 1)
Base.length(::IRPages) = 4

Base.show(io::IO, p::IRPages) = print(io, "IRPages(", p.label, ": ", NamedTuple(p), ")")

function Base.show(io::IO, ::MIME"text/plain", p::IRPages)
    println(io, "IR pages of ", p.label)
    for k in keys(p)
        println(io, "── ", k, " (", p[k], ") ──")
        print(io, ir_text(p.state, p[k]))
        k === :optimized || println(io)
    end
end

"The call signature `Tuple{typeof(f), types...}`, also for a `types` with a `where` clause (`Tuple{Vector{T}} where T`)."
function _call_signature(@nospecialize(f), @nospecialize(types))
    tt = Base.to_tuple_type(types)
    body = Base.unwrap_unionall(tt)::DataType
    return Base.rewrap_unionall(Tuple{Core.Typeof(f), body.parameters...}, tt)
end

function _find_instance(m::InstrumentationManager, @nospecialize(f), @nospecialize(types))
    return _find_instance(m, _call_signature(f, types))
end

function _find_instance(m::InstrumentationManager, @nospecialize(tt))
    ent = _lookup(m.instances, tt)
    ent === nothing || return ent
    # The instance compiled for a call may have a wider signature than the
    # call (specialization heuristics): take the most specific one covering it.
    best = nothing
    for e in values(m.instances)
        if tt <: e.spec && (best === nothing || e.spec <: best.spec)
            best = e
        end
    end
    best === nothing && throw(ArgumentError("no captured method instance for $tt (call it, then flush_instrumentation)"))
    return best
end

"""
    ir_pages(state, f, types) -> IRPages
    ir_pages(f, types)

The page ids holding the source, lowered code, typed IR and optimized IR of
the captured instance of `f` for argument types `types` (a tuple type or a
tuple of types). Throws an `ArgumentError` when it was not captured.
"""
function ir_pages(state::MMSBState, @nospecialize(f), @nospecialize(types))
    m = _manager(state)
    lock(m.lock) do
        e = _find_instance(m, f, types)
        return IRPages(e.method.source.page, e.method.lowered.page, e.typed.page, e.optimized.page, e.label, state)
    end
end
ir_pages(@nospecialize(f), @nospecialize(types)) = ir_pages(default_instrumentation_state(), f, types)

"""
    ir_pages(state, signature::Type{<:Tuple}) -> IRPages

The same, by the instance's full signature (`Tuple{typeof(f), Int}`, or a
captured instance's `specTypes`, `where` clause included).
"""
function ir_pages(state::MMSBState, @nospecialize(sig::Type))
    m = _manager(state)
    lock(m.lock) do
        e = _find_instance(m, sig)
        return IRPages(e.method.source.page, e.method.lowered.page, e.typed.page, e.optimized.page, e.label, state)
    end
end

"""
    ir_text(state, page) -> String
    ir_text(page)

The text held by an IR page: its bytes and those of the continuation pages it
points to (layout in docs/instrumentation.md). Works on a state replayed to an
earlier LSN (`replay_log`), a reopened one (`open_at`) and a reader
(`mmsb_open`) too: the chain is read as it was then.
"""
function ir_text(state::PageSource, page::PageId)
    buf = UInt8[]
    p = page
    for _ in 1:MAX_IR_CHAIN
        chunk, next = decode_ir_page(read_page(state, p))
        append!(buf, chunk)
        next == 0 && return String(buf)
        p = PageId(next)
    end
    error("the IR text of page $(page.value) continues over more than $MAX_IR_CHAIN pages (a corrupt chain)")
end

"Most pages one IR text may span (a longer chain is taken as corrupt: a cycle)."
const MAX_IR_CHAIN = 4096
ir_text(page::PageId) = ir_text(default_instrumentation_state(), page)

"""
    module_pages(state, mod) -> Vector{PageId}
    module_pages(mod)

Every IR page (source, lowered, typed, optimized) of the captured methods
defined in module `mod`, ascending.
"""
function module_pages(state::MMSBState, mod::Module)
    m = _manager(state)
    lock(m.lock) do
        out = PageId[]
        for ment in values(m.methods)
            ment.method.module === mod && push!(out, ment.source.page, ment.lowered.page)
        end
        for e in values(m.instances)
            e.method.method.module === mod && push!(out, e.typed.page, e.optimized.page)
        end
        return sort!(unique!(out); by = p -> p.value)
    end
end
module_pages(mod::Module) = module_pages(default_instrumentation_state(), mod)

"""
    MethodGraph

What [`method_graph`](@ref) returns: `root` (the instance's label), `pages`
(page id => label of each page, in discovery order) and `edges` (a vector of
[`CompilerEdge`](@ref)). `show` prints the edges with page labels.
"""
struct MethodGraph
    root::String
    pages::Vector{Pair{PageId,String}}
    edges::Vector{CompilerEdge}
end

function Base.show(io::IO, ::MIME"text/plain", g::MethodGraph)
    names = Dict(p => l for (p, l) in g.pages)
    println(io, "MethodGraph of ", g.root, ": ", length(g.pages), " pages, ", length(g.edges), " edges")
    for e in g.edges
        println(io, "  ", names[e.from], " ─", e.kind, "→ ", names[e.to])
    end
end
Base.show(io::IO, g::MethodGraph) = print(io, "MethodGraph(", g.root, ", ", length(g.pages), " pages, ", length(g.edges), " edges)")

"""
    method_graph(state, f, types) -> MethodGraph
    method_graph(f, types)

The pages of the captured instance of `f(::types...)` and of every captured
instance it invokes (transitively), with the compiler edges among them:
source → lowered → typed → optimized, and caller → callee between optimized pages.
"""
function method_graph(state::MMSBState, @nospecialize(f), @nospecialize(types))
    m = _manager(state)
    lock(m.lock) do
        root = _find_instance(m, f, types)
        ents = InstanceEntry[root]
        i = 1
        while i <= length(ents)
            for spec in ents[i].callees
                c = _lookup(m.instances, spec)
                (c === nothing || any(x -> x === c, ents)) || push!(ents, c)
            end
            i += 1
        end
        pages = Pair{PageId,String}[]
        for e in ents, s in (e.method.source, e.method.lowered, e.typed, e.optimized)
            any(p -> first(p) == s.page, pages) || push!(pages, s.page => string(s.kind, " ", s.label))
        end
        ids = Set(first(p) for p in pages)
        edges = [e for e in m.edges if e.from in ids && e.to in ids]
        return MethodGraph(root.label, pages, edges)
    end
end
method_graph(@nospecialize(f), @nospecialize(types)) = method_graph(default_instrumentation_state(), f, types)

"""
    compiler_edges(state) -> Vector{CompilerEdge}

Every compiler edge recorded for `state` (the Julia-side table; see
docs/instrumentation.md for how it reaches the native graph).
"""
compiler_edges(state::MMSBState) = (m = _manager(state); lock(() -> copy(m.edges), m.lock))

"""
    world_page(state) -> PageId
    world_page() -> PageId

The page tracking the world age of `state`'s instrumentation (or of the
default state's; layout in docs/instrumentation.md; decode it with
[`world_log`](@ref)).
"""
world_page(state::MMSBState) = _manager(state).world_page
world_page() = world_page(default_instrumentation_state())

"""
    world_log(state) -> NamedTuple
    world_log() -> NamedTuple

Reads the world page of `state` (or of the default state, like the other
REPL helpers): `world` (the world age at the last flush), `count` (entries
ever recorded), `invalidations`, and `entries`, the most recent `WORLD_RING`
[`WorldEntry`](@ref)s, oldest first.
"""
world_log(state::MMSBState) = decode_world(read_page(state, world_page(state)))
world_log() = world_log(default_instrumentation_state())

"""
    instrumentation_status(state) -> NamedTuple
    instrumentation_status()

`enabled`, `hook_installed`, `instances`, `methods`, `pages`, `edges`,
`deltas` (IR texts rewritten after their first write), `continuations`
(continuation pages added when a text outgrew its pages), `flushes`, `queued`
(recorded, not yet rendered), `hook_calls`, `errors` (caught in the hook and
while rendering), `first_error` (message of the first one, or `nothing`),
`world`, `world_page`, `native_rejected` (edges the native graph refused:
cycles from recursive calls), `failures` (instances whose capture failed:
not counted as captured, and no page of theirs is left behind), `walks` and
`walk_found` (flushes that walked the method tables for compiled instances,
and the instances found only that way), `stale_reanalyzed` (invalidated
instances re-analyzed by a flush) and `stale_pending` (invalidated instances
over the per-flush bound, re-analyzed by a later flush).
"""
function instrumentation_status(state::MMSBState)
    m = instrumentation_manager(state)
    herr = _HOOK_ERRORS[]
    hfirst = _HOOK_FIRST_ERROR[]
    hmsg = hfirst === nothing ? nothing : string("type-inference hook: ", sprint(showerror, hfirst))
    if m === nothing
        return (enabled = false, hook_installed = hook_installed(), instances = 0, methods = 0, pages = 0,
                edges = 0, deltas = 0, continuations = 0, flushes = 0, queued = length(_QUEUE),
                hook_calls = _HOOK_CALLS[], errors = herr, first_error = hmsg, world = UInt(0), world_page = nothing,
                native_rejected = 0, failures = 0, walks = 0, walk_found = 0, stale_reanalyzed = 0, stale_pending = 0)
    end
    lock(m.lock) do
        first = hmsg !== nothing ? hmsg : m.first_error
        return (enabled = m.enabled, hook_installed = hook_installed(), instances = length(m.instances),
                methods = length(m.methods), pages = length(m.slots), edges = length(m.edges), deltas = m.deltas,
                continuations = m.continuations, flushes = m.flushes, queued = length(_QUEUE) + length(m.pending),
                hook_calls = _HOOK_CALLS[], errors = herr + m.errors, first_error = first, world = m.last_world,
                world_page = m.world_page, native_rejected = m.native_rejected, failures = m.failures,
                walks = m.walks, walk_found = m.walk_found, stale_reanalyzed = m.stale_reanalyzed,
                stale_pending = length(m.stale))
    end
end
instrumentation_status() = instrumentation_status(default_instrumentation_state())
