# A tour of MMSB from Julia: `bash scripts/demo.sh` builds the library and runs this.
# (Directly: MMSB_LIB=target/release/libmmsb.so julia --project=. examples/demo.jl)
#
# Pages, deltas (plain, masked, sparse, composed, batched), compare-and-set,
# zero-copy views, the transaction log (checkpoint, replay), the dependency graph
# (propagation, events) and monitoring (stats).
using MMSB

hex(bytes) = join(string.(bytes; base = 16, pad = 2), " ")

dir = mktempdir()   # the log and checkpoints live here
mmsb_start(dir = dir, max_page_size = 1 << 20) do state
    println("started: ", state)

    # Pages are zeroed, page-aligned buffers with an id, a size and an epoch.
    sensor = create_page(state, 64; name = "sensor")
    model = create_page(state, 64; name = "model")
    println("pages:   ", page_ids(state))

    # Plain bytes: the core records only what changed (the smallest delta).
    l = update_page!(state, sensor, UInt8[0x10, 0x20, 0x30, 0x40])
    println("update_page! (plain)  -> lsn ", Int(l), ", sensor[1:8] = ", hex(read_page(state, sensor; len = 8)))

    # Dense masked write: only the bytes whose mask bit is set are written.
    l = update_page!(state, sensor, fill(0xff, 8), BitVector([1, 0, 1, 0, 1, 0, 1, 0]))
    println("update_page! (masked) -> lsn ", Int(l), ", sensor[1:8] = ", hex(read_page(state, sensor; len = 8)))

    # Sparse runs: position => bytes (1-based, as everywhere in the Julia API).
    l = update_page!(state, model, [1 => UInt8[1, 2], 33 => Vector{UInt8}("mmsb")])
    println("update_page! (sparse) -> lsn ", Int(l), ", model[33:36] = ", String(read_page(state, model; at = 33, len = 4)))

    # Deltas are values: build, compose (⊕), apply to plain bytes, encode, route.
    a = Delta(UInt8[0xaa, 0xaa, 0xaa])
    b = Delta(2 => UInt8[0xbb])
    ab = a ⊕ b
    println("a ⊕ b = ", ab, " applied to zeros: ", hex(zeros(UInt8, 4) ⊕ ab), " (", length(encode_delta(ab)), " bytes encoded)")
    println("route_delta!         -> lsn ", Int(route_delta!(state, model, ab)))

    # Batches route atomically: all deltas apply, in order, or none.
    lsns = route_batch!(state, [sensor => Delta(UInt8[1, 2, 3, 4]; at = 61), model => delta_diff(zeros(UInt8, 8), ones(UInt8, 8))])
    println("route_batch!         -> lsns ", Int(first(lsns)), ":", Int(last(lsns)))

    # Compare-and-set on the page's epoch.
    e = page_epoch(state, sensor)
    update_page!(state, sensor, UInt8[0x01]; expected_epoch = e)
    try
        update_page!(state, sensor, UInt8[0x02]; expected_epoch = e)  # stale epoch
    catch err
        print("stale compare-and-set: "); showerror(stdout, err); println()
    end

    # Zero-copy view: live bytes, closed at the end of the block.
    page_view(state, model) do v
        println("view of model: ", v, ", first bytes ", hex(v[1:4]), ", sum ", sum(v))
    end

    # The dependency graph: `total` follows `sensor` (copy its first 4 bytes, add them lane-wise).
    total = create_page(state, 64; name = "total")
    events = subscribe(state; events = [:propagation_done, :checkpoint])
    add_dependency!(state, sensor, total; commands = [CopyCommand(4), OpCommand(:add, UInt8, 4)])
    add_dependency!(state, total, model; commands = [(src, dst) -> (dst[60:64] .= src[1:5]; nothing)])  # a Julia transform
    update_page!(state, sensor, UInt8[1, 2, 3, 4])
    r = propagate!(state, sensor)
    println("propagate! -> recomputed ", r.recomputed, " pages; total[1:4] = ", hex(read_page(state, total; len = 4)),
            ", model[60:64] = ", hex(read_page(state, model; at = 60)))
    println("propagation order: ", topo_order(state))

    # The log: replay to an earlier LSN into a read-only copy, then checkpoint.
    before = lsn(state)
    update_page!(state, sensor, fill(0x77, 8))
    replay_log(state, before) do old
        println("replay_log(lsn ", Int(before), "): sensor[1:8] = ", hex(read_page(old, sensor; len = 8)),
                " (now ", hex(read_page(state, sensor; len = 8)), ")")
    end
    c = checkpoint_log!(state)
    println("checkpoint_log! -> lsn ", c)
    show(stdout, MIME("text/plain"), log_info(state)); println()
    println("events:")
    for e in poll_events(events)
        println("  ", e)
    end
    close(events)

    # Read back and describe: a state is a collection of its pages.
    show(stdout, MIME("text/plain"), state); println()
    for p in state
        println("  ", rpad(page_info(state, p).name, 7), " first bytes ", hex(read_page(state, p; len = 8)))
    end
    println("last lsn: ", lsn(state))
    println()
    show(stdout, MIME("text/plain"), get_stats(state)); println()
end
println("done")
