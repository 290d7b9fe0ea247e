# InstrumentationManager: what one state captured, its pages and edges, and
# the work done outside the hook (rendering, page writes, world tracking).

"""
    IRSlot

One IR text: its head page (whose id never changes) and size, the text it
holds, how often the text changed after it was first written, and the
continuation pages the text spills into when it outgrows the head page.
"""
mutable struct IRSlot
    page::PageId
    size::Int
    text::String
    kind::Symbol      # :source, :lowered, :typed, :optimized
    label::String
    updates::Int
    more::Vector{Tuple{PageId,Int}}  # continuation pages (id, size), in chain order
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
    continuations::Int      # continuation pages added to IR text chains
    failures::Int           # instances whose capture failed (not counted as captured)
    stale_reanalyzed::Int   # invalidated instances re-analyzed by a flush
    stale_skipped::Int      # invalidated instances left for a later flush (over the bound)
    walk_found::Int         # compiled instances found only by the walk of the method tables
    walks::Int
    errors::Int
    first_error::Union{Nothing,String}
    native_rejected::Int     # edges the native graph refused (cycles from recursion)
    native::Dict{CompilerEdge,EdgeId}  # edges the native graph holds, to remove them again
    baseline::Base.IdSet{Any}          # CodeInstances compiled before enabling (not this state's business)
    failed::Base.IdSet{Any}            # MethodInstances whose capture failed (not retried by the walk)
    stale::Vector{Any}                 # specTypes of invalidated instances still to re-analyze
    seen_modules::Vector{Module}       # user modules met in recorded instances (walked by the flush)
end

const _MANAGERS = IdDict{MMSBState,InstrumentationManager}()
const _REGISTRY_LOCK = ReentrantLock()
const _SYSTEM_MODULE = IdDict{Module,Bool}()
const _ATEXIT = Ref(false)

function Base.show(io::IO, m::InstrumentationManager)
    print(io, "InstrumentationManager(", m.enabled ? "enabled" : "disabled", ", ",
          length(m.instances), " instances, ", length(m.slots), " IR pages, ", length(m.edges), " edges)")
end

"""
The manager of `state`, or `nothing` if instrumentation was never enabled on
it. A flush the REPL deferred to idle time runs first (repl.jl): every query
goes through here, so none sees stale pages.
"""
function instrumentation_manager(state::MMSBState)
    _flush_owed!()
    return lock(() -> get(_MANAGERS, state, nothing), _REGISTRY_LOCK)
end

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

function _instance_label(mi::Core.MethodInstance, memo::IdDict{Any,String} = IdDict{Any,String}())
    m = mi.def::Method
    s = try
        call = _call_label(mi.specTypes, memo)
        string(m.module, ".", call === nothing ? sprint(Base.show_tuple_as_call, m.name, mi.specTypes) : call)
    catch
        string(m.module, ".", m.name, " ", mi.specTypes)
    end
    return truncate_utf8(s, _MAX_LABEL)
end

# What `Base.show_tuple_as_call(io, name, sig)` prints for the common case,
# `f(::A, ::B)`: a function bound to its name (an identifier), no type
# variables, no Varargs; `nothing` for anything else. Base prints each argument
# type through a `sprint` of its own, which no memo reaches; here they go
# through `memo` (issue 19, item 14: labels were a tenth of a flush).
# Base's paths (base/show.jl): `show_signature_function` + `print_type_bicolor`
# without color on 1.10/1.11, `print(io, "::", T)` on 1.5; 1.12 is not read: Base's.
function _call_label(@nospecialize(sig), memo::IdDict{Any,String})
    (_V112 || !(sig isa DataType)) && return nothing
    params = sig.parameters
    isempty(params) && return nothing
    ft = params[1]
    (ft isa DataType && ft <: Function && isempty(ft.parameters) && isdefined(ft.name, :mt)) || return nothing
    name = ft.name.mt.name
    mod = ft.name.module
    (Base.isidentifier(name) && isdefined(mod, name) && ft === typeof(getfield(mod, name))) || return nothing
    io = IOBuffer()
    print(io, name, "(")
    for i in 2:length(params)
        p = params[i]
        (p isa Type && !Base.isvarargtype(p)) || return nothing
        i > 2 && print(io, ", ")
        print(io, "::", _memo_sprint(p, memo))
    end
    print(io, ")")
    return String(take!(io))
end

_method_label(m::Method) = truncate_utf8(string(m.module, ".", m.name, " ", m.sig), _MAX_LABEL)

"Renders a CodeInfo (and return type) as `code_typed`/`code_lowered` results print."
_render(code::Core.CodeInfo) = sprint(show, code)
_render(code::Core.CodeInfo, @nospecialize(rt)) = sprint(show, code => rt)

