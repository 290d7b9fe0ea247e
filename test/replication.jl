# Replication from Julia (docs/replication.md). A library built without the cargo
# feature `replication` reports "unsupported"; with it, and with a NATS cluster
# named by MMSB_TEST_NATS_URLS (scripts/nats-cluster.sh start prints one), a
# primary, a follower, promote! and the fenced old primary run for real
# (scripts/test.sh does this in its "julia replication (NATS)" step).

const URLS = get(ENV, "MMSB_TEST_NATS_URLS", "")

mmsb_start() do plain
    e = try replica_lag(plain) catch x; x end
    @test e isa MMSBError && e.name in ("unsupported", "invalid_argument")
    # With a cluster given, the library must have replication built in.
    isempty(URLS) || @test e.name == "invalid_argument"
    if e.name == "unsupported"
        e2 = try mmsb_follow("nats://127.0.0.1:1", "nothing-here") catch x; x end
        @test e2 isa MMSBError && e2.name == "unsupported" && occursin("replication", e2.message)
    end
end

if isempty(URLS)
    @info "replication: MMSB_TEST_NATS_URLS not set; only the unsupported/invalid paths ran"
else
    stream = "julia-$(getpid())-$(rand(UInt32))"
    # A follower's LSN once it reaches `target`, or as far as it got in 20 s.
    function wait_for_lsn(f, target)
        t0 = time()
        while lsn(f) < target && time() - t0 < 20
            sleep(0.02)
        end
        return lsn(f)
    end
    mktempdir() do dir
        old = mmsb_start(dir = joinpath(dir, "p"), durability = :replicated, replicate = (url = URLS, stream = stream))
        p = create_page(old, 256)
        for i in 1:20
            update_page!(old, p, fill(UInt8(i), 8); at = 8i)
        end
        @test replica_lag(old).applied_lsn == lsn(old)
        f = mmsb_follow(URLS, stream)
        @test wait_for_lsn(f, lsn(old)) == lsn(old)
        @test read_page(f, p) == read_page(old, p)
        l = replica_lag(f)
        @test l.applied_lsn == lsn(old) && l.term == 1
        # The lag is in the follower's stats too (gauges), 0 once caught up and looked at.
        sleep(0.6)
        st = get_stats(f)
        @test haskey(st.counters, :replica_lsn_behind) && haskey(st.counters, :replica_us_behind)
        @test st.counters[:replica_lsn_behind] == 0
        # Failed writes of a follower's durable position are counted (none here).
        @test st.counters[:replica_pos_errors] == 0
        e = try update_page!(f, p, UInt8[1]) catch x; x end
        @test e isa MMSBError && e.name == "read_only"
        io = IOBuffer()
        print_stats(io, f)
        @test occursin("replication: applied LSN $(lsn(old))", String(take!(io)))
        new = promote!(f)
        @test replica_lag(new).term == 2
        update_page!(new, p, UInt8[42])
        e = try update_page!(old, p, UInt8[7]) catch x; x end
        @test e isa MMSBError && e.name == "fenced"
        @test read_page(new, p)[1] == 42
        # A new follower follows the promoted primary: same bytes, term 2.
        f2 = mmsb_follow(URLS, stream)
        @test wait_for_lsn(f2, lsn(new)) == lsn(new)
        @test read_page(f2, p) == read_page(new, p)
        @test replica_lag(f2).term == 2
        close(old); close(f); close(new); close(f2)
    end
end
