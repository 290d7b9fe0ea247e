# Everything that depends on the Julia version, in one file. Each branch cites
# the Julia source it follows (tags v1.10.10, v1.11.7, v1.12.1; a copy of those
# files is in ../shared/julia-sources/ on the project's machines).
#
# | Julia       | tested | hook called as (C: src/gf.c jl_type_infer)            | original entry point                        | set_typeinf bumps world |
# |-------------|--------|-------------------------------------------------------|---------------------------------------------|-------------------------|
# | 1.5         | yes    | (mi, world::UInt)                                     | Core.Compiler.typeinf_ext                   | yes                     |
# | 1.6 – 1.9   | -      | not supported: no branch was read against its sources | (enable_instrumentation refuses)            |                         |
# | 1.10, 1.11  | yes    | (mi, world::UInt)                                     | Core.Compiler.typeinf_ext_toplevel, 2 args  | yes (gf.c:654 / :688)   |
# | 1.12        | no     | (mi, world::UInt, source_mode::UInt8, trim_mode::UInt8) | Core.Compiler.typeinf_ext_toplevel, 4 args | no (gf.c:953)           |
#
# The hook forwards `args...` unchanged; only the warm-up call and the
# precompile signature name the arguments. Before anything is installed,
# `_self_check()` looks up every method, field and C symbol used here on the
# running Julia (`_requirements()`), so a Julia whose internals moved gets a
# clear `InstrumentationUnsupported` instead of a broken compiler.
#
# Other differences handled here:
# - the current entry point cannot be read back (`jl_typeinf_func` is not
#   exported), but `jl_typeinf_world` (exported from 1.10) changes on every
#   `jl_set_typeinf_func`: if it is not the value our install left, someone
#   else installed an entry point after us and `disable_instrumentation` leaves
#   theirs in place (1.5 does not export it: there we restore unconditionally);
# - `Base._methods_by_ftype` returns `svec(types, sparams, method)` on 1.5 and
#   `Core.MethodMatch` objects from 1.6;
# - `:invoke` statements name a `MethodInstance` up to 1.11 and may name a
#   `CodeInstance` from 1.12;
# - `jl_code_for_staged` takes (mi) on 1.5, (mi, world) on 1.10/1.11 and
#   (mi, world, cache) on 1.12 (see `_lowered_ir`);
# - `CodeInstance` has an `owner` from 1.11: only the native compiler's
#   (`owner === nothing`) count for invalidations (see `_closed_worlds`);
# - invalidations: the world page detects one on every version by a captured
#   instance's `CodeInstance` getting a finite `max_world` (see `_closed_worlds`).
#   The trees of `invalidations = true` come from `jl_debug_method_invalidation`:
#   a function returning a list from 1.6, a C `int` on 1.5 that makes the
#   runtime print them to `jl_uv_stdout`, which we point at a file of ours
#   while logging (`_InvalidationText15`);
# - `Method.specializations` (read by the walk of compiled instances) is a
#   `SimpleVector` with unassigned slots on 1.5, one `MethodInstance` or a
#   `SimpleVector` from 1.10 (`_foreach_specialization`); 1.12 keeps every
#   method in one global table (`_method_tables`, untested);
# - `_infer_ir` infers the instance's own method on 1.10/1.11
#   (`Core.Compiler.typeinf_code(interp, method, atype, sparams, optimize)`;
#   1.12: `typeinf_code(interp, mi, optimize)`, Compiler/src/typeinfer.jl:1076),
#   unoptimized only when the compiler's optimized code is at hand
#   (`_compiled_code`: what the entry point returned to the hook, which 1.5's
#   `typeinf_ext` also returns, but 1.5 needs one inference for both forms anyway;
#   1.12's returns a `CodeInstance`: `_typeinf_112` runs its bridge itself to
#   read the interpreter's codegen cache, else the `CodeInstance`'s cached code);
# - the REPL's transform lists: `Base.active_repl_backend.ast_transforms` and
#   `REPL.repl_ast_transforms` (stdlib/REPL/src/REPL.jl:90/126 on 1.10, 187/239 on 1.11, 114/288 on 1.12).

const _V15 = VERSION < v"1.6.0-DEV"
const _V111 = VERSION >= v"1.11.0-DEV"
const _V112 = VERSION >= v"1.12.0-DEV"
"Versions with a branch here (1.6 – 1.9 were never read against their sources)."
const _SUPPORTED = _V15 || VERSION >= v"1.10.0-DEV"

"""
    InstrumentationUnsupported(version, missing)

Thrown by [`enable_instrumentation`](@ref) when the running Julia lacks a
method, field or C symbol the compiler hooks use (`missing` names each one);
nothing is installed then.
"""
struct InstrumentationUnsupported <: Exception
    version::VersionNumber
    missing::Vector{String}
end
function Base.showerror(io::IO, e::InstrumentationUnsupported)
    print(io, "InstrumentationUnsupported: the compiler hooks do not match Julia ", e.version,
          " (nothing was installed); missing: ", join(e.missing, "; "))
end

"The compiler's own type-inference entry point (what `disable_instrumentation` restores)."
function _default_typeinf_entry()
    if _V15
        return Core.Compiler.typeinf_ext
    else
        # 1.10: base/compiler/typeinfer.jl:1078, 1.11: base/compiler/typeinfer.jl:1135,
        # 1.12: Compiler/src/typeinfer.jl:1448 (the "bridge for the C code").
        return getfield(Core.Compiler, :typeinf_ext_toplevel)
    end
end

"Whether `jl_set_typeinf_func` advances the world counter (src/gf.c: 1.10 line 659, 1.11 line 693; not on 1.12, line 953)."
const _SET_BUMPS_WORLD = !_V112

"Installs `f` as the type-inference entry point."
function _set_typeinf_entry!(@nospecialize(f))
    ccall(:jl_set_typeinf_func, Cvoid, (Any,), f)
    return nothing
end

