# The device layer: GPU mirrors of :gpu / :unified pages, synced explicitly.
# Without a GPU these pages stay on the CPU and syncs have nothing to do.

"""
    device_status(state) -> NamedTuple
    device_status() -> NamedTuple

Whether a GPU is usable (`available::Bool`) and its description or the reason
there is none (`description::String`). Never fails for want of a GPU. With a
state it also says whether the state was started with `gpu = true`
(`requested::Bool`) and how many of its pages have a device mirror
(`mirrors::Int`); without one it describes the machine.
"""
function device_status(s::MMSBState)
    m = device_status()
    return (available = m.available, description = m.description, requested = get(s.config, :gpu, false) == true,
            mirrors = device_stats(s).mirrors)
end

function device_status()
    code = Ref{UInt32}(0)
    len = Ref{Csize_t}(0)
    buf = Vector{UInt8}(undef, 256)
    check(LibMMSB.mmsb_device_status(code, buf, length(buf), len))
    if len[] >= length(buf)
        resize!(buf, len[] + 1)
        check(LibMMSB.mmsb_device_status(code, buf, length(buf), len))
    end
    return (available = code[] == LibMMSB.MMSB_DEVICE_AVAILABLE, description = julia_syntax(String(buf[1:Int(len[])])))
end

const PAGE_DEVICE = Dict(LibMMSB.MMSB_PAGE_DEVICE_CPU => :cpu, LibMMSB.MMSB_PAGE_DEVICE_MIRRORED => :mirrored,
                         LibMMSB.MMSB_PAGE_DEVICE_CPU_ONLY => :cpu_only)

"""
    page_device_status(state, page) -> NamedTuple

Where the page's bytes live: `status` is `:cpu` (a CPU page), `:mirrored` (a
`:gpu`/`:unified` page with its device mirror) or `:cpu_only` (a `:gpu`/`:unified`
page without a mirror: no GPU, the `gpu` option off, or the allocation failed;
`reason` says which, and is empty otherwise).
"""
function page_device_status(s::MMSBState, page::PageId)
    code = Ref{UInt32}(0)
    len = Ref{Csize_t}(0)
    buf = Vector{UInt8}(undef, 256)
    scall(LibMMSB.mmsb_page_device_status, s, page.value, code, buf, length(buf), len)
    if len[] >= length(buf)
        resize!(buf, len[] + 1)
        scall(LibMMSB.mmsb_page_device_status, s, page.value, code, buf, length(buf), len)
    end
    return (status = PAGE_DEVICE[code[]], reason = String(buf[1:Int(len[])]))
end

const SYNC_DIRECTIONS = (to_device = LibMMSB.MMSB_SYNC_HOST_TO_DEVICE, to_host = LibMMSB.MMSB_SYNC_DEVICE_TO_HOST)

sync_code(d::Symbol) = haskey(SYNC_DIRECTIONS, d) ? SYNC_DIRECTIONS[d] :
    throw(ArgumentError("direction must be one of $(keys(SYNC_DIRECTIONS)), not $(repr(d))"))

"""
    sync_page!(state, page; direction=:to_device)

Syncs a `:gpu`/`:unified` page with its device mirror: `:to_device` pushes the
CPU bytes that changed, `:to_host` routes the device's differences back as a
logged delta. Returns once the copies completed. Throws an [`MMSBError`](@ref)
(`"no_device"`) for a page without a mirror.
"""
function sync_page!(s::MMSBState, page::PageId; direction::Symbol = :to_device)
    scall(LibMMSB.mmsb_page_sync, s, page.value, sync_code(direction))
    return nothing
end

"""
    sync_all!(state; direction=:to_device)

[`sync_page!`](@ref) for every mirrored page (nothing to do without a GPU).
"""
function sync_all!(s::MMSBState; direction::Symbol = :to_device)
    scall(LibMMSB.mmsb_device_sync_all, s, sync_code(direction))
    return nothing
end

"""
    apply_on_device!(state, page, delta; expected_epoch=nothing) -> lsn

Routes `delta` to `page` like [`route_delta!`](@ref) and, when the page has a
device mirror, applies it there with a kernel too.
"""
function apply_on_device!(s::MMSBState, page::PageId, d::Delta; expected_epoch::Union{Nothing,Integer} = nothing)
    return route_with(LibMMSB.mmsb_page_apply_on_device, s, page, d, expected_epoch)
end

"""
    device_stats(state) -> NamedTuple

The device layer's counters: `syncs`, `bytes_h2d`, `bytes_d2h`,
`kernels_launched`, `dirty_bytes_pending`, `mirrors`, `cpu_only_pages`.
"""
function device_stats(s::MMSBState)
    out = Ref(LibMMSB.MmsbDeviceStats())
    scall(LibMMSB.mmsb_device_stats, s, out)
    d = out[]
    return (syncs = Int(d.syncs), bytes_h2d = Int(d.bytes_h2d), bytes_d2h = Int(d.bytes_d2h),
            kernels_launched = Int(d.kernels_launched), dirty_bytes_pending = Int(d.dirty_bytes_pending),
            mirrors = Int(d.mirrors), cpu_only_pages = Int(d.cpu_only_pages))
end
