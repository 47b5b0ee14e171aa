#!/usr/bin/env bash
# Invitations: bulk invite of 1,000 addresses (time to the answer and to the last mail in the
# devstack's SMTP sink) and the accept path's p50/p99, against a release build on loopback.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PORT="${BENCH_PORT:-18081}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET_DIR/release/neotenant"
PLATFORM_TOKEN="$(sed -n '/^\[admin\]/,/^\[/s/^token = "\(.*\)"/\1/p' neotenant.toml)"
PLATFORM_TOKEN="${NEOTENANT_ADMIN__TOKEN:-$PLATFORM_TOKEN}"
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release -q -p neotenant
export NEOTENANT_SERVER__BIND="127.0.0.1:$PORT" NEOTENANT_LOG__LEVEL=warn \
  NEOTENANT_INVITATIONS__PER_INVITER_PER_HOUR=100000 NEOTENANT_INVITATIONS__PER_TENANT_PER_HOUR=100000 \
  NEOTENANT_RATE_LIMIT__PER_IP_PER_SEC=1000000 NEOTENANT_RATE_LIMIT__PER_IP_BURST=1000000 \
  NEOTENANT_RATE_LIMIT__NAMESPACE=neotenant:rl:bench-inv
"$BIN" migrate >/dev/null
"$BIN" serve &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
python3 scripts/bench-invitations.py "$PORT" "$PLATFORM_TOKEN" "${BENCH_INVITES:-1000}" "${BENCH_ACCEPTS:-200}"
