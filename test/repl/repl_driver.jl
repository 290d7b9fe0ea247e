# Drives a real `julia -i` REPL under a pseudo-terminal (`script`), one
# command at a time, and collects the markers the session prints.
#
# With standard input a pipe, `julia -i` starts no REPL backend, so no AST
# transform would run; `script` gives it a terminal. Each command is sent only
# after the REPL printed its prompt following the previous command's output
# (lines typed too early are lost or mangled). Markers are printed as
# `println("MA", "RKn ", ...)` so that the echo of the typed command never
# contains the marker text itself.
#
#   julia --project=. test/repl/repl_driver.jl     # runs the session, prints the transcript

"""
The session: `(command, pattern)` pairs, or `(command, pattern, delay)`.
After sending `command` the driver waits until `pattern` (a Regex) matches
the output printed since then; `delay` is how long to wait after the previous
prompt before typing (0.3 s by default).
"""
const REPL_STEPS = [
    ("using MMSB; enable_instrumentation(); println(\"MA\", \"RK1 \", instrumentation_status().enabled, \" \", MMSB.repl_attached())", r"MARK1 "),
    ("replf(x) = x * 7 + 1; println(\"MA\", \"RK2 \", \"defined\")", r"MARK2 "),
    ("println(\"MA\", \"RK3 \", replf(6))", r"MARK3 "),
    # Typed 3 s after the prompt: the REPL was idle, so the deferred flush has
    # started by then (it needs 0.15 s of idle; a running one is waited for).
    ("println(\"MA\", \"RK3i \", MMSB._IDLE_FLUSHES[] > 0)", r"MARK3i ", 3.0),
    # The flush at the end of the previous command must have captured replf.
    ("p = ir_pages(replf, (Int,)); println(\"MA\", \"RK4 \", occursin(\"Base.mul_int(x, 7)\", ir_text(p.optimized)), \" \", occursin(\"replf(x) = x * 7 + 1\", ir_text(p.source)))", r"MARK4 "),
    ("e0 = page_epoch(MMSB.default_instrumentation_state(), p.typed); replf(x) = x * 9; println(\"MA\", \"RK5 \", replf(6))", r"MARK5 "),
    ("println(\"MA\", \"RK6 \", page_epoch(MMSB.default_instrumentation_state(), ir_pages(replf, (Int,)).typed) > e0, \" \", occursin(\"(x * 9)\", ir_text(ir_pages(replf, (Int,)).typed)))", r"MARK6 "),
    ("struct ReplS; a::Int; end; println(\"MA\", \"RK7 \", ReplS(4).a)", r"MARK7 "),
    ("error(\"bo\" * \"om\")", r"ERROR: boom"),
    # A stack trace shows the user's frames, none of MMSB's (see `repl_trace`).
    ("replthrow() = error(\"bo\" * \"om2\"); replthrow()", r"ERROR: boom2"),
    ("println(\"MA\", \"RK8 \", instrumentation_status().errors, \" \", length(world_log(MMSB.default_instrumentation_state()).entries) > 0)", r"MARK8 "),
    ("disable_instrumentation(); println(\"MA\", \"RK9 \", MMSB.hook_installed(), \" \", MMSB.repl_attached())", r"MARK9 "),
]

"What each marker must report."
const REPL_EXPECTED = [
    "MARK1" => "true true",    # enabled, transform attached to the running backend
    "MARK2" => "defined",
    "MARK3" => "43",
    "MARK3i" => "true",        # a flush ran at idle time, not only in a command's prefix
    "MARK4" => "true true",    # optimized IR and REPL source text on pages after the command
    "MARK5" => "54",
    "MARK6" => "true true",    # redefinition reached the typed page as a delta
    "MARK7" => "4",            # struct definitions pass through the transform
    "MARK8" => "0 true",       # no capture errors; world page written
    "MARK9" => "false false",  # entry point restored, transform removed
]

const _ANSI = r"\e\[[0-9;?]*[A-Za-z]|\e[()][A-Z0-9]|\e[>=]|\r"

