# Hand-written SVG of one run: panel 1, a horizontal bar per benchmark (median
# time per call, log scale, minimum as a tick); panel 2, the same-run ratios
# (log scale) with each target drawn as a mark, green when met, red when not.
module BenchSVG

using Printf

export render_svg

esc(s) = replace(replace(replace(string(s), "&" => "&amp;"), "<" => "&lt;"), ">" => "&gt;")

function fmt_ns(ns)
    ns < 1e3 ? @sprintf("%.1f ns", ns) : ns < 1e6 ? @sprintf("%.2f µs", ns / 1e3) :
    ns < 1e9 ? @sprintf("%.2f ms", ns / 1e6) : @sprintf("%.2f s", ns / 1e9)
end

# Decades covering `lo..hi`, for a log axis.
decades(lo, hi) = (floor(Int, log10(lo)), ceil(Int, log10(hi)))

"""
    render_svg(path, rows, ratios; title)

`rows`: `(name, median_ns, min_ns)` tuples; `ratios`: `(name, value, target,
op, pass)` tuples (`value` or `target` may be `nothing`).
"""
function render_svg(path::AbstractString, rows, ratios; title::AbstractString = "MMSB benchmarks")
    W, label_w, right_w, row_h = 980, 300, 110, 22
    plot_w = W - label_w - right_w
    top1 = 60
    h1 = row_h * length(rows)
    top2 = top1 + h1 + 90
    h2 = row_h * length(ratios)
    H = top2 + h2 + 60
    io = IOBuffer()
    println(io, """<svg xmlns="http://www.w3.org/2000/svg" width="$W" height="$H" viewBox="0 0 $W $H" font-family="sans-serif" font-size="12">""")
    println(io, """<rect width="$W" height="$H" fill="white"/>""")
    println(io, """<text x="10" y="22" font-size="16" font-weight="bold">$(esc(title))</text>""")

    # panel 1: times
    vals = [r[2] for r in rows if r[2] > 0]
    lo, hi = isempty(vals) ? (0, 1) : decades(minimum(vals), maximum(vals))
    hi == lo && (hi += 1)
    x(v) = label_w + plot_w * (log10(max(v, 10.0^lo)) - lo) / (hi - lo)
    println(io, """<text x="10" y="$(top1 - 14)" font-size="13" font-weight="bold">Median time per call (log scale; tick = minimum)</text>""")
    for d in lo:hi
        xd = x(10.0^d)
        println(io, """<line x1="$xd" y1="$(top1 - 4)" x2="$xd" y2="$(top1 + h1)" stroke="#ddd"/>""")
        println(io, """<text x="$xd" y="$(top1 + h1 + 14)" text-anchor="middle" fill="#555">$(esc(fmt_ns(10.0^d)))</text>""")
    end
    for (i, (name, med, mn)) in enumerate(rows)
        y = top1 + (i - 1) * row_h
        color = startswith(name, "baseline/") ? "#9aa9b8" : "#4a7fb5"
        println(io, """<text x="$(label_w - 8)" y="$(y + 15)" text-anchor="end">$(esc(name))</text>""")
        println(io, """<rect x="$label_w" y="$(y + 4)" width="$(max(x(med) - label_w, 1))" height="$(row_h - 8)" fill="$color"/>""")
        println(io, """<line x1="$(x(mn))" y1="$(y + 2)" x2="$(x(mn))" y2="$(y + row_h - 2)" stroke="black" stroke-width="2"/>""")
        println(io, """<text x="$(x(med) + 6)" y="$(y + 15)" fill="#222">$(esc(fmt_ns(med)))</text>""")
    end

    # panel 2: ratios and targets
    rv = Float64[]
    for r in ratios
        r[2] === nothing || push!(rv, r[2])
        r[3] === nothing || push!(rv, r[3])
    end
    lo2, hi2 = isempty(rv) ? (-1, 1) : decades(minimum(rv), maximum(rv))
    hi2 == lo2 && (hi2 += 1)
    x2(v) = label_w + plot_w * (log10(clamp(v, 10.0^lo2, 10.0^hi2)) - lo2) / (hi2 - lo2)
    println(io, """<text x="10" y="$(top2 - 30)" font-size="13" font-weight="bold">Same-run ratios (log scale; | = target, green met, red missed, grey no target)</text>""")
    for d in lo2:hi2
        xd = x2(10.0^d)
        println(io, """<line x1="$xd" y1="$(top2 - 4)" x2="$xd" y2="$(top2 + h2)" stroke="#ddd"/>""")
        println(io, """<text x="$xd" y="$(top2 + h2 + 14)" text-anchor="middle" fill="#555">$(10.0^d >= 1 ? Int(10.0^d) : 10.0^d)</text>""")
    end
    for (i, (name, v, target, op, pass)) in enumerate(ratios)
        y = top2 + (i - 1) * row_h
        println(io, """<text x="$(label_w - 8)" y="$(y + 15)" text-anchor="end">$(esc(name))</text>""")
        v === nothing && (println(io, """<text x="$(label_w + 4)" y="$(y + 15)" fill="#888">not measured</text>"""); continue)
        color = pass === nothing ? "#999" : pass ? "#3a9d4a" : "#c8412f"
        println(io, """<rect x="$label_w" y="$(y + 4)" width="$(max(x2(v) - label_w, 1))" height="$(row_h - 8)" fill="$color"/>""")
        if target !== nothing
            println(io, """<line x1="$(x2(target))" y1="$(y)" x2="$(x2(target))" y2="$(y + row_h)" stroke="black" stroke-width="3"/>""")
        end
        lab = @sprintf("%.3g", v) * (target === nothing ? "" : " (target $op $(target))")
        println(io, """<text x="$(max(x2(v), target === nothing ? 0 : x2(target)) + 6)" y="$(y + 15)" fill="#222">$(esc(lab))</text>""")
    end
    println(io, "</svg>")
    mkpath(dirname(abspath(path)))
    write(path, take!(io))
    return path
end

end # module BenchSVG
