# Wake-up latency of a subscription: the time from a write on another thread to
# `take!(sub)` returning in a task that was waiting for it, with the core's
# native wake-up (an AsyncCondition woken by uv_async_send) against the polling
# fallback (1 ms, doubling to 20 ms), measured alternately in one run:
#
#   MMSB_LIB=target/release/libmmsb.so JULIA_NUM_THREADS=2 julia --project=. benchmark/wakeup_bench.jl [events]
#
# The writer sleeps a random 0-20 ms first, so the waiter is really waiting.
# Prints the median, p90 and max in µs per mode, and the poll/notify ratios.
using MMSB
using Statistics, Random, Printf

const N = length(ARGS) >= 1 ? parse(Int, ARGS[1]) : 200
Threads.nthreads() >= 2 || error("run with JULIA_NUM_THREADS=2: the writer needs a thread of its own")

function measure(n)
    lat = Float64[]
    mmsb_start() do s
        p = create_page(s, 8)
        sub = subscribe(s; events = (:delta_applied,))
        rng = MersenneTwister(1)
        for i in 1:n
            t0 = Ref(UInt64(0))
            d = rand(rng) * 0.02
            w = Task(() -> (Libc.systemsleep(d); t0[] = time_ns(); update_page!(s, p, UInt8[i % 256])))
            ccall(:jl_set_task_tid, Cvoid, (Any, Cint), w, 1)   # thread 2: the waiter stays on thread 1
            schedule(w)
            take!(sub)
            t1 = time_ns()
            wait(w)
            push!(lat, (t1 - t0[]) / 1e3)
        end
        close(sub)
    end
    return lat
end

measure(5)   # compile
native = MMSB.UV_ASYNC_SEND[]
native == C_NULL && error("this Julia has no uv_async_send: only the polling mode can run")
results = Dict(:notify => Float64[], :poll => Float64[])
for mode in (:notify, :poll, :notify, :poll)
    MMSB.UV_ASYNC_SEND[] = mode === :notify ? native : C_NULL
    append!(results[mode], measure(N ÷ 2))
end
MMSB.UV_ASYNC_SEND[] = native
for mode in (:notify, :poll)
    l = results[mode]
    @printf("%-7s median %9.1f µs   p90 %9.1f µs   max %9.1f µs\n", mode, median(l), quantile(l, 0.9), maximum(l))
end
@printf("poll / notify: median %.1fx, p90 %.1fx\n", median(results[:poll]) / median(results[:notify]),
        quantile(results[:poll], 0.9) / quantile(results[:notify], 0.9))
