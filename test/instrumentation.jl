# Compiler instrumentation: IR pages, world page, redefinition deltas,
# re-analysis, restore of the compiler's entry point, fault tolerance, REPL.
#
# Functions under test are defined fresh here and called through
# `Base.invokelatest` (dynamic dispatch), so each one is an inference entry
# point that the hook sees (an instance inferred inside another's inference
# and inlined there is never compiled on its own, so it has no pages).

using Test, MMSB

const ROOT = dirname(@__DIR__)
call(f, args...) = Base.invokelatest(f, args...)
typed_text(f, types) = sprint(show, code_typed(f, types; optimize = false, debuginfo = :none)[1])
optimized_text(f, types) = sprint(show, code_typed(f, types; optimize = true, debuginfo = :none)[1])
lowered_text(f, types) = sprint(show, code_lowered(f, types; debuginfo = :none)[1])
has_entry(log, kind, needle) = any(e -> e.kind === kind && occursin(needle, e.name), log.entries)

state = mmsb_start()
@test !MMSB.hook_installed()
mgr = enable_instrumentation(state)
@test mgr isa MMSB.InstrumentationManager
@test MMSB.hook_installed()
@test instrumentation_status(state).enabled
@test enable_instrumentation(state) === mgr # idempotent

inst_add(x) = x + 1
inst_poly(x, y) = x * y - 3
@noinline inst_leaf(x) = x * 3 + 1
inst_caller(x) = inst_leaf(x) + inst_leaf(x + 1)
inst_str(s) = string(s, "!")
fib(n) = n < 2 ? n : fib(n - 1) + fib(n - 2)
is_even(n) = n == 0 ? true : is_odd(n - 1)
@noinline is_odd(n) = n == 0 ? false : is_even(n - 1)

module InstMod
h(x) = x + 3
end

const CASES = [(inst_add, (Int,)), (inst_poly, (Int, Float64)), (inst_caller, (Int,)), (inst_str, (String,)),
               (fib, (Int,)), (is_even, (Int,))]

@testset "capture: pages for each instance, text equal to code_typed" begin
    @test call(inst_add, 1) == 2
    @test call(inst_poly, 2, 1.5) == 0.0
    @test call(inst_caller, 2) == 7 + 10
    @test call(inst_str, "a") == "a!"
    @test call(fib, 15) == 610           # recursive inference
    @test call(is_even, 10)              # mutually recursive
    n = flush_instrumentation(state)
    @test n >= length(CASES)
    st = instrumentation_status(state)
    @test st.errors == 0 && st.first_error === nothing
    @test st.instances >= length(CASES) && st.pages == 2 * st.methods + 2 * st.instances
    for (f, types) in CASES
        p = ir_pages(state, f, types)
        @test p isa MMSB.IRPages && length(unique([p.source, p.lowered, p.typed, p.optimized])) == 4
        @test ir_text(state, p.typed) == typed_text(f, types)
        @test ir_text(state, p.optimized) == optimized_text(f, types)
        @test ir_text(state, p.lowered) == lowered_text(f, types)
        src = ir_text(state, p.source)
        @test occursin("module: $(@__MODULE__)", src) && occursin("name: $(nameof(f))", src)
        @test occursin("file: $(@__FILE__)", src)
        @test NamedTuple(p) == (source = p.source, lowered = p.lowered, typed = p.typed, optimized = p.optimized)
    end
    # The definition's text is read from this file.
    @test occursin("inst_poly(x, y) = x * y - 3", ir_text(state, ir_pages(state, inst_poly, (Int, Float64)).source))
    # is_odd is invoked (not inlined) by is_even: the hook never sees it, following :invoke finds it.
    @test occursin("invoke $(@__MODULE__).is_odd", ir_text(state, ir_pages(state, is_even, (Int,)).optimized))
    @test ir_text(state, ir_pages(state, is_odd, (Int,)).typed) == typed_text(is_odd, (Int,))
    # Page layout: 8-byte little-endian length, the next page of the chain (0: none),
    # the text, zeros up to the page size (1/8 headroom, a multiple of 64 bytes).
    p = ir_pages(state, inst_add, (Int,))
    raw = read_page(state, p.typed)
    text = typed_text(inst_add, (Int,))
    @test reinterpret(UInt64, raw[1:8])[1] == sizeof(text) && reinterpret(UInt64, raw[9:16])[1] == 0
    @test String(raw[17:16+sizeof(text)]) == text && all(iszero, raw[17+sizeof(text):end])
    @test length(raw) >= 16 + sizeof(text) + sizeof(text) ÷ 8 && length(raw) % 64 == 0
    @test occursin("ir/typed/", page_name(state, p.typed))
    # The chain source -> lowered -> typed -> optimized is in the native ShadowPageGraph, as
    # :compiler edges, and caller -> callee links the optimized pages.
    @test dependents(state, p.source) == [p.lowered]
    @test dependents(state, p.lowered) == [p.typed]
    @test dependents(state, p.typed) == [p.optimized]
    pc, pl = ir_pages(state, inst_caller, (Int,)), ir_pages(state, inst_leaf, (Int,))
    @test pl.optimized in dependents(state, pc.optimized)
    order = topo_order(state)
    @test findfirst(==(p.source), order) < findfirst(==(p.typed), order) < findfirst(==(p.optimized), order)
    # show prints the IR text
    shown = sprint(show, MIME"text/plain"(), p)
    @test occursin(text, shown) && occursin(optimized_text(inst_add, (Int,)), shown)
