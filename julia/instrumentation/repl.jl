# REPL integration: every command renders what the previous ones compiled.
#
# As Revise does, the AST transform puts a call of its own as a separate
# top-level statement *before* the command: `Expr(:toplevel, flush, ex)`. The
# command itself is evaluated exactly as typed (definitions, `using`, `struct`,
# macros, the value the REPL prints and stores in `ans`), and none of MMSB's
# frames is on the stack while it runs, so an error's stack trace shows the
# user's frames only (the REPL cuts the trace at its own `eval`). On 1.12 the
# REPL looks for `using X` of a missing package in each top-level statement
# (stdlib/REPL/src/REPL.jl:304-307), so it still sees the command's.
#
# The flush therefore runs when the next command starts: a query typed at the
# prompt always sees what earlier commands compiled. `disable_instrumentation`
# and exit flush the last command's share.

"Flushes instrumentation at the start of a REPL command (never throws)."
function _repl_flush()
    try
        Base.invokelatest(_flush_all)
    catch err
        # A flush error must never break the REPL; flush already counts its own errors.
        for m in _active_managers()
            _note_error!(m, err, "REPL flush")
        end
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
