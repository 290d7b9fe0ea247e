# Zero-copy views: live bytes, AbstractVector behaviour, closing rules.

mmsb_start() do s
    p = create_page(s, 100)
    v = page_view(s, p)
    @test v isa AbstractVector{UInt8}
    @test length(v) == 100 && size(v) == (100,)
    @test all(iszero, v)
    update_page!(s, p, UInt8[5, 6, 7]; at = 11)
    @test v[11:13] == UInt8[5, 6, 7]           # live: sees later writes
    @test copy(v) == read_page(s, p)
    @test collect(v) == read_page(s, p)
    @test sum(v) == 18
    @test_throws BoundsError v[0]
    @test_throws BoundsError v[101]
    err = try v[1] = 0x01 catch x; x end          # read-only
    @test err isa MMSBError && err.name == "read_only"
    @test_throws MMSBError fill!(v, 0x00)
    @test sprint(show, v) == "PageView(PageId(1), 100 bytes)"
    close(v)
    @test !isopen(v)
    close(v) # idempotent
    err = try v[1] catch x; x end
    @test err isa MMSBError && err.name == "closed"
    @test_throws MMSBError copy(v)
    @test sprint(show, v) == "PageView(PageId(1), 100 bytes, closed)"

    # do-block form closes the view
    kept = Ref{Any}(nothing)
    @test page_view(s, p) do w
        kept[] = w
        w[11]
    end == 5
    @test !isopen(kept[])
    @test_throws MMSBError kept[][1]

    # freeing the page closes its views, not the others
    q = create_page(s, 10)
    vp = page_view(s, p)
    vq = page_view(s, q)
    free_page!(s, p)
    @test !isopen(vp) && isopen(vq)
    @test_throws MMSBError vp[1]
    @test vq[1] == 0
    @test_throws MMSBError page_view(s, p)   # unknown page now
    close(vq)
end

# views outliving their state throw instead of crashing
s = mmsb_start()
p = create_page(s, 64)
update_page!(s, p, UInt8[1])
views = [page_view(s, p) for _ in 1:5]
close(views[2])
@test all(v -> v[1] == 1, views[[1, 3, 4, 5]])
close(s)
for v in views
    @test !isopen(v)
    err = try v[1] catch x; x end
    @test err isa MMSBError && err.name == "closed"
end
@test_throws MMSBError page_view(s, p)

# A state as a collection of its pages; zero-copy interop of views.
mmsb_start() do s
    @test length(s) == 0 && collect(s) == PageId[] && !haskey(s, PageId(1))
    a = create_page(s, 64; name = "a")
    b = create_page(s, 4096; name = "b")
    @test length(s) == 2
    @test collect(s) == [a, b] == keys(s)
    @test [p for p in s] == [a, b] && eltype(s) === PageId
    @test haskey(s, a) && !haskey(s, PageId(999))
    update_page!(s, a, reinterpret(UInt8, [1.5, -2.25]))
    v = s[a]
    @test v isa PageView && v.page == a && length(v) == 64
    @test v[1:16] == reinterpret(UInt8, [1.5, -2.25])
    ps = collect(pairs(s))
    @test first.(ps) == [a, b] && all(x -> x isa PageView, last.(ps))
    @test_throws MMSBError s[PageId(999)]

    # reinterpret and pointer
    f = reinterpret(Float64, v)
    @test length(f) == 8 && f[1] == 1.5 && f[2] == -2.25 && all(iszero, f[3:end])
    GC.@preserve v begin
        p1 = pointer(v)
        @test p1 isa Ptr{UInt8} && unsafe_load(p1, 1) == v[1]
        @test pointer(v, 64) == p1 + 63 && unsafe_load(pointer(v, 9)) == v[9]
        @test unsafe_load(Ptr{Float64}(p1)) == 1.5
        w = unsafe_wrap(Array, v)
        @test w isa Vector{UInt8} && w == v && pointer(w) == p1
        x = unsafe_wrap(Array, Ptr{Float64}(pointer(v)), 2)
        @test x == [1.5, -2.25]
        update_page!(s, a, reinterpret(UInt8, [3.0]))      # live: the wrapped memory is the page
        @test x[1] == 3.0 && f[1] == 3.0
        # ccall takes a view where it takes a pointer
        @test ccall(:memcmp, Cint, (Ptr{UInt8}, Ptr{UInt8}, Csize_t), v, w, 64) == 0
    end
    @test_throws BoundsError pointer(v, 66)
    close(v)
    err = try pointer(v) catch x; x end
    @test err isa MMSBError && err.name == "closed"

    # the REPL shows a table of the pages
    txt = sprint(show, MIME("text/plain"), s)
    lines = split(txt, '\n')
    @test startswith(lines[1], "MMSBState(open, 2 pages") && endswith(lines[1], ":")
    @test split(lines[3]) == [string(Int(a.value)), "64", "2", "cpu", "a"]
    @test split(lines[4]) == [string(Int(b.value)), "4.000", "KiB", "0", "cpu", "b"]
end
mmsb_start() do s
    ps = [create_page(s, 8) for _ in 1:3]
    @test read_page.(s, ps) == [zeros(UInt8, 8) for _ in 1:3]    # a state broadcasts as one value
end