end

@testset "compiler edges: source → lowered → typed → optimized, caller → callee" begin
    p = ir_pages(state, inst_caller, (Int,))
    leaf = ir_pages(state, inst_leaf, (Int,))
    g = method_graph(state, inst_caller, (Int,))
    has(from, to, kind) = MMSB.CompilerEdge(from, to, kind) in g.edges
    @test has(p.source, p.lowered, :lowered) && has(p.lowered, p.typed, :typed) && has(p.typed, p.optimized, :optimized)
    @test has(p.optimized, leaf.optimized, :calls)
    @test has(leaf.typed, leaf.optimized, :optimized)
    @test Set(first.(g.pages)) == Set([p..., leaf...])
    @test occursin("calls", sprint(show, MIME"text/plain"(), g))
    @test issubset(g.edges, compiler_edges(state))
    mp = module_pages(state, @__MODULE__)
    @test all(x -> x in mp, [p..., leaf...]) && issorted(mp; by = x -> x.value)
    @test isempty(module_pages(state, Base)) # system code is not captured by default
end

@testset "world page and redefinition deltas" begin
    log0 = world_log(state)
    @test log0.world == instrumentation_status(state).world
    @test has_entry(log0, :defined, "inst_leaf")
    leaf = ir_pages(state, inst_leaf, (Int,))
    e0, l0, wp0 = page_epoch(state, leaf.typed), lsn(state), page_epoch(state, world_page(state))
    old = ir_text(state, leaf.typed)
    @eval @noinline inst_leaf(x) = x * 5 + 2
    @test call(inst_caller, 2) == 12 + 17
    flush_instrumentation(state)
    leaf2 = ir_pages(state, inst_leaf, (Int,))
    @test leaf2.typed == leaf.typed # same page: the new text fits, it arrived as a delta
    @test page_epoch(state, leaf.typed) == e0 + 1 && lsn(state) > l0
    new = ir_text(state, leaf.typed)
    @test new != old && new == typed_text(inst_leaf, (Int,)) && occursin("x * 5", new)
    @test ir_text(state, leaf.optimized) == optimized_text(inst_leaf, (Int,))
    log1 = world_log(state)
    @test log1.world > log0.world && page_epoch(state, world_page(state)) > wp0
    @test has_entry(log1, :defined, "inst_leaf") && log1.count > log0.count
    # inst_caller's compiled code called the old inst_leaf: an invalidation.
    @test has_entry(log1, :invalidated, "inst_caller") && log1.invalidations >= 1
end