"Argument types the hook is called with on this version (for `precompile`)."
function _hook_argtypes()
    # 1.12: src/gf.c:431-435 passes (mi, world, source_mode, trim_mode).
    _V112 && return (Core.MethodInstance, UInt, UInt8, UInt8)
    return (Core.MethodInstance, UInt) # 1.5 – 1.11: src/gf.c:366-368 (1.10), 362-364 (1.11)
end

"""
Arguments for one real call of the hook outside inference (to compile it, and
everything it calls, before it is installed): an already inferred instance
makes the original entry point return at once.
"""
function _warmup_args()
    mi = _method_instance(Tuple{typeof(identity),Int}, Base.get_world_counter())
    # 1.12: SOURCE_MODE_NOT_REQUIRED = 0x0 (Compiler/src/typeinfer.jl:1147), TRIM_NO = 0x0 (:1533).
    _V112 && return (mi, Base.get_world_counter(), 0x00, 0x00)
    return (mi, Base.get_world_counter())
end

"""
    _requirements() -> Vector{Tuple{String,Function}}

Everything the hooks use on this version: a description and a check that is
true when the running Julia has it. `_EXTRA_REQUIREMENTS` lets the tests fake
a missing piece.
"""
function _requirements()
    C = Core.Compiler
    MI, CI = Core.MethodInstance, isdefined(Core, :CodeInstance) ? Core.CodeInstance : Nothing
    reqs = Tuple{String,Function}[]
    # Callable structs, not closures: one compiled method each (a closure would
    # be compiled anew for every tuple of argument types, at the first enable).
    method(mod, name, types) = push!(reqs, (string("method ", mod, ".", name, types), _HasMethod(mod, name, Tuple{types...})))
    field(T, name) = push!(reqs, (string("field ", T, ".", name), _HasField(T, name)))
    symbol(name) = push!(reqs, (string("C symbol ", name), _HasSymbol(name)))
    symbol(:jl_set_typeinf_func)
    symbol(:jl_code_for_staged)
    method(Base, :_methods_by_ftype, (Any, Int, UInt))
    field(MI, :def); field(MI, :specTypes); field(MI, :cache)
    field(CI, :max_world); field(CI, :next)
    field(Method, :primary_world); field(Method, :generator); field(Method, :specializations)
    if _V15
        method(C, :typeinf_ext, (MI, UInt))
        symbol(:jl_typeinf_begin); symbol(:jl_typeinf_end)
        method(C, :specialize_method, (Method, Any, Core.SimpleVector))
        for name in (:InferenceResult, :InferenceState, :Params, :OptimizationState)
            push!(reqs, (string("Core.Compiler.", name), () -> isdefined(C, name)))
        end
    else
        symbol(:jl_typeinf_world) # the restore guard (src/gf.c:652 on 1.10)
        method(C, :typeinf_ext_toplevel, _hook_argtypes())
        method(Base, :code_typed_by_type, (Type,))
        _V112 || method(C, :typeinf_code, (C.NativeInterpreter, Method, Any, Core.SimpleVector, Bool))
        if _V112
            method(C, :specialize_method, (Method, Any, Core.SimpleVector))
            # `_infer_ir`: Compiler/src/typeinfer.jl:1076 infers one instance; the
            # return type is the `rettype` of the CodeInfo (base/reflection.jl:306).
            method(C, :typeinf_code, (C.NativeInterpreter, MI, Bool))
            field(Core.CodeInfo, :rettype)
            # `_typeinf_112` (one inference per instance): the bridge it repeats
            # (Compiler/src/typeinfer.jl:1441-1452) and the interpreter's codegen cache.
            method(C, :typeinf_ext_toplevel, (C.NativeInterpreter, MI, UInt8))
            method(C, :codegen_cache, (C.NativeInterpreter,))
            push!(reqs, ("Core.Compiler.InferenceParams(; force_enable_inference)",
                         () -> isdefined(C, :InferenceParams) && hasfield(C.InferenceParams, :force_enable_inference)))
            push!(reqs, ("Core.Compiler.TRIM_NO", () -> isdefined(C, :TRIM_NO)))
            field(CI, :def)
        else
            method(C, :specialize_method, (Core.MethodMatch,))
        end
        _V111 && field(CI, :owner) # src/julia.h:416 (1.11), :440 (1.12)
        if !_V112 # `_compiled_code`
            field(CI, :inferred); field(CI, :min_world)
            field(Core.CodeInfo, :min_world); field(Core.CodeInfo, :inferred); field(Core.CodeInfo, :ssavaluetypes)
            method(C, :_uncompressed_ir, (CI, String)); method(C, :is_inlineable, (String,))
        end
    end
    append!(reqs, _EXTRA_REQUIREMENTS)
    return reqs
end

struct _HasMethod <: Function
    mod::Module
    name::Symbol
    tt::Any
end
(h::_HasMethod)() = isdefined(h.mod, h.name) && hasmethod(getfield(h.mod, h.name), h.tt)
struct _HasField <: Function
    T::Any
    name::Symbol
end
(h::_HasField)() = h.T !== Nothing && hasfield(h.T, h.name)
struct _HasSymbol <: Function
    name::Symbol
end
(h::_HasSymbol)() = _c_symbol(h.name) != C_NULL

"Test hook: requirements added to `_requirements()` (to fake a missing piece)."
const _EXTRA_REQUIREMENTS = Tuple{String,Function}[]

"The address of a C symbol exported by Julia's own libraries (`C_NULL` if none has it)."
function _c_symbol(name::Symbol)
    for lib in Libdl.dllist()
        occursin("libjulia", basename(lib)) || continue
        h = Libdl.dlopen_e(lib)
        h == C_NULL && continue
        p = Libdl.dlsym_e(h, name)
        p == C_NULL || return p
    end
    return C_NULL
end

