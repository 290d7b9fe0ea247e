#!/usr/bin/env bash
# The long crash loop: kill -9 cycles of writer children against reference models.
#   scripts/crash-loop.sh [CYCLES]     (default 1000; sets MMSB_KILL_CYCLES)
# Runs tests/crash_loop.rs (one writer: sparse/dense deltas, batches, propagation, checkpoints,
# compactions; Always/GroupCommit/None in rotation) and tests/tlog_kill.rs (four group-commit
# writer threads), each for CYCLES cycles, and prints their summaries (cycles, acknowledged
# operations, lost: must be 0).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cycles=${1:-1000}
cd "$root"
MMSB_KILL_CYCLES="$cycles" cargo test -p mmsb --test crash_loop --test tlog_kill -- --nocapture 2>&1 \
  | grep -E "^(crash loop|kill test):|test result|panicked|FAILED"
