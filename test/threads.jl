# Multi-threaded updates (run with JULIA_NUM_THREADS=2): writers on distinct and
# shared pages; the final bytes equal the serial application of every write in
# LSN order.

Threads.nthreads() < 2 && @warn "threads tests run with 1 thread; set JULIA_NUM_THREADS=2 for real concurrency"

struct Write
    lsn::UInt64
    page::PageId
    delta::Delta   # what was written, as a delta on the page
end

const PAGE = 512
mmsb_start() do s
    shared = [create_page(s, PAGE) for _ in 1:2]
    own = [create_page(s, PAGE) for _ in 1:4]
    ntasks = 4
    nwrites = 400
    l0 = lsn(s)
    threads_used = Threads.Atomic{Int}(0)
    tasks = map(1:ntasks) do t
        Threads.@spawn begin
            Threads.atomic_or!(threads_used, 1 << (Threads.threadid() - 1))
            rng = MersenneTwister(t)
            log = Write[]
            for k in 1:nwrites
                page = rand(rng, Bool) ? rand(rng, shared) : own[t]
                off = rand(rng, 0:PAGE - 16)
                data = rand(rng, UInt8, rand(rng, 1:16))
                kind = rand(rng, 1:5)
                if kind == 1
                    l = update_page!(s, page, data; at = off + 1)
                    d = Delta(data; at = off + 1)
                elseif kind == 2
                    l = write_page!(s, page, data; at = off + 1)
                    d = Delta(data; at = off + 1)
                elseif kind == 3
                    m = bitrand(rng, length(data))
                    l = update_page!(s, page, data, m; at = off + 1)
                    d = Delta(data, m; at = off + 1)
                elseif kind == 4
                    runs = [off + 1 => data, rand(rng, 1:PAGE) => UInt8[k % 256]]   # 1-based positions
                    l = update_page!(s, page, runs)
                    d = Delta(runs...)
                else
                    d = Delta(data; at = off + 1)
                    l = route_delta!(s, page, d)
                end
                push!(log, Write(l, page, d))
                k % 50 == 0 && yield()
            end
            log
        end
    end
    logs = fetch.(tasks)
    @info "writers ran on threads" mask = threads_used[]
    writes = sort!(reduce(vcat, logs); by = w -> w.lsn)
    @test length(writes) == ntasks * nwrites
    @test [w.lsn for w in writes] == (l0 + 1):(l0 + ntasks * nwrites)   # every LSN exactly once
    @test lsn(s) == l0 + ntasks * nwrites
    expect = Dict(p => zeros(UInt8, PAGE) for p in vcat(shared, own))
    for w in writes
        MMSB.apply!(expect[w.page], w.delta)
    end
    for p in vcat(shared, own)
        @test read_page(s, p) == expect[p]
    end
    # per-page epochs count the writes routed to each page
    for p in vcat(shared, own)
        @test page_epoch(s, p) == count(w -> w.page == p, writes)
    end
    @test all(p -> page_epoch(s, p) > 0, own)
end

# compare-and-set counters from several threads: no lost updates
mmsb_start() do s
    p = create_page(s, 8)
    ntasks, per = 2, 20_000
    tasks = map(1:ntasks) do _
        Threads.@spawn begin
            conflicts = 0
            for _ in 1:per
                while true
                    e = page_epoch(s, p)
                    n = reinterpret(UInt64, read_page(s, p))[1]
                    ok = try
                        update_page!(s, p, reinterpret(UInt8, [n + 1]); expected_epoch = e)
                        true
                    catch err
                        err isa MMSBError && err.name == "epoch_conflict" || rethrow()
                        false
                    end
                    ok && break
                    conflicts += 1
                end
            end
            conflicts
        end
    end
    conflicts = sum(fetch.(tasks))
    @test reinterpret(UInt64, read_page(s, p))[1] == ntasks * per
    @info "CAS counter" conflicts
end

# closing a state while other threads write: they see MMSBError(closed), never a crash
s = mmsb_start()
p = create_page(s, 64)
started = Threads.Atomic{Int}(0)
writers = map(1:2) do t
    Threads.@spawn begin
        n = 0
        try
            while true
                update_page!(s, p, UInt8[t, n % 256])
                n += 1
                n == 10 && Threads.atomic_add!(started, 1)
                n % 100 == 0 && yield()
            end
        catch err
            err
        end
    end
end
# Wait by yielding, not sleeping: a writer sharing this thread would starve a timer wake-up.
# Close once a writer is under way (or after a bounded wait: Julia 1.5's scheduler may leave a
# spawned task queued while this one yields). Any writer, started or not, must see `closed`.
spins = 0
while started[] < 1 && !all(istaskdone, writers) && (spins += 1) < 10^6
    yield()
end
close(s)
for w in writers
    err = fetch(w)
    @test err isa MMSBError && err.name == "closed"
    err isa MMSBError && err.name == "closed" || @error "writer ended with" err
end
@test s.ptr == C_NULL && s.inflight[] < 0   # the last call out freed the handle

# a directory is free again right after close (the log's lock is released)
mktempdir() do dir
    st = mmsb_start(dir = dir)
    q = create_page(st, 8)
    writes = Threads.Atomic{Int}(0)
    t = Threads.@spawn begin
        try
            while true
                update_page!(st, q, UInt8[1])
                Threads.atomic_add!(writes, 1) % 16 == 0 && yield()
            end
        catch err
            err
        end
    end
    spins = 0
    while writes[] < 100 && !istaskdone(t) && (spins += 1) < 10^6   # as above
        yield()
    end
    close(st)
    @test fetch(t) isa MMSBError
    mmsb_start(dir = dir) do again
        @test q in page_ids(again)
    end
end
