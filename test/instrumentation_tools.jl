# Issue 19 items 9–13: what SnoopCompile and Cthulhu users would miss, stored
# in pages. Each query is checked on the live state, on the state replayed to
# an earlier LSN, on the directory reopened with `open_at` after close, and in
# a reader (`mmsb_open`), which has no page names.

using Test, MMSB

call(f, args...) = Base.invokelatest(f, args...)
labels(ps) = [p.label for p in ps]
const TIMINGS_FRAMES = v"1.10" <= VERSION < v"1.12.0-DEV"   # Core.Compiler.Timings: every frame
const V15 = VERSION < v"1.6"   # 1.5: the invalidation log is printed, not listed (`_InvalidationText15`)

dir = mktempdir()
state = mmsb_start(; dir = dir, file_backed_pages = true)
opts = (timing = true, invalidations = true, locations = true)
enable_instrumentation(state; opts...)

# What the queries gave on the live state, checked again after the close.
seen = Dict{Symbol,Any}()

@testset "an option whose internals are missing is refused by name, before anything is installed" begin
    # Every option works on the versions run here; a missing piece is faked.
    push!(MMSB._EXTRA_TOOLS_MISSING, :locations => "a faked piece")
    s2 = mmsb_start()
    try
        err = try
            enable_instrumentation(s2; timing = true, locations = true)
            nothing
        catch e
            e
        end
        @test err isa MMSB.InstrumentationUnsupported && occursin("a faked piece (locations = true)", sprint(showerror, err))
        @test MMSB.instrumentation_manager(s2) === nothing
    finally
        empty!(MMSB._EXTRA_TOOLS_MISSING)
        close(s2)
    end
    @test isempty(invalidation_trees(mmsb_start()).trees)   # nothing stored: an empty result, never a guessed one
end

@testset "item 12: precompile_statements from the index page" begin
    Core.eval(Main, :(module InstToolsA
                      @noinline leaf(x) = x + 1
                      c1(x) = leaf(x) * 2
                      leaf2(x::Int) = x + 1
                      wid(v::Vector{Any}) = leaf2(v[1])    # union-split: one branch inlined, one dynamic call
                      inl(x) = x * 3
                      c3(x) = inl(x) + 1                  # inl is inlined
                      pc(x::Int, s::String) = string(x, s)
                      end))
    A = getfield(Main, :InstToolsA)
    @test call(A.c1, 1) == 4 && call(A.wid, Any[1]) == 2 && call(A.c3, 1) == 4 && call(A.pc, 1, "a") == "1a"
    flush_instrumentation(state)
    sts = precompile_statements(state)
    mine = filter(l -> occursin("InstToolsA", l), sts)
    @test issorted(sts) && allunique(sts)
    # (1.5 prints `Main.InstToolsA`, 1.10 `InstToolsA`: both parse back.)
    @test count(l -> occursin("InstToolsA.pc)", l) && occursin("String", l), mine) == 1
    @test count(l -> occursin("InstToolsA.wid)", l), mine) == 1
    @test all(l -> Core.eval(Main, Meta.parse(l)) === true, mine)
    # Every captured concrete instance nameable from Main has its line (the in-memory table agrees).
    m = MMSB.instrumentation_manager(state)
    expect = sort!(unique!(filter(!isempty, [MMSB._precompile_line(s) for s in keys(m.instances)])))
    @test sts == expect
    seen[:lsn_a] = lsn(state)
    seen[:precompile_a] = sts
end

