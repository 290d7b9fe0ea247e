# Issue 19: nothing compiled in scope is missed. Before and after a workload,
# this file walks every cached `CodeInstance` itself (its own walk, not
# MMSB's): every method table reachable from a loaded module, every
# specialization, every native `CodeInstance` valid now with native code. Each
# one that appeared during the workload and is in the state's scope must be
# captured, as that very `MethodInstance`, with the text Base's reflection
# prints. Once for user code (a stdlib's source loaded as a user module, plus
# top-level code, `map`, inlined-then-called functions, keyword calls and
# constructors), once with `include_system = true`.

using Test, MMSB

# Every method table reachable from `mods` by a binding, plus `Type`'s (constructors).
function all_tables(mods)
    tables = IdDict{Any,Nothing}(Core.Type.body.name.mt => nothing)
    seen = IdDict{Module,Nothing}()
    stack = Module[mods...]
    while !isempty(stack)
        mod = pop!(stack)
        haskey(seen, mod) && continue
        seen[mod] = nothing
        for n in names(mod; all = true)
            isdefined(mod, n) || continue
            v = try
                getfield(mod, n)
            catch
                continue
            end
            if v isa Module
                push!(stack, v)
            else
                t = v isa Function ? typeof(v) : v isa Type ? Base.unwrap_unionall(v) : nothing
                (t isa DataType && isdefined(t.name, :mt) && t.name.mt isa Core.MethodTable) && (tables[t.name.mt] = nothing)
            end
        end
    end
    return collect(keys(tables))
end

# code instance => method instance, for every instance compiled to native code and valid now.
function compiled_now(mods)
    out = IdDict{Any,Core.MethodInstance}()
    for mt in all_tables(mods)
        Base.visit(mt) do meth
            s = meth.specializations
            mis = s isa Core.MethodInstance ? Any[s] : s isa Core.SimpleVector ?
                  Any[s[i] for i in 1:length(s) if isassigned(s, i)] : Any[]
            for mi in mis
                (mi isa Core.MethodInstance && isdefined(mi, :cache)) || continue
                ci = mi.cache
                while true
                    owner_ok = !hasfield(typeof(ci), :owner) || ci.owner === nothing
                    if owner_ok && ci.max_world == typemax(UInt) && ci.invoke != C_NULL
                        out[ci] = mi
                    end
                    isdefined(ci, :next) || break
                    ci = ci.next
                end
            end
        end
    end
    return out
end

roots(extra) = unique!(Module[Main, Core, Base, Base.loaded_modules_array()..., extra...])
within(mod, top) = mod === top || (parentmodule(mod) !== mod && within(parentmodule(mod), top))

# The instances of `after` not in `before` whose method `inscope` accepts, and
# of those the ones the state did not capture (as that very instance).
function missed(state, before, after, inscope)
    m = MMSB.instrumentation_manager(state)
    new, miss = 0, Core.MethodInstance[]
    for (ci, mi) in after
        haskey(before, ci) && continue
        inscope(mi.def.module) || continue
        new += 1
        ent = get(m.instances, mi.specTypes, nothing)
        (ent !== nothing && ent.mi === mi) || push!(miss, mi)
    end
    return new, miss
end

const WORKLOAD = """
using .Printf
fmt(x, y, s) = Printf.@sprintf("%d|%8.3f|%-4s|%x", x, y, s, x)
struct Spec{T}
    x::Int
end
Spec{T}(a, b) where {T} = Spec{T}(a + b)
kw(x; scale = 2, shift = 0) = x * scale + shift
h(x) = x * 3 + 100
hm(x) = x - 7
f(x) = x - 5
g(x) = f(x) * 2
@noinline leaf(x) = x + 1
caller(x) = leaf(x) * 2
closure_user(v) = sum(map(y -> y + length(v), v))
"""