"""
    _self_check()

Throws [`InstrumentationUnsupported`](@ref) naming every piece the hooks use
that the running Julia lacks (or the version, when no branch here covers it).
"""
function _self_check()
    missing = String[]
    _SUPPORTED || push!(missing, "a branch for Julia $(VERSION.major).$(VERSION.minor) in julia/instrumentation/compat.jl (supported: 1.5, 1.10 – 1.12)")
    for (what, ok) in _requirements()
        found = try
            ok()::Bool
        catch
            false
        end
        found || push!(missing, what)
    end
    isempty(missing) || throw(InstrumentationUnsupported(VERSION, missing))
    return nothing
end

"The value of `jl_typeinf_world` (changed by every `jl_set_typeinf_func`), or `nothing` where it is not exported (1.5)."
function _typeinf_world()
    _V15 && return nothing
    p = _c_symbol(:jl_typeinf_world)
    p == C_NULL && return nothing
    return unsafe_load(Ptr{UInt}(p))
end

"The `MethodInstance` that dispatch picks for the call signature `tt` in `world`, or `nothing`."
function _method_instance(@nospecialize(tt), world::UInt)
    ms = Base._methods_by_ftype(tt, -1, world)
    (ms === false || ms === nothing || length(ms) != 1) && return nothing
    m = ms[1]
    if _V15
        return Core.Compiler.specialize_method(m[3], m[1], m[2])
    elseif _V112
        # 1.12: Compiler/src/typeinfer.jl:905 specializes (method, atype, sparams).
        return Core.Compiler.specialize_method(m.method, m.spec_types, m.sparams)
    else
        return Core.Compiler.specialize_method(m) # base/compiler/utilities.jl:227 (1.10, 1.11)
    end
end

"The `MethodInstance` named by an `:invoke` statement's first argument (or `nothing`)."
function _invoke_target(@nospecialize(x))
    x isa Core.MethodInstance && return x
    # 1.12: a CodeInstance whose `def` is the MethodInstance (src/julia.h:439; untested).
    if !_V15 && isdefined(Core, :CodeInstance) && x isa Core.CodeInstance
        d = x.def
        return d isa Core.MethodInstance ? d : nothing
    end
    return nothing
end

"""
    _infer_ir(mi, world, compiled = nothing) -> (typed::CodeInfo, optimized::CodeInfo, return type)

Runs inference on `mi` in `world` as `code_typed(...; optimize=false)` and
`code_typed(...; optimize=true)` do, with line numbers removed
(`debuginfo=:none`). On 1.5 one inference serves both: the typed code is
copied before the optimizer rewrites it in place (exactly the steps of
`Core.Compiler.typeinf_code`), which halves the cost of a capture. On 1.10,
1.11 and 1.12, `compiled` (from [`_compiled_code`](@ref)) is the optimized
code the compiler itself produced: then only the unoptimized inference runs here.
"""
function _infer_ir(mi::Core.MethodInstance, world::UInt, @nospecialize(compiled = nothing))
    if _V15
        C = Core.Compiler
        ccall(:jl_typeinf_begin, Cvoid, ())
        local typed, opt, rt
        try
            result = C.InferenceResult(mi)
            frame = C.InferenceState(result, false, C.Params(world))
            frame === nothing && error("inference of $mi did not start")
            (C.typeinf(frame) && frame.inferred) || error("inference of $mi did not succeed")
            typed = copy(frame.src)
            ostate = C.OptimizationState(frame)
            C.optimize(ostate, result.result)
            ostate.src.inferred = true
            opt = frame.src
            rt = C.widenconst(result.result)
        finally
            ccall(:jl_typeinf_end, Cvoid, ())
        end
        Base.remove_linenums!(typed)
        Base.remove_linenums!(opt)
        return typed, opt, rt
    elseif _V112
        # The steps of code_typed for one match (base/reflection.jl:299-307 on 1.12:
        # `typeinf_code(interp, match, optimize)`, whose return is the CodeInfo, its
        # type in `rettype`), for `mi` itself (Compiler/src/typeinfer.jl:1076).
        # Untested: 1.12 cannot run on the project's machines.
        C = Core.Compiler
        typed = C.typeinf_code(C.NativeInterpreter(world), mi, false)
        typed isa Core.CodeInfo || error("inference of $mi did not succeed")
        rt = typed.rettype
        opt = compiled isa Core.CodeInfo ? _as_optimized(compiled) : C.typeinf_code(C.NativeInterpreter(world), mi, true)
        opt isa Core.CodeInfo || error("inference of $mi did not succeed")
        Base.remove_linenums!(typed)
        Base.remove_linenums!(opt)
        return typed, opt, rt
    else
        # The steps of code_typed for one match (base/reflection.jl:1397-1407 on 1.10,
        # :1628-1638 on 1.11), for `mi`'s own method: by signature, an instance of a
        # less specific method (`f(@nospecialize x)` beside `f(::Int)`) matches several.
        # Two inferences (unoptimized, optimized), where 1.5 needs one; see docs/versions.md.
        C = Core.Compiler
        m = mi.def::Method
        typed, rt = C.typeinf_code(C.NativeInterpreter(world), m, mi.specTypes, mi.sparam_vals, false)
        # The compiler's own optimized code when it has it (a copy: remove_linenums! writes in place).
        opt = compiled isa Core.CodeInfo ? _as_optimized(compiled) :
              C.typeinf_code(C.NativeInterpreter(world), m, mi.specTypes, mi.sparam_vals, true)[1]
        (typed isa Core.CodeInfo && opt isa Core.CodeInfo) || error("inference of $mi did not succeed")
        Base.remove_linenums!(typed)
        Base.remove_linenums!(opt)
        return typed, opt, rt
    end
end

