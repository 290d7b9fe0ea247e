# Everything that depends on the Julia version, in one file.
#
# What each version does (only 1.5 is exercised by the test suite; the other
# branches follow Julia's sources and are UNTESTED):
#
# | Julia      | hook installed with      | hook called as                   | original entry point              | typed IR of an MI                                |
# |------------|--------------------------|----------------------------------|-----------------------------------|--------------------------------------------------|
# | 1.5        | jl_set_typeinf_func      | (mi, world::UInt)                | Core.Compiler.typeinf_ext         | Core.Compiler.typeinf_code(m, tt, sp, opt, Params(world)) |
# | 1.6 – 1.11 | jl_set_typeinf_func      | (mi, world::UInt)                | Core.Compiler.typeinf_ext_toplevel| Base.code_typed_by_type(tt; optimize, world)     |
# | 1.12 +     | jl_set_typeinf_func      | (mi, world, source_mode::UInt8)  | Core.Compiler.typeinf_ext_toplevel (returns a CodeInstance) | Base.code_typed_by_type |
#
# The hook forwards `args...` unchanged, so a new trailing argument does not
# break it; only the precompile signature below names the arguments.
#
# Other differences handled here:
# - the current hook cannot be read back on any version (`jl_typeinf_func` is
#   not an exported symbol), so "the original" is the version's documented
#   default entry point; a hook installed by someone else before us is
#   replaced by that default when we restore (documented in docs/instrumentation.md);
# - `Base._methods_by_ftype` returns `svec(types, sparams, method)` on 1.5 and
#   `Core.MethodMatch` objects from 1.6;
# - `:invoke` statements name a `MethodInstance` up to 1.11 and may name a
#   `CodeInstance` from 1.12;
# - invalidations: `jl_debug_method_invalidation` is a C `int` on 1.5 whose
#   only effect is printing to stdout (not capturable cheaply), and a function
#   returning a list from 1.6. We use neither: an invalidation is detected on
#   every version by a captured instance's `CodeInstance` getting a finite
#   `max_world` (see `_closed_worlds`);
# - the REPL evaluates in `Main` up to 1.8 and in `Base.active_module()` from 1.9.

const _V15 = VERSION < v"1.6.0-DEV"
const _V112 = VERSION >= v"1.12.0-DEV"

"The compiler's own type-inference entry point (what `disable_instrumentation` restores)."
function _default_typeinf_entry()
    if _V15
        return Core.Compiler.typeinf_ext
    else
        return getfield(Core.Compiler, :typeinf_ext_toplevel) # untested
    end
end

"Installs `f` as the type-inference entry point (bumps the world counter)."
function _set_typeinf_entry!(@nospecialize(f))
    ccall(:jl_set_typeinf_func, Cvoid, (Any,), f)
    return nothing
end

"Argument types the hook is called with on this version (for `precompile`)."
function _hook_argtypes()
    _V112 && return (Core.MethodInstance, UInt, UInt8) # untested
    return (Core.MethodInstance, UInt)
end

"""
Arguments for one real call of the hook outside inference (to compile it, and
everything it calls, before it is installed): an already inferred instance
makes the original entry point return at once.
"""
function _warmup_args()
    mi = _method_instance(Tuple{typeof(identity),Int}, Base.get_world_counter())
    _V112 && return (mi, Base.get_world_counter(), UInt8(0)) # untested (SOURCE_MODE_NOT_REQUIRED)
    return (mi, Base.get_world_counter())
end

"The `MethodInstance` that dispatch picks for the call signature `tt` in `world`, or `nothing`."
function _method_instance(@nospecialize(tt), world::UInt)
    ms = Base._methods_by_ftype(tt, -1, world)
    (ms === false || ms === nothing || length(ms) != 1) && return nothing
    m = ms[1]
    if _V15
        return Core.Compiler.specialize_method(m[3], m[1], m[2])
    else
        return Core.Compiler.specialize_method(m) # untested
    end
end

"The `MethodInstance` named by an `:invoke` statement's first argument (or `nothing`)."
function _invoke_target(@nospecialize(x))
    x isa Core.MethodInstance && return x
    # 1.12+: a CodeInstance whose `def` is the MethodInstance (untested).
    if !_V15 && isdefined(Core, :CodeInstance) && x isa Core.CodeInstance
        d = x.def
        return d isa Core.MethodInstance ? d : nothing
    end
    return nothing
end

"""
    _infer_ir(mi, world) -> (typed::CodeInfo, optimized::CodeInfo, return type)

Runs inference on `mi` in `world` as `code_typed(...; optimize=false)` and
`code_typed(...; optimize=true)` do, with line numbers removed
(`debuginfo=:none`). On 1.5 one inference serves both: the typed code is
copied before the optimizer rewrites it in place (exactly the steps of
`Core.Compiler.typeinf_code`), which halves the cost of a capture.
"""
function _infer_ir(mi::Core.MethodInstance, world::UInt)
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
    else # untested
        typed, rt = only(Base.code_typed_by_type(mi.specTypes; optimize = false, debuginfo = :none, world = world))
        opt, _ = only(Base.code_typed_by_type(mi.specTypes; optimize = true, debuginfo = :none, world = world))
        return typed, opt, rt
    end
end

"Calls `f(method)` for every method of the generic function `func`."
function _foreach_method(f, @nospecialize(func))
    if VERSION < v"1.12.0-DEV"
        Base.visit(f, typeof(func).name.mt)
    else # untested: 1.12 keeps all methods in one global table
        foreach(f, methods(func))
    end
    return nothing
end

"The lowered code of `mi`'s method (the staged code for a `@generated` one), without line numbers."
function _lowered_ir(mi::Core.MethodInstance)
    m = mi.def::Method
    code = if isdefined(m, :generator)
        # The generator runs here, outside inference; a generator that cannot
        # expand for these (non-leaf) types leaves the page empty-handed.
        _V112 ? ccall(:jl_code_for_staged, Any, (Any, UInt), mi, Base.get_world_counter()) : # untested
                ccall(:jl_code_for_staged, Any, (Any,), mi)
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
The `max_world` of each `CodeInstance` cached for `mi` that is closed (no
longer valid in the newest world): each one is an invalidation or a
replacement of that compiled code.
"""
function _closed_worlds(mi::Core.MethodInstance)
    out = UInt[]
    isdefined(mi, :cache) || return out
    ci = mi.cache
    while true
        mw = UInt(ci.max_world)
        mw != typemax(UInt) && push!(out, mw)
        isdefined(ci, :next) || break
        ci = ci.next
    end
    return out
end

"The module REPL input is evaluated in."
_repl_module() = isdefined(Base, :active_module) ? Base.active_module() : Main # 1.9+: untested

"The running REPL backend's list of AST transforms, or `nothing` outside a REPL."
function _repl_backend_transforms()
    isdefined(Base, :active_repl_backend) || return nothing
    b = Base.active_repl_backend
    (b === nothing || !hasproperty(b, :ast_transforms)) && return nothing
    return b.ast_transforms
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
