#!/usr/bin/env bash
# Development helper: makes sure a user exists in a tenant's identity home (its realm, or its
# organization in the region's shared realm) and prints an access token for it.
#
#   scripts/demo-token.sh <tenant-slug> [username] [password]
#
# Talks to the local Keycloak's admin REST API with the devstack administrator; for local use
# (`make run`, `make bench`) only.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SLUG="${1:?usage: $0 <tenant-slug> [username] [password]}"
USERNAME="${2:-demo}"
PASSWORD="${3:-demo-Password-1}"
KC="${NEOTENANT_KEYCLOAK__URL:-http://127.0.0.1:${DEVSTACK_KC_PORT:-18180}}"
ADMIN="${DEVSTACK_KC_ADMIN:-admin}"
ADMIN_PASSWORD="${DEVSTACK_KC_ADMIN_PASSWORD:-admin-dev-password}"
BIN="${DEMO_TOKEN_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/neotenant}"

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]) or '')" "$1"; }

tenant="$("$BIN" tenant show "$SLUG")"
realm="$(json 'd["identity"].get("realm")' <<<"$tenant")"
org="$(json 'd["identity"].get("organization")' <<<"$tenant")"
[ -n "$realm" ] || { echo "tenant $SLUG has no identity realm yet" >&2; exit 1; }

admin_token="$(curl -sf -d grant_type=password -d client_id=admin-cli -d "username=$ADMIN" -d "password=$ADMIN_PASSWORD" \
  "$KC/realms/master/protocol/openid-connect/token" | json 'd["access_token"]')"
auth=(-H "Authorization: Bearer $admin_token")
curl -s -o /dev/null "${auth[@]}" -H 'Content-Type: application/json' -X POST "$KC/admin/realms/$realm/users" \
  -d "{\"username\":\"$USERNAME\",\"email\":\"$USERNAME@$SLUG.example\",\"emailVerified\":true,\"enabled\":true,\"firstName\":\"$USERNAME\",\"lastName\":\"Demo\",\"credentials\":[{\"type\":\"password\",\"value\":\"$PASSWORD\",\"temporary\":false}]}"
user_id="$(curl -sf "${auth[@]}" "$KC/admin/realms/$realm/users?username=$USERNAME&exact=true" | json 'd[0]["id"]')"
scope="openid"
if [ -n "$org" ]; then
  org_id="$(curl -sf "${auth[@]}" "$KC/admin/realms/$realm/organizations?first=0&max=10000&briefRepresentation=true" \
    | ORG="$org" python3 -c 'import json,os,sys; print([o["id"] for o in json.load(sys.stdin) if o["alias"] == os.environ["ORG"]][0])')"
  curl -s -o /dev/null "${auth[@]}" -H 'Content-Type: application/json' -X POST \
    "$KC/admin/realms/$realm/organizations/$org_id/members" -d "\"$user_id\""
  scope="openid organization:$org"
fi
curl -sf -d grant_type=password -d client_id=neotenant-app -d "username=$USERNAME" -d "password=$PASSWORD" \
  --data-urlencode "scope=$scope" "$KC/realms/$realm/protocol/openid-connect/token" | json 'd["access_token"]'
