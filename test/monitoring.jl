# Monitoring: counters, histograms, budgets, exports.

@test :delta_route in MMSB.metric_names() && :deltas_routed in MMSB.counter_names()
mmsb_start() do s
    set_monitoring!(s, true; sample_every = 1)
    p = create_page(s, 128)
    q = create_page(s, 128)
    for i in 1:50
        update_page!(s, isodd(i) ? p : q, UInt8[i]; at = i + 1)
    end
    @test stats_counter(s, :pages) == 2
    @test stats_counter(s, :deltas_routed) >= 50
    h = stats_histogram(s, :delta_route)
    @test h.count >= 1 && h.min_ns <= h.p50_ns <= h.max_ns
    st = get_stats(s)
    @test st.counters[:deltas_routed] == stats_counter(s, :deltas_routed)
    @test haskey(st.latencies, :delta_route)

    n0 = stats_histogram(s, :propagation_round).count
    MMSB.track_propagation_latency!(s, 1234)
    @test stats_histogram(s, :propagation_round).count == n0 + 1
    MMSB.track_delta_latency!(s, 10)
    track_latency!(s, :fsync, 99)
    @test stats_histogram(s, :fsync).max_ns >= 99

    v0 = stats_counter(s, :budget_violations)
    set_budget!(s, :latency_max, 100; metric = :replay)
    track_latency!(s, :replay, 1_000_000)
    @test stats_counter(s, :budget_violations) > v0
    set_budget!(s, :latency_max, 0; metric = :replay)   # removed
    @test_throws ArgumentError set_budget!(s, :sometimes, 1)
    @test_throws ArgumentError stats_counter(s, :no_such_counter)
    @test_throws ArgumentError track_latency!(s, :no_such_metric, 1)

    json = stats_json(s)
    @test startswith(strip(json), "{") && occursin("delta_route", json)
    @test occursin("deltas_routed", stats_prometheus(s))
    io = IOBuffer()
    print_stats(io, s)
    table = String(take!(io))
    @test occursin("delta_route", table)
    # the exact count of calls beside the timed (sampled) ones
    row = split(first(filter(l -> startswith(l, "delta_route"), split(table, '\n'))))
    @test split(split(table, '\n')[2])[1:3] == ["latency", "calls", "timed"]
    @test row[2] == string(stats_counter(s, :deltas_routed))

    reset_stats!(s)
    @test stats_histogram(s, :propagation_round).count == 0
    @test stats_counter(s, :pages) == 2          # gauges stay
    set_monitoring!(s, false)
end

# Numbers are Ints and show in decimal; the stats and the log info read as tables.
mktempdir() do dir
    mmsb_start(dir = joinpath(dir, "s")) do s
        p = create_page(s, 4096)
        l = 0
        for i in 1:9
            l = update_page!(s, p, UInt8[i])
        end
        @test l isa Int && lsn(s) isa Int && page_epoch(s, p) isa Int && page_info(s, p).epoch === 9
        @test repr(lsn(s)) == string(l) && l == 10          # create_page took lsn 1
        @test route_batch!(s, Pair{PageId,Delta}[]) === 1:0
        c = checkpoint_log!(s)
        @test c isa Int
        i = log_info(s)
        @test i isa MMSB.LogInfo && i.lsn === c && i.oldest_lsn isa Int
        txt = sprint(show, MIME("text/plain"), i)
        @test !occursin("0x", txt)
        @test occursin("\n  lsn                  $c\n", txt)
        @test occursin("\n  checkpoints          1\n", txt)
        @test startswith(sprint(show, i), "LogInfo(lsn $c, ")

        st = get_stats(s)
        @test st isa MMSB.Stats && st.counters[:deltas_routed] === 9
        @test stats_histogram(s, :delta_route).count isa Int
        txt = sprint(show, MIME("text/plain"), st)
        @test !occursin("0x", txt)
        lines = split(txt, '\n')
        @test length(lines) > 10                         # one line per metric and counter
        # delta_route: the exact count (9 routed) beside the timed sample
        row = split(lines[findfirst(l -> startswith(strip(l), "delta_route"), lines)])
        h = stats_histogram(s, :delta_route)
        @test row[2] == "9" && parse(Int, row[3]) == h.count && (h.sampled == 0 || row[4] == "sampled")
        @test occursin("calls", lines[2]) && occursin("timed", lines[2])
        @test any(l -> occursin(r"^  bytes_allocated +4096 \(4\.000 KiB\)$", l), lines)
        @test any(l -> occursin(r"^  pages +1$", l), lines)
        @test sprint(show, st) == "Stats(1 pages, 9 deltas routed, log $(Base.format_bytes(st.counters[:log_bytes])))"
    end
end

# The Prometheus endpoint: served on an ephemeral loopback port, scraped with a raw socket
using Sockets
function http_get(port, path)
    sock = Sockets.connect(Sockets.localhost, port)
    write(sock, "GET $path HTTP/1.1\r\nHost: localhost\r\n\r\n")
    resp = read(sock, String)   # the server closes the connection after answering
    close(sock)
    return resp
end
mmsb_start() do s
    p = create_page(s, 64)
    for i in 1:5
        update_page!(s, p, UInt8[i])
    end
    server = serve_metrics(s; port = 0)
    @test server isa MMSB.MetricsServer && isopen(server) && server.port > 0
    @test sprint(show, server) == "MetricsServer(http://127.0.0.1:$(server.port)/metrics)"
    resp = http_get(server.port, "/metrics")
    @test startswith(resp, "HTTP/1.1 200 OK\r\n") && occursin("Content-Type: text/plain; version=0.0.4", resp)
    body = split(resp, "\r\n\r\n"; limit = 2)[2]
    @test occursin("\nmmsb_deltas_routed_total 5\n", body)
    @test startswith(http_get(server.port, "/other"), "HTTP/1.1 404 ")
    # a taken port and a non-loopback address are named errors
    err = try serve_metrics(s; port = server.port) catch x; x end
    @test err isa MMSBError && err.name == "io" && occursin("cannot serve metrics", err.message)
    err = try serve_metrics(s; port = 0, addr = "0.0.0.0") catch x; x end
    @test err isa MMSBError && err.name == "invalid_argument" && occursin("loopback", err.message)
    @test_throws ArgumentError serve_metrics(s; port = 70000)
    port = server.port
    close(server)
    close(server)                                  # idempotent
    @test !isopen(server) && sprint(show, server) == "MetricsServer(closed)"
    @test_throws Base.IOError Sockets.connect(Sockets.localhost, port)   # nobody listens
    l = listen(Sockets.localhost, port)            # the port is free again
    close(l)
end