# Printing types, memoized over one flush. Base's `show(io, ::Type)` looks for
# an alias (`Vector{T}` for `Array{T,1}`) by scanning every binding of the
# type's modules (`make_typealias`), on every call: that made printing most of
# a flush's cost (issue 19, item 14). `TypeMemoIO` is an IO of ours, so the
# method below is no piracy; it prints what Base's method prints, with the same
# IO properties, once per type and properties.
struct TypeMemoIO <: IO
    buf::IOBuffer
    memo::IdDict{Any,String}
end
Base.write(io::TypeMemoIO, x::UInt8) = write(io.buf, x)
Base.unsafe_write(io::TypeMemoIO, p::Ptr{UInt8}, n::UInt) = unsafe_write(io.buf, p, n)

# A type printed the same wherever it is nested: no `UnionAll` or `Vararg`
# anywhere inside. 1.11 prints `Vector{T} where T<:S` as `Vector{<:S}` or not
# depending on what encloses it, which the properties below do not show.
function _plain_type(@nospecialize(x))
    if x isa DataType
        for p in x.parameters
            Base.isvarargtype(p) && return false
            p isa Type && !_plain_type(p) && return false
        end
        return true
    end
    x isa Union && return _plain_type(x.a) && _plain_type(x.b)
    return x === Union{}
end

# The IO properties type printing reads; a type with free type variables (or
# printed inside a `where`) depends on more, and is not memoized.
const _TYPE_PROPERTIES = (:compact, :limit, :module, :typeinfo, :color)

function _memo_key(io::IOContext, @nospecialize(x::Type))
    (Base.has_free_typevars(x) || !_plain_type(x)) && return nothing
    for (k, _) in io.dict
        k === :unionall_env && return nothing
    end
    return (x, map(k -> get(io, k, nothing), _TYPE_PROPERTIES))
end

function Base.show(io::IOContext{TypeMemoIO}, @nospecialize(x::Type))
    key = _memo_key(io, x)
    key === nothing && return invoke(show, Tuple{IO,Type}, io, x)
    memo = io.io.memo
    s = get(memo, key, nothing)
    if s === nothing
        b = IOBuffer()
        # Into an IO of ours again: the type's parameters reach the memo too.
        invoke(show, Tuple{IO,Type}, IOContext(TypeMemoIO(b, memo), io), x)
        s = String(take!(b))
        memo[key] = s
    end
    write(io, s)
    return nothing
end
# The `::T` after each statement is printed with `printstyled`, which prints
# into a buffer of Base's (past the method above). Without color that is
# `print` of the same arguments with the same properties (Base's
# `with_output_color` prints the buffer as it is): done here, so the types
# reach the memo.
function Base.printstyled(io::IOContext{TypeMemoIO}, msg...; kw...)
    get(io, :color, false) && return invoke(printstyled, Tuple{IO,Vararg{Any}}, io, msg...; kw...)
    for x in msg
        print(io, x)
    end
    return nothing
end
# Base has a method for `Union{}` of its own: without this one the two would be ambiguous.
Base.show(io::IOContext{TypeMemoIO}, x::Core.TypeofBottom) = invoke(show, Tuple{IO,Core.TypeofBottom}, io, x)

"`_render(code, rt)` with the types memoized in `memo` (falls back to plain printing should another package's `show` method for a type make ours ambiguous)."
function _render(code::Core.CodeInfo, @nospecialize(rt), memo::IdDict{Any,String})
    io = TypeMemoIO(IOBuffer(), memo)
    marked = _mark_invokes(code)
    try
        show(io, (marked === nothing ? code : marked) => rt)
    catch err
        err isa MethodError || rethrow()
        return _render(code, rt)
    end
    text = String(take!(io.buf))
    marked === nothing && return text
    text = replace(text, _INVOKE_PRINTED => s"\1")
    # Anything else around a marker (a printer that changed): Base's printing as it is.
    return occursin(r"[\x01\x02]", text) ? _render(code, rt) : text
end

# `:invoke` statements of optimized code, printed with memoized types. Base's
# IR printer (`print_stmt`, base/compiler/ssair/show.jl:51-68 on 1.10 and
# 1.11) prints each argument of an `invoke` and its type through a `sprint`
# of its own, which no memo reaches: that was a sixth of a flush (issue 19,
# item 14). Each such statement is replaced, in a copy, by a call of an
# `_InvokeText` whose `show` prints what Base's branch prints (with the same
# IO, so the same properties), between markers; its arguments are the
# statement's SSA values, so the printer still sees them used (the `%n = `
# of the statements defining them). The call's own `(` `)` and argument list
# are cut from the text afterwards. 1.5 and 1.12 print with Base's code as it is.
struct _InvokeText
    stmt::Expr
end

