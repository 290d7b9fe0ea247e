# Delta objects: constructors, algebra, codec, apply, routing, batches.

w = Delta(UInt8[1, 2, 3]; at = 3)
@test isopen(w) && !MMSB.isdense(w) && MMSB.written_bytes(w) == 3
@test MMSB.apply(w, zeros(UInt8, 6)) == UInt8[0, 0, 1, 2, 3, 0]
@test zeros(UInt8, 6) ⊕ w == UInt8[0, 0, 1, 2, 3, 0]
@test occursin("3 bytes written", sprint(show, w))

dense = Delta(UInt8[9, 9, 9, 9], BitVector([1, 0, 0, 1]))
@test MMSB.written_bytes(dense) == 2
@test MMSB.apply(dense, ones(UInt8, 5)) == UInt8[9, 1, 1, 9, 1]
@test MMSB.apply(Delta(UInt8[4, 4], [false, true]; at = 2), zeros(UInt8, 3)) == UInt8[0, 0, 4]

sparse = Delta(1 => UInt8[7], 4 => "ab")
@test MMSB.written_bytes(sparse) == 3
@test MMSB.apply(sparse, zeros(UInt8, 6)) == UInt8[7, 0, 0, 'a', 'b', 0]

# diff: the smallest delta turning old into new
old = rand(MersenneTwister(1), UInt8, 200)
new = copy(old); new[5] ⊻= 0xff; new[150:160] .= 0x00
d = delta_diff(old, new)
@test MMSB.apply(d, old) == new
@test MMSB.written_bytes(d) <= 12
@test MMSB.written_bytes(delta_diff(old, old)) == 0
err = try delta_diff(old, new[1:10]) catch x; x end
@test err isa MMSBError && err.name == "length_mismatch"

# composition: applying a ⊕ b equals applying a then b
a = Delta(UInt8[1, 1, 1, 1])
b = Delta(3 => UInt8[2, 2, 2])
ab = a ⊕ b
@test ab isa Delta
@test MMSB.apply(ab, zeros(UInt8, 6)) == MMSB.apply(b, MMSB.apply(a, zeros(UInt8, 6))) == UInt8[1, 1, 2, 2, 2, 0]
@test MMSB.apply(MMSB.compose(b, a), zeros(UInt8, 6)) == UInt8[1, 1, 1, 1, 2, 0]
rng = MersenneTwister(3)
for _ in 1:50
    base = rand(rng, UInt8, 64)
    ds = [rand(rng, Bool) ? Delta(rand(rng, UInt8, rand(rng, 1:4)); at = rand(rng, 1:61)) :
          Delta(rand(rng, UInt8, 8), bitrand(rng, 8); at = rand(rng, 1:57)) for _ in 1:3]
    @test MMSB.apply(reduce(⊕, ds), base) == foldl((x, dd) -> MMSB.apply(dd, x), ds; init = base)
end

# apply! in place; out of bounds is an error
buf = zeros(UInt8, 4)
@test MMSB.apply!(buf, Delta(UInt8[5]; at = 2)) === buf && buf == UInt8[0, 5, 0, 0]
err = try MMSB.apply(Delta(UInt8[1, 2]; at = 4), zeros(UInt8, 4)) catch x; x end
@test err isa MMSBError && err.name == "out_of_bounds"

# codec round trip; malformed input is an error
for x in (w, dense, sparse, d, ab)
    enc = encode_delta(x)
    y = decode_delta(enc)
    @test encode_delta(y) == enc
    @test MMSB.apply(y, zeros(UInt8, 256)) == MMSB.apply(x, zeros(UInt8, 256))
end
big = Delta(rand(UInt8, 1000))                  # larger than the first encode buffer
@test MMSB.apply(decode_delta(encode_delta(big)), zeros(UInt8, 1000)) == MMSB.apply(big, zeros(UInt8, 1000))
@test_throws MMSBError decode_delta(UInt8[0xff, 0xff, 0xff])
@test_throws MMSBError decode_delta(vcat(encode_delta(w), 0x00))   # trailing bytes

# close: idempotent, later use is an MMSBError
c = Delta(UInt8[1])
close(c); close(c)
@test !isopen(c)
@test sprint(show, c) == "Delta(closed)"
err = try MMSB.apply(c, zeros(UInt8, 2)) catch x; x end
@test err isa MMSBError && err.name == "closed"
@test_throws MMSBError c ⊕ w
@test_throws MMSBError encode_delta(c)

