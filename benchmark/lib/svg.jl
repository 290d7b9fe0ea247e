# Hand-written SVG of one run.
# Panel 1: per benchmark, a dot at the median time per call and a whisker
# from the minimum to the 90th percentile, on a log axis (a bar from an
# arbitrary origin would make its length meaningless); MMSB cases and the
# baselines they are compared with in two colours, with a legend.
# Panel 2: only the same-run ratios, on a log axis around 1: a dot at the
# ratio, a whisker over its per-round values, the target as a bar with its
# direction ("≤ 1.3: lower is better"), and a ratio whose rounds spread too
# far marked as not to be trusted.
# Panel 3 (when the Rust scaling bench left its points, see scaling_curves in
# benchmarks.jl): the scaling curves, one small log-log chart each: route vs
# pages, memory per page, open vs state size, replay vs log size, each with
# its baseline series (bare copy, the page's 4 KiB, reading the log files).
module BenchSVG

using Printf

export render_svg

esc(s) = replace(replace(replace(string(s), "&" => "&amp;"), "<" => "&lt;"), ">" => "&gt;")

function fmt_ns(ns)
    ns < 1e3 ? @sprintf("%.1f ns", ns) : ns < 1e6 ? @sprintf("%.2f µs", ns / 1e3) :
    ns < 1e9 ? @sprintf("%.2f ms", ns / 1e6) : @sprintf("%.2f s", ns / 1e9)
end

fmt_axis(v) = v >= 1 ? string(round(Int, v)) : string(v)

# Decade labels of the time axis: "10 ns", "1 µs", "100 ms".
function fmt_decade_ns(ns)
    for (unit, scale) in (("s", 1e9), ("ms", 1e6), ("µs", 1e3))
        ns >= scale && return string(round(Int, ns / scale), " ", unit)
    end
    return string(round(Int, ns), " ns")
end

# Decades covering `lo..hi`, for a log axis.
decades(lo, hi) = (floor(Int, log10(lo)), ceil(Int, log10(hi)))

const MMSB_COLOR = "#2f6db0"
const BASE_COLOR = "#8a8a8a"
const MET, MISSED, NOTARGET, NOISY = "#2e8b3e", "#c8412f", "#555555", "#d98200"

