#!/usr/bin/env bash
# NeoTenantApi (release build) side by side with two peers, on this machine, over loopback:
#   S1  authenticated read of one record   NeoTenantApi GET /v1/resources/ticket/{id}
#                                           vs PocketBase GET /api/collections/tickets/records/{id}
#   S2  authenticated list page of 20       NeoTenantApi GET /v1/resources/ticket?limit=20
#                                           vs PocketBase GET /api/collections/tickets/records?perPage=20
#                                           (both over 1,000 records)
#   S3  permission check                    NeoTenantApi POST /v1/permissions/check
#                                           vs SpiceDB POST /v1/permissions/check
#   S4  create one record                   NeoTenantApi POST /v1/resources/ticket
#                                           vs PocketBase POST /api/collections/tickets/records
# Each scenario: a short unrecorded warm-up of each side, then A, B, A, B, A, B (ROUNDS=3), wrk
# with the same settings for both sides. Prints every raw wrk report, then a table of medians.
#
# `make bench-peers` (scripts/bench-peers.sh) installs and builds what this needs and starts
# the local services first: NT_BIN (NeoTenantApi release), PB_BIN (PocketBase examples/base),
# SPICEDB_BIN, and PostgreSQL :54317, Redis :63790, Keycloak :18180. Every server this
# script starts is stopped by its PID on exit. Traffic goes to 127.0.0.1 only.
set -euo pipefail

NT_ROOT="${NT_ROOT:-$PWD}"
NT_BIN="${NT_BIN:-${CARGO_TARGET_DIR:-$NT_ROOT/target}/release/neotenant}"
GOBIN_DIR="$(go env GOBIN 2>/dev/null || true)"; GOBIN_DIR="${GOBIN_DIR:-$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin}"
PB_BIN="${PB_BIN:-$GOBIN_DIR/base}"
SPICEDB_BIN="${SPICEDB_BIN:-$GOBIN_DIR/spicedb}"
PB_DIR="${PB_DIR:-/tmp/pb_data}"
SECS="${PEERS_SECS:-10}"
WARM_SECS="${PEERS_WARM_SECS:-3}"
ROUNDS="${PEERS_ROUNDS:-3}"
THREADS=2
CONNS=32
NT_PORT=18080
PB_PORT=18090
SDB_HTTP=18443
SDB_GRPC=18051
SDB_METRICS=19090
SDB_KEY="peers-bench-preshared-key"
TENANT=bench-us
N_RECORDS=1000

