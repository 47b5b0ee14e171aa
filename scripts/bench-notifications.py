#!/usr/bin/env python3
"""Notifications benchmark against a running server (scripts/bench-notifications.sh starts one).

Makes a local-mode tenant, writes R users straight into its schema (psql), and sends one
notification of a category with the in-app and email channels to everyone. Prints the time
until every inbox item is stored and until every mail is recorded sent (the devstack's sink
writes a mail to its Maildir before it answers 250, so "sent" means "in the sink"), the
sustained mail rate, the inbox read p50/p99 over HTTP (one keep-alive connection, one request
after another, Python included), and the sink's own limit: the same number of mails sent by
`smtplib` over as many connections as the server uses, with nothing else to do.
"""
import http.client, json, os, smtplib, statistics, subprocess, sys, threading, time, uuid
from email.message import EmailMessage

PORT, ADMIN, R, N, DB_URL = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
CONC = int(os.environ.get("NEOTENANT_NOTIFICATIONS__CONCURRENCY", "16"))
conn = http.client.HTTPConnection("127.0.0.1", int(PORT))


def call(method, path, body=None, headers=None):
    global conn
    h = {"Content-Type": "application/json", **(headers or {})}
    payload = json.dumps(body) if body is not None else None
    try:
        conn.request(method, path, body=payload, headers=h)
        res = conn.getresponse()
    except (ConnectionError, http.client.HTTPException):
        # The server closed an idle keep-alive connection: open another.
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", int(PORT))
        conn.request(method, path, body=payload, headers=h)
        res = conn.getresponse()
    data = res.read()
    return res.status, (json.loads(data) if data else None)


def psql(database, sql):
    out = subprocess.run(["psql", f"{DB_URL}/{database}", "-tAc", sql], check=True,
                         capture_output=True, text=True)
    return out.stdout.strip()


run = uuid.uuid4().hex[:8]
slug = f"bench-notify-{run}"
admin = {"Authorization": f"Bearer {ADMIN}"}
s, tenant = call("POST", "/admin/v1/tenants", {"slug": slug, "display_name": "Bench notifications",
                                              "region": "us", "identity": {"mode": "local"}}, admin)
assert s == 201, (s, tenant)
db, schema = tenant["database"], tenant["schema"]
s, b = call("POST", f"/admin/v1/tenants/{slug}/local-users",
            {"username": "boss", "email": f"boss-{run}@bench.test", "password": "bench-Password-1"}, admin)
assert s == 201, (s, b)
s, _ = call("POST", f"/admin/v1/tenants/{slug}/role-assignments", {"role": "owner", "user_id": b["id"]}, admin)
assert s == 204
s, b = call("POST", "/v1/auth/login", {"username": "boss", "password": "bench-Password-1"}, {"X-Tenant": slug})
user = {"X-Tenant": slug, "Authorization": f"Bearer {b['access_token']}"}
s, b = call("PUT", "/v1/notification-categories/bench", {
    "name": "Bench", "channels": ["in_app", "email"],
    "variables": {"title": {"type": "string", "required": True}, "body": {"type": "string"}}}, user)
assert s == 200, (s, b)
psql(db, f"""INSERT INTO "{schema}".users (id, subject, email, display_name, status)
             SELECT gen_random_uuid(), 'bench-' || i, 'b' || i || '-{run}@bench.test', 'User ' || i, 'active'
             FROM generate_series(1, {R}) AS i""")

t0 = time.perf_counter()
s, n = call("POST", "/v1/notifications", {"category": "bench", "audience": {"everyone": True},
                                          "data": {"title": "Release 4.2 is out", "body": "What changed, and why."}}, user)
assert s == 202, (s, n)
accepted = time.perf_counter() - t0
nid, total = n["id"], n["recipients"]
stored = sent_all = first_sent = None
while sent_all is None:
    items, sent = psql(db, f"""SELECT (SELECT count(*) FROM "{schema}".inbox_items WHERE notification_id = '{nid}'),
                                      (SELECT count(*) FROM "{schema}".notification_deliveries
                                        WHERE notification_id = '{nid}' AND channel = 'email' AND status = 'sent')""").split("|")
    now = time.perf_counter() - t0
    if stored is None and int(items) >= total:
        stored = now
    if first_sent is None and int(sent) > 0:
        first_sent = now
    if int(sent) >= total:
        sent_all = now
    if now > 900:
        sys.exit(f"gave up: {items} items, {sent} mails after {now:.0f} s")
    time.sleep(0.05)
failed = psql(db, f"""SELECT count(*) FROM "{schema}".notification_deliveries
                      WHERE notification_id = '{nid}' AND status NOT IN ('sent', 'delivered')""")
print(f"fan-out to {total} recipients (in-app + email): API answered in {accepted * 1000:.0f} ms; "
      f"all inbox items stored after {stored:.2f} s; all mails in the sink after {sent_all:.2f} s; "
      f"{failed} not sent")
print(f"sustained mail rate: {total / (sent_all - first_sent):.0f} mails/s "
      f"({CONC} at once, first mail after {first_sent:.2f} s)")

# The sink's own limit: the same number of mails over CONC plain smtplib connections.
def blast(k, count):
    with smtplib.SMTP("127.0.0.1", 18025) as smtp:
        for i in range(count):
            m = EmailMessage()
            m["From"], m["To"], m["Subject"] = "bench@bench.test", f"raw{k}-{i}-{run}@bench.test", "Release 4.2 is out"
            m.set_content("What changed, and why.")
            m.add_alternative("<p>What changed, and why.</p>", subtype="html")
            smtp.send_message(m)

t = time.perf_counter()
per = max(1, total // CONC)
threads = [threading.Thread(target=blast, args=(k, per)) for k in range(CONC)]
[th.start() for th in threads]
[th.join() for th in threads]
raw = per * CONC / (time.perf_counter() - t)
print(f"the sink's limit (smtplib, {CONC} connections, nothing else): {raw:.0f} mails/s; "
      f"the platform reaches {total / (sent_all - first_sent) / raw:.2f} of it")

# Inbox reads: the boss's inbox with 60 items.
for i in range(59):
    s, _ = call("POST", "/v1/notifications", {"category": "bench", "audience": {"roles": ["owner"]},
                                              "data": {"title": f"item {i}"}}, user)
    assert s == 202, s
time.sleep(2)


def measure(label, fn):
    for _ in range(200):
        fn()
    times = []
    for _ in range(N):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    print(f"{label}: p50 {statistics.median(times):.2f} ms, p99 {times[int(len(times) * 0.99) - 1]:.2f} ms "
          f"({N} requests, one connection)")


def inbox():
    s, page = call("GET", "/v1/me/inbox?limit=20", None, user)
    assert s == 200 and len(page["items"]) == 20, (s, page)


def count():
    s, _ = call("GET", "/v1/me/inbox/count", None, user)
    assert s == 200


measure("GET /v1/me/inbox?limit=20", inbox)
measure("GET /v1/me/inbox/count", count)
s, _ = call("DELETE", f"/admin/v1/tenants/{slug}?confirm={slug}", None, admin)

# Leave the sink as it was: tests scan it, and 20,000 more files slow every scan.
sink = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".devstack", "smtp", "maildir", "new")
for name in os.listdir(sink):
    path = os.path.join(sink, name)
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
        if f"-{run}@bench.test".encode() in head:
            os.remove(path)
    except OSError:
        pass
