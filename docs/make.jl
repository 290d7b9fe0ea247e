# Builds the documentation.
#
#   julia --project=. docs/make.jl
#
# Always regenerates the two references (docs/c-api.md from the C header,
# docs/julia-api.md from the docstrings). With Documenter installed it also
# builds an HTML site into docs/build/ from the Markdown pages; without it
# (the machines this was written on have only the standard library) it prints
# where the Markdown is: GitHub renders it as it is.
const DOCS = @__DIR__
const ROOT = dirname(DOCS)

include(joinpath(DOCS, "gen", "c_api.jl"))
include(joinpath(DOCS, "gen", "julia_api.jl"))
CApiDoc.main(String[])
JuliaApiDoc.main(String[])

const PAGES = ["tutorial.md", "architecture.md", "julia-api.md", "c-api.md", "versions.md"]

if Base.find_package("Documenter") !== nothing
    # Untested here (no Documenter on these machines). Documenter wants pages
    # under a source folder: copy the Markdown into docs/build-src/.
    @eval using Documenter
    src = joinpath(DOCS, "build-src")
    rm(src; recursive = true, force = true)
    mkpath(src)
    for p in readdir(DOCS)
        endswith(p, ".md") && cp(joinpath(DOCS, p), joinpath(src, p); force = true)
    end
    cp(joinpath(src, "tutorial.md"), joinpath(src, "index.md"); force = true)
    Base.invokelatest(Documenter.makedocs; root = DOCS, source = "build-src", build = "build", sitename = "MMSB",
                      pages = ["Home" => "index.md", [p for p in PAGES if p != "tutorial.md" && isfile(joinpath(src, p))]...],
                      doctest = false, checkdocs = :none, format = Documenter.HTML(prettyurls = false))
    println("HTML documentation in ", joinpath(DOCS, "build"))
else
    println("Documenter is not installed: the documentation is the Markdown in ", DOCS, ":")
    for p in PAGES
        isfile(joinpath(DOCS, p)) && println("  ", joinpath(DOCS, p))
    end
    for p in sort!(readdir(DOCS))
        endswith(p, ".md") && !(p in PAGES) && println("  ", joinpath(DOCS, p))
    end
end
