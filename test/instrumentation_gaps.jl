# Issue 19: capture gaps. Each set failed before the fix (on 1.5.3; gap 4 was
# already right on 1.10, which prints such globals by reference). The code
# under test lives in modules of its own (bound nowhere, as a test's module
# is), evaluated at top level with `Core.eval`: what a script or the REPL does.

using Test, MMSB

call(f, args...) = Base.invokelatest(f, args...)
typed_text(f, types) = sprint(show, code_typed(f, types; optimize = false, debuginfo = :none)[1])
optimized_text(f, types) = sprint(show, code_typed(f, types; optimize = true, debuginfo = :none)[1])
captured(s, f, types) = try
    ir_pages(s, f, types)
    true
catch err
    err isa ArgumentError || rethrow()
    false
end

state = mmsb_start(; logging = true)
enable_instrumentation(state)

@testset "gap 1: a function called only from top-level code" begin
    M = Module(:InstGapTop)
    Core.eval(M, :(h(x) = x * 3 + 100))
    # A top-level loop: its thunk is inferred (the hook sees the thunk, not `h`) and compiled.
    @test Core.eval(M, :(acc = 0; for i in 1:3; global acc += h(i); end; acc)) == 318
    flush_instrumentation(state)
    @test captured(state, M.h, (Int,))
    @test captured(state, M.h, (Int,)) && ir_text(state, ir_pages(state, M.h, (Int,)).typed) == typed_text(M.h, (Int,))
end

@testset "gap 2: a function called only from Base (map)" begin
    M = Module(:InstGapMap)
    Core.eval(M, :(h(x) = x * 7))
    @test Core.eval(M, :(map(h, [1, 2, 3]))) == [7, 14, 21]
    flush_instrumentation(state)
    @test captured(state, M.h, (Int,))
    @test captured(state, M.h, (Int,)) && ir_text(state, ir_pages(state, M.h, (Int,)).optimized) == optimized_text(M.h, (Int,))
end

@testset "gap 3: inlined first, then called directly; fresh after a redefinition" begin
    M = Module(:InstGapInl)
    Core.eval(M, :(f(x) = x - 5))
    Core.eval(M, :(g(x) = f(x) * 2))
    @test Core.eval(M, :(g(1))) == -8   # f is inferred inside g's inference and inlined
    @test Core.eval(M, :(f(1))) == -4   # now compiled on its own, without inference
    flush_instrumentation(state)
    @test captured(state, M.f, (Int,))
    if captured(state, M.f, (Int,))
        p = ir_pages(state, M.f, (Int,))
        @test ir_text(state, p.typed) == typed_text(M.f, (Int,))
        # Redefined and not called again: the next flush shows the new code.
        Core.eval(M, :(f(x) = x - 6))
        flush_instrumentation(state)
        @test ir_text(state, p.typed) == typed_text(M.f, (Int,))
        @test ir_text(state, p.optimized) == optimized_text(M.f, (Int,))
    end
end

@testset "gap 4: data inside IR is printed by name, not by contents" begin
    M = Module(:InstGapData)
    Core.eval(M, :(const BIG = zeros(100_000)))
    Core.eval(M, :(useB() = BIG[1]))
    Core.eval(M, :(const ANON = Ref([1.0, 2.0, 3.0])))
    Core.eval(M, :(useR() = ANON[][2]))
    @test call(M.useB) == 0.0 && call(M.useR) == 2.0
    flush_instrumentation(state)
    p = ir_pages(state, M.useB, ())
    opt = ir_text(state, p.optimized)
    # The text depends on the code only: no array contents (was 500 KB on 1.5).
    @test sizeof(opt) < 2_000 && !occursin("0.0, 0.0", opt)
    @test occursin("BIG", opt) || occursin("Vector{Float64}", opt) || occursin("Array{Float64,1}", opt)
    e0 = page_epoch(state, p.optimized)
    M.BIG[1] = 42.0          # only the data changes
    M.ANON[][2] = 5.0
    changed = reanalyze!(state)
    @test !any(c -> occursin("useB", c) || occursin("useR", c), changed)
    @test page_epoch(state, p.optimized) == e0
    # Rendered twice from scratch, the same bytes (as in another process).
    mi = MMSB.instrumentation_manager(state).instances[Tuple{typeof(M.useB)}].mi
    world = Base.get_world_counter()
    _, o1, rt = MMSB._infer_ir(mi, world)
    @test MMSB._render_stable(o1, rt, M, MMSB._flush_context(), () -> MMSB._lowered_ir(mi, world)) == opt
end

