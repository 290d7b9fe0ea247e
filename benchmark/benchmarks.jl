# MMSB benchmarks from Julia.
#
#   julia --project=. benchmark/benchmarks.jl [--out path.json] [--compare old.json] [--quick] [--svg path.svg]
#
# Defines `SUITE` as PkgBenchmark expects: a BenchmarkTools `BenchmarkGroup`
# when BenchmarkTools is installed, else a `MiniBench.Group` of the same shape
# (nested groups of named benchmarks; see benchmark/lib/MiniBench.jl). Run as
# a script it measures every benchmark with the built-in harness, computes the
# ratios against baselines measured in the same run, writes the JSON
# (default `benchmark/results/baseline.json`, git-ignored), draws
# `benchmark/results/benchmarks.svg`, and with `--compare old.json` prints
# new/old per benchmark and per ratio. `MMSB_BENCH_RUST=1` also runs the Rust
# criterion bench `route_64B_sparse_in_memory` (`cargo bench --bench core`).
# Figures: see benchmark/README.md.
using MMSB
using Printf
using Statistics

const BENCH_DIR = @__DIR__
include(joinpath(BENCH_DIR, "lib", "MiniBench.jl"))
include(joinpath(BENCH_DIR, "lib", "json.jl"))
include(joinpath(BENCH_DIR, "lib", "svg.jl"))
using .MiniBench, .MiniJSON, .BenchSVG
include(joinpath(BENCH_DIR, "lib", "cases.jl"))

const QUICK = "--quick" in ARGS
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

function argvalue(flag, default)
    i = findfirst(==(flag), ARGS)
    return i === nothing ? default : ARGS[i+1]
end

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

function main()
    t_start = time()
    out = argvalue("--out", joinpath(BENCH_DIR, "results", "baseline.json"))
    svg = argvalue("--svg", joinpath(BENCH_DIR, "results", "benchmarks.svg"))
    old = argvalue("--compare", nothing)
    budget = QUICK ? 0.6 : 3.5
    println("MMSB benchmarks ($(QUICK ? "quick" : "full"); $(length(CASES)) cases, ~$(budget) s each in $(QUICK ? 2 : 3) interleaved rounds; ",
            "Julia $(VERSION), $(Threads.nthreads()) thread(s))")
    results = run_cases(CASES; budget_s = budget, rounds = QUICK ? 2 : 3, progress = function (name, t)
        t === nothing && return println("  ", rpad(name, 40), " skipped (not measurable here)")
        @printf("  %-40s median %12.1f ns  min %12.1f ns  %6d samples x %-7d alloc %8d B\n", name, t.median_ns,
                t.min_ns, t.samples, t.evals, t.allocs_bytes)
    end)
    rust = rust_route_64B()
    rats = ratios(results; quick = QUICK)
    println("\nRatios (minimum time per call of each side, same run):")
    for (name, r) in rats
        v = r.value === nothing ? "n/a" : @sprintf("%.3f", r.value)
        tgt = r.target === nothing ? "" : "target $(r.op) $(r.target): $(r.pass ? "met" : "MISSED")"
        @printf("  %-36s %10s   %s\n", name, v, tgt)
    end
    rust === nothing || @printf("  Rust alone (criterion route_64B_sparse_in_memory): %.1f ns\n", rust)
    wall = time() - t_start
    doc = [
        "schema" => "mmsb-benchmarks/1",
        "machine" => machine_info(),
        "settings" => ["quick" => QUICK, "budget_s_per_case" => budget, "ratio_statistic" => "min",
                       "time_unit" => "ns per call"],
        "benchmarks" => [name => (t === nothing ? nothing :
                                  ["median_ns" => t.median_ns, "min_ns" => t.min_ns, "mean_ns" => t.mean_ns,
                                   "samples" => t.samples, "evals_per_sample" => t.evals,
                                   "allocs_bytes_per_call" => t.allocs_bytes, "ops_per_call" => t.unit])
                         for (name, t) in sort!(collect(results); by = first)],
        "ratios" => [name => ["value" => r.value, "target" => r.target, "op" => r.op, "pass" => r.pass,
                              "numerator" => r.numerator, "denominator" => r.denominator, "note" => r.note]
                     for (name, r) in rats],
        "rust_route_64B_ns" => rust,
        "wall_s" => round(wall; digits = 1),
    ]
    mkpath(dirname(abspath(out)))
    write(out, json_string(doc), "\n")
    rows = [(name, results[name].median_ns, results[name].min_ns) for (name, _) in CASES if results[name] !== nothing]
    render_svg(svg, rows, [(n, r.value, r.target, r.op, r.pass) for (n, r) in rats];
               title = "MMSB benchmarks: $(strip(Sys.cpu_info()[1].model)), $(Sys.CPU_THREADS) cores, Julia $(VERSION)")
    println("\nwrote $out and $svg ($(round(wall; digits = 1)) s)")
    old === nothing || compare(json_parse(read(old, String)), json_parse(read(out, String)))
    return nothing
end

# new/old per benchmark (median) and per ratio.
function compare(old, new)
    println("\nCompared with $(get(old["machine"], "commit", "?")) ($(get(old["machine"], "date_utc", "?"))):")
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
if abspath(PROGRAM_FILE) == @__FILE__
    main()
end
