# The command line of benchmark/benchmarks.jl, apart from everything else so
# that it is checked before any work (and tested without running a benchmark).
# No MMSB here: a wrong flag must fail before the package loads.
module BenchCLI

export Options, UsageError, parse_args, replace_file, USAGE

const USAGE = """
usage: julia --project=. benchmark/benchmarks.jl [options]

Measures the MMSB benchmarks and the same-run ratios, writes the results as
JSON and draws them as SVG. Files are written only after the run succeeded.

options:
  --quick             shorter budgets and a smaller log (about 30 s instead of 1.5 min)
  --out PATH          the JSON results (default benchmark/results/baseline.json)
  --svg PATH          the plot (default benchmark/results/benchmarks.svg)
  --compare OLD.json  also print new/old of every median and ratio against OLD.json
                      (read and checked before the run)
  -h, --help          print this text and exit

environment: MMSB_BENCH_RUST=1 also runs `cargo bench --bench core` for the
Rust-only 64-byte route.
"""

"""
    UsageError(msg)

A command line that cannot run: the script prints `msg` and the usage and
exits with status 2, before any benchmark work.
"""
struct UsageError <: Exception
    msg::String
end
Base.showerror(io::IO, e::UsageError) = print(io, "benchmarks.jl: ", e.msg)

"""
    Options

What the command line asked for: `quick`, `out`, `svg`, `compare` (the path of
the old results or `nothing`), `compare_doc` (its parsed contents) and `help`.
"""
struct Options
    quick::Bool
    out::String
    svg::String
    compare::Union{Nothing,String}
    compare_doc::Any
    help::Bool
end

const VALUE_FLAGS = ("--out", "--svg", "--compare")

# The JSON parser is passed in (`parse_json`) so that this module stays free of
# the benchmark's other files.
"""
    parse_args(args; bench_dir, parse_json) -> Options

Parses and validates `args`: unknown flags, a flag without its value, a flag
given twice, a `--compare` file that is missing or not a results file, and an
`--out`/`--svg` whose folder cannot be created throw a [`UsageError`](@ref).
`--help` returns at once with `help = true`.
"""
function parse_args(args::AbstractVector{<:AbstractString}; bench_dir::AbstractString, parse_json)
    any(a -> a in ("-h", "--help"), args) &&
        return Options(false, "", "", nothing, nothing, true)
    vals = Dict{String,String}()
    quick = false
    i = 1
    while i <= length(args)
        a = args[i]
        if a == "--quick"
            quick && throw(UsageError("--quick given twice"))
            quick = true
        elseif a in VALUE_FLAGS
            haskey(vals, a) && throw(UsageError("$a given twice"))
            (i == length(args) || startswith(args[i+1], "--")) && throw(UsageError("$a needs a path after it"))
            vals[a] = args[i+1]
            i += 1
        elseif (k = findfirst(f -> startswith(a, f * "="), VALUE_FLAGS)) !== nothing
            f = VALUE_FLAGS[k]
            haskey(vals, f) && throw(UsageError("$f given twice"))
            vals[f] = a[length(f)+2:end]
            isempty(vals[f]) && throw(UsageError("$f needs a path after it"))
        else
            throw(UsageError(startswith(a, "-") ? "unknown option $a" : "unexpected argument $(repr(a))"))
        end
        i += 1
    end
    out = get(vals, "--out", joinpath(bench_dir, "results", "baseline.json"))
    svg = get(vals, "--svg", joinpath(bench_dir, "results", "benchmarks.svg"))
    for (flag, p) in (("--out", out), ("--svg", svg))
        isdir(p) && throw(UsageError("$flag $p is a folder; give a file path"))
        writable_folder(dirname(abspath(p))) || throw(UsageError("$flag $p: cannot create or write its folder"))
    end
    abspath(out) == abspath(svg) && throw(UsageError("--out and --svg name the same file $out"))
    cmp = get(vals, "--compare", nothing)
    doc = nothing
    if cmp !== nothing
        isfile(cmp) || throw(UsageError("--compare $cmp: no such file"))
        doc = try
            parse_json(read(cmp, String))
        catch err
            throw(UsageError("--compare $cmp is not JSON: " * sprint(showerror, err)))
        end
        (doc isa AbstractDict && haskey(doc, "benchmarks") && haskey(doc, "ratios")) ||
            throw(UsageError("--compare $cmp is not a results file of this script (no \"benchmarks\" and \"ratios\")"))
    end
    return Options(quick, out, svg, cmp, doc, false)
end

# Whether `dir` exists as a writable folder or can be created (the nearest
# existing ancestor is a writable folder). Nothing is created here.
function writable_folder(dir::AbstractString)
    d = dir
    while !ispath(d)
        parent = dirname(d)
        parent == d && return false
        d = parent
    end
    return isdir(d) && Base.Filesystem.uperm(d) & 0x02 != 0
end

"""
    replace_file(dest, contents)

Writes `contents` to a temporary file beside `dest` and renames it over
`dest`: a reader (or a crash) sees the old file or the new one, never a torn
one.
"""
function replace_file(dest::AbstractString, contents)
    mkpath(dirname(abspath(dest)))
    tmp = string(dest, ".tmp-", getpid())
    try
        write(tmp, contents)
        mv(tmp, dest; force = true)
    finally
        rm(tmp; force = true)
    end
    return dest
end

end # module BenchCLI