for b in "$NT_BIN" "$PB_BIN" "$SPICEDB_BIN"; do
  [ -x "$b" ] || { echo "missing binary: $b (make bench-peers builds it)" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
for p in $NT_PORT $PB_PORT $SDB_HTTP $SDB_GRPC $SDB_METRICS; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "port $p is already in use" >&2; exit 1; fi
done

WORK="$(mktemp -d /tmp/peers-bench.XXXXXX)"
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
NT_PID="" PB_PID="" SDB_PID=""
cleanup() {
  for pid in $NT_PID $PB_PID $SDB_PID; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in $NT_PID $PB_PID $SDB_PID; do
    wait "$pid" 2>/dev/null || true
  done
  [ -z "${RL_NS:-}" ] || rl_reset 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

log() { echo "[peers] $*" >&2; }
wait_http() { # url [expected-code-regex]
  for _ in $(seq 1 300); do
    code="$(curl -s -o /dev/null -w '%{http_code}' -m 2 "$1" || true)"
    [[ "$code" =~ ${2:-^2} ]] && return 0
    sleep 0.2
  done
  echo "timed out waiting for $1" >&2; return 1
}
jwt_alg() { python3 -c 'import base64,json,sys; h=sys.argv[1].split(".")[0]; print(json.loads(base64.urlsafe_b64decode(h+"="*(-len(h)%4)))["alg"])' "$1"; }

echo "== peers benchmark $(date -u +%FT%TZ) on $(nproc) cores, $(uname -r)"
echo "wrk -t$THREADS -c$CONNS -d${SECS}s --latency, $ROUNDS rounds alternating A,B per scenario, ${WARM_SECS}s unrecorded warm-up per side"
echo "NeoTenantApi: $NT_BIN ($(stat -c '%y' "$NT_BIN" | cut -d. -f1)), git $(git -C "$NT_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
modver() { go version -m "$1" 2>/dev/null | awk -v m="$2" '$1=="mod" && $2==m {print $3}'; }
echo "PocketBase:   $PB_BIN ($(modver "$PB_BIN" github.com/pocketbase/pocketbase), examples/base)"
echo "SpiceDB:      $SPICEDB_BIN ($(modver "$SPICEDB_BIN" github.com/authzed/spicedb)), memory datastore"
echo "wrk:          $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)"
busy() { # what else is using the 2 cores: load average, then the top 5 processes over one second
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg); busiest processes over 1 s:"
  top -b -n 2 -d 1 -w 120 | awk '/^top -/ {n++} n == 2' | sed -n '7,12p' | cut -c1-120
}
busy

# ---------------------------------------------------------------- NeoTenantApi (as scripts/bench.sh)
cd "$NT_ROOT"
PLATFORM_TOKEN="$(sed -n '/^\[admin\]/,/^\[/s/^token = "\(.*\)"/\1/p' neotenant.toml)"
PLATFORM_TOKEN="${NEOTENANT_ADMIN__TOKEN:-$PLATFORM_TOKEN}"
export NEOTENANT_SERVER__BIND="127.0.0.1:$NT_PORT" NEOTENANT_LOG__LEVEL=warn NEOTENANT_DATABASE__POOL_MAX_SIZE=32
export NEOTENANT_RATE_LIMIT__PER_IP_PER_SEC=1000000 NEOTENANT_RATE_LIMIT__PER_IP_BURST=1000000 \
  NEOTENANT_RATE_LIMIT__PER_USER_PER_SEC=1000000 NEOTENANT_RATE_LIMIT__PER_USER_BURST=1000000
# The limiter stays on (one Redis EVAL per request) in a namespace of its own, emptied before
# each run, so a run never throttles a dev server sharing the Redis (and starts with full buckets).
RL_NS="neotenant:rl:peers-bench"
export NEOTENANT_RATE_LIMIT__NAMESPACE="$RL_NS"
REDIS_URL="${NEOTENANT_REDIS__URL:-$(grep -A3 '^\[redis\]' neotenant.toml | grep -E '^url' | cut -d'"' -f2)}"
rl_reset() { redis-cli -u "$REDIS_URL" --scan --pattern "$RL_NS:*" | xargs -r redis-cli -u "$REDIS_URL" del >/dev/null; }
"$NT_BIN" migrate >/dev/null
"$NT_BIN" tenant create "$TENANT" --name "Bench US" --region us --isolation schema >/dev/null 2>&1 || true
nt_token() { DEMO_TOKEN_BIN="$NT_BIN" scripts/demo-token.sh "$TENANT" "$1"; }
TOKEN="$(nt_token bench)"
"$NT_BIN" serve >"$WORK/neotenant.log" 2>&1 &
NT_PID=$!
wait_http "http://127.0.0.1:$NT_PORT/healthz"
NT="http://127.0.0.1:$NT_PORT"
USER_ID="$(curl -sf "$NT/v1/me" -H "X-Tenant: $TENANT" -H "Authorization: Bearer $TOKEN" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
curl -sf -o /dev/null -X POST "$NT/admin/v1/tenants/$TENANT/role-assignments" \
  -H "Authorization: Bearer $PLATFORM_TOKEN" -H 'Content-Type: application/json' \
  -d "{\"role\": \"owner\", \"user_id\": \"$USER_ID\"}" || true
curl -s -o /dev/null -X POST "$NT/v1/resource-types" -H "X-Tenant: $TENANT" -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' -d '{"name": "ticket", "title": "Ticket",
    "schema": {"type": "object", "required": ["title"], "properties": {"title": {"type": "string"},
      "status": {"type": "string", "enum": ["open", "closed"]}, "priority": {"type": "integer"}}},
    "searchable": ["title"], "filterable": ["status"], "sortable": ["priority"]}'
# Second user for S3: holds resources.delete.tenant (which the default `member` role lacks) only
# through a team role two levels up, via a role whose permission sits two parent roles up.
ALICE_TOKEN="$(nt_token alice)"

NT_SETUP="$(python3 - "$NT" "$TENANT" "$TOKEN" "$ALICE_TOKEN" "$N_RECORDS" <<'PY'
import json, sys, urllib.error, urllib.request
base, tenant, token, alice_token, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])

