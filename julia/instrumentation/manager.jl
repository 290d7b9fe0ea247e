# InstrumentationManager: what one state captured, its pages and edges, and
# the work done outside the hook (rendering, page writes, world tracking).

"""
    IRSlot

One IR text page: its current id and size, the text it holds, and how often
the text changed after the page was first written.
"""
mutable struct IRSlot
    page::PageId
    size::Int
    text::String
    kind::Symbol      # :source, :lowered, :typed, :optimized
    label::String
    updates::Int
end

"""
    CompilerEdge(from, to, kind)

A compiler dependency between two pages, kept on the Julia side: `kind` is
`:lowered` (source → lowered), `:typed` (lowered → typed), `:optimized`
(typed → optimized) or `:calls` (caller's optimized → callee's optimized).
"""
struct CompilerEdge
    from::PageId
    to::PageId
    kind::Symbol
end

# Source and lowered code belong to a method (shared by its instances).
mutable struct MethodEntry
    sig::Any
    method::Method
    label::String
    source::IRSlot
    lowered::IRSlot
end

# Typed and optimized code belong to one instance, keyed by its specTypes so a
# redefinition (new Method, new MethodInstance, same signature) updates the
# same pages through deltas.
mutable struct InstanceEntry
    spec::Any
    mi::Core.MethodInstance
    label::String
    method::MethodEntry
    typed::IRSlot
    optimized::IRSlot
    callees::Vector{Any}   # specTypes of the instances invoked from the optimized IR
    world::UInt            # world the IR was last rendered in
    closed_seen::Int       # closed CodeInstances already reported as invalidations
end

"""
    InstrumentationManager

The instrumentation of one state (see [`enable_instrumentation`](@ref)). Holds
the captured method instances, the page of each IR form, the compiler edges
between those pages and the world page. Its data stays queryable after
`disable_instrumentation`.
"""
mutable struct InstrumentationManager
    state::MMSBState
    enabled::Bool
    lock::ReentrantLock
    include_system::Bool
    modules::Union{Nothing,Vector{Module}}
    follow_invokes::Bool
    max_per_flush::Int
    pending::Vector{Core.MethodInstance}
    methods::IdDict{Any,MethodEntry}
    instances::IdDict{Any,InstanceEntry}
    slots::Dict{UInt64,IRSlot}            # page id => slot
    edges::Vector{CompilerEdge}
    edge_set::Set{CompilerEdge}
    world_page::PageId
    world_buf::Vector{UInt8}
    world_count::UInt64
    invalidations::UInt64
    last_world::UInt
    flushes::Int
    renders::Int
    deltas::Int
    reallocations::Int
    errors::Int
    first_error::Union{Nothing,String}
    native_rejected::Int     # edges the native graph refused (cycles from recursion)
    native::Dict{CompilerEdge,EdgeId}  # edges the native graph holds, to remove them again
end

const _MANAGERS = IdDict{MMSBState,InstrumentationManager}()
const _REGISTRY_LOCK = ReentrantLock()
const _SYSTEM_MODULE = IdDict{Module,Bool}()
const _ATEXIT = Ref(false)

function Base.show(io::IO, m::InstrumentationManager)
    print(io, "InstrumentationManager(", m.enabled ? "enabled" : "disabled", ", ",
          length(m.instances), " instances, ", length(m.slots), " IR pages, ", length(m.edges), " edges)")
end

"The manager of `state`, or `nothing` if instrumentation was never enabled on it."
instrumentation_manager(state::MMSBState) = lock(() -> get(_MANAGERS, state, nothing), _REGISTRY_LOCK)

function _manager(state::MMSBState)
    m = instrumentation_manager(state)
    m === nothing && throw(ArgumentError("no instrumentation data for this state (never enabled, or the state was closed)"))
    return m
end

_active_managers() = lock(_REGISTRY_LOCK) do
    InstrumentationManager[m for m in values(_MANAGERS) if m.enabled]
end

function _note_error!(m::InstrumentationManager, @nospecialize(err), what::AbstractString)
    m.errors += 1
    if m.first_error === nothing
        m.first_error = string(what, ": ", sprint(showerror, err))
    end
    return nothing
end

# --- which instances are captured ---------------------------------------