@testset "item 13: ir_callers from the index page, dynamic calls with a known target" begin
    A = getfield(Main, :InstToolsA)
    @test labels(ir_callers(state, A.leaf, (Int,))) == [ir_pages(state, A.c1, (Int,)).label]
    # `wid` has no :invoke of leaf2 (inlined on one branch, a dynamic call on the
    # other), but inference resolved the call: an :inferred edge.
    wid = ir_pages(state, A.wid, (Vector{Any},))
    @test labels(ir_callers(state, A.leaf2, (Int,))) == [wid.label]
    @test isempty(ir_callers(state, A.leaf2, (Int,); kinds = (:invoke,)))
    @test !any(l -> occursin("invoke", l) && occursin("leaf2", l), split(ir_text(state, wid.optimized), '\n'))
    # Inlined everywhere: only the compiler's record says who calls `inl`.
    @test labels(ir_callers(state, A.inl, (Int,))) == [ir_pages(state, A.c3, (Int,)).label]
    @test isempty(ir_callers(state, A.c1, (Int,)))
    idx = instance_index(state)
    @test any(e -> e.kind === :invoke, idx.edges) && any(e -> e.kind === :inferred, idx.edges)
    # The :invoke edges are the :calls edges of the compiler-edge table.
    calls = Set((e.from, e.to) for e in compiler_edges(state) if e.kind === :calls)
    @test Set((e.from, e.to) for e in idx.edges if e.kind === :invoke) == calls
    seen[:callers_leaf2] = ir_callers(state, A.leaf2, (Int,))
    seen[:callers_inl] = ir_callers(state, A.inl, (Int,))
end

@testset "item 9: inference timing tree per flush" begin
    Core.eval(Main, :(module InstToolsT
                      ta(x) = tb(x) + 1
                      tb(x) = tc(x) * 2
                      tc(x) = x - 1
                      end))
    M = getfield(Main, :InstToolsT)
    before = lsn(state)
    @test call(M.ta, 5) == 9
    flush_instrumentation(state)
    t = inference_timings(state)
    @test t.label == "ROOT" && !isempty(t.children)
    ta = filter(n -> occursin("InstToolsT.ta(", n.label), t.children)
    @test length(ta) == 1
    n = ta[1]
    @test n.inclusive > 0 && 0 <= n.exclusive <= n.inclusive && n.flush > 0
    sumchildren(x) = isempty(x.children) ? 0.0 : sum(c.inclusive for c in x.children)
    @test isapprox(n.inclusive, n.exclusive + sumchildren(n); rtol = 1e-6, atol = 1e-9)
    if TIMINGS_FRAMES
        # Every frame: tb inferred inside ta, tc inside tb.
        tb = filter(c -> occursin("InstToolsT.tb(", c.label), n.children)
        @test length(tb) == 1 && any(c -> occursin("InstToolsT.tc(", c.label), tb[1].children)
    else
        # Entry points only: tb and tc were inferred inside ta's entry.
        @test !any(c -> occursin("InstToolsT.tb(", c.label), t.children)
        # 1.12 (never run here): below the entry, the callees its CodeInstance's edges name.
        VERSION >= v"1.12.0-DEV" && @test any(c -> occursin("InstToolsT.tb(", c.label), n.children)
    end
    rows = slowest_inferences(state; n = 10_000)
    @test any(r -> occursin("InstToolsT.ta(", r.label) && r.count == 1, rows)
    @test issorted(rows; by = r -> -r.exclusive)
    # Replayed to before this flush: not there yet.
    replay_log(state, before) do old
        @test !any(c -> occursin("InstToolsT", c.label), inference_timings(old).children)
    end
    seen[:timing] = [(c.label, c.inclusive, c.exclusive, length(c.children)) for c in t.children]
end

