# REPL integration: flush after every command.
#
# An AST transform rewrites each command `ex` into a call that evaluates `ex`
# (with `Core.eval`, in the REPL's module, so definitions, `using`, `struct`
# and macros behave as typed) and flushes afterwards, also when `ex` throws.
# The call returns the command's value, so the REPL prints and stores `ans` as
# usual. Appending a statement instead would change the printed value, and
# wrapping `ex` in `try` would reject `struct`/`module` (not at top level).

"Evaluates one REPL command, then flushes instrumentation (never throws for the flush)."
function _repl_eval(mod::Module, @nospecialize(ex))
    try
        return Core.eval(mod, ex)
    finally
        _after_command()
    end
end

function _after_command()
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
    return Expr(:call, _repl_eval, _repl_module(), QuoteNode(ex))
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
