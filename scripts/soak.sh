#!/usr/bin/env bash
# Bounded soak over loopback: mixed tenant-scoped load (reads, writes, searches, permission
# checks, API-key requests, webhook deliveries) at a steady rate for SOAK_SECS, the server's
# memory, descriptors and connections sampled every 10 s, then every write accounted for in
# PostgreSQL (row, audit entry, outbox event) and at the webhook receiver. With SOAK_FAULTS,
# dependencies fail one after another during the run (see docs/OPERATIONS.md, "Soak and
# faults"). Report in soak-report/ (report.json, report.md, soak.svg); exits non-zero when a
# pass criterion fails, naming it.
#
#   SOAK_SECS (600)   SOAK_RATE (200 req/s in all)   SOAK_WORKERS (8)   SOAK_TENANTS (4)
#   SOAK_FAULTS (none; any of redis,keycloak,postgres,receiver,kill, run in that order)
#   SOAK_NO_BUILD=1 reuses the binary already built; SOAK_BIN=path runs another one (a debug
#   build, say); SOAK_PORT (18086); SOAK_REPORT_DIR (soak-report)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PORT="${SOAK_PORT:-18086}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BIN="${SOAK_BIN:-$TARGET_DIR/release/neotenant}"
PLATFORM_TOKEN="$(sed -n '/^\[admin\]/,/^\[/s/^token = "\(.*\)"/\1/p' neotenant.toml)"
PLATFORM_TOKEN="${NEOTENANT_ADMIN__TOKEN:-$PLATFORM_TOKEN}"

case "${SOAK_NO_BUILD:-}" in
  "" | 0) cargo build --release -q -p neotenant ;;
esac
[ -x "$BIN" ] || { echo "[soak] no server binary at $BIN (build it, or set SOAK_BIN)" >&2; exit 2; }
command -v psql >/dev/null || { echo "[soak] psql is needed to account for writes (make up installs it)" >&2; exit 2; }

eval "$(scripts/devstack.sh env)"
# Limits stay on (their Redis check is part of every request) but far above the soak's rate, in
# a namespace of their own: a 429 during the soak is an error. Webhooks may reach the
# driver's receiver on loopback, and failed deliveries are retried within seconds rather than
# minutes so that a receiver outage drains within the run.
export NEOTENANT_SERVER__BIND="127.0.0.1:$PORT" NEOTENANT_LOG__LEVEL="${SOAK_LOG_LEVEL:-warn}" \
  NEOTENANT_RATE_LIMIT__NAMESPACE=neotenant:rl:soak \
  NEOTENANT_RATE_LIMIT__PER_USER_PER_SEC=100000 NEOTENANT_RATE_LIMIT__PER_USER_BURST=100000 \
  NEOTENANT_RATE_LIMIT__PER_IP_PER_SEC=100000 NEOTENANT_RATE_LIMIT__PER_IP_BURST=100000 \
  NEOTENANT_WEBHOOKS__ALLOW_HOSTS=127.0.0.1 NEOTENANT_WEBHOOKS__SWEEP_INTERVAL_SECS=1 \
  NEOTENANT_WEBHOOKS__TIMEOUT_MS=5000 \
  NEOTENANT_WEBHOOKS__RETRY_SCHEDULE="${SOAK_WEBHOOK_RETRY_SCHEDULE:-0,1,2,4,5,5,5,5,10,10,10,10,10,15,15,15,15,15,20,20,20,20,30,30,30,30,30}"
"$BIN" migrate >/dev/null
SOAK_BIN="$BIN" SOAK_PORT="$PORT" SOAK_ADMIN_TOKEN="$PLATFORM_TOKEN" exec python3 scripts/soak.py