@testset "item 10: invalidation trees, linked to the world log" begin
    Core.eval(Main, :(module InstToolsI
                      invf(x) = 1
                      invg(x) = invf(x) + 1
                      invh(x) = invg(x) * 2
                      end))
    M = getfield(Main, :InstToolsI)
    @test call(M.invh, 1) == 4
    flush_instrumentation(state)
    before = lsn(state)
    Core.eval(M, :(invf(x) = 2))
    @test call(M.invh, 1) == 6
    flush_instrumentation(state)
    trees = invalidation_trees(state).trees
    # 1.5 prints no root instance: the root is the new method's signature
    # (`Tuple{typeof(Main.InstToolsI.invf), Any}`), with no page.
    rootpat = V15 ? "InstToolsI.invf)" : "InstToolsI.invf("
    begin
        ev = filter(t -> occursin("InstToolsI.invf", t.method), trees)
        @test length(ev) == 1
        e = ev[1]
        @test e.reason == "jl_method_table_insert" && occursin("instrumentation_tools.jl", e.location) ||
              occursin("none", e.location)
        r = filter(r -> occursin(rootpat, r.label), e.roots)
        @test length(r) == 1
        # invg was invalidated through invf (depth 1), invh through invg (depth 2).
        g = filter(c -> occursin("InstToolsI.invg(", c.label), r[1].children)
        @test length(g) == 1 && any(c -> occursin("InstToolsI.invh(", c.label), g[1].children)
        V15 || @test r[1].page == ir_pages(state, M.invf, (Int,)).optimized   # a captured instance: its page
        # A captured caller: its page (1.5 names it by `jl_static_show`, matched to the captured instances).
        @test g[1].page == ir_pages(state, M.invg, (Int,)).optimized
        # The world of the definition is the :defined entry of the world page.
        @test any(w -> w.kind === :defined && w.world == e.world && occursin("invf", w.name), world_log(state).entries)
        replay_log(state, before) do old
            @test !any(t -> occursin("InstToolsI", t.method), invalidation_trees(old).trees)
        end
        # A new, more specific method: the instance it shadows and its callers.
        @test call(M.invh, 1) == 6
        flush_instrumentation(state)
        Core.eval(M, :(invf(x::Int) = 3))
        @test call(M.invh, 1) == 8
        flush_instrumentation(state)
        ev2 = filter(t -> occursin("InstToolsI.invf", t.method) && t.world > e.world, invalidation_trees(state).trees)
        @test length(ev2) == 1 && occursin("Int", ev2[1].method)
        @test any(r -> r.reason == "jl_method_table_insert" && occursin(V15 ? "InstToolsI.invf), Int" : "InstToolsI.invf(", r.label) &&
                       any(c -> occursin("InstToolsI.invg(", c.label), r.children), ev2[1].roots)
        @test any(w -> w.kind === :defined && w.world == ev2[1].world, world_log(state).entries)
        # A call signature that gains a method (`mtf(::Any)` had only `mtf(::Int)`):
        # its callers, through the method table's backedges; and a deleted method.
        Core.eval(M, :(mtf(x::Int) = 1))
        Core.eval(M, :(mtb(v::Vector{Any}) = mtf(v[1]) + 1))
        Core.eval(M, :(del(x) = 1))
        Core.eval(M, :(del(x::Int) = 2))
        Core.eval(M, :(usedel(x) = del(x) + 1))
        @test call(M.mtb, Any[1]) == 2 && call(M.usedel, 1) == 3
        flush_instrumentation(state)
        Core.eval(M, :(mtf(x::String) = 2))
        Base.delete_method(which(M.del, (Int,)))
        flush_instrumentation(state)
        trees = invalidation_trees(state).trees
        mt = filter(t -> occursin("InstToolsI.mtf", t.method), trees)
        @test length(mt) == 1 && any(r -> r.reason == "mt_backedges" && occursin("InstToolsI.mtf", r.label) &&
                                          any(c -> occursin("InstToolsI.mtb(", c.label), r.children), mt[1].roots)
        dl = filter(t -> t.reason == "jl_method_table_disable", trees)
        if V15
            # 1.5 prints the callers a deletion invalidated, but no closing line naming the method: kept as `other`.
            @test isempty(dl) && any(o -> occursin("no definition logged", o) && occursin("usedel(", o), invalidation_trees(state).other)
        else
            @test length(dl) == 1 && occursin("InstToolsI.del", dl[1].method) &&
                  any(r -> any(c -> occursin("InstToolsI.usedel(", c.label), r.children), dl[1].roots)
            # The world of the deletion: the first world without the method, where the world page has the invalidation.
            @test any(w -> w.kind === :invalidated && w.world == dl[1].world && occursin("usedel", w.name), world_log(state).entries)
        end
    end
    seen[:inval] = [(t.world, t.method, length(t.roots)) for t in trees]
