#!/usr/bin/env python3
"""Webhooks benchmark (scripts/bench-webhooks.sh sets the environment and runs it).

Starts the server itself (so it can kill it), makes a local-mode tenant with one endpoint
pointing at a receiver in a child process (asyncio, keep-alive, answers 204 at once, verifies
every 50th signature with the Standard Webhooks reference library), then:

1. steady run: writes N outbox events straight into the tenant's schema and measures the time
   until the receiver has every one: deliveries/s, and per event the time from its outbox
   timestamp to receipt (p50/p99);
2. crash run: writes N more, kills the server with SIGKILL when about half have arrived,
   restarts it, and checks every event arrived (duplicates counted, none missing).
"""
import http.client, json, multiprocessing, os, signal, statistics, subprocess, sys, time, uuid

BIN, PORT, ADMIN, N, DB_URL = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]


def receiver(port_q, out_q, secret_q):
    import asyncio
    from datetime import datetime, timezone
    from standardwebhooks.webhooks import Webhook
    seen = {}
    state = {"verified": 0, "bad": 0, "secret": None, "n": 0}

    class Proto(asyncio.Protocol):
        def connection_made(self, t):
            self.t, self.buf = t, b""

        def data_received(self, data):
            self.buf += data
            while True:
                head_end = self.buf.find(b"\r\n\r\n")
                if head_end < 0:
                    return
                head = self.buf[:head_end].decode("latin-1").split("\r\n")
                headers = {}
                for line in head[1:]:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length", "0"))
                if len(self.buf) < head_end + 4 + length:
                    return
                body = self.buf[head_end + 4:head_end + 4 + length]
                self.buf = self.buf[head_end + 4 + length:]
                now = time.time()
                evt = json.loads(body)
                eid = evt["id"]
                seen.setdefault(eid, [now, evt["timestamp"], 0])[2] += 1
                state["n"] += 1
                if state["secret"] and state["n"] % 50 == 0:
                    try:
                        Webhook(state["secret"]).verify(body, headers)
                        state["verified"] += 1
                    except Exception:
                        state["bad"] += 1
                self.t.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Proto, "127.0.0.1", 0)
        port_q.put(server.sockets[0].getsockname()[1])
        state["secret"] = await loop.run_in_executor(None, secret_q.get)
        while True:
            cmd = await loop.run_in_executor(None, out_q.get)
            if cmd == "stop":
                break
            if cmd == "count":
                secret_q.put(len(seen))
                continue
            # Report: per event id, (first receipt, its outbox timestamp, times received).
            secret_q.put((dict(seen), state["verified"], state["bad"]))
    asyncio.run(main())


conn = http.client.HTTPConnection("127.0.0.1", PORT)


def call(method, path, body=None, headers=None):
    global conn
    h = {"Content-Type": "application/json", **(headers or {})}
    payload = json.dumps(body) if body is not None else None
    try:
        conn.request(method, path, body=payload, headers=h)
        res = conn.getresponse()
    except (ConnectionError, http.client.HTTPException):
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", PORT)
        conn.request(method, path, body=payload, headers=h)
        res = conn.getresponse()
    data = res.read()
    return res.status, (json.loads(data) if data else None)


def psql(database, sql):
    out = subprocess.run(["psql", f"{DB_URL}/{database}", "-tAc", sql], check=True,
                         capture_output=True, text=True)
    return out.stdout.strip()


def start_server():
    p = subprocess.Popen([BIN, "serve"])
    for _ in range(200):
        try:
            c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=1)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                return p
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit("the server did not start")


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


