#!/usr/bin/env python3
"""Bounded soak with optional fault injection (scripts/soak.sh sets the environment and runs it).

Standard library only. The driver starts the server itself (so that it can kill and restart
it with the same command and environment) and a webhook receiver (a threaded http.server on
loopback that counts deliveries per event id and checks every signature), then:

1. setup: SOAK_TENANTS local-mode tenants (regions us and eu, isolation schema and database
   in turn), each with an owner who logs in, a resource type with a JSON Schema, an API key,
   a webhook endpoint at the receiver and, when `make plugins` has built plugins/dist, the
   `ticket` plugin's resource type;
2. load: SOAK_WORKERS threads (one keep-alive connection each) pace themselves to SOAK_RATE
   requests/s in all for SOAK_SECS: lists, reads, creates, conditional updates and deletes of
   resources, searches, permission checks, requests with the API key (and creates of the
   plugin's type); every request's latency and outcome is kept, and every 10 s the server's
   RSS, open descriptors and TCP connections are sampled with throughput and p50/p99 per
   operation over the interval;
3. faults (SOAK_FAULTS): one after another, each followed by a recovery check (the time until
   a request of every kind succeeds again); requests failing inside a fault's window are
   counted apart, as expected;
4. accounting: per tenant, the resources, their versions, audit entries and outbox events in
   PostgreSQL against the writes the API acknowledged (and those that got no answer: present
   or absent, never half), the webhook deliveries against the committed writes, and the
   audit chain's verification;
5. report: a table on stdout; report.json, report.md and soak.svg in SOAK_REPORT_DIR; the exit
   status is 1 when a pass criterion failed (each is named).
"""
import base64
import collections
import hashlib
import hmac
import http.client
import http.server
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = os.environ


def env_float(name, default):
    raw = ENV.get(name, "").strip()
    return float(raw) if raw else float(default)


BIN = str((ROOT / ENV["SOAK_BIN"]).resolve()) if not os.path.isabs(ENV["SOAK_BIN"]) else ENV["SOAK_BIN"]
PORT = int(ENV.get("SOAK_PORT", "18086"))
ADMIN = ENV["SOAK_ADMIN_TOKEN"]
DB_URL = ENV["NEOTENANT_DATABASE__URL"].rstrip("/")
SECS = env_float("SOAK_SECS", 600)
RATE = env_float("SOAK_RATE", 200)
WORKERS = int(env_float("SOAK_WORKERS", 8))
N_TENANTS = int(env_float("SOAK_TENANTS", 4))
FAULTS = [f.strip() for f in ENV.get("SOAK_FAULTS", "").split(",") if f.strip()]
KNOWN_FAULTS = ("redis", "keycloak", "postgres", "receiver", "kill")
SAMPLE_SECS = env_float("SOAK_SAMPLE_SECS", 10)
FAULT_SECS = env_float("SOAK_FAULT_SECS", 30)
FAULT_START = env_float("SOAK_FAULT_START", min(60.0, SECS / 4))
FAULT_GAP = env_float("SOAK_FAULT_GAP", 15)
TAIL_SECS = env_float("SOAK_TAIL_SECS", 30)
RECOVERY_MAX = env_float("SOAK_RECOVERY_SECS", 90)
DRAIN_SECS = env_float("SOAK_DRAIN_SECS", 180)
SEARCH_SECS = env_float("SOAK_SEARCH_SECS", 60)
OUT = Path(ENV.get("SOAK_REPORT_DIR", "") or ROOT / "soak-report")
if not OUT.is_absolute():
    OUT = ROOT / OUT
KEEP_TENANTS = ENV.get("SOAK_KEEP_TENANTS", "") not in ("", "0")
DEVSTACK = str(ROOT / "scripts" / "devstack.sh")
PLUGIN_DIR = ROOT / "plugins" / "dist"
TYPES = ("item", "ticket")
PASSWORD = "soak-Password-1"
WORDS = ("amber", "basalt", "cobalt", "dune", "ember", "fjord", "glacier", "harbor", "indigo",
         "juniper", "kestrel", "lagoon", "meadow", "nebula", "orchid", "prairie", "quartz",
         "raven", "sierra", "tundra", "umber", "violet", "willow", "zephyr")

# Share of each operation in the load (plugin_create only when the plugin is there).
WEIGHTS = {"list": 16, "get": 16, "create": 12, "update": 10, "delete": 4, "search": 10,
           "authz_check": 8, "me_permissions": 4, "apikey_list": 8, "apikey_create": 4,
           "plugin_create": 3}
EXPECT = {"list": 200, "get": 200, "create": 201, "update": 200, "delete": 200, "search": 200,
          "authz_check": 200, "me_permissions": 200, "apikey_list": 200, "apikey_create": 201,
          "plugin_create": 201}
WRITE_OPS = ("create", "update", "delete", "apikey_create", "plugin_create")

T0 = time.monotonic()
STOP = threading.Event()


def now():
    return time.monotonic() - T0


def log(msg):
    print(f"[soak] {msg}", flush=True)


def js(data):
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None


def pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def ms(x):
    return None if x is None else round(x * 1000, 2)


# ------------------------------------------------------------------------------ HTTP client

class Client:
    """One keep-alive connection to the server; a failed request closes it (no retry: a
    request that got no answer is recorded as such)."""

    def __init__(self, timeout=30.0):
        self.timeout = timeout
        self.conn = None

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except OSError:
                pass
            self.conn = None

    def request(self, method, path, body=None, headers=None, raw=None, content_type=None):
        h = dict(headers or {})
        payload = raw
        if body is not None:
            payload = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        if content_type:
            h["Content-Type"] = content_type
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=payload, headers=h)
            res = self.conn.getresponse()
            data = res.read()
        except BaseException:
            self.close()
            raise
        if res.will_close:
            self.close()
        return res.status, res, data


class SetupError(Exception):
    pass


def call(client, method, path, body=None, headers=None, expect=(200, 201, 204), raw=None,
         content_type=None, attempts=5):
    """A setup or check request: retried on connection errors, its status checked."""
    for i in range(attempts):
        try:
            status, res, data = client.request(method, path, body, headers, raw, content_type)
            break
        except (OSError, http.client.HTTPException):
            if i == attempts - 1:
                raise
            time.sleep(0.5 * (i + 1))
    if expect and status not in expect:
        raise SetupError(f"{method} {path}: {status} {data[:600].decode(errors='replace')}")
    return status, js(data), res


# ------------------------------------------------------------------------------ server

class Server:
    """The server under test, a child process with the environment soak.sh exported."""

    def __init__(self):
        self.proc = None
        self.log = open(OUT / "server.log", "ab")
        self.starts = []

    @property
    def pid(self):
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def start(self, wait=120.0):
        t = now()
        self.proc = subprocess.Popen([BIN, "serve"], stdout=self.log, stderr=self.log,
                                     cwd=str(ROOT))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SetupError(f"the server exited with {self.proc.returncode} (see {OUT}/server.log)")
            try:
                c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=1)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    c.close()
                    self.starts.append({"at": round(t, 2), "pid": self.proc.pid,
                                        "secs": round(now() - t, 2)})
                    return now() - t
            except OSError:
                pass
            time.sleep(0.05)
        raise SetupError(f"the server did not answer /healthz within {wait:.0f} s")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def devstack(action, service):
    with open(OUT / "devstack.log", "ab") as f:
        f.write(f"--- {datetime.now().isoformat()} {action} {service}\n".encode())
        f.flush()
        subprocess.run([DEVSTACK, action, service], stdout=f, stderr=f, check=True, timeout=600)