"""
    _compiled_code(mi) -> Union{CodeInfo,Nothing}

1.10, 1.11: the optimized code the compiler produced for `mi`, valid now,
which is what `code_typed(...; optimize=true)` returns (the same pipeline:
`typeinf_ext` and `typeinf_code` both run `typeinf` with the global cache,
base/compiler/typeinfer.jl:1001/947 on 1.10): the `CodeInfo` the compiler's
entry point returned to the hook (`_record_code!`), else the inferred source
cached in the live `CodeInstance` (decompressed as `typeinf_ext` does). Not
taken (`nothing`: the flush infers it) when the instance has no live code,
when the code is from an older `CodeInstance` (`min_world` differs), or when
it is the stand-in `return c` the compiler returns for a constant-return
instance (`ssavaluetypes` is a count there, typeinfer.jl:1016 on 1.10). On
1.5 one inference serves both forms already. 1.12 (untested): the code
`_typeinf_112` recorded with the live `CodeInstance`, else the cache (its
entry point returns a `CodeInstance`; see `_REUSE_112`).
"""
function _compiled_code(mi::Core.MethodInstance)
    _V15 && return nothing
    _V112 && !_REUSE_112 && return nothing
    ci = _live_code_instance(mi)
    ci === nothing && return nothing
    # 1.12: the code `_typeinf_112` recorded with its `CodeInstance`, taken
    # only if that is still the live one; else the cache is read, as the
    # compiler itself reads it back (Compiler/src/typeinfer.jl:1190, `_uncompressed_ir(code, inf)`).
    src = _recorded_code(mi)
    if src isa Tuple
        src = src[1] === ci ? src[2] : nothing
    end
    # The cache of the system image's code (Core, Base, the standard libraries)
    # holds what the bootstrap compiler inferred when the image was built, not
    # what `code_typed` infers now (the suite found `Base.show(::IO, ::Module)`
    # cached with `Base.is_root_module::Any` where `code_typed` now has an
    # `invoke`): only code the entry point returned in this process is taken there.
    !(src isa Core.CodeInfo) && _is_system(Base.moduleroot((mi.def::Method).module)) && return nothing
    if !(src isa Core.CodeInfo)
        # Non-inlineable code is dropped from the cache once compiled (codegen's
        # JL_DELETE_NON_INLINEABLE; on 1.12 already when inferred, unless inlineable:
        # `maybe_compress_codeinfo`, Compiler/src/typeinfer.jl:307): then `inferred`
        # is `nothing` and the flush infers.
        inf = ci.inferred
        src = inf isa String ? (_V112 ? Base._uncompressed_ir(ci, inf) : Core.Compiler._uncompressed_ir(ci, inf)) : inf
    end
    src isa Core.CodeInfo || return nothing
    (src.inferred && src.ssavaluetypes isa Vector{Any}) || return nothing
    UInt(src.min_world) == UInt(ci.min_world) || return nothing
    # A callee still `invoke`d although it is inlineable now was not inlineable
    # when this code was optimized: a member of a recursion cycle (`fib` calling
    # itself), not cached yet. `code_typed` now inlines it: infer again.
    for callee in _invoked(src)
        cci = _live_code_instance(callee)
        cci === nothing && continue
        inf = cci.inferred
        inf isa Union{String,Core.CodeInfo} && Core.Compiler.is_inlineable(inf) && return nothing
    end
    return src
end

"""
    _typeinf_112(mi, world, source_mode, trim_mode) -> CodeInstance

1.12: the compiler's entry point as its C bridge runs it,
`typeinf_ext_toplevel(mi, world, source_mode, trim_mode)`
(Compiler/src/typeinfer.jl:1448-1452, 1.12.1), made here so that the
interpreter stays at hand: `finish!` (typeinfer.jl:94-160) puts the
uncompressed optimized `CodeInfo` of every instance the call inferred into
its codegen cache (`codegen[ci] = uncompressed`), also the non-inlineable
code the global cache drops (`maybe_compress_codeinfo`, :306). Recorded
(`_record_code!`), it spares the flush the second (optimized) inference for
all code, as the `CodeInfo` `typeinf_ext` returns does on 1.10/1.11. Only
used while the default entry point is the one we forward to (`_typeinf_hook`).
"""
function _typeinf_112(mi::Core.MethodInstance, world::UInt, source_mode::UInt8, trim_mode::UInt8)
    C = Core.Compiler
    interp = C.NativeInterpreter(world; inf_params = C.InferenceParams(; force_enable_inference = trim_mode != C.TRIM_NO))
    ci = C.typeinf_ext_toplevel(interp, mi, source_mode)
    if _RECORDING[]
        codegen = C.codegen_cache(interp)
        codegen === nothing || for (cci, src) in codegen
            cmi = cci.def
            cmi isa Core.MethodInstance && _record_code!(cmi, src, cci)
        end
    end
    return ci
end

"""
1.12: whether `_compiled_code` can read the compiler's cached code back
(base/runtime_internals.jl:1424 `Base._uncompressed_ir(::CodeInstance, ::String)`,
the `CodeInfo` fields it checks, and `is_inlineable`); when not, every capture
infers twice, as before: slower, not wrong, so not a refusal.
"""
const _REUSE_112 = _V112 && isdefined(Core, :CodeInstance) && hasmethod(Base._uncompressed_ir, Tuple{Core.CodeInstance,String}) &&
                   isdefined(Core.Compiler, :is_inlineable) && hasfield(Core.CodeInfo, :min_world) &&
                   hasfield(Core.CodeInfo, :inferred) && hasfield(Core.CodeInstance, :inferred)

"""
A copy of the compiler's optimized `code` as the optimizer leaves it: the
optimizer keeps the argument slots only (`replace_code_newstyle!`,
base/compiler/ssair/legacy.jl:71 on 1.10, :70 on 1.11), but decompressing
from the cache restores every slot name of the method (`jl_uncompress_ir`),
which the printer would then tell apart as `pos@_3`.
"""
function _as_optimized(code::Core.CodeInfo)
    c = copy(code)
    n = length(c.slotflags)
    length(c.slotnames) > n && (c.slotnames = c.slotnames[1:n])
    st = c.slottypes
    st isa Vector{Any} && length(st) > n && (c.slottypes = st[1:n])
    return c
end

"Calls `f(method)` for every method of the generic function `func`."
function _foreach_method(f, @nospecialize(func))
    if !_V112
        Base.visit(f, typeof(func).name.mt) # 1.5 – 1.11: each function's own method table
    else # 1.12 keeps all methods in one global table (untested)
        foreach(f, methods(func))
    end
    return nothing