@testset "reanalyze!: deterministic, deltas only for what changed" begin
    @test reanalyze!(state) == String[] # same code, same world: same bytes, no write
    l0 = lsn(state)
    @eval @noinline inst_leaf(x) = x * 7 - 1
    leaf = ir_pages(state, inst_leaf, (Int,))
    e0 = page_epoch(state, leaf.typed)
    changed = reanalyze!(state, inst_leaf, (Int,)) # not called since: only re-analysis sees it
    @test any(c -> startswith(c, "typed") && occursin("inst_leaf", c), changed)
    @test page_epoch(state, leaf.typed) == e0 + 1 && lsn(state) > l0
    @test ir_text(state, leaf.typed) == typed_text(inst_leaf, (Int,)) && occursin("x * 7", ir_text(state, leaf.typed))
    @test reanalyze!(state) == String[]
    # A function never called is captured by reanalyze!(state, f, types).
    inst_never(x) = x - 1
    @test_throws ArgumentError ir_pages(state, inst_never, (Int,))
    reanalyze!(state, inst_never, (Int,))
    @test ir_text(state, ir_pages(state, inst_never, (Int,)).optimized) == optimized_text(inst_never, (Int,))
end

@testset "a text that outgrows its page keeps its page id; replay shows the old text" begin
    # Before issue 19 the text moved to a new page id and the old id became unknown.
    logged = mmsb_start(; logging = true)
    enable_instrumentation(logged)
    @eval inst_grow(x) = x + 1 # global (a definition in the set's body would be a local closure)
    call(inst_grow, 1)
    flush_instrumentation(logged)
    p = ir_pages(logged, inst_grow, (Int,))
    small, l0 = ir_text(logged, p.typed), lsn(logged)
    body = join(["y = y * $i + x" for i in 1:40], "; ")
    @eval inst_grow(x) = (y = x; $(Meta.parse("begin; $body; end")); y)
    call(inst_grow, 1)
    flush_instrumentation(logged)
    p2 = ir_pages(logged, inst_grow, (Int,))
    st = instrumentation_status(logged)
    @test st.continuations >= 2 && st.errors == 0 # typed and optimized each spilled over
    @test NamedTuple(p2) == NamedTuple(p)          # the same four ids
    @test ir_text(logged, p.typed) == typed_text(inst_grow, (Int,))
    @test ir_text(logged, p.optimized) == optimized_text(inst_grow, (Int,))
    raw = read_page(logged, p.typed)
    next = reinterpret(UInt64, raw[9:16])[1]
    @test next != 0 && next != p.typed.value && page_info(logged, MMSB.PageId(next)).size > 0
    # Replay to the LSN before the redefinition: the same id holds the old text.
    replay_log(logged, l0) do r
        @test ir_text(r, p.typed) == small
    end
    # Shrinking again frees the continuation page, the head keeps its id.
    @eval inst_grow(x) = x + 2
    call(inst_grow, 1)
    flush_instrumentation(logged)
    @test ir_pages(logged, inst_grow, (Int,)).typed == p.typed
    @test ir_text(logged, p.typed) == typed_text(inst_grow, (Int,))
    @test reinterpret(UInt64, read_page(logged, p.typed)[9:16])[1] == 0
    @test_throws MMSBError page_info(logged, MMSB.PageId(next))
    g = method_graph(logged, inst_grow, (Int,))
    @test MMSB.CompilerEdge(p.typed, p.optimized, :optimized) in g.edges
    disable_instrumentation(logged)
    close(logged)
end

@testset "nested inference: generated function calling a fresh helper" begin
    # The generator runs during inference and needs the helper compiled: a
    # nested inference while the hook is on the stack.
    @eval inst_helper(T) = T === Int ? :(x + 100) : :(x)
    @eval @generated inst_gen(x) = inst_helper(x)
    @test call(inst_gen, 1) == 101
    inst_spawned(x) = x ÷ 2
    t = Threads.@spawn Base.invokelatest(inst_spawned, 10) # another thread, hook installed
    @test fetch(t) == 5
    flush_instrumentation(state)
    @test ir_text(state, ir_pages(state, inst_gen, (Int,)).typed) == typed_text(inst_gen, (Int,))
    @test ir_text(state, ir_pages(state, inst_spawned, (Int,)).typed) == typed_text(inst_spawned, (Int,))
    # flush from inside user code (a function that is itself being captured)
    inst_flusher(s) = flush_instrumentation(s)
    @test call(inst_flusher, state) isa Int
    @test instrumentation_status(state).errors == 0
end

