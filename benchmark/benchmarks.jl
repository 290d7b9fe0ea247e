# MMSB benchmarks from Julia.
#
#   julia --project=. benchmark/benchmarks.jl [--quick] [--out path.json] [--svg path.svg] [--compare old.json] [--help]
#
# Defines `SUITE` as PkgBenchmark expects: a BenchmarkTools `BenchmarkGroup`
# when BenchmarkTools is installed, else a `MiniBench.Group` of the same shape
# (nested groups of named benchmarks; see benchmark/lib/MiniBench.jl). Run as
# a script it first checks its arguments (benchmark/lib/cli.jl: unknown flags,
# missing values and an unreadable `--compare` file stop it before any work),
# then measures every benchmark with the built-in harness, printing each group
# with the time left, computes the ratios against baselines measured in the
# same run, and only then writes the JSON (default
# `benchmark/results/baseline.json`, git-ignored) and the plot
# `benchmark/results/benchmarks.svg`; with `--compare old.json` it prints
# new/old per benchmark and per ratio. `MMSB_BENCH_RUST=1` also runs the Rust
# criterion bench `route_64B_sparse_in_memory` (`cargo bench --bench core`).
# Figures: see benchmark/README.md.
const BENCH_DIR = @__DIR__
include(joinpath(BENCH_DIR, "lib", "json.jl"))
include(joinpath(BENCH_DIR, "lib", "cli.jl"))
using .MiniJSON, .BenchCLI

const AS_SCRIPT = abspath(PROGRAM_FILE) == @__FILE__

# The arguments are checked before MMSB loads or anything is measured.
const OPTS = if AS_SCRIPT
    try
        parse_args(ARGS; bench_dir = BENCH_DIR, parse_json = json_parse)
    catch err
        err isa UsageError || rethrow()
        println(stderr, sprint(showerror, err), "\n")
        print(stderr, USAGE)
        exit(2)
    end
else
    # Included (PkgBenchmark): the full suite, nothing written.
    Options(false, "", "", nothing, nothing, false)
end
if OPTS.help
    print(USAGE)
    exit(0)
end

using MMSB
using Printf
using Statistics

include(joinpath(BENCH_DIR, "lib", "MiniBench.jl"))
include(joinpath(BENCH_DIR, "lib", "svg.jl"))
using .MiniBench, .BenchSVG
include(joinpath(BENCH_DIR, "lib", "cases.jl"))

const QUICK = OPTS.quick
const CASES = cases(; quick = QUICK)

# The suite PkgBenchmark loads. External cases (the C loop) cannot run inside
# BenchmarkTools and are left out of its group.
const HAVE_BENCHMARKTOOLS = Base.find_package("BenchmarkTools") !== nothing
if HAVE_BENCHMARKTOOLS
    include(joinpath(BENCH_DIR, "lib", "benchmarktools_suite.jl"))
    const SUITE = benchmarktools_suite(CASES)
else
    const SUITE = MiniBench.Group()
    for (path, c) in CASES
        parts = split(path, "/")
        g = SUITE
        for p in parts[1:end-1]
            g = get!(() -> MiniBench.Group(), g, p)
        end
        g[parts[end]] = c
    end
end

# A ratio whose per-round values differ by more than this factor (largest /
# smallest) is flagged as too noisy to trust: on a shared machine, same-run
# ratios were seen to move about 2x between runs.
const TRUST_SPREAD = 1.25

function machine_info()
    cpu = Sys.cpu_info()
    commit = try
        readchomp(`git -C $(dirname(BENCH_DIR)) rev-parse HEAD`)
    catch
        "unknown"
    end
    dirty = try
        !isempty(readchomp(`git -C $(dirname(BENCH_DIR)) status --porcelain --untracked-files=no`))
    catch
        false
    end
    return [
        "cpu_model" => isempty(cpu) ? "unknown" : strip(cpu[1].model),
        "cores" => Sys.CPU_THREADS,
        "julia_version" => string(VERSION),
        "julia_threads" => Threads.nthreads(),
        "os" => string(Sys.KERNEL, " ", Sys.MACHINE, " ", strip(read(`uname -r`, String))),
        "commit" => commit,
        "worktree_dirty" => dirty,
        "library" => MMSB.LIBPATH[],
        "date_utc" => strip(read(`date -u +%Y-%m-%dT%H:%M:%SZ`, String)),
        "benchmarktools" => HAVE_BENCHMARKTOOLS,
    ]