function _is_system(root::Module)
    get!(_SYSTEM_MODULE, root) do
        root === Core || root === Base || root === (@__MODULE__) ||
            isdir(joinpath(Sys.STDLIB, string(nameof(root))))
    end
end

function _within(mod::Module, top::Module)
    while true
        mod === top && return true
        p = parentmodule(mod)
        p === mod && return false
        mod = p
    end
end

function _accept(m::InstrumentationManager, mi::Core.MethodInstance)
    def = mi.def
    def isa Method || return false # top-level thunks have no method, no signature
    mod = def.module
    _within(mod, (@__MODULE__)) && return false # never capture our own rendering
    m.modules !== nothing && return any(t -> _within(mod, t), m.modules)
    return m.include_system || !_is_system(Base.moduleroot(mod))
end

# --- rendering (deterministic text) ---------------------------------------

const _MAX_LABEL = 200

function _instance_label(mi::Core.MethodInstance)
    m = mi.def::Method
    s = try
        string(m.module, ".", sprint(Base.show_tuple_as_call, m.name, mi.specTypes))
    catch
        string(m.module, ".", m.name, " ", mi.specTypes)
    end
    return truncate_utf8(s, _MAX_LABEL)
end

_method_label(m::Method) = truncate_utf8(string(m.module, ".", m.name, " ", m.sig), _MAX_LABEL)

"Renders a CodeInfo (and return type) as `code_typed`/`code_lowered` results print."
_render(code::Core.CodeInfo) = sprint(show, code)
_render(code::Core.CodeInfo, @nospecialize(rt)) = sprint(show, code => rt)

const _MAX_SOURCE_LINES = 400

"The text of the definition of `m` (from its file, or this session's REPL input), or `nothing`."
function _source_text(m::Method, files::Dict{String,Vector{String}})
    file = String(m.file)
    line = Int(m.line)
    rm = match(r"^REPL\[(\d+)\]$", file)
    if rm !== nothing
        return _repl_input(parse(Int, rm.captures[1]))
    end
    path = isfile(file) ? file : joinpath(Sys.BINDIR, Base.DATAROOTDIR, "julia", "base", file)
    isfile(path) || return nothing
    lines = get!(() -> readlines(path), files, path)
    1 <= line <= length(lines) || return nothing
    # Parse one expression from the definition's first line, with a window of
    # lines that doubles until the expression is complete (most are short).
    n = 16
    while true
        last = min(length(lines), line + n - 1)
        text = join(view(lines, line:last), "\n")
        ex, pos = Meta.parse(text, 1; greedy = true, raise = false)
        incomplete = ex isa Expr && ex.head === :incomplete
        if !incomplete || last == length(lines) || n >= _MAX_SOURCE_LINES
            (ex isa Expr && ex.head in (:error, :incomplete)) && return nothing
            return rstrip(text[1:prevind(text, min(pos, ncodeunits(text) + 1))])
        end
        n *= 2
    end
end

function _render_source(m::Method, files)
    src = try
        _source_text(m, files)
    catch
        nothing
    end
    return string("module: ", m.module, "\n",
                  "name: ", m.name, "\n",
                  "file: ", m.file, "\n",
                  "line: ", m.line, "\n",
                  "signature: ", m.sig, "\n",
                  "source:\n", src === nothing ? "(unavailable)" : src, "\n")
end

"The instances named by `:invoke` statements of optimized code."
function _invoked(code::Core.CodeInfo)
    out = Core.MethodInstance[]
    for st in code.code
        ex = st
        # `%x = invoke f(...)` is stored as the bare :invoke expression; be lenient about assignments.
        if ex isa Expr && ex.head === :(=) && length(ex.args) == 2
            ex = ex.args[2]
        end
        if ex isa Expr && ex.head === :invoke && !isempty(ex.args)
            t = _invoke_target(ex.args[1])
            t === nothing || push!(out, t)
        end
    end
    return out
end

# --- page writes ----------------------------------------------------------

function _page_name(kind::Symbol, label::String)
    return truncate_utf8(string("ir/", kind, "/", label), 255)
end