# Typed/optimized text of a captured instance, computed by Base's own
# reflection in the current world (code_typed_by_type from 1.6; on 1.5 the
# steps of code_typed, which takes a function object, for the signature).
# A signature may match several methods (an instance of `f(@nospecialize x)`
# beside `f(::Int)`): the result inferred for the instance's method is taken.
function reflect_texts(mi::Core.MethodInstance)
    spec = mi.specTypes
    if isdefined(Base, :code_typed_by_type)
        typed = Base.code_typed_by_type(spec; optimize = false, debuginfo = :none)
        opt = Base.code_typed_by_type(spec; optimize = true, debuginfo = :none)
    else
        # code_typed's own steps on 1.5 (base/reflection.jl), for any function type.
        world = Base.get_world_counter()
        infer(x, optimize) = begin
            code, rt = Core.Compiler.typeinf_code(x[3], x[1], x[2], optimize, Core.Compiler.Params(world))
            Base.remove_linenums!(code) => rt
        end
        matches = Base._methods_by_ftype(spec, -1, world)
        typed = [infer(x, false) for x in matches]
        opt = [infer(x, true) for x in matches]
    end
    ours(r) = (p = first(r).parent; p isa Core.MethodInstance && p.def === mi.def)
    if length(typed) > 1
        typed, opt = filter(ours, typed), filter(ours, opt)
    end
    (length(typed) == 1 && length(opt) == 1) || return nothing
    return sprint(show, typed[1]), sprint(show, opt[1])
end

@testset "a corpus of real code: Printf's source loaded as a user module" begin
    # The stdlib's own file, evaluated as user code (Main.InstCorpus.Printf):
    # every page must equal what Base's reflection prints in the same world.
    corpus = Module(:InstCorpus)
    Base.include(corpus, joinpath(Sys.STDLIB, "Printf", "src", "Printf.jl"))
    sc = mmsb_start()
    enable_instrumentation(sc; modules = corpus)
    Core.eval(corpus, :(fmt(x, y, s) = Printf.@sprintf("%d|%8.3f|%-4s|%x", x, y, s, x)))
    @test call(corpus.fmt, 255, 3.14159, "ab") == "255|   3.142|ab  |ff"
    @test flush_instrumentation(sc) > 0
    m = MMSB.instrumentation_manager(sc)
    @test instrumentation_status(sc).errors == 0
    world = Base.get_world_counter()
    compared = 0
    for ent in values(m.instances)
        @test ent.world == world
        r = reflect_texts(ent.mi)
        r === nothing && continue
        @test ir_text(sc, ent.typed.page) == r[1]
        @test ir_text(sc, ent.optimized.page) == r[2]
        compared += 1
    end
    for ment in values(m.methods)
        isdefined(ment.method, :generator) && continue
        @test ir_text(sc, ment.lowered.page) == sprint(show, Base.uncompressed_ir(ment.method) |> Base.remove_linenums!)
    end
    @test compared >= 3 && compared == length(m.instances) # every captured instance
    @test any(ent -> occursin("Printf", ent.label), values(m.instances))
    # Lowered pages of the instances' methods agree with code_lowered too (ordinary methods).
    p = ir_pages(sc, corpus.fmt, (Int, Float64, String))
    @test ir_text(sc, p.lowered) == sprint(show, code_lowered(corpus.fmt, (Int, Float64, String); debuginfo = :none)[1])
    disable_instrumentation(sc)
    close(sc)
end

# A generator that sees the world it is expanded for (1.10+: generators get
# `(world, source, args...)`, src/method.c jl_call_staged); its body returns
# that world, so the lowered text names the world it was expanded in.
struct InstWorldGen end
function (::InstWorldGen)(world::UInt, source::LineNumberNode, @nospecialize(args...))
    return Expr(:lambda, Any[Symbol("#self#"), :x],
                Expr(Symbol("scope-block"), Expr(:block, Expr(:return, world))))
end

@testset "@generated: expanded for the capture's world" begin
    if VERSION < v"1.10"
        @test_skip "generators receive no world before 1.10"
    else
        @eval function inst_worldgen(x)
            $(Expr(:meta, :generated, InstWorldGen()))
            $(Expr(:meta, :generated_only))
        end
        w = call(inst_worldgen, 1)
        @test w isa UInt && 0 < w <= Base.get_world_counter()
        flush_instrumentation(state)
        world = Base.get_world_counter()
        p = ir_pages(state, inst_worldgen, (Int,))
        low = ir_text(state, p.lowered)
        # code_lowered expands for the current world (the line info it prints differs by version).
        @test occursin("return $(repr(world))", low) && occursin("return $(repr(world))", lowered_text(inst_worldgen, (Int,)))
        @test count("return", low) == 1
        @test ir_text(state, p.typed) == typed_text(inst_worldgen, (Int,))
    end
