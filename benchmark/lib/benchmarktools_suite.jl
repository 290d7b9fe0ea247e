# `SUITE` as a BenchmarkTools `BenchmarkGroup`, included only when BenchmarkTools
# is installed (its macros must not be expanded without it). Each case becomes
# `@benchmarkable f(ctx) setup=(ctx = setup()) teardown=teardown(ctx)`; the
# setup runs once per sample. Cases measured outside Julia (the C loop) are left
# out. Not exercised on the machine this was written on (no BenchmarkTools).
using BenchmarkTools

function benchmarktools_suite(cases)
    suite = BenchmarkGroup()
    for (path, c) in cases
        c.external === nothing || continue
        parts = split(path, "/")
        g = suite
        for p in parts[1:end-1]
            haskey(g, p) || (g[p] = BenchmarkGroup())
            g = g[p]
        end
        f, setup, teardown = c.f, c.setup, c.teardown
        g[parts[end]] = @benchmarkable $f(ctx) setup = (ctx = $setup()) teardown = ($teardown(ctx))
    end
    return suite
end