end

# `cargo bench` of the Rust-only 64-byte route (optional: it builds the bench).
function rust_route_64B()
    get(ENV, "MMSB_BENCH_RUST", "0") == "1" || return nothing
    root = dirname(BENCH_DIR)
    out = read(Cmd(`cargo bench --bench core -- route_64B_sparse_in_memory --warm-up-time 1 --measurement-time 3`;
                   dir = root), String)
    m = match(r"time:\s+\[([\d.]+) (\w+) ([\d.]+) (\w+)", out)
    m === nothing && return nothing
    scale = Dict("ps" => 1e-3, "ns" => 1.0, "µs" => 1e3, "us" => 1e3, "ms" => 1e6)
    return parse(Float64, m[3]) * scale[m[4]]
end

# The scaling curves the Rust bench wrote next to the plot
# (`cargo bench -p mmsb --bench scaling -- --json ../../benchmark/results/scaling.json`),
# for the plot's third panel; none (and a note saying how to get them) when the
# file is missing or unreadable.
function scaling_curves(path)
    isfile(path) || return (NamedTuple[], "")
    doc = try
        json_parse(read(path, String))
    catch err
        println("  (ignoring $path: ", sprint(showerror, err), ")")
        return (NamedTuple[], "")
    end
    pts(v) = [(Float64(p[1]), Float64(p[2])) for p in v]
    curves = [(name = c["name"], x = c["x"], y = c["y"], points = pts(c["points"]), base_name = c["base_name"],
               base = pts(c["base"])) for c in doc["curves"]]
    when = Libc.strftime("%Y-%m-%d %H:%M", mtime(path))
    return (curves, string(doc["quick"] ? "quick run" : "full run", " of ", when))
end

