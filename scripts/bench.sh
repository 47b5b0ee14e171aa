#!/usr/bin/env bash
# HTTP load on loopback against tenant-scoped reads, with a release build of the server.
# Prints requests/s and latency p50/p99 per scenario. Bounded: each run lasts BENCH_SECS.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PORT="${BENCH_PORT:-18080}"
SECS="${BENCH_SECS:-15}"
CONNS="${BENCH_CONNECTIONS:-32}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET_DIR/release/neotenant"
PLATFORM_TOKEN="$(sed -n '/^\[admin\]/,/^\[/s/^token = "\(.*\)"/\1/p' neotenant.toml)"
PLATFORM_TOKEN="${NEOTENANT_ADMIN__TOKEN:-$PLATFORM_TOKEN}"

if ! command -v wrk >/dev/null; then
  echo "[bench] installing wrk (Debian)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi

# BENCH_NO_BUILD=1 reuses the release binary already built.
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release -q -p neotenant
export NEOTENANT_SERVER__BIND="127.0.0.1:$PORT" NEOTENANT_LOG__LEVEL=warn NEOTENANT_DATABASE__POOL_MAX_SIZE=32
# One client and one user drive all the load: limits stay on (their Redis check is part of
# every request) but high enough not to refuse it, in a namespace of their own so a run never
# spends the buckets of a dev server sharing the Redis.
export NEOTENANT_RATE_LIMIT__PER_IP_PER_SEC=1000000 NEOTENANT_RATE_LIMIT__PER_IP_BURST=1000000 \
  NEOTENANT_RATE_LIMIT__PER_USER_PER_SEC=1000000 NEOTENANT_RATE_LIMIT__PER_USER_BURST=1000000 \
  NEOTENANT_RATE_LIMIT__NAMESPACE=neotenant:rl:bench
"$BIN" migrate >/dev/null
"$BIN" tenant create bench-us --name "Bench US" --region us --isolation schema >/dev/null 2>&1
TOKEN="$(DEMO_TOKEN_BIN="$BIN" scripts/demo-token.sh bench-us bench)"
AUTH="Authorization: Bearer $TOKEN"
"$BIN" serve &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done

count="$(curl -s "http://127.0.0.1:$PORT/v1/notes?limit=200" -H 'X-Tenant: bench-us' -H "$AUTH" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))')"
if [ "$count" -lt 50 ]; then
  python3 - "$PORT" "Bearer $TOKEN" <<'PY'
import json, sys, urllib.request
items = [{"title": f"bench note {i}", "body": "x" * 200} for i in range(50)]
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/v1/notes/batch", data=json.dumps({"items": items}).encode(),
                             headers={"Content-Type": "application/json", "X-Tenant": "bench-us", "Authorization": sys.argv[2]}, method="POST")
urllib.request.urlopen(req).read()
PY
fi
ID="$(curl -s "http://127.0.0.1:$PORT/v1/notes?limit=1" -H 'X-Tenant: bench-us' -H "$AUTH" | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')"

run() {
  local name="$1" path="$2" script="${3:-}"
  local out
  out="$(wrk -t2 -c"$CONNS" -d"${SECS}s" --latency ${script:+-s "$script"} -H "X-Tenant: ${TENANT:-bench-us}" -H "Authorization: Bearer ${RUN_TOKEN:-$TOKEN}" "http://127.0.0.1:$PORT$path")"
  local rps p50 p99 errors
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p50="$(awk '$1=="50%" {print $2}' <<<"$out")"
  p99="$(awk '$1=="99%" {print $2}' <<<"$out")"
  errors="$(awk '/Non-2xx/ {print $NF}' <<<"$out")"
  printf '%-34s %10s req/s   p50 %-9s p99 %-9s non-2xx %s\n' "$name" "$rps" "$p50" "$p99" "${errors:-0}"
}

echo "wrk: 2 threads, $CONNS connections, ${SECS}s per scenario, release build, 127.0.0.1:$PORT"
run "GET /healthz (no tenant, no DB)" "/healthz"
run "GET /v1/notes/{id} (JWT, one row)" "/v1/notes/$ID"
run "GET /v1/notes?limit=20 (JWT, page)" "/v1/notes?limit=20"

# Resources: the bench user owns the tenant and defines a type; each create is one transaction
# writing the resource, its first version, an audit entry and an outbox event.
USER_ID="$(curl -s "http://127.0.0.1:$PORT/v1/me" -H 'X-Tenant: bench-us' -H "$AUTH" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
curl -sf -o /dev/null -X POST "http://127.0.0.1:$PORT/admin/v1/tenants/bench-us/role-assignments" \
  -H "Authorization: Bearer $PLATFORM_TOKEN" -H 'Content-Type: application/json' \
  -d "{\"role\": \"owner\", \"user_id\": \"$USER_ID\"}"