port_q, cmd_q, secret_q = multiprocessing.Queue(), multiprocessing.Queue(), multiprocessing.Queue()
rx = multiprocessing.Process(target=receiver, args=(port_q, cmd_q, secret_q), daemon=True)
rx.start()
rx_port = port_q.get()
server = start_server()
try:
    run = uuid.uuid4().hex[:8]
    slug = f"bench-hooks-{run}"
    admin = {"Authorization": f"Bearer {ADMIN}"}
    s, tenant = call("POST", "/admin/v1/tenants", {"slug": slug, "display_name": "Bench webhooks",
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
    s, ep = call("POST", "/v1/webhooks/endpoints", {"url": f"http://127.0.0.1:{rx_port}/hook",
                                                    "event_types": ["resource.*"]}, user)
    assert s == 201, (s, ep)
    secret_q.put(ep["secret"])

    def write_events(n, tag):
        psql(db, f"""INSERT INTO "{schema}".outbox (topic, aggregate_type, aggregate_id, payload)
                     SELECT 'resource.created', 'bench', '{tag}-' || i, jsonb_build_object('version', 1)
                     FROM generate_series(1, {n}) AS i""")

    def report():
        cmd_q.put("report")
        return secret_q.get()

    def count():
        cmd_q.put("count")
        return secret_q.get()

    def wait_for(total, deadline_s, on_half=None, half_at=0):
        t0 = time.time()
        half_done = False
        while True:
            n = count()
            if on_half and not half_done and n >= half_at:
                half_done = True
                on_half()
            if n >= total or time.time() - t0 > deadline_s:
                return report()
            time.sleep(0.05)

    # Warm-up (connections, caches).
    write_events(200, "warm")
    wait_for(200, 60)

    t0 = time.time()
    write_events(N, "steady")
    seen, ok, bad = wait_for(N + 200, 600)
    steady = {k: v for k, v in seen.items() if True}
    # Outbox ids of this run: evt_<txid>_<seq>; the warm-up's are the 200 smallest seqs.
    ids = sorted(seen, key=lambda k: int(k.split("_")[2]))[200:]
    first = min(seen[k][0] for k in ids)
    last = max(seen[k][0] for k in ids)
    from datetime import datetime
    lat = [(seen[k][0] - datetime.fromisoformat(seen[k][1].replace("Z", "+00:00")).timestamp()) * 1000 for k in ids]
    dur = max(last - t0, 1e-9)
    print(f"steady: {len(ids)}/{N} events delivered in {dur:.2f} s from the write: {len(ids) / dur:,.0f} deliveries/s "
          f"(first to last receipt {last - first:.2f} s: {len(ids) / max(last - first, 1e-9):,.0f}/s)")
    print(f"outbox-to-receipt latency: p50 {statistics.median(lat):.0f} ms, p99 {pct(lat, 0.99):.0f} ms "
          f"(includes the write of the batch itself)")
    print(f"signatures checked by the reference library: {ok} good, {bad} bad")

    # Trickle: one event every 10 ms, each committed on its own: the latency a live system sees.
    before = len(seen)
    T = 1000
    psql(db, f"""DO $$ BEGIN FOR i IN 1..{T} LOOP
                   INSERT INTO "{schema}".outbox (topic, aggregate_type, aggregate_id, payload)
                   VALUES ('resource.updated', 'bench', 'trickle-' || i, jsonb_build_object('version', 2));
                   COMMIT; PERFORM pg_sleep(0.01); END LOOP; END $$""")
    seen, ok, bad = wait_for(before + T, 120)
    trickle = [k for k in seen if k not in steady]
    lat = [(seen[k][0] - datetime.fromisoformat(seen[k][1].replace("Z", "+00:00")).timestamp()) * 1000 for k in trickle]
    print(f"trickle: {len(trickle)}/{T} events, one per 10 ms: outbox-to-receipt latency p50 {statistics.median(lat):.0f} ms, "
          f"p99 {pct(lat, 0.99):.0f} ms (webhooks.worker_interval_ms = 20)")
    steady = dict(seen)

    # Crash run.
    before = len(seen)
    write_events(N, "crash")
    killed = {}

    def kill_and_restart():
        global server
        server.send_signal(signal.SIGKILL)
        server.wait()
        killed["at"] = time.time()
        server = start_server()
        killed["back"] = time.time()

    seen, ok, bad = wait_for(before + N, 900, on_half=kill_and_restart, half_at=before + N // 2)
    crash_ids = [k for k in seen if k not in steady]
    dups = sum(seen[k][2] - 1 for k in crash_ids)
    missing = N - len(crash_ids)
    print(f"crash run: server killed (-9) after {N // 2} of {N}, back in {killed.get('back', 0) - killed.get('at', 0):.2f} s; "
          f"{len(crash_ids)}/{N} events arrived, {missing} missing, {dups} delivered twice (at least once)")
    print(f"signatures checked by the reference library: {ok} good, {bad} bad")
    s, _ = call("DELETE", f"/admin/v1/tenants/{slug}?confirm={slug}", None, admin)
    if missing:
        sys.exit(1)
finally:
    cmd_q.put("stop")
    server.send_signal(signal.SIGTERM)
    server.wait()