function Base.show(io::IO, x::_InvokeText)
    stmt = x.stmt
    indent = 16
    print(io, "\x01invoke ")
    Base.show_unquoted(io, stmt.args[2], indent)
    print(io, "(")
    linfo = stmt.args[1]::Core.MethodInstance
    sig = linfo.specTypes == Tuple ? Core.svec() : Base.unwrap_unionall(linfo.specTypes).parameters::Core.SimpleVector
    for i in 3:length(stmt.args)
        i > 3 && print(io, ", ")
        Base.show_unquoted(io, stmt.args[i], indent)
        (i - 1) <= length(sig) && print(io, "::", sig[i - 1])
    end
    print(io, ")\x02")
    return nothing
end

# What Base prints for `Expr(:call, _InvokeText(...), %a, %b)`: `(`, the marked text, `)`, `(%a, %b)`.
const _INVOKE_PRINTED = r"\(\x01([^\x01\x02]*)\x02\)\((?:%\d+(?:, %\d+)*)?\)"

"A copy of `code` with its `:invoke` statements marked (see `_InvokeText`), or `nothing` (none, or not 1.10/1.11)."
function _mark_invokes(code::Core.CodeInfo)
    (_V15 || _V112) && return nothing
    stmts = code.code
    any(st -> Meta.isexpr(st, :invoke) && length(st.args) >= 2 && st.args[1] isa Core.MethodInstance, stmts) || return nothing
    c = copy(code)
    c.code = Any[(Meta.isexpr(st, :invoke) && length(st.args) >= 2 && st.args[1] isa Core.MethodInstance) ?
                 Expr(:call, _InvokeText(st), Any[a for a in st.args[2:end] if a isa Core.SSAValue]...) : st
                 for st in stmts]
    return c
end

# Lowered code printed through the same IO type as typed code: the same
# specializations of Base's IR printer serve both (on 1.5, which keeps no
# native code from precompilation, each IO type meant seconds of compiling
# on the first flush; issue 19, item 14). The text is `_render(code)`'s.
function _render(code::Core.CodeInfo, memo::IdDict{Any,String})
    io = TypeMemoIO(IOBuffer(), memo)
    try
        show(io, code)
    catch err
        err isa MethodError || rethrow()
        return _render(code)
    end
    return String(take!(io.buf))
end

"""
What `sprint(show, x)` prints (with `:module => mod` when `mod` is given),
with the types memoized in `memo`.
"""
function _memo_sprint(@nospecialize(x), memo::IdDict{Any,String}, mod::Union{Nothing,Module} = nothing)
    io = TypeMemoIO(IOBuffer(), memo)
    try
        show(mod === nothing ? IOContext(io) : IOContext(io, :module => mod), x)
    catch err
        err isa MethodError || rethrow()
        return mod === nothing ? sprint(show, x) : sprint(show, x; context = :module => mod)
    end
    return String(take!(io.buf))
end

# --- data inside IR ---------------------------------------------------------
#
# Optimized IR may embed a mutable global's object itself (1.5 inlines `BIG`
# of `const BIG = zeros(10^5)` as the array). Its contents are data, not code:
# printed as they are, the text would change (and write a delta) whenever the
# data changes, and differ between processes. Such objects are printed as the
# global that holds them (`Main.BIG`, as 1.10 prints it) or, when no constant
# global holds them, as their type (`<Vector{Float64} object>`).

"Stands in the printed IR for a mutable object that no constant global holds."
struct EmbeddedData
    type::Type
end
Base.show(io::IO, d::EmbeddedData) = print(io, "<", d.type, " object>")

_is_data(@nospecialize(x)) =
    !(x isa Union{Module,Type,Symbol,String,Expr,GlobalRef,Core.MethodInstance,Method,Core.SimpleVector,Core.TypeName,Core.MethodTable}) &&
    !(isdefined(Core, :CodeInstance) && x isa Core.CodeInstance) && _is_mutable_type(typeof(x))

# The constant globals of `mod` (and the modules above it) that hold mutable
# objects, by object; computed once per flush and module.
function _data_name(ctx, mod::Module, @nospecialize(x))
    while true
        names = get!(ctx.data, mod) do
            d = IdDict{Any,Symbol}()
            for n in Base.names(mod; all = true)
                (isdefined(mod, n) && isconst(mod, n)) || continue
                v = try
                    getfield(mod, n)
                catch
                    continue
                end
                _is_data(v) && (d[v] = n)
            end
            d
        end
        n = get(names, x, nothing)
        n === nothing || return GlobalRef(mod, n)
        p = parentmodule(mod)
        p === mod && return EmbeddedData(typeof(x))
        mod = p
    end
end

# Every object written literally in lowered code (a macro's `UInt8[...]`):
# part of the code, printed as it is.
function _literals!(out, @nospecialize(x))
    if x isa Expr
        foreach(a -> _literals!(out, a), x.args)
    elseif x isa QuoteNode
        _literals!(out, x.value)
    elseif _is_data(x)
        push!(out, x)
    end
    return out