function _new_slot!(m::InstrumentationManager, kind::Symbol, label::String, text::String)
    size = ir_page_size(sizeof(text))
    page = create_page(m.state, size; name = _page_name(kind, label))
    try
        update_page!(m.state, page, encode_ir(text))
    catch
        free_page!(m.state, page)
        rethrow()
    end
    slot = IRSlot(page, size, text, kind, label, 0)
    m.slots[page.value] = slot
    return slot
end

"""
Writes `text` into the slot's page as a delta (nothing when unchanged). A text
that outgrows the page moves to a new page of `ir_page_size(n)` bytes; the old
page is freed and the slot's edges point to the new one. Returns whether the
text changed.
"""
function _write_slot!(m::InstrumentationManager, slot::IRSlot, text::String)
    text == slot.text && return false
    n = sizeof(text)
    if IR_HEADER + n > slot.size
        size = ir_page_size(n)
        page = create_page(m.state, size; name = _page_name(slot.kind, slot.label))
        update_page!(m.state, page, encode_ir(text))
        old = slot.page
        slot.page, slot.size = page, size
        delete!(m.slots, old.value)
        m.slots[page.value] = slot
        _repoint_edges!(m, old, page)
        free_page!(m.state, old)
        m.reallocations += 1
    else
        update_page!(m.state, slot.page, encode_ir(text, sizeof(slot.text)))
    end
    slot.text = text
    slot.updates += 1
    m.deltas += 1
    return true
end

# --- edges ----------------------------------------------------------------

"""
    _native_link!(m, edge)

The one place where a compiler edge reaches the native ShadowPageGraph: a
`:compiler` dependency with no transform (compiler edges only order and explain;
IR pages are written by the manager, not recomputed). The native graph refuses
cycles (recursive calls), which `_link!` counts in `native_rejected`.
"""
function _native_link!(m::InstrumentationManager, e::CompilerEdge)
    m.native[e] = add_dependency!(m.state, e.from, e.to; kind = :compiler)
    return nothing
end

# Removes an edge's native counterpart (before its page is freed, or when a caller
# stops calling a callee). A failure here is counted like any capture error.
function _native_unlink!(m::InstrumentationManager, e::CompilerEdge)
    id = pop!(m.native, e, nothing)
    id === nothing && return nothing
    try
        remove_dependency!(m.state, id)
    catch err
        _note_error!(m, err, "removing a compiler edge")
    end
    return nothing
end

function _link!(m::InstrumentationManager, from::PageId, to::PageId, kind::Symbol)
    e = CompilerEdge(from, to, kind)
    e in m.edge_set && return false
    push!(m.edge_set, e)
    push!(m.edges, e)
    # Recursion makes :calls edges cyclic (a self-edge for direct recursion);
    # the native graph is acyclic and rejects those. The Julia table keeps them.
    if from != to
        try
            _FAULT[] === :native && throw(InstrumentationFault("native graph refused the edge"))
            _native_link!(m, e)
        catch
            m.native_rejected += 1
        end
    end
    return true
end

function _repoint_edges!(m::InstrumentationManager, old::PageId, new::PageId)
    olds = filter(e -> e.from == old || e.to == old, m.edges)
    isempty(olds) && return nothing
    filter!(e -> !(e.from == old || e.to == old), m.edges)
    foreach(e -> delete!(m.edge_set, e), olds)
    foreach(e -> _native_unlink!(m, e), olds)
    for e in olds
        _link!(m, e.from == old ? new : e.from, e.to == old ? new : e.to, e.kind)
    end
    return nothing
end

# Makes the :calls edges leaving the optimized pages of `ents` match what
# they invoke now (a redefinition may change that): one pass over the table.
function _update_call_edges!(m::InstrumentationManager, ents)
    isempty(ents) && return nothing
    want = Set{CompilerEdge}()
    from = Set{PageId}()
    for ent in ents
        push!(from, ent.optimized.page)
        for spec in ent.callees
            callee = _lookup(m.instances, spec)
            callee === nothing || push!(want, CompilerEdge(ent.optimized.page, callee.optimized.page, :calls))
        end
    end
    stale(e) = e.kind === :calls && e.from in from && !(e in want)
    if any(stale, m.edges)
        foreach(e -> stale(e) && (delete!(m.edge_set, e); _native_unlink!(m, e)), m.edges)
        filter!(!stale, m.edges)
    end
    for e in want
        _link!(m, e.from, e.to, e.kind)
    end
    return nothing
