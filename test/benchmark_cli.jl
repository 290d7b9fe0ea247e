# The benchmark script's command line (benchmark/lib/cli.jl): every bad
# argument is refused before any benchmark work, and no result file is touched.

const BENCH = joinpath(dirname(@__DIR__), "benchmark")
Base.include(@__MODULE__, joinpath(BENCH, "lib", "json.jl"))
Base.include(@__MODULE__, joinpath(BENCH, "lib", "cli.jl"))
using .MiniJSON, .BenchCLI

parse(args...) = BenchCLI.parse_args(collect(String, args); bench_dir = BENCH, parse_json = MiniJSON.json_parse)
usage_error(args...) = try
    parse(args...)
    nothing
catch err
    err isa BenchCLI.UsageError ? err.msg : rethrow()
end

mktempdir() do dir
    # defaults and values
    o = parse()
    @test !o.quick && !o.help && o.compare === nothing
    @test o.out == joinpath(BENCH, "results", "baseline.json")
    out, svg = joinpath(dir, "new", "r.json"), joinpath(dir, "new", "r.svg")
    o = parse("--quick", "--out", out, "--svg=$svg")
    @test o.quick && o.out == out && o.svg == svg
    @test !ispath(joinpath(dir, "new"))            # checking creates nothing
    @test parse("--help").help && parse("--quick", "-h").help

    # unknown flags, stray words, missing values, repeats
    @test usage_error("--quik") == "unknown option --quik"
    @test usage_error("quick") == "unexpected argument \"quick\""
    @test usage_error("--quick", "--out") == "--out needs a path after it"      # was a BoundsError after 15 s
    @test usage_error("--out", "--quick") == "--out needs a path after it"
    @test usage_error("--out=") == "--out needs a path after it"
    @test usage_error("--quick", "--quick") == "--quick given twice"
    @test usage_error("--out", out, "--out", out) == "--out given twice"
    @test usage_error("--out", dir) == "--out $dir is a folder; give a file path"
    @test usage_error("--out", out, "--svg", out) == "--out and --svg name the same file $out"

    # --compare: missing, not JSON, not a results file, a good one
    missing_file = joinpath(dir, "missing.json")
    @test usage_error("--compare", missing_file) == "--compare $missing_file: no such file"
    write(joinpath(dir, "bad.json"), "{ not json")
    @test startswith(usage_error("--compare", joinpath(dir, "bad.json")), "--compare $(joinpath(dir, "bad.json")) is not JSON")
    write(joinpath(dir, "other.json"), "{\"a\": 1}")
    @test occursin("is not a results file", usage_error("--compare", joinpath(dir, "other.json")))
    o = parse("--compare", joinpath(BENCH, "baseline.json"))
    @test o.compare_doc["benchmarks"] isa AbstractDict

    # replace_file: the old file stays whole until the new one is complete
    f = joinpath(dir, "keep.json")
    write(f, "old")
    BenchCLI.replace_file(f, "new")
    @test read(f, String) == "new"
    @test readdir(dir) == sort(readdir(dir)) && !any(n -> occursin(".tmp-", n), readdir(dir))

    # The script itself: a wrong flag or a missing --compare file stops it with
    # status 2 and the usage, before MMSB loads, and the results are untouched.
    script = joinpath(BENCH, "benchmarks.jl")
    mkpath(dirname(out))
    write(out, "previous results")
    julia = Base.julia_cmd()
    # output to files: an IOBuffer is filled by a task that may still be copying when `run` returns
    function run_output(cmd; stdout_only = false)
        path, io = mktemp()
        p = run(pipeline(ignorestatus(cmd); stdout = stdout_only ? io : devnull, stderr = stdout_only ? devnull : io))
        close(io)
        text = read(path, String)
        rm(path)
        return p.exitcode, text
    end
    for args in (["--quik"], ["--compare", missing_file, "--out", out], ["--quick", "--out"])
        rc, msg = run_output(`$julia --startup-file=no $script $args`)
        @test rc == 2
        @test occursin("usage: julia", msg) && startswith(msg, "benchmarks.jl: ")
        @test read(out, String) == "previous results"
    end
    rc, text = run_output(`$julia --startup-file=no $script --help --quik`; stdout_only = true)
    @test rc == 0 && startswith(text, "usage: julia")
end