"""
    render_svg(rows, ratios; title) -> String

`rows`: named tuples `(name, median_ns, min_ns, p90_ns)`; `ratios`: named
tuples `(name, value, target, op, pass, rounds, spread, trusted, absolute)` (`rounds`:
the ratio's per-round values; `value`, `target`, `rounds` and `spread` may be
`nothing`; `absolute` ones have no denominator). `scaling`: named tuples
`(name, x, y, points, base_name, base)` (`points`, `base`: vectors of `(x, y)`),
drawn as a third panel; empty for none. Returns the SVG text.
"""
function render_svg(rows, all_ratios; title::AbstractString = "MMSB benchmarks", scaling = [],
                    scaling_note::AbstractString = "")
    # Absolute figures (no denominator) are not ratios: listed as text under the panel.
    ratios = [r for r in all_ratios if !r.absolute]
    absolutes = [r for r in all_ratios if r.absolute]
    W, label_w, right_w, row_h = 1200, 290, 450, 22
    plot_w = W - label_w - right_w
    top1 = 84
    h1 = row_h * length(rows)
    top2 = top1 + h1 + 100
    h2 = row_h * length(ratios)
    top3 = top2 + h2 + 70 + 18 * length(absolutes)
    chart_h = 190
    H = isempty(scaling) ? top3 : top3 + 60 + chart_h + 50
    io = IOBuffer()
    println(io, """<svg xmlns="http://www.w3.org/2000/svg" width="$W" height="$H" viewBox="0 0 $W $H" font-family="sans-serif" font-size="12">""")
    println(io, """<rect width="$W" height="$H" fill="white"/>""")
    println(io, """<text x="10" y="22" font-size="16" font-weight="bold">$(esc(title))</text>""")

    # panel 1: times
    println(io, """<text x="10" y="$(top1 - 40)" font-size="13" font-weight="bold">Time per call (log scale): dot = median, whisker = minimum to 90th percentile; shorter is faster</text>""")
    # legend
    lx = label_w
    for (color, what) in ((MMSB_COLOR, "MMSB"), (BASE_COLOR, "baseline (compared with in the ratios below)"))
        println(io, """<circle cx="$(lx + 5)" cy="$(top1 - 18)" r="5" fill="$color"/>""")
        println(io, """<text x="$(lx + 15)" y="$(top1 - 14)">$(esc(what))</text>""")
        lx += 90
    end
    vals = Float64[]
    for r in rows
        r.min_ns > 0 && push!(vals, r.min_ns)
        r.p90_ns > 0 && push!(vals, r.p90_ns)
    end
    lo, hi = isempty(vals) ? (0, 1) : decades(minimum(vals), maximum(vals))
    hi == lo && (hi += 1)
    x(v) = label_w + plot_w * (log10(clamp(v, 10.0^lo, 10.0^hi)) - lo) / (hi - lo)
    for d in lo:hi
        xd = x(10.0^d)
        println(io, """<line x1="$xd" y1="$(top1 - 4)" x2="$xd" y2="$(top1 + h1)" stroke="#e2e2e2"/>""")
        println(io, """<text x="$xd" y="$(top1 + h1 + 14)" text-anchor="middle" fill="#555">$(esc(fmt_decade_ns(10.0^d)))</text>""")
    end
    for (i, r) in enumerate(rows)
        y = top1 + (i - 1) * row_h + row_h / 2
        color = startswith(r.name, "baseline/") ? BASE_COLOR : MMSB_COLOR
        i % 2 == 0 && println(io, """<rect x="10" y="$(y - row_h / 2)" width="$(W - 20)" height="$row_h" fill="#f6f6f6"/>""")
        println(io, """<text x="$(label_w - 8)" y="$(y + 4)" text-anchor="end">$(esc(r.name))</text>""")
        println(io, """<line x1="$(x(r.min_ns))" y1="$y" x2="$(x(r.p90_ns))" y2="$y" stroke="$color" stroke-width="2"/>""")
        for e in (r.min_ns, r.p90_ns)
            println(io, """<line x1="$(x(e))" y1="$(y - 5)" x2="$(x(e))" y2="$(y + 5)" stroke="$color" stroke-width="2"/>""")
        end
        println(io, """<circle cx="$(x(r.median_ns))" cy="$y" r="5" fill="$color"/>""")
        println(io, """<text x="$(label_w + plot_w + 10)" y="$(y + 4)" fill="#222">$(esc(fmt_ns(r.median_ns))) ($(esc(fmt_ns(r.min_ns))) to $(esc(fmt_ns(r.p90_ns))))</text>""")
    end

    # panel 2: ratios and targets
    rv = Float64[1.0]
    for r in ratios
        r.value === nothing || push!(rv, r.value)
        r.target === nothing || push!(rv, r.target)
        r.value === nothing || r.rounds === nothing || append!(rv, r.rounds)
    end
    lo2, hi2 = decades(minimum(rv), maximum(rv))
    hi2 == lo2 && (hi2 += 1)
    x2(v) = label_w + plot_w * (log10(clamp(v, 10.0^lo2, 10.0^hi2)) - lo2) / (hi2 - lo2)
    println(io, """<text x="10" y="$(top2 - 52)" font-size="13" font-weight="bold">Same-run ratios (log scale): dot = ratio of minimum times, whisker = spread of its per-round values</text>""")
    println(io, """<text x="10" y="$(top2 - 34)" fill="#333">Black bar = target, with its direction. Dot colour: <tspan fill="$MET">met</tspan>, <tspan fill="$MISSED">missed</tspan>, <tspan fill="$NOTARGET">no target</tspan>; <tspan fill="$NOISY">orange label</tspan> = rounds spread too far to trust.</text>""")
    for d in lo2:hi2
        xd = x2(10.0^d)
        println(io, """<line x1="$xd" y1="$(top2 - 4)" x2="$xd" y2="$(top2 + h2)" stroke="$(d == 0 ? "#999" : "#e2e2e2")"/>""")
        println(io, """<text x="$xd" y="$(top2 + h2 + 14)" text-anchor="middle" fill="#555">$(fmt_axis(10.0^d))</text>""")
    end
    for (i, r) in enumerate(ratios)
        y = top2 + (i - 1) * row_h + row_h / 2
        i % 2 == 0 && println(io, """<rect x="10" y="$(y - row_h / 2)" width="$(W - 20)" height="$row_h" fill="#f6f6f6"/>""")
        println(io, """<text x="$(label_w - 8)" y="$(y + 4)" text-anchor="end">$(esc(r.name))</text>""")
        r.value === nothing && (println(io, """<text x="$(label_w + 4)" y="$(y + 4)" fill="#888">not measured</text>"""); continue)
        color = r.pass === nothing ? NOTARGET : r.pass ? MET : MISSED
        if r.rounds !== nothing
            a, b = x2(minimum(r.rounds)), x2(maximum(r.rounds))
            println(io, """<line x1="$a" y1="$y" x2="$b" y2="$y" stroke="$color" stroke-width="2" opacity="0.6"/>""")
        end
        if r.target !== nothing
            println(io, """<line x1="$(x2(r.target))" y1="$(y - 9)" x2="$(x2(r.target))" y2="$(y + 9)" stroke="black" stroke-width="3"/>""")
        end
        println(io, """<circle cx="$(x2(r.value))" cy="$y" r="5" fill="$color"/>""")
        println(io, """<text x="$(label_w + plot_w + 10)" y="$(y + 4)" fill="$(r.trusted === false ? NOISY : "#222")">$(esc(label(r)))</text>""")
    end
    for (i, r) in enumerate(absolutes)
        y = top2 + h2 + 40 + 18 * (i - 1)
        v = r.value === nothing ? "not measured" : @sprintf("%.3g", r.value)
        color = r.pass === nothing ? "#222" : r.pass ? MET : MISSED
        println(io, """<text x="10" y="$y" fill="$color">$(esc(string(r.name, " (absolute, not a ratio): ", label(r; value = v))))</text>""")
    end
    isempty(scaling) || scaling_panel(io, scaling, top3 + 40, W, chart_h, scaling_note)
    println(io, "</svg>")
    return String(take!(io))
