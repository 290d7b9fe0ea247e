# What SnoopCompile and Cthulhu users would miss (issue 19, items 9–13),
# stored in pages of the state so that it reads the same after a reopen, in a
# reader, or replayed to an earlier LSN:
#
#   tools.jl          the per-state side table, the directory page, text logs
#                     kept in IR text chains, and the hooks called from
#                     manager.jl and capture.jl (marked "issue 19 items 9–13")
#   index.jl          the instance index (signatures, pages, caller edges):
#                     precompile_statements, ir_callers
#   timing.jl         inference timing trees: inference_timings, slowest_inferences
#   invalidations.jl  invalidation trees: invalidation_trees
#   locations.jl      line tables per statement: ir_locations, statement_location
#
# Directory page, one per state, named "instrumentation/tools", 64 bytes:
#   bytes 0..7    magic "MMSBTOOL" (a reader, which has no page names, finds it by this)
#   bytes 8..15   layout version, 1 (UInt64 LE)
#   bytes 16..23  head page of the index text (0: none yet)
#   bytes 24..31  head page of the timing log (0: none)
#   bytes 32..39  head page of the invalidation log (0: none)
#   the rest      zeros
# Each text uses the IR text chain layout (layout.jl); `ir_text` reads it.

const TOOLS_MAGIC = codeunits("MMSBTOOL")
const TOOLS_PAGE_SIZE = 64
const TOOLS_VERSION = UInt64(1)
const TOOLS_SLOTS = (index = 16, timing = 24, invalidations = 32)

"One text kept in an IR text chain whose head id never changes (an index, or a log that only grows)."
mutable struct ToolText
    head::PageId
    pages::Vector{Tuple{PageId,Int}}  # (id, size) in chain order, head first
    text::String
end

"What issue 19's tools keep for one state beside its `InstrumentationManager`."
mutable struct ToolsState
    timing::Bool
    invalidations::Bool
    locations::Bool
    dir::Union{Nothing,PageId}
    texts::Dict{Symbol,ToolText}
    order::Vector{Any}                 # specTypes of the instances, in first-seen order
    precompile::IdDict{Any,String}     # specTypes => "precompile(...)" or ""
    spec_text::IdDict{Any,String}      # specTypes => printed signature
    lines::IdDict{Any,Tuple{Any,UInt,ToolText}}  # specTypes => (mi, world, line table text)
    inval_seen::Int                    # entries of the runtime's invalidation list already read
    inval_log::Any                     # that list (1.6+), while logging
    inval_lost::Bool                   # 1.5: the printed log was cut off (reported once)
    flush::Int
end

const _TOOLS = IdDict{InstrumentationManager,ToolsState}()
const _TOOLS_LOCK = ReentrantLock()

_tools(m::InstrumentationManager) = lock(() -> get(_TOOLS, m, nothing), _TOOLS_LOCK)

# --- hooks called from enable_instrumentation / disable_instrumentation ---------

"""
Throws [`InstrumentationUnsupported`](@ref) when the running Julia lacks what
`timing`, `invalidations` or `locations` need (called by
`enable_instrumentation` before anything is created or installed).
"""
function _tools_check(timing::Bool, invalidations::Bool, locations::Bool)
    missing = _tools_missing(timing, invalidations, locations)
    isempty(missing) || throw(InstrumentationUnsupported(VERSION, missing))
    return nothing
end

"Sets the options of `m` and creates its directory page (first time); turns the process-wide logging on as needed. Returns `m`."
function _tools_enable!(m::InstrumentationManager, timing::Bool, invalidations::Bool, locations::Bool)
    t = lock(_TOOLS_LOCK) do
        get!(_TOOLS, m) do
            ToolsState(false, false, false, nothing, Dict{Symbol,ToolText}(), Any[], IdDict{Any,String}(),
                       IdDict{Any,String}(), IdDict{Any,Tuple{Any,UInt,ToolText}}(), 0, nothing, false, 0)
        end
    end
    lock(m.lock) do
        t.timing, t.invalidations, t.locations = timing, invalidations, locations
        if t.dir === nothing
            page = create_page(m.state, TOOLS_PAGE_SIZE; name = "instrumentation/tools")
            buf = zeros(UInt8, TOOLS_PAGE_SIZE)
            copyto!(buf, 1, TOOLS_MAGIC, 1, 8)
            put_u64!(buf, 8, TOOLS_VERSION)
            update_page!(m.state, page, buf)
            t.dir = page
        end
    end
    _tools_switches!()
    return m
