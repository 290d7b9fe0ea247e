# Byte layouts of the instrumentation pages (also described in docs/instrumentation.md).
#
# IR text page (source, lowered, typed and optimized pages): a chain of pages,
# the first of which (the head) keeps its id for the life of the text:
#   bytes 0..7    number L of text bytes in this page, UInt64 little-endian
#   bytes 8..15   id of the next page of the chain (0: none), UInt64 LE
#   bytes 16..16+L  the next L bytes of the UTF-8 text (the text is the
#                 concatenation over the chain; a character may span two pages)
#   the rest      zeros (headroom)
# A head page is created with room for its first text plus 1/8 (at least
# IR_MIN_PAGE bytes, rounded up to IR_ALIGN), so a redefinition that grows the
# text a little is written in place as a delta. A text that no longer fits
# gets a continuation page for the rest (the head's id, and every edge to it,
# stay); a text that shrinks frees the continuation pages it no longer needs.
# `continuations` in `instrumentation_status` counts the pages added.
#
# World page (one per state, named "instrumentation/world"):
#   bytes 0..7    current world age (UInt64 LE)
#   bytes 8..15   number of entries ever recorded (UInt64 LE)
#   bytes 16..23  ring capacity WORLD_RING (UInt64 LE)
#   bytes 24..31  number of invalidations recorded (UInt64 LE)
#   then WORLD_RING entries of WORLD_ENTRY bytes; entry i (0-based) is at
#   32 + WORLD_ENTRY * (i % WORLD_RING):
#     bytes 0..7  world age (UInt64 LE)
#     byte  8     kind: 1 method defined, 2 compiled code invalidated,
#                 3 world advanced by something else
#     bytes 9..63 name (UTF-8, NUL-padded, cut at a character boundary)

const IR_HEADER = 16
const IR_MIN_PAGE = 128
const IR_ALIGN = 64
const WORLD_RING = 32
const WORLD_ENTRY = 64
const WORLD_HEADER = 32
const WORLD_PAGE_SIZE = WORLD_HEADER + WORLD_RING * WORLD_ENTRY
const WORLD_KINDS = (defined = 0x01, invalidated = 0x02, advanced = 0x03)

"Page size for `n` text bytes: header plus 1/8 headroom, a multiple of `IR_ALIGN`, at least `IR_MIN_PAGE`."
ir_page_size(n::Integer) = max(IR_MIN_PAGE, cld(IR_HEADER + n + cld(n, 8), IR_ALIGN) * IR_ALIGN)

function put_u64!(buf::Vector{UInt8}, off::Integer, x::UInt64)
    for i in 0:7
        buf[off + i + 1] = (x >> (8i)) % UInt8
    end
    return buf
end

function get_u64(buf::AbstractVector{UInt8}, off::Integer)
    x = UInt64(0)
    for i in 0:7
        x |= UInt64(buf[off + i + 1]) << (8i)
    end
    return x
end

"""
    encode_ir(chunk, next=0, oldlen=0) -> Vector{UInt8}

The bytes to write at offset 0 of one page of an IR text chain: header (this
page's byte count and the next page's id), the chunk, and zeros over what is
left of an older chunk of `oldlen` bytes.
"""
function encode_ir(chunk::AbstractVector{UInt8}, next::Integer = 0, oldlen::Integer = 0)
    n = length(chunk)
    buf = zeros(UInt8, IR_HEADER + max(n, oldlen))
    put_u64!(buf, 0, UInt64(n))
    put_u64!(buf, 8, UInt64(next))
    copyto!(buf, IR_HEADER + 1, chunk, 1, n)
    return buf
end
encode_ir(text::String, next::Integer = 0, oldlen::Integer = 0) = encode_ir(codeunits(text), next, oldlen)

"""
    decode_ir_page(bytes) -> (chunk::Vector{UInt8}, next::UInt64)

One page of an IR text chain: its text bytes and the id of the next page (0:
none). Throws on a corrupt header.
"""
function decode_ir_page(bytes::AbstractVector{UInt8})
    length(bytes) >= IR_HEADER || error("IR page too short ($(length(bytes)) bytes)")
    n = get_u64(bytes, 0)
    n <= length(bytes) - IR_HEADER || error("IR page header says $n bytes but the page holds $(length(bytes) - IR_HEADER)")
    return bytes[IR_HEADER+1:IR_HEADER+Int(n)], get_u64(bytes, 8)
end

"The text held by a single-page IR chain's bytes (throws on a corrupt header or when the text continues on another page)."
function decode_ir(bytes::AbstractVector{UInt8})
    chunk, next = decode_ir_page(bytes)
    next == 0 || error("the IR text continues on page $next")
    return String(chunk)
end

"`s` cut to at most `n` bytes at a character boundary."
function truncate_utf8(s::String, n::Integer)
    sizeof(s) <= n && return s
    i = thisind(s, n + 1) # start of the character holding byte n+1
    return s[1:prevind(s, i)]
end

"""
    WorldEntry

One entry of the world page's ring: the world age, what happened
(`:defined`, `:invalidated` or `:advanced`) and the name of the method.
"""
struct WorldEntry
    world::UInt64
    kind::Symbol
    name::String
end

function world_kind_symbol(k::UInt8)
    for (s, v) in pairs(WORLD_KINDS)
        v == k && return s
    end
    return :unknown
end

"Writes the world page header fields into `buf` (a full page image)."
function world_header!(buf::Vector{UInt8}, world::UInt64, count::UInt64, invalidations::UInt64)
    put_u64!(buf, 0, world)
    put_u64!(buf, 8, count)
    put_u64!(buf, 16, UInt64(WORLD_RING))
    put_u64!(buf, 24, invalidations)
    return buf
end

"Writes ring entry number `index` (0-based, counted since the page was created) into `buf`."
function world_entry!(buf::Vector{UInt8}, index::UInt64, e::WorldEntry)
    off = WORLD_HEADER + WORLD_ENTRY * Int(index % WORLD_RING)
    fill!(view(buf, off+1:off+WORLD_ENTRY), 0x00)
    put_u64!(buf, off, e.world)
    buf[off + 9] = getfield(WORLD_KINDS, e.kind)
    name = truncate_utf8(e.name, WORLD_ENTRY - 9)
    copyto!(buf, off + 10, codeunits(name), 1, sizeof(name))
    return buf
end

"""
    decode_world(bytes) -> (world, count, invalidations, entries)

Reads a world page image; `entries` are the ring's live entries, oldest first.
"""
function decode_world(bytes::AbstractVector{UInt8})
    length(bytes) >= WORLD_PAGE_SIZE || error("world page too short ($(length(bytes)) bytes)")
    world = get_u64(bytes, 0)
    count = get_u64(bytes, 8)
    ring = Int(get_u64(bytes, 16))
    ring == WORLD_RING || error("world page ring size $ring, expected $WORLD_RING")
    inval = get_u64(bytes, 24)
    entries = WorldEntry[]
    first = count > WORLD_RING ? count - WORLD_RING : UInt64(0)
    count == 0 && return (world = world, count = count, invalidations = inval, entries = entries)
    for i in first:(count - 1)
        off = WORLD_HEADER + WORLD_ENTRY * Int(i % WORLD_RING)
        raw = bytes[off+10:off+WORLD_ENTRY]
        z = findfirst(==(0x00), raw)
        name = String(z === nothing ? raw : raw[1:z-1])
        push!(entries, WorldEntry(get_u64(bytes, off), world_kind_symbol(bytes[off + 9]), name))
    end
    return (world = world, count = count, invalidations = inval, entries = entries)
end
