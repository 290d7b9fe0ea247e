# Finding and loading libmmsb at run time (never at precompile time).

"File name of the native library on this platform (what `cargo build` produces)."
const LIBFILE = Sys.iswindows() ? "mmsb.dll" : string("libmmsb.", Libdl.dlext)

"Path of the loaded native library (set by `__init__`)."
const LIBPATH = Ref{String}("")

"""
    package_root()

The root folder of this package (the one holding `Project.toml` and `rust/`).
"""
function package_root()
    p = Base.pathof(@__MODULE__)
    # pathof is `<root>/src/MMSB.jl`; fall back to this file's location when the
    # module was not loaded as a package (e.g. `include`d).
    return p === nothing ? dirname(@__DIR__) : dirname(dirname(p))
end

"""
    library_path()

The path of `libmmsb` this package will load: `ENV["MMSB_LIB"]` when set, else
the project's own release build `target/release/libmmsb.so`. Throws an
`ErrorException` with instructions when the file does not exist.
"""
function library_path()
    root = package_root()
    env = strip(get(ENV, "MMSB_LIB", ""))
    path = isempty(env) ? joinpath(root, "target", "release", LIBFILE) : abspath(env)
    if !isfile(path)
        how = isempty(env) ? "" : "MMSB_LIB is set to $(repr(env)), which is not a file.\n"
        error("""
            MMSB: the native library was not found at $path.
            $(how)Build it from the package root ($root) with
                cargo build --release
            or  julia --project=. deps/build.jl
            or point the environment variable MMSB_LIB at an existing $LIBFILE.""")
    end
    if basename(path) != LIBFILE
        error("MMSB: MMSB_LIB must name a file called $LIBFILE (got $(repr(path))); " *
              "the bindings call the library by that name.")
    end
    return path
end

"""
    load_library()

Loads the library at [`library_path`](@ref), checks its ABI version against the
one these bindings were written for, and puts its folder first on
`Libdl.DL_LOAD_PATH` so that `ccall((:f, "libmmsb"), ...)` resolves to it.
"""
function load_library()
    path = library_path()
    handle = Libdl.dlopen(path) # kept open for the life of the process
    fptr = Libdl.dlsym(handle, :mmsb_abi_version)
    abi = ccall(fptr, UInt32, ())
    if abi != LibMMSB.MMSB_ABI_VERSION
        error("MMSB: $path implements ABI version $abi but this package needs " *
              "$(LibMMSB.MMSB_ABI_VERSION); rebuild the library (cargo build --release) " *
              "or update the package.")
    end
    dir = dirname(path)
    filter!(!=(dir), Libdl.DL_LOAD_PATH)
    pushfirst!(Libdl.DL_LOAD_PATH, dir)
    # The name must now resolve to this very file (not another libmmsb elsewhere).
    if Libdl.dlopen(LibMMSB.libmmsb) != handle
        error("MMSB: $(LibMMSB.libmmsb) resolves to $(Libdl.dlpath(LibMMSB.libmmsb)), not $path")
    end
    LIBPATH[] = path
    return path
end

# --- scratch out-parameters --------------------------------------------------
# The hot calls (page writes) return an LSN through an out-parameter. A `Ref`
# costs an allocation per call; instead each thread has its own slot (64 bytes
# apart, so threads do not share a cache line). A slot is only used between a
# `ccall` and the load right after it, with no yield in between, so no other task
# can touch it meanwhile (tasks only switch or migrate at yield points).
const SLOT_STRIDE = 8
const OUT_SLOTS = UInt64[]

function init_slots()
    # Threads.maxthreadid covers the interactive pool too (Julia >= 1.9).
    n = VERSION >= v"1.9" ? Threads.maxthreadid() : Threads.nthreads()
    resize!(OUT_SLOTS, (n + 1) * SLOT_STRIDE)
    return nothing
end

"""
    MMSB.with_u64_out(f) -> (status, value)

Calls `f(ptr)` (a `ccall` returning a status) with `ptr::Ptr{UInt64}` pointing
to a scratch out-parameter of the current thread, and returns the status and the
value written there.
"""
@inline function with_u64_out(f)
    i = Threads.threadid() * SLOT_STRIDE
    slots = OUT_SLOTS
    if i <= length(slots)
        GC.@preserve slots begin
            p = pointer(slots, i)
            st = f(p)
            return st, unsafe_load(p)
        end
    else # a thread started after __init__ (foreign threads): fall back to a Ref
        r = Ref{UInt64}(0)
        st = f(r)
        return st, r[]
    end
end

"""
    MMSB.free_handle!(free, obj)

The idempotent release of a native handle held in `obj.ptr`: takes the pointer,
sets `obj.ptr = C_NULL`, and calls `free(ptr)` unless it was already NULL.
"""
@inline function free_handle!(free, obj)
    p = obj.ptr
    obj.ptr = C_NULL
    p == C_NULL || free(p)
    return nothing
end
