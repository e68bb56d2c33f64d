#!/usr/bin/env bash
# Touches 1,000,000 distinct counter objects (one increment each, 64 pipelined
# connections) and records the server's resident set against the configured
# per-shard object budget.
# Usage: scripts/memory-1m.sh [--release] [objects] [budget-bytes-per-shard]
# (defaults 1000000 and 134217728, 128 MiB: the index of 1M counters takes
# about 73 MiB per shard; see docs/OPERATIONS.md, "Sizing the memory budget").
# `--release` measures a release build of `cairn` (the default is the debug
# build the tests use). The line starting "memory:" is the figure for
# docs/RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--release" ]; then
    export CAIRN_TEST_RELEASE=1
    shift
fi
export CAIRN_MEMORY_OBJECTS="${1:-1000000}"
export CAIRN_MEMORY_BUDGET="${2:-134217728}"
cargo test -q -p cairn-tests --test memory -- --ignored --nocapture 2>&1 | tee "${TMPDIR:-/tmp}/cairn-memory-1m.log"
grep '^memory:' "${TMPDIR:-/tmp}/cairn-memory-1m.log" | tail -1
