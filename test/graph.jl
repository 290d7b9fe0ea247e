# The dependency graph: edges, commands, Julia transforms, propagation, events.

mmsb_start() do s
    src = create_page(s, 16; name = "src")
    mid = create_page(s, 16; name = "mid")
    dst = create_page(s, 16; name = "dst")
    sub = subscribe(s; events = [:delta_applied, :propagation_done], capacity = 64)
    @test isopen(sub)

    e1 = add_dependency!(s, src, mid; commands = [CopyCommand(4), FillCommand(2, 0xee; dst_at = 9)])
    e2 = add_dependency!(s, mid, dst; commands = [OpCommand(:add, UInt8, 4)])
    @test e1 isa MMSB.EdgeId && e1 != e2
    @test dependents(s, src) == [mid] && dependents(s, mid) == [dst] && isempty(dependents(s, dst))
    order = topo_order(s)
    @test findfirst(==(src), order) < findfirst(==(mid), order) < findfirst(==(dst), order)

    # a cycle is refused and named
    err = try add_dependency!(s, dst, src) catch x; x end
    @test err isa MMSBError && err.name == "cycle"
    @test_throws ArgumentError add_dependency!(s, src, dst; kind = :telepathy)
    @test_throws ArgumentError add_dependency!(s, src, dst; commands = [:nonsense])
    @test_throws ArgumentError add_dependency!(s, src, dst; commands = [OpCommand(:pow, UInt8, 1)])

    update_page!(s, src, UInt8[1, 2, 3, 4])
    r = propagate!(s, src)
    @test r.recomputed >= 2 && r.deltas_routed >= 1
    @test read_page(s, mid; len = 10) == UInt8[1, 2, 3, 4, 0, 0, 0, 0, 0xee, 0xee]
    @test read_page(s, dst; len = 4) == UInt8[1, 2, 3, 4]          # 0 + mid
    propagate!(s, [mid])
    @test read_page(s, dst; len = 4) == UInt8[2, 4, 6, 8]          # adds again

    events = poll_events(sub)
    kinds = Set(ev.kind for ev in events)
    @test :delta_applied in kinds && :propagation_done in kinds
    @test any(ev -> ev.kind === :delta_applied && ev.page == src, events)
    @test isempty(poll_events(sub))
    @test events_dropped(sub) == 0 && !is_lagged(sub)

    remove_dependency!(s, e2)
    @test isempty(dependents(s, mid))
    err = try remove_dependency!(s, e2) catch x; x end
    @test err isa MMSBError && err.name == "unknown_edge"

    # a Julia function as a transform: dst[i] = 2 * src[i]
    out = create_page(s, 16)
    add_dependency!(s, src, out; commands = [(srcb, dstb) -> (dstb[1:4] .= 2 .* srcb[1:4]; nothing)])
    update_page!(s, src, UInt8[5, 6, 7, 8])
    propagate!(s, src)
    @test read_page(s, out; len = 4) == UInt8[10, 12, 14, 16]
    GC.gc()                                   # the function stays rooted by the state
    update_page!(s, src, UInt8[1, 1, 1, 1])
    propagate!(s, src)
    @test read_page(s, out; len = 4) == UInt8[2, 2, 2, 2]

    # a throwing transform fails the round for its page with the Julia error in the message
    bad = create_page(s, 16)
    add_dependency!(s, src, bad; commands = [(a, b) -> error("transform broke")])
    before = read_page(s, bad)
    err = try propagate!(s, src) catch x; x end
    @test err isa MMSBError && err.name == "callback" && occursin("transform broke", err.message)
    @test read_page(s, bad) == before

    close(sub); close(sub)
    @test !isopen(sub)
    @test_throws MMSBError poll_events(sub)
end

# a subscription outlives its state
s = mmsb_start()
sub = subscribe(s)
p = create_page(s, 8)
update_page!(s, p, UInt8[1])
close(s)
@test !isopen(sub)
@test poll_events(sub) isa Vector{MMSB.Event}
close(sub)

