#!/usr/bin/env bash
# Schemathesis (property-based API testing, from PyPI, installed by the Makefile under
# .devstack/schemathesis/) against the served /openapi.json over loopback, authenticated: a
# fresh local-mode tenant with an owner, a resource type, resources and an API key, then one run
# as the owner (bearer access token) and one with the API key, both with `X-Tenant`. Checks:
# no 5xx, status codes and response bodies as documented. Report in api-fuzz-report/ (per run
# <run>.txt and JUnit <run>.xml, server.log, summary.json); exits non-zero when schemathesis
# reports a failure or an error. See docs/OPERATIONS.md, "API fuzzing".
#
#   API_FUZZ_MAX_EXAMPLES (5; `make fuzz-api` uses 50)   API_FUZZ_WORKERS (2)
#   API_FUZZ_SEED (random; printed by schemathesis)   API_FUZZ_RUNS (bearer,api-key)
#   API_FUZZ_CHECKS (not_a_server_error,status_code_conformance,response_schema_conformance)
#   API_FUZZ_NO_BUILD=1 reuses the debug binary already built; API_FUZZ_BIN=path runs another
#   one; API_FUZZ_PORT (18087); API_FUZZ_REPORT_DIR (api-fuzz-report); API_FUZZ_KEEP_TENANT=1
#   keeps the tenant afterwards (to reproduce a failure against it)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PORT="${API_FUZZ_PORT:-18087}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BIN="${API_FUZZ_BIN:-$TARGET_DIR/debug/neotenant}"
SCHEMATHESIS_DIR="$ROOT/.devstack/schemathesis"
PLATFORM_TOKEN="$(sed -n '/^\[admin\]/,/^\[/s/^token = "\(.*\)"/\1/p' neotenant.toml)"
PLATFORM_TOKEN="${NEOTENANT_ADMIN__TOKEN:-$PLATFORM_TOKEN}"

case "${API_FUZZ_NO_BUILD:-}" in
  "" | 0) cargo build -q -p neotenant ;;
esac
[ -x "$BIN" ] || { echo "[api-fuzz] no server binary at $BIN (build it, or set API_FUZZ_BIN)" >&2; exit 2; }
# The pinned schemathesis (SCHEMATHESIS_VERSION in the Makefile), installed when missing.
make -s --no-print-directory schemathesis

eval "$(scripts/devstack.sh env)"
# Limits stay on, far above the fuzzers' rate, in a namespace of their own; failed
# authentications (a fuzzed login or refresh token fails by design) do not lock out loopback.
export NEOTENANT_SERVER__BIND="127.0.0.1:$PORT" NEOTENANT_LOG__LEVEL="${API_FUZZ_LOG_LEVEL:-warn}" \
  NEOTENANT_RATE_LIMIT__NAMESPACE=neotenant:rl:api-fuzz \
  NEOTENANT_RATE_LIMIT__PER_USER_PER_SEC=100000 NEOTENANT_RATE_LIMIT__PER_USER_BURST=100000 \
  NEOTENANT_RATE_LIMIT__PER_IP_PER_SEC=100000 NEOTENANT_RATE_LIMIT__PER_IP_BURST=100000 \
  NEOTENANT_RATE_LIMIT__MAX_AUTH_FAILURES=100000 NEOTENANT_RATE_LIMIT__MAX_AUTH_FAILURES_PER_IP=100000
"$BIN" migrate >/dev/null
API_FUZZ_BIN="$BIN" API_FUZZ_PORT="$PORT" API_FUZZ_ADMIN_TOKEN="$PLATFORM_TOKEN" \
  API_FUZZ_SCHEMATHESIS_DIR="$SCHEMATHESIS_DIR" exec python3 scripts/api-fuzz.py
