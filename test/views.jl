# Zero-copy views: live bytes, AbstractVector behaviour, closing rules.

mmsb_start() do s
    p = create_page(s, 100)
    v = page_view(s, p)
    @test v isa AbstractVector{UInt8}
    @test length(v) == 100 && size(v) == (100,)
    @test all(iszero, v)
    update_page(s, p, UInt8[5, 6, 7]; offset = 10)
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
    free_page(s, p)
    @test !isopen(vp) && isopen(vq)
    @test_throws MMSBError vp[1]
    @test vq[1] == 0
    @test_throws MMSBError page_view(s, p)   # unknown page now
    close(vq)
end

# views outliving their state throw instead of crashing
s = mmsb_start()
p = create_page(s, 64)
update_page(s, p, UInt8[1])
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
