#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a short time (default 20 s each; CI),
# or longer on demand: scripts/fuzz-short.sh [seconds-per-target] [target...].
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); without it this says
# so and exits 0, so CI does not depend on it. Stable toolchain with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz needs -Z flags). Corpora go to fuzz/corpus/
# (ignored by git); a crash leaves fuzz/artifacts/<target>/ and exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-20}"
shift || true
if ! cargo fuzz --help >/dev/null 2>&1; then
  echo "fuzz-short: cargo-fuzz is not installed; skipping (cargo install cargo-fuzz --locked)"
  exit 0
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  dict=()
  case "$t" in http_*) dict=("-dict=dict/http.dict") ;; esac
  start=$(date +%s)
  echo "== fuzz $t for ${secs}s"
  log="corpus/$t.log"
  status=0
  cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" "${dict[@]}" >"$log" 2>&1 || status=$?
  grep -E '^(#[0-9]+ +DONE|Done|==[0-9]+==|SUMMARY|thread .* panicked)' "$log" || tail -20 "$log"
  echo "== $t: exit $status after $(( $(date +%s) - start ))s"
  [ "$status" -eq 0 ] || exit "$status"
done
