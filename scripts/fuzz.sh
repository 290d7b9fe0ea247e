#!/usr/bin/env bash
# Runs the libFuzzer targets in rust/fuzz for a bounded time each.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 20 s, every target)
# Uses `cargo fuzz` when installed; otherwise builds the same instrumented binaries with the stable
# toolchain (RUSTC_BOOTSTRAP enables the sanitizer flags cargo-fuzz would pass on nightly).
# Corpora live in target/fuzz-corpus/<target> (not committed); crashes fail the script.
# Inputs that once failed live in rust/fuzz/regressions/<target>/ (committed) and are replayed
# once each before that target is fuzzed; a failure there fails the script too.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-20}
shift || true
fuzz_dir="$root/rust/fuzz"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' "$fuzz_dir/Cargo.toml" | grep -v '^mmsb-fuzz$')
fi
triple=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR="$root/target/fuzz"
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Zsanitizer=address -Cdebug-assertions -Coverflow-checks"
echo "== building fuzz targets (${targets[*]})" >&2
(cd "$fuzz_dir" && RUSTC_BOOTSTRAP=1 RUSTFLAGS="$flags" cargo build --release --target "$triple" --bins)
status=0
for t in "${targets[@]}"; do
  corpus="$root/target/fuzz-corpus/$t"
  mkdir -p "$corpus" "$root/target/fuzz-artifacts/$t"
  log=$(mktemp)
  regressions=("$fuzz_dir/regressions/$t"/*)
  if [ -e "${regressions[0]}" ]; then
    # libFuzzer runs each file given by name once; 2048 MB is its default memory limit.
    if "$CARGO_TARGET_DIR/$triple/release/$t" -rss_limit_mb=2048 -timeout=20 "${regressions[@]}" >"$log" 2>&1; then
      echo "fuzz $t: ${#regressions[@]} regression input(s) pass" >&2
    else
      echo "fuzz $t: a regression input in rust/fuzz/regressions/$t FAILED" >&2
      tail -40 "$log" >&2
      status=1
    fi
  fi
  echo "== fuzzing $t for ${secs}s" >&2
  if "$CARGO_TARGET_DIR/$triple/release/$t" "$corpus" -max_total_time="$secs" -rss_limit_mb=4096 -timeout=20 \
      -artifact_prefix="$root/target/fuzz-artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz $t: ${execs:-?} executions, 0 crashes" >&2
  else
    echo "fuzz $t: FAILED (crash or leak); artifacts in target/fuzz-artifacts/$t" >&2
    tail -40 "$log" >&2
    status=1
  fi
  rm -f "$log"
done
exit $status
