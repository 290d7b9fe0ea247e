# The ShadowPageGraph: dependencies between pages, propagation rounds, events.

"""
    EdgeId(n)

The identifier of a dependency edge (from [`add_dependency!`](@ref)).
"""
struct EdgeId
    value::UInt64
end
Base.show(io::IO, e::EdgeId) = print(io, "EdgeId(", Int(e.value), ")")

# Edge commands keep the 0-based offsets the C API takes (the fields); they are
# built from 1-based positions by the keyword constructors. `ZeroBased()` marks
# the inner constructors, so that no positional call reaches them by accident.
struct ZeroBased end

"""
    CopyCommand(len; src_at = 1, dst_at = 1)

Edge command: copy `len` bytes of the source page, from its 1-based byte
position `src_at`, to the dependent page at `dst_at` (bytes `dst_at` to
`dst_at + len - 1`). The previous release's `CopyCommand(src_offset,
dst_offset, len)` with 0-based offsets still works, with a deprecation warning.
"""
struct CopyCommand
    src_offset::UInt64
    dst_offset::UInt64
    len::UInt64
    CopyCommand(::ZeroBased, src::UInt64, dst::UInt64, len::UInt64) = new(src, dst, len)
end

"""
    FillCommand(len, value; dst_at = 1)

Edge command: fill `len` bytes of the dependent page from its 1-based byte
position `dst_at` with the byte `value`. The previous release's
`FillCommand(dst_offset, len, value)` (0-based) still works, with a
deprecation warning.
"""
struct FillCommand
    dst_offset::UInt64
    len::UInt64
    value::UInt8
    FillCommand(::ZeroBased, dst::UInt64, len::UInt64, value::UInt8) = new(dst, len, value)
end

"""
    OpCommand(op, lane, len; src_at = 1, dst_at = 1)

Edge command: lane-wise `dst = dst op src` over `len` bytes, from the 1-based
byte positions `src_at` of the source page and `dst_at` of the dependent page;
`op` is one of `:add, :xor, :or, :and, :min, :max` and `lane` one of `UInt8,
UInt32, Float32, Float64` (little-endian; `len` a multiple of the lane size).
The previous release's `OpCommand(op, lane, src_offset, dst_offset, len)`
(0-based) still works, with a deprecation warning.
"""
struct OpCommand
    op::Symbol
    lane::DataType
    src_offset::UInt64
    dst_offset::UInt64
    len::UInt64
    OpCommand(::ZeroBased, op::Symbol, lane::DataType, src::UInt64, dst::UInt64, len::UInt64) =
        new(op, lane, src, dst, len)
end

CopyCommand(len::Integer; src_at::Integer = 1, dst_at::Integer = 1) =
    CopyCommand(ZeroBased(), delta_at(src_at), delta_at(dst_at), u64_arg(len, "len"))
FillCommand(len::Integer, value::Integer; dst_at::Integer = 1) =
    FillCommand(ZeroBased(), delta_at(dst_at), u64_arg(len, "len"), UInt8(value))
OpCommand(op::Symbol, lane::DataType, len::Integer; src_at::Integer = 1, dst_at::Integer = 1) =
    OpCommand(ZeroBased(), op, lane, delta_at(src_at), delta_at(dst_at), u64_arg(len, "len"))

# The previous release's 0-based positional forms: same bytes as before, and a warning.
function CopyCommand(src_offset::Integer, dst_offset::Integer, len::Integer)
    Base.depwarn("`CopyCommand(src_offset, dst_offset, len)` is deprecated: byte positions are 1-based, use " *
                 "`CopyCommand(len; src_at = src_offset + 1, dst_at = dst_offset + 1)`", :CopyCommand)
    return CopyCommand(ZeroBased(), u64_arg(src_offset, "src_offset"), u64_arg(dst_offset, "dst_offset"),
                       u64_arg(len, "len"))
end

function FillCommand(dst_offset::Integer, len::Integer, value::Integer)
    Base.depwarn("`FillCommand(dst_offset, len, value)` is deprecated: byte positions are 1-based, use " *
                 "`FillCommand(len, value; dst_at = dst_offset + 1)`", :FillCommand)
    return FillCommand(ZeroBased(), u64_arg(dst_offset, "dst_offset"), u64_arg(len, "len"), UInt8(value))
end