@testset "gap 5: an invalidated caller is re-analyzed at the next flush" begin
    M = Module(:InstGapStale)
    Core.eval(M, :(leaf(x) = x * 2))
    Core.eval(M, :(caller(x) = leaf(x) + 1))   # leaf is inlined into caller
    @test call(M.caller, 3) == 7
    flush_instrumentation(state)
    p = ir_pages(state, M.caller, (Int,))
    before = ir_text(state, p.optimized)
    r0 = instrumentation_status(state).stale_reanalyzed
    Core.eval(M, :(leaf(x) = x * 9))          # caller's compiled code is invalidated; caller is not called
    flush_instrumentation(state)
    @test ir_text(state, p.optimized) != before
    @test ir_text(state, p.optimized) == optimized_text(M.caller, (Int,))
    @test instrumentation_status(state).stale_reanalyzed > r0
    @test instrumentation_status(state).stale_pending == 0
end

@testset "gap 6: a failed capture is counted apart and leaves no orphan page" begin
    M = Module(:InstGapFail)
    Core.eval(M, :(k(x) = x + 13))
    st0 = instrumentation_status(state)
    e0 = MMSB.instrumentation_manager(state).errors # this state's own (st.errors adds the process-wide hook's)
    pages0 = length(page_ids(state))
    try
        MMSB._FAULT[] = :slots # after k's four pages were created
        @test call(M.k, 1) == 14
        @test flush_instrumentation(state) == 0 # nothing was captured
    finally
        MMSB._FAULT[] = :none
    end
    st = instrumentation_status(state)
    @test st.failures == st0.failures + 1 && MMSB.instrumentation_manager(state).errors == e0 + 1
    @test st.instances == st0.instances && st.methods == st0.methods && st.pages == st0.pages
    @test length(page_ids(state)) == pages0 # the pages created before the failure were freed
    @test !captured(state, M.k, (Int,))
    # Not retried by every later flush; captured when asked for.
    @test flush_instrumentation(state) == 0 && instrumentation_status(state).failures == st.failures
    reanalyze!(state, M.k, (Int,))
    @test ir_text(state, ir_pages(state, M.k, (Int,)).typed) == typed_text(M.k, (Int,))
end

@testset "ir_pages and reanalyze! with a where clause" begin
    M = Module(:InstGapWhere)
    Core.eval(M, :(wh(x::Vector{T}) where {T} = length(x) + sizeof(T)))
    @test call(M.wh, [1, 2]) == 10
    reanalyze!(state, M.wh, Tuple{Vector{T}} where T) # an instance for the abstract signature
    flush_instrumentation(state)
    p = ir_pages(state, M.wh, Tuple{Vector{T}} where T)
    @test occursin("wh", ir_text(state, p.source))
    @test ir_pages(state, M.wh, (Vector{Int},)).typed != p.typed
    # Every captured signature finds its own pages, `where` clauses included.
    m = MMSB.instrumentation_manager(state)
    specs = collect(keys(m.instances))
    @test any(s -> s isa UnionAll, specs)
    @test all(s -> ir_pages(state, s).typed == m.instances[s].typed.page, specs)
end

@testset "ir_callers: the reverse of the :calls edges" begin
    M = Module(:InstGapCallers)
    Core.eval(M, :(@noinline leaf(x) = x + 1))
    Core.eval(M, :(c1(x) = leaf(x) * 2))
    Core.eval(M, :(c2(x) = leaf(x) - 1))
    @test call(M.c1, 1) == 4 && call(M.c2, 1) == 1
    flush_instrumentation(state)
    callers = ir_callers(state, M.leaf, (Int,))
    @test length(callers) == 2 && all(p -> p isa MMSB.IRPages, callers)
    @test [p.typed for p in callers] == sort([ir_pages(state, M.c1, (Int,)).typed, ir_pages(state, M.c2, (Int,)).typed];
                                             by = t -> MMSB.instrumentation_manager(state).slots[t.value].label)
    @test isempty(ir_callers(state, M.c1, (Int,)))
    # The same edges, seen from the callee's optimized page.
    leaf = ir_pages(state, M.leaf, (Int,)).optimized
    @test all(p -> leaf in dependents(state, p.optimized), callers)
end

@testset "precompile_statements: one line per concrete captured instance" begin
    Core.eval(Main, :(module InstGapPrecomp
                      pc(x::Int, s::String) = string(x, s)
                      pv(v::Vector{Float64}) = sum(v)
                      end))
    P = getfield(Main, :InstGapPrecomp)
    @test call(P.pc, 1, "a") == "1a" && call(P.pv, [1.0, 2.0]) == 3.0
    flush_instrumentation(state)
    sts = precompile_statements(state)
    @test issorted(sts) && allunique(sts)
    mine = filter(l -> occursin("InstGapPrecomp", l), sts)
    @test length(mine) == 2
    # Each line is Julia that precompiles the instance (parsed and run here).
    @test all(l -> Core.eval(Main, Meta.parse(l)) === true, mine)
    # Functions of modules bound nowhere cannot be named from a file: left out.
    @test !any(l -> occursin("InstGapCallers", l), sts)
end

disable_instrumentation(state)
close(state)