def call(method, path, body=None, tok=token, ok=(200, 201, 204)):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers={
        "X-Tenant": tenant, "Authorization": "Bearer " + tok, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as r:
            raw = r.read()
            return r.status, raw
    except urllib.error.HTTPError as e:
        raw = e.read()
        if e.code not in ok and e.code != 409:
            raise SystemExit(f"{method} {path} -> {e.code} {raw[:300]!r}")
        return e.code, raw

# Tickets: top up to n live ones (count them through the export).
_, raw = call("GET", "/v1/resources/ticket/export?format=jsonl")
have = sum(1 for line in raw.splitlines() if line.strip())
if have < n:
    ops = [{"op": "create", "data": {"title": f"bench ticket {i}", "status": "open", "priority": i % 5 + 1},
            "tags": ["bench"]} for i in range(have, n)]
    for i in range(0, len(ops), 500):
        call("POST", "/v1/resources/ticket/bulk", {"atomic": True, "operations": ops[i:i + 500]})
    have = n
_, raw = call("GET", "/v1/resources/ticket?limit=1")
first_id = json.loads(raw)["items"][0]["id"]

# Roles: peers-reader (the permission) <- peers-support <- peers-lead.
call("POST", "/v1/roles", {"key": "peers-reader", "permissions": ["resources.delete.tenant"]})
call("POST", "/v1/roles", {"key": "peers-support", "parents": ["peers-reader"]})
call("POST", "/v1/roles", {"key": "peers-lead", "parents": ["peers-support"]})

# Teams: peers-root > peers-mid > peers-leaf; peers-lead given to peers-root; alice in peers-leaf.
def team(name, parent):
    status, raw = call("POST", "/v1/teams", {"name": name, "parent_id": parent})
    if status in (200, 201):
        return json.loads(raw)["id"]
    _, raw = call("GET", "/v1/teams?limit=100&parent=" + (parent or "root"))
    return [t["id"] for t in json.loads(raw)["items"] if t["name"] == name][0]
root = team("peers-root", None)
mid = team("peers-mid", root)
leaf = team("peers-leaf", mid)
call("POST", f"/v1/teams/{root}/roles", {"role": "peers-lead"})
_, raw = call("GET", "/v1/me", tok=alice_token)
alice = json.loads(raw)["id"]
call("POST", f"/v1/teams/{leaf}/members", {"user_ids": [alice]})
if have > n:
    print(f"WARNING: tenant {tenant} holds {have} live tickets, more than {n}", file=sys.stderr)
print(first_id, have, alice)
PY
)"
read -r NT_ID NT_COUNT ALICE_ID <<<"$NT_SETUP"
log "NeoTenantApi: $NT_COUNT tickets, first $NT_ID, alice $ALICE_ID"

# ---------------------------------------------------------------- PocketBase
PB_EMAIL="admin@peers.test" PB_PASS="peers-Admin-Password-1"
PB_USER="bench@peers.test" PB_USER_PASS="bench-Password-1"
rm -rf "$PB_DIR"
# No automigrate: it would write the collection created below as a JS migration next to PB_DIR.
PB_FLAGS=(--dir "$PB_DIR" --automigrate=false --migrationsDir "$WORK/pb_migrations" --hooksDir "$WORK/pb_hooks")
"$PB_BIN" superuser upsert "$PB_EMAIL" "$PB_PASS" "${PB_FLAGS[@]}" >/dev/null
"$PB_BIN" serve --http "127.0.0.1:$PB_PORT" "${PB_FLAGS[@]}" >"$WORK/pocketbase.log" 2>&1 &
PB_PID=$!
PB="http://127.0.0.1:$PB_PORT"
wait_http "$PB/api/health"
PB_SETUP="$(python3 - "$PB" "$PB_EMAIL" "$PB_PASS" "$PB_USER" "$PB_USER_PASS" "$N_RECORDS" <<'PY'
import http.client, json, sys, urllib.parse
base, email, pw, user, user_pw, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
u = urllib.parse.urlparse(base)
conn = http.client.HTTPConnection(u.hostname, u.port)
def call(method, path, body=None, tok=None):
    headers = {"Content-Type": "application/json"}
    if tok:
        headers["Authorization"] = tok
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    r = conn.getresponse(); raw = r.read()
    if r.status >= 300:
        raise SystemExit(f"{method} {path} -> {r.status} {raw[:300]!r}")
    return json.loads(raw) if raw else None