def scrape_metric(name):
    """Sum of a Prometheus counter over its label sets, or None."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=5)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode(errors="replace")
        c.close()
    except (OSError, http.client.HTTPException):
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name):len(name) + 1] in ("{", " ")):
            try:
                total += float(line.rsplit(" ", 1)[1])
            except ValueError:
                pass
    return total


def psql_rows(database, sql):
    out = subprocess.run(["psql", f"{DB_URL}/{database}", "-X", "-q", "-tA", "-F", "\t", "-c", sql],
                         check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


# ------------------------------------------------------------------------------ receiver

class Receiver:
    """Webhook receiver on loopback: one thread per connection, keep-alive, 204 at once.
    Counts deliveries per event id and checks every `v1` signature with the endpoint's secret.
    `stop()` refuses new connections and cuts the open ones; `start()` listens again on the
    same port."""

    def __init__(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.lock = threading.Lock()
        self.events = {}          # evt id -> {slug, rid, version, topic, count, first}
        self.writes = set()       # (slug, rid, version) seen
        self.secrets = {}         # slug -> HMAC key
        self.deliveries = 0
        self.bad_signatures = 0
        self.unsigned = 0
        self.malformed = 0
        self.latencies = []       # (t, seconds from the event's commit to its receipt)
        self.httpd = None
        self.conns = set()
        self.running = False

    def handler(self):
        rx = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with rx.lock:
                    rx.conns.add(self.connection)

            def finish(self):
                with rx.lock:
                    rx.conns.discard(self.connection)
                try:
                    super().finish()
                except OSError:
                    pass

            def log_message(self, *args):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                if not rx.running:
                    self.close_connection = True
                    return
                rx.record(self.path, self.headers, body)
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler

    def record(self, path, headers, body):
        t_wall = time.time()
        slug = path.rstrip("/").rsplit("/", 1)[-1]
        evt = js(body)
        with self.lock:
            self.deliveries += 1
            key = self.secrets.get(slug)
            sig = headers.get("webhook-signature")
            if key is None or not sig:
                self.unsigned += 1
            else:
                signed = f"{headers.get('webhook-id')}.{headers.get('webhook-timestamp')}.".encode() + body
                want = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
                if not any(hmac.compare_digest(want, s) for s in sig.split()):
                    self.bad_signatures += 1
            if not isinstance(evt, dict) or "id" not in evt:
                self.malformed += 1
                return
            e = self.events.get(evt["id"])
            if e is None:
                subject = evt.get("subject") or {}
                version = (evt.get("data") or {}).get("version")
                e = {"slug": slug, "rid": subject.get("id"), "type": subject.get("type"),
                     "version": version, "topic": evt.get("type"), "count": 0, "first": now()}
                self.events[evt["id"]] = e
                self.writes.add((slug, e["rid"], version))
                try:
                    at = datetime.fromisoformat(evt["timestamp"].replace("Z", "+00:00")).timestamp()
                    self.latencies.append((now(), max(0.0, t_wall - at)))
                except (KeyError, ValueError, AttributeError):
                    pass
            e["count"] += 1

    def start(self):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self.handler())
        self.httpd.daemon_threads = True
        self.running = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                         daemon=True).start()

    def stop(self):
        if not self.httpd:
            return
        self.running = False
        self.httpd.shutdown()
        self.httpd.server_close()
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.httpd = None

    def seen(self, keys):
        with self.lock:
            return {k for k in keys if k in self.writes}


# ------------------------------------------------------------------------------ state

class Tenant:
    def __init__(self, slug, region, isolation):
        self.slug, self.region, self.isolation = slug, region, isolation
        self.database = self.schema = self.user_id = None
        self.jwt = {}
        self.key = {}
        self.endpoint = None
        self.plugin = False
        self.login_at = 0.0


class Ledger:
    """Every write the load sent: acknowledged (2xx), uncertain (no answer, or a 5xx: it may or
    may not have committed) or refused (another 4xx: it must not have)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.acked = []       # (slug, rid, version, topic, type)
        self.uncertain = []   # {slug, op, type, rid, marker, t, status}
        self.refused = []

    def ack(self, slug, rid, version, topic, type_):
        with self.lock:
            self.acked.append((slug, rid, version, topic, type_))

    def fail(self, kind, **w):
        with self.lock:
            (self.uncertain if kind == "uncertain" else self.refused).append(w)


LEDGER = Ledger()
RESULTS = []            # (op, t0, t1, status, kind): kind "" is success
ERROR_SAMPLES = collections.defaultdict(list)
INFLIGHT = {"writes": 0}
INFLIGHT_LOCK = threading.Lock()
READYZ = []             # (t, http status, status field or detail)
SAMPLES = []
WINDOWS = []
RESTORE = set()         # services a fault stopped and that must come back


def kind_of(status, data):
    obj = js(data)
    t = obj.get("type", "") if isinstance(obj, dict) else ""
    return f"{status} {t.rsplit('/', 1)[-1]}" if t else str(status)


def timed(w, op, method, path, body=None, headers=None, raw=None, content_type=None):
    """Sends one load request and records it. Returns (status or None, parsed body, response)."""
    w.seq += 1
    rid = f"soak-{w.i}-{w.seq}"
    h = dict(headers or {})
    h["X-Request-Id"] = rid
    t0 = now()
    try:
        status, res, data = w.client.request(method, path, body, h, raw, content_type)
    except (OSError, http.client.HTTPException) as e:
        t1 = now()
        kind = f"conn {type(e).__name__}"
        RESULTS.append((op, t0, t1, None, kind))
        if len(ERROR_SAMPLES[kind]) < 5:
            ERROR_SAMPLES[kind].append({"op": op, "t": round(t0, 2), "request": f"{method} {path}",
                                        "request_id": rid, "error": str(e)[:200]})
        return None, None, None
    t1 = now()
    if status == EXPECT[op]:
        RESULTS.append((op, t0, t1, status, ""))
    else:
        kind = kind_of(status, data)
        RESULTS.append((op, t0, t1, status, kind))
        if len(ERROR_SAMPLES[kind]) < 5:
            ERROR_SAMPLES[kind].append({"op": op, "t": round(t0, 2), "request": f"{method} {path}",
                                        "request_id": rid, "status": status,
                                        "body": data[:400].decode(errors="replace")})
    return status, js(data), res


def write(w, t, op, type_, method, path, body, headers, rid=None, marker=None):
    with INFLIGHT_LOCK:
        INFLIGHT["writes"] += 1
    try:
        status, obj, res = timed(w, op, method, path, body, headers)
    finally:
        with INFLIGHT_LOCK:
            INFLIGHT["writes"] -= 1
    if status == EXPECT[op]:
        return obj
    kind = "uncertain" if status is None or status >= 500 else "refused"
    LEDGER.fail(kind, slug=t.slug, op=op, type=type_, rid=rid, marker=marker,
                t=round(now(), 2), status=status)
    return None


# ------------------------------------------------------------------------------ load

