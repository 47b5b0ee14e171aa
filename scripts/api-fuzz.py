#!/usr/bin/env python3
"""Schemathesis against the served OpenAPI document, authenticated (scripts/api-fuzz.sh sets the
environment and runs it).

1. setup: the server on loopback, then through the platform admin API a local-mode tenant with
   an owner who logs in (`POST /v1/auth/login`), a resource type `item` with a JSON Schema and a
   few resources;
2. two schemathesis runs over `/openapi.json` (phases examples, coverage and fuzzing; the
   document declares no links, so there is no stateful phase), both with `X-Tenant: <slug>`:
   one as the owner (`Authorization: Bearer <access token>`, logged in again every ten minutes
   by scripts/api-fuzz-hooks.py, since local access tokens last fifteen), then one with an API
   key made just before it (`POST /v1/api-keys`, every catalogue permission the owner holds,
   sent as `X-Api-Key`); the operations that would end the credential in use are left out
   (EXCLUDED below);
3. report in API_FUZZ_REPORT_DIR: per run its console output (<run>.txt) and JUnit XML
   (<run>.xml), the runs' schemathesis.toml, the server's log (server.log, JSON lines) and
   summary.json; the exit status is 1 when a run reported a failure or an error.

Standard library only (schemathesis runs as a child process).
"""
import http.client
import json
import os
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = os.environ
BIN = ENV["API_FUZZ_BIN"] if os.path.isabs(ENV["API_FUZZ_BIN"]) else str(ROOT / ENV["API_FUZZ_BIN"])
PORT = int(ENV.get("API_FUZZ_PORT", "18087"))
ADMIN = ENV["API_FUZZ_ADMIN_TOKEN"]
MAX_EXAMPLES = int(ENV.get("API_FUZZ_MAX_EXAMPLES", "5"))
WORKERS = ENV.get("API_FUZZ_WORKERS", "2")
SEED = ENV.get("API_FUZZ_SEED", "")
RUNS = [r.strip() for r in ENV.get("API_FUZZ_RUNS", "bearer,api-key").split(",") if r.strip()]
OUT = Path(ENV.get("API_FUZZ_REPORT_DIR", "") or "api-fuzz-report")
if not OUT.is_absolute():
    OUT = ROOT / OUT
KEEP_TENANT = ENV.get("API_FUZZ_KEEP_TENANT", "") not in ("", "0")
SCHEMATHESIS_DIR = ENV["API_FUZZ_SCHEMATHESIS_DIR"]
HOOKS = str(ROOT / "scripts" / "api-fuzz-hooks.py")
CHECKS = ENV.get("API_FUZZ_CHECKS", "not_a_server_error,status_code_conformance,response_schema_conformance")
PASSWORD = "fuzz-Password-1"

# Operations left out, by operationId, with why. Schemathesis reuses values from earlier
# responses (`GET /v1/me`, `GET /v1/sessions`, `GET /v1/api-keys` hand it the caller's ids), so
# a route that can end the credential under test is left out of the run using it. Kept:
# DELETE /v1/users/{id}, POST /v1/users/{id}/deactivate|erase and POST /v1/users/bulk refuse
# the caller itself (409); DELETE /v1/roles/{key}/assignments/{user_id} refuses to remove the
# last owner (409). There is no logout route.
EXCLUDED_ALWAYS = {
    # The tenant credentials of these runs cannot reach it (platform token only: 401), and it
    # stays out even so, lest a run given the platform token deletes the tenant under test.
    "neotenant.tenancy.handlers.delete_tenant": "DELETE /admin/v1/tenants/{slug}: deletes a tenant",
    # The session routes end the owner's sessions, and an API key in use is one of them (listed
    # by GET /v1/sessions as `apikey:<key id>`): the bearer run's token or the api-key run's key
    # would be refused (401 `session-revoked`) from then on.
    "neotenant.sessions.handlers.revoke_my_sessions":
        "DELETE /v1/sessions: ends the caller's sessions, the credential under test included",
    "neotenant.sessions.handlers.revoke_session":
        "DELETE /v1/sessions/{id}: ends the credential under test once its id is read from GET /v1/sessions",
    "neotenant.sessions.handlers.revoke_user_sessions":
        "DELETE /v1/users/{id}/sessions: ends the owner's sessions (the credential under test) once its id is read",
}
EXCLUDED = {
    "bearer": EXCLUDED_ALWAYS,
    "api-key": {
        **EXCLUDED_ALWAYS,
        "neotenant.apikeys.handlers.revoke_key":
            "DELETE /v1/api-keys/{id}: revokes the key under test once its id is read from GET /v1/api-keys",
        "neotenant.apikeys.handlers.update_key":
            "PATCH /v1/api-keys/{id}: may give the key under test a quota or rate that refuses the rest (429)",
    },
}

conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)


def log(msg):
    print(f"[api-fuzz] {msg}", file=sys.stderr, flush=True)