curl -s -o /dev/null -X POST "http://127.0.0.1:$PORT/v1/resource-types" -H 'X-Tenant: bench-us' -H "$AUTH" \
  -H 'Content-Type: application/json' -d '{"name": "ticket", "title": "Ticket",
    "schema": {"type": "object", "required": ["title"], "properties": {"title": {"type": "string"},
      "status": {"type": "string", "enum": ["open", "closed"]}, "priority": {"type": "integer"}}},
    "searchable": ["title"], "filterable": ["status"], "sortable": ["priority"]}'
CREATE_LUA="$(mktemp --suffix=.lua)"
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true; rm -f "$CREATE_LUA"' EXIT
cat >"$CREATE_LUA" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  local body = '{"data": {"title": "bench ticket ' .. n .. '", "status": "open", "priority": ' .. (n % 5 + 1) .. '}, "tags": ["bench"]}'
  return wrk.format(nil, nil, nil, body)
end
LUA
run "POST /v1/resources/ticket (create)" "/v1/resources/ticket" "$CREATE_LUA"
run "GET /v1/resources/ticket filtered, sorted" "/v1/resources/ticket?filter%5Bstatus%5D=open&sort=-priority&limit=20"

# Plugins: the same create against a type provided by the `ticket` plugin (make plugins) in a
# tenant of its own — schema check, then the plugin's validate, before- and after-change hooks
# (the latter a key-value read and write), each call in a fresh sandboxed instance.
"$BIN" tenant create bench-plug --name "Bench plugins" --region us --isolation schema >/dev/null 2>&1 || true
PTOKEN="$(DEMO_TOKEN_BIN="$BIN" scripts/demo-token.sh bench-plug bench)"
PUSER="$(curl -s "http://127.0.0.1:$PORT/v1/me" -H 'X-Tenant: bench-plug' -H "Authorization: Bearer $PTOKEN" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
curl -sf -o /dev/null -X POST "http://127.0.0.1:$PORT/admin/v1/tenants/bench-plug/role-assignments" \
  -H "Authorization: Bearer $PLATFORM_TOKEN" -H 'Content-Type: application/json' \
  -d "{\"role\": \"owner\", \"user_id\": \"$PUSER\"}" || true
curl -s -o /dev/null -X POST "http://127.0.0.1:$PORT/v1/plugins" -H 'X-Tenant: bench-plug' -H "Authorization: Bearer $PTOKEN" \
  -F component=@plugins/dist/ticket.wasm -F manifest=@plugins/dist/ticket.json
curl -s -o /dev/null -X POST "http://127.0.0.1:$PORT/v1/plugin-installations" -H 'X-Tenant: bench-plug' \
  -H "Authorization: Bearer $PTOKEN" -H 'Content-Type: application/json' \
  -d '{"plugin": "ticket", "grants": {"logging": true, "kv": true, "events": true}}'
curl -s -o /dev/null -X POST "http://127.0.0.1:$PORT/v1/plugins" -H 'X-Tenant: bench-plug' -H "Authorization: Bearer $PTOKEN" \
  -F component=@plugins/dist/hostile.wasm -F manifest=@plugins/dist/hostile.json
curl -s -o /dev/null -X POST "http://127.0.0.1:$PORT/v1/plugin-installations" -H 'X-Tenant: bench-plug' \
  -H "Authorization: Bearer $PTOKEN" -H 'Content-Type: application/json' -d '{"plugin": "hostile"}'
# A run cut short (or a tripped breaker) may have left an installation disabled.
for p in ticket hostile; do
  curl -s -o /dev/null -X POST "http://127.0.0.1:$PORT/v1/plugin-installations/$p/enable" -H 'X-Tenant: bench-plug' -H "Authorization: Bearer $PTOKEN"
done
PLAIN_LUA="$(mktemp --suffix=.lua)"
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true; rm -f "$CREATE_LUA" "$PLAIN_LUA"' EXIT
cat >"$PLAIN_LUA" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"data": {"mode": "ok", "url": "none"}, "tags": ["bench"]}'
LUA
# `hostile` behaving: three plugin calls per create (validate, before, after), no storage.
TENANT=bench-plug RUN_TOKEN="$PTOKEN" run "POST /v1/resources/hostile (3 calls)" "/v1/resources/hostile" "$PLAIN_LUA"
# `ticket`: the same three calls, the after-change hook also reads and writes a counter in
# its key-value store inside the write's transaction (one hot row: creates serialise on it).
TENANT=bench-plug RUN_TOKEN="$PTOKEN" run "POST /v1/resources/ticket (plugin type)" "/v1/resources/ticket" "$CREATE_LUA"
