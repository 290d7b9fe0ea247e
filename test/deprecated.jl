# The old names stay for one release: they do what the new ones do, and warn.

s = mmsb_start()
p = create_page(s, 16)
@test MMSB.update_page(s, p, UInt8[1, 2]; offset = 2) == lsn(s)          # 0-based offsets, as before
@test read_page(s, p; len = 4) == UInt8[0, 0, 1, 2]
MMSB.update_page(s, p, [0 => UInt8[5], 3 => UInt8[6]]; expected_epoch = 1)
@test read_page(s, p; len = 4) == UInt8[5, 0, 1, 6]
@test read_page(s, p; offset = 3, len = 1) == UInt8[6]                   # the old keyword of read_page
@test read_page!(zeros(UInt8, 2), s, p; offset = 2) == UInt8[1, 6]
@test_throws ArgumentError read_page(s, p; offset = 1, at = 3)
@test MMSB.write_page(s, p, UInt8[7]) == lsn(s)
@test MMSB.epoch(s, p) == page_epoch(s, p) == 3
MMSB.free_page(s, p)
@test isempty(page_ids(s))
close(s)

# The 0-based positional Delta and command forms write the bytes they wrote before
z = zeros(UInt8, 8)
@test MMSB.apply(Delta(0, UInt8[1]), z) == MMSB.apply(Delta(UInt8[1]; at = 1), z) == UInt8[1, 0, 0, 0, 0, 0, 0, 0]
@test MMSB.apply(Delta(7, UInt8[9]), z) == MMSB.apply(Delta(UInt8[9]; at = 8), z)
@test_throws MMSBError MMSB.apply(Delta(8, UInt8[9]), z)
@test MMSB.apply(Delta(6, UInt8[5, 6], [false, true]), z) == MMSB.apply(Delta(UInt8[5, 6], [false, true]; at = 7), z)
@test MMSB.apply(Delta([0 => UInt8[1], 7 => UInt8[8]]), z) == MMSB.apply(Delta(1 => UInt8[1], 8 => UInt8[8]), z)
@test CopyCommand(3, 5, 2) === CopyCommand(2; src_at = 4, dst_at = 6)
@test FillCommand(7, 1, 0xaa) === FillCommand(1, 0xaa; dst_at = 8)
@test OpCommand(:add, UInt32, 0, 4, 8) === OpCommand(:add, UInt32, 8; dst_at = 5)
mmsb_start() do s
    a, b = create_page(s, 8), create_page(s, 8)
    add_dependency!(s, a, b; commands = [CopyCommand(7, 0, 1), FillCommand(7, 1, 0x01)])
    update_page!(s, a, UInt8[0x42]; at = 8)
    propagate!(s, a)
    @test read_page(s, b) == UInt8[0x42, 0, 0, 0, 0, 0, 0, 0x01]
end
# still exported, so old code runs unchanged
@test all(n -> n in names(MMSB), first.(MMSB.DEPRECATED))
@test !any(n -> n in names(MMSB), MMSB.PUBLIC) && all(n -> isdefined(MMSB, n), MMSB.PUBLIC)

# The warning, in a child process: Julia 1.5 and later warn only with
# --depwarn=yes (Pkg.test sets it), and --depwarn=error makes it an error.
code = """
using MMSB
s = mmsb_start(); p = create_page(s, 8)
update_page(s, p, UInt8[1]); write_page(s, p, UInt8[2]); epoch(s, p); read_page(s, p; offset = 1); free_page(s, p)
Delta(0, UInt8[1]); Delta(0, UInt8[1], [true]); Delta([0 => UInt8[1]])
CopyCommand(0, 0, 1); FillCommand(0, 1, 0x00); OpCommand(:add, UInt8, 0, 0, 1)
"""
julia = `$(Base.julia_cmd()) --startup-file=no --project=$(MMSB.package_root())`
# (to a file: an IOBuffer is filled by a task that may still be copying when `run` returns)
path, io = mktemp()
run(pipeline(`$julia --depwarn=yes -e $code`; stderr = io))
close(io)
msg = read(path, String)
rm(path)
for (old, new) in MMSB.DEPRECATED
    @test occursin("`$old", msg) && occursin("use `$new", msg)
end
@test occursin("`read_page(...; offset = n)` is deprecated: byte positions are 1-based, use `at = n + 1`", msg)
for (old, new) in ("Delta(offset, bytes)" => "Delta(bytes; at = offset + 1)",
                    "Delta(offset, bytes, mask)" => "Delta(bytes, mask; at = offset + 1)",
                    "Delta([offset => bytes, ...])" => "Delta(offset + 1 => bytes, ...)",
                    "CopyCommand(src_offset, dst_offset, len)" =>
                        "CopyCommand(len; src_at = src_offset + 1, dst_at = dst_offset + 1)",
                    "FillCommand(dst_offset, len, value)" => "FillCommand(len, value; dst_at = dst_offset + 1)",
                    "OpCommand(op, lane, src_offset, dst_offset, len)" =>
                        "OpCommand(op, lane, len; src_at = src_offset + 1, dst_at = dst_offset + 1)")
    @test occursin("`$old` is deprecated: byte positions are 1-based, use `$new`", msg)
end
p = run(pipeline(ignorestatus(`$julia --depwarn=error -e $code`); stderr = devnull))
@test p.exitcode != 0
# each old form alone is an error under --depwarn=error (the new forms are not)
for old in ("Delta(0, UInt8[1])", "Delta(0, UInt8[1], [true])", "Delta([0 => UInt8[1]])", "CopyCommand(0, 0, 1)",
            "FillCommand(0, 1, 0x00)", "OpCommand(:add, UInt8, 0, 0, 1)")
    q = run(pipeline(ignorestatus(`$julia --depwarn=error -e "using MMSB; $old"`); stderr = devnull))
    @test q.exitcode != 0
end
new_forms = "using MMSB; Delta(UInt8[1]; at = 2); Delta(UInt8[1], [true]); Delta(1 => UInt8[1]); CopyCommand(1); " *
            "FillCommand(1, 0x00; dst_at = 2); OpCommand(:add, UInt8, 1; src_at = 3)"
@test success(pipeline(`$julia --depwarn=error -e $new_forms`; stderr = devnull))
