# Native status codes become `MMSBError`s, through one helper: `check`.

"""
    MMSBError(code, name, message) <: Exception

An error reported by the MMSB core (or detected by these bindings before a call,
with the same codes). Fields:
- `code::UInt32`: the stable numeric status code (`MMSB.LibMMSB.MMSB_STATUS_CODE_*`);
- `name::String`: its name, e.g. `"unknown_page"`, `"closed"`, `"length_mismatch"`;
- `message::String`: the native message describing this failure.

Use [`errorname`](@ref MMSB.errorname) to get the name as a `Symbol`.
"""
struct MMSBError <: Exception
    code::UInt32
    name::String
    message::String
end

"""
    MMSBError(code, message)

An `MMSBError` raised on the Julia side, named like the native code `code`.
"""
MMSBError(code::Integer, message::AbstractString) = MMSBError(UInt32(code), status_name(code), String(message))

"""
    MMSB.errorname(e::MMSBError) -> Symbol

The status code's name as a symbol, e.g. `:unknown_page`.
"""
errorname(e::MMSBError) = Symbol(e.name)

function Base.showerror(io::IO, e::MMSBError)
    print(io, "MMSBError: ", e.message, " (", e.name, ", code ", Int(e.code), ")")
end

"""
    MMSB.status_name(code) -> String

The native name of a status code (`"unknown"` for numbers not assigned).
"""
status_name(code::Integer) = unsafe_string(LibMMSB.mmsb_status_name(UInt32(code)))

"""
    MMSB.last_error(code) -> MMSBError

Builds the error for a failed call from this thread's native last-error message.
Must run right after the failing call, on the same thread (no task switch in
between: a `ccall` never yields, and neither does this function).
"""
@noinline function last_error(code::UInt32)
    buf = Vector{UInt8}(undef, 256)
    len = Ref{Csize_t}(0)
    LibMMSB.mmsb_last_error_message(buf, length(buf), len)
    if len[] >= length(buf) # truncated: fetch the whole message
        resize!(buf, len[] + 1)
        LibMMSB.mmsb_last_error_message(buf, length(buf), len)
    end
    msg = String(buf[1:min(Int(len[]), length(buf) - 1)])
    return MMSBError(code, status_name(code), julia_syntax(msg))
end

"""
    MMSB.julia_syntax(message) -> String

A native message with its Rust notation in Julia's: ranges `1..=4096` become
`1:4096`, configuration fields `` `logging: true` `` and `Config::gpu = false`
become the keywords of [`mmsb_start`](@ref) (`logging = true`, `gpu = false`),
and "`n` bytes at offset `k`" (0-based) becomes the 1-based byte positions
"bytes `k+1`:`k+n`" that the Julia API uses.
"""
function julia_syntax(msg::AbstractString)
    msg = replace(msg, r"\d+ bytes at offset \d+ are" => function (s)
        m = match(r"(\d+) bytes at offset (\d+)", s)
        n, off = parse(Int, m[1]), parse(Int, m[2])
        return string("bytes ", off + 1, ":", off + n, " (1-based) are")
    end)
    msg = replace(msg, r"(\d+)\.\.=(\d+)" => s"\1:\2")
    msg = replace(msg, r"`(\w+): (\w+)`" => s"`\1 = \2`")
    return replace(msg, r"Config::(\w+)" => s"\1")
end

"""
    MMSB.check(status)

Throws the [`MMSBError`](@ref) for a non-zero native status; the one place where
status codes are turned into exceptions.
"""
@inline check(status::UInt32) = status == LibMMSB.MMSB_OK ? nothing : throw(last_error(status))

"The error for using a handle after `close`."
closed_error(what::AbstractString) = MMSBError(LibMMSB.MMSB_STATUS_CODE_CLOSED, "$what is closed")