su = call("POST", "/api/collections/_superusers/auth-with-password", {"identity": email, "password": pw})["token"]
# Request logs off (NeoTenantApi runs at log level warn); PocketBase's rate limiter is off by default.
call("PATCH", "/api/settings", {"logs": {"maxDays": 0}}, su)
auth = "@request.auth.id != ''"
call("POST", "/api/collections", {
    "name": "tickets", "type": "base", "listRule": auth, "viewRule": auth, "createRule": auth,
    "fields": [
        {"name": "title", "type": "text", "required": True},
        {"name": "status", "type": "select", "values": ["open", "closed"], "maxSelect": 1},
        {"name": "priority", "type": "number", "onlyInt": True},
        {"name": "created", "type": "autodate", "onCreate": True},
        {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True},
    ]}, su)
call("POST", "/api/collections/users/records",
     {"email": user, "password": user_pw, "passwordConfirm": user_pw, "verified": True}, su)
first = None
for i in range(n):
    rec = call("POST", "/api/collections/tickets/records",
               {"title": f"bench ticket {i}", "status": "open", "priority": i % 5 + 1}, su)
    first = first or rec["id"]
print(first)
PY
)"
PB_ID="$PB_SETUP"
pb_token() {
  curl -sf -X POST "$PB/api/collections/users/auth-with-password" -H 'Content-Type: application/json' \
    -d "{\"identity\": \"$PB_USER\", \"password\": \"$PB_USER_PASS\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}
log "PocketBase: $N_RECORDS records, first $PB_ID"

# ---------------------------------------------------------------- SpiceDB
"$SPICEDB_BIN" serve --grpc-preshared-key "$SDB_KEY" --datastore-engine memory \
  --http-enabled --http-addr "127.0.0.1:$SDB_HTTP" --grpc-addr "127.0.0.1:$SDB_GRPC" \
  --metrics-addr "127.0.0.1:$SDB_METRICS" --telemetry-endpoint "" --skip-release-check --log-level warn \
  >"$WORK/spicedb.log" 2>&1 &
SDB_PID=$!
SDB="http://127.0.0.1:$SDB_HTTP"
sdb() { curl -sf -X POST "$SDB$1" -H "Authorization: Bearer $SDB_KEY" -H 'Content-Type: application/json' -d "$2"; }
wait_http "$SDB/healthz"
# The same shape as the NeoTenantApi setup: a role inherits its parent roles' permissions; a role
# given to a team reaches the members of that team and of every team below it.
SDB_SCHEMA='definition user {}

definition role {
    relation parent: role
    relation grants_resources_delete: user:*
    permission resources_delete = grants_resources_delete + parent->resources_delete
}

definition team {
    relation parent: team
    relation member: user
    relation role: role
    permission inherited_resources_delete = role->resources_delete + parent->inherited_resources_delete
    permission resources_delete = member & inherited_resources_delete
}

definition tenant {
    relation team: team
    permission resources_delete = team->resources_delete
}'
sdb /v1/schema/write "$(python3 -c 'import json,sys; print(json.dumps({"schema": sys.argv[1]}))' "$SDB_SCHEMA")" >/dev/null
sdb /v1/relationships/write "$(python3 - <<'PY'
import json
def rel(rt, rid, relation, st, sid):
    return {"operation": "OPERATION_TOUCH", "relationship": {
        "resource": {"objectType": rt, "objectId": rid}, "relation": relation,
        "subject": {"object": {"objectType": st, "objectId": sid}}}}
print(json.dumps({"updates": [
    rel("role", "peers_reader", "grants_resources_delete", "user", "*"),
    rel("role", "peers_support", "parent", "role", "peers_reader"),
    rel("role", "peers_lead", "parent", "role", "peers_support"),
    rel("team", "peers_root", "role", "role", "peers_lead"),
    rel("team", "peers_mid", "parent", "team", "peers_root"),
    rel("team", "peers_leaf", "parent", "team", "peers_mid"),
    rel("team", "peers_leaf", "member", "user", "alice"),
    rel("team", "peers_leaf", "member", "user", "carol"),
    rel("team", "peers_mid", "member", "user", "dave"),
    rel("tenant", "bench_us", "team", "team", "peers_root"),
    rel("tenant", "bench_us", "team", "team", "peers_mid"),
    rel("tenant", "bench_us", "team", "team", "peers_leaf"),
]}))
PY
)" >/dev/null
sdb_check_body() {
  printf '{"consistency": {"minimizeLatency": true}, "resource": {"objectType": "tenant", "objectId": "bench_us"}, "permission": "resources_delete", "subject": {"object": {"objectType": "user", "objectId": "%s"}}}' "$1"
}
# Checks with minimizeLatency read at a revision quantized to --datastore-revision-quantization-interval
# (5 s by default): wait that out so the checks below see the relationships just written.
sleep 6
log "SpiceDB: schema and relationships written"

