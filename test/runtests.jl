# The Julia suite: `JULIA_NUM_THREADS=2 julia --project=. test/runtests.jl`
# (scripts/test.sh runs it after `cargo build --release`).
using Test
using MMSB

@info "MMSB tests" julia = VERSION threads = Threads.nthreads() library = MMSB.LIBPATH[]

# Each file runs in a module of its own, so files share no globals.
const FILES = ["state", "pages", "views", "deltas", "errors", "gc", "threads", "log", "monitoring", "device", "graph", "inputs", "loading", "header", "reader",
               "benchmark_cli", "deprecated", "replication"]

# One outer set: a failing file does not stop the files after it (instrumentation,
# docs); the outer set throws at its end, with the counts of everything.
counts = try
    ts = @testset "Julia $VERSION" begin
        @testset "MMSB" begin
            for name in FILES
                @testset "$name" begin
                    m = Module(Symbol("Test_", name))
                    Core.eval(m, :(using Test, Random, MMSB))
                    Base.include(m, joinpath(@__DIR__, "helpers.jl"))
                    Base.include(m, joinpath(@__DIR__, "$name.jl"))
                end
            end
        end
        @testset "instrumentation" begin Base.include(Module(:Test_instrumentation), joinpath(@__DIR__, "instrumentation.jl")) end
        for name in ("instrumentation_gaps", "instrumentation_walk", "instrumentation_tools") # issue 19
            @testset "$name" begin Base.include(Module(Symbol("Test_", name)), joinpath(@__DIR__, "$name.jl")) end
        end
        include("docs.jl")   # docs/: generated references are current, tutorial blocks run
    end
    c = Test.get_test_counts(ts) # a tuple up to 1.10, a Test.TestCounts from 1.11
    (c isa Tuple ? c[1] + c[5] : c.passes + c.cumulative_passes, 0)   # own + nested passes
catch err
    err isa Test.TestSetException || rethrow()
    (err.pass, err.fail + err.error)
end
# The closing line scripts/test.sh adds up (one per Julia version).
println("julia tests: ", counts[1], " passed, ", counts[2], " failed (Julia ", VERSION, ")")
counts[2] == 0 || exit(1)