@testset "user module: every compiled instance is captured (0 missed)" begin
    U = Module(:InstWalkUser)
    Base.include(U, joinpath(Sys.STDLIB, "Printf", "src", "Printf.jl"))
    s = mmsb_start()
    enable_instrumentation(s)
    before = compiled_now(roots([U]))
    Core.eval(U, Meta.parse("begin\n$WORKLOAD\nend"))
    @test Core.eval(U, :(fmt(255, 3.14159, "ab"))) == "255|   3.142|ab  |ff"
    @test Core.eval(U, :(acc = 0; for i in 1:3; global acc += h(i); end; acc)) == 318  # top-level code
    @test Core.eval(U, :(map(hm, [1, 2]))) == [-6, -5]                                   # called from Base only
    @test Core.eval(U, :(g(1); f(1))) == -4                                              # inlined, then called
    @test Core.eval(U, :(kw(3; shift = 1))) == 7                                         # a keyword call
    @test Core.eval(U, :(Spec{Val{:a}}(1, 2).x)) == 3                                    # a constructor
    @test Core.eval(U, :(caller(1) + closure_user([1, 2]))) == 4 + 7
    @test Core.eval(U, :(Printf.@sprintf("%5.1e %s", 12345.678, :sym))) == "1.2e+04 sym"
    after = compiled_now(roots([U]))
    flush_instrumentation(s)
    new, miss = missed(s, before, after, mod -> within(mod, U))
    @test new >= 20
    isempty(miss) || println(stderr, "missed: ", join(string.(miss), "\n  "))
    @test isempty(miss)
    st = instrumentation_status(s)
    # This state's own errors (`st.errors` also counts the process-wide hook's, from earlier files).
    @test MMSB.instrumentation_manager(s).errors == 0 && st.failures == 0 && st.instances >= new
    # Every captured instance's pages equal Base's reflection in this world.
    m = MMSB.instrumentation_manager(s)
    world = Base.get_world_counter()
    bad = String[]
    for ent in values(m.instances)
        typed, opt, rt = MMSB._infer_ir(ent.mi, world)
        ctx, mod, low = MMSB._flush_context(), ent.mi.def.module, () -> MMSB._lowered_ir(ent.mi, world)
        ir_text(s, ent.typed.page) == MMSB._render_stable(typed, rt, mod, ctx, low) || push!(bad, "typed " * ent.label)
        ir_text(s, ent.optimized.page) == MMSB._render_stable(opt, rt, mod, ctx, low) || push!(bad, "optimized " * ent.label)
    end
    isempty(bad) || println(stderr, "differ: ", join(bad, "\n  "))
    @test isempty(bad)
    disable_instrumentation(s)
    close(s)
end

@testset "include_system = true: every compiled instance is captured (0 missed)" begin
    S = Module(:InstWalkSystem)
    Core.eval(S, :(struct Pt; x::Int; y::Int; end))
    Core.eval(S, :(Base.isless(a::Pt, b::Pt) = isless((a.x, a.y), (b.x, b.y))))
    s = mmsb_start()
    enable_instrumentation(s; include_system = true)
    # After enabling: what the call of `enable_instrumentation` itself compiled (its
    # keyword handling, before it took its baseline) was not compiled while capturing.
    before = compiled_now(roots([S]))
    # New types make Base compile new specializations of its own code.
    v = Core.eval(S, :([Pt(3, 1), Pt(1, 2), Pt(2, 0)]))
    @test Core.eval(S, :(sort!($v)))[1] == S.Pt(1, 2)
    @test Core.eval(S, :(string(Pt(1, 2)))) == "$(S).Pt(1, 2)"
    @test Core.eval(S, :(Dict(Pt(1, 1) => 1)[Pt(1, 1)])) == 1
    after = compiled_now(roots([S]))
    flush_instrumentation(s)
    inscope(mod) = !within(mod, MMSB)
    new, miss = missed(s, before, after, inscope)
    @test new >= 10
    isempty(miss) || println(stderr, "missed: ", join(string.(miss), "\n  "))
    @test isempty(miss)
    @test !isempty(module_pages(s, Base)) # Base's own code, captured
    disable_instrumentation(s)
    close(s)
end