end

@testset "an error inside capture never breaks user code" begin
    inst_fault1(x) = x + 42
    inst_fault2(x) = x * 42
    try
        MMSB._FAULT[] = :hook
        @test call(inst_fault1, 1) == 43
        MMSB._FAULT[] = :render
        @test call(inst_fault2, 2) == 84
        @test flush_instrumentation(state) isa Int # does not throw
    finally
        MMSB._FAULT[] = :none
    end
    st = instrumentation_status(state)
    @test st.errors >= 2 && occursin("fault injected", st.first_error)
    # An edge the native graph refuses (as it will refuse cycles) is counted, not an error.
    inst_native(x) = x - 42
    try
        MMSB._FAULT[] = :native
        call(inst_native, 1)
        flush_instrumentation(state)
    finally
        MMSB._FAULT[] = :none
    end
    st2 = instrumentation_status(state)
    @test st2.native_rejected >= 3 && st2.errors == st.errors
    p = ir_pages(state, inst_native, (Int,))
    @test MMSB.CompilerEdge(p.typed, p.optimized, :optimized) in compiler_edges(state)
    @test call(inst_caller, 1) == inst_caller(1) # still working
    # What failed can be captured explicitly afterwards.
    reanalyze!(state, inst_fault2, (Int,))
    @test ir_text(state, ir_pages(state, inst_fault2, (Int,)).typed) == typed_text(inst_fault2, (Int,))
end

@testset "two states, default state, enable on a closed state" begin
    s2 = mmsb_start()
    enable_instrumentation(s2)
    inst_both(x) = x & 3
    call(inst_both, 7)
    flush_instrumentation() # every enabled state
    @test ir_text(s2, ir_pages(s2, inst_both, (Int,)).typed) == ir_text(state, ir_pages(state, inst_both, (Int,)).typed)
    disable_instrumentation(s2)
    @test MMSB.hook_installed() # `state` still has it on
    close(s2)
    s3 = mmsb_start()
    enable_instrumentation(s3; modules = InstMod) # only that module
    inst_other(x) = x | 8
    @test call(InstMod.h, 1) == 4 && call(inst_other, 1) == 9
    flush_instrumentation(s3)
    @test ir_text(s3, ir_pages(s3, InstMod.h, (Int,)).typed) == typed_text(InstMod.h, (Int,))
    @test_throws ArgumentError ir_pages(s3, inst_other, (Int,))
    @test !isempty(module_pages(s3, InstMod)) && isempty(module_pages(s3, @__MODULE__))
    close(s3) # closing without disabling: the manager is dropped at the next enable
    closed = mmsb_start()
    close(closed)
    @test_throws ArgumentError enable_instrumentation(closed)
    @test MMSB.hook_installed()
    d = enable_instrumentation()
    @test d.state === MMSB.default_instrumentation_state()
    inst_default(x) = x + 0.5
    call(inst_default, 1)
    flush_instrumentation()
    @test ir_text(ir_pages(inst_default, (Int,)).optimized) == optimized_text(inst_default, (Int,))
    @test !isempty(module_pages(@__MODULE__))
    @test instrumentation_status().enabled
    # world_log()/world_page() read the default state, like the other REPL helpers.
    @test world_page() == world_page(MMSB.default_instrumentation_state())
    @test world_log() == world_log(MMSB.default_instrumentation_state()) && world_log().world > 0
    disable_instrumentation()
    @test !instrumentation_status().enabled
end

