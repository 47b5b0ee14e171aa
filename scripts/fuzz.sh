#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers of untrusted input (fuzz/, harnesses in fuzzing/):
# each target runs FUZZ_SECS seconds (60) from its committed seeds plus the corpus grown by
# earlier runs, under libFuzzer with FUZZ_SANITIZER (address; `none` runs faster). FUZZ_TARGETS
# picks some (space-separated). cargo fuzz and a nightly toolchain are installed when missing
# (cargo fuzz under .devstack/cargo-fuzz). Report: fuzz-report/summary.md (executions, corpus,
# crashes per target). Exit status 1 when a target crashed: the input is in fuzz/artifacts/;
# minimise it (`cargo +nightly fuzz tmin <target> <file>`), fix, and commit it under
# fuzz/regressions/<target>/ so the test suite replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CARGO_FUZZ_VERSION=0.13.2
SECS="${FUZZ_SECS:-60}"
SANITIZER="${FUZZ_SANITIZER:-address}"
TOOLS="$ROOT/.devstack/cargo-fuzz"
ALL="token json_schema search_query plugin_manifest multipart import netguard"
TARGETS="${FUZZ_TARGETS:-$ALL}"
REPORT="$ROOT/fuzz-report"

say() { printf '[fuzz] %s\n' "$*"; }

if ! rustup toolchain list | grep -q '^nightly'; then
  say "installing the nightly toolchain (libFuzzer's instrumentation needs it)"
  rustup toolchain install nightly --profile minimal
fi
if [ ! -x "$TOOLS/bin/cargo-fuzz" ] || ! "$TOOLS/bin/cargo-fuzz" --version | grep -q "$CARGO_FUZZ_VERSION"; then
  say "installing cargo-fuzz $CARGO_FUZZ_VERSION (crates.io)"
  cargo install --quiet --locked --root "$TOOLS" cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
export PATH="$TOOLS/bin:$PATH"

FLAGS=(--fuzz-dir fuzz --release --debug-assertions --sanitizer "$SANITIZER")
say "building the targets (sanitizer: $SANITIZER)"
# shellcheck disable=SC2086
for t in $TARGETS; do cargo +nightly fuzz build "${FLAGS[@]}" "$t"; done

mkdir -p "$REPORT"
{
  echo "# Fuzzing: $(date -u +%FT%TZ), ${SECS} s per target, sanitizer $SANITIZER"
  echo
  echo "| target | executions | exec/s | corpus | coverage (cov) | crashes |"
  echo "|---|---:|---:|---:|---:|---:|"
} > "$REPORT/summary.md"
failed=0
for t in $TARGETS; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  before=$(find "fuzz/artifacts/$t" -type f | wc -l)
  say "$t: ${SECS} s"
  set +e
  cargo +nightly fuzz run "${FLAGS[@]}" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 >"$REPORT/$t.log" 2>&1
  status=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$REPORT/$t.log" | grep -o '[0-9]*$' | tail -1)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$REPORT/$t.log" | grep -o '[0-9]*$' | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$REPORT/$t.log" | tail -1 | grep -o '[0-9]*')
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  crashes=$(( $(find "fuzz/artifacts/$t" -type f | wc -l) - before ))
  if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then crashes=1; fi
  [ "$crashes" -eq 0 ] || failed=1
  echo "| $t | ${execs:-?} | ${rate:-?} | $corpus | ${cov:-?} | $crashes |" >> "$REPORT/summary.md"
  say "$t: ${execs:-?} executions, $crashes crash(es)"
done
cat "$REPORT/summary.md"
if [ "$failed" -ne 0 ]; then
  say "a target failed: see fuzz-report/<target>.log and fuzz/artifacts/"
  exit 1
fi