# ---------------------------------------------------------------- correctness of what is measured
NT_CHECK_BODY='{"checks": [{"permission": "resources.delete.tenant"}]}'
BOB_TOKEN="$(nt_token bob)"
python3 - <<PY
import json, subprocess
def curl(*a):
    return subprocess.run(["curl", "-s", *a], capture_output=True, text=True, check=True).stdout
nt = json.loads(curl("-X", "POST", "$NT/v1/permissions/check", "-H", "X-Tenant: $TENANT", "-H", "Authorization: Bearer $ALICE_TOKEN",
                     "-H", "Content-Type: application/json", "-d", '$NT_CHECK_BODY'))
assert nt["results"][0]["allowed"] is True, nt
sd = json.loads(curl("-X", "POST", "$SDB/v1/permissions/check", "-H", "Authorization: Bearer $SDB_KEY",
                     "-H", "Content-Type: application/json", "-d", '''$(sdb_check_body alice)'''))
assert sd["permissionship"] == "PERMISSIONSHIP_HAS_PERMISSION", sd
sn = json.loads(curl("-X", "POST", "$SDB/v1/permissions/check", "-H", "Authorization: Bearer $SDB_KEY",
                     "-H", "Content-Type: application/json", "-d", '''$(sdb_check_body bob)'''))
assert sn["permissionship"] == "PERMISSIONSHIP_NO_PERMISSION", sn
nb = json.loads(curl("-X", "POST", "$NT/v1/permissions/check", "-H", "X-Tenant: $TENANT", "-H", "Authorization: Bearer $BOB_TOKEN",
                     "-H", "Content-Type: application/json", "-d", '$NT_CHECK_BODY'))
assert nb["results"][0]["allowed"] is False, nb
print("checks: NeoTenantApi alice allowed=true, bob (no team) allowed=false; SpiceDB alice HAS_PERMISSION, bob NO_PERMISSION")
PY
PBT="$(pb_token)"
for u in "/api/collections/tickets/records/$PB_ID" "/api/collections/tickets/records?perPage=20"; do
  anon="$(curl -s -w ' %{http_code}' "$PB$u" | python3 -c 'import json,sys; b, c = sys.stdin.read().rsplit(" ", 1); print(c + (" (" + str(len(json.loads(b).get("items", []))) + " items)" if c == "200" else ""))')"
  authd="$(curl -s -o /dev/null -w '%{http_code} %{size_download}' -H "Authorization: $PBT" "$PB$u")"
  echo "PocketBase $u: anonymous $anon, with user token $authd bytes"
done
for u in "/v1/resources/ticket/$NT_ID" "/v1/resources/ticket?limit=20"; do
  anon="$(curl -s -o /dev/null -w '%{http_code}' -H "X-Tenant: $TENANT" "$NT$u")"
  authd="$(curl -s -o /dev/null -w '%{http_code} %{size_download}' -H "X-Tenant: $TENANT" -H "Authorization: Bearer $TOKEN" "$NT$u")"
  echo "NeoTenantApi $u: anonymous $anon, with user token $authd bytes"
done
echo "token algorithms: NeoTenantApi (Keycloak) $(jwt_alg "$TOKEN"), PocketBase $(jwt_alg "$PBT")"
echo "PocketBase list items: $(curl -s -H "Authorization: $PBT" "$PB/api/collections/tickets/records?perPage=20" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d["items"]), "of totalItems", d["totalItems"])')"
echo "NeoTenantApi list items: $(curl -s -H "X-Tenant: $TENANT" -H "Authorization: Bearer $TOKEN" "$NT/v1/resources/ticket?limit=20" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d["items"]))') (tenant holds $NT_COUNT live tickets)"

