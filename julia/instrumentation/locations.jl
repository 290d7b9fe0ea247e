# Source locations per statement (issue 19, item 11): the line tables of the
# typed and optimized code, beside their texts (which have none: they are
# printed with `debuginfo = :none`). One text per instance, named
# `ir/lines/<label>`, its page in the index (`lines`):
#
#   typed <statements>
#   <k> [<file> <line> <function>]...
#   optimized <statements>
#   <k> [<file> <line> <function>]...
#
# one line per statement k (1-based, the statement numbering of the texts),
# its frames innermost first: where the statement's code is written, then the
# functions it was inlined into, the last being the line in the method itself
# (a statement with no location has no frame). The same as what
# `code_typed(f, types; optimize = false/true, debuginfo = :source)` holds.
# Computed by a second inference with the line information kept, so on only
# with `enable_instrumentation(state; locations = true)` (1.5 – 1.11 read
# `codelocs`/`linetable`; 1.12 decodes its compressed `debuginfo` with Julia's
# own printer, see `_debuginfo_frames` in compat.jl, untested).

function _lines_text(typed::Core.CodeInfo, opt::Core.CodeInfo)
    io = IOBuffer()
    for (kind, code) in (("typed", typed), ("optimized", opt))
        n = length(code.code)
        println(io, kind, '\t', n)
        for k in 1:n
            print(io, k)
            for (file, line, func) in _statement_frames(code, k)
                print(io, '\t', _clean(file), '\t', line, '\t', _clean(func))
            end
            print(io, '\n')
        end
    end
    return String(take!(io))
end

function _sync_locations!(m::InstrumentationManager, t::ToolsState, world::UInt)
    t.locations || return nothing
    for (spec, e) in m.instances
        old = get(t.lines, spec, nothing)
        (old !== nothing && old[1] === e.mi && old[2] == e.world) && continue
        text = try
            typed, opt = _infer_ir_lines(e.mi, e.world)
            _lines_text(typed, opt)
        catch err
            _note_error!(m, err, string("line table of ", e.label))
            continue
        end
        name = _page_name(:lines, e.label)
        if old === nothing
            t.lines[spec] = (e.mi, e.world, _new_text!(m.state, name, text))
        else
            _write_text!(m.state, old[3], text, name)
            t.lines[spec] = (e.mi, e.world, old[3])
        end
    end
    return nothing
end

"One frame of a statement's location: `file`, `line`, `func` (the function whose code it is)."
struct LineFrame
    file::String
    line::Int
    func::String
end
Base.show(io::IO, f::LineFrame) = print(io, f.file, ":", f.line, " (", f.func, ")")

"""
    ir_locations(src, f, types; optimized = true) -> Vector{Vector{LineFrame}}

The line table of the captured instance of `f(::types...)` as stored in `src`
(a live, reopened or replayed state, or a reader): for each statement `k` of
its optimized (or typed) text, its frames innermost first (where the code is
written; the last is the line in the method itself, those before it the
functions inlined there; empty when the statement has no location). Equal to
what `code_typed(f, types; debuginfo = :source)` holds. Needs
`enable_instrumentation(state; locations = true)`; throws an `ArgumentError`
when no line table was stored for the instance.
"""
function ir_locations(src::PageSource, @nospecialize(f), @nospecialize(types); optimized::Bool = true)
    insts = instance_index(src).instances
    e = _index_entry(src, insts, f, types)
    e.lines.value == 0 && throw(ArgumentError("no line table stored for $(e.label) (enable_instrumentation(state; locations = true))"))
    return _parse_lines(ir_text(src, e.lines), optimized ? "optimized" : "typed")
end
ir_locations(@nospecialize(f), @nospecialize(types); kw...) = ir_locations(default_instrumentation_state(), f, types; kw...)

function _parse_lines(text::AbstractString, want::String)
    out = Vector{LineFrame}[]
    section = ""
    for line in split(text, '\n'; keepempty = false)
        fs = _fields(line)
        if fs[1] in ("typed", "optimized")
            section = fs[1]
            continue
        end
        section == want || continue
        k = parse(Int, fs[1])
        k == length(out) + 1 && (length(fs) - 1) % 3 == 0 || error("malformed line table line: $(repr(line))")
        push!(out, [LineFrame(fs[i], parse(Int, fs[i + 1]), fs[i + 2]) for i in 2:3:length(fs)])
    end
    return out
end

"""
    statement_location(src, f, types, k; optimized = true) -> Union{String,Nothing}

`"file:line"` of statement `k` of the stored optimized (or typed) text of
`f(::types...)`: the innermost frame of [`ir_locations`](@ref) (where the
statement's code is written), or `nothing` when it has no location.
"""
function statement_location(src::PageSource, @nospecialize(f), @nospecialize(types), k::Integer; optimized::Bool = true)
    locs = ir_locations(src, f, types; optimized = optimized)
    1 <= k <= length(locs) || throw(BoundsError(locs, k))
    isempty(locs[k]) && return nothing
    fr = locs[k][1]
    return string(fr.file, ":", fr.line)
end
