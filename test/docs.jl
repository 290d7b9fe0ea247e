# The documentation stays true to the code:
# - docs/c-api.md and docs/julia-api.md equal what their generators
#   (docs/gen/c_api.jl, docs/gen/julia_api.jl) make now (regenerate with
#   `julia --project=. docs/gen/c_api.jl` and `... docs/gen/julia_api.jl`);
# - every ```julia block of docs/tutorial.md runs, in order, in one module; the
#   `@test`s inside pass, and a block with a `# output` line prints exactly the
#   `# `-commented lines that follow it.
module Test_docs

using Test

const ROOT = dirname(@__DIR__)
const DOCS = joinpath(ROOT, "docs")

"""
    tutorial_blocks(markdown) -> Vector{(line, code, expected)}

The ```julia blocks of a Markdown text: the line where each starts, its code,
and the output it must print (`nothing` when it has no `# output` line).
"""
function tutorial_blocks(md::AbstractString)
    blocks = Tuple{Int,String,Union{Nothing,String}}[]
    lines = split(md, '\n')
    i = 1
    while i <= length(lines)
        if rstrip(lines[i]) == "```julia"
            start = i
            body = String[]
            i += 1
            while rstrip(lines[i]) != "```"
                push!(body, lines[i])
                i += 1
            end
            k = findfirst(l -> rstrip(l) == "# output", body)
            if k === nothing
                push!(blocks, (start, join(body, "\n"), nothing))
            else
                expected = [replace(l, r"^# ?" => "") for l in body[k+1:end]]
                push!(blocks, (start, join(body[1:k-1], "\n"), join(expected, "\n")))
            end
        end
        i += 1
    end
    return blocks
end

# Runs `code` in `m` with standard output captured to a file; returns the output.
function run_captured(m::Module, code::AbstractString, name::AbstractString)
    path, io = mktemp()
    try
        redirect_stdout(io) do
            try
                include_string(m, code, name)
            finally
                Base.Libc.flush_cstdio()
                flush(stdout)
            end
        end
        close(io)
        return read(path, String)
    finally
        isopen(io) && close(io)
        rm(path; force = true)
    end
end

# A stale generated file fails with the first differing line, not both files whole.
function is_current(name, generated)
    stored = read(joinpath(DOCS, name), String)
    stored == generated && return true
    a, b = split(stored, '\n'), split(generated, '\n')
    i = something(findfirst(k -> k > length(a) || k > length(b) || a[k] != b[k], 1:max(length(a), length(b))), 1)
    @warn "docs/$name is stale (regenerate: julia --project=. docs/make.jl); first difference at line $i" stored = get(a, i, "<end>") generated = get(b, i, "<end>")
    return false
end

@testset "docs" begin
    @testset "c-api.md is current" begin
        m = Module(:CApiGen)
        Base.include(m, joinpath(DOCS, "gen", "c_api.jl"))
        generated = Base.invokelatest(m.CApiDoc.render)
        @test occursin("### `mmsb_page_update`", generated)
        @test is_current("c-api.md", generated)
    end

    @testset "julia-api.md is current" begin
        m = Module(:JuliaApiGen)
        Base.include(m, joinpath(DOCS, "gen", "julia_api.jl"))
        generated = Base.invokelatest(m.JuliaApiDoc.render)
        @test occursin("### `update_page!`", generated)
        @test is_current("julia-api.md", generated)
    end

    @testset "examples/demo.jl runs, with no deprecated name" begin
        # A child process: the demo is a script, and --depwarn=error turns an old name into an error.
        # (to a file: an IOBuffer is filled by a task that may still be copying when `run` returns)
        path, io = mktemp()
        demo = joinpath(ROOT, "examples", "demo.jl")
        p = run(pipeline(ignorestatus(`$(Base.julia_cmd()) --startup-file=no --depwarn=error --project=$ROOT $demo`);
                         stdout = io, stderr = io))
        close(io)
        text = read(path, String)
        rm(path)
        p.exitcode == 0 || println(text)
        @test p.exitcode == 0 && endswith(rstrip(text), "done")
        @test !occursin("0x0", text)               # numbers print in decimal
    end

    @testset "tutorial.md blocks" begin
        blocks = tutorial_blocks(read(joinpath(DOCS, "tutorial.md"), String))
        @test length(blocks) >= 15
        m = Module(:Tutorial)
        for (line, code, expected) in blocks
            name = "docs/tutorial.md:$line"
            out = try
                # only blocks with expected output are captured (a failing @test prints to stdout)
                expected === nothing ? (include_string(m, code, name); "") : run_captured(m, code, name)
            catch err
                @error "tutorial block at $name threw" exception = (err, catch_backtrace())
                @test false
                break                     # later blocks depend on this one
            end
            if expected !== nothing
                @test rstrip(out) == rstrip(expected)
            end
        end
    end
end

end # module Test_docs