# ---------------------------------------------------------------- load
NT_LUA="$WORK/nt-check.lua"
cat >"$NT_LUA" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$NT_CHECK_BODY'
LUA
SDB_LUA="$WORK/sdb-check.lua"
cat >"$SDB_LUA" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$(sdb_check_body alice)'
LUA

# CPU accounting per run, in clock ticks: the server's PID; PostgreSQL + Redis (NeoTenantApi's
# services, shared with every other client of theirs), children included so that backends that
# exit mid-run stay counted (in the postmaster's cutime); the whole machine from /proc/stat.
ticks() { local t=0 pid v; for pid in "$@"; do v="$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)"; t=$((t + v)); done; echo "$t"; }
dep_ticks() { local t=0 pid v; for pid in $(pgrep -x "$1"); do v="$(awk '{print $14 + $15 + $16 + $17}' "/proc/$pid/stat" 2>/dev/null || echo 0)"; t=$((t + v)); done; echo "$t"; }
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat; } # busy idle
HZ="$(getconf CLK_TCK)"

# run SCENARIO SIDE ROUND SECS URL [wrk args...]: one wrk run (the server's PID in CPU_PID); raw
# report to stdout, a row to RESULTS.
run() {
  local scenario="$1" side="$2" round="$3" secs="$4" url="$5"; shift 5
  local out s0 d0 r0 s1 d1 r1 m0 m1 srv dep red wrk_ms busy idle other
  s0="$(ticks "$CPU_PID")"; d0="$(dep_ticks postgres)"; r0="$(dep_ticks redis-server)"; m0="$(machine_ticks)"
  out="$( { TIMEFORMAT='%3U %3S'; time wrk -t$THREADS -c$CONNS -d"${secs}s" --latency "$@" "$url" 2>&1; } 2>"$WORK/wrk-time")"
  s1="$(ticks "$CPU_PID")"; d1="$(dep_ticks postgres)"; r1="$(dep_ticks redis-server)"; m1="$(machine_ticks)"
  [ "$round" = warm ] && return 0
  srv=$(( (s1 - s0) * 1000 / HZ )); dep=$(( (d1 - d0) * 1000 / HZ )); red=$(( (r1 - r0) * 1000 / HZ ))
  wrk_ms="$(awk '{printf "%d", ($1 + $2) * 1000}' "$WORK/wrk-time")"
  busy=$(( (${m1% *} - ${m0% *}) * 1000 / HZ )); idle=$(( (${m1#* } - ${m0#* }) * 1000 / HZ ))
  other=$(( busy - srv - dep - red - wrk_ms ))
  echo "---- $scenario $side round $round: $url"
  echo "$out"
  echo "  CPU during the run, ms ($(nproc) cores): server $srv, PostgreSQL $dep, Redis $red (these two: all their clients), wrk $wrk_ms, everything else $other, idle $idle"
  printf '%s\n' "$out" >"$WORK/last-wrk.txt"
  python3 - "$WORK/last-wrk.txt" "$scenario" "$side" "$round" "$srv" "$dep" "$red" "$other" "$((busy + idle))" >>"$RESULTS" <<'PY'
import re, sys
out = open(sys.argv.pop(1)).read()
other_pct = f"{100 * int(sys.argv.pop(-2)) / max(1, int(sys.argv.pop())):.1f}"
red_ms = sys.argv.pop()
dep_ms = sys.argv.pop()
srv_ms = sys.argv.pop()
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", v)
    return float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[m.group(2)]
rps = re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)
total = re.search(r"(\d+) requests in", out).group(1)
p50 = ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
sock = re.search(r"Socket errors:.*", out)
print("\t".join([*sys.argv[1:4], rps, f"{p50:.3f}", f"{p99:.3f}", non2xx.group(1) if non2xx else "0",
                 total, srv_ms, dep_ms, red_ms, other_pct, sock.group(0).replace("\t", " ") if sock else ""]))
PY
}
nt_run() { # scenario round secs path [wrk args...] — fresh Keycloak token each run
  local scenario="$1" round="$2" secs="$3" path="$4" who="${NT_WHO:-bench}"; shift 4
  local tok; tok="$(nt_token "$who")"
  rl_reset
  CPU_PID=$NT_PID run "$scenario" "${NT_SIDE:-NeoTenantApi}" "$round" "$secs" "$NT$path" -H "X-Tenant: $TENANT" -H "Authorization: Bearer $tok" "$@"
}
pb_run() {
  local scenario="$1" round="$2" secs="$3" path="$4"; shift 4
  local tok; tok="$(pb_token)"
  CPU_PID=$PB_PID run "$scenario" "${PB_SIDE:-PocketBase}" "$round" "$secs" "$PB$path" -H "Authorization: $tok" "$@"
}
sdb_run() {
  CPU_PID=$SDB_PID run "$1" SpiceDB "$2" "$3" "$SDB/v1/permissions/check" -H "Authorization: Bearer $SDB_KEY" -s "$SDB_LUA"
}

echo
echo "== raw wrk reports"
S1_NT="/v1/resources/ticket/$NT_ID" S1_PB="/api/collections/tickets/records/$PB_ID"
nt_run S1 warm "$WARM_SECS" "$S1_NT"; pb_run S1 warm "$WARM_SECS" "$S1_PB"
for r in $(seq 1 "$ROUNDS"); do
  nt_run S1 "$r" "$SECS" "$S1_NT"
  pb_run S1 "$r" "$SECS" "$S1_PB"
done
S2_NT="/v1/resources/ticket?limit=20" S2_PB="/api/collections/tickets/records?perPage=20"
S2_PB_NOCOUNT="/api/collections/tickets/records?perPage=20&skipTotal=1"
nt_run S2 warm "$WARM_SECS" "$S2_NT"; pb_run S2 warm "$WARM_SECS" "$S2_PB"
for r in $(seq 1 "$ROUNDS"); do
  nt_run S2 "$r" "$SECS" "$S2_NT"
  pb_run S2 "$r" "$SECS" "$S2_PB"
  PB_SIDE="PocketBase skipTotal=1" pb_run S2 "$r" "$SECS" "$S2_PB_NOCOUNT"
done
NT_WHO=alice nt_run S3 warm "$WARM_SECS" /v1/permissions/check -s "$NT_LUA"; sdb_run S3 warm "$WARM_SECS"
for r in $(seq 1 "$ROUNDS"); do
  NT_WHO=alice nt_run S3 "$r" "$SECS" /v1/permissions/check -s "$NT_LUA"
  sdb_run S3 "$r" "$SECS"
  NT_SIDE="NeoTenantApi (owner caller)" nt_run S3 "$r" "$SECS" /v1/permissions/check -s "$NT_LUA"
done
# S4: a create, one record per request (writes a version, an audit entry and an outbox event
# on NeoTenantApi's side; PocketBase writes the record).
NT_CREATE_LUA="$WORK/nt-create.lua"
cat >"$NT_CREATE_LUA" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"data": {"title": "bench create", "status": "open", "priority": 3}, "tags": ["bench-create"]}'
LUA
PB_CREATE_LUA="$WORK/pb-create.lua"
cat >"$PB_CREATE_LUA" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"title": "bench create", "status": "open", "priority": 3}'
LUA
S4_SECS="${PEERS_WRITE_SECS:-5}"
nt_run S4 warm 1 /v1/resources/ticket -s "$NT_CREATE_LUA"; pb_run S4 warm 1 /api/collections/tickets/records -s "$PB_CREATE_LUA"
for r in $(seq 1 "$ROUNDS"); do
  nt_run S4 "$r" "$S4_SECS" /v1/resources/ticket -s "$NT_CREATE_LUA"
  pb_run S4 "$r" "$S4_SECS" /api/collections/tickets/records -s "$PB_CREATE_LUA"
done

echo
echo "== after the runs"
busy
echo
echo "== resident memory after the runs (ps -o rss, KiB)"
for pair in "NeoTenantApi:$NT_PID" "PocketBase:$PB_PID" "SpiceDB:$SDB_PID"; do
  printf '%-14s pid %-8s rss %s KiB\n' "${pair%%:*}" "${pair##*:}" "$(ps -o rss= -p "${pair##*:}" | tr -d ' ')"
done
rss_sum() { ps -o rss= -p "$(pgrep -d, "$@" || echo 0)" 2>/dev/null | awk '{s+=$1} END {print s+0}'; }
echo "(NeoTenantApi also needs, shared with the dev server: postgres processes $(rss_sum -x postgres) KiB, redis-server $(rss_sum -x redis-server) KiB, Keycloak JVM $(rss_sum -f 'keycloak.*quarkus-run.jar') KiB)"
echo
echo "== server log lines (stdout+stderr) over the whole script, most frequent messages"
for f in neotenant pocketbase spicedb; do
  echo "$f: $(wc -l <"$WORK/$f.log") lines"
  python3 - "$WORK/$f.log" <<'PY'
import collections, json, sys
c = collections.Counter()
for line in open(sys.argv[1], errors="replace"):
    try:
        d = json.loads(line)
        extra = f' ({d["error"]}; {d.get("cause", "")})' if "error" in d else ""
        c[f'{d.get("level", "?")}: {d.get("message", d.get("msg", ""))}{extra}'[:200]] += 1
    except ValueError:
        c[line.strip()[:110]] += 1
for msg, n in c.most_common(4):
    print(f"  {n:>6}  {msg}")
PY
done

echo
echo "== summary: median of $ROUNDS runs [min-max]; latencies in ms; ratio = NeoTenantApi / peer (req/s: >1 means NeoTenantApi faster; latency: <1 means NeoTenantApi faster)"
python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
by = {}
for sc, side, rnd, rps, p50, p99, non2xx, total, srv_ms, dep_ms, red_ms, other_pct, sock in rows:
    by.setdefault((sc, side), []).append(dict(rps=float(rps), p50=float(p50), p99=float(p99), non2xx=int(non2xx),
        srv=int(srv_ms) / int(total) * 1000, dep=int(dep_ms) / int(total) * 1000, red=int(red_ms) / int(total) * 1000,
        other=float(other_pct), sock=sock))
def stat(vals, fmt):
    return f"{fmt.format(statistics.median(vals))} [{fmt.format(min(vals))}-{fmt.format(max(vals))}]"
print(f"{'':<4} {'side':<28} {'req/s':>20} {'p50 ms':>20} {'p99 ms':>22} {'CPU ms per 1k requests':>24} {'others':>7}  non-2xx")
print(f"{'':<4} {'':<28} {'':>20} {'':>20} {'':>22} {'server    pg   redis':>24} {'CPU %':>7}")
med = {}
for (sc, side), v in by.items():
    col = lambda k: [x[k] for x in v]
    med[(sc, side)] = {k: statistics.median(col(k)) for k in ("rps", "p50", "p99")}
    dep = (f"{statistics.median(col('dep')):>6.0f} {statistics.median(col('red')):>6.0f}" if side.startswith("NeoTenantApi")
           else " " * 13)
    print(f"{sc:<4} {side:<28} {stat(col('rps'), '{:.0f}'):>20} {stat(col('p50'), '{:.2f}'):>20} {stat(col('p99'), '{:.2f}'):>22} "
          f"{statistics.median(col('srv')):>10.0f} {dep} {statistics.median(col('other')):>7.1f}  {sum(col('non2xx')):>7}")
    socks = sorted({x["sock"] for x in v if x["sock"]})
    if socks:
        print(f"     ^ {'; '.join(socks)}")
print("CPU ms per 1k requests: the server process; for NeoTenantApi also PostgreSQL and Redis (whole services,")
print("so any other client of theirs counts too). others CPU %: machine CPU used by none of server, PostgreSQL,")
print("Redis or wrk during the run, as a share of all cores (interference from outside the benchmark).")
print()
print("ratios of medians, NeoTenantApi / peer:")
pairs = [("S1", "NeoTenantApi", "PocketBase"), ("S2", "NeoTenantApi", "PocketBase"),
         ("S2", "NeoTenantApi", "PocketBase skipTotal=1"), ("S3", "NeoTenantApi", "SpiceDB"),
         ("S3", "NeoTenantApi (owner caller)", "SpiceDB"), ("S4", "NeoTenantApi", "PocketBase")]
for sc, a, b in pairs:
    if (sc, a) in med and (sc, b) in med:
        x, y = med[(sc, a)], med[(sc, b)]
        print(f"  {sc} {a} vs {b}: req/s x{x['rps']/y['rps']:.2f}, p50 x{x['p50']/y['p50']:.2f}, p99 x{x['p99']/y['p99']:.2f}")
bad = [k for k, v in by.items() if any(x["non2xx"] for x in v)]
print("non-2xx: " + ("none (every response 2xx)" if not bad else "PRESENT in " + ", ".join(f"{k[0]} {k[1]}" for k in bad)))
PY