end

"The lowered code of `mi`'s method (the staged code for a `@generated` one, expanded for `world`), without line numbers."
function _lowered_ir(mi::Core.MethodInstance, world::UInt)
    m = mi.def::Method
    code = if isdefined(m, :generator)
        # The generator runs here, outside inference; a generator that cannot
        # expand for these (non-leaf) types leaves the page empty-handed.
        # Called as Base's code_lowered calls it on each version:
        if _V15
            ccall(:jl_code_for_staged, Any, (Any,), mi)
        elseif _V112
            # base/reflection.jl:34 (1.12); a NULL `cache` out-pointer is not written (src/method.c:695).
            ccall(:jl_code_for_staged, Any, (Any, UInt, Ptr{Cvoid}), mi, world, C_NULL)
        else
            # base/reflection.jl:994 (1.10), :1145 (1.11); src/method.c:566 / :625 take (mi, world).
            ccall(:jl_code_for_staged, Any, (Any, UInt), mi, world)
        end
    else
        Base.uncompressed_ir(m)
    end
    code isa Core.CodeInfo || error("no lowered code for $mi")
    Base.remove_linenums!(code)
    return code
end

"The world in which `m` was defined."
_method_world(m::Method) = UInt(m.primary_world)

"""
The `max_world` of each `CodeInstance` of the native compiler cached for `mi`
that is closed (no longer valid in the newest world): each one is an
invalidation or a replacement of that compiled code. From 1.11 other compiler
tools cache their own instances in the same list, marked by `owner` (`nothing`
is the native compiler's: src/julia.h:416 on 1.11, :440 on 1.12); theirs are
not our invalidations.
"""
function _closed_worlds(mi::Core.MethodInstance)
    out = UInt[]
    isdefined(mi, :cache) || return out
    ci = mi.cache
    while true
        native = !_V111 || ci.owner === nothing
        mw = UInt(ci.max_world)
        (native && mw != typemax(UInt)) && push!(out, mw)
        isdefined(ci, :next) || break
        ci = ci.next
    end
    return out
end

"The running REPL backend's list of AST transforms, or `nothing` outside a REPL."
function _repl_backend_transforms()
    isdefined(Base, :active_repl_backend) || return nothing
    b = Base.active_repl_backend
    (b === nothing || !hasproperty(b, :ast_transforms)) && return nothing
    return b.ast_transforms
end

"Whether a REPL backend runs in this process (its prompt gives the idle time deferred flushes use)."
_repl_backend_active() = isdefined(Base, :active_repl_backend) && Base.active_repl_backend !== nothing

"""
Whether the REPL backend is evaluating a command: its `in_eval` field
(stdlib/REPL/src/REPL.jl:81 on 1.5, :88 on 1.10, :185 on 1.11, :112 on 1.12).
A backend without the field counts as idle between polls.
"""
function _repl_backend_busy()
    _repl_backend_active() || return false
    b = Base.active_repl_backend
    return hasproperty(b, :in_eval) && getproperty(b, :in_eval) === true
end

"The transforms a REPL backend started later picks up, or `nothing` when the REPL is not loaded."
function _repl_default_transforms()
    isdefined(Base, :REPL_MODULE_REF) || return nothing
    isassigned(Base.REPL_MODULE_REF) || return nothing
    R = Base.REPL_MODULE_REF[]
    return isdefined(R, :repl_ast_transforms) ? getfield(R, :repl_ast_transforms) : nothing
end

"""
The source text of this session's REPL input number `n` (file name `REPL[n]`),
or `nothing`. The history provider holds every line of earlier sessions too;
`start_idx` is where this session's entries begin (1.5 to 1.11 layout).
"""
function _repl_input(n::Int)
    isdefined(Base, :active_repl) || return nothing
    repl = Base.active_repl
    hasproperty(repl, :interface) || return nothing
    iface = repl.interface
    iface === nothing && return nothing
    for mode in iface.modes
        hasproperty(mode, :hist) || continue
        hist = mode.hist
        (hasproperty(hist, :history) && hasproperty(hist, :start_idx)) || continue
        i = hist.start_idx + n
        1 <= i <= length(hist.history) || return nothing
        return String(hist.history[i])
    end
    return nothing
end

"Calls `f(mi)` for every `MethodInstance` cached as a specialization of `m` (1.5: a `SimpleVector` with unassigned slots; 1.10+: one instance or a `SimpleVector`)."
function _foreach_specialization(f, m::Method)
    s = m.specializations
    if s isa Core.MethodInstance
        f(s)
    elseif s isa Core.SimpleVector
        for i in 1:length(s)
            isassigned(s, i) || continue
            mi = s[i]
            mi isa Core.MethodInstance && f(mi)
        end
    elseif s !== nothing
        Base.visit(x -> x isa Core.MethodInstance && f(x), s) # a TypeMap (older layouts)
    end
    return nothing
end

"The native `CodeInstance` of `mi` valid in the newest world (compiled, or inferred only: inlined where it is called), or `nothing`."
function _live_code_instance(mi::Core.MethodInstance)
    isdefined(mi, :cache) || return nothing
    ci = mi.cache
    while true
        (!_V111 || ci.owner === nothing) && UInt(ci.max_world) == typemax(UInt) && return ci
        isdefined(ci, :next) || return nothing
        ci = ci.next
    end
end

_has_valid_code(mi::Core.MethodInstance) = _live_code_instance(mi) !== nothing