function OpCommand(op::Symbol, lane::DataType, src_offset::Integer, dst_offset::Integer, len::Integer)
    Base.depwarn("`OpCommand(op, lane, src_offset, dst_offset, len)` is deprecated: byte positions are 1-based, " *
                 "use `OpCommand(op, lane, len; src_at = src_offset + 1, dst_at = dst_offset + 1)`", :OpCommand)
    return OpCommand(ZeroBased(), op, lane, u64_arg(src_offset, "src_offset"), u64_arg(dst_offset, "dst_offset"),
                     u64_arg(len, "len"))
end

# They show as they are written now (1-based keywords), not as their fields.
Base.show(io::IO, c::CopyCommand) =
    print(io, "CopyCommand(", Int(c.len), "; src_at = ", Int(c.src_offset) + 1, ", dst_at = ", Int(c.dst_offset) + 1, ")")
Base.show(io::IO, c::FillCommand) =
    print(io, "FillCommand(", Int(c.len), ", ", repr(c.value), "; dst_at = ", Int(c.dst_offset) + 1, ")")
Base.show(io::IO, c::OpCommand) =
    print(io, "OpCommand(", repr(c.op), ", ", c.lane, ", ", Int(c.len), "; src_at = ", Int(c.src_offset) + 1,
          ", dst_at = ", Int(c.dst_offset) + 1, ")")

const EDGE_KINDS = (data = LibMMSB.MMSB_EDGE_DATA, control = LibMMSB.MMSB_EDGE_CONTROL,
                    gpu_sync = LibMMSB.MMSB_EDGE_GPU_SYNC, compiler = LibMMSB.MMSB_EDGE_COMPILER)
const OPS = (add = LibMMSB.MMSB_OP_ADD, xor = LibMMSB.MMSB_OP_XOR, or = LibMMSB.MMSB_OP_OR,
             and = LibMMSB.MMSB_OP_AND, min = LibMMSB.MMSB_OP_MIN, max = LibMMSB.MMSB_OP_MAX)
const LANES = Dict{DataType,UInt32}(UInt8 => LibMMSB.MMSB_LANE_U8, UInt32 => LibMMSB.MMSB_LANE_U32,
                                    Float32 => LibMMSB.MMSB_LANE_F32, Float64 => LibMMSB.MMSB_LANE_F64)

# --- Julia functions as transforms ------------------------------------------------
# The core calls a C function pointer with a user-data pointer; the pointer is a
# box holding the Julia function, rooted in the state (`MMSBState.roots`) for the
# state's life. The callback runs on the thread that called `propagate!`.

const TRANSFORM_C = Ref{Ptr{Cvoid}}(C_NULL)
const CALLBACK_ERRORS = Dict{Int,Any}()   # thread id => exception of the last failed Julia transform
const CALLBACK_LOCK = Threads.SpinLock()

function transform_trampoline(ud::Ptr{Cvoid}, src::Ptr{UInt8}, srclen::Csize_t, dst::Ptr{UInt8}, dstlen::Csize_t)
    try
        f = (unsafe_pointer_to_objref(ud)::Base.RefValue{Any})[]
        f(unsafe_wrap(Array, src, Int(srclen)), unsafe_wrap(Array, dst, Int(dstlen)))
        return Int32(0)
    catch err
        # Never unwind into the core: report failure, keep the exception for propagate!.
        lock(CALLBACK_LOCK)
        try
            CALLBACK_ERRORS[Threads.threadid()] = err
        finally
            unlock(CALLBACK_LOCK)
        end
        return Int32(1)
    end
end

function init_graph()
    TRANSFORM_C[] = @cfunction(transform_trampoline, Int32, (Ptr{Cvoid}, Ptr{UInt8}, Csize_t, Ptr{UInt8}, Csize_t))
    return nothing
end

push_command!(list, c::CopyCommand, s) =
    check(LibMMSB.mmsb_command_list_push_copy(list, c.src_offset, c.dst_offset, c.len))
push_command!(list, c::FillCommand, s) = check(LibMMSB.mmsb_command_list_push_fill(list, c.dst_offset, c.len, c.value))
function push_command!(list, c::OpCommand, s)
    haskey(OPS, c.op) || throw(ArgumentError("op must be one of $(keys(OPS)), not $(repr(c.op))"))
    haskey(LANES, c.lane) || throw(ArgumentError("lane must be one of $(collect(keys(LANES))), not $(c.lane)"))
    check(LibMMSB.mmsb_command_list_push_op(list, OPS[c.op], LANES[c.lane], c.src_offset, c.dst_offset, c.len))
