#!/usr/bin/env python3
"""Invitation benchmark against a running server (scripts/bench-invitations.sh starts one).

Bulk-invites N addresses in one call into a local-mode tenant, measures the time to the
answer and until every mail is in the devstack's SMTP sink, then accepts M of them one after
another (each sets a password: argon2id hashing is part of the path) and reports the accept
latency p50/p99.
"""
import json, os, pathlib, re, statistics, sys, time, urllib.error, urllib.request, uuid

PORT, ADMIN, N, M = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
BASE = f"http://127.0.0.1:{PORT}"
MAILDIR = pathlib.Path(__file__).resolve().parent.parent / ".devstack/smtp/maildir/new"


def call(method, path, body=None, tenant=None, token=None):
    headers = {"Content-Type": "application/json"}
    if tenant:
        headers["X-Tenant"] = tenant
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(BASE + path, method=method, headers=headers,
                                 data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req) as res:
            return res.status, json.loads(res.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


run = uuid.uuid4().hex[:8]
slug = f"bench-inv-{run}"
status, body = call("POST", "/admin/v1/tenants", {"slug": slug, "display_name": "Bench invitations",
                                                  "region": "us", "identity": {"mode": "local"}}, token=ADMIN)
assert status == 201, (status, body)
status, body = call("POST", f"/admin/v1/tenants/{slug}/local-users",
                    {"username": "boss", "email": f"boss-{run}@bench.test", "password": "bench-Password-1"}, token=ADMIN)
assert status == 201, (status, body)
boss_id = body["id"]
status, body = call("POST", f"/admin/v1/tenants/{slug}/role-assignments", {"role": "owner", "user_id": boss_id}, token=ADMIN)
assert status == 204, (status, body)
status, body = call("POST", "/v1/auth/login", {"username": "boss", "password": "bench-Password-1"}, tenant=slug)
token = body["access_token"]

addresses = [f"inv-{run}-{i}@bench.test" for i in range(N)]
started = time.perf_counter()
status, body = call("POST", "/v1/invitations/bulk", {"items": [{"email": a} for a in addresses]},
                    tenant=slug, token=token)
answered = time.perf_counter() - started
assert status == 200 and body["created"] == N, (status, {k: body[k] for k in ("created", "refused")})

marker = f"-{run}-"
tokens = {}
deadline = time.time() + 600
while len(tokens) < N and time.time() < deadline:
    for f in MAILDIR.iterdir():
        if f.name in tokens:
            continue
        text = f.read_text(errors="replace")
        if marker not in text:
            continue
        flat = text.replace("=\r\n", "").replace("=\n", "").replace("=3D", "=")
        m = re.search(r"#token=(nti_[A-Za-z0-9_-]+)", flat)
        if m:
            tokens[f.name] = m.group(1)
    if len(tokens) < N:
        time.sleep(0.05)
all_mail = time.perf_counter() - started
assert len(tokens) == N, f"{len(tokens)} of {N} mails arrived"

latencies = []
for t in list(tokens.values())[:M]:
    t0 = time.perf_counter()
    status, body = call("POST", "/v1/invitations/accept", {"token": t, "password": "bench-Password-2"}, tenant=slug)
    latencies.append((time.perf_counter() - t0) * 1000)
    assert status in (200, 201), (status, body)
latencies.sort()
p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
print(f"bulk invite of {N}: answered in {answered * 1000:.0f} ms, all {N} mails in the sink after {all_mail * 1000:.0f} ms")
print(f"accept (local mode, password set), {M} sequential: p50 {statistics.median(latencies):.1f} ms  p99 {p99:.1f} ms  max {latencies[-1]:.1f} ms")