class Worker:
    def __init__(self, i, tenants, ops):
        self.i = i
        self.seq = 0
        self.n = 0
        self.client = Client()
        self.rng = random.Random(f"soak-{i}")
        self.tenants = tenants
        self.pools = {t.slug: [] for t in tenants}   # own live items: [rid, version]
        self.ops = ops
        self.weights = [WEIGHTS[o] for o in ops]

    def pick(self, pool):
        op = self.rng.choices(self.ops, self.weights)[0]
        if op in ("get", "update", "delete") and not pool:
            return "create"
        if op == "delete" and len(pool) < 10:
            return "update"
        return op

    def run(self):
        interval = WORKERS / RATE
        next_t = time.monotonic() + self.rng.random() * interval
        while not STOP.is_set():
            delay = next_t - time.monotonic()
            if delay > 0 and STOP.wait(delay):
                break
            next_t += interval
            if time.monotonic() - next_t > 1.0:   # behind: never burst to catch up
                next_t = time.monotonic()
            t = self.rng.choice(self.tenants)
            pool = self.pools[t.slug]
            op = self.pick(pool)
            try:
                getattr(self, "op_" + op)(t, pool)
            except Exception as e:   # a driver bug must not stop the soak silently
                kind = f"driver {type(e).__name__}"
                RESULTS.append((op, now(), now(), None, kind))
                if len(ERROR_SAMPLES[kind]) < 5:
                    ERROR_SAMPLES[kind].append({"op": op, "error": repr(e)[:300]})
        self.client.close()

    def new_data(self, type_):
        self.n += 1
        n = self.n * 100 + self.i
        marker = uuid.uuid4().hex
        word = self.rng.choice(WORDS)
        body = " ".join(self.rng.sample(WORDS, 4))
        if type_ == "item":
            return {"title": f"soak {word} {n}", "n": n, "status": "open", "body": body,
                    "marker": marker}, marker
        return {"title": f"soak ticket {word} {n}", "priority": self.rng.randint(1, 5),
                "body": body, "marker": marker}, marker

    def create(self, t, pool, op, headers, type_):
        data, marker = self.new_data(type_)
        obj = write(self, t, op, type_, "POST", f"/v1/resources/{type_}",
                    {"data": data, "tags": ["soak"]}, headers, marker=marker)
        if obj:
            LEDGER.ack(t.slug, obj["id"], obj["version"], "resource.created", type_)
            if type_ == "item":
                pool.append([obj["id"], obj["version"]])

    def op_create(self, t, pool):
        self.create(t, pool, "create", t.jwt, "item")

    def op_apikey_create(self, t, pool):
        self.create(t, pool, "apikey_create", t.key, "item")

    def op_plugin_create(self, t, pool):
        self.create(t, pool, "plugin_create", t.jwt, "ticket")

    def op_update(self, t, pool):
        entry = self.rng.choice(pool)
        rid, v = entry
        body = {"data": {"status": self.rng.choice(("open", "closed")), "body":
                         " ".join(self.rng.sample(WORDS, 3))}}
        obj = write(self, t, "update", "item", "PATCH", f"/v1/resources/item/{rid}", body,
                    {**t.jwt, "If-Match": f'"{v}"'}, rid=rid)
        if obj:
            entry[1] = obj["version"]
            LEDGER.ack(t.slug, rid, obj["version"], "resource.updated", "item")
        else:
            pool.remove(entry)   # its version is unknown now: leave it alone

    def op_delete(self, t, pool):
        entry = pool[self.rng.randrange(min(len(pool), 5))]   # among the oldest
        rid, v = entry
        obj = write(self, t, "delete", "item", "DELETE", f"/v1/resources/item/{rid}", None,
                    {**t.jwt, "If-Match": f'"{v}"', "NeoTenant-Version": "2026-12-01"}, rid=rid)
        pool.remove(entry)
        if obj:
            LEDGER.ack(t.slug, rid, obj["version"], "resource.deleted", "item")

    def op_get(self, t, pool):
        rid = self.rng.choice(pool)[0]
        timed(self, "get", "GET", f"/v1/resources/item/{rid}", headers=t.jwt)

    def op_list(self, t, pool):
        q = self.rng.choice(("limit=20", "limit=20&sort=-n", "limit=20&filter%5Bstatus%5D=open"))
        timed(self, "list", "GET", f"/v1/resources/item?{q}", headers=t.jwt)

    def op_search(self, t, pool):
        word = self.rng.choice(WORDS)
        timed(self, "search", "GET", f"/v1/search?q={word}&type=item&limit=10", headers=t.jwt)

    def op_authz_check(self, t, pool):
        perms = self.rng.sample(["resources.update.own", "resources.delete.tenant",
                                 "teams.read.tenant", "audit.read.tenant", "webhooks.read.tenant"], 3)
        timed(self, "authz_check", "POST", "/v1/permissions/check",
              {"checks": [{"permission": p} for p in perms]}, t.jwt)

    def op_me_permissions(self, t, pool):
        timed(self, "me_permissions", "GET", "/v1/me/permissions", headers=t.jwt)

    def op_apikey_list(self, t, pool):
        timed(self, "apikey_list", "GET", "/v1/resources/item?limit=10", headers=t.key)


def login(client, t):
    _, b, _ = call(client, "POST", "/v1/auth/login", {"username": "boss", "password": PASSWORD},
                   {"X-Tenant": t.slug}, expect=(200,), attempts=2)
    t.jwt = {"X-Tenant": t.slug, "Authorization": f"Bearer {b['access_token']}"}
    t.login_at = now()


def token_keeper(tenants):
    """Access tokens live 15 minutes: log in again every 10 (retrying through faults)."""
    client = Client(timeout=10)
    while not STOP.wait(5):
        for t in tenants:
            if now() - t.login_at > 600:
                try:
                    login(client, t)
                except (OSError, http.client.HTTPException, SetupError):
                    client.close()


def multipart(parts):
    boundary = uuid.uuid4().hex
    out = b""
    for name, filename, ctype, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += (f"--{boundary}\r\nContent-Disposition: {disp}\r\nContent-Type: {ctype}\r\n\r\n"
                ).encode() + data + b"\r\n"
    return f"multipart/form-data; boundary={boundary}", out + f"--{boundary}--\r\n".encode()


def setup(client, run, rx, plugin):
    admin = {"Authorization": f"Bearer {ADMIN}"}
    placements = [("us", "schema"), ("us", "database"), ("eu", "schema"), ("eu", "database")]
    tenants = []
    for i in range(N_TENANTS):
        region, isolation = placements[i % len(placements)]
        t = Tenant(f"soak-{run}-{region}{i + 1}", region, isolation)
        _, v, _ = call(client, "POST", "/admin/v1/tenants",
                       {"slug": t.slug, "display_name": f"Soak {region} {isolation}", "region": region,
                        "isolation": isolation, "identity": {"mode": "local"}}, admin, expect=(200, 201))
        t.database, t.schema = v["database"], v["schema"]
        _, u, _ = call(client, "POST", f"/admin/v1/tenants/{t.slug}/local-users",
                       {"username": "boss", "email": f"boss-{t.slug}@soak.test", "password": PASSWORD},
                       admin, expect=(201,))
        t.user_id = u["id"]
        call(client, "POST", f"/admin/v1/tenants/{t.slug}/role-assignments",
             {"role": "owner", "user_id": u["id"]}, admin, expect=(204,))
        login(client, t)
        call(client, "POST", "/v1/resource-types", {
            "name": "item", "title": "Soak item",
            "schema": {"type": "object", "required": ["title", "n"], "additionalProperties": False,
                       "properties": {"title": {"type": "string", "minLength": 1, "maxLength": 200},
                                      "n": {"type": "integer"},
                                      "status": {"type": "string", "enum": ["open", "closed"]},
                                      "body": {"type": "string", "maxLength": 2000},
                                      "marker": {"type": "string"}}},
            "searchable": ["title", "body"], "filterable": ["status"], "sortable": ["n"]},
            t.jwt, expect=(201,))
        _, k, _ = call(client, "POST", "/v1/api-keys",
                       {"name": "soak", "scopes": ["resources.read.tenant", "resources.create.own"]},
                       t.jwt, expect=(201,))
        t.key = {"X-Tenant": t.slug, "Authorization": f"Bearer {k['secret']}"}
        _, ep, _ = call(client, "POST", "/v1/webhooks/endpoints",
                        {"url": f"http://127.0.0.1:{rx.port}/hook/{t.slug}", "description": "soak receiver",
                         "event_types": ["resource.*"]}, t.jwt, expect=(201,))
        t.endpoint = ep["id"]
        with rx.lock:
            rx.secrets[t.slug] = base64.b64decode(ep["secret"].split("_", 1)[1])
        if plugin:
            manifest = (PLUGIN_DIR / "ticket.json").read_bytes()
            ctype, body = multipart([("manifest", "plugin.json", "application/json", manifest),
                                     ("component", "ticket.wasm", "application/wasm",
                                      (PLUGIN_DIR / "ticket.wasm").read_bytes())])
            call(client, "POST", "/v1/plugins", headers=t.jwt, raw=body, content_type=ctype,
                 expect=(200, 201))
            call(client, "POST", "/v1/plugin-installations",
                 {"plugin": "ticket", "grants": {"logging": True, "kv": True, "events": True}},
                 t.jwt, expect=(201,))
            t.plugin = True
        tenants.append(t)
        log(f"tenant {t.slug}: region {region}, isolation {isolation}, database {t.database}, "
            f"schema {t.schema}{', ticket plugin' if t.plugin else ''}")
    return tenants


# ------------------------------------------------------------------------------ sampling

def proc_sample(pid):
    """RSS (bytes), open descriptors and TCP sockets (all, established) of a process."""
    if pid is None:
        return None
    try:
        rss = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
        inodes = set()
        fds = 0
        for fd in os.listdir(f"/proc/{pid}/fd"):
            fds += 1
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        tcp = est = 0
        for table in ("tcp", "tcp6"):
            try:
                with open(f"/proc/{pid}/net/{table}") as f:
                    next(f)
                    for line in f:
                        cols = line.split()
                        if cols[9] in inodes:
                            tcp += 1
                            est += cols[3] == "01"
            except OSError:
                pass
        return {"rss": rss, "fds": fds, "tcp": tcp, "tcp_established": est}
    except (OSError, ValueError, IndexError):
        return None


def interval_stats(rows):
    per = collections.defaultdict(lambda: {"n": 0, "ok": [], "err": 0})
    for op, t0, t1, status, kind in rows:
        p = per[op]
        p["n"] += 1
        if kind:
            p["err"] += 1
        else:
            p["ok"].append(t1 - t0)
    return {op: {"count": p["n"], "errors": p["err"], "p50_ms": ms(pct(p["ok"], 0.5)),
                 "p99_ms": ms(pct(p["ok"], 0.99))} for op, p in sorted(per.items())}