"""
    run_repl_session(; julia, project, step_timeout=240, timeout=1200) -> (ok, markers, transcript)

Runs `REPL_STEPS` in `julia -i` under `script`. `ok` is true when every step
saw its pattern within `step_timeout` seconds of being sent (the first
prompt: of the start) and the REPL exited within `timeout` seconds in all.
Both limits only bound a hung session: a session that works ends as soon as
its last step does, so generous limits cost nothing. Per step, because the
slow steps (start-up, `using MMSB` and the first enable, which compile) are
slower still on a loaded machine (a 60 s limit for the whole session failed
on Julia 1.11 at load average 10+), while the others take well under a second.
"""
function run_repl_session(; julia::Cmd, project::AbstractString, step_timeout::Real = 240, timeout::Real = 1200)
    jl = Base.shell_escape(`$julia --project=$project -i --banner=no --color=no --startup-file=no --history-file=no`)
    # A full REPL (LineEdit, history) needs a real terminal type; CI often has
    # TERM unset or "dumb", which gives the basic REPL without history.
    inner = "stty cols 400 rows 50 2>/dev/null; TERM=xterm exec $jl"
    proc = open(`script -qfc $inner /dev/null`, "r+")
    buf = IOBuffer()
    lk = ReentrantLock()
    reader = @async try
        while !eof(proc)
            data = readavailable(proc)
            lock(() -> write(buf, data), lk)
        end
    catch
    end
    session_deadline = time() + timeout
    output() = replace(lock(() -> String(copy(buf.data[1:buf.size])), lk), _ANSI => "")
    # Waits until `re` matches the output after `from`; returns the end of the match or nothing.
    function await(re::Regex, from::Int)
        deadline = min(session_deadline, time() + step_timeout)
        while time() < deadline
            out = output()
            m = from <= ncodeunits(out) ? match(re, out, from) : nothing
            m === nothing || return m.offset + ncodeunits(m.match)
            # An unexpected error ends the session early instead of waiting for the deadline.
            (from <= ncodeunits(out) && !occursin("ERROR", re.pattern) && occursin("ERROR: ", out[from:end])) &&
                return nothing
            process_exited(proc) && return nothing
            sleep(0.1)
        end
        return nothing
    end
    ok = true
    pos = await(r"julia> ", 1)
    if pos === nothing
        ok = false
    else
        for step in REPL_STEPS
            cmd, pattern = step[1], step[2]
            sleep(length(step) > 2 ? step[3] : 0.3)
            for chunk in Iterators.partition(cmd, 40) # type in bursts, as a person would
                write(proc, String(collect(chunk)))
                sleep(0.02)
            end
            write(proc, "\r")
            pos = await(pattern, pos)
            pos === nothing && (ok = false; break)
            pos = await(r"julia> ", pos) # the prompt after the output
            pos === nothing && (ok = false; break)
        end
    end
    ok && write(proc, "exit()\r")
    exit_deadline = min(session_deadline, time() + step_timeout)
    while !process_exited(proc) && time() < exit_deadline
        sleep(0.1)
    end
    if !process_exited(proc)
        ok = false
        kill(proc)
    end
    close(proc)
    wait(reader)
    transcript = output()
    markers = Dict{String,String}()
    for m in eachmatch(r"(MARK\d+i?) ([^\n]*)", transcript)
        markers[m.captures[1]] = strip(m.captures[2])
    end
    return (ok = ok, markers = markers, transcript = transcript)
end

"""
    repl_trace(transcript) -> String

The error report of the `replthrow()` step: from `ERROR: boom2` to the next
prompt (the stack trace the REPL printed), or "" when it is missing.
"""
function repl_trace(transcript::AbstractString)
    i = findfirst("ERROR: boom2", transcript)
    i === nothing && return ""
    j = findnext("julia> ", transcript, last(i))
    return String(transcript[first(i):(j === nothing ? lastindex(transcript) : prevind(transcript, first(j)))])
end

"Whether a REPL stack trace shows the user's function and no frame of MMSB."
trace_is_clean(trace::AbstractString) =
    occursin("replthrow", trace) && !occursin("_repl_", trace) && !occursin("julia/instrumentation", trace) && !occursin("MMSB", trace)

if abspath(PROGRAM_FILE) == @__FILE__
    res = run_repl_session(; julia = Base.julia_cmd(), project = dirname(dirname(@__DIR__)))
    println(res.transcript)
    println("ok = ", res.ok)
    for (k, v) in REPL_EXPECTED
        println(k, ": ", get(res.markers, k, "(missing)"), get(res.markers, k, nothing) == v ? "  ok" : "  EXPECTED $v")
    end
    println("stack trace without MMSB frames: ", trace_is_clean(repl_trace(res.transcript)))
end
