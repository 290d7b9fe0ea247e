# Invalidation trees (issue 19, item 10): what `@snoop_invalidations` gives,
# from the runtime's own log (`jl_debug_method_invalidation`, 1.6+), stored in
# the invalidation log (a text of the directory page, appended by each flush
# that read new entries):
#
#   event <world> <reason> <method> <file:line>
#   root <reason> <optimized page> <label>
#   node <depth> <optimized page> <label>
#   other <text>
#
# One `event` per definition (or deletion) that invalidated something: the
# world it was defined in (the `:defined` entry of the world page, see
# `world_log`), why (`jl_method_table_insert`; `jl_method_table_disable` for
# `Base.delete_method`, in the world of the deletion), the new method. A
# redefinition (same signature) is one insert event: the runtime logs the old
# method's disabling first, whose roots (reason `jl_method_table_disable`) it
# takes. Below it one `root` per instance (or call signature) whose
# dispatch changed, and its tree of invalidated callers in pre-order (`node`,
# depth 1: a caller of the root). <optimized page> is the page of a captured
# instance, 0 for one not captured. `other` keeps entries of the runtime's log
# this layout does not parse (package loading: `verify_methods`,
# `insert_backedges_callee`), as text, rather than guessing. On only with
# `enable_instrumentation(state; invalidations = true)`; refused on 1.5 (no log).

# A parsed event, while gathering: (world, reason, method label, location, roots, method)
# root: (reason, label, page, nodes::Vector{(depth, label, page)})

function _inval_label(m::InstrumentationManager, @nospecialize(x))
    mi = _log_instance(x)
    if mi !== nothing
        e = _lookup(m.instances, mi.specTypes)
        return _any_label(mi), e === nothing ? UInt64(0) : e.optimized.page.value
    end
    return _clean(sprint(show, x; context = :module => Main)), UInt64(0)
end

"""
Parses entries `lo:hi` of the runtime's invalidation list. Format (src/gf.c,
1.10: `invalidate_method_instance` pushes `(instance, depth::Int32)` in
pre-order, `invalidate_backedges` then `(instance, reason)`; a call
signature's callers (`mt` backedges) end with the signature itself; the
method closes the event with `(method, reason)`).
"""
function _parse_invalidations(m::InstrumentationManager, list::Vector{Any}, lo::Int, hi::Int)
    events = Any[]
    roots = Any[]
    pending = Any[]   # (depth, label, page)
    other = String[]
    i = lo
    while i <= hi
        x = list[i]
        y = i < hi ? list[i + 1] : nothing
        if _log_instance(x) !== nothing && y isa Int32
            l, p = _inval_label(m, x)
            push!(pending, (Int(y), l, p))
            i += 2
        elseif x isa Method && y isa String
            w = y == "jl_method_table_disable" ? _deleted_world(x) : _method_world(x)
            ev = (w, y, _clean(string(x.module, ".", x.name, " ", x.sig)), string(x.file, ":", x.line), roots, x)
            prev = isempty(events) ? nothing : events[end]
            if y == "jl_method_table_insert" && prev !== nothing && prev[2] == "jl_method_table_disable" && prev[6].sig == x.sig
                # A redefinition: the insert of the new method disabled the old one
                # (1.10 gf.c jl_method_table_insert → jl_method_table_invalidate): one
                # event, in the world of the new definition, with the old method's trees.
                events[end] = (w, y, ev[3], ev[4], vcat(prev[5], roots), x)
            else
                push!(events, ev)
            end
            roots = Any[]
            isempty(pending) || push!(other, string("callers left before ", y, ": ", length(pending)))
            empty!(pending)
            i += 2
        elseif y isa String && y in ("verify_methods", "insert_backedges_callee")
            # Package loading (staticdata_utils.c): (caller or signature, tag, cause).
            cause = i + 2 <= hi ? list[i + 2] : nothing
            push!(other, _clean(string(y, ": ", _inval_label(m, x)[1], " (", sprint(show, cause; context = :limit => true), ")")))
            i += 3
        elseif y isa String
            l, p = _inval_label(m, x)
            push!(roots, (y, l, p, copy(pending)))
            empty!(pending)
            i += 2
        elseif x isa Type && !isempty(pending)
            # The callers of a call signature that now has a (new) method: 1.10 gf.c:2068.
            # Their depths start at 0 (the caller itself): stored from 1, as below any root.
            push!(roots, ("mt_backedges", _inval_label(m, x)[1], UInt64(0), [(d + 1, l, p) for (d, l, p) in pending]))
            empty!(pending)
            i += 1
        else
            push!(other, _clean(sprint(show, x; context = :limit => true)))
            i += 1
        end
    end
    # Roots with no method event yet (the list was read while a definition was under way) wait.
    return events, roots, pending, other
end