@testset "REPL transform: the command runs as typed, after a flush" begin
    cmd = :(inst_repl(x) = x + 9)
    ex = MMSB._repl_transform(cmd)
    # Revise's form: our call is a top-level statement of its own, the command follows unchanged.
    @test ex isa Expr && ex.head === :toplevel && ex.args[end] === cmd && length(ex.args) == 2
    @test Core.eval(Main, ex) isa Function # the command's value is kept
    Core.eval(Main, MMSB._repl_transform(:(struct InstReplS; a::Int; end))) # not only expressions
    @test Core.eval(Main, MMSB._repl_transform(:(InstReplS(3).a + inst_repl(1)))) == 13
    # The next command starts with a flush: what the previous ones compiled is on pages.
    @test Core.eval(Main, MMSB._repl_transform(:(ir_text($state, ir_pages($state, Main.inst_repl, (Int,)).typed)))) ==
          typed_text(Main.inst_repl, (Int,))
    # An error's stack trace has no frame of MMSB between the user's code and the caller's eval.
    Core.eval(Main, :(inst_repl_throw() = error("boom")))
    bt = try
        Core.eval(Main, MMSB._repl_transform(:(inst_repl_throw())))
        nothing
    catch err
        @test err isa ErrorException && err.msg == "boom"
        catch_backtrace()
    end
    @test bt !== nothing
    frames = stacktrace(bt)
    @test any(fr -> fr.func === :inst_repl_throw, frames)
    top = findfirst(fr -> fr.func === Symbol("top-level scope"), frames)
    @test top !== nothing && !any(fr -> occursin(joinpath("julia", "instrumentation"), string(fr.file)), frames[1:top])
    @test !any(fr -> startswith(string(fr.func), "_repl"), frames)
end

@testset "disable restores the compiler's entry point" begin
    disable_instrumentation(state)
    calls = MMSB._HOOK_CALLS[]
    @test !MMSB.hook_installed() && !instrumentation_status(state).enabled
    inst_after(x) = x - 7
    @test call(inst_after, 10) == 3
    @test MMSB._HOOK_CALLS[] == calls && isempty(MMSB._QUEUE) # the hook saw nothing
    flush_instrumentation(state)
    @test_throws ArgumentError ir_pages(state, inst_after, (Int,))
    @test ir_text(state, ir_pages(state, inst_caller, (Int,)).typed) == typed_text(inst_caller, (Int,)) # data kept
    disable_instrumentation(state) # idempotent
    # Enabling again installs the hook again.
    enable_instrumentation(state)
    inst_again(x) = x * 11
    call(inst_again, 1)
    flush_instrumentation(state)
    @test ir_text(state, ir_pages(state, inst_again, (Int,)).typed) == typed_text(inst_again, (Int,))
    disable_instrumentation(state)
    @test !MMSB.hook_installed()
end

@testset "self-check: a missing piece gives a clear error and installs nothing" begin
    @test !MMSB.hook_installed()
    @test all(r -> r[2](), MMSB._requirements()) # this Julia has every piece
    MMSB._self_check()
    calls, queued = MMSB._HOOK_CALLS[], length(MMSB._QUEUE)
    s4 = mmsb_start()
    push!(MMSB._EXTRA_REQUIREMENTS, ("C symbol jl_mmsb_no_such_symbol", () -> MMSB._c_symbol(:jl_mmsb_no_such_symbol) != C_NULL))
    push!(MMSB._EXTRA_REQUIREMENTS, ("field Core.CodeInstance.mmsb_no_such", () -> hasfield(Core.CodeInstance, :mmsb_no_such)))
    err = try
        enable_instrumentation(s4)
        nothing
    catch e
        e
    finally
        empty!(MMSB._EXTRA_REQUIREMENTS)
    end
    @test err isa MMSB.InstrumentationUnsupported
    msg = sprint(showerror, err)
    @test occursin("Julia $VERSION", msg) && occursin("jl_mmsb_no_such_symbol", msg) && occursin("CodeInstance.mmsb_no_such", msg)
    @test !MMSB.hook_installed() && MMSB.instrumentation_manager(s4) === nothing && isempty(page_ids(s4))
    @test MMSB._HOOK_CALLS[] == calls && length(MMSB._QUEUE) == queued
    # With the pieces back, the same state enables.
    enable_instrumentation(s4)
    @test MMSB.hook_installed()
    disable_instrumentation(s4)
    @test !MMSB.hook_installed()
    close(s4)
end