"""
Every method table reachable from `mods` (and their submodules) by a global
binding: each function's own table, a callable type's table, and the shared
table of `Type` (constructors). From 1.12 there is one global table (untested).
"""
function _method_tables(mods; skip = mod -> false)
    tables = Core.MethodTable[]
    seen = Base.IdSet{Any}()
    if _V112 && isdefined(Core, :methodtable)
        # 1.12 keeps every method in one global table (src/gf.c:30 `jl_method_table`; untested).
        push!(tables, getfield(Core, :methodtable))
        return tables
    end
    typemt = Core.Type.body.name.mt
    push!(seen, typemt); push!(tables, typemt)
    mseen = Base.IdSet{Any}()
    stack = Module[mods...]
    while !isempty(stack)
        mod = pop!(stack)
        mod in mseen && continue
        push!(mseen, mod)
        for n in names(mod; all = true)
            isdefined(mod, n) || continue
            v = try
                getfield(mod, n)
            catch
                continue
            end
            if v isa Module
                (v in mseen || skip(v)) || push!(stack, v)
                continue
            end
            t = v isa Function ? typeof(v) : v isa Type ? Base.unwrap_unionall(v) : nothing
            (t isa DataType && isdefined(t.name, :mt)) || continue
            mt = t.name.mt
            mt isa Core.MethodTable || continue
            mt in seen && continue
            push!(seen, mt); push!(tables, mt)
        end
    end
    return tables
end

"Whether values of type `T` can change after the IR that embeds them was written (an `Array`, a `Ref`, a mutable struct)."
_is_mutable_type(@nospecialize(T)) = T isa DataType && (isdefined(Base, :ismutabletype) ? Base.ismutabletype(T) : T.mutable)

# --- issue 19 items 9–13 (timing.jl, invalidations.jl, locations.jl, index.jl) ---
# What the SnoopCompile/Cthulhu-style tools read from the compiler, by version:
# | Julia      | inference timing                          | invalidation log                     | line tables            | backedges (callers)        |
# |------------|-------------------------------------------|--------------------------------------|------------------------|----------------------------|
# | 1.5        | entry points, timed in our hook           | printed to jl_uv_stdout, captured (`_InvalidationText15`) | codelocs + linetable | Vector of MethodInstance |
# | 1.10, 1.11 | Core.Compiler.Timings (every frame)       | jl_debug_method_invalidation(1) list | codelocs + linetable   | MethodInstance, or (sig, mi) |
# | 1.12       | entry points + CodeInstance `edges` and `time_infer_*` (Timings is a stub: Compiler/src/typeinfer.jl:11-84) | the same list, `CodeInstance.def` entries | `debuginfo` via IRShow.buildLineInfoNode | CodeInstance entries |

"Whether `Core.Compiler.Timings` measures every inference frame (1.10, 1.11; a stub on 1.12, absent on 1.5)."
const _HAS_TIMINGS = !_V15 && !_V112 && isdefined(Core.Compiler, :Timings) &&
                     isdefined(Core.Compiler, :__set_measure_typeinf)

"""
1.12: whether each `CodeInstance` carries the compiler's own inference times
(`time_infer_total`, `time_infer_self`: Float16 seconds, src/julia.h:477-479,
stored by `finish!`, Compiler/src/typeinfer.jl:140-145) and its `edges` (the
callees its inference used), from which timing.jl builds the tree below an
entry point.
"""
const _HAS_CI_TIMES = _V112 && isdefined(Core, :CodeInstance) &&
                      all(f -> hasfield(Core.CodeInstance, f), (:time_infer_total, :time_infer_self, :edges))

"Seconds in a `CodeInstance` time field, read as the compiler reads them (`reinterpret(Float16, ...)`, Compiler/src/typeinfer.jl:841)."
_ci_seconds(ci, field::Symbol) = Float64(reinterpret(Float16, getfield(ci, field)::UInt16))

"The `CodeInstance`s among the `edges` of `ci` (1.12; the other entries are signatures and `MethodInstance`s of calls not inferred here)."
function _ci_callees(ci)
    out = Any[]
    e = getfield(ci, :edges)
    e isa Core.SimpleVector || return out
    for x in e
        x isa Core.CodeInstance && push!(out, x)
    end
    return out
end

"Whether `jl_debug_method_invalidation(1)` returns the runtime's invalidation list (from 1.6; on 1.5 it is an `int`: see `_InvalidationText15`)."
const _HAS_INVALIDATION_LOG = !_V15

"Whether `CodeInfo` has `codelocs` and `linetable` (1.5 – 1.11; 1.12 replaced them with `debuginfo`)."
const _HAS_LINETABLE = hasfield(Core.CodeInfo, :codelocs) && hasfield(Core.CodeInfo, :linetable)

"""
1.12: the module that prints IR (`Base.IRShow`), whose `buildLineInfoNode(debuginfo,
def, pc)` decodes a statement's compressed `DebugInfo` into its frames
(Compiler/src/ssair/show.jl, 1.12), or `nothing`.
"""
function _irshow()
    for M in (Base, Core.Compiler)
        isdefined(M, :IRShow) || continue
        S = getfield(M, :IRShow)
        S isa Module && isdefined(S, :buildLineInfoNode) && return S
    end
    return nothing
end

"What `locations = true` lacks on 1.12 (`CodeInfo.debuginfo`, `IRShow.buildLineInfoNode`); empty when all is there."
function _debuginfo_missing()
    out = String[]
    hasfield(Core.CodeInfo, :debuginfo) || push!(out, "CodeInfo.debuginfo (locations = true)")
    _irshow() === nothing && push!(out, "Base.IRShow.buildLineInfoNode (locations = true)")
    return out
end

"""
    _tools_missing(timing, invalidations, locations) -> Vector{String}

What the running Julia lacks for the options of `enable_instrumentation` that
were asked for (empty: all supported).
"""
function _tools_missing(timing::Bool, invalidations::Bool, locations::Bool)
    out = String[]
    if timing && _HAS_TIMINGS
        for name in (:_timings, :reset_timings)
            isdefined(Core.Compiler.Timings, name) || push!(out, "Core.Compiler.Timings.$name (timing = true)")
        end
    end
    timing && _V112 && !_HAS_CI_TIMES && push!(out, "CodeInstance.time_infer_total/time_infer_self/edges (timing = true)")
    if invalidations
        _c_symbol(:jl_debug_method_invalidation) == C_NULL &&
            push!(out, "C symbol jl_debug_method_invalidation (invalidations = true)")
        # 1.5: the printed log is captured through `jl_uv_stdout` (`_InvalidationText15`).
        _V15 && _c_symbol(:jl_uv_stdout) == C_NULL && push!(out, "C symbol jl_uv_stdout (invalidations = true)")
        _V15 && !(hasfield(IOStream, :handle)) && push!(out, "field IOStream.handle (invalidations = true)")
    end
    if locations && !_HAS_LINETABLE
        _V112 ? append!(out, _debuginfo_missing()) :
        push!(out, "CodeInfo.codelocs/linetable (locations = true)")
    end
    for (opt, what) in _EXTRA_TOOLS_MISSING
        (opt === :timing ? timing : opt === :invalidations ? invalidations : opt === :locations && locations) &&
            push!(out, string(what, " (", opt, " = true)"))
    end
    return out