end

_is_embedded(@nospecialize(x), ctx) = _is_data(x) && !(x in ctx.literals[])

# `x` with every embedded mutable object replaced by its stand-in; `nothing` if none is.
function _stabilize(@nospecialize(x), mod::Module, ctx)
    if x isa Expr
        args = nothing
        for (i, a) in enumerate(x.args)
            y = _stabilize(a, mod, ctx)
            y === nothing && continue
            args === nothing && (args = copy(x.args))
            args[i] = something(y)
        end
        return args === nothing ? nothing : Some(Expr(x.head, args...))
    elseif x isa QuoteNode
        return _is_embedded(x.value, ctx) ? Some(_data_name(ctx, mod, x.value)) : nothing
    elseif isdefined(Core, :ReturnNode) && x isa Core.ReturnNode
        isdefined(x, :val) || return nothing
        y = _stabilize(x.val, mod, ctx)
        return y === nothing ? nothing : Some(Core.ReturnNode(something(y)))
    elseif x isa Core.PiNode
        y = _stabilize(x.val, mod, ctx)
        return y === nothing ? nothing : Some(Core.PiNode(something(y), x.typ))
    elseif _is_embedded(x, ctx)
        return Some(_data_name(ctx, mod, x))
    end
    return nothing
end

"The type printed for a value inferred as the constant `t`: a mutable object's type instead of its contents."
_stable_type(@nospecialize(t), ctx) = (t isa Core.Compiler.Const && _is_embedded(t.val, ctx)) ? typeof(t.val) : t

# Whether `x` (a statement, or a type) holds a mutable object anywhere `_stabilize` looks.
function _has_data(@nospecialize(x))
    x isa Expr && return any(_has_data, x.args)
    x isa QuoteNode && return _is_data(x.value)
    x isa Core.Compiler.Const && return _is_data(x.val)
    isdefined(Core, :ReturnNode) && x isa Core.ReturnNode && return isdefined(x, :val) && _has_data(x.val)
    x isa Core.PiNode && return _has_data(x.val)
    return _is_data(x)
end

"""
    _stable_ir(code, rt, mod, ctx, lowered) -> (code, rt)

Typed or optimized `code` (and its return type `rt`) of a method of `mod` as
printed with the mutable objects that inference embedded named (a copy;
`code` itself when it embeds none). `lowered()` gives the method's lowered
code: it holds no global's object (it names globals), only literals (a
macro's `UInt8[...]`), which are part of the code and stay as they are.
"""
function _stable_ir(code::Core.CodeInfo, @nospecialize(rt), mod::Module, ctx, lowered)
    types = code.ssavaluetypes
    (any(_has_data, code.code) || _has_data(rt) || (types isa Vector{Any} && any(_has_data, types))) || return code, rt
    ctx.literals[] = foldl(_literals!, lowered().code; init = Base.IdSet{Any}())
    out = nothing
    for (i, st) in enumerate(code.code)
        y = _stabilize(st, mod, ctx)
        y === nothing && continue
        out === nothing && (out = copy(code))
        out.code[i] = something(y)
    end
    if types isa Vector{Any} && any(t -> _stable_type(t, ctx) !== t, types)
        out === nothing && (out = copy(code))
        out.ssavaluetypes = Any[_stable_type(t, ctx) for t in types]
    end
    return (out === nothing ? code : out), _stable_type(rt, ctx)
end

"Renders typed or optimized code as its page holds it (see `_stable_ir`)."
function _render_stable(code::Core.CodeInfo, @nospecialize(rt), mod::Module, ctx, lowered)
    c, t = _stable_ir(code, rt, mod, ctx, lowered)
    return _render(c, t, ctx.types)
end

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
    slot = IRSlot(page, size, text, kind, label, 0, Tuple{PageId,Int}[])
    m.slots[page.value] = slot
    return slot
end

# Frees every page of a slot (a capture that failed half-way leaves no orphan).
function _free_slot!(m::InstrumentationManager, slot::IRSlot)
    for (p, _) in reverse(slot.more)
        free_page!(m.state, p)
    end
    delete!(m.slots, slot.page.value)
    for e in filter(e -> e.from == slot.page || e.to == slot.page, m.edges)
        delete!(m.edge_set, e)
        _native_unlink!(m, e)
    end
    filter!(e -> !(e.from == slot.page || e.to == slot.page), m.edges)
    free_page!(m.state, slot.page)
    return nothing
end

# The byte ranges of an `n`-byte text held by pages of `sizes` (in chain
# order), and how many bytes they hold in all.
function _chunk_ranges(n::Int, sizes)
    out = UnitRange{Int}[]
    pos = 1
    for sz in sizes
        stop = min(n, pos + (sz - IR_HEADER) - 1)
        push!(out, pos:stop)
        pos = stop + 1
    end
    return out, pos - 1
