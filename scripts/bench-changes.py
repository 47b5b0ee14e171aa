"""Change-feed pages over loopback against a release build: a tenant with N resources (rows
and their outbox events written straight into its schema), then the whole feed walked page by
page (`GET /v1/changes?limit=100`) several times; per-page latency p50/p99, next to the event
feed's pages over the same outbox (`GET /v1/events?limit=100`)."""

import http.client
import json
import subprocess
import sys
import time
import uuid

BIN, PORT, ADMIN, N, DB_URL = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
PASSES = 5
conn = http.client.HTTPConnection("127.0.0.1", PORT)


def call(method, path, body=None, headers=None):
    h = {"Content-Type": "application/json", **(headers or {})}
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    res = conn.getresponse()
    data = res.read()
    return res.status, (json.loads(data) if data else None)


def psql(database, sql):
    subprocess.run(["psql", f"{DB_URL}/{database}", "-tAc", sql], check=True, capture_output=True)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


server = subprocess.Popen([BIN, "serve"])
for _ in range(200):
    try:
        c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=1)
        c.request("GET", "/healthz")
        if c.getresponse().status == 200:
            break
    except OSError:
        time.sleep(0.05)
try:
    run = uuid.uuid4().hex[:8]
    slug = f"bench-changes-{run}"
    admin = {"Authorization": f"Bearer {ADMIN}"}
    s, tenant = call("POST", "/admin/v1/tenants", {"slug": slug, "display_name": "Bench changes",
                                                  "region": "us", "identity": {"mode": "local"}}, admin)
    assert s == 201, (s, tenant)
    db, schema = tenant["database"], tenant["schema"]
    s, b = call("POST", f"/admin/v1/tenants/{slug}/local-users",
                {"username": "boss", "email": f"boss-{run}@bench.test", "password": "bench-Password-1"}, admin)
    assert s == 201, (s, b)
    owner = str(uuid.UUID(b["id"].split("_", 1)[1]))
    s, _ = call("POST", f"/admin/v1/tenants/{slug}/role-assignments", {"role": "owner", "user_id": b["id"]}, admin)
    assert s == 204
    s, b = call("POST", "/v1/auth/login", {"username": "boss", "password": "bench-Password-1"}, {"X-Tenant": slug})
    user = {"X-Tenant": slug, "Authorization": f"Bearer {b['access_token']}"}
    s, _ = call("POST", "/v1/resource-types", {"name": "item", "title": "Item", "schema": {"type": "object"}}, user)
    assert s == 201
    psql(db, f"""WITH r AS (
                   INSERT INTO "{schema}".resources (id, type, data, owner_id)
                   SELECT gen_random_uuid(), 'item', jsonb_build_object('n', i, 'title', 'item ' || i), '{owner}'
                   FROM generate_series(1, {N}) i RETURNING id)
                 INSERT INTO "{schema}".outbox (topic, aggregate_type, aggregate_id, payload)
                 SELECT 'resource.created', 'item', 'res_' || replace(id::text, '-', ''), '{{"version": 1}}'
                 FROM r""")

    def walk(path, cursor_key, first_key):
        times, items = [], 0
        cursor = ""
        while True:
            t = time.perf_counter()
            s, page = call("GET", f"{path}?limit=100&{first_key}={cursor}", None, user)
            times.append(time.perf_counter() - t)
            assert s == 200, (s, page)
            items += len(page["items"])
            cursor = page[cursor_key]
            if not page["has_more"]:
                return times, items

    walk("/v1/changes", "next_cursor", "since")  # warm
    for path, first in [("/v1/changes", "since"), ("/v1/events", "after")]:
        times, items = [], 0
        for _ in range(PASSES):
            t, items = walk(path, "next_cursor", first)
            times += t
        print(json.dumps({"feed": path, "objects": items, "pages": len(times),
                          "page_p50_ms": round(pct(times, 0.5) * 1000, 2),
                          "page_p99_ms": round(pct(times, 0.99) * 1000, 2)}))
    call("DELETE", f"/admin/v1/tenants/{slug}?confirm={slug}", None, admin)
finally:
    server.terminate()
    server.wait()
