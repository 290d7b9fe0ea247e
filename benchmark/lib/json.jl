# Minimal JSON writer and reader for the baseline files (no JSON package in the
# standard library). Objects keep their key order when written from a vector
# of pairs; read back, they are `Dict{String,Any}`.
module MiniJSON

export json_string, json_parse

json_escape(s::AbstractString) = replace(replace(replace(replace(s, "\\" => "\\\\"), "\"" => "\\\""), "\n" => "\\n"),
                                         "\t" => "\\t")

function write_json(io::IO, x, indent::Int = 0)
    pad = "  "^indent
    if x === nothing
        print(io, "null")
    elseif x isa Bool
        print(io, x ? "true" : "false")
    elseif x isa Integer
        print(io, x)
    elseif x isa AbstractFloat
        isfinite(x) ? print(io, round(Float64(x); sigdigits = 6)) : print(io, "null")
    elseif x isa AbstractString || x isa Symbol
        print(io, '"', json_escape(string(x)), '"')
    elseif x isa AbstractDict || x isa AbstractVector{<:Pair} || x isa NamedTuple
        ps = x isa NamedTuple ? collect(pairs(x)) : x isa AbstractDict ? sort!(collect(x); by = p -> string(p[1])) : x
        if isempty(ps)
            print(io, "{}")
            return
        end
        println(io, "{")
        for (i, (k, v)) in enumerate(ps)
            print(io, pad, "  \"", json_escape(string(k)), "\": ")
            write_json(io, v, indent + 1)
            println(io, i < length(ps) ? "," : "")
        end
        print(io, pad, "}")
    elseif x isa AbstractVector || x isa Tuple
        print(io, "[")
        for (i, v) in enumerate(x)
            i > 1 && print(io, ", ")
            write_json(io, v, indent + 1)
        end
        print(io, "]")
    else
        write_json(io, string(x), indent)
    end
end

json_string(x) = sprint(write_json, x)

mutable struct Reader
    s::String
    i::Int
end

function skip_ws(r::Reader)
    while r.i <= ncodeunits(r.s) && r.s[r.i] in (' ', '\n', '\r', '\t')
        r.i += 1
    end
end

function expect(r::Reader, c::Char)
    skip_ws(r)
    r.s[r.i] == c || error("JSON: expected '$c' at byte $(r.i)")
    r.i += 1
end

function read_value(r::Reader)
    skip_ws(r)
    c = r.s[r.i]
    if c == '{'
        r.i += 1
        d = Dict{String,Any}()
        skip_ws(r)
        r.s[r.i] == '}' && (r.i += 1; return d)
        while true
            k = read_value(r)
            expect(r, ':')
            d[k] = read_value(r)
            skip_ws(r)
            r.s[r.i] == ',' ? (r.i += 1) : (expect(r, '}'); return d)
        end
    elseif c == '['
        r.i += 1
        v = Any[]
        skip_ws(r)
        r.s[r.i] == ']' && (r.i += 1; return v)
        while true
            push!(v, read_value(r))
            skip_ws(r)
            r.s[r.i] == ',' ? (r.i += 1) : (expect(r, ']'); return v)
        end
    elseif c == '"'
        io = IOBuffer()
        r.i += 1
        while r.s[r.i] != '"'
            if r.s[r.i] == '\\'
                r.i += 1
                e = r.s[r.i]
                print(io, e == 'n' ? '\n' : e == 't' ? '\t' : e)
            else
                print(io, r.s[r.i])
            end
            r.i = nextind(r.s, r.i)
        end
        r.i += 1
        return String(take!(io))
    elseif startswith(SubString(r.s, r.i), "true")
        r.i += 4
        return true
    elseif startswith(SubString(r.s, r.i), "false")
        r.i += 5
        return false
    elseif startswith(SubString(r.s, r.i), "null")
        r.i += 4
        return nothing
    else
        j = r.i
        while r.i <= ncodeunits(r.s) && (isdigit(r.s[r.i]) || r.s[r.i] in ('-', '+', '.', 'e', 'E'))
            r.i += 1
        end
        t = r.s[j:r.i-1]
        return occursin(r"[.eE]", t) ? parse(Float64, t) : parse(Int, t)
    end
end

json_parse(s::AbstractString) = read_value(Reader(String(s), 1))

end # module MiniJSON