end

# A log axis's range: whole decades around the values (one decade at least).
function log_range(vals)
    vals = [v for v in vals if v > 0]
    isempty(vals) && return (0, 1)
    lo, hi = decades(minimum(vals), maximum(vals))
    return hi == lo ? (lo, hi + 1) : (lo, hi)
end

fmt_tick(v) = v >= 1e6 ? string(round(Int, v / 1e6), "M") : v >= 1e3 ? string(round(Int, v / 1e3), "k") : fmt_axis(v)

function scaling_panel(io, curves, top, W, h, note)
    println(io, """<text x="10" y="$(top - 14)" font-size="13" font-weight="bold">Scaling curves (log-log; cargo bench -p mmsb --bench scaling): MMSB in blue, its baseline in grey$(isempty(note) ? "" : string(" · ", esc(note)))</text>""")
    n = length(curves)
    gap, left = 70, 60
    cw = (W - 20 - n * (gap + 10)) / n
    for (k, c) in enumerate(curves)
        x0 = 10 + left + (k - 1) * (cw + gap + 10)
        xs = [p[1] for p in vcat(c.points, c.base)]
        ys = [p[2] for p in vcat(c.points, c.base)]
        xl, xh = log_range(xs)
        yl, yh = log_range(ys)
        px(v) = x0 + cw * (log10(max(v, 10.0^xl)) - xl) / (xh - xl)
        py(v) = top + h - h * (log10(max(v, 10.0^yl)) - yl) / (yh - yl)
        println(io, """<text x="$(x0 + cw / 2)" y="$(top + 4)" text-anchor="middle" font-weight="bold">$(esc(c.name))</text>""")
        for d in xl:xh
            println(io, """<line x1="$(px(10.0^d))" y1="$(top + 12)" x2="$(px(10.0^d))" y2="$(top + h)" stroke="#e2e2e2"/>""")
            println(io, """<text x="$(px(10.0^d))" y="$(top + h + 14)" text-anchor="middle" fill="#555">$(fmt_tick(10.0^d))</text>""")
        end
        for d in yl:yh
            println(io, """<line x1="$x0" y1="$(py(10.0^d))" x2="$(x0 + cw)" y2="$(py(10.0^d))" stroke="#e2e2e2"/>""")
            println(io, """<text x="$(x0 - 4)" y="$(py(10.0^d) + 4)" text-anchor="end" fill="#555">$(fmt_tick(10.0^d))</text>""")
        end
        println(io, """<text x="$(x0 + cw / 2)" y="$(top + h + 30)" text-anchor="middle" fill="#333">$(esc(c.x))</text>""")
        println(io, """<text x="$(x0 - 44)" y="$(top + h / 2)" text-anchor="middle" fill="#333" transform="rotate(-90 $(x0 - 44) $(top + h / 2))">$(esc(c.y))</text>""")
        for (pts, color) in ((c.base, BASE_COLOR), (c.points, MMSB_COLOR))
            isempty(pts) && continue
            path = join([string(px(p[1]), ",", py(p[2])) for p in pts], " ")
            println(io, """<polyline points="$path" fill="none" stroke="$color" stroke-width="2"/>""")
            for p in pts
                println(io, """<circle cx="$(px(p[1]))" cy="$(py(p[2]))" r="3.5" fill="$color"><title>$(esc(string(c.x, " ", p[1], ": ", c.y, " ", round(p[2]; sigdigits = 4))))</title></circle>""")
            end
        end
        isempty(c.base_name) ||
            println(io, """<text x="$(x0 + cw / 2)" y="$(top + h + 44)" text-anchor="middle" fill="$BASE_COLOR">grey: $(esc(c.base_name))</text>""")
    end
end

function label(r; value = @sprintf("%.3g", r.value))
    lab = value
    r.target === nothing ||
        (lab *= string(" · target ", r.op == "<=" ? "≤ " : "≥ ", r.target, r.op == "<=" ? ": lower is better" : ": higher is better"))
    r.spread === nothing || (lab *= @sprintf(" · spread %.2f×", r.spread))
    r.trusted === false && (lab *= " (too noisy)")
    return lab
end

end # module BenchSVG