end

"Test hook: pieces `_tools_missing` reports as missing for an option (`:timing`, `:invalidations`, `:locations` => description)."
const _EXTRA_TOOLS_MISSING = Pair{Symbol,String}[]

"Turns `Core.Compiler.Timings` measuring on or off (1.10, 1.11)."
_set_measure_typeinf!(on::Bool) = (Core.Compiler.__set_measure_typeinf(on); nothing)

"Empties `Core.Compiler.Timings` and starts its root timer again (1.10, 1.11: base/compiler/typeinfer.jl:84)."
_reset_timings!() = (Core.Compiler.Timings.reset_timings(); nothing)

"""
The inference frames timed since the last call (the children of the root
timer), which are then removed; `nothing` while an inference is running
(the timer stack is deeper than its root). 1.10/1.11: each is a
`Core.Compiler.Timing` with `mi_info.mi`, `time` (exclusive, ns) and `children`.
"""
function _take_timings!()
    ts = Core.Compiler.Timings._timings
    length(ts) == 1 || return nothing
    kids = ts[1].children
    out = copy(kids)
    empty!(kids)
    return out
end

"""
1.5's invalidation log, which the runtime prints rather than lists (src/gf.c at
v1.5.3, `JL_DEBUG_METHOD_INVALIDATION`, exported as the C `int`
`jl_debug_method_invalidation`): `invalidate_method_instance` prints each
invalidated instance as `depth` spaces and its `jl_static_show`;
`invalidate_mt_cache` prints `"-- "` and each dispatch-cache entry it drops;
`jl_method_table_insert` closes a definition that invalidated compiled code
with `">> "`, the method and its signature (`jl_method_table_disable`, i.e.
`Base.delete_method`, closes with nothing). It all goes to `JL_STDOUT`, the C
global `jl_uv_stdout`: while logging, that points to a file stream of ours
(`io.handle`, an `ios_t`: `jl_uv_puts` writes into an `ios_t` when the
stream's type field, at the offset of `ios_t.bm`, is past libuv's handle
types, src/jl_uv.c). Julia's `stdout` is its own object and is not affected;
C code printing to `JL_STDOUT` meanwhile (`Core.print`, `jl_static_show` to
stdout) lands in the log as well (parsed as text, never shown). Only the
main thread's printing is caught: `jl_uv_puts` sends other threads'
`JL_STDOUT` output to file descriptor 1, where a definition on another thread
prints its trees to the terminal. Read at each flush on the main thread.
"""
mutable struct _InvalidationText15
    io::IOStream          # where the runtime prints (jl_uv_stdout points at its ios_t)
    path::String
    prev::Ptr{Cvoid}      # jl_uv_stdout before: restored at the stop, unless someone replaced ours
    scratch::IOStream     # for `jl_static_show` of captured instances (the log's labels)
    scratch_path::String
    lines::Vector{String} # every line read so far (states read on from their own position)
    lost::Bool            # `jl_uv_stdout` was replaced (a `redirect_stdout`): nothing more is caught
end

"Marks the end of what was read at once: lines before it that no `>>` closed belong to no definition."
const _INV15_CUT = "<cut>"

function _start_invalidation_text15!()
    path, io = mktemp()
    spath, sio = mktemp()
    slot = cglobal(:jl_uv_stdout, Ptr{Cvoid})
    log = _InvalidationText15(io, path, unsafe_load(slot), sio, spath, String[], false)
    unsafe_store!(slot, io.handle)
    unsafe_store!(cglobal(:jl_debug_method_invalidation, Cint), Cint(1))
    return log
end

function _stop_invalidation_text15!(log::_InvalidationText15)
    unsafe_store!(cglobal(:jl_debug_method_invalidation, Cint), Cint(0))
    slot = cglobal(:jl_uv_stdout, Ptr{Cvoid})
    unsafe_load(slot) == log.io.handle && unsafe_store!(slot, log.prev)
    close(log.io); close(log.scratch)
    rm(log.path; force = true); rm(log.scratch_path; force = true)
    return nothing
end

"""
Appends the lines printed into `log` since the last call to `log.lines`, then
`_INV15_CUT`. Only on the main thread (the only one that prints into it: no
definition is under way while it reads); elsewhere nothing is read this time.
"""
function _pull_invalidation_text15!(log::_InvalidationText15)
    Threads.threadid() == 1 || return nothing
    unsafe_load(cglobal(:jl_uv_stdout, Ptr{Cvoid})) == log.io.handle || (log.lost = true)
    flush(log.io)
    text = read(log.path, String)
    isempty(text) && return nothing
    truncate(log.io, 0)
    seekstart(log.io)
    append!(log.lines, split(text, '\n'; keepempty = false))
    push!(log.lines, _INV15_CUT)
    return nothing
end

"`jl_static_show` of `x`: how 1.5's invalidation log names it."
function _static_show15(log::_InvalidationText15, @nospecialize(x))
    io = log.scratch
    truncate(io, 0); seekstart(io)
    ccall(:jl_static_show, Csize_t, (Ptr{Cvoid}, Any), io.handle, x)
    flush(io)
    return read(log.scratch_path, String)
end