def sampler(server, rx):
    last_i, last_d, last_t = 0, 0, now()
    while True:
        stopped = STOP.wait(SAMPLE_SECS)
        t = now()
        n = len(RESULTS)
        rows = RESULTS[last_i:n]
        with rx.lock:
            nd = len(rx.latencies)
            lat = [x[1] for x in rx.latencies[last_d:nd]]
        span = max(t - last_t, 1e-9)
        pid = server.pid
        p = proc_sample(pid)
        ops = interval_stats(rows)
        s = {"t": round(t, 1), "pid": pid, "rps": round(len(rows) / span, 1),
             "errors": sum(o["errors"] for o in ops.values()), "ops": ops,
             "webhooks": {"count": len(lat), "per_sec": round(len(lat) / span, 1),
                          "p50_ms": ms(pct(lat, 0.5)), "p99_ms": ms(pct(lat, 0.99))}}
        if p:
            s.update(p)
        SAMPLES.append(s)
        worst = max(((o["p99_ms"] or 0, k) for k, o in ops.items()), default=(0, "-"))
        mem = (f"rss {p['rss'] / 2**20:6.1f} MiB  fds {p['fds']:4d}  tcp {p['tcp']:3d}"
               if p else "server down")
        log(f"{t:6.0f}s  {mem}  {s['rps']:6.1f} req/s  failed {s['errors']:4d}  "
            f"worst p99 {worst[0]:8.1f} ms ({worst[1]})  webhooks {s['webhooks']['per_sec']:5.1f}/s")
        last_i, last_d, last_t = n, nd, t
        if stopped:
            return


def readyz_monitor():
    c = Client(timeout=5)
    while not STOP.wait(1.0):
        t = now()
        try:
            status, _, data = c.request("GET", "/readyz")
            obj = js(data) or {}
            READYZ.append((round(t, 2), status, obj.get("status") or obj.get("detail") or ""))
        except (OSError, http.client.HTTPException) as e:
            READYZ.append((round(t, 2), None, type(e).__name__))


# ------------------------------------------------------------------------------ faults

class Window:
    def __init__(self, name):
        self.name = name
        self.start = now()
        self.marks = {}
        self.restored = None
        self.end = None
        self.recovery = {}
        self.extra = {}
        self.notes = []

    def mark(self, what):
        self.marks[what] = round(now(), 2)


def wait_recovery(w, ops):
    """Until a request of every kind has succeeded after the restoration (or RECOVERY_MAX)."""
    pending = set(ops)
    first = {}
    i = 0
    deadline = w.restored + RECOVERY_MAX
    while pending and now() < deadline:
        n = len(RESULTS)
        for op, t0, t1, status, kind in RESULTS[i:n]:
            if not kind and t0 >= w.restored and op in pending:
                pending.discard(op)
                first[op] = t1
        i = n
        time.sleep(0.25)
    w.recovery = {op: (round(first[op] - w.restored, 2) if op in first else None) for op in ops}
    w.end = max(first.values()) if not pending and first else now()


def fault_redis(w, ctx):
    before = scrape_metric("neotenant_rate_limit_errors_total")
    RESTORE.add("redis")
    devstack("stop", "redis")
    w.mark("stopped")
    time.sleep(FAULT_SECS)
    w.mark("restoring")
    devstack("start", "redis")
    RESTORE.discard("redis")
    w.restored = now()
    after = scrape_metric("neotenant_rate_limit_errors_total")
    if before is not None and after is not None:
        w.extra["rate_limit_checks_allowed_without_redis"] = int(after - before)


def fault_keycloak(w, ctx):
    RESTORE.add("keycloak")
    devstack("stop", "keycloak")
    w.mark("stopped")
    time.sleep(FAULT_SECS)
    w.mark("restoring")
    devstack("start", "keycloak")
    RESTORE.discard("keycloak")
    w.restored = now()
    w.extra["keycloak_start_secs"] = round(w.restored - w.marks["restoring"], 1)


def fault_postgres(w, ctx):
    RESTORE.add("postgres")
    devstack("stop", "postgres")
    w.mark("stopped")
    w.mark("restoring")
    devstack("start", "postgres")
    RESTORE.discard("postgres")
    w.restored = now()
    w.extra["postgres_restart_secs"] = round(w.restored - w.start, 2)


def fault_receiver(w, ctx):
    rx = ctx["rx"]
    rx.stop()
    w.mark("stopped")
    time.sleep(FAULT_SECS)
    with LEDGER.lock:
        keys = {(a[0], a[1], a[2]) for a in LEDGER.acked}
    backlog = keys - rx.seen(keys)
    w.mark("restoring")
    rx.start()
    w.restored = now()
    w.extra["undelivered_acked_writes_at_restart"] = len(backlog)
    deadline = now() + RECOVERY_MAX
    while backlog and now() < deadline:
        backlog -= rx.seen(backlog)
        time.sleep(0.5)
    w.extra["backlog_left_after_wait"] = len(backlog)
    w.extra["backlog_drained_secs"] = round(now() - w.restored, 1) if not backlog else None


def fault_kill(w, ctx):
    server, t = ctx["server"], ctx["tenants"][0]
    c = Client(timeout=10)
    word = "canary" + uuid.uuid4().hex[:10]
    marker = uuid.uuid4().hex
    _, r, _ = call(c, "POST", "/v1/resources/item",
                   {"data": {"title": f"soak {word}", "n": 0, "status": "open", "marker": marker}},
                   t.jwt, expect=(201,), attempts=1)
    LEDGER.ack(t.slug, r["id"], r["version"], "resource.created", "item")
    w.extra["canary"] = {"tenant": t.slug, "id": r["id"], "word": word}
    deadline = time.monotonic() + 5
    while INFLIGHT["writes"] == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    w.extra["writes_in_flight_at_kill"] = INFLIGHT["writes"]
    server.kill9()
    w.mark("killed")
    w.extra["restart_secs"] = round(server.start(), 2)
    w.restored = now()
    c.close()
    t_search = now()
    found = None
    while now() - t_search < SEARCH_SECS:
        try:
            status, b, _ = call(c, "GET", f"/v1/search?q={word}&type=item", headers=t.jwt,
                                expect=None, attempts=1)
            if status == 200 and any(i["id"] == r["id"] for i in b["items"]):
                found = round(now() - t_search, 2)
                break
        except (OSError, http.client.HTTPException):
            c.close()
        time.sleep(0.5)
    w.extra["search_caught_up_secs"] = found
    verify = {}
    for tt in ctx["tenants"]:
        try:
            _, v, _ = call(c, "GET", "/v1/audit/verify", headers=tt.jwt, expect=(200,))
            verify[tt.slug] = {"ok": v["ok"], "entries": v["entries"], "unsealed": v["unsealed"],
                               "broken": v.get("broken")}
        except (OSError, http.client.HTTPException, SetupError) as e:
            verify[tt.slug] = {"ok": False, "error": str(e)[:300]}
    w.extra["audit_verify_after_restart"] = verify
    c.close()


FAULT_FUNCS = {"redis": fault_redis, "keycloak": fault_keycloak, "postgres": fault_postgres,
               "receiver": fault_receiver, "kill": fault_kill}


def run_faults(ctx, ops, state):
    try:
        while now() < ctx["load_start"] + FAULT_START and not STOP.is_set():
            time.sleep(0.5)
        for name in FAULTS:
            if STOP.is_set():
                break
            w = Window(name)
            WINDOWS.append(w)
            log(f"fault {name}: start")
            try:
                FAULT_FUNCS[name](w, ctx)
            except Exception as e:
                w.notes.append(f"fault injection failed: {e!r}"[:400])
                log(f"fault {name}: injection failed: {e!r}")
                if w.restored is None:
                    w.restored = now()
            wait_recovery(w, ops)
            rec = ", ".join(f"{k} {v}s" if v is not None else f"{k} NOT RECOVERED"
                            for k, v in w.recovery.items())
            log(f"fault {name}: restored at {w.restored:.1f}s, window ends {w.end:.1f}s; recovery: {rec}")
            if name != FAULTS[-1]:
                time.sleep(FAULT_GAP)
    finally:
        state["done_at"] = now()


# ------------------------------------------------------------------------------ accounting

