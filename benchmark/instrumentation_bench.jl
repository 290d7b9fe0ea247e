# Cost of compiler instrumentation (issue 19, item 14), every figure from the
# same run, against its goal:
#
#   julia --project=. benchmark/instrumentation_bench.jl [N]
#
# 1. CPU overhead of a compile-heavy workload, capture on vs off (goal <= 1.3x).
#    The workload defines N fresh groups of functions (a top function with a
#    loop, a comprehension helper and a @noinline leaf) and calls each top
#    function once, so almost all of its time is type inference and code
#    generation. Each mode runs in a child process of its own (nothing
#    compiled by one mode helps the other), once:
#      off   the workload alone;
#      on    enable_instrumentation, the workload, flush_instrumentation.
#    Both modes first compile and run one warm-up group (and, with
#    instrumentation, flush it): the one-time compilation of MMSB's rendering
#    (and of Base's IR printing) is reported apart, as "first command".
# 2. First-command latency after `enable_instrumentation()` (goal <= 1 s): in
#    a fresh process, the time of the first command after enabling (define and
#    call a function), run through the REPL's AST transform, against the same
#    command without instrumentation; then the idle time until the REPL has
#    rendered it to pages (deferred flush; 0 before deferral), and the next
#    command (before deferral it starts with that flush). A command typed
#    before the idle flush is done waits for it: "first" + "idle" bounds it.
# 3. Bytes per captured instance (goal: half of 16 KB of pages and 8 KB of
#    log, the figures before issue 19): pages (sizes as created, continuation
#    pages included) and log bytes written by the workload's capture, from a
#    child with a logged state.
# 4. The flush a REPL command starts with, when nothing new was compiled and
#    after one definition (no goal; the walk of compiled instances).
# 5. With `--tools` (after N): a fourth mode, "tools", as "on" with the
#    options of issue 19 items 9–11 (`timing`, `invalidations` where the
#    version has the log, `locations`), and its CPU against "on" and "off".
# Timings come from one run on a shared machine: expect noise of 10-20%.
using MMSB
using Printf

const SELF = @__FILE__
const ROOT = dirname(@__DIR__)

const N = length(ARGS) >= 2 && ARGS[1] == "--child" ? parse(Int, ARGS[3]) :
          length(ARGS) >= 1 ? parse(Int, ARGS[1]) : 100

function define_group(i::Int)
    leaf, mid, top = Symbol(:bench_leaf_, i), Symbol(:bench_mid_, i), Symbol(:bench_top_, i)
    Core.eval(Main, quote
        @noinline $leaf(x::Vector{Float64}) = sum(abs2, x) * $i + length(x)
        $mid(x) = [$leaf(x) + j for j in 1:3]
        function $top(v)
            s = 0.0
            for y in $mid(v)
                s += y > $i ? sqrt(y) : y
            end
            return s + $i
        end
    end)
    return getfield(Main, top)
end

run_group(i) = Base.invokelatest(define_group(i), [1.0, 2.0, 3.0])

"CPU seconds used by this process so far (less sensitive than wall time to other load on the machine)."
cpu_seconds() = ccall(:clock, Clong, ()) / 1_000_000 # CLOCKS_PER_SEC is 10^6 (POSIX)

# The options of issue 19 items 9–11 ("tools" mode).
tools_options() = (timing = true, invalidations = VERSION >= v"1.6", locations = VERSION < v"1.12.0-DEV")

function child(mode::String, n::Int)
    on = mode != "off"
    state = mode == "log" ? mmsb_start(; logging = true) : mmsb_start()
    c0, t0 = cpu_seconds(), time_ns()
    on && (mode == "tools" ? enable_instrumentation(state; tools_options()...) : enable_instrumentation(state))
    te = time_ns()
    # The first command as the REPL runs it (its AST transform's prefix, then
    # the command), the idle time after it, and the next command. Before
    # deferral the prefix flushes, so the first command's compilation is
    # rendered by the next command; with it (`_IDLE_DEFER`), by the idle task.
    defer = on && isdefined(MMSB, :_IDLE_DEFER)
    defer && (MMSB._IDLE_DEFER[] = true)
    repl(ex) = Core.eval(Main, MMSB._repl_transform(ex))
    repl(:(run_group(0)))
    tf = time_ns()
    # The REPL is idle (the user reads the result): the idle task flushes.
    while defer && (MMSB._IDLE_PENDING[] || MMSB._IDLE_RUNNING[])
        sleep(0.01)
    end
    ti = time_ns()
    repl(:(nothing))
    tn = time_ns()
    defer && (MMSB._IDLE_DEFER[] = nothing)
    on && flush_instrumentation(state)
    c1, t1 = cpu_seconds(), time_ns()
    log0 = mode == "log" ? log_info(state).log_bytes : 0
    for i in 1:n
        run_group(i)
    end
    tc = time_ns()
    captured = on ? flush_instrumentation(state) : 0
    c2, t2 = cpu_seconds(), time_ns()
    log1 = mode == "log" ? log_info(state).log_bytes : 0
    stats = on ? ir_bytes(state) : (instances = 0, text = 0, pages = 0)
    # What a REPL command pays at its start: a flush with nothing new (the walk
    # of compiled instances), and one after a definition (a new world).
    t3 = time_ns()
    on && flush_instrumentation(state)
    t4 = time_ns()
    Core.eval(Main, :(bench_defined_late(x) = x + 1))
    t5 = time_ns()
    on && flush_instrumentation(state)
    t6 = time_ns()
    @printf("RESULT idle=%.4f next=%.4f cpuwarmup=%.4f cpuworkload=%.4f enable=%.4f first=%.4f workload=%.4f flush=%.4f captured=%d instances=%d text=%d pagebytes=%d logbytes=%d errors=%d emptyflush=%.4f defflush=%.4f\n",
            (ti - tf) / 1e9, (tn - ti) / 1e9, c1 - c0, c2 - c1, (te - t0) / 1e9, (tf - te) / 1e9, (t2 - t1) / 1e9, (t2 - tc) / 1e9, captured,
            stats.instances, stats.text, stats.pages, log1 - log0, on ? instrumentation_status(state).errors : 0,
            (t4 - t3) / 1e9, (t6 - t5) / 1e9)
    on && disable_instrumentation(state)