end

"After `disable_instrumentation` (its last flush has run): the process-wide logging stays on only for states that still want it."
_tools_disable!(m::InstrumentationManager) = (_tools_switches!(); nothing)

# Process-wide logging, on while an enabled state asks for it: set by enable
# and disable (a state closed while enabled keeps it on until the next of them).
const _MEASURING = Ref(false)   # Core.Compiler.Timings on (1.10, 1.11)
const _INVAL_LOG = Ref{Any}(nothing)

function _tools_switches!()
    want_timing = want_inval = false
    for m in _active_managers()
        t = _tools(m)
        t === nothing && continue
        want_timing |= t.timing
        want_inval |= t.invalidations
    end
    _set_timing!(want_timing)
    if want_inval && _INVAL_LOG[] === nothing
        _INVAL_LOG[] = _start_invalidation_log!()
    elseif !want_inval && _INVAL_LOG[] !== nothing
        log = _INVAL_LOG[]
        _INVAL_LOG[] = nothing
        _stop_invalidation_log!(log)
    end
    return nothing
end

# --- hook called at the end of every flush and reanalyze! (manager lock held) ----

"""
    _tools_sync!(m)

Writes what the tools keep for `m` into its pages: the timing and
invalidation logs gathered since the last call, the line tables of instances
rendered since, and the index (signatures, pages, caller edges). Errors are
counted like any capture error; they never reach the user's code.
"""
function _tools_sync!(m::InstrumentationManager)
    t = _tools(m)
    (t === nothing || t.dir === nothing || !isopen(m.state)) && return nothing
    t.flush += 1
    world = Base.get_world_counter()
    for (what, f) in (("inference timing", _sync_timing!), ("invalidation log", _sync_invalidations!),
                      ("line tables", _sync_locations!), ("instance index", _sync_index!))
        try
            f(m, t, world)
        catch err
            _note_error!(m, err, what)
        end
    end
    # (No `_tools_switches!` here: it takes the registry lock, which is taken before a manager's lock.)
    return nothing
end

# --- text chains (own writer: these are not IR texts, and count in no IR statistic) ---

# Continuation pages of a growing log get room to grow into: fewer pages, fewer header rewrites.
_tool_page_size(n::Int) = max(ir_page_size(n), min(1 << 16, nextpow(2, max(4096, 2n))))

function _new_text!(state::MMSBState, name::String, text::String)
    size = _tool_page_size(sizeof(text))
    page = create_page(state, size; name = name)
    try
        update_page!(state, page, encode_ir(text))
    catch
        free_page!(state, page)
        rethrow()
    end
    return ToolText(page, [(page, size)], text)
end

"""
Writes `text` into the chain as deltas: only the pages whose bytes change; a
text that outgrows the chain gets a continuation page (written before the
page before it points to it), one that shrinks frees the pages it no longer
needs (after the page before them stops pointing to them). The head keeps its id.
"""
function _write_text!(state::MMSBState, tt::ToolText, text::String, name::String)
    text == tt.text && return false
    new, old = codeunits(text), codeunits(tt.text)
    pages = copy(tt.pages)
    nold = length(pages)
    oldr, _ = _chunk_ranges(length(old), map(last, pages))
    newr, placed = _chunk_ranges(length(new), map(last, pages))
    if placed < length(new)
        size = _tool_page_size(length(new) - placed)
        page = create_page(state, size; name = name)
        update_page!(state, page, encode_ir(view(new, placed+1:length(new))))
        push!(pages, (page, size)); push!(newr, placed+1:length(new))
    end
    used = something(findlast(r -> !isempty(r), newr), 1)
    for i in min(used, nold):-1:1
        next = i < used ? pages[i + 1][1].value : UInt64(0)
        oldnext = i < nold ? pages[i + 1][1].value : UInt64(0)
        oldchunk = i <= length(oldr) ? view(old, oldr[i]) : view(old, 1:0)
        if next != oldnext || view(new, newr[i]) != oldchunk
            update_page!(state, pages[i][1], encode_ir(view(new, newr[i]), next, length(oldchunk)))
        end
    end
    for i in length(pages):-1:(used + 1)
        free_page!(state, pages[i][1])
    end
    resize!(pages, used)
    tt.pages = pages
    tt.text = text
    return true
