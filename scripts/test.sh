#!/usr/bin/env bash
# test.sh — every check of the project, from a fresh clone or a warm checkout.
#
#   bash scripts/test.sh
#
# Steps: cargo fmt --check, cargo clippy -D warnings, cargo build + cargo test --workspace
# (includes the header staleness test and the replication tests on a loopback NATS
# cluster), mmsb verify over the state directories the tests left (MMSB_KEEP_DIRS),
# cargo build --release, then the Julia
# suite (JULIA_NUM_THREADS=2) on every Julia given: the one scripts/ensure-julia.sh
# finds (or installs), plus each path in MMSB_TEST_JULIAS (space-separated, e.g.
# MMSB_TEST_JULIAS="/opt/julia-1.10/bin/julia /opt/julia-1.11/bin/julia"), one step
# per version, and last test/replication.jl on the release library built with the
# cargo feature `replication` against a loopback NATS cluster (scripts/nats-cluster.sh,
# started and stopped around it). Installs what is missing first: rustfmt/clippy through rustup, a C
# linker through apt-get, Julia through scripts/ensure-julia.sh. Every step runs even after an earlier failure
# (except those that need the failed one); a summary ends the output and the
# exit status is non-zero if any step failed.
set -uo pipefail
exec </dev/null # never wait on stdin (CI runs with it closed)

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 1

log() { printf '\n==> %s\n' "$*"; }
warn() { printf 'test.sh: %s\n' "$*" >&2; }

as_root() { # run a command as root (directly, or through passwordless sudo)
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo -n "$@"
  else warn "need root to run: $*"; return 1; fi
}

