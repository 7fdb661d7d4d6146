#!/usr/bin/env python3
"""The added latency of a request routed to another host's worker, against a local one.

Starts a private Redis and two rtsup "hosts" (127.0.0.2 and 127.0.0.3, two reference workers
each, one [cluster]), opens engine.io polling sessions on host A, then sends, one at a time on
a kept-alive connection, ROUNDS x N polling POSTs of those sessions:
  direct  straight to the owning worker (no proxy),
  local   to host A (its own worker: one proxy hop),
  remote  to host B (B proxies to A's rtsup, which proxies to the worker: two hops),
and prints p50/p90/p99 per path and the difference remote - local.

  python3 bench/cluster_latency.py          # N=2000 per path, ROUNDS=3, release binary
  RTSUP_BIN=target/debug/rtsup N=200 python3 bench/cluster_latency.py
"""
import http.client, json, os, shutil, signal, socket, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import BIN, ROOT  # noqa: E402

N = int(os.environ.get("N", "2000"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
REDIS_PORT, LB, WORKERS = 26379, 26080, 26100
EIO = "/socket.io/?EIO=4&transport=polling"


def wait(host, port, deadline=60):
    end = time.time() + deadline
    while time.time() < end:
        try:
            socket.create_connection((host, port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{host}:{port} never opened")


def start_host(work, n, base):
    d = os.path.join(work, f"h{n}")
    os.makedirs(d)
    conf = os.path.join(d, "rtsup.toml")
    with open(conf, "w") as f:
        f.write(f"""[supervisor]
control_socket = "{d}/s.sock"
log_dir = "{d}/logs"
[[app]]
name = "chat"
command = "{BIN}"
args = ["worker"]
instances = 2
port = {base}
ready = "http:/health"
env = {{ REDIS_URL = "redis://127.0.0.1:{REDIS_PORT}", RTSUP_RATE_LIMIT = "1000000" }}
[balancer]
listen = "127.0.0.{n}:{LB}"
threads = 1
access_log = "off"
cookie_secret = "benchmark secret, shared by the hosts"
[cluster]
name = "bench"
redis = "redis://127.0.0.1:{REDIS_PORT}"
advertise = "127.0.0.{n}:{LB}"
""")
    p = subprocess.Popen([BIN, "start", "-c", conf], stderr=open(os.path.join(d, "rtsup.log"), "w"))
    wait(f"127.0.0.{n}", LB)
    return p, d


def status(d):
    out = subprocess.run([BIN, "status", "--json", "--socket", f"{d}/s.sock"], capture_output=True, text=True)
    return json.loads(out.stdout)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def run(host, port, sessions, n):
    c = http.client.HTTPConnection(host, port, timeout=10)
    lat = []
    for i in range(n):
        sid = sessions[i % len(sessions)]
        t = time.perf_counter()
        c.request("POST", f"{EIO}&sid={sid}", body=b'42["noop"]', headers={"Content-Type": "text/plain"})
        r = c.getresponse()
        r.read()
        lat.append((time.perf_counter() - t) * 1000)
        if r.status != 200:
            sys.exit(f"{host}:{port} answered {r.status}")
    c.close()
    return lat


def main():
    if not os.path.exists(BIN):
        sys.exit(f"build it first: cargo build --release ({BIN})")
    work = tempfile.mkdtemp(prefix="rtsup-cluster-bench-")
    procs = [subprocess.Popen(["redis-server", "--port", str(REDIS_PORT), "--save", "", "--appendonly", "no"],
                              stdout=subprocess.DEVNULL)]
    try:
        wait("127.0.0.1", REDIS_PORT)
        a, da = start_host(work, 2, WORKERS)
        b, db = start_host(work, 3, WORKERS + 10)
        procs += [a, b]
        end = time.time() + 60
        while time.time() < end and not all(w["state"] == "ready" for h in (da, db) for w in status(h)["apps"][0]["workers"]):
            time.sleep(0.2)
        time.sleep(1.5)  # the hosts see each other
        # Sessions of host A, connected; the worker each lives on.
        sessions, owner = [], {}
        for _ in range(20):
            c = http.client.HTTPConnection("127.0.0.2", LB)
            c.request("GET", EIO)
            body = c.getresponse().read().decode()
            sid = json.loads(body[1:])["sid"]
            c.request("POST", f"{EIO}&sid={sid}", body=b"40", headers={"Content-Type": "text/plain"})
            c.getresponse().read()
            sessions.append(sid)
        # Direct: the sessions of worker 0 only, to its port.
        workers = status(da)["apps"][0]["workers"]
        direct_sessions = []
        for sid in sessions:
            c = http.client.HTTPConnection("127.0.0.1", workers[0]["port"], timeout=5)
            c.request("POST", f"{EIO}&sid={sid}", body=b'42["noop"]', headers={"Content-Type": "text/plain"})
            if c.getresponse().status == 200:
                direct_sessions.append(sid)
        results = {"direct": [], "local": [], "remote": []}
        for _ in range(ROUNDS):
            if direct_sessions:
                results["direct"] += run("127.0.0.1", workers[0]["port"], direct_sessions, N)
            results["local"] += run("127.0.0.2", LB, sessions, N)
            results["remote"] += run("127.0.0.3", LB, sessions, N)
        print(f"engine.io polling POST, 1 at a time, {ROUNDS} x {N} per path ({os.path.relpath(BIN, ROOT)})")
        print(f"{'path':<8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
        for k, v in results.items():
            if v:
                print(f"{k:<8} {pct(v, .5):8.3f} {pct(v, .9):8.3f} {pct(v, .99):8.3f}")
        lo, re_ = results["local"], results["remote"]
        print(f"remote - local: p50 +{pct(re_, .5) - pct(lo, .5):.3f} ms, p99 +{pct(re_, .99) - pct(lo, .99):.3f} ms")
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
