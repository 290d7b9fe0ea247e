# The type-inference hook: process-wide (the compiler has one entry point),
# shared by every state that enabled instrumentation.
#
# Inside the hook we only record: the MethodInstance goes onto a queue. Any
# work that could need new code (rendering, page writes) would re-enter
# inference from inside inference, so it happens later, outside, in `flush`.
# Everything the recording path runs is compiled before the hook is installed
# (`_install_hook!` makes one real call first), and a per-thread flag stops a
# nested inference (e.g. of a path compiled lazily) from recording again.

"Thrown on purpose by the fault-injection switch used in the tests."
struct InstrumentationFault <: Exception
    msg::String
end
Base.showerror(io::IO, e::InstrumentationFault) = print(io, "InstrumentationFault: ", e.msg)

const _QUEUE = Core.MethodInstance[]       # instances inferred since the last drain
const _QUEUE_LOCK = Threads.SpinLock()      # no allocation, no task switch: safe inside inference
const _RECORDING = Ref(false)               # the hook records only while some state is enabled
const _INSTALLED = Ref(false)               # our hook is the compiler's entry point
const _ORIGINAL = Ref{Any}(nothing)         # what the hook forwards to (and what we restore)
const _IN_HOOK = zeros(Bool, 1024)          # per thread id: inside the recording path
const _HOOK_CALLS = Threads.Atomic{Int}(0)  # instances recorded (ever)
const _HOOK_ERRORS = Threads.Atomic{Int}(0) # errors caught inside the hook (ever)
const _HOOK_FIRST_ERROR = Ref{Any}(nothing) # the first such exception (formatted later, outside)
const _FAULT = Ref(:none)                   # test switch: :hook, :render, :warmup or :native throws on purpose
const _HOOK_WORLDS = Dict{UInt,String}()    # world ages created by installing/removing the hook
# 1.10+: MethodInstance => the optimized `CodeInfo` the compiler's entry point
# returned for it (under `_QUEUE_LOCK`). The flush renders the optimized page
# from it instead of inferring a second time (see `_compiled_code`); cleared by
# every flush, and bounded, so code nobody flushes is not held for long.
const _CODES = IdDict{Any,Any}()
const _MAX_CODES = 20_000
const _KEEP_SYSTEM_CODE = Ref(false)        # some state captures Core/Base too (`include_system`)

"""
    _typeinf_hook(args...)

The function installed as the compiler's type-inference entry point. Records
the instance, then forwards every argument unchanged to the original entry
point (so signature changes across Julia versions pass through).
"""
function _typeinf_hook(args...)
    _record!(args)
    # issue 19 item 9 (timing.jl): entry points timed (1.5, 1.12)
    src = _TIMING_HOOK[] ? _timed_typeinf(args) : _forward(args)
    _V15 || _V112 || _record_code!(args[1], src)
    return src
end

# Calls the original entry point; on 1.12 the default one is run as
# `_typeinf_112` (compat.jl), which records the optimized code it produced.
@inline function _forward(args::Tuple)
    @static if _V112
        orig = _ORIGINAL[]
        orig === Core.Compiler.typeinf_ext_toplevel && length(args) == 4 && return _typeinf_112(args...)
    end
    return _ORIGINAL[](args...)
end

@noinline function _record!(args::Tuple)
    _RECORDING[] || return nothing
    tid = Threads.threadid()
    tid <= length(_IN_HOOK) || return nothing
    @inbounds _IN_HOOK[tid] && return nothing # nested inference started by our own recording
    @inbounds _IN_HOOK[tid] = true
    try
        _FAULT[] === :hook && throw(InstrumentationFault("fault injected in the type-inference hook"))
        mi = args[1]
        if mi isa Core.MethodInstance
            lock(_QUEUE_LOCK)
            try
                push!(_QUEUE, mi)
            finally
                unlock(_QUEUE_LOCK)
            end
            Threads.atomic_add!(_HOOK_CALLS, 1)
        end
    catch err
        _hook_error!(err)
    finally
        @inbounds _IN_HOOK[tid] = false
    end
    return nothing
end

# Keeps what the compiler's entry point returned for `mi`: its optimized code
# (1.10/1.11: `typeinf_ext` returns the `CodeInfo` it inferred or decompressed
# from the cache; 1.12: `_typeinf_112` passes each code with its `CodeInstance`
# `ci`, kept with it). Only references are kept; nothing here copies or prints.
@noinline function _record_code!(@nospecialize(mi), @nospecialize(src), @nospecialize(ci = nothing))
    _RECORDING[] || return nothing
    (mi isa Core.MethodInstance && src isa Core.CodeInfo) || return nothing
    def = mi.def
    def isa Method || return nothing
    root = Base.moduleroot(def.module)
    (root === Core || root === Base) && !_KEEP_SYSTEM_CODE[] && return nothing
    tid = Threads.threadid()
    tid <= length(_IN_HOOK) || return nothing
    @inbounds _IN_HOOK[tid] && return nothing
    @inbounds _IN_HOOK[tid] = true
    try
        lock(_QUEUE_LOCK)
        try
            length(_CODES) < _MAX_CODES && (_CODES[mi] = ci === nothing ? src : (ci, src))
        finally
            unlock(_QUEUE_LOCK)
        end
    catch err
        _hook_error!(err)
    finally
        @inbounds _IN_HOOK[tid] = false
    end
    return nothing
end

