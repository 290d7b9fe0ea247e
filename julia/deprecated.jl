# Old names, kept for one release as deprecated aliases (exported, so that old
# code runs; each call warns when Julia runs with `--depwarn=yes`, as
# `Pkg.test` does, and throws with `--depwarn=error`). The call form keeps the
# keyword arguments on Julia 1.5, whose symbol form of `@deprecate` drops them.

@deprecate update_page(args...; kw...) update_page!(args...; kw...)
@deprecate write_page(args...; kw...) write_page!(args...; kw...)
@deprecate free_page(args...; kw...) free_page!(args...; kw...)
@deprecate epoch(s, page) page_epoch(s, page)

"Deprecated names => their replacements (for the docs)."
const DEPRECATED = (:update_page => :update_page!, :write_page => :write_page!, :free_page => :free_page!,
                    :epoch => :page_epoch)