end
function push_command!(list, f::Function, s)
    box = Base.RefValue{Any}(f)   # a mutable box: `f` itself may be an immutable singleton
    lock(s.lock) do
        push!(s.roots, box)       # keeps the box alive while an edge may call it
    end
    check(LibMMSB.mmsb_command_list_push_callback(list, TRANSFORM_C[], pointer_from_objref(box)))
end
push_command!(list, c, s) = throw(ArgumentError("not an edge command: $(repr(c))"))

"""
    add_dependency!(state, from, to; kind=:data, commands=[]) -> EdgeId

Declares that page `to` depends on page `from`. `kind` is `:data`, `:control`,
`:gpu_sync` or `:compiler`. `commands` say how `to` is recomputed when `from`
changes, in order: [`CopyCommand`](@ref), [`FillCommand`](@ref),
[`OpCommand`](@ref), or a Julia function `f(src, dst)` that reads the source
page's bytes `src` and updates the dependent page's new bytes `dst` in place
(it runs inside [`propagate!`](@ref) on the calling thread and must not call
into the same state; `src` and `dst` wrap native memory and are valid only
during the call, so copy what you keep; an exception fails the round for that
page). Julia functions stay referenced by the state until it is collected, and
edges with them are not restored from the log. Throws an
[`MMSBError`](@ref) named `"cycle"` if the edge would close a cycle.
"""
function add_dependency!(s::MMSBState, from::PageId, to::PageId; kind::Symbol = :data, commands = ())
    haskey(EDGE_KINDS, kind) || throw(ArgumentError("kind must be one of $(keys(EDGE_KINDS)), not $(repr(kind))"))
    out = Ref{Ptr{LibMMSB.MmsbCommandList}}(C_NULL)
    check(LibMMSB.mmsb_command_list_new(out))
    list = out[]
    try
        for c in commands
            push_command!(list, c, s)
        end
        edge = Ref{UInt64}(0)
        scall(LibMMSB.mmsb_add_dependency, s, from.value, to.value, EDGE_KINDS[kind], list, edge)
        return EdgeId(edge[])
    finally
        LibMMSB.mmsb_command_list_free(list)
    end
end

"""
    remove_dependency!(state, edge::EdgeId)

Removes an edge (an [`MMSBError`](@ref) named `"unknown_edge"` if there is none).
"""
remove_dependency!(s::MMSBState, e::EdgeId) = (scall(LibMMSB.mmsb_remove_dependency, s, e.value); nothing)

"""
    propagate!(state, pages) -> NamedTuple

Runs one propagation round from the changed `pages` (a `PageId` or a vector of
them): every dependent page is recomputed by its edges' commands in topological
order, and the changes are routed as deltas. Returns `round`, `recomputed`,
`cutoff` (recomputed pages whose bytes did not change) and `deltas_routed`.
"""
function propagate!(s::MMSBState, pages::AbstractVector{PageId})
    ids = UInt64[p.value for p in pages]
    out = Ref(LibMMSB.MmsbRoundStats())
    st = LibMMSB.mmsb_propagate(enter(s), ids, length(ids), out)
    err = st == LibMMSB.MMSB_OK ? nothing : last_error(st)
    leave(s)
    if err !== nothing
        jl = lock(CALLBACK_LOCK) do
            pop!(CALLBACK_ERRORS, Threads.threadid(), nothing)
        end
        jl === nothing || (err = MMSBError(err.code, err.name, err.message * "; the Julia transform threw: " *
                                                                 sprint(showerror, jl)))
        throw(err)
    end
    r = out[]
    return (round = r.round, recomputed = Int(r.recomputed), cutoff = Int(r.cutoff), deltas_routed = Int(r.deltas_routed))
end
propagate!(s::MMSBState, page::PageId) = propagate!(s, [page])

"""
    dependents(state, page) -> Vector{PageId}

The pages with an edge from `page`, ascending.
"""
dependents(s::MMSBState, page::PageId) =
    page_list((buf, cap, n) -> release(s, LibMMSB.mmsb_dependents(enter(s), page.value, buf, cap, n)))

"""
    topo_order(state) -> Vector{PageId}

Every page of the graph in propagation order (topological: by height, then id).
"""
topo_order(s::MMSBState) = page_list((buf, cap, n) -> release(s, LibMMSB.mmsb_topo_order(enter(s), buf, cap, n)))