end

@testset "item 11: source locations per statement" begin
    L0 = @__LINE__
    M = Module(:InstToolsL)
    Core.eval(M, quote
        loc_a(x) = x * 2
        function loc_b(x)
            y = loc_a(x)
            return y + 1
        end
    end)
    @test call(M.loc_b, 3) == 7
    flush_instrumentation(state)
    file = @__FILE__
    for optimize in (false, true)
        locs = ir_locations(state, M.loc_b, (Int,); optimized = optimize)
        ref = code_typed(M.loc_b, (Int,); optimize = optimize, debuginfo = :source)[1].first
        @test length(locs) == length(ref.code)
        @test [[(f.file, f.line, f.func) for f in fr] for fr in locs] ==
              [MMSB._statement_frames(ref, k) for k in 1:length(ref.code)]
        # The statement that computes loc_a's product was written on loc_a's
        # line and reached from loc_b's line (inlined there when optimized).
        k = findfirst(fr -> any(f -> f.file == file && f.line == L0 + 5, fr), locs)
        @test k !== nothing
        if optimize
            i = findfirst(fr -> any(f -> f.func == "loc_a" && f.line == L0 + 3, fr), locs)
            @test i !== nothing && locs[i][end].func == "loc_b" && locs[i][end].line == L0 + 5
        end
        @test statement_location(state, M.loc_b, (Int,), k; optimized = optimize) ==
              string(locs[k][1].file, ":", locs[k][1].line)
    end
    # The plain texts stay without line information.
    @test !occursin(file, ir_text(state, ir_pages(state, M.loc_b, (Int,)).optimized))
    seen[:locs] = ir_locations(state, M.loc_b, (Int,))
    seen[:locs_b] = M.loc_b
end

@testset "items 9–13 after a redefinition: pages follow, ids stay" begin
    A = getfield(Main, :InstToolsA)
    Core.eval(A, :(c1(x) = x * 5))   # c1 no longer calls leaf
    @test call(A.c1, 1) == 5
    flush_instrumentation(state)
    @test isempty(ir_callers(state, A.leaf, (Int,)))
    replay_log(state, seen[:lsn_a]) do old
        # As it was: c1 called leaf, and the precompile lines of then.
        @test labels(ir_callers(old, A.leaf, (Int,))) == [ir_pages(state, A.c1, (Int,)).label]
        @test precompile_statements(old) == seen[:precompile_a]
    end
end

disable_instrumentation(state)   # its last flush is stored too
final_precompile = precompile_statements(state)
final_callers = ir_callers(state, getfield(Main, :InstToolsA).leaf2, (Int,))
final_timing = [(c.label, c.inclusive, c.exclusive, length(c.children)) for c in inference_timings(state).children]
final_inval = [(t.world, t.method, length(t.roots)) for t in invalidation_trees(state).trees]
@test length(final_inval) >= length(seen[:inval]) && length(final_timing) >= length(seen[:timing])
close(state)

@testset "after close: open_at and a reader read the same" begin
    A = getfield(Main, :InstToolsA)
    for open in (d -> open_at(d), d -> mmsb_open(d))
        src = open(dir)
        try
            @test precompile_statements(src) == final_precompile
            got = ir_callers(src, A.leaf2, (Int,))
            @test labels(got) == labels(final_callers) && [p.optimized for p in got] == [p.optimized for p in final_callers]
            @test [(c.label, c.inclusive, c.exclusive, length(c.children)) for c in inference_timings(src).children] == final_timing
            @test [(t.world, t.method, length(t.roots)) for t in invalidation_trees(src).trees] == final_inval
            @test ir_locations(src, seen[:locs_b], (Int,)) == seen[:locs]
            # The IR text of a caller, read through the returned pages.
            @test !isempty(ir_text(src, got[1].optimized))
        finally
            close(src)
        end
    end
end

rm(dir; recursive = true, force = true)