@testset "a warm-up that throws leaves nothing behind" begin
    # Before the entry point is replaced, one real call compiles the hook; when it
    # throws (as 1.12's 4-argument entry point did with 3 arguments), the error
    # reaches the caller and no queue entry, hook count or transform stays.
    @test !MMSB.hook_installed()
    calls, errors, queued = MMSB._HOOK_CALLS[], MMSB._HOOK_ERRORS[], length(MMSB._QUEUE)
    s6 = mmsb_start()
    err = try
        MMSB._FAULT[] = :warmup
        enable_instrumentation(s6)
        nothing
    catch e
        e
    finally
        MMSB._FAULT[] = :none
    end
    @test err isa MMSB.InstrumentationFault && occursin("warm-up", err.msg)
    @test !MMSB.hook_installed() && !instrumentation_status(s6).enabled && !MMSB.repl_attached()
    @test MMSB._HOOK_CALLS[] == calls && MMSB._HOOK_ERRORS[] == errors && length(MMSB._QUEUE) == queued
    enable_instrumentation(s6) # and a later enable works
    @test MMSB.hook_installed()
    disable_instrumentation(s6)
    close(s6)
end

const OTHER_CALLS = Threads.Atomic{Int}(0)
other_entry(args...) = (Threads.atomic_add!(OTHER_CALLS, 1); MMSB._default_typeinf_entry()(args...))

@testset "disable leaves an entry point another tool installed meanwhile" begin
    if MMSB._typeinf_world() === nothing
        @test_skip "1.5 does not export jl_typeinf_world: the default is restored unconditionally"
    else
        s5 = mmsb_start()
        enable_instrumentation(s5)
        other_entry(MMSB._warmup_args()...) # compiled before it is installed
        ccall(:jl_set_typeinf_func, Cvoid, (Any,), other_entry)
        try
            disable_instrumentation(s5)
            @test !MMSB.hook_installed() && MMSB._LEFT_FOREIGN[]
            n = OTHER_CALLS[]
            inst_foreign(x) = x + 77
            @test call(inst_foreign, 1) == 78
            @test OTHER_CALLS[] > n # theirs is still the compiler's entry point
        finally
            ccall(:jl_set_typeinf_func, Cvoid, (Any,), MMSB._default_typeinf_entry())
        end
        # Alone again: enable/disable restores the default and says so.
        enable_instrumentation(s5)
        disable_instrumentation(s5)
        @test !MMSB._LEFT_FOREIGN[]
        n = OTHER_CALLS[]
        inst_foreign2(x) = x + 78
        @test call(inst_foreign2, 1) == 79 && OTHER_CALLS[] == n
        close(s5)
    end
end

# Child processes: the same code gives the same bytes in another process; at
# exit the hook is removed and pending captures are flushed.
#
# IR names the module its globals live in (from 1.11 typed code shows
# `Main.M.:-`), so both processes define the code in a module of the same full
# name: the text then depends on the code alone, not on the module this test
# file happens to run in.
const SAME_BYTES_CODE = "inst_poly(x, y) = x * y - 3"
const SameBytes = Module(:MMSBSameBytes) # Main.MMSBSameBytes here and in the child
Core.eval(SameBytes, Meta.parse(SAME_BYTES_CODE))
const CHILD = """
using MMSB
s = mmsb_start()
atexit() do  # registered before MMSB's own hook, so it runs after it
    st = instrumentation_status(s)
    println("ATEXIT instances=", st.instances, " hook=", MMSB.hook_installed())
end
enable_instrumentation(s)
const SB = Module(:MMSBSameBytes)
Core.eval(SB, Meta.parse($(repr(SAME_BYTES_CODE))))
inst_poly = SB.inst_poly
Base.invokelatest(inst_poly, 2, 1.5)
flush_instrumentation(s)
p = ir_pages(s, inst_poly, (Int, Float64))
println("TYPED ", bytes2hex(codeunits(ir_text(s, p.typed))))
println("OPT ", bytes2hex(codeunits(ir_text(s, p.optimized))))
inst_late(x) = x + 2
Base.invokelatest(inst_late, 1) # captured only by the flush at exit
"""

@testset "a transform flushing its own state: refused (reentrant), counted, never a hang" begin
    # Before issue 15's fix this deadlocked on the state's lock for good.
    a = create_page(state, 8)
    b = create_page(state, 8)
    flushed = Ref{Any}(nothing)
    inst_reent(x) = x + 7
    add_dependency!(state, a, b; commands = [(src, dst) -> begin
        call(inst_reent, 1)                          # something new to render
        flushed[] = flush_instrumentation(state)     # its page writes are refused
        copyto!(dst, src)
    end])
    e0 = instrumentation_status(state).errors
    write_page!(state, a, UInt8[1])
    e = try propagate!(state, a); nothing catch x; x end
    @test e isa MMSBError && e.name == "reentrant"
    @test flushed[] isa Int                          # flush never throws: it counts the refusal
    @test instrumentation_status(state).errors > e0
    @test flush_instrumentation(state) isa Int       # outside the round it works again
    @test read_page(state, b) == zeros(UInt8, 8)