end

# Types as keys in an `IdDict`, whose methods do not specialize on the key's
# type (a `Dict` would compile new code for every captured signature). Julia
# interns types (a signature built twice is the same object), so identity
# finds them; queries from users fall back to subtyping (`_find_instance`).
_lookup(d::IdDict{Any,T}, @nospecialize(key)) where {T} = get(d, key, nothing)

# --- capture of one instance ------------------------------------------------

"""
Renders `mi` into its pages (creating them, or writing deltas when the text
changed) and returns the instances its optimized code invokes. `force`
re-renders a known instance (used by `reanalyze!`).
"""
function _capture!(m::InstrumentationManager, mi::Core.MethodInstance, world::UInt, files, touched, created;
                   force::Bool = false)
    _FAULT[] === :render && throw(InstrumentationFault("fault injected while rendering $(mi.def)"))
    def = mi.def::Method
    spec = mi.specTypes
    ent = _lookup(m.instances, spec)
    # Source and lowered code: per method; re-rendered when the method object changed.
    ment = _lookup(m.methods, def.sig)
    if ment === nothing || ment.method !== def || force
        src = _render_source(def, files)
        low = _render(_lowered_ir(mi, world))
        if ment === nothing
            label = _method_label(def)
            s = _new_slot!(m, :source, label, src)
            l = _new_slot!(m, :lowered, label, low)
            ment = MethodEntry(def.sig, def, label, s, l)
            m.methods[def.sig] = ment
        else
            ment.method = def
            _write_slot!(m, ment.source, src)
            _write_slot!(m, ment.lowered, low)
        end
        _link!(m, ment.source.page, ment.lowered.page, :lowered)
    end
    typed_code, opt_code, rt = _infer_ir(mi, world)
    typed = _render(typed_code, rt)
    opt = _render(opt_code, rt)
    callees = m.follow_invokes ? _invoked(opt_code) : Core.MethodInstance[]
    m.renders += 1
    if ent === nothing
        label = _instance_label(mi)
        t = _new_slot!(m, :typed, label, typed)
        o = _new_slot!(m, :optimized, label, opt)
        ent = InstanceEntry(spec, mi, label, ment, t, o, Any[c.specTypes for c in callees], world,
                            length(_closed_worlds(mi)))
        m.instances[spec] = ent
        push!(created, spec)
    else
        if ent.mi !== mi
            ent.mi = mi
            ent.closed_seen = length(_closed_worlds(mi))
        end
        ent.method = ment
        _write_slot!(m, ent.typed, typed)
        _write_slot!(m, ent.optimized, opt)
        ent.callees = Any[c.specTypes for c in callees]
        ent.world = world
    end
    _link!(m, ment.lowered.page, ent.typed.page, :typed)
    _link!(m, ent.typed.page, ent.optimized.page, :optimized)
    push!(touched, ent)
    return callees
end

# Captures the pending instances and, transitively, what they invoke.
function _process!(m::InstrumentationManager, roots::Vector{Core.MethodInstance}; force::Bool = false)
    world = Base.get_world_counter()
    files = Dict{String,Vector{String}}()
    seen = Base.IdSet{Any}()
    work = reverse(roots) # pop! from the end: oldest first
    done = 0
    touched = Base.IdSet{Any}()  # entries rendered now
    created = Base.IdSet{Any}()  # specTypes of entries that are new
    while !isempty(work)
        mi = pop!(work)
        mi in seen && continue
        push!(seen, mi)
        _accept(m, mi) || continue
        if done >= m.max_per_flush
            _note_error!(m, ErrorException("more than $(m.max_per_flush) instances in one flush; the rest were dropped"), "flush")
            break
        end
        done += 1
        callees = try
            _capture!(m, mi, world, files, touched, created; force = force && mi in roots)
        catch err
            _note_error!(m, err, string("capturing ", mi))
            Core.MethodInstance[]
        end
        for c in callees
            # A callee already captured as this very instance needs no new render.
            known = _lookup(m.instances, c.specTypes)
            (known !== nothing && known.mi === c) && continue
            c in seen || push!(work, c)
        end
    end
    # Callers captured earlier may invoke an instance that is new now.
    if !isempty(created)
        for ent in values(m.instances)
            any(k -> k in created, ent.callees) && push!(touched, ent)
        end
    end
    _update_call_edges!(m, touched)
    return done
