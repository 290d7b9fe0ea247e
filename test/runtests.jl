# The Julia suite: `JULIA_NUM_THREADS=2 julia --project=. test/runtests.jl`
# (scripts/test.sh runs it after `cargo build --release`).
using Test
using MMSB

@info "MMSB tests" julia = VERSION threads = Threads.nthreads() library = MMSB.LIBPATH[]

# Each file runs in a module of its own, so files share no globals.
const FILES = ["state", "pages", "views", "deltas", "errors", "gc", "threads", "log", "monitoring", "device", "graph", "inputs", "loading", "header",
               "benchmark_cli", "deprecated"]

passed(ts) = (c = Test.get_test_counts(ts); c[1] + c[5])   # own + nested passes

main_ts = @testset "MMSB" begin
    for name in FILES
        @testset "$name" begin
            m = Module(Symbol("Test_", name))
            Core.eval(m, :(using Test, Random, MMSB))
            Base.include(m, joinpath(@__DIR__, "$name.jl"))
        end
    end
end
inst_ts = @testset "instrumentation" begin Base.include(Module(:Test_instrumentation), joinpath(@__DIR__, "instrumentation.jl")) end
include("docs.jl")   # docs/: generated references are current, tutorial blocks run
# A failing top-level testset throws before this line; reaching it means every set passed.
println("julia tests: ", passed(main_ts) + passed(inst_ts), " passed, 0 failed (plus docs)")
