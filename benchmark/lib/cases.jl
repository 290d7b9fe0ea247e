# The benchmarks, independent of the harness: `cases(; quick)` returns
# `path => Case` pairs. Every case that is a baseline for a ratio is measured
# in the same run as the thing it is compared with (see `RATIOS`).
#
# Contexts hold a counter so that consecutive calls alternate between two
# payloads: every routed write really changes bytes (an unchanged update would
# be an empty delta and measure nothing).
using MMSB
using MMSB: LibMMSB

# Typed fields, so that the measured call compiles to direct calls (an `Any`
# field would add a dynamic dispatch to every call).
mutable struct Ctx{S,A,E}
    state::S
    page::PageId
    pages::Vector{PageId}
    a::A
    b::A
    i::Int
    dir::String
    extra::E
end
Ctx(s, page; pages = PageId[], a = nothing, b = nothing, dir = "", extra = nothing) =
    Ctx(s, page, pages, a, b, 0, dir, extra)
flip!(c::Ctx) = isodd(c.i += 1) ? c.a : c.b

close_ctx(c::Ctx) = (close(c.state); isempty(c.dir) || rm(c.dir; recursive = true, force = true); nothing)

# An in-memory state with one 4 KiB page and two payloads to alternate.
function in_memory(a = nothing, b = nothing; extra = nothing)
    s = mmsb_start()
    return Ctx(s, create_page(s, 4096); a = a, b = b, extra = extra)
end

# --- routing: the C-ABI floor for a 64-byte update ------------------------------------

function ccall_update(c::Ctx)
    bytes = flip!(c)
    out = c.extra
    st = GC.@preserve c bytes out ccall((:mmsb_page_update, LibMMSB.libmmsb), UInt32,
                                        (Ptr{LibMMSB.MmsbState}, UInt64, UInt64, Ptr{UInt8}, Csize_t, UInt64, Ptr{UInt64}),
                                        c.state.ptr, c.page.value, 0, bytes, 64, typemax(UInt64), out)
    st == 0 || error("status $st")
    return nothing
end

# The masked 4 KiB write through a bare `ccall` with the mask already packed:
# the core's cost of the dense route, without the Julia wrapper's work.
function ccall_masked(c::Ctx)
    bytes = flip!(c)
    mask, out = c.extra
    st = GC.@preserve c bytes mask out ccall((:mmsb_page_write_masked, LibMMSB.libmmsb), UInt32,
                                             (Ptr{LibMMSB.MmsbState}, UInt64, UInt64, Ptr{UInt8}, Csize_t, Ptr{UInt8},
                                              Csize_t, UInt64, Ptr{UInt64}),
                                             c.state.ptr, c.page.value, 0, mask, length(mask), bytes, length(bytes),
                                             typemax(UInt64), out)
    st == 0 || error("status $st")
    return nothing
end

