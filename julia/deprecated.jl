# Old names, kept for one release as deprecated aliases (exported, so that old
# code runs; each call warns when Julia runs with `--depwarn=yes`, as
# `Pkg.test` does, and throws with `--depwarn=error`).
#
# The old writers took 0-based `offset`s (keyword and sparse-run keys); the new
# ones take 1-based positions, so the aliases convert rather than forward.

function update_page(s::MMSBState, page::PageId, x, rest...; offset::Integer = 0, kw...)
    Base.depwarn("`update_page` is deprecated, use `update_page!` (byte positions are 1-based there: " *
                 "`at = offset + 1`, runs `offset + 1 => bytes`)", :update_page)
    data = x isa AbstractVector{<:Pair} ? [(first(r) isa Integer ? first(r) + 1 : first(r)) => last(r) for r in x] : x
    return update_page!(s, page, data, rest...; at = offset + 1, kw...)
end

function write_page(s::MMSBState, page::PageId, bytes; offset::Integer = 0, kw...)
    Base.depwarn("`write_page` is deprecated, use `write_page!` (byte positions are 1-based there: " *
                 "`at = offset + 1`)", :write_page)
    return write_page!(s, page, bytes; at = offset + 1, kw...)
end

@deprecate free_page(s, page) free_page!(s, page)
@deprecate epoch(s, page) page_epoch(s, page)
export update_page, write_page

"Deprecated names => their replacements (for the docs)."
const DEPRECATED = (:update_page => :update_page!, :write_page => :write_page!, :free_page => :free_page!,
                    :epoch => :page_epoch)