"Starts (or joins) the runtime's invalidation log and returns it (1.6+: src/gf.c:1596 on 1.10, :2004 on 1.12; 1.5: `_InvalidationText15`)."
_start_invalidation_log!() = _V15 ? _start_invalidation_text15!() :
                             ccall(:jl_debug_method_invalidation, Any, (Cint,), 1)::Vector{Any}

"Stops the runtime's invalidation log."
function _stop_invalidation_log!(@nospecialize(log))
    log isa _InvalidationText15 && return _stop_invalidation_text15!(log)
    ccall(:jl_debug_method_invalidation, Any, (Cint,), 0)
    return nothing
end

"The `MethodInstance` an invalidation-log entry names (a `MethodInstance`, or from 1.12 a `CodeInstance`), or `nothing`."
_log_instance(@nospecialize(x)) = _invoke_target(x)

"""
The first world without `m` after `Base.delete_method` (its `deleted_world`
is the last world with it: src/gf.c `jl_method_table_disable`, 1.10), or 0
where the version does not keep it.
"""
function _deleted_world(m::Method)
    hasfield(Method, :deleted_world) || return UInt(0)
    w = UInt(getfield(m, :deleted_world))
    return w == typemax(UInt) ? UInt(0) : w + 1
end

"""
The callers the compiler recorded for `mi` (its backedges: whose inferred code
depends on `mi`, whether the call was invoked, inlined or left dynamic). 1.5:
a vector of `MethodInstance`s; 1.10/1.11: `MethodInstance`s, an `invoke`
signature before its caller (src/gf.c `get_next_edge`); 1.12: `CodeInstance`s.
"""
function _backedge_callers(mi::Core.MethodInstance)
    out = Core.MethodInstance[]
    isdefined(mi, :backedges) || return out
    b = mi.backedges
    b isa AbstractVector || return out
    for x in b
        c = _invoke_target(x)
        c === nothing || push!(out, c)
    end
    return out
end

"""
    _infer_ir_lines(mi, world) -> (typed::CodeInfo, optimized::CodeInfo)

As `code_typed(...; optimize = false/true, debuginfo = :source)` for `mi`'s own
method: the line information is kept (see `_statement_frames`).
"""
function _infer_ir_lines(mi::Core.MethodInstance, world::UInt)
    C = Core.Compiler
    m = mi.def::Method
    if _V15 # base/reflection.jl (1.5) code_typed: typeinf_code(method, atypes, sparams, optimize, params)
        typed, _ = C.typeinf_code(m, mi.specTypes, mi.sparam_vals, false, C.Params(world))
        opt, _ = C.typeinf_code(m, mi.specTypes, mi.sparam_vals, true, C.Params(world))
    elseif _V112 # as `_infer_ir` (Compiler/src/typeinfer.jl:1076), the `debuginfo` kept
        typed = C.typeinf_code(C.NativeInterpreter(world), mi, false)
        opt = C.typeinf_code(C.NativeInterpreter(world), mi, true)
    else # as `_infer_ir` (1.10, 1.11)
        typed, _ = C.typeinf_code(C.NativeInterpreter(world), m, mi.specTypes, mi.sparam_vals, false)
        opt, _ = C.typeinf_code(C.NativeInterpreter(world), m, mi.specTypes, mi.sparam_vals, true)
    end
    (typed isa Core.CodeInfo && opt isa Core.CodeInfo) || error("inference of $mi did not succeed")
    return typed, opt
end

"""
    _statement_frames(code, k) -> Vector{Tuple{String,Int,String}}

The source location of statement `k` of `code` as `(file, line, function)`
frames, innermost first (where the statement's code is written; the last is
the line in the method itself, the ones before it the functions inlined
there). Empty when the statement has no location. 1.5 – 1.11: `codelocs[k]`
indexes `linetable`, each `LineInfoNode` pointing to the node it was inlined
at (`inlined_at`, 0 for none). 1.12: see `_debuginfo_frames`.
"""
function _statement_frames(code::Core.CodeInfo, k::Int)
    _HAS_LINETABLE || return _debuginfo_frames(code, k)
    out = Tuple{String,Int,String}[]
    locs, table = code.codelocs, code.linetable
    (table isa AbstractVector && 1 <= k <= length(locs)) || return out
    i = Int(locs[k])
    n = 0
    while 1 <= i <= length(table) && n < length(table)
        node = table[i]
        push!(out, (string(getfield(node, :file)), Int(getfield(node, :line)), _frame_name(getfield(node, :method))))
        i = Int(getfield(node, :inlined_at))
        n += 1
    end
    return out
end

"A frame's function name as `_statement_frames` gives it (a `Method`, a `MethodInstance`, or a name: `macro expansion`, a module)."
function _frame_name(@nospecialize(meth))
    meth isa Method && return string(meth.name)
    meth isa Core.MethodInstance && return (d = meth.def; d isa Method ? string(d.name) : string(d))
    return string(meth)
end

"""
1.12 (untested: cannot run here): the frames of statement `k` from the
compressed `debuginfo` of `code`, decoded by the printer's own
`IRShow.buildLineInfoNode(debuginfo, def, k)` (Compiler/src/ssair/show.jl on
1.12: `append_scopes!` follows `getdebugidx` = `jl_uncompress1_codeloc` of
each `DebugInfo` into its `linetable` and inlining `edges`). It lists the
frames outermost first (the method's own line first, as the printer reads
them; `DILineInfoPrinter` reverses them): reversed here to innermost first.
Empty when the statement has no location update (as the printer prints none).
"""
function _debuginfo_frames(code::Core.CodeInfo, k::Int)
    out = Tuple{String,Int,String}[]
    S = _irshow()
    (S === nothing || !hasfield(Core.CodeInfo, :debuginfo)) && return out
    di = getfield(code, :debuginfo)
    1 <= k <= length(code.code) || return out
    def = isdefined(code, :parent) ? getfield(code, :parent) : nothing
    for node in Iterators.reverse(S.buildLineInfoNode(di, def, k))
        push!(out, (string(getfield(node, :file)), Int(getfield(node, :line)), _frame_name(getfield(node, :method))))
    end
    return out
end