# A subscription behaves like a Channel: take!, isready, wait, iteration, close.
mmsb_start() do s
    sub = subscribe(s; events = (:delta_applied,))
    @test Base.IteratorSize(Subscription) == Base.SizeUnknown() && eltype(sub) === MMSB.Event
    @test !isready(sub)
    p = create_page(s, 16)
    l1 = update_page!(s, p, UInt8[1, 2])
    l2 = update_page!(s, p, UInt8[3])
    @test isready(sub)
    e = take!(sub)
    @test e.kind === :delta_applied && e.page == p && e.lsn == l1 && e.epoch == 1
    @test e.lsn isa Int && e.epoch isa Int
    @test propertynames(e) == (:kind, :page, :lsn, :epoch)
    @test sprint(show, e) == "Event(:delta_applied, page = PageId($(Int(p.value))), lsn = $(Int(l1)), epoch = 1)"
    @test_throws ArgumentError e.round
    # `take!` waits for an event written later by another task; waiting lets that task run
    t = @async (sleep(0.05); update_page!(s, p, UInt8[9]))
    @test take!(sub).lsn == l2
    e3 = take!(sub)
    @test e3.epoch == 3 && fetch(t) == e3.lsn
    # `wait` returns once an event is queued
    t = @async (sleep(0.05); update_page!(s, p, UInt8[10]))
    wait(sub)
    @test isready(sub) && istaskdone(t)
    # iteration ends once the subscription is closed; the events it held are still handed out
    update_page!(s, p, UInt8[11])
    seen = MMSB.Event[]
    closer = @async (sleep(0.1); close(sub))
    for ev in sub
        push!(seen, ev)
    end
    @test [ev.epoch for ev in seen] == [4, 5] && !isopen(sub)   # ended by the close
    wait(closer)   # (close may yield after waking the loop: closing the condition waits for libuv)
    err = try take!(sub) catch x; x end
    @test err isa MMSBError && err.name == "closed"
    @test_throws MMSBError wait(sub)
end

# named fields of the other kinds
mmsb_start(dir = mktempdir()) do s
    sub = subscribe(s)
    a, b = create_page(s, 8), create_page(s, 8)
    add_dependency!(s, a, b; commands = [CopyCommand(8)])
    update_page!(s, a, UInt8[1])
    propagate!(s, a)
    c = checkpoint_log!(s)
    evs = poll_events(sub)
    pd = evs[findfirst(e -> e.kind === :propagation_done, evs)]
    @test pd.recomputed == 1 && pd.cutoff == 0 && pd.round >= 1
    @test propertynames(pd) == (:kind, :round, :recomputed, :cutoff)
    @test occursin("recomputed = 1, cutoff = 0)", sprint(show, pd))
    cp = evs[findfirst(e -> e.kind === :checkpoint, evs)]
    @test cp.lsn == c
    set_budget!(s, :latency_max, 1)
    MMSB.track_delta_latency!(s, 5_000)
    bu = first(filter(e -> e.kind === :budget, poll_events(sub)))
    @test bu.metric === :delta_route && bu.value == 5_000 && bu.limit == 1
    close(sub)
end

# `on` runs the handler on a task until the subscription closes or the state does
s = mmsb_start()
seen = Int[]
sub = on(s, :delta_applied) do e
    push!(seen, e.epoch)
end
@test sub isa Subscription && sub.task isa Task
p = create_page(s, 8)
for i in 1:3
    update_page!(s, p, UInt8[i])
end
t0 = time()
while length(seen) < 3 && time() - t0 < 10
    sleep(0.01)
end
@test seen == [1, 2, 3]
close(s)                                      # the state closing ends the handler's loop
wait(sub.task)
@test istaskdone(sub.task) && !istaskfailed(sub.task)
@test_throws ArgumentError on(identity, sub)  # one handler per subscription
close(sub)
# a throwing handler closes its subscription and fails its task
s = mmsb_start()
sub = on(e -> error("handler broke"), s)
update_page!(s, create_page(s, 8), UInt8[1])
err = try wait(sub.task) catch x; x end
@test err isa Exception && occursin("handler broke", sprint(showerror, err))
@test !isopen(sub)
close(s)