end

"Writes the text `key` of the directory (creating its chain and pointing the directory at it the first time)."
function _put_text!(m::InstrumentationManager, t::ToolsState, key::Symbol, text::String)
    name = string("instrumentation/", key)
    tt = get(t.texts, key, nothing)
    if tt === nothing
        isempty(text) && return nothing
        tt = _new_text!(m.state, name, text)
        t.texts[key] = tt
        buf = read_page(m.state, t.dir)
        put_u64!(buf, getfield(TOOLS_SLOTS, key), tt.head.value)
        update_page!(m.state, t.dir, buf)
    else
        _write_text!(m.state, tt, text, name)
    end
    return nothing
end

"Appends `text` to the log `key` (timing, invalidations)."
_append_text!(m, t, key::Symbol, text::String) =
    isempty(text) || _put_text!(m, t, key, string(haskey(t.texts, key) ? t.texts[key].text : "", text))

# --- reading, from a live or replayed state or from a reader -------------------


_size_of(s::MMSBState, p::PageId) = page_info(s, p).size
function _size_of(r::MMSBReader, p::PageId)
    size = Ref{UInt64}(0)
    rcall(x -> LibMMSB.mmsb_reader_page_size(x, p.value, size), r)
    return Int(size[])
end

"""
The directory page of `src` (found by its magic bytes: a reader has no page
names), or `nothing` when the tools never wrote one there.
"""
function _find_directory(src::PageSource)
    if src isa MMSBState
        m = instrumentation_manager(src)
        if m !== nothing
            t = _tools(m)
            t === nothing || t.dir === nothing || return t.dir
        end
    end
    for p in sort!(page_ids(src); by = p -> p.value)
        _size_of(src, p) == TOOLS_PAGE_SIZE || continue
        b = read_page(src, p)
        view(b, 1:8) == TOOLS_MAGIC && return p
    end
    return nothing
end

"The text `key` of the directory of `src` (\"\" when none was written)."
function _read_text(src::PageSource, key::Symbol)
    dir = _find_directory(src)
    dir === nothing && return ""
    b = read_page(src, dir)
    v = get_u64(b, 8)
    v == TOOLS_VERSION || error("instrumentation directory page $(dir.value) has layout version $v, this MMSB reads $TOOLS_VERSION")
    head = get_u64(b, getfield(TOOLS_SLOTS, key))
    head == 0 && return ""
    return ir_text(src, PageId(head))
end

# Fields of one line of a stored text; tabs and newlines never occur inside a field.
_fields(line::AbstractString) = split(line, '\t')
_clean(s::AbstractString) = replace(replace(s, '\t' => ' '), '\n' => ' ')

"A label for any instance the compiler met (a top-level thunk has no method)."
function _any_label(mi::Core.MethodInstance)
    def = mi.def
    def isa Method && return _instance_label(mi)
    return string("top-level thunk in ", def)
end

"Bytes of the pages the tools hold for `state` (directory, index, logs, line tables; sizes as created), for the benchmark."
function _tools_page_bytes(state::MMSBState)
    m = instrumentation_manager(state)
    t = m === nothing ? nothing : _tools(m)
    t === nothing && return 0
    n = t.dir === nothing ? 0 : TOOLS_PAGE_SIZE
    for tt in values(t.texts), (_, size) in tt.pages
        n += size
    end
    for (_, _, tt) in values(t.lines), (_, size) in tt.pages
        n += size
    end
    return n
end
