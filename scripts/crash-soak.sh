#!/usr/bin/env bash
# Long crash soak: kill -9 the server at random moments, restart, verify every
# acknowledged write. Usage: scripts/crash-soak.sh [cycles] (default 200).
# Environment: CAIRN_SOAK_SEED (replay a run), CAIRN_SOAK_SHARDS (default 2).
# The last line starting "crash soak: cycles=" is the figure for docs/RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export CAIRN_SOAK_CYCLES="${1:-200}"
cargo test -q -p cairn-tests --test crash_soak -- --nocapture 2>&1 | tee "${TMPDIR:-/tmp}/cairn-crash-soak.log"
grep '^crash soak: cycles=' "${TMPDIR:-/tmp}/cairn-crash-soak.log" | tail -1
