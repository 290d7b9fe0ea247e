#!/usr/bin/env bash
# gpu_check.sh — run the device layer's GPU tests and GPU benchmark from prebuilt binaries.
#
# The GPU machines have the NVIDIA driver (and the CUDA toolkit) but no Rust toolchain and no
# network, so build on a normal x86-64 Linux machine and carry the binaries over:
#
#   # 1. on the build machine, from the repository root (needs cargo; no CUDA needed):
#   benchmark/gpu_check.sh --stage gpu-bundle
#   #    = cargo test --release --no-run --test device_gpu
#   #      cargo build --release --example gpu_bench
#   #      and a copy of both binaries and this script into gpu-bundle/
#
#   # 2. on the GPU machine:
#   gpu-bundle/gpu_check.sh gpu-bundle            # optional: MMSB_BENCH_MIB=256 (page size)
#
# Step 2 runs every `gpu_*` test (single-threaded, output shown), then the benchmark, and prints
# the ratios against baselines measured in the same run (targets: host→device sync ≥ 0.80 of a
# plain pinned memcpy; dense delta kernel ≥ 0.70 of a device-to-device copy). It is sized to
# finish well under 5 minutes on one H100/H200. Exit status: non-zero if a test failed, a test
# was skipped (no driver found), or the benchmark failed; ratios below target are reported, not
# failed on.
set -euo pipefail
exec </dev/null

log() { printf 'gpu_check: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ "${1:-}" == "--stage" ]]; then
  out="${2:?usage: gpu_check.sh --stage OUTDIR}"
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  mkdir -p "$out"
  cd "$repo"
  test_bin="$(cargo test --release --no-run --test device_gpu --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*device_gpu[^"]*"' | tail -1 | sed 's/"executable":"//; s/"$//')"
  [[ -x "$test_bin" ]] || die "could not build the device_gpu test binary"
  cargo build --release --example gpu_bench >&2
  cp "$test_bin" "$out/device_gpu"
  cp target/release/examples/gpu_bench "$out/gpu_bench"
  cp "${BASH_SOURCE[0]}" "$out/gpu_check.sh"
  chmod +x "$out/gpu_check.sh"
  log "staged into $out: device_gpu, gpu_bench, gpu_check.sh (copy that folder to the GPU machine)"
  exit 0
fi

dir="${1:?usage: gpu_check.sh BUNDLE_DIR   (or --stage OUTDIR on the build machine)}"
[[ -x "$dir/device_gpu" ]] || die "$dir/device_gpu missing (build it with --stage)"
[[ -x "$dir/gpu_bench" ]] || die "$dir/gpu_bench missing (build it with --stage)"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2 || log "nvidia-smi not available"

# cudarc (built for CUDA 12.8) looks for libcuda.so / libcuda.so.1 (the driver's) and for
# libnvrtc.so, libnvrtc.so.12, ...; a CUDA 13 toolkit ships libnvrtc.so.13 only, outside the
# loader's default path. Offer the toolkit's NVRTC under a name cudarc tries.
if ! ldconfig -p 2>/dev/null | grep -q 'libnvrtc\.so\(\.12\)\? '; then
  nvrtc="$(ls /usr/local/cuda/lib64/libnvrtc.so* /usr/local/cuda-*/lib64/libnvrtc.so* \
    /usr/local/cuda*/targets/x86_64-linux/lib/libnvrtc.so* 2>/dev/null | grep -v alt | sort -V | tail -1 || true)"
  if [[ -n "$nvrtc" ]]; then
    shim="$(mktemp -d)"
    ln -s "$nvrtc" "$shim/libnvrtc.so"
    export LD_LIBRARY_PATH="$shim:$(dirname "$nvrtc")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    log "using NVRTC $nvrtc"
  else
    log "no NVRTC found: the delta-kernel tests will fail (everything else still runs)"
  fi
fi

status=0
start=$SECONDS
log "running the gpu_* tests"
if ! timeout 180 "$dir/device_gpu" gpu_ --test-threads=1 --nocapture 2>&1 | tee /tmp/mmsb_gpu_tests.log; then
  log "GPU tests FAILED"
  status=1
fi
if grep -q 'SKIPPED: ' /tmp/mmsb_gpu_tests.log; then
  log "GPU tests were SKIPPED: no CUDA driver was found on this machine"
  status=1
fi

log "running the GPU benchmark"
if ! timeout 150 "$dir/gpu_bench" "${MMSB_BENCH_MIB:-256}" 2>&1 | tee /tmp/mmsb_gpu_bench.log; then
  log "benchmark FAILED"
  status=1
fi

echo
echo "=== summary ($((SECONDS - start)) s) ==="
grep -E '^test result' /tmp/mmsb_gpu_tests.log || true
echo "skipped gpu tests: $(grep -c 'SKIPPED: ' /tmp/mmsb_gpu_tests.log || true)"
grep -E '^(RESULT|CHECK|SKIPPED)' /tmp/mmsb_gpu_bench.log | sed 's/^RESULT //' || true
exit $status