end

# Bytes of IR text and of IR pages (sizes as created, continuation pages
# included), over all captured instances.
function ir_bytes(state)
    m = MMSB.instrumentation_manager(state)
    more(s) = hasfield(typeof(s), :more) ? s.more : Tuple{MMSB.PageId,Int}[] # also runs on the code before issue 19
    text = sum(sizeof(s.text) + MMSB.IR_HEADER * (1 + length(more(s))) for s in values(m.slots))
    pages = sum(s.size + (isempty(more(s)) ? 0 : sum(last, more(s))) for s in values(m.slots))
    # The index, logs and line tables of issue 19 items 9–13 (absent before them).
    isdefined(MMSB, :_tools_page_bytes) && (pages += MMSB._tools_page_bytes(state))
    return (instances = length(m.instances), text = text, pages = pages)
end

function run_child(mode::String, n::Int)
    cmd = `$(Base.julia_cmd()) --startup-file=no --project=$ROOT $SELF --child $mode $n`
    out = read(cmd, String)
    m = match(r"RESULT (.*)", out)
    m === nothing && error("child ($mode) printed no result:\n$out")
    return Dict(Symbol(k) => parse(Float64, v) for (k, v) in (split(kv, "=") for kv in split(m.captures[1])))
end

function main(n::Int, tools::Bool)
    println("instrumentation_bench: N = $n function groups, Julia $VERSION, one child process per mode")
    off = run_child("off", n)
    on = run_child("on", n)
    lg = run_child("log", n)
    if tools
        tl = run_child("tools", n)
        @printf("tools %s: workload CPU %.3f s, %.2fx of on, %.2fx of off; first command + enable CPU %.2fx of on; flush %.3f s\n",
                tools_options(), tl[:cpuworkload], tl[:cpuworkload] / on[:cpuworkload], tl[:cpuworkload] / off[:cpuworkload],
                tl[:cpuwarmup] / on[:cpuwarmup], tl[:flush])
    end
    @printf("%-34s %10s %10s %8s\n", "seconds", "off", "on", "on/off")
    for (label, f) in (("enable_instrumentation, wall", r -> r[:enable]),
                       ("first command after it, wall", r -> r[:first]),
                       ("idle time until rendered, wall", r -> r[:idle]), ("next command, wall", r -> r[:next]),
                       ("workload, wall", r -> r[:workload]),
                       ("first command + enable, CPU", r -> r[:cpuwarmup]), ("workload, CPU", r -> r[:cpuworkload]),
                       ("total, CPU", r -> r[:cpuwarmup] + r[:cpuworkload]))
        @printf("%-34s %10.3f %10.3f %7.2fx\n", label, f(off), f(on), f(on) / f(off))
    end
    @printf("%-34s %10s %10.3f\n", "  of which the flush, wall", "", on[:flush])
    @printf("%-34s %10s %10.3f\n", "flush with nothing new, wall", "", on[:emptyflush])
    @printf("%-34s %10s %10.3f\n", "flush after one definition, wall", "", on[:defflush])
    inst = on[:instances]
    @printf("captured instances: %d (%d in the workload), errors: %d\n", inst, on[:captured], on[:errors])
    @printf("IR bytes per instance: %.0f text (source, lowered, typed, optimized, with headers), %.0f of pages\n",
            on[:text] / inst, on[:pagebytes] / inst)
    @printf("log bytes per instance captured by the workload: %.0f (%d instances)\n", lg[:logbytes] / lg[:captured], lg[:captured])
    println("goals (issue 19, item 14):")
    @printf("  workload CPU on/off      %6.2fx  (goal <= 1.30x) %s\n", on[:cpuworkload] / off[:cpuworkload],
            on[:cpuworkload] / off[:cpuworkload] <= 1.3 ? "met" : "NOT met")
    @printf("  first command, wall      %6.3fs  (goal <= 1 s)   %s\n", on[:first], on[:first] <= 1.0 ? "met" : "NOT met")
    @printf("  first command + idle flush + next %6.3fs (what a command typed at once waits)\n", on[:first] + on[:idle] + on[:next])
    @printf("  pages per instance       %6.0f B  (goal <= 8192) %s\n", on[:pagebytes] / inst, on[:pagebytes] / inst <= 8192 ? "met" : "NOT met")
    @printf("  log per instance         %6.0f B  (goal <= 4096) %s\n", lg[:logbytes] / lg[:captured],
            lg[:logbytes] / lg[:captured] <= 4096 ? "met" : "NOT met")
end

if abspath(PROGRAM_FILE) != SELF
elseif length(ARGS) >= 1 && ARGS[1] == "--child"
    child(ARGS[2], N)
else
    main(N, "--tools" in ARGS)
end
