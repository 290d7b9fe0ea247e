# Run by `Pkg.build("MMSB")`, or directly: `julia --project=. deps/build.jl`.
# Builds the native library (target/release/libmmsb.so) with cargo.
let root = dirname(@__DIR__)
    if !isempty(get(ENV, "MMSB_LIB", ""))
        @info "MMSB_LIB is set ($(ENV["MMSB_LIB"])); building the bundled Rust library anyway."
    end
    cargo = Sys.which("cargo")
    if cargo === nothing
        home_cargo = joinpath(homedir(), ".cargo", "bin", Sys.iswindows() ? "cargo.exe" : "cargo")
        cargo = isfile(home_cargo) ? home_cargo : nothing
    end
    cargo === nothing && error("MMSB: cargo not found. Install Rust (https://rustup.rs), then rerun the build " *
                               "or run `cargo build --release` in $root.")
    @info "MMSB: building libmmsb" root
    cd(root) do
        run(`$cargo build --release`)
    end
end
