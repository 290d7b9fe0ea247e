# The transaction log: checkpoints, replay, compaction, recovery on restart.

mktempdir() do dir
    snapshots = Dict{UInt64,Vector{UInt8}}()
    local p, final
    mmsb_start(dir = dir, durability = :group_commit) do s
        @test s.config.logging
        p = create_page(s, 64; name = "logged")
        for i in 1:20
            l = update_page!(s, p, UInt8[i, i + 1]; at = 2i + 1)
            snapshots[l] = read_page(s, p)
        end
        c = checkpoint_log!(s)
        @test c >= maximum(keys(snapshots))
        info = log_info(s)
        @test info.lsn == lsn(s) && info.checkpoints >= 1 && info.last_checkpoint_lsn == c
        @test info.log_bytes >= 0 && info.segments >= 1
        # group commit fsynced the 21 logged changes (one writer: about one fsync each)
        @test 0 < info.group_syncs <= info.lsn
        @test occursin("group_syncs", sprint(show, MIME"text/plain"(), info))
        for i in 21:25
            l = write_page!(s, p, fill(UInt8(i), 4); at = 51)
            snapshots[l] = read_page(s, p)
        end
        # replay to any retained LSN gives the bytes as they were then
        oldest = log_info(s).oldest_lsn
        for (l, bytes) in snapshots
            l < oldest && continue
            replay_log(s, l) do r
                @test read_page(r, p) == bytes
                e = try update_page!(r, p, UInt8[1]) catch x; x end
                @test e isa MMSBError && e.name == "read_only"
            end
        end
        # open_at reads the folder beside its writer (no lock, nothing written): the same bytes
        for (l, bytes) in snapshots
            l < oldest && continue
            open_at(dir; lsn = l) do r
                @test lsn(r) == l && read_page(r, p) == bytes
                @test occursin("replay of lsn $l", sprint(show, r))
                e = try update_page!(r, p, UInt8[1]) catch x; x end
                @test e isa MMSBError && e.name == "read_only"
            end
        end
        newest = open_at(dir)
        @test lsn(newest) == lsn(s) && read_page(newest, p) == read_page(s, p)
        close(newest)
        e = try open_at(dir; lsn = lsn(s) + 100) catch x; x end
        @test e isa MMSBError && e.name == "lsn_out_of_range" && occursin("replayable range $oldest:$(lsn(s))", e.message)
        e = try open_at(joinpath(dir, "missing")) catch x; x end
        @test e isa MMSBError && e.name == "io" && !ispath(joinpath(dir, "missing"))
        r = replay_log(s, maximum(keys(snapshots)))
        @test isopen(r) && occursin("MMSBState(open", sprint(show, r))
        close(r)
        @test !isopen(r)
        e = try replay_log(s, lsn(s) + 100) catch x; x end
        @test e isa MMSBError && e.name == "lsn_out_of_range" && e.code == 26
        info = log_info(s)
        @test info.maintenance_failures == 0 && info.last_maintenance_error == "" && info.last_maintenance_status == ""
        @test info.quarantined_files == 0 && info.skipped_regions == 0
        compact_log!(s)
        @test log_info(s).lsn == lsn(s)
        final = read_page(s, p)
    end
    # a restart recovers the pages from the directory
    mmsb_start(dir = dir) do s
        @test p in page_ids(s)
        @test read_page(s, p) == final
        @test page_info(s, p).name == "logged"
        # the open's recovery time and the maintenance thread's counters (nothing over the cap)
        info = log_info(s)
        @test info.recovery_micros > 0
        @test info.maintenance_passes == 0 && info.maintenance_waits == 0 && info.maintenance_slowdowns == 0
        @test occursin("recovery ", sprint(show, MIME"text/plain"(), info))
    end
end

# in memory: no log unless asked for
mmsb_start() do s
    e = try log_info(s) catch x; x end
    @test e isa MMSBError && e.name == "unsupported"
    @test_throws MMSBError checkpoint_log!(s)
end
mmsb_start(logging = true) do s
    p = create_page(s, 8)
    l = update_page!(s, p, UInt8[1, 2])
    update_page!(s, p, UInt8[3, 4])
    @test log_info(s).lsn == lsn(s)
    @test log_info(s).group_syncs == 0   # durability :none: no group commit
    replay_log(s, l) do r
        @test read_page(r, p) == UInt8[1, 2, 0, 0, 0, 0, 0, 0]
    end
    # compaction folds LSNs 1:3 into one run: inside it, replay has its own error
    @test isempty(compacted_runs(s))
    compact_log!(s)
    @test compacted_runs(s) == [UInt64(1):UInt64(3)]
    e = try replay_log(s, 2) catch x; x end
    @test e isa MMSBError && e.name == "lsn_compacted" && e.code == 27
    replay_log(s, 3) do r
        @test read_page(r, p) == UInt8[3, 4, 0, 0, 0, 0, 0, 0]
    end
end
