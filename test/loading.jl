# Library loading: the chosen file, the ABI check, and the errors for a missing library.

@test isfile(MMSB.LIBPATH[])
@test basename(MMSB.LIBPATH[]) == MMSB.LIBFILE
@test MMSB.LibMMSB.mmsb_abi_version() == MMSB.LibMMSB.MMSB_ABI_VERSION
@test isfile(joinpath(MMSB.package_root(), "Project.toml"))

function with_env(f, key, value)
    old = get(ENV, key, nothing)
    ENV[key] = value
    try
        f()
    finally
        old === nothing ? delete!(ENV, key) : (ENV[key] = old)
    end
end

# a missing file: a clear error that says how to build
with_env("MMSB_LIB", "/nonexistent/libmmsb.so") do
    err = try MMSB.library_path() catch e; e end
    @test err isa ErrorException
    @test occursin("cargo build --release", err.msg) && occursin("MMSB_LIB", err.msg)
end
# a file under another name cannot be called through the constant library name
mktempdir() do dir
    other = joinpath(dir, "other.so")
    cp(MMSB.LIBPATH[], other)
    with_env("MMSB_LIB", other) do
        err = try MMSB.library_path() catch e; e end
        @test err isa ErrorException && occursin(MMSB.LIBFILE, err.msg)
    end
end
# MMSB_LIB wins over the default location
with_env("MMSB_LIB", MMSB.LIBPATH[]) do
    @test MMSB.library_path() == MMSB.LIBPATH[]
end

# a fresh process without MMSB_LIB and without a build fails with the instructions
mktempdir() do dir
    cp(joinpath(MMSB.package_root(), "Project.toml"), joinpath(dir, "Project.toml"))
    cp(joinpath(MMSB.package_root(), "src"), joinpath(dir, "src"))
    cp(joinpath(MMSB.package_root(), "julia"), joinpath(dir, "julia"))
    env = copy(ENV)
    delete!(env, "MMSB_LIB")
    env["JULIA_LOAD_PATH"] = "@:@stdlib"
    cmd = `$(Base.julia_cmd()) --startup-file=no --project=$dir -e "using MMSB"`
    out = Pipe()
    proc = run(pipeline(ignorestatus(setenv(cmd, env)); stdout = out, stderr = out); wait = false)
    close(out.in)
    text = read(out, String)
    wait(proc)
    @test !success(proc)
    @test occursin("native library was not found", text) && occursin("cargo build --release", text)
end

# a library with another ABI version is refused at load time, with instructions
cc = Sys.which("cc")
if cc === nothing
    @info "no C compiler: skipping the ABI-mismatch check"
else
    mktempdir() do dir
        src = joinpath(dir, "fake.c")
        write(src, "unsigned int mmsb_abi_version(void) { return 999; }\n")
        lib = joinpath(dir, MMSB.LIBFILE)
        run(`$cc -shared -fPIC -o $lib $src`)
        env = copy(ENV)
        env["MMSB_LIB"] = lib
        env["JULIA_LOAD_PATH"] = "@:@stdlib"
        cmd = `$(Base.julia_cmd()) --startup-file=no --project=$(MMSB.package_root()) -e "using MMSB"`
        out = Pipe()
        proc = run(pipeline(ignorestatus(setenv(cmd, env)); stdout = out, stderr = out); wait = false)
        close(out.in)
        text = read(out, String)
        wait(proc)
        @test !success(proc)
        @test occursin("ABI version 999", text) && occursin("cargo build --release", text)
    end
end

# deps/build.jl (what Pkg.build runs) without cargo: a prebuilt library in
# MMSB_LIB is enough; with neither, a clear error naming both ways out.
# Output goes to a file: an IOBuffer is filled by a task that may still be
# copying when `run` returns.
function run_output(cmd)
    path, io = mktemp()
    p = run(pipeline(ignorestatus(cmd); stdout = io, stderr = io))
    close(io)
    out = read(path, String)
    rm(path)
    return p.exitcode, out
end
let build = joinpath(MMSB.package_root(), "deps", "build.jl"), julia = Base.julia_cmd()
    mktempdir() do home
        # An environment whose PATH and HOME hold no cargo.
        env = ["PATH=" * dirname(Sys.which("sh")), "HOME=" * home]
        rc, out = run_output(setenv(`$julia --startup-file=no $build`, [env; "MMSB_LIB=" * MMSB.LIBPATH[]]))
        @test rc == 0 && occursin("nothing to build", out)
        rc, msg = run_output(setenv(`$julia --startup-file=no $build`, env))
        @test rc != 0
        @test occursin("cargo (Rust's build tool) was not found", msg) && occursin("MMSB_LIB", msg) &&
              occursin("cargo build --release", msg)
    end
end
