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
# still exported, so old code runs unchanged
@test all(n -> n in names(MMSB), first.(MMSB.DEPRECATED))
@test !any(n -> n in names(MMSB), MMSB.PUBLIC) && all(n -> isdefined(MMSB, n), MMSB.PUBLIC)

# The warning, in a child process: Julia 1.5 and later warn only with
# --depwarn=yes (Pkg.test sets it), and --depwarn=error makes it an error.
code = """
using MMSB
s = mmsb_start(); p = create_page(s, 8)
update_page(s, p, UInt8[1]); write_page(s, p, UInt8[2]); epoch(s, p); read_page(s, p; offset = 1); free_page(s, p)
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
p = run(pipeline(ignorestatus(`$julia --depwarn=error -e $code`); stderr = devnull))
@test p.exitcode != 0
