# GC safety: states, views and deltas created and dropped in random order, with
# collections in between; finalizers free native handles in any order, and
# views that outlive their state throw rather than crash.

rng = MersenneTwister(20240611)
live_states = MMSBState[]
live_views = PageView[]
live_deltas = Delta[]
closed_views = PageView[]
pages = Dict{MMSBState,Vector{PageId}}()
for round in 1:300
    r = rand(rng, 1:8)
    if r == 1 || isempty(live_states)
        st = mmsb_start()
        push!(live_states, st)
        pages[st] = [create_page(st, rand(rng, 1:8192)) for _ in 1:rand(rng, 1:3)]
    elseif r == 2
        st = rand(rng, live_states)
        isopen(st) && push!(live_views, page_view(st, rand(rng, pages[st])))
    elseif r == 3 && !isempty(live_states)        # drop a state, maybe closing it first
        i = rand(rng, 1:length(live_states))
        st = live_states[i]
        rand(rng, Bool) && close(st)
        delete!(pages, st)
        deleteat!(live_states, i)
    elseif r == 4 && !isempty(live_views)         # drop a view, maybe closing it first
        i = rand(rng, 1:length(live_views))
        rand(rng, Bool) && close(live_views[i])
        deleteat!(live_views, i)
    elseif r == 5
        push!(live_deltas, Delta(rand(rng, UInt8, 4); at = rand(rng, 1:11)))
        length(live_deltas) > 20 && deleteat!(live_deltas, rand(rng, 1:length(live_deltas)))
    elseif r == 6 && !isempty(live_states)        # write through a random live state
        st = rand(rng, live_states)
        if isopen(st)
            update_page!(st, first(pages[st]), rand(rng, UInt8, 1))
            isempty(live_deltas) || route_delta!(st, first(pages[st]), rand(rng, live_deltas))
        end
    elseif r == 7 && !isempty(live_states)        # close a state but keep it (and its views)
        st = rand(rng, live_states)
        close(st)
    end
    # read every view that should be readable; closed ones must throw
    for v in live_views
        if isopen(v.state) && isopen(v)
            @test v[1] isa UInt8
        else
            @test_throws MMSBError v[1]
        end
    end
    round % 10 == 0 && GC.gc(rand(rng, Bool))
end
@test true # reached without a crash

# a view whose state was dropped (not closed) keeps the state alive and works
function orphan_view()
    st = mmsb_start()
    p = create_page(st, 16)
    update_page!(st, p, UInt8[3])
    return page_view(st, p)
end
v = orphan_view()
GC.gc(); GC.gc()
@test v[1] == 3 && isopen(v.state)
close(v.state)
@test_throws MMSBError v[1]

# everything dropped at once, finalizers run in whatever order the GC picks
empty!(live_states); empty!(live_views); empty!(live_deltas); empty!(pages)
v = nothing
for _ in 1:3
    GC.gc(true)
end
@test true