"The optimized code the compiler returned for `mi` since the last flush, or `nothing`."
function _recorded_code(mi::Core.MethodInstance)
    lock(_QUEUE_LOCK)
    try
        return get(_CODES, mi, nothing)
    finally
        unlock(_QUEUE_LOCK)
    end
end

"Forgets the recorded optimized code (what was not used by now is inferred again if needed)."
function _clear_codes!()
    lock(_QUEUE_LOCK)
    try
        empty!(_CODES)
    finally
        unlock(_QUEUE_LOCK)
    end
    return nothing
end

@noinline function _hook_error!(@nospecialize(err))
    Threads.atomic_add!(_HOOK_ERRORS, 1) == 0 && (_HOOK_FIRST_ERROR[] = err)
    return nothing
end

"""
Takes every queued instance (oldest first) and empties the queue. Recording
is off on this thread meanwhile: should anything here need compiling, the
nested inference must not wait for the (non-reentrant) queue lock we hold.
"""
_drain_queue!() = _without_recording(_drain_locked!)

function _drain_locked!()
    lock(_QUEUE_LOCK)
    try
        out = copy(_QUEUE)
        empty!(_QUEUE)
        return out
    finally
        unlock(_QUEUE_LOCK)
    end
end

"""
    _without_recording(f)

Runs `f()` with recording off on this thread: what our own rendering makes
the compiler infer is not user code (other threads keep recording).
"""
function _without_recording(f)
    tid = Threads.threadid()
    (tid <= length(_IN_HOOK) && !_IN_HOOK[tid]) || return f()
    _IN_HOOK[tid] = true
    timed = _pause_timing!() # issue 19 item 9 (timing.jl): our own inference is not timed
    try
        return f()
    finally
        _resume_timing!(timed)
        _IN_HOOK[tid] = false
    end
end

"Whether our hook is the compiler's type-inference entry point."
hook_installed() = _INSTALLED[]

# `jl_typeinf_world` right after our install (see `_typeinf_world` in compat.jl).
const _OUR_TYPEINF_WORLD = Ref{Any}(nothing)
# The last removal found another tool's entry point installed after ours and left it.
const _LEFT_FOREIGN = Ref(false)

function _install_hook!()
    _INSTALLED[] && return nothing
    orig = _default_typeinf_entry()
    _ORIGINAL[] = orig
    # Compile the whole recording path now: once installed, compiling it would
    # need inference, which would call the hook, which is not compiled yet.
    precompile(_typeinf_hook, _hook_argtypes())
    args = _warmup_args()
    precompile(_record!, (typeof(args),))
    precompile(_record_code!, (Any, Any))
    precompile(_record_code!, (Any, Any, Any))
    calls, errors, first_error = _HOOK_CALLS[], _HOOK_ERRORS[], _HOOK_FIRST_ERROR[]
    keep = _KEEP_SYSTEM_CODE[]
    _KEEP_SYSTEM_CODE[] = true # the warm-up instance is Base's: run the whole path of `_record_code!`
    _RECORDING[] = true
    try
        _typeinf_hook(args...)
        # Test switch: a warm-up that throws after recording (as 1.12's MethodError did).
        _FAULT[] === :warmup && throw(InstrumentationFault("fault injected in the warm-up"))
        _hook_error!(InstrumentationFault("warm-up")) # compiles the error path
    finally
        _RECORDING[] = false
        _KEEP_SYSTEM_CODE[] = keep
        # Undo what the warm-up recorded, also when it threw (nothing is left behind).
        lock(_QUEUE_LOCK)
        try
            !isempty(_QUEUE) && _QUEUE[end] === args[1] && pop!(_QUEUE)
            # (1.12: `_typeinf_112` records all it inferred; nobody else records before the install)
            _V112 ? empty!(_CODES) : delete!(_CODES, args[1])
        finally
            unlock(_QUEUE_LOCK)
        end
        Threads.atomic_sub!(_HOOK_CALLS, _HOOK_CALLS[] - calls)
        Threads.atomic_sub!(_HOOK_ERRORS, _HOOK_ERRORS[] - errors)
        _HOOK_FIRST_ERROR[] = first_error
    end
    try
        _RECORDING[] = true
        _set_typeinf_entry!(_typeinf_hook)
        _INSTALLED[] = true
        _OUR_TYPEINF_WORLD[] = _typeinf_world()
        _note_hook_world!("instrumentation hook installed")
    catch
        _RECORDING[] = false
        _set_typeinf_entry!(orig)
        rethrow()
    end
    return nothing
end

# Labels the world that installing/removing the hook created (only where
# `jl_set_typeinf_func` creates one: not on 1.12, see compat.jl).
function _note_hook_world!(what::String)
    _SET_BUMPS_WORLD && (_HOOK_WORLDS[Base.get_world_counter()] = what)
    return nothing
end

"""
Puts the compiler's original entry point back (idempotent), unless another
tool installed its own entry point after ours (seen through
`jl_typeinf_world`, 1.10+): restoring would silently undo theirs, so it stays,
and ours (if they still forward to it) only forwards without recording.
"""
function _uninstall_hook!()
    _RECORDING[] = false
    _INSTALLED[] || return nothing
    ours = _OUR_TYPEINF_WORLD[]
    _LEFT_FOREIGN[] = false
    if ours !== nothing && _typeinf_world() != ours
        _INSTALLED[] = false
        _LEFT_FOREIGN[] = true
        return nothing
    end
    _set_typeinf_entry!(_ORIGINAL[])
    _INSTALLED[] = false
    _note_hook_world!("instrumentation hook removed")
    return nothing
end
