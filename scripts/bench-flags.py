#!/usr/bin/env python3
"""Settings and flags benchmark against a running server (scripts/bench-flags.sh starts one).

Makes a local-mode tenant with 50 flags (rules on attributes, a segment, rollouts, a
prerequisite) and an SDK key, then times, one request after another on one keep-alive
connection, N reads of `GET /v1/settings` and N OFREP bulk evaluations of all 50 flags, each
for a different targeting key. Prints p50/p99 in milliseconds (client-side, Python included).
"""
import http.client, json, statistics, sys, time, uuid

PORT, ADMIN, N = sys.argv[1], sys.argv[2], int(sys.argv[3])
conn = http.client.HTTPConnection("127.0.0.1", int(PORT))


def call(method, path, body=None, headers=None):
    h = {"Content-Type": "application/json", **(headers or {})}
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    res = conn.getresponse()
    data = res.read()
    return res.status, (json.loads(data) if data else None)


run = uuid.uuid4().hex[:8]
slug = f"bench-flags-{run}"
admin = {"Authorization": f"Bearer {ADMIN}"}
s, b = call("POST", "/admin/v1/tenants", {"slug": slug, "display_name": "Bench flags", "region": "us",
                                         "identity": {"mode": "local"}}, admin)
assert s == 201, (s, b)
s, b = call("POST", f"/admin/v1/tenants/{slug}/local-users",
            {"username": "boss", "email": f"boss-{run}@bench.test", "password": "bench-Password-1"}, admin)
assert s == 201, (s, b)
s, _ = call("POST", f"/admin/v1/tenants/{slug}/role-assignments", {"role": "owner", "user_id": b["id"]}, admin)
assert s == 204
s, b = call("POST", "/v1/auth/login", {"username": "boss", "password": "bench-Password-1"}, {"X-Tenant": slug})
user = {"X-Tenant": slug, "Authorization": f"Bearer {b['access_token']}"}

s, b = call("PATCH", "/v1/settings", {"flags": {"context_attributes": {"plan": "string", "country": "string"}}}, user)
assert s == 200, (s, b)
s, b = call("PUT", "/v1/flag-segments/beta", {"key": "beta", "conditions": [
    {"attribute": "plan", "op": "in", "values": ["beta", "pro"]}]}, user)
assert s == 200, (s, b)
for i in range(50):
    env = {
        "enabled": True, "off_variant": "off",
        "rules": [
            {"conditions": [{"attribute": "email", "op": "ends_with", "values": ["@staff.test"]}], "serve": {"variant": "on"}},
            {"conditions": [{"attribute": "segment", "op": "in_segment", "values": ["beta"]}], "serve": {"variant": "on"}},
            {"conditions": [{"attribute": "country", "op": "in", "values": ["de", "fr", "nl"]}],
             "serve": {"rollout": [{"variant": "on", "weight": 50}, {"variant": "off", "weight": 50}]}},
        ],
        "default": {"rollout": [{"variant": "on", "weight": 25}, {"variant": "off", "weight": 75}]},
    }
    flag = {"key": f"flag-{i:02d}", "kind": "boolean", "variants": {"on": True, "off": False},
            "environments": {"production": env, "staging": env}}
    if i % 10 == 9:
        flag["prerequisites"] = [{"flag": "flag-00", "variants": ["on", "off"]}]
    s, b = call("POST", "/v1/flags", flag, user)
    assert s == 201, (s, b)
s, b = call("POST", "/v1/flag-environments/production/sdk-keys", {"name": "bench"}, user)
assert s == 201, (s, b)
sdk = {"X-Tenant": slug, "X-API-Key": b["key"]}


def measure(label, fn):
    for i in range(200):
        fn(i)
    times = []
    for i in range(N):
        t = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    p50, p99 = statistics.median(times), times[int(len(times) * 0.99) - 1]
    print(f"{label}: p50 {p50:.2f} ms, p99 {p99:.2f} ms ({N} requests, one connection)")


def settings(_):
    s, _b = call("GET", "/v1/settings", None, user)
    assert s == 200


def bulk(i):
    s, b = call("POST", "/ofrep/v1/evaluate/flags",
                {"context": {"targetingKey": f"user-{i}", "plan": "free", "country": "us"}}, sdk)
    assert s == 200 and len(b["flags"]) == 50, (s, b)


measure("settings read (GET /v1/settings)", settings)
measure("OFREP bulk evaluation of 50 flags", bulk)
