# A tiny stand-in for BenchmarkTools, used when that package is not installed
# (this machine has only Julia's standard library). Same shape as a
# BenchmarkTools suite: nested groups of named benchmarks. Each benchmark is a
# `Case`: `setup()` builds a context once, `f(ctx)` is one call, `teardown(ctx)`
# releases it. Running one: warm-up calls (compilation), then samples of
# `evals` calls each until the time budget is spent; per-call times give the
# median, minimum and mean; allocations come from `@allocated` on one call.
module MiniBench

using Statistics: median, mean

export Case, Group, Trial, run_case, leaves

"""
    Case(f; setup = () -> nothing, teardown = ctx -> nothing, unit = 1, external = nothing)

One benchmark. `unit` is how many operations one call performs (e.g. nodes of
a chain); results stay per call, ratios divide by it where they say so.
`external`, when given, is a function returning `(min_ns, median_ns, mean_ns,
samples)` measured elsewhere (a C program); `f` is then not used.
"""
struct Case
    f::Function
    setup::Function
    teardown::Function
    unit::Int
    external::Union{Nothing,Function}
end
Case(f::Function; setup::Function = () -> nothing, teardown::Function = _ -> nothing, unit::Integer = 1,
     external = nothing) = Case(f, setup, teardown, Int(unit), external)

"""
    Group()

A named collection of benchmarks or groups (a `Dict{String,Any}`), the shape
PkgBenchmark expects of `SUITE`.
"""
struct Group <: AbstractDict{String,Any}
    data::Dict{String,Any}
end
Group() = Group(Dict{String,Any}())
Base.getindex(g::Group, k::AbstractString) = g.data[String(k)]
Base.setindex!(g::Group, v, k::AbstractString) = (g.data[String(k)] = v; g)
Base.get!(f::Function, g::Group, k::AbstractString) = get!(f, g.data, String(k))
Base.haskey(g::Group, k::AbstractString) = haskey(g.data, String(k))
Base.length(g::Group) = length(g.data)
Base.iterate(g::Group, st...) = iterate(g.data, st...)
Base.keys(g::Group) = keys(g.data)

"""
    leaves(group) -> Vector{Pair{String,Case}}

Every benchmark of a (nested) group, named by its path joined with `/`, sorted.
"""
function leaves(g, prefix = "")
    out = Pair{String,Case}[]
    for k in sort!(collect(keys(g)))
        v = g[k]
        name = isempty(prefix) ? k : string(prefix, "/", k)
        if v isa Case
            push!(out, name => v)
        else
            append!(out, leaves(v, name))
        end
    end
    return out
end

"""Summary of one benchmark run, per call."""
struct Trial
    min_ns::Float64
    median_ns::Float64
    mean_ns::Float64
    samples::Int
    evals::Int
    allocs_bytes::Int
    unit::Int
end

# Function barriers: `f` and `ctx` are concrete inside, so the loop is compiled
# for them and the timing holds no dynamic dispatch of this harness.
function sample(f::F, ctx, evals::Int) where {F}
    t0 = time_ns()
    for _ in 1:evals
        f(ctx)
    end
    return (time_ns() - t0) / evals
end
allocated(f::F, ctx) where {F} = @allocated f(ctx)

"""
    run_case(case; budget_s = 2.0, sample_s = budget_s / 40, max_samples = 500) -> Trial

Runs one benchmark: setup, two warm-up calls, then samples of `evals` calls
(chosen so one sample takes about `sample_s`) until `budget_s` is spent (at
least 3 samples), then teardown.
"""
function run_case(c::Case; budget_s::Real = 2.0, sample_s::Real = budget_s / 40, max_samples::Integer = 500)
    if c.external !== nothing
        r = c.external()
        r === nothing && return nothing          # not measurable here (e.g. no C compiler)
        mn, med, mu, n = r
        return Trial(mn, med, mu, n, 0, 0, c.unit)
    end
    ctx = c.setup()
    try
        GC.gc()
        sample(c.f, ctx, 1)                       # compile
        allocs = allocated(c.f, ctx)
        allocs = allocated(c.f, ctx)              # the second is free of compilation
        # Calibrate: double the calls until one sample takes about `sample_s`
        # (also warms caches; a single first call can be unrepresentatively fast).
        evals = 1
        while evals < 1_000_000
            t = sample(c.f, ctx, evals) * evals
            t >= sample_s * 1e9 / 2 && break
            evals *= 2
        end
        times = Float64[]
        t_end = time_ns() + round(UInt64, budget_s * 1e9)
        while length(times) < max_samples && (length(times) < 3 || time_ns() < t_end)
            push!(times, sample(c.f, ctx, evals))
        end
        return Trial(minimum(times), median(times), mean(times), length(times), evals, allocs, c.unit)
    finally
        c.teardown(ctx)
    end
end

end # module MiniBench