def call(method, path, body=None, headers=None):
    h = {"Content-Type": "application/json", **(headers or {})}
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
        res = conn.getresponse()
    except (http.client.RemoteDisconnected, ConnectionError):
        # The server closed the idle keep-alive connection (between setup and cleanup, say).
        conn.close()
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
        res = conn.getresponse()
    data = res.read()
    try:
        return res.status, (json.loads(data) if data else None)
    except ValueError:
        return res.status, data.decode(errors="replace")


def expect(status, want, what, body):
    if status != want:
        raise SystemExit(f"[api-fuzz] setup: {what} answered {status} (expected {want}): {body}")


def start_server():
    OUT.mkdir(parents=True, exist_ok=True)
    server_log = open(OUT / "server.log", "wb")
    proc = subprocess.Popen([BIN, "serve"], stdout=server_log, stderr=server_log, cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"[api-fuzz] the server exited with {proc.returncode} (see {OUT}/server.log)")
        try:
            c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=1)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.1)
    proc.terminate()
    raise SystemExit("[api-fuzz] the server did not answer /healthz within 60 s")


def login(slug):
    s, b = call("POST", "/v1/auth/login", {"username": "owner", "password": PASSWORD}, {"X-Tenant": slug})
    expect(s, 200, "POST /v1/auth/login", b)
    return {"X-Tenant": slug, "Authorization": f"Bearer {b['access_token']}"}


def setup(run_id):
    slug = f"api-fuzz-{run_id}"
    admin = {"Authorization": f"Bearer {ADMIN}"}
    s, tenant = call("POST", "/admin/v1/tenants", {"slug": slug, "display_name": "API fuzzing",
                                                  "region": "us", "identity": {"mode": "local"}}, admin)
    expect(s, 201, "POST /admin/v1/tenants", tenant)
    s, owner = call("POST", f"/admin/v1/tenants/{slug}/local-users",
                    {"username": "owner", "email": f"owner-{run_id}@api-fuzz.test", "password": PASSWORD}, admin)
    expect(s, 201, "POST /admin/v1/tenants/{slug}/local-users", owner)
    s, b = call("POST", f"/admin/v1/tenants/{slug}/role-assignments", {"role": "owner", "user_id": owner["id"]}, admin)
    expect(s, 204, "POST /admin/v1/tenants/{slug}/role-assignments", b)
    user = login(slug)
    s, b = call("POST", "/v1/resource-types", {
        "name": "item", "title": "Item", "searchable": ["title"], "filterable": ["status"], "sortable": ["priority"],
        "schema": {"type": "object", "required": ["title"], "properties": {
            "title": {"type": "string", "maxLength": 200},
            "status": {"type": "string", "enum": ["open", "closed"]},
            "priority": {"type": "integer", "minimum": 1, "maximum": 5}}}}, user)
    expect(s, 201, "POST /v1/resource-types", b)
    resource_ids = []
    for i in range(5):
        s, b = call("POST", "/v1/resources/item", {"data": {"title": f"item {i}", "status": "open", "priority": i % 5 + 1},
                                                   "tags": ["fuzz"], "category": "seed"}, user)
        expect(s, 201, "POST /v1/resources/item", b)
        resource_ids.append(b["id"])
    return {"slug": slug, "owner_id": owner["id"], "resource_ids": resource_ids}


def create_key(ctx):
    """The API key of the api-key run, made just before it (so that the bearer run, which may
    revoke the owner's keys, cannot revoke this one): every catalogue permission the owner holds,
    at its widest scope (`GET /v1/me/permissions`; a key takes 1-100)."""
    user = login(ctx["slug"])
    s, b = call("GET", "/v1/me/permissions", None, user)
    expect(s, 200, "GET /v1/me/permissions", b)
    scopes = sorted(b["permissions"])[:100]
    s, key = call("POST", "/v1/api-keys", {"name": "api fuzzing", "scopes": scopes, "expires_in_days": 1}, user)
    expect(s, 201, "POST /v1/api-keys", key)
    log(f"API key {key['id']} with {len(scopes)} scope(s)")
    return key["secret"]


def write_config(ctx):
    """schemathesis.toml of the runs: the seeded type and resources are drawn from dictionaries
    (besides generated values) so that resource routes get past 404 `type-not-found`; event
    streams are read briefly; no sign-up is attempted (the runs bring their credentials)."""
    path = OUT / "schemathesis.toml"
    ids = ", ".join(json.dumps(i) for i in ctx["resource_ids"])
    path.write_text(f"""# Written by scripts/api-fuzz.py for tenant {ctx['slug']}.
[auth]
auto-signup = false

[dictionaries.type_names]
values = ["item"]

[dictionaries.resource_ids]
values = [{ids}]

[parameters]
"path.type_name" = {{ dictionary = "type_names", probability = 0.8 }}

# Event streams (audit, events, inbox) never end: read at most a few events, for a second.
[[operations]]
include-path-regex = "/stream$"
request-timeout = 1
max-stream-events = 3

[[operations]]
include-path-regex = "^/v1/resources/\\\\{{type_name\\\\}}/\\\\{{id\\\\}}"
parameters = {{ "path.id" = {{ dictionary = "resource_ids", probability = 0.6 }}, "path.to_id" = {{ dictionary = "resource_ids", probability = 0.6 }} }}
""")
    return path