def in_window(t0, t1):
    for w in WINDOWS:
        end = w.end if w.end is not None else float("inf")
        if t0 <= end and t1 >= w.start:
            return w.name
    return None


def account(tenants, rx):
    """Every write against PostgreSQL and the receiver."""
    failures = []
    acked = collections.defaultdict(list)
    for slug, rid, v, topic, type_ in LEDGER.acked:
        acked[slug].append((rid, v, topic, type_))
    uncertain = collections.defaultdict(list)
    for u in LEDGER.uncertain:
        uncertain[u["slug"]].append(u)
    refused = collections.defaultdict(list)
    for u in LEDGER.refused:
        refused[u["slug"]].append(u)
    with rx.lock:
        events = list(rx.events.values())
    per = {}
    committed = {}
    for t in tenants:
        s = t.schema
        types = "('item', 'ticket')"
        rows = {r[0]: {"type": r[1], "version": int(r[2]), "deleted": r[3] == "t", "marker": r[4]}
                for r in psql_rows(t.database, f"""
            SELECT 'res_' || replace(id::text, '-', ''), type, version, deleted_at IS NOT NULL,
                   coalesce(data->>'marker', '')
              FROM "{s}".resources WHERE type IN {types}""")}
        change_topic = {"created": "resource.created", "deleted": "resource.deleted"}
        versions = {(r[0], int(r[1])): change_topic.get(r[2], "resource.updated") for r in psql_rows(t.database, f"""
            SELECT 'res_' || replace(v.resource_id::text, '-', ''), v.version, v.change
              FROM "{s}".resource_versions v JOIN "{s}".resources r ON r.id = v.resource_id
             WHERE r.type IN {types}""")}
        audit = collections.Counter((r[0], int(r[2]), r[1]) for r in psql_rows(t.database, f"""
            SELECT target_id, action, data->>'version' FROM "{s}".audit_log
             WHERE target_type = 'resource' AND data->>'type' IN {types}
               AND action IN ('resource.created', 'resource.updated', 'resource.deleted')""") if r[2])
        outbox = collections.Counter((r[0], int(r[2]), r[1]) for r in psql_rows(t.database, f"""
            SELECT aggregate_id, topic, payload->>'version' FROM "{s}".outbox
             WHERE aggregate_type IN {types}
               AND topic IN ('resource.created', 'resource.updated', 'resource.deleted')""") if r[2])
        committed[t.slug] = versions
        a_keys = {(rid, v): topic for rid, v, topic in audit}
        o_keys = {(rid, v): topic for rid, v, topic in outbox}
        # Never half-present: every version has its audit entry and outbox event, and the
        # other way round, with the same kind of change; versions run 1..current.
        half = []
        for key in set(versions) | set(a_keys) | set(o_keys):
            parts = {"version row": versions.get(key), "audit entry": a_keys.get(key),
                     "outbox event": o_keys.get(key)}
            if None in parts.values() or len(set(parts.values())) != 1:
                half.append({"resource": key[0], "version": key[1],
                             **{k: v or "missing" for k, v in parts.items()}})
        by_rid = collections.defaultdict(set)
        for rid, v in versions:
            by_rid[rid].add(v)
        gaps = [rid for rid, r in rows.items() if by_rid[rid] != set(range(1, r["version"] + 1))]
        dup_audit = sum(n - 1 for n in audit.values() if n > 1)
        dup_outbox = sum(n - 1 for n in outbox.values() if n > 1)
        # Every acknowledged write is there, whole.
        lost = []
        for rid, v, topic, type_ in acked[t.slug]:
            key = (rid, v)
            missing = [k for k, have in (("version row", versions.get(key) == topic),
                                         ("audit entry", a_keys.get(key) == topic),
                                         ("outbox event", o_keys.get(key) == topic)) if not have]
            if missing:
                lost.append({"resource": rid, "version": v, "write": topic, "missing": missing})
        # Live rows against acknowledged creates minus acknowledged deletes.
        created = {rid for rid, v, topic, _ in acked[t.slug] if topic == "resource.created"}
        deleted = {rid for rid, v, topic, _ in acked[t.slug] if topic == "resource.deleted"}
        unanswered_markers = {u["marker"] for u in uncertain[t.slug] if u["marker"]}
        unanswered_deletes = {u["rid"] for u in uncertain[t.slug] if u["op"] == "delete"}
        refused_markers = {u["marker"] for u in refused[t.slug] if u["marker"]}
        live = {rid for rid, r in rows.items() if not r["deleted"]}
        expected = created - deleted
        wrong = []
        gone_by_unanswered_delete = 0
        for rid in expected - live:
            if rid in rows and rid in unanswered_deletes:
                gone_by_unanswered_delete += 1
            else:
                wrong.append({"resource": rid, "problem": "acknowledged, not live" if rid in rows
                              else "acknowledged create, no row"})
        unanswered_created = 0
        for rid in live - expected:
            if rid in deleted:
                wrong.append({"resource": rid, "problem": "acknowledged delete, still live"})
            elif rows[rid]["marker"] in unanswered_markers:
                unanswered_created += 1
            else:
                wrong.append({"resource": rid, "problem": "live row of no acknowledged or unanswered create"})
        unanswered_created_deleted = sum(1 for rid, r in rows.items() if r["deleted"]
                                         and rid not in created and r["marker"] in unanswered_markers)
        for rid, r in rows.items():
            if r["marker"] and r["marker"] in refused_markers:
                wrong.append({"resource": rid, "problem": "row of a create refused with a 4xx"})
        item = {
            "database": t.database, "schema": s,
            "acked_writes": len(acked[t.slug]), "acked_creates": len(created), "acked_deletes": len(deleted),
            "expected_live": len(expected), "live_rows": len(live), "rows": len(rows),
            "unanswered_writes": len(uncertain[t.slug]),
            "unanswered_creates_committed": unanswered_created + unanswered_created_deleted,
            "unanswered_deletes_committed": gone_by_unanswered_delete,
            "refused_writes": len(refused[t.slug]),
            "versions": len(versions), "audit_entries": sum(audit.values()), "outbox_events": sum(outbox.values()),
            "duplicate_audit_entries": dup_audit, "duplicate_outbox_events": dup_outbox,
            "lost_acked_writes": len(lost), "half_present": len(half), "version_gaps": len(gaps),
            "count_mismatches": len(wrong),
            "examples": {"lost": lost[:10], "half_present": half[:10], "version_gaps": gaps[:10],
                         "count_mismatches": wrong[:10]},
        }
        per[t.slug] = item
        if lost:
            failures.append(f"{t.slug}: {len(lost)} acknowledged write(s) missing a row, audit entry or outbox event")
        if half:
            failures.append(f"{t.slug}: {len(half)} write(s) half-present (version/audit/outbox disagree)")
        if gaps:
            failures.append(f"{t.slug}: {len(gaps)} resource(s) with missing versions")
        if wrong:
            failures.append(f"{t.slug}: {len(wrong)} live-row count mismatch(es) "
                            f"(expected {len(expected)} = {len(created)} creates - {len(deleted)} deletes, "
                            f"found {len(live)})")
        if dup_audit or dup_outbox:
            failures.append(f"{t.slug}: duplicate audit entries ({dup_audit}) or outbox events ({dup_outbox})")
    # Webhooks: every event received is for a committed write; every acknowledged write's
    # event arrived at least once.
    acked_keys = {(slug, rid, v) for slug, rows_ in acked.items() for rid, v, _, _ in rows_}
    foreign, unanswered_delivered, dups = [], 0, 0
    for e in events:
        dups += e["count"] - 1
        key = (e["slug"], e["rid"], e["version"])
        topic = committed.get(e["slug"], {}).get((e["rid"], e["version"]))
        if topic is None or topic != e["topic"]:
            foreign.append({k: e[k] for k in ("slug", "rid", "version", "topic", "count")})
        elif key not in acked_keys:
            unanswered_delivered += 1
    seen = rx.seen(acked_keys)
    undelivered = sorted(acked_keys - seen)
    hooks = {"deliveries": rx.deliveries, "events": len(events), "duplicates": dups,
             "acked_writes": len(acked_keys), "acked_delivered": len(seen),
             "undelivered_acked": len(undelivered), "unanswered_but_committed_delivered": unanswered_delivered,
             "events_for_no_committed_write": len(foreign), "bad_signatures": rx.bad_signatures,
             "unsigned": rx.unsigned, "malformed": rx.malformed,
             "examples": {"undelivered": [list(k) for k in undelivered[:10]], "foreign": foreign[:10]}}
    if undelivered:
        failures.append(f"webhooks: {len(undelivered)} acknowledged write(s) never delivered")
    if foreign:
        failures.append(f"webhooks: {len(foreign)} event(s) for no committed write")
    if rx.bad_signatures or rx.unsigned or rx.malformed:
        failures.append(f"webhooks: {rx.bad_signatures} bad signature(s), {rx.unsigned} unsigned, "
                        f"{rx.malformed} malformed")
    return {"tenants": per, "webhooks": hooks}, failures


