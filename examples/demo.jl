# A tour of MMSB from Julia: `bash scripts/demo.sh` builds the library and runs this.
# (Directly: MMSB_LIB=target/release/libmmsb.so julia --project=. examples/demo.jl)
#
# Covers what the C ABI offers today: pages, deltas (plain, masked, sparse,
# composed, batched), compare-and-set, zero-copy views and reads. The log
# (checkpoint/replay), the dependency graph (propagation) and monitoring (stats)
# join this tour when their C functions land.
using MMSB

hex(bytes) = join(string.(bytes; base = 16, pad = 2), " ")

mmsb_start(max_page_size = 1 << 20) do state
    println("started: ", state)

    # Pages are zeroed, page-aligned buffers with an id, a size and an epoch.
    sensor = create_page(state, 64; name = "sensor")
    model = create_page(state, 64; name = "model")
    println("pages:   ", page_ids(state))

    # Plain bytes: the core records only what changed (the smallest delta).
    l = update_page(state, sensor, UInt8[0x10, 0x20, 0x30, 0x40])
    println("update_page (plain)  -> lsn ", Int(l), ", sensor[1:8] = ", hex(read_page(state, sensor; len = 8)))

    # Dense masked write: only the bytes whose mask bit is set are written.
    l = update_page(state, sensor, fill(0xff, 8), BitVector([1, 0, 1, 0, 1, 0, 1, 0]))
    println("update_page (masked) -> lsn ", Int(l), ", sensor[1:8] = ", hex(read_page(state, sensor; len = 8)))

    # Sparse runs: offset => bytes.
    l = update_page(state, model, [0 => UInt8[1, 2], 32 => Vector{UInt8}("mmsb")])
    println("update_page (sparse) -> lsn ", Int(l), ", model[33:36] = ", String(read_page(state, model; offset = 32, len = 4)))

    # Deltas are values: build, compose (⊕), apply to plain bytes, encode, route.
    a = Delta(0, UInt8[0xaa, 0xaa, 0xaa])
    b = Delta([1 => UInt8[0xbb]])
    ab = a ⊕ b
    println("a ⊕ b = ", ab, " applied to zeros: ", hex(zeros(UInt8, 4) ⊕ ab), " (", length(encode_delta(ab)), " bytes encoded)")
    println("route_delta!         -> lsn ", Int(route_delta!(state, model, ab)))

    # Batches route atomically: all deltas apply, in order, or none.
    lsns = route_batch!(state, [sensor => Delta(60, UInt8[1, 2, 3, 4]), model => delta_diff(zeros(UInt8, 8), ones(UInt8, 8))])
    println("route_batch!         -> lsns ", Int(first(lsns)), ":", Int(last(lsns)))

    # Compare-and-set on the page's epoch.
    e = epoch(state, sensor)
    update_page(state, sensor, UInt8[0x01]; expected_epoch = e)
    try
        update_page(state, sensor, UInt8[0x02]; expected_epoch = e)  # stale epoch
    catch err
        print("stale compare-and-set: "); showerror(stdout, err); println()
    end

    # Zero-copy view: live bytes, closed at the end of the block.
    page_view(state, model) do v
        println("view of model: ", v, ", first bytes ", hex(v[1:4]), ", sum ", sum(v))
    end

    # Read back and describe.
    for p in page_ids(state)
        i = page_info(state, p)
        println("  ", rpad(i.name, 7), " ", p, ": ", i.size, " bytes, epoch ", Int(i.epoch), ", ", i.location,
                ", first bytes ", hex(read_page(state, p; len = 8)))
    end
    println("last lsn: ", Int(lsn(state)))
end
println("done")