# --- events ------------------------------------------------------------------------

const EVENT_KINDS = (delta_applied = LibMMSB.MMSB_EVENT_DELTA_APPLIED,
                     propagation_done = LibMMSB.MMSB_EVENT_PROPAGATION_DONE,
                     checkpoint = LibMMSB.MMSB_EVENT_CHECKPOINT, device_sync = LibMMSB.MMSB_EVENT_DEVICE_SYNC,
                     instrumentation = LibMMSB.MMSB_EVENT_INSTRUMENTATION, budget = LibMMSB.MMSB_EVENT_BUDGET)
const POLICIES = (block = LibMMSB.MMSB_POLICY_BLOCK, drop_oldest = LibMMSB.MMSB_POLICY_DROP_OLDEST,
                  drop_newest = LibMMSB.MMSB_POLICY_DROP_NEWEST)

"""
    Event

One event of a [`Subscription`](@ref). `e.kind` is one of `:delta_applied`,
`:propagation_done`, `:checkpoint`, `:device_sync`, `:instrumentation`,
`:budget`; the other fields depend on it (`propertynames(e)` lists them):
- `:delta_applied`: `page`, `lsn`, `epoch` (the page's epoch after the delta);
- `:propagation_done`: `round`, `recomputed` (pages), `cutoff` (recomputed
  pages whose bytes did not change);
- `:checkpoint`: `lsn` (the checkpoint covers the log up to it);
- `:device_sync`: `page`, `direction` (`:to_device` or `:to_host`);
- `:instrumentation`: `page`, `code` (the hook's own code);
- `:budget`: `metric` (a metric name such as `:delta_route`), `value`, `limit`.

Numbers are `Int`s. It shows as it reads, e.g.
`Event(:delta_applied, page = PageId(1), lsn = 3, epoch = 2)`.
"""
struct Event
    kind::Symbol
    code::UInt32
    page::PageId
    a::UInt64   # the raw payload (see the C header's MmsbEvent); read the named fields instead
    b::UInt64
    c::UInt64
end

const EVENT_FIELDS = (delta_applied = (:page, :lsn, :epoch), propagation_done = (:round, :recomputed, :cutoff),
                      checkpoint = (:lsn,), device_sync = (:page, :direction), instrumentation = (:page, :code),
                      budget = (:metric, :value, :limit))

Base.propertynames(e::Event, private::Bool = false) =
    (:kind, get(EVENT_FIELDS, getfield(e, :kind), (:code, :page))..., (private ? (:a, :b, :c) : ())...)

function Base.getproperty(e::Event, name::Symbol)
    k = getfield(e, :kind)
    fields = get(EVENT_FIELDS, k, ())
    if name in (:kind, :a, :b, :c) || (name in (:code, :page) && !(k in (:device_sync, :budget)))
        return getfield(e, name)
    elseif name in fields
        k === :device_sync && return getfield(e, :code) == 0 ? :to_device : :to_host
        k === :budget && name === :metric && return metric_name(getfield(e, :code))
        # the n-th payload field is the n-th of a, b, c (`page` and `code` have their own)
        i = findfirst(==(name), filter(f -> !(f in (:page, :code, :metric, :direction)), fields))
        return Int(getfield(e, (:a, :b, :c)[i]))
    end
    throw(ArgumentError("an Event of kind $(repr(k)) has no field $(repr(name)); its fields are " *
                        join(propertynames(e), ", ")))
end

function metric_name(code::UInt32)
    names = metric_names()
    return code < length(names) ? names[code + 1] : Symbol("metric_", Int(code))
end

function Base.show(io::IO, e::Event)
    print(io, "Event(", repr(e.kind))
    for f in propertynames(e)
        f === :kind && continue
        print(io, ", ", f, " = ")
        show(io, getproperty(e, f))
    end
    print(io, ")")
end

function event_kind(k::UInt32)
    for (name, bit) in pairs(EVENT_KINDS)
        bit == k && return name
    end
    return :unknown
end