apt_install() { # install Debian packages, only called for missing tools
  command -v apt-get >/dev/null || { warn "apt-get not available; please install: $*"; return 1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" ||
    { as_root apt-get update -q && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"; }
}

# --- set-up ------------------------------------------------------------------
SETUP_OK=1
[ -d "$HOME/.cargo/bin" ] && case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) PATH="$HOME/.cargo/bin:$PATH" ;; esac
if ! command -v cargo >/dev/null; then
  log "set-up: installing the Rust toolchain (rustup, minimal profile)"
  if command -v curl >/dev/null; then
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy &&
      PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null || { warn "cargo not found; install Rust from https://rustup.rs"; SETUP_OK=0; }
fi
if command -v cargo >/dev/null; then
  for comp in rustfmt clippy; do
    sub=fmt; [ "$comp" = clippy ] && sub=clippy
    if ! cargo "$sub" --version >/dev/null 2>&1; then
      log "set-up: rustup component add $comp"
      rustup component add "$comp" || { warn "could not install $comp"; SETUP_OK=0; }
    fi
  done
fi
if ! command -v cc >/dev/null; then
  log "set-up: installing a C toolchain (the Rust linker needs cc)"
  apt_install gcc libc6-dev || { warn "no C compiler (cc) available"; SETUP_OK=0; }
fi

# The replication tests (rust/mmsb-replica, run by `cargo test --workspace`) start a 3-node
# JetStream cluster with scripts/nats-cluster.sh; without nats-server they skip with a message.
if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
  log "set-up: installing nats-server (replication tests)"
  apt_install nats-server || warn "nats-server not installed: the replication tests will skip"
fi

# Where cargo puts the library (honours CARGO_TARGET_DIR).
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$REPO/$TARGET_DIR" ;; esac

# --- steps -------------------------------------------------------------------
NAMES=()
RESULTS=()
TIMES=()
FAILED=0

OUT_LOG="$(mktemp)"
# The Rust tests copy the state directories they leave behind here (MMSB_KEEP_DIRS) for the
# "mmsb verify" step.
KEEP_DIRS="$(mktemp -d)"
# The loopback NATS cluster of the Julia replication step (scripts/nats-cluster.sh); the trap
# stops it too, should the script be interrupted while it runs.
NATS_STATE="${TMPDIR:-/tmp}/mmsb-test-nats.$$.state"
nats_cluster() { MMSB_NATS_STATE="$NATS_STATE" bash "$REPO/scripts/nats-cluster.sh" "$@"; }
trap 'rm -f "$OUT_LOG"; rm -rf "$KEEP_DIRS"; [ -e "$NATS_STATE" ] && nats_cluster stop >/dev/null 2>&1' EXIT
run_step() { # name, command... (output also kept in $OUT_LOG for the closing count)
  local name="$1"; shift
  log "$name"
  local t0=$SECONDS
  "$@" 2>&1 | tee -a "$OUT_LOG"
  if [ "${PIPESTATUS[0]}" -eq 0 ]; then RESULTS+=("ok"); else RESULTS+=("FAILED"); FAILED=1; fi
  NAMES+=("$name")
  TIMES+=("$((SECONDS - t0))s")
}
skip_step() { # name, reason
  log "$1: skipped ($2)"
  NAMES+=("$1"); RESULTS+=("skipped: $2"); TIMES+=("-"); FAILED=1
}

verify_kept_dirs() { # mmsb verify over the directories the tests kept: exit 0 each, 1 for *-damaged
  local mmsb="$TARGET_DIR/debug/mmsb" d want code n=0 bad=0
  [ -x "$mmsb" ] || { warn "no $mmsb (cargo build --workspace builds it)"; return 1; }
  for d in "$KEEP_DIRS"/*/; do
    d="${d%/}"
    [ -d "$d" ] || continue
    want=0
    case "$d" in *-damaged) want=1 ;; esac
    "$mmsb" verify "$d" >/dev/null 2>&1
    code=$?
    n=$((n + 1))
    if [ "$code" -ne "$want" ]; then
      warn "mmsb verify $d: exit $code, expected $want:"
      "$mmsb" verify "$d"
      bad=1
    fi
  done
  echo "mmsb verify: $n directories left by the tests checked"
  [ "$n" -gt 0 ] || { warn "the tests kept no directory (is MMSB_KEEP_DIRS still wired?)"; return 1; }
  return "$bad"
}

julia_suite() { # $1 = julia executable
  MMSB_LIB="$TARGET_DIR/release/libmmsb.so" JULIA_NUM_THREADS=2 \
    "$1" --startup-file=no --project="$REPO" "$REPO/test/runtests.jl"
}

# test/replication.jl against a real 3-node loopback cluster, with the release library built
# with the cargo feature `replication`: the cluster is started for this run and stopped after
# it, also when the tests fail.
julia_replication() { # $1 = julia executable
  local urls rc
  urls="$(nats_cluster start | tail -n 1)"
  if [ -z "$urls" ]; then
    warn "scripts/nats-cluster.sh start gave no URLs"
    nats_cluster stop
    return 1
  fi
  echo "NATS cluster: $urls"
  MMSB_TEST_NATS_URLS="$urls" MMSB_LIB="$TARGET_DIR/release/libmmsb.so" JULIA_NUM_THREADS=2 MMSB_REPO="$REPO" \
    "$1" --startup-file=no --project="$REPO" -e '
      using Test, MMSB
      @testset "replication (real NATS)" begin
          m = Module(:Test_replication_nats)
          Core.eval(m, :(using Test, Random, MMSB))
          Base.include(m, joinpath(ENV["MMSB_REPO"], "test", "helpers.jl"))
          Base.include(m, joinpath(ENV["MMSB_REPO"], "test", "replication.jl"))
      end' </dev/null
  rc=$?
  nats_cluster stop
  return "$rc"
}

# Every Julia to test with: the default one first, then MMSB_TEST_JULIAS, each
# once. An entry that is not an executable stays in the list and fails its step.
julia_list() {
  local jl seen=" "
  if jl="$(bash "$REPO/scripts/ensure-julia.sh" | tail -n 1)" && [ -x "$jl" ]; then
    printf '%s\n' "$jl"; seen=" $jl "
  else
    printf '%s\n' "(ensure-julia.sh gave no julia)"
  fi
  for jl in ${MMSB_TEST_JULIAS:-}; do
    case "$seen" in *" $jl "*) continue ;; esac
    seen="$seen$jl "
    printf '%s\n' "$jl"
  done
}

julia_steps() { # one "julia tests (VERSION)" step per Julia
  local jl ver jls
  mapfile -t jls < <(julia_list) # read first: the suites must not read the list as stdin
  for jl in "${jls[@]}"; do
    if [ -x "$jl" ] && ver="$("$jl" --startup-file=no -e 'print(VERSION)' </dev/null 2>/dev/null)"; then
      run_step "julia tests ($ver)" julia_suite "$jl"
    else
      skip_step "julia tests" "not a working julia: $jl"
    fi
  done
}

if [ "$SETUP_OK" = 1 ] || command -v cargo >/dev/null; then
  run_step "cargo fmt --check" cargo fmt --all -- --check
  run_step "cargo clippy" cargo clippy --all-targets -- -D warnings
  # The C-ABI integration test links target/debug/libmmsb.so, which `cargo test`
  # alone does not build on a fresh clone: build the workspace first.
  run_step "cargo build (debug)" cargo build --workspace
  run_step "cargo test" env MMSB_KEEP_DIRS="$KEEP_DIRS" cargo test --workspace
  run_step "mmsb verify (test dirs)" verify_kept_dirs
  # The C ABI's replication functions, built in (cargo feature `replication`).
  run_step "cargo test (replication C ABI)" cargo test -p mmsb-ffi --features replication --test replication_abi
  # The device layer must also build without the CUDA feature.
  run_step "cargo check (no cuda)" cargo check -p mmsb -p mmsb-ffi -p mmsb-cdylib --no-default-features
  # A time-boxed fuzz smoke run of every target (longer runs: docs/reliability.md).
  run_step "fuzz smoke" bash "$REPO/scripts/fuzz.sh" "${MMSB_FUZZ_SECONDS:-10}"
  run_step "cargo build --release" cargo build --release
  if [ "${RESULTS[${#RESULTS[@]} - 1]}" = ok ]; then
    julia_steps
  else
    skip_step "julia tests" "release build failed"
  fi
  # Last (it replaces the release library with the replication-enabled one): Julia's
  # replication tests on a real cluster.
  run_step "cargo build --release (replication)" cargo build --release -p mmsb-cdylib --features replication
  jl="$(julia_list | head -n 1)"
  if [ "${RESULTS[${#RESULTS[@]} - 1]}" != ok ]; then
    skip_step "julia replication (NATS)" "replication build failed"
  elif [ -x "$jl" ]; then
    run_step "julia replication (NATS)" julia_replication "$jl"
  else
    skip_step "julia replication (NATS)" "no working julia"
  fi
else
  skip_step "rust steps" "no Rust toolchain"
  skip_step "julia tests" "no Rust toolchain"
fi
[ "$SETUP_OK" = 1 ] || FAILED=1

# --- summary -----------------------------------------------------------------
printf '\n==================== summary ====================\n'
[ "$SETUP_OK" = 1 ] || printf '  %-24s %s\n' "set-up" "FAILED (see messages above)"
for i in "${!NAMES[@]}"; do
  printf '  %-24s %-8s %s\n' "${NAMES[$i]}" "${TIMES[$i]}" "${RESULTS[$i]}"
done
if [ "$FAILED" = 0 ]; then
  printf 'ALL PASSED (%ss)\n' "$SECONDS"
else
  printf 'FAILED (%ss)\n' "$SECONDS"
fi
# One closing line with the test counts: cargo's "test result" lines plus the Julia suite's.
counts=$(sed -n -e 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1 \2/p' \
               -e 's/^julia tests: \([0-9]*\) passed, \([0-9]*\) failed.*/\1 \2/p' "$OUT_LOG" |
         awk '{p += $1; f += $2} END {print p + 0, f + 0}')
read -r npass nfail <<<"$counts"
[ "$FAILED" = 0 ] || [ "$nfail" -gt 0 ] || nfail=1   # a failed step counts even without a test line
printf 'tests: %s passed, %s failed\n' "$npass" "$nfail"
exit "$FAILED"
