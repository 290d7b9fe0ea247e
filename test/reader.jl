# Readers (mmsb_open(dir; readonly = true)): a writer here, a reader in a second Julia
# process that waits for LSNs and checks every snapshot against the writer's history.

# Write `e` (0-based) to page `k` of the workload: the whole page, one byte value.
fill_of(k, e) = UInt8((31 * k + 7 * e) % 251)

const READER_CHILD = raw"""
using MMSB
dir, npages, nwrites = ARGS[1], parse(Int, ARGS[2]), parse(Int, ARGS[3])
fill_of(k, e) = UInt8((31 * k + 7 * e) % 251)
r = mmsb_open(dir; readonly = true)
final = npages + npages * nwrites
checked = 0
last = 0
target = npages
while target < final
    global target = min(final, target + 3)
    got = wait_lsn(r, target; timeout = 60)
    got >= target || error("waited for $target, got $got ($(writer_status(r)))")
    got >= last || error("LSN went back from $last to $got")
    global last = got
    for k in 1:npages
        buf = zeros(UInt8, 4096)
        info = read_page!(buf, r, PageId(k))
        # Page k's write e has LSN npages + e * npages + k (round-robin).
        want_epoch = count(e -> npages + (e - 1) * npages + k <= target, 1:nwrites)
        info.epoch >= want_epoch || error("page $k: epoch $(info.epoch) older than at LSN $target")
        expect = info.epoch == 0 ? 0x00 : fill_of(k, info.epoch - 1)
        all(==(expect), buf) || error("page $k: torn or wrong bytes at epoch $(info.epoch)")
        global checked += 1
    end
end
v = page_view(r, PageId(1))
GC.@preserve v unsafe_load(pointer(v)) == v[1] || error("pointer(view) does not read the view")
println("CHECKED ", checked)
close(r)
"""

mktempdir() do dir
    npages, nwrites = 4, 150
    s = mmsb_start(dir = dir, file_backed_pages = true)
    for k in 1:npages
        create_page(s, 4096; name = "p$k")
    end
    out = Pipe()
    cmd = `$(Base.julia_cmd()) --startup-file=no --project=$(MMSB.package_root()) -e $READER_CHILD $dir $npages $nwrites`
    child = run(pipeline(cmd; stdout = out, stderr = stderr); wait = false)
    close(out.in)
    for e in 0:(nwrites - 1), k in 1:npages
        write_page!(s, PageId(k), fill(fill_of(k, e), 4096))
        e % 10 == 0 && sleep(0.002)   # let the reader block in its waits now and then
    end
    text = read(out, String)
    wait(child)
    @test success(child)
    m = match(r"CHECKED (\d+)", text)
    @test m !== nothing && parse(Int, m.captures[1]) > 0
    # The same checks from this process, with the writer closed.
    close(s)
    mmsb_open(dir) do r
        @test writer_status(r) === :closed
        @test lsn(r) == npages + npages * nwrites == durable_lsn(r)
        @test read_page(r, PageId(2)) == fill(fill_of(2, nwrites - 1), 4096)
        @test wait_lsn(r, lsn(r) + 1) == lsn(r)   # no writer: returns at once
    end
end

# Named errors, and a wait that lets other tasks run.
mktempdir() do dir
    e = expect_error(() -> mmsb_open(dir), "unsupported")
    @test occursin("file_backed_pages", e.message)
    @test_throws ArgumentError mmsb_open(dir; readonly = false)
    mmsb_start(dir = dir, file_backed_pages = true) do s
        p = create_page(s, 10)
        r = mmsb_open(dir)
        expect_error(() -> read_page(r, PageId(99)), "unknown_page")
        expect_error(() -> read_page!(zeros(UInt8, 3), r, p), "length_mismatch")
        ticks = Ref(0)
        ticker = @async for _ in 1:20
            ticks[] += 1
            sleep(0.005)
        end
        waiter = @async wait_lsn(r, lsn(s) + 1; timeout = 30)
        wait(ticker)
        @test ticks[] == 20 && !istaskdone(waiter)   # other tasks ran while it waited
        update_page!(s, p, b"x")
        @test fetch(waiter) == lsn(s)
        @test wait_lsn(r, lsn(s) + 5; timeout = 0.05) == lsn(s)   # a timeout returns the LSN there is
        close(r)
        close(r)
        expect_error(() -> lsn(r), "closed")
    end
end
