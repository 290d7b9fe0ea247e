# Run by `Pkg.build("MMSB")`, or directly: `julia --project=. deps/build.jl`.
# Builds the native library (target/release/libmmsb.so) with cargo. With
# MMSB_LIB naming an existing library (a prebuilt one) there is nothing to
# build; without cargo the build stops with what to install or set instead.
let root = dirname(@__DIR__)
    libfile = Sys.iswindows() ? "mmsb.dll" : Sys.isapple() ? "libmmsb.dylib" : "libmmsb.so"
    prebuilt = strip(get(ENV, "MMSB_LIB", ""))
    # Run cargo by name, not through Sys.which's resolved path: with rustup, cargo is a
    # link to rustup, which picks the tool from the name it was called by.
    home_cargo = joinpath(homedir(), ".cargo", "bin", Sys.iswindows() ? "cargo.exe" : "cargo")
    cargo = Sys.which("cargo") !== nothing ? "cargo" : ispath(home_cargo) ? home_cargo : nothing
    if !isempty(prebuilt) && isfile(prebuilt)
        @info "MMSB: MMSB_LIB names a prebuilt library; nothing to build (MMSB uses it while MMSB_LIB is set)" prebuilt
    elseif cargo === nothing
        error("""
            MMSB: cannot build the native library: cargo (Rust's build tool) was not found on PATH or in ~/.cargo/bin.
            Either install Rust (rustup, stable 1.89 or newer) and run the build again (Pkg.build("MMSB")),
            or build it yourself with `cargo build --release` in $root,
            or set the environment variable MMSB_LIB to the full path of a prebuilt $libfile.""")
    else
        isempty(prebuilt) || @warn "MMSB: MMSB_LIB is set but is not a file; building the bundled library" prebuilt
        @info "MMSB: building libmmsb with cargo (a few minutes the first time)" root
        cd(() -> run(`$cargo build --release`), root)
        lib = joinpath(root, "target", "release", libfile)
        isfile(lib) || error("MMSB: cargo finished but $lib is missing")
        @info "MMSB: built $lib"
    end
end
