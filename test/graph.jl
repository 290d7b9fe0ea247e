# The dependency graph: edges, commands, Julia transforms, propagation, events.

mmsb_start() do s
    src = create_page(s, 16; name = "src")
    mid = create_page(s, 16; name = "mid")
    dst = create_page(s, 16; name = "dst")
    sub = subscribe(s; events = [:delta_applied, :propagation_done], capacity = 64)
    @test isopen(sub)

    e1 = add_dependency!(s, src, mid; commands = [CopyCommand(0, 0, 4), FillCommand(8, 2, 0xee)])
    e2 = add_dependency!(s, mid, dst; commands = [OpCommand(:add, UInt8, 0, 0, 4)])
    @test e1 isa EdgeId && e1 != e2
    @test dependents(s, src) == [mid] && dependents(s, mid) == [dst] && isempty(dependents(s, dst))
    order = topo_order(s)
    @test findfirst(==(src), order) < findfirst(==(mid), order) < findfirst(==(dst), order)

    # a cycle is refused and named
    err = try add_dependency!(s, dst, src) catch x; x end
    @test err isa MMSBError && err.name == "cycle"
    @test_throws ArgumentError add_dependency!(s, src, dst; kind = :telepathy)
    @test_throws ArgumentError add_dependency!(s, src, dst; commands = [:nonsense])
    @test_throws ArgumentError add_dependency!(s, src, dst; commands = [OpCommand(:pow, UInt8, 0, 0, 1)])

    update_page(s, src, UInt8[1, 2, 3, 4])
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
    update_page(s, src, UInt8[5, 6, 7, 8])
    propagate!(s, src)
    @test read_page(s, out; len = 4) == UInt8[10, 12, 14, 16]
    GC.gc()                                   # the function stays rooted by the state
    update_page(s, src, UInt8[1, 1, 1, 1])
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
update_page(s, p, UInt8[1])
close(s)
@test !isopen(sub)
@test poll_events(sub) isa Vector{Event}
close(sub)
