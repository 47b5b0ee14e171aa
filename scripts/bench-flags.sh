#!/usr/bin/env bash
# Settings and flags over HTTP against a release build on loopback: the settings read p50/p99
# and OFREP bulk evaluation of 50 flags (SDK key) p50/p99, each after a warm-up.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PORT="${BENCH_PORT:-18082}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET_DIR/release/neotenant"
PLATFORM_TOKEN="$(sed -n '/^\[admin\]/,/^\[/s/^token = "\(.*\)"/\1/p' neotenant.toml)"
PLATFORM_TOKEN="${NEOTENANT_ADMIN__TOKEN:-$PLATFORM_TOKEN}"
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release -q -p neotenant
export NEOTENANT_SERVER__BIND="127.0.0.1:$PORT" NEOTENANT_LOG__LEVEL=warn \
  NEOTENANT_RATE_LIMIT__PER_IP_PER_SEC=1000000 NEOTENANT_RATE_LIMIT__PER_IP_BURST=1000000 \
  NEOTENANT_RATE_LIMIT__PER_USER_PER_SEC=1000000 NEOTENANT_RATE_LIMIT__PER_USER_BURST=1000000 \
  NEOTENANT_RATE_LIMIT__NAMESPACE=neotenant:rl:bench-flags
"$BIN" migrate >/dev/null
"$BIN" serve &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
python3 scripts/bench-flags.py "$PORT" "$PLATFORM_TOKEN" "${BENCH_REQUESTS:-3000}"
