# Cost of a 64-byte page update through the Julia API, against the floor of
# calling the same C function directly, all measured in one run:
#
#   MMSB_LIB=target/release/libmmsb.so julia --project=. benchmark/update_bench.jl [calls]
#
# Rows (ns per call, the minimum over several samples of `calls` calls each):
#   c loop        the C function called from a tight C loop (compiled here with
#                 `cc` when one is available): the native cost with no Julia;
#   ccall floor   the same C function through a bare `ccall` from Julia with
#                 preallocated buffers and raw pointers;
#   MMSB API      `write_page!` / `update_page!` (checks, conversions, the LSN).
# Two buffers alternate so that every update really changes 64 bytes.
using MMSB
using MMSB: LibMMSB
using Printf

const N = length(ARGS) >= 1 ? parse(Int, ARGS[1]) : 50_000
const SAMPLES = 31   # many short samples: the minimum resists a busy machine
const LEN = 64

function floor_loop(fname::Symbol, s::MMSBState, page::UInt64, a::Vector{UInt8}, b::Vector{UInt8}, n::Int)
    out = Ref{UInt64}(0)
    sp = s.ptr
    pa, pb = pointer(a), pointer(b)
    t0 = time_ns()
    GC.@preserve s a b out begin
        outp = Base.unsafe_convert(Ptr{UInt64}, out)
        if fname === :write
            for i in 1:n
                st = ccall((:mmsb_page_write, LibMMSB.libmmsb), UInt32,
                           (Ptr{LibMMSB.MmsbState}, UInt64, UInt64, Ptr{UInt8}, Csize_t, UInt64, Ptr{UInt64}),
                           sp, page, 0, isodd(i) ? pa : pb, LEN, typemax(UInt64), outp)
                st == 0 || error("status $st")
            end
        else
            for i in 1:n
                st = ccall((:mmsb_page_update, LibMMSB.libmmsb), UInt32,
                           (Ptr{LibMMSB.MmsbState}, UInt64, UInt64, Ptr{UInt8}, Csize_t, UInt64, Ptr{UInt64}),
                           sp, page, 0, isodd(i) ? pa : pb, LEN, typemax(UInt64), outp)
                st == 0 || error("status $st")
            end
        end
    end
    return (time_ns() - t0) / n
end

function api_loop(fname::Symbol, s::MMSBState, page::PageId, a::Vector{UInt8}, b::Vector{UInt8}, n::Int)
    t0 = time_ns()
    if fname === :write
        for i in 1:n
            write_page!(s, page, isodd(i) ? a : b)
        end
    else
        for i in 1:n
            update_page!(s, page, isodd(i) ? a : b)
        end
    end
    return (time_ns() - t0) / n
end

const C_SOURCE = raw"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "mmsb.h"
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec; }
int main(int argc, char **argv) {
  long n = atol(argv[1]); int samples = atoi(argv[2]); int update = atoi(argv[3]);
  MmsbState *s; uint64_t page, lsn; uint8_t a[64], b[64];
  for (int i = 0; i < 64; i++) { a[i] = (uint8_t)i; b[i] = (uint8_t)(255 - i); }
  if (mmsb_state_open(NULL, &s) || mmsb_page_create(s, 4096, 0, NULL, 0, &page)) return 1;
  double best = 1e300;
  for (int k = 0; k < samples; k++) {
    double t0 = now();
    for (long i = 1; i <= n; i++) {
      MmsbStatus st = update ? mmsb_page_update(s, page, 0, (i & 1) ? a : b, 64, MMSB_NO_EPOCH, &lsn)
                             : mmsb_page_write(s, page, 0, (i & 1) ? a : b, 64, MMSB_NO_EPOCH, &lsn);
      if (st) return 2;
    }
    double ns = (now() - t0) / n;
    if (ns < best) best = ns;
  }
  printf("%.2f\n", best);
  mmsb_state_free(s);
  return 0;
}
"""

# The C loop, or `nothing` when no C compiler is available.
function c_loop(update::Bool)
    cc = Sys.which("cc")
    cc === nothing && return nothing
    libpath = MMSB.LIBPATH[]
    header_dir = joinpath(MMSB.package_root(), "rust", "mmsb-ffi", "include")
    mktempdir() do dir
        src = joinpath(dir, "bench.c")
        exe = joinpath(dir, "bench")
        write(src, C_SOURCE)
        libdir = dirname(libpath)
        run(`$cc -O2 -o $exe $src -I$header_dir -L$libdir -lmmsb -Wl,-rpath,$libdir`)
        return parse(Float64, readchomp(`$exe $N $SAMPLES $(Int(update))`))
    end
end

function main()
    a = UInt8.(0:63)
    b = UInt8.(255:-1:192)
    rows = Tuple{String,Float64,Float64,Union{Nothing,Float64}}[]
    mmsb_start() do s
        page = create_page(s, 4096)
        for fname in (:write, :update)
            # warm up (compilation), then interleave the two loops sample by sample
            floor_loop(fname, s, page.value, a, b, 1000)
            api_loop(fname, s, page, a, b, 1000)
            f = Inf
            j = Inf
            for _ in 1:SAMPLES
                f = min(f, floor_loop(fname, s, page.value, a, b, N))
                j = min(j, api_loop(fname, s, page, a, b, N))
            end
            push!(rows, (fname === :write ? "write_page!  (mmsb_page_write)" : "update_page! (mmsb_page_update)",
                         f, j, c_loop(fname === :update)))
        end
    end
    println("64-byte page update, ns per call (min of $SAMPLES samples x $N calls; Julia $(VERSION), ",
            "$(Threads.nthreads()) thread(s))")
    @printf("%-32s %10s %12s %10s %12s %12s\n", "", "c loop", "ccall floor", "MMSB API", "API/floor", "API/c loop")
    for (name, f, j, c) in rows
        @printf("%-32s %10s %12.1f %10.1f %11.2fx %12s\n", name, c === nothing ? "n/a" : @sprintf("%.1f", c), f, j,
                j / f, c === nothing ? "n/a" : @sprintf("%.2fx", j / c))
    end
    return rows
end

main()
