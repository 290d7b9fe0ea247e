# A tiny stand-in for BenchmarkTools, used when that package is not installed
# (this machine has only Julia's standard library). Same shape as a
# BenchmarkTools suite: nested groups of named benchmarks. Each benchmark is a
# `Case`: `setup()` builds a context once, `f(ctx)` is one call, `teardown(ctx)`
# releases it. Running one: warm-up calls (compilation), then samples of
# `evals` calls each until the time budget is spent; per-call times give the
# median, minimum and mean; allocations come from `@allocated` on one call.
module MiniBench

using Statistics: median, mean

export Case, Group, Trial, run_case, run_cases, leaves

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
    Prepared

A case set up and calibrated: its context, calls per sample, allocations
per call, and the per-call times of the samples taken so far.
"""
mutable struct Prepared
    case::Case
    ctx::Any
    evals::Int
    allocs::Int
    times::Vector{Float64}
    external::Vector{NTuple{4,Float64}}
    skipped::Bool
end

function prepare(c::Case; sample_s::Real)
    c.external === nothing || return Prepared(c, nothing, 0, 0, Float64[], NTuple{4,Float64}[], false)
    ctx = c.setup()
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
    return Prepared(c, ctx, evals, allocs, Float64[], NTuple{4,Float64}[], false)
end

# Samples for `budget_s` (at least 3, at most `max_samples` in all).
function measure!(p::Prepared; budget_s::Real, max_samples::Integer = 500)
    if p.case.external !== nothing
        r = p.case.external()
        r === nothing ? (p.skipped = true) : push!(p.external, Float64.(r))
        return p
    end
    GC.gc()
    t_end = time_ns() + round(UInt64, budget_s * 1e9)
    k = 0
    while length(p.times) < max_samples && (k < 3 || time_ns() < t_end)
        push!(p.times, sample(p.case.f, p.ctx, p.evals))
        k += 1
    end
    return p
end

function trial(p::Prepared)
    p.skipped && return nothing
    if p.case.external !== nothing
        e = p.external
        return Trial(minimum(first.(e)), median(getindex.(e, 2)), mean(getindex.(e, 3)), Int(sum(getindex.(e, 4))), 0, 0,
                     p.case.unit)
    end
    t = p.times
    return Trial(minimum(t), median(t), mean(t), length(t), p.evals, p.allocs, p.case.unit)
end

release!(p::Prepared) = (p.case.external === nothing && p.case.teardown(p.ctx); p.ctx = nothing; nothing)

"""
    run_case(case; budget_s = 2.0, sample_s = budget_s / 40) -> Union{Trial,Nothing}

Runs one benchmark: setup, a compiling call, `@allocated` of one call,
calibration (calls per sample doubled until a sample takes about `sample_s`),
samples until `budget_s` is spent (at least 3), teardown.
"""
function run_case(c::Case; budget_s::Real = 2.0, sample_s::Real = budget_s / 40)
    p = prepare(c; sample_s = sample_s)
    try
        measure!(p; budget_s = budget_s)
        return trial(p)
    finally
        release!(p)
    end
end

"""
    run_cases(cases; budget_s, rounds = 3, progress = (name, trial) -> nothing) -> Dict{String,Trial}

Runs `name => case` pairs: all set up and calibrated first, then `rounds`
rounds that each sample every case for `budget_s / rounds`. A case and its
baseline are thus sampled at several moments spread over the run, so that a
burst of load from other processes weighs on both sides alike.
"""
function run_cases(cases; budget_s::Real, rounds::Integer = 3, progress = (name, t) -> nothing)
    sample_s = budget_s / 40
    prepared = Pair{String,Prepared}[]
    try
        for (name, c) in cases
            push!(prepared, name => prepare(c; sample_s = sample_s))
        end
        for _ in 1:rounds, (name, p) in prepared
            measure!(p; budget_s = budget_s / rounds)
        end
        out = Dict{String,Any}()
        for (name, p) in prepared
            out[name] = trial(p)
            progress(name, out[name])
        end
        return out
    finally
        foreach(p -> release!(p[2]), prepared)
    end
end

end # module MiniBench