const C_LOOP = raw"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "mmsb.h"
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec; }
static int cmp(const void *x, const void *y) { double a = *(const double *)x, b = *(const double *)y; return (a > b) - (a < b); }
int main(int argc, char **argv) {
  long n = atol(argv[1]); int samples = atoi(argv[2]);
  MmsbState *s; uint64_t page, lsn; uint8_t a[64], b[64];
  double t[1000], sum = 0;
  if (samples > 1000) samples = 1000;
  for (int i = 0; i < 64; i++) { a[i] = (uint8_t)i; b[i] = (uint8_t)(255 - i); }
  if (mmsb_state_open(NULL, &s) || mmsb_page_create(s, 4096, 0, NULL, 0, &page)) return 1;
  for (long i = 1; i <= n; i++) mmsb_page_update(s, page, 0, (i & 1) ? a : b, 64, MMSB_NO_EPOCH, &lsn);
  for (int k = 0; k < samples; k++) {
    double t0 = now();
    for (long i = 1; i <= n; i++)
      if (mmsb_page_update(s, page, 0, (i & 1) ? a : b, 64, MMSB_NO_EPOCH, &lsn)) return 2;
    t[k] = (now() - t0) / n; sum += t[k];
  }
  qsort(t, samples, sizeof(double), cmp);
  printf("%.3f %.3f %.3f %d\n", t[0], t[samples / 2], sum / samples, samples);
  mmsb_state_free(s);
  return 0;
}
"""

# The same 64-byte update called from a tight C loop (no Julia), or `nothing`
# when no C compiler is available.
function c_loop_update(n::Int, samples::Int)
    cc = Sys.which("cc")
    cc === nothing && return nothing
    libdir = dirname(MMSB.LIBPATH[])
    inc = joinpath(MMSB.package_root(), "rust", "mmsb-ffi", "include")
    mktempdir() do dir
        src, exe = joinpath(dir, "loop.c"), joinpath(dir, "loop")
        write(src, C_LOOP)
        run(`$cc -O2 -o $exe $src -I$inc -L$libdir -lmmsb -Wl,-rpath,$libdir`)
        mn, med, mu, k = split(readchomp(`$exe $n $samples`))
        return (parse(Float64, mn), parse(Float64, med), parse(Float64, mu), parse(Int, k))
    end
end

# --- propagation ------------------------------------------------------------------

function chain(n::Int; extra = nothing)
    s = mmsb_start()
    pages = [create_page(s, 64) for _ in 1:n]
    for i in 2:n
        add_dependency!(s, pages[i-1], pages[i]; commands = [CopyCommand(64)])
    end
    return Ctx(s, pages[1]; pages = pages, a = fill(0x01, 64), b = fill(0x02, 64), extra = extra)
end

function fanout(n::Int)
    s = mmsb_start()
    src = create_page(s, 64)
    pages = [create_page(s, 64) for _ in 1:n]
    for p in pages
        add_dependency!(s, src, p; commands = [CopyCommand(64)])
    end
    return Ctx(s, src; pages = pages, a = fill(0x01, 64), b = fill(0x02, 64))
end

function propagate_head(c::Ctx)
    write_page!(c.state, c.page, flip!(c))
    propagate!(c.state, c.page)
    return nothing
end

# The same work without the graph: read each page and write it to the next, in
# topological order, through the public API.
function naive_chain(c::Ctx)
    buf = c.extra
    write_page!(c.state, c.page, flip!(c))
    ps = c.pages
    for i in 2:length(ps)
        read_page!(buf, c.state, ps[i-1])
        write_page!(c.state, ps[i], buf)
    end
    return nothing
end

# --- the log ----------------------------------------------------------------------

# A directory-backed state with `npages` pages of `size` random bytes.
function logged(npages::Int, size::Int)
    dir = mktempdir()
    s = mmsb_start(dir = joinpath(dir, "state"))
    pages = [create_page(s, size) for _ in 1:npages]
    for p in pages
        write_page!(s, p, rand(UInt8, size))
    end
    return Ctx(s, pages[1]; pages = pages, dir = dir, a = fill(0x01, 8), b = fill(0x02, 8),
               extra = rand(UInt8, npages * size))
end

# A checkpoint of an unchanged state is skipped, so one page changes first
# (8 bytes: negligible next to writing 256 KiB).
function checkpoint(c::Ctx)
    write_page!(c.state, c.page, flip!(c))
    checkpoint_log!(c.state)
    return nothing
end

fsync(io::IOStream) = (flush(io); ccall(:fsync, Cint, (Cint,), fd(io)) == 0 || error("fsync failed"))

# What a checkpoint must at least do: write the pages' bytes to a file.
function write_file(c::Ctx; sync::Bool)
    path = joinpath(c.dir, "plain.bin")
    open(path, "w") do io
        write(io, c.extra)
        sync && fsync(io)
    end
    return nothing
end

# A log of `records` writes of `size` bytes (no checkpoint, so replaying to
# the last LSN reads every record).
function replayable(records::Int, size::Int)
    dir = mktempdir()
    s = mmsb_start(dir = joinpath(dir, "state"))
    p = create_page(s, size)
    for _ in 1:records
        write_page!(s, p, rand(UInt8, size))
    end
    files = [joinpath(dir, "state", f) for f in readdir(joinpath(dir, "state")) if endswith(f, ".seg") || endswith(f, ".blob")]
    return Ctx(s, p; dir = dir, extra = (lsn(s), files, sum(filesize, files)))
end

function replay_all(c::Ctx)
    l = c.extra[1]
    r = replay_log(c.state, l)
    close(r)
    return nothing
end

function read_segments(c::Ctx)
    n = 0
    for f in c.extra[2]
        n += length(read(f))
    end
    return n
end

# --- the list ---------------------------------------------------------------------

function cases(; quick::Bool = false)
    chain_n = 1000
    fan_n = 256
    rec = quick ? 500 : 2000
    c_samples = quick ? 7 : 21
    c_calls = quick ? 20_000 : 100_000
    k64 = (a = UInt8.(0:63), b = UInt8.(255:-1:192))
    page4k = (a = rand(UInt8, 4096), b = rand(UInt8, 4096))
    return [
        # allocation
        "alloc/create_free_4KiB" => Case(c -> free_page!(c.state, create_page(c.state, 4096));
                                         setup = in_memory, teardown = close_ctx),
        "alloc/create_free_1MiB" => Case(c -> free_page!(c.state, create_page(c.state, 1 << 20));
                                         setup = in_memory, teardown = close_ctx),
        # delta routing
        "route/write_64B" => Case(c -> write_page!(c.state, c.page, flip!(c));
                                  setup = () -> in_memory(k64.a, k64.b), teardown = close_ctx),
        "route/update_64B" => Case(c -> update_page!(c.state, c.page, flip!(c));
                                   setup = () -> in_memory(k64.a, k64.b), teardown = close_ctx),
        "baseline/update_64B_ccall" => Case(ccall_update;
                                            setup = () -> in_memory(k64.a, k64.b; extra = Ref{UInt64}(0)), teardown = close_ctx),
        "baseline/update_64B_c_loop" => Case(identity; external = () -> c_loop_update(c_calls, c_samples)),
        "route/masked_4KiB" => Case(c -> update_page!(c.state, c.page, flip!(c), c.extra);
                                    setup = () -> in_memory(page4k.a, page4k.b; extra = trues(4096)), teardown = close_ctx),
        "baseline/masked_4KiB_ccall" => Case(ccall_masked;
                                             setup = () -> in_memory(page4k.a, page4k.b;
                                                                     extra = (fill(0xff, 512), Ref{UInt64}(0))),
                                             teardown = close_ctx),
        "baseline/memcpy_4KiB" => Case(c -> copyto!(c.extra, flip!(c));
                                       setup = () -> Ctx(nothing, PageId(0); a = page4k.a, b = page4k.b,
                                                         extra = zeros(UInt8, 4096))),
        "route/sparse_16x16B" => Case(c -> update_page!(c.state, c.page, flip!(c));
                                      setup = () -> in_memory([256k + 1 => fill(0x11, 16) for k in 0:15],
                                                              [256k + 1 => fill(0x22, 16) for k in 0:15]),
                                      teardown = close_ctx),
        "route/batch_16x64B" => Case(c -> route_batch!(c.state, flip!(c));
                                     setup = function ()
                                         s = mmsb_start()
                                         ps = [create_page(s, 4096) for _ in 1:16]
                                         Ctx(s, ps[1]; pages = ps, a = [p => Delta(k64.a) for p in ps],
                                             b = [p => Delta(k64.b) for p in ps])
                                     end, teardown = close_ctx, unit = 16),
        "route/update_diff_4KiB_64B_changed" => Case(c -> update_page!(c.state, c.page, flip!(c));
                                                     setup = function ()
                                                         b = copy(page4k.a)
                                                         b[1001:1064] .= .~(b[1001:1064])
                                                         in_memory(copy(page4k.a), b)
                                                     end, teardown = close_ctx),
        # propagation
        "propagation/chain_1000" => Case(propagate_head; setup = () -> chain(chain_n), teardown = close_ctx,
                                         unit = chain_n - 1),
        "baseline/naive_chain_1000" => Case(naive_chain; setup = () -> chain(chain_n; extra = zeros(UInt8, 64)),
                                            teardown = close_ctx, unit = chain_n - 1),
        "propagation/fanout_256" => Case(propagate_head; setup = () -> fanout(fan_n), teardown = close_ctx,
                                         unit = fan_n),
        # the log (directory-backed, in a temporary folder)
        "log/checkpoint_64x4KiB" => Case(checkpoint; setup = () -> logged(64, 4096),
                                         teardown = close_ctx),
        "baseline/write_64x4KiB" => Case(c -> write_file(c; sync = false); setup = () -> logged(64, 4096),
                                         teardown = close_ctx),
        "baseline/write_fsync_64x4KiB" => Case(c -> write_file(c; sync = true); setup = () -> logged(64, 4096),
                                               teardown = close_ctx),
        "log/replay_$(rec)x4KiB" => Case(replay_all; setup = () -> replayable(rec, 4096), teardown = close_ctx),
        "baseline/read_log_$(rec)x4KiB" => Case(read_segments; setup = () -> replayable(rec, 4096),
                                                teardown = close_ctx),
    ]
end

# Ratios from one run: `num`/`den` (per call, minimum over samples, divided by
# each case's `unit` when `per_unit`), with the target and its direction.
# `target` compares the value of `num / den`; `absolute` ratios use `num` alone.
function ratios(res::Dict{String,<:Any}; quick::Bool = false)
    rec = quick ? 500 : 2000
    r(num, den; per_unit = false) = get(res, num, nothing) !== nothing && get(res, den, nothing) !== nothing ?
        (per_unit ? (res[num].min_ns / res[num].unit) / (res[den].min_ns / res[den].unit) : res[num].min_ns / res[den].min_ns) :
        nothing
    out = Pair{String,Any}[]
    add(name, v, target, op, num, den, note) =
        push!(out, name => (value = v, target = target, op = op, pass = v === nothing || target === nothing ? nothing :
                                                                  (op == "<=" ? v <= target : v >= target),
                            numerator = num, denominator = den, note = note))
    # The whole masked write (packing the mask, building the delta, routing, applying); the
    # dense *apply* itself (target <= 2x memcpy) is measured by `cargo bench --bench core`.
    add("masked_write_vs_memcpy", r("route/masked_4KiB", "baseline/memcpy_4KiB"), nothing, "<=",
        "route/masked_4KiB", "baseline/memcpy_4KiB", "update_page! masked 4 KiB (all bits set) / Julia copyto! 4 KiB")
    add("masked_write_ccall_vs_memcpy", r("baseline/masked_4KiB_ccall", "baseline/memcpy_4KiB"), nothing, "<=",
        "baseline/masked_4KiB_ccall", "baseline/memcpy_4KiB",
        "mmsb_page_write_masked 4 KiB by bare ccall (mask packed once) / Julia copyto! 4 KiB")
    add("route_64B_vs_c_loop", r("route/update_64B", "baseline/update_64B_c_loop"), 1.3, "<=",
        "route/update_64B", "baseline/update_64B_c_loop", "update_page! 64 B from Julia / mmsb_page_update in a C loop")
    add("route_64B_vs_ccall", r("route/update_64B", "baseline/update_64B_ccall"), 1.3, "<=",
        "route/update_64B", "baseline/update_64B_ccall", "update_page! 64 B / bare ccall of mmsb_page_update")
    pn = get(res, "propagation/chain_1000", nothing) !== nothing ? res["propagation/chain_1000"].min_ns / res["propagation/chain_1000"].unit :
        nothing
    add("propagation_ns_per_node", pn, 200.0, "<=", "propagation/chain_1000", "",
        "ns per recomputed node of a 1,000-page copy chain (absolute, includes routing each node's delta)")
    add("propagation_vs_naive_loop", r("propagation/chain_1000", "baseline/naive_chain_1000"), 1.0, "<=",
        "propagation/chain_1000", "baseline/naive_chain_1000", "propagate! / read_page! + write_page! per page in order")
    add("checkpoint_vs_write_fsync", r("log/checkpoint_64x4KiB", "baseline/write_fsync_64x4KiB"), nothing, "<=",
        "log/checkpoint_64x4KiB", "baseline/write_fsync_64x4KiB", "checkpoint 256 KiB / write + fsync of 256 KiB")
    add("checkpoint_vs_write", r("log/checkpoint_64x4KiB", "baseline/write_64x4KiB"), nothing, "<=",
        "log/checkpoint_64x4KiB", "baseline/write_64x4KiB", "checkpoint 256 KiB / plain write of 256 KiB (no fsync)")
    rp = r("baseline/read_log_$(rec)x4KiB", "log/replay_$(rec)x4KiB")
    add("replay_fraction_of_read_bandwidth", rp, 0.5, ">=", "baseline/read_log_$(rec)x4KiB", "log/replay_$(rec)x4KiB",
        "read time of the log's segment and blob files / replay_log time (= replay bandwidth / read bandwidth)")
    return out
end