"""
    Subscription

A queue of events of one state (from [`subscribe`](@ref) or [`on`](@ref)). It
behaves like a `Channel{Event}`:
- `for e in sub ... end` takes events as they come and ends when the
  subscription is closed, or finished because its state closed, and drained;
- `take!(sub)` takes the next event, waiting for one; `isready(sub)` says
  whether one is queued; `wait(sub)` waits until one is; both `take!` and
  `wait` throw an [`MMSBError`](@ref) named `"closed"` when no event can come
  any more;
- [`poll_events`](@ref) takes whatever is queued without waiting.

Waiting never blocks other tasks or threads, and does not poll: the events
are queued by the native core, on whichever thread emitted them, and the core
then wakes the subscription's `Base.AsyncCondition` (`uv_async_send`, which a
foreign thread may call without entering Julia), so a waiting task resumes
within microseconds of the event. Only if that wake-up cannot be registered (a
library without `mmsb_subscription_set_notify`) does a waiting task poll
instead, sleeping from 1 ms, doubling up to 20 ms, between polls.

`close(sub)` unsubscribes (idempotent; also done by the finalizer); events
already taken from the native queue can still be taken afterwards. A
subscription stays valid after its state closes and then yields no new events.
"""
mutable struct Subscription
    ptr::Ptr{LibMMSB.MmsbSubscription}
    state::MMSBState
    buffer::Vector{Event}      # taken from the native queue, not yet handed out
    lock::ReentrantLock        # guards `ptr` during a poll and `buffer`
    task::Union{Nothing,Task}  # the task of `on`, if any
    # Woken by the core (uv_async_send) when events are queued or the state closes; `nothing`:
    # waiters poll. Rooted in NOTIFY_ROOTS while the native subscription may call it.
    cond::Union{Nothing,Base.AsyncCondition}
    function Subscription(p::Ptr{LibMMSB.MmsbSubscription}, s::MMSBState)
        return finalizer(free_subscription!, new(p, s, Event[], ReentrantLock(), nothing, nothing))
    end
end

# The conditions the core may still wake. A condition has a finalizer of its own (which
# closes its libuv handle) and the order of two finalizers is not defined: rooting it here
# until the native subscription is freed (which waits out a wake-up in flight) keeps the
# handle alive for as long as the core may call uv_async_send on it.
const NOTIFY_ROOTS = IdDict{Any,Nothing}()
const NOTIFY_LOCK = Threads.SpinLock()
const UV_ASYNC_SEND = Ref{Ptr{Cvoid}}(C_NULL)

function init_notify()
    UV_ASYNC_SEND[] = try
        cglobal(:uv_async_send)
    catch
        C_NULL   # not found in this Julia: subscriptions poll
    end
    return nothing
end

# Registers the subscription's condition as its native wake-up; on any failure the
# subscription keeps `cond === nothing` and its waiters poll.
function attach_notify!(sub::Subscription)
    UV_ASYNC_SEND[] == C_NULL && return sub
    cond = rooted_notify_condition()
    st = try
        LibMMSB.mmsb_subscription_set_notify(sub, UV_ASYNC_SEND[], cond.handle)
    catch   # a library without the function: a missing symbol
        LibMMSB.MMSB_STATUS_CODE_INVALID_ARGUMENT
    end
    if st == LibMMSB.MMSB_OK
        sub.cond = cond
    else
        unroot_notify(cond)
        close(cond)
    end
    return sub
end

# A new condition whose handle native code may signal (with `uv_async_send`): rooted in
# NOTIFY_ROOTS until `unroot_notify`, so it is not collected while a wake-up can still come.
function rooted_notify_condition()
    cond = Base.AsyncCondition()
    lock(NOTIFY_LOCK)
    try
        NOTIFY_ROOTS[cond] = nothing
    finally
        unlock(NOTIFY_LOCK)
    end
    return cond
end

# From a finalizer too, so a busy lock is not waited for: the caller retries later.
function unroot_notify(cond)
    trylock(NOTIFY_LOCK) || return false
    try
        delete!(NOTIFY_ROOTS, cond)
    finally
        unlock(NOTIFY_LOCK)
    end
    return true
end

# Finalizer (and close, under sub.lock): freeing the native subscription first means no
# wake-up is in flight or will come, then the condition may go. A finalizer must not wait
# for a lock: if NOTIFY_LOCK is busy, it is registered again to retry at a later collection.
function free_subscription!(sub::Subscription)
    free_handle!(LibMMSB.mmsb_subscription_free, sub)
    cond = sub.cond
    if cond !== nothing
        if unroot_notify(cond)
            sub.cond = nothing
        else
            finalizer(free_subscription!, sub)
        end
    end
    return nothing
