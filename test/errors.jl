# Error paths: every misuse is an MMSBError (or an ArgumentError for Julia-side
# argument shapes), never a crash.

# errof, expect_error: test/helpers.jl

s = mmsb_start(max_page_size = 1 << 20)
p = create_page(s, 32)
l0 = lsn(s)
bad = PageId(12345)

# bad page ids
for f in (() -> update_page!(s, bad, UInt8[1]), () -> write_page!(s, bad, UInt8[1]),
          () -> update_page!(s, bad, UInt8[1], [true]), () -> update_page!(s, bad, [1 => UInt8[1]]),
          () -> read_page(s, bad), () -> read_page!(zeros(UInt8, 1), s, bad), () -> page_info(s, bad),
          () -> page_epoch(s, bad), () -> page_name(s, bad), () -> free_page!(s, bad), () -> page_view(s, bad),
          () -> route_delta!(s, bad, Delta(UInt8[1])))
    expect_error(f, "unknown_page")
end

# the error carries code, name and the native message; showerror prints them
e = expect_error(() -> update_page!(s, bad, UInt8[1]), "unknown_page")
@test e.code == MMSB.LibMMSB.MMSB_STATUS_CODE_UNKNOWN_PAGE
@test occursin("12345", e.message)
msg = sprint(showerror, e)
@test startswith(msg, "MMSBError: ") && occursin("unknown_page", msg) && occursin("code 3", msg)
@test MMSB.status_name(999) == "unknown"

# wrong lengths and bounds
expect_error(() -> update_page!(s, p, zeros(UInt8, 33)), "out_of_bounds")
expect_error(() -> update_page!(s, p, UInt8[1]; at = 33), "out_of_bounds")
expect_error(() -> write_page!(s, p, zeros(UInt8, 40)), "out_of_bounds")
expect_error(() -> update_page!(s, p, [31 => UInt8[1, 2, 3]]), "out_of_bounds")
expect_error(() -> read_page(s, p; at = 31, len = 5), "out_of_bounds")
expect_error(() -> read_page(s, p; at = 34), "out_of_bounds")
expect_error(() -> read_page!(zeros(UInt8, 64), s, p), "out_of_bounds")
expect_error(() -> update_page!(s, p, UInt8[1]; at = typemax(Int)), "out_of_bounds")
expect_error(() -> update_page!(s, p, UInt8[1]; at = 0), "invalid_argument")
expect_error(() -> create_page(s, -5), "invalid_argument")
expect_error(() -> create_page(s, 0), "invalid_argument")
expect_error(() -> create_page(s, 2 << 20), "invalid_argument")
expect_error(() -> create_page(s, 8; name = "a\0b"), "invalid_argument")
@test_throws ArgumentError create_page(s, 8; location = :disk)

# mask length mismatch (bit level and byte level)
expect_error(() -> update_page!(s, p, UInt8[1, 2, 3], BitVector([1, 0])), "length_mismatch")
expect_error(() -> update_page!(s, p, UInt8[1, 2, 3], [true, true, true, true]), "length_mismatch")
expect_error(() -> Delta(UInt8[1, 2], [true]), "length_mismatch")
@test read_page(s, p) == zeros(UInt8, 32)   # nothing was written by the failures above
@test lsn(s) == l0

# malformed sparse runs
@test_throws ArgumentError update_page!(s, p, [1 => 1])
@test_throws ArgumentError update_page!(s, p, ["x" => UInt8[1]])

# use after close: the state, its pages and every call on it
close(s)
for f in (() -> create_page(s, 8), () -> update_page!(s, p, UInt8[1]), () -> write_page!(s, p, UInt8[1]),
          () -> update_page!(s, p, UInt8[1], [true]), () -> update_page!(s, p, [1 => UInt8[1]]),
          () -> read_page(s, p), () -> page_info(s, p), () -> page_ids(s), () -> free_page!(s, p),
          () -> page_view(s, p), () -> route_delta!(s, p, Delta(UInt8[1])),
          () -> route_batch!(s, [p => Delta(UInt8[1])]))
    expect_error(f, "closed")
end
@test !isopen(s)

# Messages speak Julia: ranges as a:b, configuration fields as mmsb_start keywords.
@test MMSB.julia_syntax("capacity 0 is not in 1..=1048576") == "capacity 0 is not in 1:1048576"
@test MMSB.julia_syntax("open it with `logging: true`") == "open it with `logging = true`"
@test MMSB.julia_syntax("GPU use is off (Config::gpu = false)") == "GPU use is off (gpu = false)"
mmsb_start() do s
    err = try subscribe(s; capacity = 0) catch x; x end
    @test err isa MMSBError && occursin("1:1048576", err.message) && !occursin("..=", err.message)
    err = try create_page(s, 0) catch x; x end
    @test err isa MMSBError && occursin(r"must be 1:\d+ bytes", err.message)
    err = try checkpoint_log!(s) catch x; x end
    @test err isa MMSBError && occursin("`logging = true`", err.message) && !occursin("logging:", err.message)
end
@test MMSB.julia_syntax("5 bytes at offset 30 are out of bounds for a page of 32 bytes") ==
      "bytes 31:35 (1-based) are out of bounds for a page of 32 bytes"
mmsb_start() do s
    p = create_page(s, 32)
    err = try update_page!(s, p, UInt8[1]; at = 33) catch x; x end
    @test err isa MMSBError && err.name == "out_of_bounds" && occursin("bytes 33:33 (1-based)", err.message)
end
