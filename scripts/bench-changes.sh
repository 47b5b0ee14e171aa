#!/usr/bin/env bash
# The change feed over loopback against a release build: per-page latency p50/p99 of walking a
# tenant of BENCH_RESOURCES resources (default 10,000) 100 at a time, next to the event feed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PORT="${BENCH_PORT:-18085}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET_DIR/release/neotenant"
PLATFORM_TOKEN="$(sed -n '/^\[admin\]/,/^\[/s/^token = "\(.*\)"/\1/p' neotenant.toml)"
PLATFORM_TOKEN="${NEOTENANT_ADMIN__TOKEN:-$PLATFORM_TOKEN}"
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release -q -p neotenant
eval "$(scripts/devstack.sh env)"
export NEOTENANT_SERVER__BIND="127.0.0.1:$PORT" NEOTENANT_LOG__LEVEL=warn \
  NEOTENANT_RATE_LIMIT__NAMESPACE=neotenant:rl:bench-changes \
  NEOTENANT_RATE_LIMIT__PER_USER_PER_SEC=100000 NEOTENANT_RATE_LIMIT__PER_USER_BURST=100000 \
  NEOTENANT_RATE_LIMIT__PER_IP_PER_SEC=100000 NEOTENANT_RATE_LIMIT__PER_IP_BURST=100000
"$BIN" migrate >/dev/null
python3 scripts/bench-changes.py "$BIN" "$PORT" "$PLATFORM_TOKEN" "${BENCH_RESOURCES:-10000}" \
  "${NEOTENANT_DATABASE__URL}"