end

# --- world age ------------------------------------------------------------

function _world_write!(m::InstrumentationManager, world::UInt, entries::Vector{WorldEntry})
    for e in entries
        world_entry!(m.world_buf, m.world_count, e)
        m.world_count += 1
        e.kind === :invalidated && (m.invalidations += 1)
    end
    world_header!(m.world_buf, UInt64(world), m.world_count, m.invalidations)
    update_page!(m.state, m.world_page, m.world_buf)
    return nothing
end

# Methods defined in worlds (lo, hi] by the modules we watch: Main and its
# submodules, and the user modules of captured methods.
function _new_methods(m::InstrumentationManager, lo::UInt, hi::UInt)
    mods = Module[Main]
    for ment in values(m.methods)
        mod = ment.method.module
        (_is_system(Base.moduleroot(mod)) || mod in mods) || push!(mods, mod)
    end
    found = Method[]
    seen = Base.IdSet{Any}()
    i = 1
    while i <= length(mods)
        mod = mods[i]
        i += 1
        for n in names(mod; all = true)
            isdefined(mod, n) || continue
            v = try
                getfield(mod, n)
            catch
                continue
            end
            v in seen && continue
            push!(seen, v)
            if v isa Module
                # parentmodule(Base) === Main: skip the system's modules.
                (v !== mod && parentmodule(v) === mod && !_is_system(v) && !(v in mods) && length(mods) < 64) &&
                    push!(mods, v)
                continue
            end
            # Functions only: a type's constructors live in the shared table of `Type`.
            v isa Function || continue
            try
                _foreach_method(v) do meth
                    w = _method_world(meth)
                    (lo < w <= hi && _within(meth.module, mod)) && push!(found, meth)
                end
            catch
            end
        end
    end
    sort!(found; by = _method_world)
    return found
end

function _sync_world!(m::InstrumentationManager)
    world = Base.get_world_counter()
    world == m.last_world && return nothing
    entries = WorldEntry[]
    for meth in _new_methods(m, m.last_world, world)
        push!(entries, WorldEntry(_method_world(meth), :defined, string(meth.module, ".", meth.name)))
    end
    for ent in sort!(collect(values(m.instances)); by = e -> e.label)
        closed = _closed_worlds(ent.mi)
        for mw in reverse(closed[1:max(0, length(closed) - ent.closed_seen)])
            push!(entries, WorldEntry(mw + 1, :invalidated, ent.label))
        end
        ent.closed_seen = length(closed)
    end
    for (w, what) in _HOOK_WORLDS
        m.last_world < w <= world && push!(entries, WorldEntry(w, :advanced, what))
    end
    isempty(entries) && push!(entries, WorldEntry(world, :advanced, "world advanced"))
    sort!(entries; by = e -> e.world)
    _world_write!(m, world, entries)
    m.last_world = world
    return nothing
end

# --- flush ------------------------------------------------------------------

"Moves the process-wide queue into the pending list of every enabled manager."
function _distribute!()
    mis = _drain_queue!()
    # A state closed while enabled stops receiving (and holding on to) instances here;
    # when it was the last one, the compiler's entry point goes back.
    lock(_forget_closed!, _REGISTRY_LOCK)
    isempty(mis) && return nothing
    for m in _active_managers()
        lock(m.lock) do
            append!(m.pending, mis)
        end
    end
    return nothing
end

_flush!(m::InstrumentationManager) = _without_recording(() -> _flush_locked!(m))

function _flush_locked!(m::InstrumentationManager)
    lock(m.lock) do
        isopen(m.state) || return 0
        roots = m.pending
        m.pending = Core.MethodInstance[]
        n = try
            _process!(m, roots)
        catch err
            _note_error!(m, err, "flush")
            0
        end
        try
            _sync_world!(m)
        catch err
            _note_error!(m, err, "world page")
        end
        m.flushes += 1
        return n
    end
end

