# Pages: create, info, read, the update_page! family, write_page!, CAS, free.

mmsb_start() do s
    a = create_page(s, 256; name = "alpha")
    b = create_page(s, 5000; location = :cpu)
    @test a isa PageId && b isa PageId && a != b
    @test page_ids(s) == [a, b]
    i = page_info(s, a)
    @test i.id == a && i.size == 256 && i.capacity >= 256 && i.epoch == 0
    @test i.location == :cpu && i.name == "alpha"
    @test page_name(s, b) == ""
    @test read_page(s, a) == zeros(UInt8, 256)
    @test length(read_page(s, b)) == 5000
    longname = "n"^300
    c = create_page(s, 8; name = longname)
    @test page_name(s, c) == longname

    # plain bytes: smallest delta; the LSN grows by one per write
    l0 = lsn(s)    # page creation may take LSNs too (it is logged)
    l1 = update_page!(s, a, UInt8[1, 2, 3])
    @test l1 == l0 + 1 && lsn(s) == l1
    @test read_page(s, a; len = 4) == UInt8[1, 2, 3, 0]
    @test update_page!(s, a, "xy"; at = 11) == l0 + 2
    @test read_page(s, a; at = 11, len = 2) == Vector{UInt8}("xy")
    @test page_epoch(s, a) == 2
    # a write that changes nothing still takes an LSN and an epoch
    @test update_page!(s, a, UInt8[1, 2, 3]) == l0 + 3
    @test page_epoch(s, a) == 3
    # views of byte vectors are accepted (contiguous and not)
    buf = collect(UInt8, 0:99)
    update_page!(s, a, view(buf, 11:20); at = 101)
    @test read_page(s, a; at = 101, len = 10) == buf[11:20]
    update_page!(s, a, view(buf, 1:2:9); at = 121)
    @test read_page(s, a; at = 121, len = 5) == buf[1:2:9]

    # dense masked writes, BitVector and Vector{Bool}
    update_page!(s, b, fill(0xff, 10), BitVector([1, 0, 1, 0, 1, 0, 1, 0, 1, 1]); at = 8)
    @test read_page(s, b; at = 8, len = 10) == UInt8[0xff, 0, 0xff, 0, 0xff, 0, 0xff, 0, 0xff, 0xff]
    update_page!(s, b, fill(0x11, 10), [true, true, false, false, false, false, false, false, false, true]; at = 8)
    @test read_page(s, b; at = 8, len = 10) == UInt8[0x11, 0x11, 0xff, 0, 0xff, 0, 0xff, 0, 0xff, 0x11]
    # long masks (several 64-bit chunks) against a reference
    rng = MersenneTwister(7)
    data = rand(rng, UInt8, 300)
    mask = bitrand(rng, 300)
    before = read_page(s, b)
    update_page!(s, b, data, mask; at = 1001)
    expect = copy(before)
    for i in 1:300
        mask[i] && (expect[1000 + i] = data[i])
    end
    @test read_page(s, b) == expect
    update_page!(s, b, data, collect(mask); at = 2001) # same through Vector{Bool}
    for i in 1:300
        mask[i] && (expect[2000 + i] = data[i])
    end
    @test read_page(s, b) == expect
    # every mask type and a ragged tail packs the same: BitVector (passed as is), Vector{Bool}
    # (eight at a time), any other AbstractVector{Bool} (one by one); Delta takes the same path
    let
        pm = create_page(s, 4096)
        for n in (1, 7, 8, 9, 63, 64, 65, 200, 1029)
            m = bitrand(rng, n)
            d = rand(rng, UInt8, n)
            for mk in (m, collect(m), view(collect(m), 1:n))
                old = rand(rng, UInt8, n)
                update_page!(s, pm, old; at = 3001)
                update_page!(s, pm, d, mk; at = 3001)
                got = read_page(s, pm; at = 3001, len = n)
                @test got[m] == d[m] && got[.!m] == old[.!m]
                update_page!(s, pm, old; at = 3001)
                route_delta!(s, pm, Delta(d, mk; at = 3001))
                @test read_page(s, pm; at = 3001, len = n) == got
            end
        end
        # a BitVector mask goes to the core without a packed copy
        bigdata, bigmask = rand(rng, UInt8, 4096), bitrand(rng, 4096)
        masked!(s, p, d, m) = update_page!(s, p, d, m)
        masked!(s, pm, bigdata, bigmask)
        @test @allocated(masked!(s, pm, bigdata, bigmask)) < 512
        free_page!(s, pm)
    end

    # sparse runs (1-based positions); later runs win; `at` shifts every run
    update_page!(s, b, [1 => UInt8[1, 2], 5 => UInt8[3], 2 => UInt8[9]])
    @test read_page(s, b; len = 5) == UInt8[1, 9, 0, 0, 3]
    update_page!(s, b, [1 => "A", 3 => "B"]; at = 4001)
    @test read_page(s, b; at = 4001, len = 3) == UInt8['A', 0, 'B']

    # plain write (no diff)
    e0 = page_epoch(s, b)
    l = write_page!(s, b, UInt8[7, 7]; at = 4999)
    @test l == lsn(s) && page_epoch(s, b) == e0 + 1
    @test read_page(s, b; at = 4999) == UInt8[7, 7]

    # compare-and-set: succeeds on the current epoch, fails (and changes nothing) on a stale one
    e1 = page_epoch(s, a)
    update_page!(s, a, UInt8[42]; expected_epoch = e1)
    @test read_page(s, a; len = 1) == UInt8[42]
    err = try update_page!(s, a, UInt8[43]; expected_epoch = e1) catch x; x end
    @test err isa MMSBError && err.name == "epoch_conflict" && MMSB.errorname(err) == :epoch_conflict
    @test read_page(s, a; len = 1) == UInt8[42]
    for f in (st -> write_page!(st, a, UInt8[1]; expected_epoch = e1),
              st -> update_page!(st, a, UInt8[1], [true]; expected_epoch = e1),
              st -> update_page!(st, a, [1 => UInt8[1]]; expected_epoch = e1))
        @test_throws MMSBError f(s)
    end
    @test read_page(s, a; len = 1) == UInt8[42]

    # read_page! into a caller's buffer
    out = zeros(UInt8, 3)
    @test read_page!(out, s, a; at = 2) === out
    @test out == UInt8[2, 3, 0]

    # free
    free_page!(s, c)
    @test page_ids(s) == [a, b]
    err = try page_info(s, c) catch x; x end
    @test err isa MMSBError && err.name == "unknown_page"

    # many pages: page_ids grows its buffer
    more = [create_page(s, 16) for _ in 1:40]
    @test page_ids(s) == vcat([a, b], more)
