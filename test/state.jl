# mmsb_start, configuration, close, show.

s = mmsb_start()
@test s isa MMSBState
@test isopen(s)
@test lsn(s) == 0
@test page_ids(s) == PageId[]
@test sprint(show, s) == "MMSBState(open, 0 pages, lsn 0)"
close(s)
@test !isopen(s)
@test s.ptr == C_NULL           # no call in flight: the native handle is freed at once
close(s) # idempotent
@test !isopen(s)
@test sprint(show, s) == "MMSBState(closed)"
e = try lsn(s) catch err; err end
@test e isa MMSBError && e.name == "closed"

# the native getters of a closed (not yet freed) handle answer CLOSED, not stale values
let L = MMSB.LibMMSB, out = Ref{Ptr{L.MmsbState}}(C_NULL), v = Ref{UInt64}(99)
    @test L.mmsb_state_open(C_NULL, out) == L.MMSB_OK
    @test L.mmsb_state_lsn(out[], v) == L.MMSB_OK && v[] == 0
    @test L.mmsb_state_close(out[]) == L.MMSB_OK
    @test L.mmsb_state_lsn(out[], v) == L.MMSB_STATUS_CODE_CLOSED
    @test L.mmsb_stats_counter(out[], UInt32(0), v) == L.MMSB_STATUS_CODE_CLOSED
    L.mmsb_state_free(out[])
end

# do-block form closes the state, also when the block throws
kept = Ref{Any}(nothing)
r = mmsb_start(max_page_size = 1 << 16, durability = :none) do st
    kept[] = st
    @test isopen(st)
    create_page(st, 100)
    :done
end
@test r == :done
@test !isopen(kept[])
@test_throws ErrorException mmsb_start() do st
    kept[] = st
    error("boom")
end
@test !isopen(kept[])

# configuration keywords reach the core
mmsb_start(max_page_size = 1024, gpu = false, file_backed_pages = false) do st
    @test create_page(st, 1024) isa PageId
    e = try create_page(st, 1025); nothing catch err; err end
    @test e isa MMSBError && e.name == "invalid_argument"
end
@test_throws ArgumentError mmsb_start(durability = :sometimes)
mktempdir() do dir
    # a directory-backed state is the logged one: the core refuses logging = false
    e = try mmsb_start(dir = dir, logging = false) catch err; err end
    @test e isa MMSBError && e.name == "invalid_argument"
    @test occursin("directory", e.message) && occursin("in-memory state", e.message)
    @test isempty(readdir(dir))   # refused before anything was created
    mmsb_start(dir = dir, logging = true) do st
        @test st.config.logging && log_info(st).lsn == 0
    end
end
@test_throws ArgumentError mmsb_start(max_page_size = -1)
e = try mmsb_start(no_such_option = 1) catch err; err end
@test e isa MMSBError && e.name == "invalid_argument" && occursin("no_such_option", e.message)
e = try mmsb_start(max_page_size = 0) catch err; err end
@test e isa MMSBError

for d in (:none, :group_commit, :always)
    mktempdir() do dir
        mmsb_start(dir = dir, durability = d) do st
            @test st.config.dir == dir
            @test st.config.durability == d
            p = create_page(st, 64)
            @test update_page!(st, p, UInt8[1, 2, 3]) == lsn(st) > 0
            @test occursin("dir=", sprint(show, st))
        end
    end
end

# every exported name (but the deprecated aliases) and every public unexported one is documented
meta = Base.Docs.meta(MMSB)
for name in [names(MMSB); collect(MMSB.PUBLIC)]
    (name === :MMSB || name in first.(MMSB.DEPRECATED)) && continue
    @test haskey(meta, Base.Docs.Binding(MMSB, name)) || (@warn "undocumented public name" name; false)
end

# A second state on a folder in use: the error says to close the first
mktempdir() do dir
    s = mmsb_start(dir = dir)
    err = try mmsb_start(dir = dir) catch x; x end
    @test err isa MMSBError && err.name == "busy" && occursin("close(state)", err.message)
    close(s)
    mmsb_start(close, dir = dir)      # free again once closed
end

# A call that throws while it prepares its ccall (a failed conversion) is still counted out, so a
# closed state is freed (issue 16: the write paths counted the call in outside the guarded call).
let s = mmsb_start()
    p = create_page(s, 8)
    @test_throws ErrorException MMSB.scall_u64((h, out) -> error("conversion failed"), s)
    @test s.inflight[] == 0
    @test update_page!(s, p, UInt8[1]) == lsn(s)
    @test s.inflight[] == 0
    close(s)
    @test s.ptr == C_NULL       # freed at once: nothing was left in flight
end