end

"""
Writes `text` into the slot's chain as deltas (nothing when unchanged; only
the pages whose bytes change). The head page keeps its id: a text that
outgrows the chain gets one continuation page for the rest, written before
the page before it points to it; a text that shrinks frees the continuation
pages it no longer needs, after the page before them stops pointing to them.
Returns whether the text changed.
"""
function _write_slot!(m::InstrumentationManager, slot::IRSlot, text::String)
    text == slot.text && return false
    new, old = codeunits(text), codeunits(slot.text)
    pages = Tuple{PageId,Int}[(slot.page, slot.size); slot.more]
    nold = length(pages)
    oldr, _ = _chunk_ranges(length(old), map(last, pages))
    newr, placed = _chunk_ranges(length(new), map(last, pages))
    if placed < length(new)
        size = ir_page_size(length(new) - placed)
        page = create_page(m.state, size; name = _page_name(slot.kind, slot.label))
        update_page!(m.state, page, encode_ir(view(new, placed+1:length(new))))
        push!(pages, (page, size)); push!(newr, placed+1:length(new))
        m.continuations += 1
    end
    used = something(findlast(r -> !isempty(r), newr), 1)
    for i in min(used, nold):-1:1 # the end of the chain first: a reader never meets a page not written yet
        next = i < used ? pages[i + 1][1].value : UInt64(0)
        oldnext = i < nold ? pages[i + 1][1].value : UInt64(0)
        if next != oldnext || view(new, newr[i]) != view(old, oldr[i])
            update_page!(m.state, pages[i][1], encode_ir(view(new, newr[i]), next, length(oldr[i])))
        end
    end
    for i in length(pages):-1:(used + 1)
        free_page!(m.state, pages[i][1])
    end
    slot.more = pages[2:used]
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
re-renders a known instance (used by `reanalyze!`). Every text is computed
before the first page is written, and a failure while creating pages frees
the ones this call created, so a failed capture leaves no orphan page.
"""
function _capture!(m::InstrumentationManager, mi::Core.MethodInstance, world::UInt, ctx, touched, created;
                   force::Bool = false)
    _FAULT[] === :render && throw(InstrumentationFault("fault injected while rendering $(mi.def)"))
    def = mi.def::Method
    spec = mi.specTypes
    ent = _lookup(m.instances, spec)
    # Source and lowered code: per method; re-rendered when the method object changed.
    ment = _lookup(m.methods, def.sig)
    method_stale = ment === nothing || ment.method !== def || force
    src = method_stale ? _render_source(def, ctx.files) : ""
    low = method_stale ? _render(_lowered_ir(mi, world), ctx.types) : ""
    typed_code, opt_code, rt = _infer_ir(mi, world, _compiled_code(mi))
    callees = m.follow_invokes ? _invoked(opt_code) : Core.MethodInstance[]
    lowered = () -> _lowered_ir(mi, world)
    typed = _render_stable(typed_code, rt, def.module, ctx, lowered)
    opt = _render_stable(opt_code, rt, def.module, ctx, lowered)
    _FAULT[] === :pages && throw(InstrumentationFault("fault injected before the pages of $(mi.def)"))
    fresh = IRSlot[] # slots created here: freed again if a later step fails
    try
        if ment === nothing
            label = _method_label(def)
            s = _new_slot!(m, :source, label, src); push!(fresh, s)
            l = _new_slot!(m, :lowered, label, low); push!(fresh, l)
            ment = MethodEntry(def.sig, def, label, s, l)
        elseif method_stale
            _write_slot!(m, ment.source, src)
            _write_slot!(m, ment.lowered, low)
        end
        if ent === nothing
            label = _instance_label(mi, ctx.types)
            t = _new_slot!(m, :typed, label, typed); push!(fresh, t)
            o = _new_slot!(m, :optimized, label, opt); push!(fresh, o)
            _FAULT[] === :slots && throw(InstrumentationFault("fault injected after the pages of $(mi.def)"))
            ent = InstanceEntry(spec, mi, label, ment, t, o, Any[c.specTypes for c in callees], world,
                                length(_closed_worlds(mi)))
        end
    catch
        for slot in reverse(fresh)
            try
                _free_slot!(m, slot)
            catch err
                _note_error!(m, err, "freeing the pages of a failed capture")
            end
        end
        rethrow()
    end
    # Nothing below throws short of a page write failing on an existing page.
    method_stale && (ment.method = def)
    m.methods[def.sig] = ment
    _link!(m, ment.source.page, ment.lowered.page, :lowered)
    if _lookup(m.instances, spec) === nothing
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
    m.renders += 1
    _link!(m, ment.lowered.page, ent.typed.page, :typed)
    _link!(m, ent.typed.page, ent.optimized.page, :optimized)
    push!(touched, ent)
    return callees
end

# What one flush shares between captures: source files read, constant globals by module.
_flush_context() = (files = Dict{String,Vector{String}}(), data = IdDict{Module,IdDict{Any,Symbol}}(),
                    literals = Ref{Base.IdSet{Any}}(Base.IdSet{Any}()), types = IdDict{Any,String}())

# Captures the pending instances and, transitively, what they invoke. Returns
# the number captured; a failure is counted in `failures` (and as an error),
# not as captured.
function _process!(m::InstrumentationManager, roots::Vector{Core.MethodInstance}; force::Bool = false)
    world = Base.get_world_counter()
    ctx = _flush_context()
    seen = Base.IdSet{Any}()
    work = reverse(roots) # pop! from the end: oldest first
    done = 0
    tried = 0
    touched = Base.IdSet{Any}()  # entries rendered now
    created = Base.IdSet{Any}()  # specTypes of entries that are new
    while !isempty(work)
        mi = pop!(work)
        mi in seen && continue
        push!(seen, mi)
        _accept(m, mi) || continue
        if tried >= m.max_per_flush
            _note_error!(m, ErrorException("more than $(m.max_per_flush) instances in one flush; the rest were dropped"), "flush")
            break
        end
        tried += 1
        callees = try
            c = _capture!(m, mi, world, ctx, touched, created; force = force && mi in roots)
            done += 1
            delete!(m.failed, mi)
            c
        catch err
            m.failures += 1
            push!(m.failed, mi)
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

# --- the walk of compiled instances ------------------------------------------
#
# The hook sees inference entry points only. An instance inferred inside
# another's inference (and inlined there) that is compiled later on its own,
# an instance reached only from top-level code or from code outside the scope
# (`map(h, v)` in Base) never passes through the hook as itself. So each flush
# also walks the method tables for instances that have a `CodeInstance` valid
# now (compiled, or inferred and inlined), are in scope, and are not captured
# (or captured for an older method): those are captured too. Code present
# when the state was enabled (`baseline`) is not: it was not compiled while
# capturing.

# Whether a method is in the state's scope (the module test of `_accept`).
function _in_scope(m::InstrumentationManager, meth::Method)
    mod = meth.module
    _within(mod, (@__MODULE__)) && return false
    m.modules !== nothing && return any(t -> _within(mod, t), m.modules)
    return m.include_system || !_is_system(Base.moduleroot(mod))
end

# The modules whose bindings lead to every method table: everything loaded,
# Main, the modules given, and those of captured methods (an anonymous
# `Module(:X)` is reachable through them only).
function _walk_modules(m::InstrumentationManager)
    mods = Module[Main, Core, Base]
    append!(mods, Base.loaded_modules_array())
    m.modules === nothing || append!(mods, m.modules)
    append!(mods, m.seen_modules)
    for ment in values(m.methods)
        push!(mods, ment.method.module)
    end
    return unique!(mods)
end

# An anonymous module (`Module(:X)`, a test's module) is bound nowhere: the
# walk reaches it through the instances the hook recorded, in scope or not:
# a top-level thunk's module, a method's module, the modules of the types in
# the signature (`map(h, v)` names `typeof(h)`).
function _note_modules!(m::InstrumentationManager, mis)
    found = Base.IdSet{Any}()
    for mi in mis
        def = mi.def
        def isa Module ? push!(found, def) : def isa Method && push!(found, def.module)
        sig = Base.unwrap_unionall(mi.specTypes)
        sig isa DataType || continue
        for T in sig.parameters
            T = Base.unwrap_unionall(T)
            T isa DataType && T.name === Type.body.name && !isempty(T.parameters) && (T = Base.unwrap_unionall(T.parameters[1]))
            T isa DataType && push!(found, parentmodule(T))
        end
    end
    for mod in found
        mod = mod::Module
        (_is_system(Base.moduleroot(mod)) || _within(mod, (@__MODULE__)) || mod in m.seen_modules) && continue
        length(m.seen_modules) < 4096 && push!(m.seen_modules, mod)
    end
    return nothing
end

# The method tables of the system's modules (Core, Base, the standard
# libraries), kept while no module is loaded: finding them means reading every
# binding of every module, most of a walk's cost otherwise.
const _SYSTEM_TABLES = Ref{Any}(nothing) # (loaded modules, tables)

function _walk_tables(m::InstrumentationManager)
    loaded = Base.loaded_modules_array()
    c = _SYSTEM_TABLES[]
    if c === nothing || c[1] != length(loaded)
        sys = Module[mod for mod in Module[Core, Base, loaded...] if _is_system(Base.moduleroot(mod))]
        c = (length(loaded), _method_tables(unique!(sys)))
        _SYSTEM_TABLES[] = c
    end
    user = _method_tables(Module[mod for mod in _walk_modules(m) if !_is_system(Base.moduleroot(mod))];
                          skip = mod -> _is_system(Base.moduleroot(mod)))
    seen = union!(Base.IdSet{Any}(), c[2])
    tables = copy(c[2])
    for mt in user
        mt in seen || (push!(seen, mt); push!(tables, mt))
    end
    return tables
end

# The in-scope methods found by the last visit of every method table, and what
# that visit depended on. No method is added without advancing the world
# counter, so while the world and the modules the walk starts from are
# unchanged, a walk looks at these methods only: visiting every table costs
# 30-100 ms per flush with a few standard libraries loaded (issue 19, item 14).
mutable struct _WalkCache
    world::UInt
    nmods::Int
    methods::Vector{Method}
end
const _WALK_CACHE = IdDict{InstrumentationManager,_WalkCache}()

function _scope_methods(m::InstrumentationManager)
    world = Base.get_world_counter() # read first: a method defined during the visit makes the next walk visit again
    nmods = length(_walk_modules(m))
    c = get(_WALK_CACHE, m, nothing)
    (c !== nothing && c.world == world && c.nmods == nmods) && return c.methods
    out = Method[]
    for mt in _walk_tables(m)
        Base.visit(mt) do meth
            meth isa Method && _in_scope(m, meth) && push!(out, meth)
        end
    end
    _WALK_CACHE[m] = _WalkCache(world, nmods, out)
    return out
end

# Calls `f(mi, ci)` for every in-scope instance with a `CodeInstance` valid now
# (compiled, or inferred only because every caller inlined it).
function _foreach_compiled(f, m::InstrumentationManager)
    for meth in _scope_methods(m)
        _foreach_specialization(meth) do mi
            ci = _live_code_instance(mi)
            ci === nothing || f(mi, ci)
        end
    end
    return nothing
end

# The compiled code present now, which enabling does not capture.
function _take_baseline!(m::InstrumentationManager)
    empty!(m.baseline)
    _foreach_compiled((mi, ci) -> push!(m.baseline, ci), m)
    return nothing
end

"The in-scope instances compiled since enabling that are not captured (in their current method)."
function _walk_uncaptured(m::InstrumentationManager)
    out = Core.MethodInstance[]
    _foreach_compiled(m) do mi, ci
        ci in m.baseline && return
        mi in m.failed && return
        ent = _lookup(m.instances, mi.specTypes)
        # Captured for an older method (redefined since): capture again. Two live
        # instances of one signature (an `invoke` of a less specific method) do not take turns.
        (ent === nothing || (ent.mi !== mi && !_has_valid_code(ent.mi))) && push!(out, mi)
    end
    m.walks += 1
    return out
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
        # A captured instance that dispatches to this method now (a redefinition
        # replaces the method; its old instance is not invalidated) is stale too.
        for ent in values(m.instances)
            def = ent.mi.def
            (def isa Method && def !== meth && def.name === meth.name && ent.spec <: meth.sig) || continue
            any(x -> x === ent.spec, m.stale) || push!(m.stale, ent.spec)
        end
    end
    for ent in sort!(collect(values(m.instances)); by = e -> e.label)
        closed = _closed_worlds(ent.mi)
        for mw in reverse(closed[1:max(0, length(closed) - ent.closed_seen)])
            push!(entries, WorldEntry(mw + 1, :invalidated, ent.label))
        end
        # Its pages show code that is no longer valid: re-analyzed by this flush (`_reanalyze_stale!`).
        length(closed) > ent.closed_seen && !any(x -> x === ent.spec, m.stale) && push!(m.stale, ent.spec)
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

"Invalidated instances re-analyzed by one flush at most; the rest wait for the next (`stale_pending` in the status)."
const STALE_PER_FLUSH = 256

"""
Re-analyzes (in the current world) captured instances whose compiled code was
invalidated since their pages were written, so the pages show what the code
is now even before anything calls it again. At most `STALE_PER_FLUSH` per call.
"""
function _reanalyze_stale!(m::InstrumentationManager)
    isempty(m.stale) && return 0
    world = Base.get_world_counter()
    k = min(length(m.stale), STALE_PER_FLUSH)
    specs = m.stale[1:k]
    deleteat!(m.stale, 1:k)
    m.stale_skipped += length(m.stale)
    roots = Core.MethodInstance[]
    for spec in specs
        ent = _lookup(m.instances, spec)
        (ent === nothing || ent.world >= world) && continue # rendered in this world already
        mi = _method_instance(spec, world)
        mi === nothing || push!(roots, mi) # no method matches any more: the pages keep the last code
    end
    isempty(roots) && return 0
    n = _process!(m, roots)
    m.stale_reanalyzed += n
    return n
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

# Adds what the walk finds (compiled, in scope, not captured) to the pending instances.
function _walk_into_pending!(m::InstrumentationManager)
    lock(m.lock) do
        try
            queued = union!(Base.IdSet{Any}(), m.pending)
            for mi in _walk_uncaptured(m)
                mi in queued && continue
                push!(m.pending, mi)
                m.walk_found += 1
            end
        catch err
            _note_error!(m, err, "walk of compiled instances")
        end
    end
    return nothing
end

function _flush_locked!(m::InstrumentationManager)
    lock(m.lock) do
        isopen(m.state) || return 0
        # Disabled: what was compiled since is not ours (`disable_instrumentation` walked last).
        try
            _note_modules!(m, m.pending)
        catch err
            _note_error!(m, err, "modules of recorded instances")
        end
        m.enabled && _walk_into_pending!(m)
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
        try
            _reanalyze_stale!(m)
        catch err
            _note_error!(m, err, "re-analysis of invalidated instances")
        end
        _tools_sync!(m) # issue 19 items 9–13 (tools.jl): timing, invalidations, line tables, index pages
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
    try
        return _flush!(m)
    finally
        _clear_codes!()
    end
end

function _flush_all()
    _IDLE_PENDING[] = false # this flush is the one the REPL deferred (repl.jl)
    _distribute!()
    n = 0
    try
        for m in _active_managers()
            n += _flush!(m)
        end
    finally
        _clear_codes!()
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
- `timing`, `invalidations`, `locations` (issue 19; off by default, each has
  a cost): store inference timing trees ([`inference_timings`](@ref)),
  invalidation trees ([`invalidation_trees`](@ref), Julia 1.10+) and line
  tables per statement ([`ir_locations`](@ref), Julia 1.5 – 1.11) in pages;
  a Julia that lacks what one needs gets `MMSB.InstrumentationUnsupported`.
"""
function enable_instrumentation(state::MMSBState; include_system::Bool = false,
                                modules::Union{Nothing,Module,AbstractVector{Module}} = nothing,
                                follow_invokes::Bool = true, max_per_flush::Integer = 10_000,
                                timing::Bool = false, invalidations::Bool = false, locations::Bool = false) # issue 19 items 9–11
    isopen(state) || throw(ArgumentError("the state is closed"))
    _tools_check(timing, invalidations, locations) # issue 19 items 9–11 (tools.jl): refuses before anything is installed
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
                                       wp, buf, UInt64(0), UInt64(0), world, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                       0, nothing, 0, Dict{CompilerEdge,EdgeId}(), Base.IdSet{Any}(),
                                       Base.IdSet{Any}(), Any[], Module[])
            _MANAGERS[state] = m
        else
            m.include_system, m.modules, m.follow_invokes = include_system, mods, follow_invokes
            m.max_per_flush = Int(max_per_flush)
        end
        delete!(_WALK_CACHE, m) # the scope may have changed
        # Optimized code of Core/Base instances is kept for the flush only when some state captures them.
        (include_system || mods !== nothing) && (_KEEP_SYSTEM_CODE[] = true)
        m.enabled && return _tools_enable!(m, timing, invalidations, locations) # issue 19 items 9–13 (tools.jl)
        # Instances recorded for other states before now are not this state's business.
        _distribute!()
        m.enabled = true
        try
            # What is compiled already was not compiled while capturing: the walk skips it.
            _without_recording(() -> _take_baseline!(m))
            _install_hook!()
            _RECORDING[] = true
            _repl_attach!()
            _register_atexit!()
        catch
            m.enabled = false
            isempty(_active_managers()) && _uninstall_hook!()
            rethrow()
        end
        return _tools_enable!(m, timing, invalidations, locations) # issue 19 items 9–13 (tools.jl)
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
            # The last walk while enabled (the final flush below runs disabled).
            isopen(state) && Base.invokelatest(() -> _without_recording(() -> _walk_into_pending!(m)))
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
    _tools_disable!(m) # issue 19 items 9–10 (tools.jl): process-wide logging off when no state wants it
    isempty(_active_managers()) && _clear_codes!() # nobody flushes what is still recorded
    return nothing
end

function disable_instrumentation()
    s = _DEFAULT_STATE[]
    s === nothing || disable_instrumentation(s)
    return nothing
end

function _forget_closed!()
    for (s, m) in collect(_MANAGERS)
        isopen(s) || (m.enabled = false; delete!(_MANAGERS, s); delete!(_WALK_CACHE, m))
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
    Base.invokelatest(_reanalyze, state, _call_signature(f, types))

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
        _reanalyze_stale!(m)
        _tools_sync!(m) # issue 19 items 9–13 (tools.jl)
        changed = String[]
        for slot in values(m.slots)
            get(before, slot.page.value, -1) != slot.updates && push!(changed, string(slot.kind, " ", slot.label))
        end
        return sort!(changed)
    end
end
