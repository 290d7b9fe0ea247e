# A tiny stand-in for BenchmarkTools, used when that package is not installed
# (this machine has only Julia's standard library). Same shape as a
# BenchmarkTools suite: nested groups of named benchmarks. Each benchmark is a
# `Case`: `setup()` builds a context once, `f(ctx)` is one call, `teardown(ctx)`
# releases it. Running one: warm-up calls (compilation), then samples of
# `evals` calls each until the time budget is spent; per-call times give the
# median, minimum and mean; allocations come from `@allocated` on one call.
module MiniBench

using Statistics: median, mean, quantile

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

"""
Summary of one benchmark run, per call: minimum, median, mean and 90th
percentile over all samples, and the minimum of each round (`round_min_ns`;
how far those differ shows how much the machine's load moved the figure).
"""
struct Trial
    min_ns::Float64
    median_ns::Float64
    mean_ns::Float64
    p90_ns::Float64
    samples::Int
    evals::Int
    allocs_bytes::Int
    unit::Int
    round_min_ns::Vector{Float64}
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
    round_ends::Vector{Int}               # length(times) after each call of measure!
    external::Vector{NTuple{4,Float64}}
    skipped::Bool
end

function prepare(c::Case; sample_s::Real)
    c.external === nothing || return Prepared(c, nothing, 0, 0, Float64[], Int[], NTuple{4,Float64}[], false)
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
    return Prepared(c, ctx, evals, allocs, Float64[], Int[], NTuple{4,Float64}[], false)
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
    push!(p.round_ends, length(p.times))
    return p
end

function trial(p::Prepared)
    p.skipped && return nothing
    if p.case.external !== nothing
        # One external run per round: its median stands in for the p90 (the C program reports no more).
        e = p.external
        return Trial(minimum(first.(e)), median(getindex.(e, 2)), mean(getindex.(e, 3)), maximum(getindex.(e, 2)),
                     Int(sum(getindex.(e, 4))), 0, 0, p.case.unit, first.(e))
    end
    t = p.times
    starts = [1; p.round_ends[1:end-1] .+ 1]
    rmins = [minimum(view(t, a:b)) for (a, b) in zip(starts, p.round_ends) if b >= a]
    return Trial(minimum(t), median(t), mean(t), quantile(t, 0.9), length(t), p.evals, p.allocs, p.case.unit, rmins)
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
    run_cases(cases; budget_s, rounds = 3, progress = (name, trial) -> nothing, report = msg -> nothing) -> Dict{String,Trial}

Runs `name => case` pairs: all set up and calibrated first, then `rounds`
rounds that each sample every case for `budget_s / rounds`. A case and its
baseline are thus sampled at several moments spread over the run, so that a
burst of load from other processes weighs on both sides alike.

`report(msg)` gets a line after each group (the first part of a case's name,
`route` of `route/write_64B`) is set up and after each group of each round,
with the estimated time left; `progress(name, trial)` gets each result.
"""
function run_cases(cases; budget_s::Real, rounds::Integer = 3, progress = (name, t) -> nothing,
                   report = msg -> nothing)
    sample_s = budget_s / 40
    prepared = Pair{String,Prepared}[]   # replaced below; `finally` releases what was set up
    n = length(cases)
    groups = group_runs([name for (name, _) in cases])
    t0 = time()
    try
        prepared = Vector{Pair{String,Prepared}}(undef, n)
        done = 0
        for (g, idx) in groups
            tg = time()
            for i in idx
                prepared[i] = cases[i][1] => prepare(cases[i][2]; sample_s = sample_s)
                done += 1
            end
            # Set-up so far predicts the rest of it; the rounds take about their budget.
            left = (time() - t0) / done * (n - done) + n * budget_s
            report(string("set up ", g, " (", length(idx), " cases) in ", secs(time() - tg), "; about ",
                          secs(left), " left"))
        end
        t1 = time()
        done = 0
        for r in 1:rounds, (g, idx) in groups
            tg = time()
            for i in idx
                measure!(prepared[i][2]; budget_s = budget_s / rounds)
            end
            done += length(idx)
            left = (time() - t1) / done * (rounds * n - done)
            report(string("round ", r, "/", rounds, " ", g, " in ", secs(time() - tg), "; about ", secs(left), " left"))
        end
        out = Dict{String,Any}()
        for (name, p) in prepared
            out[name] = trial(p)
            progress(name, out[name])
        end
        return out
    finally
        for i in eachindex(prepared)
            isassigned(prepared, i) && release!(prepared[i][2])
        end
    end
end

# The cases' indices by the first part of their names (`route` of
# `route/write_64B`), groups in order of first appearance.
function group_runs(names)
    out = Pair{String,Vector{Int}}[]
    for (i, name) in enumerate(names)
        g = String(first(split(name, "/")))
        k = findfirst(p -> p[1] == g, out)
        k === nothing ? push!(out, g => [i]) : push!(out[k][2], i)
    end
    return out
end

secs(t) = t < 10 ? string(round(t; digits = 1), " s") : string(round(Int, t), " s")

end # module MiniBench
