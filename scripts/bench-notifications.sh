#!/usr/bin/env bash
# Notifications over HTTP against a release build on loopback: fan-out of one notification to
# 10,000 recipients (in-app + email to the devstack's SMTP sink) — time until every inbox item
# is stored and until every mail is in the sink, and the sustained mail rate —, the inbox read
# p50/p99, and the sink's own limit measured with a bare SMTP client for comparison.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PORT="${BENCH_PORT:-18083}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET_DIR/release/neotenant"
PLATFORM_TOKEN="$(sed -n '/^\[admin\]/,/^\[/s/^token = "\(.*\)"/\1/p' neotenant.toml)"
PLATFORM_TOKEN="${NEOTENANT_ADMIN__TOKEN:-$PLATFORM_TOKEN}"
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release -q -p neotenant
eval "$(scripts/devstack.sh env)"
export NEOTENANT_SERVER__BIND="127.0.0.1:$PORT" NEOTENANT_LOG__LEVEL=warn \
  NEOTENANT_RATE_LIMIT__PER_IP_PER_SEC=1000000 NEOTENANT_RATE_LIMIT__PER_IP_BURST=1000000 \
  NEOTENANT_RATE_LIMIT__PER_USER_PER_SEC=1000000 NEOTENANT_RATE_LIMIT__PER_USER_BURST=1000000 \
  NEOTENANT_RATE_LIMIT__NAMESPACE=neotenant:rl:bench-notifications \
  NEOTENANT_NOTIFICATIONS__SWEEP_INTERVAL_SECS=1 NEOTENANT_NOTIFICATIONS__WORKER_INTERVAL_MS=20 \
  NEOTENANT_NOTIFICATIONS__CONCURRENCY="${BENCH_MAIL_CONCURRENCY:-16}"
"$BIN" migrate >/dev/null
"$BIN" serve &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
python3 scripts/bench-notifications.py "$PORT" "$PLATFORM_TOKEN" "${BENCH_RECIPIENTS:-10000}" \
  "${BENCH_REQUESTS:-3000}" "${NEOTENANT_DATABASE__URL}"