# routing
mmsb_start() do s
    p = create_page(s, 16)
    q = create_page(s, 16)
    l0 = lsn(s)
    @test route_delta!(s, p, Delta(UInt8[1, 2])) == l0 + 1
    @test route_delta!(s, p, sparse) == l0 + 2                 # deltas are reusable
    @test route_delta!(s, q, sparse) == l0 + 3
    @test read_page(s, p; len = 5) == UInt8[7, 2, 0, 'a', 'b']
    e = page_epoch(s, p)
    @test route_delta!(s, p, w; expected_epoch = e) == l0 + 4
    @test_throws MMSBError route_delta!(s, p, w; expected_epoch = e)
    @test_throws MMSBError route_delta!(s, p, Delta(UInt8[1, 2]; at = 16))   # out of bounds

    # batches: atomic, in order, LSN range returned
    r = route_batch!(s, [p => Delta(UInt8[0xaa]), q => Delta(UInt8[0xbb]), (p, Delta(UInt8[0xcc]; at = 2), nothing)])
    @test r == (l0 + 5):(l0 + 7)
    @test lsn(s) == l0 + 7
    @test read_page(s, p; len = 2) == UInt8[0xaa, 0xcc] && read_page(s, q; len = 1) == UInt8[0xbb]
    before_p, before_q = read_page(s, p), read_page(s, q)
    err = try route_batch!(s, [p => Delta(UInt8[1]), q => Delta(UInt8[1]), PageId(999) => Delta(UInt8[1])]) catch x; x end
    @test err isa MMSBError && err.name == "unknown_page"
    @test read_page(s, p) == before_p && read_page(s, q) == before_q && lsn(s) == l0 + 7   # all or nothing
    err = try route_batch!(s, [(p, Delta(UInt8[1]), page_epoch(s, p) + 5)]) catch x; x end
    @test err isa MMSBError && err.name == "epoch_conflict"
    @test isempty(route_batch!(s, Pair{PageId,Delta}[]))
    @test_throws ArgumentError route_batch!(s, [1 => 2])
end

# 1-based positions at both edges: the first byte, the last byte, one past the end
for page_size in (8,)
    z = zeros(UInt8, page_size)
    @test MMSB.apply(Delta(UInt8[1]; at = 1), z) == UInt8[1, 0, 0, 0, 0, 0, 0, 0]                # first byte
    @test MMSB.apply(Delta(UInt8[9]; at = 8), z) == UInt8[0, 0, 0, 0, 0, 0, 0, 9]                # last byte
    @test MMSB.apply(Delta(UInt8[]; at = 9), z) == z                                               # empty, one past: allowed
    @test_throws MMSBError MMSB.apply(Delta(UInt8[1]; at = 9), z)                                 # one past
    @test MMSB.apply(Delta(UInt8[5, 6], [true, true]; at = 7), z)[7:8] == UInt8[5, 6]
    @test_throws MMSBError MMSB.apply(Delta(UInt8[5, 6], [true, true]; at = 8), z)
    @test MMSB.apply(Delta(1 => UInt8[1], 8 => UInt8[8]), z) == UInt8[1, 0, 0, 0, 0, 0, 0, 8]
    @test_throws MMSBError MMSB.apply(Delta(9 => UInt8[1]), z)
    err = try Delta(UInt8[1]; at = 0) catch x; x end
    @test err isa MMSBError && err.name == "invalid_argument" && occursin("1-based", err.message)
    err = try Delta(0 => UInt8[1]) catch x; x end
    @test err isa MMSBError && err.name == "invalid_argument" && occursin("1-based", err.message)
end
@test MMSB.apply(Delta("ab"; at = 2), zeros(UInt8, 3)) == UInt8[0, 'a', 'b']
@test MMSB.written_bytes(Delta()) == 0
# the same bytes as update_page! with the same `at`
mmsb_start() do s
    p = create_page(s, 16)
    q = create_page(s, 16)
    for (bytes, at) in ((UInt8[1, 2], 1), (UInt8[3], 16), (UInt8[4, 5, 6], 7))
        update_page!(s, p, bytes; at = at)
        route_delta!(s, q, Delta(bytes; at = at))
    end
    @test read_page(s, p) == read_page(s, q) && read_page(s, q)[[1, 2, 7, 8, 9, 16]] == UInt8[1, 2, 4, 5, 6, 3]
end