"""
    flush_instrumentation(state) -> Int
    flush_instrumentation() -> Int

Renders what the compiler inferred since the last flush into pages of
`state` (or of every state with instrumentation enabled) and updates the world
page. Returns the number of method instances captured. Never throws because
of a capture error: those are counted in [`instrumentation_status`](@ref).
Runs in the latest world (so it sees methods defined after the caller started).
"""
flush_instrumentation(state::MMSBState) = Base.invokelatest(_flush_state, state)
flush_instrumentation() = Base.invokelatest(_flush_all)

function _flush_state(state::MMSBState)
    m = _manager(state)
    _distribute!()
    return _flush!(m)
end

function _flush_all()
    _distribute!()
    n = 0
    for m in _active_managers()
        n += _flush!(m)
    end
    return n
end

# --- enable / disable -------------------------------------------------------

const _DEFAULT_STATE = Ref{Any}(nothing)

"""
    default_instrumentation_state() -> MMSBState

The in-memory state used by the forms without a state argument (created by
the first call; a new one replaces it once it is closed).
"""
function default_instrumentation_state()
    s = _DEFAULT_STATE[]
    if s === nothing || !isopen(s)
        s = mmsb_start()
        _DEFAULT_STATE[] = s
    end
    return s::MMSBState
end

"""
    enable_instrumentation(state; include_system=false, modules=nothing, follow_invokes=true, max_per_flush=10_000)
    enable_instrumentation(; kw...)

Starts capturing what Julia's compiler infers into IR pages of `state` (the
form without a state uses [`default_instrumentation_state`](@ref)). Installs
the type-inference hook if no other state has it installed, creates the world
page, and, in a REPL, flushes at the start of every command (what the
previous ones compiled). Returns the [`InstrumentationManager`](@ref).

Before anything is created or installed, checks that the running Julia has
every method, field and C symbol the compiler hooks use; if not, throws
`MMSB.InstrumentationUnsupported` naming the version and each missing piece.

- `include_system`: also capture methods of Core, Base and the standard
  libraries (off by default: user code only). MMSB's own methods are never captured.
- `modules`: capture only methods of these modules (and their submodules).
- `follow_invokes`: also capture the instances that captured optimized code
  `invoke`s (the hook sees inference entry points only).
- `max_per_flush`: cap on the instances rendered by one flush.
"""
function enable_instrumentation(state::MMSBState; include_system::Bool = false,
                                modules::Union{Nothing,Module,AbstractVector{Module}} = nothing,
                                follow_invokes::Bool = true, max_per_flush::Integer = 10_000)
    isopen(state) || throw(ArgumentError("the state is closed"))
    # Before anything is created or installed: a Julia whose compiler internals
    # differ from what compat.jl follows gets a clear error and no hook.
    hook_installed() || _self_check()
    mods = modules === nothing ? nothing : modules isa Module ? Module[modules] : Module[modules...]
    lock(_REGISTRY_LOCK) do
        _forget_closed!()
        m = get(_MANAGERS, state, nothing)
        if m === nothing
            world = Base.get_world_counter()
            wp = create_page(state, WORLD_PAGE_SIZE; name = "instrumentation/world")
            buf = world_header!(zeros(UInt8, WORLD_PAGE_SIZE), UInt64(world), UInt64(0), UInt64(0))
            update_page!(state, wp, buf)
            m = InstrumentationManager(state, false, ReentrantLock(), include_system, mods, follow_invokes,
                                       Int(max_per_flush), Core.MethodInstance[], IdDict{Any,MethodEntry}(),
                                       IdDict{Any,InstanceEntry}(), Dict{UInt64,IRSlot}(), CompilerEdge[], Set{CompilerEdge}(),
                                       wp, buf, UInt64(0), UInt64(0), world, 0, 0, 0, 0, 0, nothing, 0,
                                       Dict{CompilerEdge,EdgeId}())
            _MANAGERS[state] = m
        else
            m.include_system, m.modules, m.follow_invokes = include_system, mods, follow_invokes
            m.max_per_flush = Int(max_per_flush)
        end
        m.enabled && return m
        # Instances recorded for other states before now are not this state's business.
        _distribute!()
        m.enabled = true
        try
            _install_hook!()
            _RECORDING[] = true
            _repl_attach!()
            _register_atexit!()
        catch
            m.enabled = false
            isempty(_active_managers()) && _uninstall_hook!()
            rethrow()
        end
        return m
    end
end

