# Run by `Pkg.build("MMSB")`, or directly: `julia --project=. deps/build.jl`.
# Builds the native library (target/release/libmmsb.so) with cargo.
let root = dirname(@__DIR__)
    if !isempty(get(ENV, "MMSB_LIB", ""))
        @info "MMSB_LIB is set ($(ENV["MMSB_LIB"])); building the bundled Rust library anyway."
    end
    # Run cargo by name, not through Sys.which's resolved path: with rustup, cargo is a
    # link to rustup, which picks the tool from the name it was called by.
    home_cargo = joinpath(homedir(), ".cargo", "bin", Sys.iswindows() ? "cargo.exe" : "cargo")
    cargo = Sys.which("cargo") !== nothing ? "cargo" : ispath(home_cargo) ? home_cargo : nothing
    cargo === nothing && error("MMSB: cargo not found. Install Rust (https://rustup.rs), then rerun the build " *
                               "or run `cargo build --release` in $root.")
    @info "MMSB: building libmmsb" root
    cd(root) do
        run(`$cargo build --release`)
    end
end