end

@testset "another process: same bytes; atexit restores and flushes" begin
    cmd = `$(Base.julia_cmd()) --startup-file=no --project=$ROOT -e $CHILD`
    out = read(cmd, String)
    m = match(r"TYPED ([0-9a-f]+)", out)
    @test m !== nothing
    if m !== nothing
        child_typed = String(hex2bytes(m.captures[1]))
        @test child_typed == typed_text(SameBytes.inst_poly, (Int, Float64))
        @test String(hex2bytes(match(r"OPT ([0-9a-f]+)", out).captures[1])) ==
              optimized_text(SameBytes.inst_poly, (Int, Float64))
    end
    @test occursin("ATEXIT instances=2 hook=false", out)
end

@testset "REPL transform: the flush is deferred to idle time, queries run it first" begin
    was_enabled = instrumentation_status(state).enabled
    enable_instrumentation(state)
    MMSB._IDLE_DEFER[] = true # as in a REPL (no backend here: idle between polls)
    try
        f0 = instrumentation_status(state).flushes
        Core.eval(Main, MMSB._repl_transform(:(inst_idle(x) = x - 4)))
        @test Core.eval(Main, MMSB._repl_transform(:(Base.invokelatest(inst_idle, 10)))) == 6
        # The command returned without rendering: the flush is owed, the instance only queued.
        @test MMSB._IDLE_PENDING[]
        m = MMSB.instrumentation_manager(state) # a query: runs the owed flush first
        @test !MMSB._IDLE_PENDING[] && m.flushes > f0
        @test ir_text(state, ir_pages(state, Main.inst_idle, (Int,)).typed) == typed_text(Main.inst_idle, (Int,))
        # Left alone, the idle task flushes by itself once the (absent) backend is quiet.
        n0 = MMSB._IDLE_FLUSHES[]
        Core.eval(Main, MMSB._repl_transform(:(inst_idle2(x) = x - 5)))
        @test Core.eval(Main, MMSB._repl_transform(:(Base.invokelatest(inst_idle2, 10)))) == 5
        @test MMSB._IDLE_PENDING[]
        t0 = time()
        while MMSB._IDLE_PENDING[] && time() - t0 < 60
            sleep(0.05)
        end
        sleep(0.5) # the flush runs after the last idle poll
        @test MMSB._IDLE_FLUSHES[] > n0
        @test !MMSB._IDLE_PENDING[]
        @test any(e -> e.mi.def.name === :inst_idle2, values(MMSB.instrumentation_manager(state).instances))
        # A command typed while a flush is still owed runs it in its prefix (before compiling anything).
        MMSB._IDLE_PENDING[] = true
        f1 = MMSB.instrumentation_manager(state).flushes # (runs it: owed)
        MMSB._IDLE_PENDING[] = true
        Core.eval(Main, MMSB._repl_transform(:(1 + 1)))
        @test MMSB.instrumentation_manager(state).flushes > f1
    finally
        MMSB._IDLE_DEFER[] = nothing
        flush_instrumentation(state)
        @test !MMSB._IDLE_PENDING[]
        was_enabled || disable_instrumentation(state)
    end
end

Base.include(@__MODULE__, joinpath(@__DIR__, "repl", "repl_driver.jl"))

@testset "REPL session under a pseudo-terminal" begin
    if Sys.which("script") === nothing
        @info "skipping the REPL test: the `script` command (util-linux) is not installed"
        @test_skip false
    else
        res = run_repl_session(; julia = Base.julia_cmd(), project = ROOT) # generous per-step limits: see repl_driver.jl
        res.ok || println(stderr, "REPL transcript:\n", res.transcript)
        for (marker, expected) in REPL_EXPECTED
            @test get(res.markers, marker, nothing) == expected
        end
        trace = repl_trace(res.transcript)
        trace_is_clean(trace) || println(stderr, "REPL stack trace:\n", trace)
        @test trace_is_clean(trace)
        @test res.ok
    end
end

close(state)