end

function Base.unsafe_convert(::Type{Ptr{LibMMSB.MmsbSubscription}}, sub::Subscription)
    p = sub.ptr
    p == C_NULL && throw(closed_error("subscription"))
    return p
end

"""
    subscribe(state; events=:all, capacity=1024, policy=:drop_oldest, block_timeout_ns=1_000_000) -> Subscription

Subscribes to events: `events` is `:all` or a collection of kinds (see
[`Event`](@ref)); `capacity` events are queued (1 to 1048576); when the queue is
full, `policy` `:drop_oldest` discards the oldest, `:drop_newest` the new one,
and `:block` makes the emitter wait up to `block_timeout_ns` first. See
[`Subscription`](@ref) for reading it, and [`on`](@ref) for a handler task.
"""
function subscribe(s::MMSBState; events = :all, capacity::Integer = 1024, policy::Symbol = :drop_oldest,
                   block_timeout_ns::Integer = 1_000_000)
    mask = events === :all ? LibMMSB.MMSB_EVENT_ALL : UInt32(0)
    if events !== :all
        for k in events
            haskey(EVENT_KINDS, k) || throw(ArgumentError("event kinds are $(keys(EVENT_KINDS)), not $(repr(k))"))
            mask |= EVENT_KINDS[k]
        end
    end
    haskey(POLICIES, policy) || throw(ArgumentError("policy must be one of $(keys(POLICIES)), not $(repr(policy))"))
    out = Ref{Ptr{LibMMSB.MmsbSubscription}}(C_NULL)
    scall(LibMMSB.mmsb_subscribe, s, u64_arg(capacity, "capacity"), POLICIES[policy],
                                 u64_arg(block_timeout_ns, "block_timeout_ns"), mask, out)
    return attach_notify!(Subscription(out[], s))
end

# Up to `max` events from the native queue (the caller holds `sub.lock`).
function poll_native(sub::Subscription, max::Integer)
    buf = Vector{LibMMSB.MmsbEvent}(undef, max)
    n = Ref{Csize_t}(0)
    check(LibMMSB.mmsb_poll_events(sub, buf, length(buf), n))
    return [Event(event_kind(e.kind), e.code, PageId(e.page), e.a, e.b, e.c) for e in view(buf, 1:Int(n[]))]
end

"""
    poll_events(sub; max=1024) -> Vector{Event}

Takes up to `max` queued events without waiting (empty when none are queued).
Throws an [`MMSBError`](@ref) named `"closed"` after `close(sub)`.
"""
function poll_events(sub::Subscription; max::Integer = 1024)
    max >= 1 || throw(ArgumentError("max must be at least 1, got $max"))
    lock(sub.lock) do
        sub.ptr == C_NULL && throw(closed_error("subscription"))
        out = splice!(sub.buffer, 1:min(max, length(sub.buffer)))
        length(out) < max && append!(out, poll_native(sub, max - length(out)))
        return out
    end
end

# Whether an event is buffered, polling the native queue when none is.
function fill_buffer!(sub::Subscription)
    lock(sub.lock) do
        isempty(sub.buffer) || return true
        sub.ptr == C_NULL && return false
        append!(sub.buffer, poll_native(sub, 1024))
        return !isempty(sub.buffer)
    end
end

"""
    isready(sub::Subscription) -> Bool

Whether an event can be taken without waiting.
"""
Base.isready(sub::Subscription) = fill_buffer!(sub)

const WAIT_MIN_S = 0.001
const WAIT_MAX_S = 0.02

# Waits until an event is buffered (true) or none can come any more (false).
function wait_event(sub::Subscription)
    delay = WAIT_MIN_S
    while true
        # Read "finished" before polling: an event queued before the state closed is still found.
        cond = sub.cond
        finished = !isopen(sub)
        fill_buffer!(sub) && return true
        finished && return false
        if cond === nothing
            sleep(delay)
            delay = min(2delay, WAIT_MAX_S)
        else
            # A wake-up sent since the poll above is remembered by the condition, so none is
            # lost; close(sub) closes it, which ends the wait with an EOFError.
            try
                wait(cond)
            catch err
                err isa EOFError || rethrow()
            end
        end
    end
end