def drain(rx):
    with LEDGER.lock:
        keys = {(a[0], a[1], a[2]) for a in LEDGER.acked}
    t = now()
    left = keys - rx.seen(keys)
    while left and now() - t < DRAIN_SECS:
        time.sleep(1)
        left -= rx.seen(left)
    return round(now() - t, 1), len(left)


# ------------------------------------------------------------------------------ evaluation

def evaluate_faults(readyz):
    out = []
    failures = []
    for w in WINDOWS:
        errs = collections.defaultdict(collections.Counter)
        total = 0
        for op, t0, t1, status, kind in RESULTS:
            if kind and t0 <= w.end and t1 >= w.start:
                errs[op][kind] += 1
                total += 1
        down_from = w.marks.get("stopped", w.marks.get("killed", w.start))
        down_to = w.marks.get("restoring", w.restored)
        during = [r for r in readyz if down_from <= r[0] <= down_to]
        after = [r for r in readyz if r[0] >= w.restored]
        ready_again = next((r[0] for r in after if r[1] == 200 and r[2] == "ready"), None)
        transitions = []
        for r in readyz:
            if w.start - 2 <= r[0] <= w.end + 2 and (not transitions or transitions[-1][1:] != r[1:]):
                transitions.append(r)
        unanswered = sum(1 for u in LEDGER.uncertain if w.start <= u["t"] <= w.end)
        item = {"fault": w.name, "start": round(w.start, 1), "marks": w.marks,
                "restored": round(w.restored, 1), "end": round(w.end, 1),
                "failed_requests": total, "failed_by_op": {k: dict(v) for k, v in errs.items()},
                "recovery_secs": w.recovery, "readyz": transitions,
                "ready_again_secs": round(ready_again - w.restored, 1) if ready_again is not None else None,
                "unanswered_writes": unanswered, **w.extra, "notes": w.notes, "expectations": []}
        checks = item["expectations"]

        def expect(ok, text):
            checks.append({"ok": bool(ok), "check": text})
            if not ok:
                failures.append(f"fault {w.name}: {text}")

        not_recovered = [k for k, v in w.recovery.items() if v is None]
        expect(not not_recovered and not w.notes,
               "every kind of request succeeds again after restoration within "
               f"{RECOVERY_MAX:.0f} s" + (f" (not: {', '.join(not_recovered)})" if not_recovered else "")
               + (f" ({'; '.join(w.notes)})" if w.notes else ""))
        if w.name == "redis":
            expect(total == 0, f"requests keep succeeding while Redis is down ({total} failed)")
            expect(during and all(r[1] == 200 for r in during) and any(r[2] == "degraded" for r in during),
                   "/readyz answers 200 \"degraded\" while Redis is down "
                   f"(saw {sorted({(r[1], r[2]) for r in during})})")
            expect(ready_again is not None, "/readyz is \"ready\" again after Redis is back")
        elif w.name == "keycloak":
            expect(total == 0, f"local-mode tenants are unaffected by Keycloak's outage ({total} failed)")
        elif w.name == "postgres":
            internal = sum(n for v in errs.values() for k, n in v.items() if str(k).startswith("500"))
            expect(internal == 0, "requests failing while PostgreSQL restarts are 503 problems, never 500 "
                                  f"({internal} were 500)")
            item["note"] = "503s and refused connections inside the window are expected; recovery is required"
        elif w.name == "receiver":
            item["note"] = "the backlog's delivery is checked by the final accounting"
        elif w.name == "kill":
            expect(w.extra.get("search_caught_up_secs") is not None,
                   f"search finds the resource created just before the kill within {SEARCH_SECS:.0f} s")
            av = w.extra.get("audit_verify_after_restart", {})
            expect(av and all(v.get("ok") for v in av.values()), "the audit chain verifies after the restart")
        out.append(item)
    return out, failures