def schemathesis(run, ctx, config):
    base = [sys.executable, "-c", "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
            "--config-file", str(config), "run", f"http://127.0.0.1:{PORT}/openapi.json",
            "--checks", CHECKS, "--phases", "examples,coverage,fuzzing",
            "--max-examples", str(MAX_EXAMPLES), "--workers", WORKERS, "--no-color",
            "--generation-with-security-parameters", "false", "--request-timeout", "30",
            "--report", "junit", "--report-junit-path", str(OUT / f"{run}.xml"),
            "-H", f"X-Tenant: {ctx['slug']}"]
    if run not in EXCLUDED:
        raise SystemExit(f"[api-fuzz] unknown run {run!r} (API_FUZZ_RUNS: bearer, api-key)")
    for op in EXCLUDED[run]:
        base += ["--exclude-operation-id", op]
    if SEED:
        base += ["--seed", SEED]
    env = {**ENV, "PYTHONPATH": SCHEMATHESIS_DIR, "PYTHONDONTWRITEBYTECODE": "1", "SCHEMATHESIS_HOOKS": HOOKS,
           "API_FUZZ_AUTH": run}
    if run == "bearer":
        env.update(API_FUZZ_BASE=f"http://127.0.0.1:{PORT}", API_FUZZ_TENANT=ctx["slug"],
                   API_FUZZ_USERNAME="owner", API_FUZZ_PASSWORD=PASSWORD)
    else:
        base += ["-H", f"X-Api-Key: {create_key(ctx)}"]
    log(f"run {run}: schemathesis, max {MAX_EXAMPLES} example(s) per operation, {WORKERS} worker(s)")
    started = time.monotonic()
    with open(OUT / f"{run}.txt", "w") as text:
        proc = subprocess.Popen(base, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=OUT, text=True)
        for line in proc.stdout:
            sys.stdout.write(line)
            text.write(line)
        proc.wait()
    return {"run": run, "exit": proc.returncode, "secs": round(time.monotonic() - started, 1),
            "text": f"{run}.txt", "junit": f"{run}.xml"}


def server_errors():
    lines = (OUT / "server.log").read_text(errors="replace").splitlines()
    errors = []
    for line in lines:
        try:
            level = json.loads(line).get("level", "")
        except ValueError:
            level = "ERROR" if "ERROR" in line or "panicked" in line else ""
        if str(level).upper() == "ERROR":
            errors.append(line)
    return len(lines), errors


def failures(run):
    """(operation, check code, first line of the message) of each failing test case in the
    run's JUnit report."""
    path = OUT / f"{run}.xml"
    if not path.exists():
        return []
    out = []
    for case in ET.parse(path).getroot().iter("testcase"):
        for child in case:
            if child.tag in ("failure", "error"):
                for block in (child.text or child.get("message") or "").split("\n\n- ")[1:] or [""]:
                    out.append({"operation": case.get("name"), "kind": child.tag,
                                "check": block.split("\n", 1)[0].strip() or child.get("message", "")[:200]})
    return out


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for f in OUT.glob("*"):
        if f.is_file():
            f.unlink()
    run_id = uuid.uuid4().hex[:8]
    log(f"server {BIN} on 127.0.0.1:{PORT}; report in {OUT}")
    server = start_server()
    results, ctx = [], None
    try:
        ctx = setup(run_id)
        log(f"tenant {ctx['slug']}: owner {ctx['owner_id']}, {len(ctx['resource_ids'])} resources of type item")
        config = write_config(ctx)
        for run in RUNS:
            results.append(schemathesis(run, ctx, config))
    finally:
        if ctx and not KEEP_TENANT:
            call("DELETE", f"/admin/v1/tenants/{ctx['slug']}?confirm={ctx['slug']}", None,
                 {"Authorization": f"Bearer {ADMIN}"})
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    n_lines, errors = server_errors()
    for r in results:
        r["failures"] = failures(r["run"])
    summary = {"tenant": ctx and ctx["slug"], "kept": KEEP_TENANT, "max_examples": MAX_EXAMPLES,
               "checks": CHECKS.split(","), "excluded": {run: EXCLUDED[run] for run in RUNS}, "runs": results,
               "server_log": {"lines": n_lines, "error_lines": len(errors), "first_errors": errors[:20]}}
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for r in results:
        log(f"run {r['run']}: {'ok' if r['exit'] == 0 else 'FAILED (exit %d)' % r['exit']} in {r['secs']} s, "
            f"{len(r['failures'])} failing case(s) ({OUT / r['text']}, {OUT / r['junit']})")
    log(f"server log: {len(errors)} error line(s) of {n_lines} ({OUT / 'server.log'})")
    return 1 if any(r["exit"] != 0 for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