# Takes a buffered event; if more are buffered, passes the wake-up on to the next waiter
# (a wake-up wakes the waiters once, and the first one may have taken them all from the queue).
function take_buffered!(sub::Subscription)
    lock(sub.lock) do
        isempty(sub.buffer) && return nothing
        e = popfirst!(sub.buffer)
        cond = sub.cond
        if !isempty(sub.buffer) && cond !== nothing && sub.ptr != C_NULL   # not closed, so neither is `cond`
            ccall(UV_ASYNC_SEND[], Cint, (Ptr{Cvoid},), cond.handle)
        end
        return e
    end
end

"""
    wait(sub::Subscription)

Waits until an event is queued, letting other tasks run meanwhile. Throws an
[`MMSBError`](@ref) named `"closed"` when the subscription is closed, or
finished and drained.
"""
Base.wait(sub::Subscription) = (wait_event(sub) || throw(closed_error("subscription")); nothing)

"""
    take!(sub::Subscription) -> Event

Takes the next event, waiting for one (see [`wait`](@ref)).
"""
function Base.take!(sub::Subscription)
    while true
        wait(sub)
        e = take_buffered!(sub)
        e === nothing || return e   # another task took it first: wait again
    end
end

Base.IteratorSize(::Type{Subscription}) = Base.SizeUnknown()
Base.eltype(::Type{Subscription}) = Event

function Base.iterate(sub::Subscription, _ = nothing)
    while wait_event(sub)
        e = take_buffered!(sub)
        e === nothing || return (e, nothing)
    end
    return nothing
end

"""
    on(f, state, kinds...; capacity=1024, policy=:drop_oldest) -> Subscription
    on(f, sub::Subscription) -> Subscription

Runs `f(event)` on a task (`@async`) for every event of `state` of the given
kinds (all kinds when none are given; see [`Event`](@ref)), in order, until
the returned subscription is closed (`close(sub)`) or its state closes. If `f`
throws, the error is logged, the subscription is closed and the task
(`sub.task`) fails with it.

    sub = on(state, :delta_applied) do e
        println("page ", e.page, " now at epoch ", e.epoch)
    end
    ...
    close(sub)
"""
function on(f, s::MMSBState, kinds::Symbol...; kw...)
    return on(f, subscribe(s; events = isempty(kinds) ? :all : kinds, kw...))
end

function on(f, sub::Subscription)
    sub.task === nothing || throw(ArgumentError("the subscription already has a handler (on was called for it before)"))
    sub.task = @async try
        for e in sub
            f(e)
        end
    catch err
        @error "MMSB.on: the event handler threw; its subscription is closed" exception = (err, catch_backtrace())
        close(sub)
        rethrow()
    end
    return sub
end

"""
    events_dropped(sub) -> Int

How many events the subscription's overflow policy dropped so far.
"""
function events_dropped(sub::Subscription)
    out = Ref{UInt64}(0)
    lock(() -> check(LibMMSB.mmsb_subscription_dropped(sub, out)), sub.lock)
    return Int(out[])
end

"""
    is_lagged(sub) -> Bool

Whether the subscription lost events (policies `:block` and `:drop_newest`).
"""
function is_lagged(sub::Subscription)
    out = Ref{UInt8}(0)
    lock(() -> check(LibMMSB.mmsb_subscription_lagged(sub, out)), sub.lock)
    return out[] == 1
end

"""
    isopen(sub::Subscription) -> Bool

Whether the subscription is neither closed nor finished (its state closed).
"""
function Base.isopen(sub::Subscription)
    lock(sub.lock) do
        sub.ptr == C_NULL && return false
        out = Ref{UInt8}(0)
        check(LibMMSB.mmsb_subscription_closed(sub, out))
        return out[] == 0
    end
end

"""
    close(sub::Subscription)

Unsubscribes and frees the handle (idempotent). A task waiting on or iterating
the subscription (as the one of [`on`](@ref)) ends, after the events it had
already taken.
"""
function Base.close(sub::Subscription)
    cond = lock(sub.lock) do
        c = sub.cond
        free_subscription!(sub)
        return c
    end
    cond === nothing || close(cond)   # wakes the waiting tasks (they then see it closed)
    return nothing
end

function Base.show(io::IO, sub::Subscription)
    print(io, "Subscription(", isopen(sub) ? "open" : "closed")
    n = length(sub.buffer)
    n == 0 || print(io, ", ", n, n == 1 ? " event" : " events", " taken from the queue")
    print(io, ")")
end