enable_instrumentation(; kw...) = enable_instrumentation(default_instrumentation_state(); kw...)

"""
    disable_instrumentation(state)
    disable_instrumentation()

Stops capturing for `state` (or for the default state): renders what was
already recorded, and, when no state has instrumentation enabled any more,
puts the compiler's original type-inference entry point back and removes the
REPL transform. The pages and edges stay queryable. Idempotent.
"""
function disable_instrumentation(state::MMSBState)
    m = instrumentation_manager(state)
    (m === nothing || !m.enabled) && return nothing
    lock(_REGISTRY_LOCK) do
        last = length(_active_managers()) == 1
        try
            # Stop recording first, then hand what was recorded to the managers
            # (this one included: it is still marked enabled).
            last && _uninstall_hook!()
            _distribute!()
        finally
            m.enabled = false
            # Whatever happened above, the compiler must not keep calling us for nobody.
            if isempty(_active_managers())
                _uninstall_hook!()
                _repl_detach!()
            end
        end
    end
    Base.invokelatest(_flush!, m)
    return nothing
end

function disable_instrumentation()
    s = _DEFAULT_STATE[]
    s === nothing || disable_instrumentation(s)
    return nothing
end

function _forget_closed!()
    for (s, m) in collect(_MANAGERS)
        isopen(s) || (m.enabled = false; delete!(_MANAGERS, s))
    end
    if isempty(_active_managers())
        _uninstall_hook!()
        _repl_detach!()
    end
    return nothing
end

function _register_atexit!()
    _ATEXIT[] && return nothing
    _ATEXIT[] = true
    atexit(_at_exit)
    return nothing
end

# At exit: stop capturing first (so rendering is not itself captured), then
# render what is left for states that are still open.
function _at_exit()
    try
        _uninstall_hook!()
    catch
    end
    try
        _distribute_all!()
        for m in collect(values(_MANAGERS))
            m.enabled || continue
            try
                _flush!(m)
            catch
            end
            m.enabled = false
        end
    catch
    end
    return nothing
end

# Like `_distribute!`, for managers still marked enabled (the hook is already gone).
function _distribute_all!()
    mis = _drain_queue!()
    isempty(mis) && return nothing
    for m in values(_MANAGERS)
        m.enabled && append!(m.pending, mis)
    end
    return nothing
end

# --- deterministic re-analysis -------------------------------------------------

"""
    reanalyze!(state) -> Vector{String}
    reanalyze!(state, f, types) -> Vector{String}

Re-infers captured method instances (all of them, or the one `f(::types...)`
dispatches to, captured now if it was not before) in the current world and
writes every IR text that changed (e.g. after a method was redefined) to its
page as a delta, so the log shows what changed and when. The same code in the
same world gives the same bytes. Returns the labels of the pages that changed.
"""
reanalyze!(state::MMSBState) = Base.invokelatest(_reanalyze, state, nothing)
reanalyze!(state::MMSBState, @nospecialize(f), @nospecialize(types)) =
    Base.invokelatest(_reanalyze, state, Base.to_tuple_type(Tuple{Core.Typeof(f), Base.to_tuple_type(types).parameters...}))

function _reanalyze(state::MMSBState, @nospecialize(tt))
    m = _manager(state)
    _without_recording() do
        _reanalyze_locked(m, tt)
    end
end

function _reanalyze_locked(m::InstrumentationManager, @nospecialize(tt))
    lock(m.lock) do
        world = Base.get_world_counter()
        specs = tt === nothing ? sort!(collect(keys(m.instances)); by = k -> m.instances[k].label) : Any[tt]
        before = Dict(slot.page.value => slot.updates for slot in values(m.slots))
        roots = Core.MethodInstance[]
        for spec in specs
            mi = _method_instance(spec, world)
            if mi === nothing
                tt === nothing || throw(ArgumentError("no unique method matches $spec"))
                _note_error!(m, ErrorException("no unique method matches $spec any more"), "reanalyze")
                continue
            end
            push!(roots, mi)
        end
        _process!(m, roots; force = true)
        _sync_world!(m)
        changed = String[]
        for slot in values(m.slots)
            get(before, slot.page.value, -1) != slot.updates && push!(changed, string(slot.kind, " ", slot.label))
        end
        return sort!(changed)
    end
end
