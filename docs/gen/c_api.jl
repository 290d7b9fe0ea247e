# Generates docs/c-api.md from the C header rust/mmsb-ffi/include/mmsb.h:
#
#   julia docs/gen/c_api.jl          # rewrite docs/c-api.md
#   julia docs/gen/c_api.jl --check  # exit 1 if docs/c-api.md is stale
#
# The header is cbindgen's output: every item is preceded by `//` doc-comment
# lines. This reads it line by line: comments accumulate until the item they
# document; preprocessor lines and cbindgen's C/C++ compatibility blocks are
# skipped. test/docs.jl checks that the committed file equals `render()`.
module CApiDoc

const ROOT = dirname(dirname(@__DIR__))
const HEADER = joinpath(ROOT, "rust", "mmsb-ffi", "include", "mmsb.h")
const OUT = joinpath(ROOT, "docs", "c-api.md")

struct Item
    kind::Symbol         # :const, :enum, :opaque, :struct, :typedef, :callback, :function
    name::String
    doc::Vector{String}  # comment lines, without `// `
    text::String         # the declaration as written (functions, callbacks), or the value (constants)
    fields::Vector{Tuple{String,String,String}}  # (type, name, doc) of struct fields / (name, value, "") of enum members
end

strip_comment(l) = (s = strip(l); s == "//" ? "" : startswith(s, "// ") ? s[4:end] : s[3:end])
is_comment(l) = startswith(strip(l), "//")

function parse_header(src::AbstractString)
    lines = split(src, '\n')
    items = Item[]
    doc = String[]
    preamble = String[]
    seen = Set{String}()
    i = 1
    # The leading /* ... */ block describes the ABI's conventions.
    if startswith(lines[1], "/*")
        while true
            l = replace(replace(strip(lines[i]), r"^/\*\s?" => ""), r"\s?\*/$" => "")
            push!(preamble, replace(l, r"^\*\s?" => ""))
            occursin("*/", lines[i]) && break
            i += 1
        end
        i += 1
    end
    while i <= length(lines)
        l = lines[i]
        s = strip(l)
        if is_comment(l)
            push!(doc, strip_comment(l))
        elseif isempty(s)
            # a blank line ends a comment that documents nothing (file-level notes)
        elseif startswith(s, "#define")
            m = match(r"^#define\s+(\w+)\s+(.*)$", s)
            if m !== nothing && !endswith(m[1], "_H")
                push!(items, Item(:const, m[1], doc, strip(m[2]), []))
            end
            doc = String[]
        elseif startswith(s, "#") || startswith(s, "extern \"C\"") || startswith(s, "}  // extern") || s == "{"
            # preprocessor and C++ guards: not part of the API text
        elseif startswith(s, "enum ")
            name = match(r"^enum\s+(\w+)", s)[1]
            members = Tuple{String,String,String}[]
            i += 1
            while !startswith(strip(lines[i]), "};")
                m = match(r"^\s*(\w+)\s*=\s*([^,]+),?", lines[i])
                m === nothing || push!(members, (m[1], strip(m[2]), ""))
                i += 1
            end
            push!(items, Item(:enum, name, doc, "", members))
            push!(seen, name)
            doc = String[]
        elseif startswith(s, "typedef struct") && endswith(s, ";") && !occursin("{", s)
            name = match(r"^typedef struct (\w+) (\w+);", s)[2]
            push!(items, Item(:opaque, name, doc, s, []))
            doc = String[]
        elseif startswith(s, "typedef struct") && endswith(s, "{")
            fields = Tuple{String,String,String}[]
            fdoc = String[]
            i += 1
            while !startswith(strip(lines[i]), "}")
                f = lines[i]
                if is_comment(f)
                    push!(fdoc, strip_comment(f))
                else
                    m = match(r"^\s*(.+?)\s*(\w+);$", f)
                    m === nothing || push!(fields, (m[1], m[2], join(fdoc, " ")))
                    fdoc = String[]
                end
                i += 1
            end
            name = match(r"^\}\s*(\w+);", strip(lines[i]))[1]
            push!(items, Item(:struct, name, doc, "", fields))
            doc = String[]
        elseif startswith(s, "typedef")
            # a declaration may span several lines (function-pointer types)
            text = [l]
            while !endswith(strip(text[end]), ";")
                i += 1
                push!(text, lines[i])
            end
            t = join(text, "\n")
            m = match(r"\(\*(\w+)\)", t)
            if m !== nothing
                push!(items, Item(:callback, m[1], doc, t, []))
            else
                name = match(r"(\w+);$", strip(t))[1]
                # cbindgen repeats an enum's name as a typedef for C: documented with the enum
                name in seen || push!(items, Item(:typedef, name, doc, strip(t), []))
            end
            doc = String[]
        elseif occursin("(", s)
            text = [l]
            while !endswith(strip(text[end]), ";")
                i += 1
                push!(text, lines[i])
            end
            t = join(text, "\n")
            name = match(r"(\w+)\(", t)[1]
            push!(items, Item(:function, name, doc, t, []))
            doc = String[]
        end
        i += 1
    end
    return preamble, items
end

# Doc comments as Markdown: a "# Safety" line becomes a bold lead-in; backquoted
# names stay code.
function doc_md(doc::Vector{String})
    out = String[]
    for l in doc
        if l == "# Safety"
            (isempty(out) || out[end] != "") && push!(out, "")
            push!(out, "**Safety.**")
        else
            push!(out, l)
        end
    end
    return strip(join(out, "\n"))