end

# 1-based byte positions at both edges, for every reader and writer
mmsb_start() do s
    n = 32
    p = create_page(s, n)
    v = page_view(s, p)
    # first byte
    update_page!(s, p, UInt8[0x11]; at = 1)
    @test v[1] == 0x11 && read_page(s, p; at = 1, len = 1) == UInt8[0x11]
    write_page!(s, p, UInt8[0x12]; at = 1)
    @test v[1] == 0x12
    update_page!(s, p, UInt8[0x13, 0x14], trues(2); at = 1)
    @test v[1:2] == UInt8[0x13, 0x14]
    update_page!(s, p, [1 => UInt8[0x15]])
    @test v[1] == 0x15
    # last byte
    update_page!(s, p, UInt8[0x21]; at = n)
    @test v[n] == 0x21 && read_page(s, p; at = n) == UInt8[0x21]
    write_page!(s, p, UInt8[0x22]; at = n)
    @test read_page!(zeros(UInt8, 1), s, p; at = n) == UInt8[0x22]
    update_page!(s, p, UInt8[0x23, 0x24], trues(2); at = n - 1)
    @test v[n-1:n] == UInt8[0x23, 0x24]
    update_page!(s, p, [n => UInt8[0x25]])
    update_page!(s, p, [2 => UInt8[0x26]]; at = n - 1)      # run 2 relative to at = n - 1: byte n
    @test v[n] == 0x26
    @test read_page(s, p; at = 1) == copy(v) && all(k -> read_page(s, p; at = k, len = 1)[1] == v[k], 1:n)
    # one past the end: an empty read, a write fails
    @test read_page(s, p; at = n + 1) == UInt8[] && read_page(s, p; at = n + 1, len = 0) == UInt8[]
    for f in (() -> read_page(s, p; at = n + 2), () -> read_page(s, p; at = n, len = 2),
              () -> read_page!(zeros(UInt8, 2), s, p; at = n), () -> update_page!(s, p, UInt8[1]; at = n + 1),
              () -> write_page!(s, p, UInt8[1, 2]; at = n), () -> update_page!(s, p, UInt8[1], [true]; at = n + 1),
              () -> update_page!(s, p, [n + 1 => UInt8[1]]))
        err = try f() catch x; x end
        @test err isa MMSBError && err.name == "out_of_bounds"
    end
    # before the start: position 0 is not a byte
    for f in (() -> read_page(s, p; at = 0), () -> read_page!(zeros(UInt8, 1), s, p; at = 0),
              () -> update_page!(s, p, UInt8[1]; at = 0), () -> write_page!(s, p, UInt8[1]; at = 0),
              () -> update_page!(s, p, UInt8[1], [true]; at = 0), () -> update_page!(s, p, [0 => UInt8[1]]))
        err = try f() catch x; x end
        @test err isa MMSBError && err.name == "invalid_argument" && occursin("1-based", err.message)
    end
    close(v)
end
