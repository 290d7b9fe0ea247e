# The device layer, with or without a GPU.

ds = device_status()
@test ds.available isa Bool && ds.description isa String
@info "device" ds.available ds.description
mmsb_start(gpu = true) do s
    st = device_status(s)
    @test st.requested && st.available == ds.available && st.description == ds.description && st.mirrors == 0
    g = create_page(s, 256; location = :gpu)
    u = create_page(s, 256; location = :unified)
    c = create_page(s, 256)
    @test page_info(s, g).location == :gpu && page_info(s, u).location == :unified
    l = apply_on_device!(s, g, Delta(UInt8[1, 2, 3]))
    @test l == lsn(s)
    @test read_page(s, g; len = 3) == UInt8[1, 2, 3]
    update_page!(s, u, UInt8[9]; at = 6)
    sync_all!(s)
    sync_all!(s; direction = :to_host)
    stats = device_stats(s)
    if ds.available
        @test stats.mirrors >= 1
        sync_page!(s, g)
        sync_page!(s, g; direction = :to_host)
        @test read_page(s, g; len = 3) == UInt8[1, 2, 3]
    else
        @test stats.cpu_only_pages >= 2
        e = try sync_page!(s, g) catch x; x end
        @test e isa MMSBError && e.name == "no_device"
    end
    e = try sync_page!(s, c) catch x; x end
    @test e isa MMSBError          # a CPU page has no mirror
    @test_throws ArgumentError sync_all!(s; direction = :sideways)
end

mmsb_start() do s
    st = device_status(s)
    @test !st.requested && st.mirrors == 0
end