function _sync_invalidations!(m::InstrumentationManager, t::ToolsState, world::UInt)
    t.invalidations || return nothing
    list = _INVAL_LOG[]
    list isa Vector{Any} || return nothing
    if t.inval_log !== list   # a new log (logging was off meanwhile): read it from its start
        t.inval_log = list
        t.inval_seen = 0
    end
    hi = length(list)
    hi > t.inval_seen || return nothing
    events, roots, pending, other = _parse_invalidations(m, list, t.inval_seen + 1, hi)
    if !isempty(pending) # a definition under way on another thread: read up to the last closed event
        j = hi - 1
        while j > t.inval_seen && !(list[j] isa Method && list[j + 1] isa String)
            j -= 1
        end
        j > t.inval_seen || return nothing
        hi = j + 1
        events, roots, pending, other = _parse_invalidations(m, list, t.inval_seen + 1, hi)
    end
    for (r, label, _, nodes) in roots # closed by no definition (package loading)
        push!(other, _clean(string(r, ": ", label, " (", length(nodes), " callers)")))
    end
    t.inval_seen = hi
    io = IOBuffer()
    for (w, reason, meth, loc, rs, _) in events
        print(io, "event\t", w, '\t', reason, '\t', meth, '\t', _clean(loc), '\n')
        for (r, label, page, nodes) in rs
            print(io, "root\t", r, '\t', page, '\t', label, '\n')
            for (d, l, p) in nodes
                print(io, "node\t", d, '\t', p, '\t', l, '\n')
            end
        end
    end
    for o in other
        print(io, "other\t", o, '\n')
    end
    _append_text!(m, t, :invalidations, String(take!(io)))
    return nothing
end

"One invalidated instance and the callers invalidated through it (`page`: its optimized page when captured, else `PageId(0)`)."
struct InvalidationNode
    label::String
    page::PageId
    children::Vector{InvalidationNode}
end

"One instance (or call signature) whose dispatch a definition changed, and the tree of callers invalidated with it."
struct InvalidationRoot
    reason::String
    label::String
    page::PageId
    children::Vector{InvalidationNode}
end

"""
    InvalidationTree

One definition and what it invalidated: `world` (the world it was defined
in, the same number as its `:defined` entry in [`world_log`](@ref); for a
deleted method the world of the deletion), `reason`
(`"jl_method_table_insert"` or `"jl_method_table_disable"`), `method`,
`location` (file:line) and `roots`.
"""
struct InvalidationTree
    world::UInt64
    reason::String
    method::String
    location::String
    roots::Vector{InvalidationRoot}
end

function Base.show(io::IO, ::MIME"text/plain", t::InvalidationTree)
    println(io, "world ", t.world, ": ", t.method, " (", t.location, ") ", t.reason)
    function walk(n, depth)
        println(io, "  "^depth, n.label, n.page.value == 0 ? "" : " [page $(n.page.value)]")
        foreach(c -> walk(c, depth + 1), n.children)
    end
    for r in t.roots
        println(io, "  ", r.label, " (", r.reason, ")", r.page.value == 0 ? "" : " [page $(r.page.value)]")
        foreach(c -> walk(c, 2), r.children)
    end
end
Base.show(io::IO, t::InvalidationTree) = print(io, "InvalidationTree(world ", t.world, ", ", t.method, ", ", length(t.roots), " roots)")

"""
    invalidation_trees(src) -> (trees::Vector{InvalidationTree}, other::Vector{String})

The invalidation trees stored in `src` (a live, reopened or replayed state, or
a reader), oldest first, as `@snoop_invalidations` gives them: for each
definition that invalidated compiled code, the instances whose dispatch it
changed and, below each, the callers invalidated through it. `other` holds
log entries that are not a definition's (package loading), as text. Needs
`enable_instrumentation(state; invalidations = true)` (1.10+; 1.5 has no
such log and refuses the option): empty otherwise.
"""
function invalidation_trees(src::PageSource)
    trees = InvalidationTree[]
    other = String[]
    stack = Any[]
    for line in split(_read_text(src, :invalidations), '\n'; keepempty = false)
        f = _fields(line)
        if f[1] == "event" && length(f) == 5
            push!(trees, InvalidationTree(parse(UInt64, f[2]), f[3], f[4], f[5], InvalidationRoot[]))
        elseif f[1] == "root" && length(f) == 4 && !isempty(trees)
            r = InvalidationRoot(f[2], f[4], PageId(parse(UInt64, f[3])), InvalidationNode[])
            push!(trees[end].roots, r)
            empty!(stack); push!(stack, r)
        elseif f[1] == "node" && length(f) == 4 && !isempty(stack)
            resize!(stack, clamp(parse(Int, f[2]), 1, length(stack)))
            n = InvalidationNode(f[4], PageId(parse(UInt64, f[3])), InvalidationNode[])
            push!(stack[end].children, n)
            push!(stack, n)
        elseif f[1] == "other"
            push!(other, join(f[2:end], '\t'))
        else
            error("malformed line in the invalidation log: $(repr(line))")
        end
    end
    return (trees = trees, other = other)
end
invalidation_trees() = invalidation_trees(default_instrumentation_state())