# Edge commands take 1-based positions (src_at, dst_at) at both edges of a page
mmsb_start() do s
    a = create_page(s, 16; name = "a")
    b = create_page(s, 16; name = "b")
    add_dependency!(s, a, b; commands = [CopyCommand(1; src_at = 16, dst_at = 1), CopyCommand(1; src_at = 1, dst_at = 16),
                                         FillCommand(2, 0x07; dst_at = 8), OpCommand(:xor, UInt8, 1; src_at = 16, dst_at = 2)])
    update_page!(s, a, UInt8[0x11]; at = 1)
    update_page!(s, a, UInt8[0x22]; at = 16)
    propagate!(s, a)
    @test read_page(s, b) == UInt8[0x22, 0x22, 0, 0, 0, 0, 0, 0x07, 0x07, 0, 0, 0, 0, 0, 0, 0x11]
    # one past the last byte is refused when the edge is added
    c = create_page(s, 16; name = "c")
    for cmd in (CopyCommand(1; src_at = 17), CopyCommand(1; dst_at = 17), FillCommand(1, 0x01; dst_at = 17),
                OpCommand(:add, UInt8, 1; dst_at = 17))
        err = try add_dependency!(s, a, c; commands = [cmd]) catch x; x end
        @test err isa MMSBError && err.name == "invalid_argument"
        # the message speaks Julia: the 1-based byte that does not fit, no Rust syntax
        @test err isa MMSBError && occursin("bytes 17:17 (1-based)", err.message) && !occursin("{", err.message)
    end
    @test isempty(dependents(s, c)) && dependents(s, a) == [b]
    err = try CopyCommand(1; dst_at = 0) catch x; x end
    @test err isa MMSBError && err.name == "invalid_argument" && occursin("1-based", err.message)
    @test_throws MMSBError FillCommand(1, 0x00; dst_at = 0)
    @test_throws MMSBError OpCommand(:add, UInt8, 1; src_at = 0)
    # they show as they are written
    @test sprint(show, CopyCommand(4; dst_at = 9)) == "CopyCommand(4; src_at = 1, dst_at = 9)"
    @test sprint(show, FillCommand(2, 0xee; dst_at = 16)) == "FillCommand(2, 0xee; dst_at = 16)"
    @test sprint(show, OpCommand(:add, Float64, 8; src_at = 9)) == "OpCommand(:add, Float64, 8; src_at = 9, dst_at = 1)"
end

# Waiting does not poll: the core wakes the subscription's AsyncCondition (uv_async_send)
# when it queues an event and when the state closes. (10 s bounds a wake-up that never comes.)
done_within(t, secs = 10.0) = timedwait(() -> istaskdone(t), secs) === :ok
mmsb_start() do s
    p = create_page(s, 8)
    sub = subscribe(s; events = (:delta_applied,))
    cond = sub.cond
    @test cond isa Base.AsyncCondition
    waiter = @async wait(cond)               # the raw condition: no poll can end this wait
    yield()
    update_page!(s, p, UInt8[1])
    @test done_within(waiter)
    @test take!(sub).epoch == 1
    # from another thread (where there is one): the core's emitting thread sends the wake-up
    t = @async take!(sub)
    yield()
    w = Threads.@spawn update_page!(s, p, UInt8[2])
    @test done_within(t) && fetch(t).lsn == fetch(w)
    # one emit with two events wakes two takers (the first passes the wake-up on)
    q = create_page(s, 8)
    takers = [@async(take!(sub)) for _ in 1:2]
    yield()
    route_batch!(s, [p => Delta(UInt8[3]), q => Delta(UInt8[4])])
    @test all(done_within, takers) && sort([fetch(x).page.value for x in takers]) == sort([p.value, q.value])
    # closing the state wakes a waiter, which then ends
    ended = @async wait(cond)
    yield()
    sub2 = subscribe(s)
    it = @async collect(sub2)
    yield()
    close(s)
    @test done_within(ended) && done_within(it) && isempty(fetch(it))
    # close(sub) closes the condition and unroots it
    @test haskey(MMSB.NOTIFY_ROOTS, cond)
    close(sub)
    @test !isopen(cond) && !haskey(MMSB.NOTIFY_ROOTS, cond) && sub.cond === nothing
    close(sub2)
end

# Without the native wake-up (a library or Julia without it) waiting falls back to polling
let saved = MMSB.UV_ASYNC_SEND[]
    MMSB.UV_ASYNC_SEND[] = C_NULL
    try
        mmsb_start() do s
            p = create_page(s, 8)
            sub = subscribe(s)
            @test sub.cond === nothing
            t = @async take!(sub)
            yield()
            update_page!(s, p, UInt8[1])
            @test done_within(t) && fetch(t).page == p
            close(sub)
        end
    finally
        MMSB.UV_ASYNC_SEND[] = saved
    end
end

# A subscription collected without close: its finalizer frees it and unroots the condition
let n = length(MMSB.NOTIFY_ROOTS)
    mmsb_start() do s
        for _ in 1:10
            subscribe(s)
        end
        @test length(MMSB.NOTIFY_ROOTS) == n + 10
        GC.gc(); GC.gc()
        update_page!(s, create_page(s, 8), UInt8[1])   # an emit after the collection reaches no freed handle
    end
    GC.gc()
    @test length(MMSB.NOTIFY_ROOTS) == n
end
