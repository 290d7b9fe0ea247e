# REPL integration: what each command compiled is rendered when the REPL is idle.
#
# As Revise does, the AST transform puts a call of its own as a separate
# top-level statement *before* the command: `Expr(:toplevel, prefix, ex)`. The
# command itself is evaluated exactly as typed (definitions, `using`, `struct`,
# macros, the value the REPL prints and stores in `ans`), and none of MMSB's
# frames is on the stack while it runs, so an error's stack trace shows the
# user's frames only (the REPL cuts the trace at its own `eval`). On 1.12 the
# REPL looks for `using X` of a missing package in each top-level statement
# (stdlib/REPL/src/REPL.jl:304-307), so it still sees the command's.
#
# The flush (rendering to pages) is the expensive part of capture: the first
# one compiles our renderer and Base's IR printer (seconds on 1.5, which keeps
# no native code from precompilation). Only the hook's recording must happen
# at compile time, so the prefix does not flush: it makes a flush *owed* and
# leaves it to a task that runs once the REPL backend has been idle (no
# command evaluating) for `_IDLE_QUIET` polls, i.e. after the command's result
# and the next prompt are printed. Results are never stale, because:
# - every query (`ir_pages`, `instrumentation_status`, ... anything reaching
#   `instrumentation_manager`), `flush_instrumentation` and `disable` first
#   runs an owed flush synchronously (`_flush_owed!`);
# - a command typed before the idle flush started runs it first, in its
#   prefix (the behaviour before deferral); one typed while it runs waits for it.
# Without a REPL backend (a script calling the transform), the prefix flushes
# synchronously as before.

const _IDLE_PENDING = Ref(false)                 # a flush is owed (by the idle task)
const _IDLE_TASK = Ref{Union{Task,Nothing}}(nothing)
const _IDLE_DEFER = Ref{Union{Nothing,Bool}}(nothing) # nothing: defer iff a REPL backend runs (tests and the bench force it)
const _IDLE_POLL = 0.05                          # seconds between checks of the backend
const _IDLE_QUIET = 3                            # idle checks in a row before flushing
const _IDLE_FLUSHES = Threads.Atomic{Int}(0)     # flushes the idle task ran (tests, bench)
const _IDLE_RUNNING = Ref(false)                 # the idle task is inside a flush
const _IDLE_LOCK = ReentrantLock()               # held by the idle task during its flush

"Flushes instrumentation at the start of a REPL command, or defers it to idle time (never throws)."
function _repl_flush(defer::Bool = something(_IDLE_DEFER[], _repl_backend_active()))
    try
        if !defer
            _IDLE_PENDING[] = false
            Base.invokelatest(_flush_all)
            return nothing
        end
        # Owed since an earlier command and the REPL was never idle long enough:
        # flush now, before this command compiles anything (a running idle flush
        # that yielded is waited for).
        _flush_owed!()
        _IDLE_PENDING[] = true
        t = _IDLE_TASK[]
        (t === nothing || istaskdone(t)) && (_IDLE_TASK[] = @async _idle_flush_task())
    catch err
        _repl_flush_error(err)
    end
    return nothing
end

# A flush error must never break the REPL; flush already counts its own errors.
function _repl_flush_error(@nospecialize(err))
    for m in _active_managers()
        _note_error!(m, err, "REPL flush")
    end
    return nothing
end

# Waits (polling: the REPL has no "idle" event) until the backend evaluated
# nothing for `_IDLE_QUIET` checks in a row, then runs the owed flush, if a
# query or a command did not run it meanwhile. The task lives while flushes
# keep being owed.
function _idle_flush_task()
    quiet = 0
    while _IDLE_PENDING[]
        sleep(_IDLE_POLL)
        quiet = _repl_backend_busy() ? 0 : quiet + 1
        quiet < _IDLE_QUIET && continue
        if _IDLE_PENDING[]
            _IDLE_PENDING[] = false
            lock(_IDLE_LOCK)
            _IDLE_RUNNING[] = true
            try
                Base.invokelatest(_flush_all)
                Threads.atomic_add!(_IDLE_FLUSHES, 1)
            catch err
                _repl_flush_error(err)
            finally
                _IDLE_RUNNING[] = false
                unlock(_IDLE_LOCK)
            end
        end
        quiet = 0
    end
    return nothing
end

"""
Runs an owed idle flush now (queries call it first, so they never see stale
pages); a flush the idle task is running is waited for. Cheap when nothing is owed.
"""
function _flush_owed!()
    if _IDLE_PENDING[]
        _IDLE_PENDING[] = false
        Base.invokelatest(_flush_all)
    else
        # The idle task is inside a flush (it yielded): wait for that flush,
        # not for the task (which lives on while flushes are owed).
        _IDLE_RUNNING[] && (lock(_IDLE_LOCK); unlock(_IDLE_LOCK))
    end
    return nothing
end

"The AST transform installed into the REPL backend."
function _repl_transform(@nospecialize(ex))
    isempty(_active_managers()) && return ex
    return Expr(:toplevel, Expr(:call, _repl_flush), ex)
end

# Add the transform to the running backend (if any) and to the list a backend
# started later picks up (e.g. `using MMSB` in startup.jl).
function _repl_attach!()
    for list in (_repl_backend_transforms(), _repl_default_transforms())
        list === nothing && continue
        any(x -> x === _repl_transform, list) || push!(list, _repl_transform)
    end
    return nothing
end

function _repl_detach!()
    for list in (_repl_backend_transforms(), _repl_default_transforms())
        list === nothing && continue
        filter!(x -> x !== _repl_transform, list)
    end
    return nothing
end

"Whether the REPL transform is installed in the running REPL backend."
function repl_attached()
    list = _repl_backend_transforms()
    return list !== nothing && any(x -> x === _repl_transform, list)
end
