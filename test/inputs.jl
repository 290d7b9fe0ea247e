# Issue 15 (API part): every input has one rule and a named error; nothing hangs.
# Offsets here are chosen to be out of (or in) bounds whether offsets count from 0 or 1.

# errof, expect_error: test/helpers.jl

# dir = "" is an error, not a quiet in-memory state
e = expect_error(() -> mmsb_start(dir = ""), "invalid_argument")
@test occursin("dir", e.message)

# a directory held by an open state: "busy" (retryable), not "io"
mktempdir() do d
    first = mmsb_start(dir = d)
    e = expect_error(() -> mmsb_start(dir = d), "busy")
    @test e.code == MMSB.LibMMSB.MMSB_STATUS_CODE_BUSY == 24
    @test MMSB.errorname(e) === :busy
    @test occursin(d, e.message)
    close(first)
    again = mmsb_start(dir = d)      # the retry succeeds once the holder closed
    @test isopen(again)
    close(again)
end

mmsb_start() do s
    p = create_page(s, 64)
    # read_page checks the bounds before it allocates
    e = expect_error(() -> read_page(s, p; len = 10^12), "out_of_bounds")
    @test occursin("1000000000000", e.message)
    expect_error(() -> read_page(s, p; len = typemax(Int)), "out_of_bounds")
    expect_error(() -> read_page(s, p; len = 66), "out_of_bounds")
    @test length(read_page(s, p; len = 64)) == 64

    # empty writes past the end are out of bounds in every form, and take no LSN
    l0 = lsn(s)
    for at in (67, 1 << 40)
        expect_error(() -> route_delta!(s, p, Delta(UInt8[]; at = at)), "out_of_bounds")
        expect_error(() -> route_delta!(s, p, Delta(zeros(UInt8, 8), falses(8); at = at)), "out_of_bounds")
        expect_error(() -> route_delta!(s, p, Delta(at => UInt8[])), "out_of_bounds")
        expect_error(() -> route_batch!(s, [p => Delta(UInt8[]; at = at)]), "out_of_bounds")
        expect_error(() -> MMSB.apply(Delta(UInt8[]; at = at), zeros(UInt8, 64)), "out_of_bounds")
    end
    @test lsn(s) == l0 && page_epoch(s, p) == 0

    # masked-out bytes past the end do not count; a written byte past the end does
    bytes = UInt8[1, 2, 3, 4, 5, 6, 7, 8]
    route_delta!(s, p, Delta(bytes, [true, true, true, false, false, false, false, false]; at = 61))
    @test sum(read_page(s, p)) == 6 && read_page(s, p)[end] == 0
    expect_error(() -> route_delta!(s, p, Delta(bytes, [false, false, false, false, false, false, false, true]; at = 61)),
                 "out_of_bounds")

    # an empty batch is assigned no LSN
    l1 = lsn(s)
    @test isempty(route_batch!(s, Pair{PageId,Delta}[]))
    @test lsn(s) == l1

    # page names are bounded (the limit is in the error)
    maxn = MMSB.LibMMSB.MMSB_MAX_PAGE_NAME_BYTES
    for n in (maxn + 1, 1 << 20)
        e = expect_error(() -> create_page(s, 8; name = "n"^n), "invalid_argument")
        @test occursin(string(maxn), e.message)
    end
    q = create_page(s, 8; name = "n"^maxn)
    @test page_name(s, q) == "n"^maxn

    # a :gpu page without a GPU (or with the gpu option off, as here) is a visible fallback
    g = create_page(s, 64; location = :gpu)
    st = page_device_status(s, g)
    @test st.status === :cpu_only && !isempty(st.reason)
    @test page_device_status(s, p) == (status = :cpu, reason = "")
    expect_error(() -> page_device_status(s, PageId(999)), "unknown_page")
end

# a Julia transform calling into its own state gets "reentrant" instead of a deadlock (before
# the fix this block hung for good: a thread blocked in a native call also stops Julia's GC, so
# the hang cannot be turned into a test failure from here; tests/input_rules.rs and the C test
# check the same with a deadline)
mmsb_start() do s
    a = create_page(s, 8)
    b = create_page(s, 8)
    inner = Ref{Any}(nothing)
    f = (src, dst) -> begin
        inner[] = errof(() -> write_page!(s, a, UInt8[9]))
        copyto!(dst, src)
    end
    edge = add_dependency!(s, a, b; commands = [f])
    write_page!(s, a, UInt8[1, 2, 3])
    e = errof(() -> propagate!(s, a))
    @test e isa MMSBError && e.name == "reentrant"
    @test e isa MMSBError && e.code == MMSB.LibMMSB.MMSB_STATUS_CODE_REENTRANT == 25
    @test inner[] isa MMSBError && inner[].name == "reentrant"
    @test read_page(s, b) == zeros(UInt8, 8)         # the refused round wrote nothing to b
    # the state stays usable: writes, reads, and rounds without the offending edge
    remove_dependency!(s, edge)
    add_dependency!(s, a, b; commands = [(src, dst) -> copyto!(dst, src)])
    write_page!(s, a, UInt8[4, 5, 6])
    @test propagate!(s, a).deltas_routed == 1
    @test read_page(s, b) == read_page(s, a) != zeros(UInt8, 8)
end
