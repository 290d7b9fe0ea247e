# Compiler instrumentation (layer 04): what Julia's compiler infers becomes
# IR pages (source, lowered, typed, optimized) of an MMSB state, linked by
# compiler edges, plus a world page updated by a delta when the world age moves.
# Design and page layouts: docs/instrumentation.md.
#
#   compat.jl   everything that depends on the Julia version, and the self-check
#   layout.jl   byte layouts of the IR text pages and the world page
#   capture.jl  the type-inference hook (records only) and its install/restore
#   manager.jl  per-state manager: rendering, page writes, edges, world, reanalyze!
#   query.jl    ir_pages, ir_text, module_pages, method_graph, status
#   repl.jl     flush at the start of every REPL command
#   precompile.jl  the flush path compiled at precompile time (first-command latency)
#   tools.jl, index.jl, timing.jl, invalidations.jl, locations.jl
#               issue 19 items 9–13 (SnoopCompile/Cthulhu-style data, stored in pages)

const _INSTRUMENTATION_DIR = @__DIR__
include(joinpath(_INSTRUMENTATION_DIR, "compat.jl"))
include(joinpath(_INSTRUMENTATION_DIR, "layout.jl"))
include(joinpath(_INSTRUMENTATION_DIR, "capture.jl"))
include(joinpath(_INSTRUMENTATION_DIR, "manager.jl"))
include(joinpath(_INSTRUMENTATION_DIR, "query.jl"))
for f in ("tools.jl", "index.jl", "timing.jl", "invalidations.jl", "locations.jl") # issue 19 items 9–13
    include(joinpath(_INSTRUMENTATION_DIR, f))
end
include(joinpath(_INSTRUMENTATION_DIR, "repl.jl"))
include(joinpath(_INSTRUMENTATION_DIR, "precompile.jl"))
