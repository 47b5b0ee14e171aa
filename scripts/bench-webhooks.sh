#!/usr/bin/env bash
# Webhooks over loopback against a release build: sustained signed deliveries per second to a
# receiver (outbox rows written straight into a tenant's schema, so the measure is routing +
# signing + delivery, not the write API), outbox-to-receipt latency p50/p99, and the same run
# with the server killed (-9) halfway and restarted: every event must arrive (at least once).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PORT="${BENCH_PORT:-18084}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET_DIR/release/neotenant"
PLATFORM_TOKEN="$(sed -n '/^\[admin\]/,/^\[/s/^token = "\(.*\)"/\1/p' neotenant.toml)"
PLATFORM_TOKEN="${NEOTENANT_ADMIN__TOKEN:-$PLATFORM_TOKEN}"
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release -q -p neotenant
eval "$(scripts/devstack.sh env)"
export NEOTENANT_SERVER__BIND="127.0.0.1:$PORT" NEOTENANT_LOG__LEVEL=warn \
  NEOTENANT_RATE_LIMIT__NAMESPACE=neotenant:rl:bench-webhooks \
  NEOTENANT_WEBHOOKS__ALLOW_HOSTS=127.0.0.1 NEOTENANT_WEBHOOKS__WORKER_INTERVAL_MS=20 \
  NEOTENANT_WEBHOOKS__SWEEP_INTERVAL_SECS=1 NEOTENANT_WEBHOOKS__TIMEOUT_MS=5000 \
  NEOTENANT_WEBHOOKS__PER_ENDPOINT_CONCURRENCY="${BENCH_ENDPOINT_CONCURRENCY:-64}"
"$BIN" migrate >/dev/null
PYTHONPATH="$ROOT/.devstack/standardwebhooks/lib" python3 scripts/bench-webhooks.py "$BIN" "$PORT" \
  "$PLATFORM_TOKEN" "${BENCH_EVENTS:-20000}" "${NEOTENANT_DATABASE__URL}"