end

# GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens.
anchor(s) = replace(replace(lowercase(s), r"[^a-z0-9 \-]" => ""), " " => "-")

oneline(doc) = replace(strip(join(doc, " ")), "|" => "\\|")

# Sections of functions by name (header order within each).
const SECTIONS = [
    "Errors and version" => r"^mmsb_(abi_version|last_error|status_name)",
    "Configuration and state" => r"^mmsb_(config_|state_(open|close|free|is_open|lsn))",
    "Pages, reads and views" => r"^mmsb_(page_(create|free|info|name|read|view|list)|view_)",
    "Page writes" => r"^mmsb_page_(update|write)",
    "Deltas and batches" => r"^mmsb_(delta_|route_delta|batch_)",
    "Transaction log" => r"^mmsb_(state_(checkpoint|replay|compact)|log_)",
    "Dependency graph and propagation" => r"^mmsb_(command_list|add_dependency|remove_dependency|propagate|dependents|topo_order)",
    "Events" => r"^mmsb_(subscribe|poll_events|subscription_)",
    "Monitoring" => r"^mmsb_(stats_|track_|set_budget|monitor_|metric_name|counter_name)",
    "Device (GPU)" => r"^mmsb_(device_|page_sync|page_apply_on_device)",
]
section_of(name) = (k = findfirst(p -> occursin(p[2], name), SECTIONS); k === nothing ? "Other functions" : SECTIONS[k][1])

function render(src::AbstractString = read(HEADER, String))
    preamble, items = parse_header(src)
    io = IOBuffer()
    println(io, "# C ABI reference")
    println(io)
    println(io, "<!-- Generated by docs/gen/c_api.jl from rust/mmsb-ffi/include/mmsb.h; do not edit. ",
            "Regenerate: julia docs/gen/c_api.jl (test/docs.jl checks it is current). -->")
    println(io)
    println(io, "The C interface of `libmmsb` (header `rust/mmsb-ffi/include/mmsb.h`, generated by cbindgen ",
            "from `rust/mmsb-ffi/src`).")
    println(io)
    println(io, join(filter(!isempty, preamble), "\n"))
    println(io)
    fns = filter(it -> it.kind === :function, items)
    println(io, "Contents: [types](#types), [constants](#constants), [status codes](#status-codes), functions (",
            length(fns), "): ", join(["[$(lowercase(s))](#$(anchor(s)))" for s in vcat(first.(SECTIONS), "Other functions")
                                      if any(f -> section_of(f.name) == s, fns)], ", "), ".")
    println(io)

    println(io, "## Types")
    println(io)
    # One type: heading, the C declaration if given, the doc.
    function type_entry(heading, code, doc)
        println(io, "### `", heading)
        println(io)
        if code !== nothing
            println(io, "```c\n", code, "\n```")
            println(io)
        end
        println(io, doc_md(doc))
        println(io)
    end
    for it in items
        if it.kind === :opaque
            type_entry(string(it.name, "` (opaque handle)"), nothing, it.doc)
        elseif it.kind === :typedef
            type_entry(string(it.name, "`"), it.text, it.doc)
        elseif it.kind === :callback
            type_entry(string(it.name, "` (callback)"), it.text, it.doc)
        elseif it.kind === :struct
            type_entry(string(it.name, "`"), nothing, it.doc)
            println(io, "| Field | Type | Meaning |")
            println(io, "| --- | --- | --- |")
            for (t, n, d) in it.fields
                println(io, "| `", n, "` | `", t, "` | ", replace(d, "|" => "\\|"), " |")
            end
            println(io)
        end
    end

    println(io, "## Constants")
    println(io)
    println(io, "| Name | Value | Meaning |")
    println(io, "| --- | --- | --- |")
    for it in items
        it.kind === :const && println(io, "| `", it.name, "` | `", it.text, "` | ", oneline(it.doc), " |")
    end
    println(io)

    println(io, "## Status codes")
    println(io)
    for it in items
        it.kind === :enum || continue
        println(io, "`enum ", it.name, "`: ", doc_md(it.doc), " Every function returns one as `MmsbStatus`; ",
                "`mmsb_status_name` names it.")
        println(io)
        println(io, "| Name | Value |")
        println(io, "| --- | --- |")
        for (n, v, _) in it.fields
            println(io, "| `", n, "` | ", v, " |")
        end
        println(io)
    end

    for (sec, _) in vcat(SECTIONS, ["Other functions" => r""])
        group = filter(it -> section_of(it.name) == sec, fns)
        isempty(group) && continue
        println(io, "## ", sec)
        println(io)
        for it in group
            println(io, "### `", it.name, "`")
            println(io)
            println(io, "```c\n", it.text, "\n```")
            println(io)
            println(io, doc_md(it.doc))
            println(io)
        end
    end
    return String(take!(io))
end

function main(args = ARGS)
    text = render()
    if "--check" in args
        current = isfile(OUT) ? read(OUT, String) : ""
        current == text || (println(stderr, "docs/c-api.md is stale: run julia docs/gen/c_api.jl"); exit(1))
        println("docs/c-api.md is current")
    else
        write(OUT, text)
        println("wrote ", OUT)
    end
end

end # module CApiDoc

abspath(PROGRAM_FILE) == abspath(@__FILE__) && CApiDoc.main()
