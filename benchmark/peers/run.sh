#!/usr/bin/env bash
# MMSB against redb, fjall, SQLite and LMDB (see README.md). Arguments go to the bench:
#   bash benchmark/peers/run.sh            # full: a few minutes on 2 shared cores
#   bash benchmark/peers/run.sh --quick    # smoke: small sizes, 2 rounds (~1 min with the build done)
#   bash benchmark/peers/run.sh --only write64k --long   # goal 3 past the dirty-page limits (6 GiB x 2)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# --locked: the peers' versions are the ones in this crate's committed Cargo.lock.
cargo build --release --locked --manifest-path "$here/Cargo.toml"
# Scratch directories on the same disk as the repository (not a tmpfs /tmp), removed per run.
export PEERS_TMP="$root/target/peers-tmp"
mkdir -p "$PEERS_TMP"
exec "$here/target/release/mmsb-peers" "$@"
