# julia/LibMMSB.jl is written by hand from the C header rust/mmsb-ffi/include/mmsb.h (which cbindgen
# generates from the Rust code): this file checks that the two agree, so that a constant, a
# signature or a struct mirror that drifts fails here instead of corrupting memory at a call.
#   - every `#define MMSB_*` number and every status code of the header has a LibMMSB constant
#     of that name and value (status codes strictly; other defines when LibMMSB has the name);
#   - every `mmsb_*` function of the header has a LibMMSB wrapper whose `ccall` has the same
#     return type and argument types, and LibMMSB wraps nothing the header lacks;
#   - every struct of the header has a LibMMSB mirror with the same field names and types.

const L = MMSB.LibMMSB
const HEADER = read(joinpath(dirname(dirname(pathof(MMSB))), "rust", "mmsb-ffi", "include", "mmsb.h"), String)
const LIBSRC = read(joinpath(dirname(dirname(pathof(MMSB))), "julia", "LibMMSB.jl"), String)

# Header text without comments, one declaration per `;`.
strip_comments(s) = replace(replace(s, r"/\*.*?\*/"s => ""), r"//[^\n]*" => "")
const H = strip_comments(HEADER)

# Function-pointer typedefs (callbacks) are passed as Ptr{Cvoid}.
const CALLBACKS = Set(m[1] for m in eachmatch(r"typedef\s+[\w\s\*]+\(\*\s*(\w+)\)", H))

# The Julia type a C type maps to (evaluated in LibMMSB, so aliases such as MmsbStatus resolve).
function julia_type(c::AbstractString)
    c = strip(replace(replace(c, r"\bconst\b" => ""), r"\bstruct\b" => ""))
    depth = count(==('*'), c)
    base = strip(replace(c, "*" => ""))
    scalar = Dict("uint64_t" => UInt64, "uint32_t" => UInt32, "uint16_t" => UInt16, "int32_t" => Int32, "int64_t" => Int64,
                  "uint8_t" => UInt8, "size_t" => Csize_t, "bool" => Bool, "double" => Float64,
                  "float" => Float32, "void" => Cvoid, "char" => UInt8, "int" => Cint)
    t = if base in CALLBACKS
        depth += 1
        Cvoid
    elseif haskey(scalar, base)
        scalar[base]
    elseif isdefined(L, Symbol(base))
        getfield(L, Symbol(base))
    else
        error("header type `$c` has no Julia mapping in test/header.jl")
    end
    for _ in 1:depth
        t = Ptr{t}
    end
    return t
end

# Split "a, b" parameter lists at top-level commas; a parameter's type is all but its name.
function param_type(p)
    p = strip(p)
    p == "" || p == "void" ? nothing : strip(match(r"^(.*?)\w+$"s, p)[1])
end
params(list) = filter(!isnothing, [param_type(p) for p in split(list, ',')])

@testset "header.jl: LibMMSB agrees with mmsb.h" begin
    @testset "constants" begin
        defines = [(m[1], m[2]) for m in eachmatch(r"#define\s+(MMSB_\w+)\s+(\w+)", HEADER) if m[1] != "MMSB_H"]
        @test length(defines) > 20
        for (name, val) in defines
            isdefined(L, Symbol(name)) || continue
            v = val == "UINT64_MAX" ? typemax(UInt64) : parse(BigInt, val)
            @test (name, getfield(L, Symbol(name)) == v) == (name, true)
        end
        codes = [(m[1], parse(Int, m[2])) for m in eachmatch(r"\b(MMSB_STATUS_CODE_\w+)\s*=\s*(\d+)", H)]
        @test length(codes) >= 26
        for (name, v) in codes
            @test (name, isdefined(L, Symbol(name)) && getfield(L, Symbol(name)) == v) == (name, true)
        end
        # and LibMMSB has no status code the header lacks
        jl_codes = filter(n -> startswith(string(n), "MMSB_STATUS_CODE_"), names(L; all = true))
        @test sort(string.(jl_codes)) == sort(first.(codes))
    end

    @testset "functions" begin
        decls = Dict{String,Tuple{Any,Vector}}()
        for chunk in split(replace(H, r"^#.*$"m => ""), ';')
            chunk = chunk[nextind(chunk, something(findlast(in("{}"), chunk), 0)):end]   # after a struct body or extern "C" {
            m = match(r"^\s*([\w\s\*]+?)\b(mmsb_\w+)\s*\(([^()]*)\)\s*$"s, chunk)
            m === nothing || (decls[m[2]] = (julia_type(m[1]), [julia_type(p) for p in params(m[3])]))
        end
        @test length(decls) > 60
        # every ccall of LibMMSB: name => (return type, argument types)
        wrapped = Dict{String,Tuple{Any,Vector}}()
        walk(x) = nothing
        function walk(ex::Expr)
            if ex.head === :call && ex.args[1] === :ccall && ex.args[2] isa Expr && ex.args[2].head === :tuple
                name = string(ex.args[2].args[1].value)
                ret = Core.eval(L, ex.args[3])
                args = Any[Core.eval(L, a) for a in ex.args[4].args]
                wrapped[name] = (ret, args)
            end
            foreach(walk, ex.args)
        end
        walk(Meta.parse(LIBSRC))
        @test (:unwrapped, sort!(collect(setdiff(keys(decls), keys(wrapped))))) == (:unwrapped, String[])
        @test (:not_in_header, sort!(collect(setdiff(keys(wrapped), keys(decls))))) == (:not_in_header, String[])
        # const char * returns come back as Cstring; Ref{T} and Ptr{T} arguments are the same pointer
        same(j, c) = j == c || (j === Cstring && c == Ptr{UInt8}) ||
                     (j isa DataType && c isa DataType && j <: Ref && c <: Ptr && j.parameters == c.parameters)
        for (name, (cret, cargs)) in decls
            haskey(wrapped, name) || continue
            jret, jargs = wrapped[name]
            @test (name, same(jret, cret)) == (name, true)
            @test (name, length(jargs) == length(cargs) && all(same.(jargs, cargs))) == (name, true)
        end
    end

    @testset "struct mirrors" begin
        structs = [(m[1], m[2]) for m in eachmatch(r"typedef\s+struct\s+(\w+)\s*\{([^}]*)\}"s, H)]
        @test length(structs) >= 5
        for (name, body) in structs
            @test (name, isdefined(L, Symbol(name))) == (name, true)
            isdefined(L, Symbol(name)) || continue
            T = getfield(L, Symbol(name))
            fields = [(strip(f[2]), julia_type(f[1])) for f in eachmatch(r"([\w\s\*]+?)\b(\w+)\s*;", body)]
            @test (name, collect(string.(fieldnames(T)))) == (name, first.(fields))
            @test (name, collect(fieldtypes(T))) == (name, last.(fields))
        end
    end
end
