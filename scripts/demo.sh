#!/usr/bin/env bash
# demo.sh — build the Rust library (release), get Julia, run examples/demo.jl.
#
#   bash scripts/demo.sh
#
# Needs only a Rust toolchain (cargo) and, on Debian, apt-get for Julia when
# none is installed (scripts/ensure-julia.sh). A second run is fast.
set -euo pipefail
exec </dev/null

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
command -v cargo >/dev/null || {
  echo "demo.sh: cargo not found; install Rust from https://rustup.rs (or run scripts/test.sh, which does)" >&2
  exit 1
}

echo "==> building libmmsb (cargo build --release)" >&2
cargo build --release
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$REPO/$TARGET_DIR" ;; esac

echo "==> getting Julia" >&2
JL="$(bash "$REPO/scripts/ensure-julia.sh" | tail -n 1)"

echo "==> running examples/demo.jl" >&2
MMSB_LIB="$TARGET_DIR/release/libmmsb.so" exec "$JL" --startup-file=no --project="$REPO" "$REPO/examples/demo.jl"
