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
# `enable_instrumentation(state; invalidations = true)`. 1.5 prints its log
# instead of listing it: parsed from text into the same layout (see
# `_parse_invalidations15` below).

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
    list isa _InvalidationText15 && return _sync_invalidations15!(m, t, list)
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
    _write_invalidations!(m, t, events, other)
    return nothing
end

"Appends parsed `events` (and `other` entries) to the invalidation log of `t`."
function _write_invalidations!(m::InstrumentationManager, t::ToolsState, events, other)
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
`enable_instrumentation(state; invalidations = true)`: empty otherwise. On
1.5 the trees are parsed from what the runtime prints, which names no root
instance (the root is the new method's signature) and no deleted method
(those callers are in `other`).
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

# --- Julia 1.5: the printed log (see `_InvalidationText15` in compat.jl) -------

"The method whose signature 1.5 printed after `>> `, or `nothing` (a signature that does not parse back)."
function _method_of_signature15(text::AbstractString)
    T = try
        ex = Meta.parse(text; raise = false)
        (ex isa Expr && ex.head in (:error, :incomplete)) ? nothing : Core.eval(Main, ex)
    catch
        nothing
    end
    T isa Type || return nothing
    ms = try
        Base._methods_by_ftype(T, -1, Base.get_world_counter())
    catch
        nothing
    end
    ms isa AbstractVector || return nothing
    for x in ms
        meth = x isa Core.SimpleVector ? x[3] : x.method
        meth isa Method && meth.sig == T && return meth
    end
    return nothing
end

"""
1.5: parses lines `lo:hi` of the printed log into the events of the 1.10
layout (`_parse_invalidations`). Per `>> method signature` line, one event of
the method (found by its signature: its world and location), whose roots are
the lines printed since the previous one: a `-- ` line is a dropped dispatch
cache entry (`invalidate_mt_cache`); a line at depth 0 is a caller through the
method table's backedges (a call signature that had no method, `mt_backedges`:
the root is the new method's signature, 1.5 prints not the call's), with its
own callers below it; lines at depth 1 and more are the callers of an
instance whose dispatch changed, which 1.5 does not print: their root is the
new method's signature too. Lines that no `>>` closed before a `_INV15_CUT`
(a `Base.delete_method`, whose disabling prints no closing line, or a
definition that only dropped dispatch-cache entries) go to `other`.
"""
function _parse_invalidations15(m::InstrumentationManager, lines::Vector{String}, lo::Int, hi::Int, shows::Dict{String,Tuple{String,UInt64}})
    events, other = Any[], String[]
    pending = Tuple{Int,String}[]   # (depth, or -1 for `-- `; printed instance)
    label(x) = get(shows, x, (_clean(x), UInt64(0)))
    for i in lo:hi
        line = lines[i]
        if line == _INV15_CUT
            isempty(pending) || push!(other, _clean(string("invalidated with no definition logged (Base.delete_method, or dispatch-cache entries only): ",
                                                            join((p[2] for p in pending), ", "))))
            empty!(pending)
        elseif startswith(line, ">> ")
            rest = line[4:end]
            k = findfirst("(...) ", rest)
            sigtext = k === nothing ? rest : rest[(last(k) + 1):end]
            meth = _method_of_signature15(sigtext)
            roots = Any[]
            cur = nothing
            for (d, x) in pending
                l, p = label(x)
                if d < 0
                    push!(roots, ("invalidate_mt_cache", l, p, Any[])); cur = nothing
                elseif d == 0
                    cur = ("mt_backedges", _clean(sigtext), UInt64(0), Any[(1, l, p)]); push!(roots, cur)
                elseif cur !== nothing && cur[1] == "mt_backedges"
                    push!(cur[4], (d + 1, l, p))
                else
                    if cur === nothing
                        cur = ("jl_method_table_insert", _clean(sigtext), UInt64(0), Any[]); push!(roots, cur)
                    end
                    push!(cur[4], (d, l, p))
                end
            end
            empty!(pending)
            if meth === nothing
                push!(events, (UInt64(0), "jl_method_table_insert", _clean(rest), "", roots, nothing))
            else
                push!(events, (_method_world(meth), "jl_method_table_insert", _clean(string(meth.module, ".", meth.name, " ", meth.sig)),
                               string(meth.file, ":", meth.line), roots, meth))
            end
        elseif startswith(line, "-- ")
            push!(pending, (-1, line[4:end]))
        else
            d = something(findfirst(c -> c != ' ', line), 1) - 1
            push!(pending, (d, line[(d + 1):end]))
        end
    end
    return events, other
end

function _sync_invalidations15!(m::InstrumentationManager, t::ToolsState, log::_InvalidationText15)
    if t.inval_log !== log   # a new log (logging was off meanwhile): read it from its start
        t.inval_log = log
        t.inval_seen = 0
    end
    _pull_invalidation_text15!(log)
    if log.lost && !t.inval_lost
        t.inval_lost = true
        _write_invalidations!(m, t, Any[], ["log stopped: jl_uv_stdout was replaced (redirect_stdout); later invalidations are not caught"])
    end
    lines = log.lines
    hi = length(lines)
    hi > t.inval_seen || return nothing
    # How the runtime prints each captured instance: its label and page when a line names it.
    shows = Dict{String,Tuple{String,UInt64}}()
    for e in values(m.instances)
        shows[_static_show15(log, e.mi)] = (e.label, e.optimized.page.value)
    end
    events, other = _parse_invalidations15(m, lines, t.inval_seen + 1, hi, shows)
    t.inval_seen = hi
    _write_invalidations!(m, t, events, other)
    return nothing
end