def rss_check(final_pid):
    pts = [(s["t"], s["rss"]) for s in SAMPLES if s.get("pid") == final_pid and "rss" in s]
    if len(pts) < 3:
        return {"ok": None, "note": f"too few samples of the final server process ({len(pts)})"}, None
    first, last = pts[0][0], pts[-1][0]
    span = last - first
    if span >= 180:
        ref = [r for t, r in pts if first + 60 <= t < first + 120]
        end = [r for t, r in pts if t > last - 60]
        how = "mean RSS of the last minute vs the second minute"
    else:
        third = span / 3
        ref = [r for t, r in pts if first + third <= t < first + 2 * third] or [pts[len(pts) // 3][1]]
        end = [r for t, r in pts if t >= first + 2 * third]
        how = "mean RSS of the last third vs the second third (run shorter than 3 minutes)"
    a, b = sum(ref) / len(ref), sum(end) / len(end)
    change = (b - a) / a
    res = {"ok": abs(change) <= 0.10, "how": how, "reference_mib": round(a / 2**20, 1),
           "final_mib": round(b / 2**20, 1), "change_pct": round(change * 100, 1),
           "samples": len(pts), "process_pid": final_pid,
           "note": "" if final_pid == SAMPLES[0].get("pid") else "measured over the server restarted by the kill fault"}
    fail = None if res["ok"] else f"RSS not flat: {how}: {res['reference_mib']} -> {res['final_mib']} MiB ({res['change_pct']:+.1f} %)"
    return res, fail


# ------------------------------------------------------------------------------ report

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31")


def svg_panel(y0, title, series, unit, t_max, log_scale=False, height=230, width=960):
    """One chart: series {name: [(t, v)]} over time, fault windows shaded."""
    left, right, top, bottom = 70, 190, 28, 30
    pw, ph = width - left - right, height - top - bottom
    vals = [v for pts in series.values() for _, v in pts if v is not None and v > 0]
    if log_scale:
        lo = 10 ** math.floor(math.log10(min(vals))) if vals else 1
        hi = 10 ** math.ceil(math.log10(max(vals))) if vals else 10
        hi = min(max(hi, lo * 10), max(lo * 10, 1e6))   # above 1000 s is drawn at the top
        fy = lambda v: top + ph - (math.log10(min(max(v, lo), hi)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * ph
        ticks = [lo * 10 ** k for k in range(int(round(math.log10(hi / lo))) + 1)]
    else:
        hi = max(vals) * 1.1 if vals else 1
        fy = lambda v: top + ph - v / hi * ph
        step = 10 ** math.floor(math.log10(hi / 5)) if hi > 0 else 1
        step *= 1 if hi / step <= 6 else 2 if hi / step <= 12 else 5
        ticks = [k * step for k in range(int(hi / step) + 1)]
    fx = lambda t: left + t / max(t_max, 1e-9) * pw
    g = [f'<g transform="translate(0,{y0})">',
         f'<text x="{left}" y="18" font-size="14" font-weight="bold">{title}</text>']
    for w in WINDOWS:
        x1, x2 = fx(w.start), fx(w.end if w.end is not None else t_max)
        g.append(f'<rect x="{x1:.1f}" y="{top}" width="{max(x2 - x1, 1):.1f}" height="{ph}" fill="#f4cccc" opacity="0.6"/>')
        g.append(f'<text x="{x1 + 2:.1f}" y="{top + 12}" font-size="10" fill="#a61c00">{w.name}</text>')
    g.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
    for v in ticks:
        y = fy(v)
        label = f"{v:g}"
        g.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        g.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{label}</text>')
    g.append(f'<text x="14" y="{top + ph / 2:.0f}" font-size="11" transform="rotate(-90 14 {top + ph / 2:.0f})" '
             f'text-anchor="middle">{unit}</text>')
    step = 10 ** math.floor(math.log10(max(t_max, 10) / 5))
    step *= 1 if t_max / step <= 8 else 2 if t_max / step <= 16 else 5
    t = 0
    while t <= t_max:
        g.append(f'<text x="{fx(t):.1f}" y="{top + ph + 14}" font-size="10" text-anchor="middle">{t:g}s</text>')
        t += step
    for k, (name, pts) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        segs, cur = [], []
        for t, v in pts:
            if v is None or (log_scale and v <= 0):
                if cur:
                    segs.append(cur)
                cur = []
                continue
            cur.append(f"{fx(t):.1f},{fy(v):.1f}")
        if cur:
            segs.append(cur)
        for s in segs:
            if len(s) == 1:
                x, y = s[0].split(",")
                g.append(f'<circle cx="{x}" cy="{y}" r="2" fill="{color}"/>')
            else:
                g.append(f'<polyline points="{" ".join(s)}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        ly = top + 10 + k * 14
        g.append(f'<line x1="{left + pw + 12}" x2="{left + pw + 30}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2"/>')
        g.append(f'<text x="{left + pw + 34}" y="{ly + 4}" font-size="11">{name}</text>')
    g.append("</g>")
    return "\n".join(g)


def write_svg(path, ops, t_max):
    p99 = {op: [(s["t"], (s["ops"].get(op) or {}).get("p99_ms")) for s in SAMPLES] for op in ops}
    p99["webhook (commit→receipt)"] = [(s["t"], s["webhooks"]["p99_ms"]) for s in SAMPLES]
    rss = {"RSS": [(s["t"], s["rss"] / 2**20 if "rss" in s else None) for s in SAMPLES]}
    res = {"open fds": [(s["t"], s.get("fds")) for s in SAMPLES],
           "TCP sockets": [(s["t"], s.get("tcp")) for s in SAMPLES],
           "req/s": [(s["t"], s["rps"]) for s in SAMPLES]}
    panels = [svg_panel(0, f"p99 latency per operation, {SAMPLE_SECS:g} s intervals (log scale)", p99, "ms",
                        t_max, log_scale=True, height=300),
              svg_panel(300, "server RSS", rss, "MiB", t_max),
              svg_panel(530, "server descriptors, TCP sockets and throughput", res, "count", t_max)]
    path.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="960" height="760" '
                    'font-family="sans-serif">\n<rect width="960" height="760" fill="white"/>\n'
                    + "\n".join(panels) + "\n</svg>\n")


def op_table(duration):
    by = collections.defaultdict(list)
    for r in RESULTS:
        by[r[0]].append(r)
    table = {}
    for op in sorted(by):
        rows = by[op]
        ok = [t1 - t0 for _, t0, t1, _, kind in rows if not kind]
        unexpected, during = collections.Counter(), collections.Counter()
        for _, t0, t1, status, kind in rows:
            if kind:
                (during if in_window(t0, t1) else unexpected)[kind] += 1
        table[op] = {"total": len(rows), "ok": len(ok), "per_sec": round(len(rows) / duration, 1),
                     "p50_ms": ms(pct(ok, 0.5)), "p99_ms": ms(pct(ok, 0.99)), "max_ms": ms(max(ok) if ok else None),
                     "unexpected_errors": dict(unexpected), "errors_during_faults": dict(during)}
    return table


def fmt_errs(c):
    return ", ".join(f"{k} ×{v}" for k, v in sorted(c.items(), key=lambda kv: -kv[1])) or "-"


def text_table(table, lat):
    lines = [f"{'operation':<16}{'total':>8}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}  errors (unexpected | during faults)"]
    for op, r in table.items():
        lines.append(f"{op:<16}{r['total']:>8}{r['per_sec']:>8}{r['p50_ms'] or 0:>9.1f}{r['p99_ms'] or 0:>9.1f}  "
                     f"{fmt_errs(r['unexpected_errors'])} | {fmt_errs(r['errors_during_faults'])}")
    lines.append(f"{'webhook':<16}{lat['count']:>8}{lat['per_sec']:>8}{lat['p50_ms'] or 0:>9.1f}"
                 f"{lat['p99_ms'] or 0:>9.1f}  (deliveries; latency from the event's commit to receipt)")
    return "\n".join(lines)


def write_md(path, report, table_txt):
    r = report
    md = [f"# Soak report {r['run']}", "",
          f"- {r['started']}: {r['duration_secs']} s of load at a target of {RATE:g} req/s "
          f"({r['achieved_rps']} achieved), {WORKERS} workers, {len(r['tenants'])} tenants, "
          f"faults: {', '.join(FAULTS) or 'none'}; binary `{BIN}`",
          f"- plugin writes: {r['plugin']}",
          f"- verdict: **{'PASS' if r['pass'] else 'FAIL'}**", ""]
    if r["failures"]:
        md += ["## Failed criteria", ""] + [f"- {f}" for f in r["failures"]] + [""]
    md += ["## Pass criteria", ""]
    for c in r["criteria"]:
        md.append(f"- {'ok' if c['ok'] else ('skipped' if c['ok'] is None else 'FAILED')}: {c['name']} — {c['detail']}")
    md += ["", "## Operations", "", "```", table_txt, "```", "", "![plots](soak.svg)", "",
           "## Server", "", f"- starts: {json.dumps(r['server_starts'])}", f"- RSS: {json.dumps(r['rss'])}",
           f"- last sample: {json.dumps({k: r['samples'][-1].get(k) for k in ('rss', 'fds', 'tcp', 'tcp_established')} if r['samples'] else {})}",
           f"- server log: {r['server_log']['error_lines']} error line(s) of {r['server_log']['lines']} "
           "([server.log](server.log); the first ones are in report.json)", ""]
    if r["faults"]:
        md += ["## Faults", "", "| fault | window (s) | failed requests | recovery (s, slowest op) | notes |",
               "|---|---|---|---|---|"]
        for f in r["faults"]:
            rec = [v for v in f["recovery_secs"].values() if v is not None]
            slow = max(rec) if rec else None
            extra = {k: v for k, v in f.items() if k not in (
                "fault", "start", "end", "marks", "restored", "failed_requests", "failed_by_op",
                "recovery_secs", "readyz", "expectations", "notes")}
            kinds = collections.Counter()
            for d in f["failed_by_op"].values():
                kinds.update(d)
            md.append(f"| {f['fault']} | {f['start']}–{f['end']} | {f['failed_requests']} ({fmt_errs(kinds)}) "
                      f"| {slow} | {json.dumps(extra)} |")
        md += [""]
        for f in r["faults"]:
            md.append(f"- **{f['fault']}**: " + "; ".join(
                f"{'ok' if e['ok'] else 'FAILED'}: {e['check']}" for e in f["expectations"]))
            md.append(f"  - /readyz: {', '.join(f'{t}s {s} {x}' for t, s, x in f['readyz'])}")
        md.append("")
    md += ["## Accounting", "", "| tenant | acked writes | creates − deletes = expected live | live rows | "
           "unanswered (committed creates / deletes) | versions / audit / outbox | lost | half | mismatches |",
           "|---|---|---|---|---|---|---|---|---|"]
    for slug, a in r["accounting"]["tenants"].items():
        md.append(f"| {slug} | {a['acked_writes']} | {a['acked_creates']} − {a['acked_deletes']} = {a['expected_live']} "
                  f"| {a['live_rows']} | {a['unanswered_writes']} ({a['unanswered_creates_committed']} / "
                  f"{a['unanswered_deletes_committed']}) | {a['versions']} / {a['audit_entries']} / {a['outbox_events']} "
                  f"| {a['lost_acked_writes']} | {a['half_present']} | {a['count_mismatches']} |")
    w = r["accounting"]["webhooks"]
    md += ["", f"Webhooks: {w['deliveries']} deliveries of {w['events']} events ({w['duplicates']} repeats), "
           f"{w['acked_delivered']}/{w['acked_writes']} acknowledged writes delivered, "
           f"{w['unanswered_but_committed_delivered']} for unanswered writes that committed, "
           f"{w['events_for_no_committed_write']} for no committed write, {w['bad_signatures']} bad signatures.", "",
           "Audit verification: " + ", ".join(f"{k}: {'ok' if v.get('ok') else 'BROKEN'} ({v.get('entries')} entries)"
                                              for k, v in r["audit_verify"].items()), ""]
    if r["error_samples"]:
        md += ["## Error samples", ""]
        for kind, xs in r["error_samples"].items():
            for x in xs:
                md.append(f"- `{kind}`: {json.dumps(x)}")
    path.write_text("\n".join(md) + "\n")


# ------------------------------------------------------------------------------ main

def main():
    global FAULTS
    unknown = [f for f in FAULTS if f not in KNOWN_FAULTS]
    if unknown:
        print(f"[soak] unknown fault(s) {unknown}; choose from {', '.join(KNOWN_FAULTS)}", file=sys.stderr)
        return 2
    FAULTS = [f for f in KNOWN_FAULTS if f in FAULTS]   # documented order
    # Stopped from outside: still stop the server and bring back what a fault stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "server.log").write_bytes(b"")
    (OUT / "devstack.log").write_bytes(b"")
    run = uuid.uuid4().hex[:8]
    started = datetime.now().astimezone().isoformat(timespec="seconds")
    plugin = (PLUGIN_DIR / "ticket.wasm").is_file() and (PLUGIN_DIR / "ticket.json").is_file()
    plugin_note = "ticket plugin type" if plugin else "skipped: plugins/dist/ticket.wasm is missing (make plugins)"
    log(f"run {run}: {SECS:g} s at {RATE:g} req/s, {WORKERS} workers, {N_TENANTS} tenants, "
        f"faults: {', '.join(FAULTS) or 'none'}; server {BIN} on 127.0.0.1:{PORT}; plugin writes: {plugin_note}")
    rx = Receiver()
    rx.start()
    server = Server()
    threads = []
    tenants = []
    exit_code = 1
    try:
        server.start()
        client = Client()
        tenants = setup(client, run, rx, plugin)
        ops = [o for o in WEIGHTS if o != "plugin_create" or plugin]
        workers = [Worker(i, tenants, ops) for i in range(WORKERS)]
        load_start = now()
        threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
        threads += [threading.Thread(target=sampler, args=(server, rx), daemon=True),
                    threading.Thread(target=readyz_monitor, daemon=True),
                    threading.Thread(target=token_keeper, args=(tenants,), daemon=True)]
        for t in threads:
            t.start()
        fault_state = {"done_at": None}
        ctx = {"server": server, "rx": rx, "tenants": tenants, "load_start": load_start}
        fault_thread = None
        if FAULTS:
            fault_thread = threading.Thread(target=run_faults, args=(ctx, ops, fault_state), daemon=True)
            fault_thread.start()
        while now() - load_start < SECS:
            time.sleep(0.5)
        if fault_thread:
            fault_thread.join()
            while now() < fault_state["done_at"] + TAIL_SECS:
                time.sleep(0.5)
        STOP.set()
        for t in threads:
            t.join(timeout=60)
        load_end = now()
        duration = load_end - load_start
        log(f"load stopped after {duration:.0f} s; waiting for webhook deliveries (at most {DRAIN_SECS:.0f} s)")
        drain_secs, drain_left = drain(rx)
        log(f"webhooks drained in {drain_secs} s ({drain_left} acknowledged write(s) still undelivered)")
        time.sleep(2)   # the sealer's round
        check_client = Client()
        audit_verify = {}
        for t in tenants:
            try:
                _, v, _ = call(check_client, "GET", "/v1/audit/verify", headers=t.jwt, expect=(200,))
                audit_verify[t.slug] = {k: v.get(k) for k in ("ok", "entries", "checkpoints", "unsealed",
                                                              "broken", "elapsed_ms")}
            except (OSError, http.client.HTTPException, SetupError) as e:
                audit_verify[t.slug] = {"ok": False, "error": str(e)[:300]}
        accounting, acc_failures = account(tenants, rx)
        faults, fault_failures = evaluate_faults(list(READYZ))
        rss, rss_fail = rss_check(server.pid)
        table = op_table(duration)
        unexpected = collections.Counter()
        for r in table.values():
            unexpected.update(r["unexpected_errors"])
        with rx.lock:
            lat = [x[1] for x in rx.latencies]
        hooks = {"count": len(lat), "per_sec": round(len(lat) / duration, 1), "p50_ms": ms(pct(lat, 0.5)),
                 "p99_ms": ms(pct(lat, 0.99))}
        log_lines = (OUT / "server.log").read_text(errors="replace").splitlines()
        err_lines = [l for l in log_lines if '"level":"ERROR"' in l or '"level":"error"' in l]
        criteria = [
            {"name": "no unexpected errors", "ok": not unexpected,
             "detail": f"{sum(unexpected.values())} outside fault windows ({fmt_errs(unexpected)})"},
            {"name": "RSS flat", "ok": rss["ok"],
             "detail": (f"{rss.get('how')}: {rss.get('reference_mib')} -> {rss.get('final_mib')} MiB "
                        f"({rss.get('change_pct')} %, limit ±10 %) {rss.get('note', '')}").strip()
             if rss["ok"] is not None else rss["note"]},
            {"name": "every write accounted for", "ok": not acc_failures,
             "detail": "; ".join(acc_failures) or
                       f"{sum(a['acked_writes'] for a in accounting['tenants'].values())} acknowledged writes, each with "
                       "its row, audit entry and outbox event; no half-present write; live rows match; "
                       "every acknowledged write delivered"},
            {"name": "audit chains verify", "ok": all(v.get("ok") for v in audit_verify.values()),
             "detail": ", ".join(f"{k}: {v.get('entries')} entries, ok={v.get('ok')}" for k, v in audit_verify.items())},
        ]
        if FAULTS:
            criteria.append({"name": "faults behave as documented and recover", "ok": not fault_failures,
                             "detail": "; ".join(fault_failures) or ", ".join(f["fault"] for f in faults)})
        failures = [f"{c['name']}: {c['detail']}" for c in criteria if c["ok"] is False]
        passed = not failures
        table_txt = text_table(table, hooks)
        report = {
            "run": run, "started": started, "pass": passed, "failures": failures, "criteria": criteria,
            "config": {"secs": SECS, "rate": RATE, "workers": WORKERS, "tenants": N_TENANTS, "faults": FAULTS,
                       "fault_secs": FAULT_SECS, "sample_secs": SAMPLE_SECS, "binary": BIN, "port": PORT,
                       "weights": {o: WEIGHTS[o] for o in ops}},
            "plugin": plugin_note, "duration_secs": round(duration, 1),
            "achieved_rps": round(sum(r["total"] for r in table.values()) / duration, 1),
            "tenants": [{"slug": t.slug, "region": t.region, "isolation": t.isolation, "database": t.database,
                         "schema": t.schema, "plugin": t.plugin} for t in tenants],
            "operations": table, "webhook_deliveries": hooks, "samples": SAMPLES, "rss": rss,
            "server_starts": server.starts, "faults": faults, "accounting": accounting,
            "audit_verify": audit_verify, "drain": {"secs": drain_secs, "undelivered": drain_left},
            "error_samples": dict(ERROR_SAMPLES),
            "server_log": {"lines": len(log_lines), "error_lines": len(err_lines), "first_errors": err_lines[:20]},
        }
        (OUT / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
        write_svg(OUT / "soak.svg", list(table), max(load_end, 1))
        write_md(OUT / "report.md", report, table_txt)
        print()
        print(table_txt)
        print()
        for c in criteria:
            state = "ok" if c["ok"] else ("skipped" if c["ok"] is None else "FAILED")
            print(f"[{state:^7}] {c['name']}: {c['detail']}")
        for f in faults:
            for e in f["expectations"]:
                print(f"          fault {f['fault']}: {'ok' if e['ok'] else 'FAILED'}: {e['check']}")
        print(f"\nreport: {OUT}/report.md, report.json, soak.svg; server log: {OUT}/server.log")
        print("PASS" if passed else "FAIL: " + "; ".join(c["name"] for c in criteria if c["ok"] is False))
        if passed and not KEEP_TENANTS:
            admin = {"Authorization": f"Bearer {ADMIN}"}
            for t in tenants:
                try:
                    call(check_client, "DELETE", f"/admin/v1/tenants/{t.slug}?confirm={t.slug}", headers=admin,
                         expect=None)
                except (OSError, http.client.HTTPException):
                    pass
        elif tenants:
            log(f"tenants kept for inspection: {', '.join(t.slug for t in tenants)}")
        exit_code = 0 if passed else 1
    except SetupError as e:
        log(f"setup failed: {e}")
        exit_code = 2
    finally:
        STOP.set()
        server.stop()
        rx.stop()
        for svc in ("postgres", "redis", "keycloak"):
            if svc in RESTORE:
                log(f"bringing {svc} back")
                try:
                    devstack("start", svc)
                except (subprocess.SubprocessError, OSError) as e:
                    log(f"could not start {svc}: {e} (run scripts/devstack.sh up)")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