function main(o::Options = OPTS)
    t_start = time()
    budget = o.quick ? 0.6 : 3.5
    rounds = o.quick ? 2 : 3
    println("MMSB benchmarks ($(o.quick ? "quick" : "full"); $(length(CASES)) cases, ~$(budget) s each in $rounds interleaved rounds; ",
            "Julia $(VERSION), $(Threads.nthreads()) thread(s)); writes $(o.out) and $(o.svg) when done")
    results = run_cases(CASES; budget_s = budget, rounds = rounds, report = msg -> println("  ", msg))
    println()
    for (name, _) in CASES
        t = results[name]
        if t === nothing
            println("  ", rpad(name, 40), " skipped (not measurable here)")
        else
            @printf("  %-40s median %12.1f ns  min %12.1f  p90 %12.1f  %6d samples x %-7d alloc %8d B\n", name,
                    t.median_ns, t.min_ns, t.p90_ns, t.samples, t.evals, t.allocs_bytes)
        end
    end
    rust = rust_route_64B()
    rats = [name => merge(r, round_spread(results, r)) for (name, r) in ratios(results; quick = o.quick)]
    println("\nRatios (minimum time per call of each side, same run; spread = largest / smallest of the per-round values):")
    for (name, r) in rats
        v = r.value === nothing ? "n/a" : @sprintf("%.3f", r.value)
        sp = r.spread === nothing ? "" : @sprintf("spread %.2fx%s", r.spread, r.trusted ? "" : " (too noisy to trust)")
        tgt = r.target === nothing ? "" : "target $(r.op) $(r.target): $(r.pass ? "met" : "MISSED")"
        @printf("  %-36s %10s   %-34s %s\n", name, v, sp, tgt)
    end
    rust === nothing || @printf("  Rust alone (criterion route_64B_sparse_in_memory): %.1f ns\n", rust)
    wall = time() - t_start
    doc = [
        "schema" => "mmsb-benchmarks/1",
        "machine" => machine_info(),
        "settings" => ["quick" => o.quick, "budget_s_per_case" => budget, "rounds" => rounds, "ratio_statistic" => "min",
                       "time_unit" => "ns per call", "trust_spread" => TRUST_SPREAD],
        "benchmarks" => [name => (t === nothing ? nothing :
                                  ["median_ns" => t.median_ns, "min_ns" => t.min_ns, "mean_ns" => t.mean_ns,
                                   "p90_ns" => t.p90_ns, "round_min_ns" => t.round_min_ns,
                                   "samples" => t.samples, "evals_per_sample" => t.evals,
                                   "allocs_bytes_per_call" => t.allocs_bytes, "ops_per_call" => t.unit])
                         for (name, t) in sort!(collect(results); by = first)],
        "ratios" => [name => ["value" => r.value, "target" => r.target, "op" => r.op, "pass" => r.pass,
                              "rounds" => r.rounds, "spread" => r.spread, "trusted" => r.trusted,
                              "numerator" => r.numerator, "denominator" => r.denominator, "note" => r.note]
                     for (name, r) in rats],
        "rust_route_64B_ns" => rust,
        "wall_s" => round(wall; digits = 1),
    ]
    # Only now, with every figure in hand, are the old files replaced.
    replace_file(o.out, string(json_string(doc), "\n"))
    rows = [(name = name, median_ns = results[name].median_ns, min_ns = results[name].min_ns, p90_ns = results[name].p90_ns)
            for (name, _) in CASES if results[name] !== nothing]
    curves, note = scaling_curves(joinpath(dirname(o.svg), "scaling.json"))
    svg_text = render_svg(rows, [(name = n, value = r.value, target = r.target, op = r.op, pass = r.pass,
                                  rounds = r.rounds, spread = r.spread, trusted = r.trusted,
                                  absolute = isempty(r.denominator)) for (n, r) in rats];
                          title = "MMSB benchmarks: $(strip(Sys.cpu_info()[1].model)), $(Sys.CPU_THREADS) cores, Julia $(VERSION)",
                          scaling = curves, scaling_note = note)
    replace_file(o.svg, svg_text)
    println("\nwrote $(o.out) and $(o.svg) ($(round(wall; digits = 1)) s)")
    o.compare_doc === nothing || compare(o.compare_doc, json_parse(read(o.out, String)); label = o.compare)
    return nothing
end

# The ratio of each round's minimums (the same statistic as the ratio, per
# round) and how far they spread.
function round_spread(results, r)
    num = get(results, r.numerator, nothing)
    den = isempty(r.denominator) ? nothing : get(results, r.denominator, nothing)
    (num === nothing || (!isempty(r.denominator) && den === nothing)) &&
        return (rounds = nothing, spread = nothing, trusted = true)
    v = den === nothing ? num.round_min_ns ./ num.unit : num.round_min_ns ./ den.round_min_ns
    spread = maximum(v) / minimum(v)
    return (rounds = v, spread = spread, trusted = spread <= TRUST_SPREAD)
end

# new/old per benchmark (median) and per ratio.
function compare(old, new; label = "the old file")
    m = get(old, "machine", Dict())
    println("\nCompared with $label (commit $(get(m, "commit", "?")), $(get(m, "date_utc", "?"))):")
    @printf("  %-40s %14s %14s %10s\n", "benchmark (median ns)", "old", "new", "new/old")
    for name in sort!(collect(keys(new["benchmarks"])))
        n, o = new["benchmarks"][name], get(old["benchmarks"], name, nothing)
        (n === nothing || o === nothing) && continue
        @printf("  %-40s %14.1f %14.1f %9.2fx\n", name, o["median_ns"], n["median_ns"], n["median_ns"] / o["median_ns"])
    end
    @printf("  %-40s %14s %14s %10s\n", "ratio", "old", "new", "new/old")
    for name in sort!(collect(keys(new["ratios"])))
        n, o = new["ratios"][name]["value"], get(get(old["ratios"], name, Dict()), "value", nothing)
        (n === nothing || o === nothing) && continue
        @printf("  %-40s %14.3f %14.3f %9.2fx\n", name, o, n, n / o)
    end
end

# Run only as a script; PkgBenchmark includes this file for `SUITE`.
AS_SCRIPT && main()
