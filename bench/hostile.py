#!/usr/bin/env python3
"""Hostile clients against rtsup and nginx (both with their default limits), same run, same
two reference workers: proxy memory per hostile connection at the peak and 30 s after the
attack ends, and a legitimate client's handshake latency during the attack.

  bench/hostile.py            (needs: cargo build --release, nginx)

Attacks, each from 16 loopback addresses (127.0.0.10-25) so per-address caps do not hide
the cost per connection:
  partial  N connections each holding ~28 KB of header without its end (under both proxies'
           header limits: the most a client can make a proxy hold)
  endless  N connections each sending 1 MB of header without its end
  idle     N connections that send nothing
Prints a markdown table; raw numbers go to target/bench/hostile.json.
"""
import http.client, json, os, random, resource, shutil, signal, socket, subprocess, sys, tempfile, threading, time

from common import BIN, ROOT, children, reference_app, rss_kb, start_rtsup, wait_port
N = int(os.environ.get("HOSTILE_N", "2000"))
SETTLE = float(os.environ.get("HOSTILE_SETTLE", "30"))


def connect(port, i):
    s = socket.socket()
    s.bind((f"127.0.0.{10 + i % 16}", 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    return s


def partial(port):
    held = []
    line = b"X-Pad: " + b"a" * 3990 + b"\r\n"
    for i in range(N):
        try:
            s = connect(port, i)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + line * 7)
            held.append(s)
        except OSError:
            pass
    return held


def endless(port):
    held, lock = [], threading.Lock()
    chunk = b"a" * 65536

    def run(k):
        for i in range(k, N, 8):
            try:
                s = connect(port, i)
            except OSError:
                continue
            with lock:
                held.append(s)
            try:
                s.settimeout(2)
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
                for _ in range(16):
                    s.sendall(chunk)
            except OSError:
                pass

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return held


def idle(port):
    held = []
    for i in range(N):
        try:
            held.append(connect(port, i))
        except OSError:
            pass
    return held


def handshakes(port, n=100):
    took, failed = [], 0
    for _ in range(n):
        t = time.perf_counter()
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=("127.0.0.2", 0))
            c.request("GET", "/socket.io/?EIO=4&transport=polling")
            r = c.getresponse()
            r.read()
            c.close()
            if r.status != 200:
                failed += 1
                continue
        except OSError:
            failed += 1
            continue
        took.append((time.perf_counter() - t) * 1000)
    took.sort()
    pick = lambda q: round(took[min(len(took) - 1, int(len(took) * q))], 2) if took else None
    return {"p50_ms": pick(0.5), "p99_ms": pick(0.99), "failed": failed}


def answered(held):
    """How many of the hostile connections the proxy has closed (or answered and closed)."""
    closed = 0
    for s in held:
        try:
            s.setblocking(False)
            s.recv(1 << 16)  # an answer or the end: either way the proxy is done with it
            closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    return closed


def attack(name, fn, port, pids_fn):
    before = rss_kb(pids_fn())
    peak = [before]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kb(pids_fn()))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    held = fn(port)
    time.sleep(1)
    during = handshakes(port)
    stop.set()
    sampler.join()
    closed = answered(held)
    for s in held:
        s.close()
    time.sleep(SETTLE)
    after = rss_kb(pids_fn())
    return {"attack": name, "held": len(held), "closed_by_proxy": closed, "rss_before_kb": before,
            "rss_peak_kb": peak[0], "rss_after_kb": after,
            "peak_kb_per_conn": round((peak[0] - before) / max(len(held), 1), 1),
            "after_minus_before_kb": after - before, "legit": during}


def main():
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = tempfile.mkdtemp(prefix="rtsup-hostile-")
    base = random.randint(20000, 31000)
    lb, ngx = base + 10, base + 12
    rtsup = start_rtsup(work, reference_app(base, 2) + f"""[balancer]
listen = "127.0.0.1:{lb}"
# nginx here logs no requests either.
access_log = "off"
threads = 2
""")
    for p in [base, base + 1, lb]:
        wait_port(p)
    ngx_conf = os.path.join(work, "nginx.conf")
    with open(ngx_conf, "w") as f:
        # nginx defaults for every client limit (header buffers, timeouts); only what a proxy
        # for engine.io needs is set.
        f.write(f"""user root;
worker_processes 2;
worker_rlimit_nofile 65536;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log crit;
events {{ worker_connections 30000; }}
http {{
  access_log off;
  upstream workers {{
    ip_hash;
    server 127.0.0.1:{base};
    server 127.0.0.1:{base + 1};
    keepalive 64;
  }}
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
  server {{
    listen 127.0.0.1:{ngx} reuseport;
    location / {{
      proxy_pass http://workers;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
    }}
  }}
}}
""")
    nginx = subprocess.Popen(["nginx", "-p", work, "-c", ngx_conf, "-g", "daemon off;"])
    wait_port(ngx)
    time.sleep(1)
    targets = {"rtsup": lb, "nginx": ngx}
    pids = {"rtsup": lambda: [rtsup.pid], "nginx": lambda: [nginx.pid] + children(nginx.pid)}
    results = {}
    try:
        for name, port in targets.items():
            results[name] = {"baseline": handshakes(port)}
            for attack_name, fn in (("partial", partial), ("endless", endless), ("idle", idle)):
                print(f"# {name}: {attack_name} x {N}", file=sys.stderr)
                results[name][attack_name] = attack(attack_name, fn, port, pids[name])
    finally:
        nginx.send_signal(signal.SIGQUIT)
        rtsup.send_signal(signal.SIGTERM)
        nginx.wait(timeout=30)
        rtsup.wait(timeout=60)
    os.makedirs(os.path.join(ROOT, "target/bench"), exist_ok=True)
    with open(os.path.join(ROOT, "target/bench/hostile.json"), "w") as f:
        json.dump(results, f, indent=1)
    shutil.rmtree(work, ignore_errors=True)

    print(f"| {N} hostile connections (same run, {os.cpu_count()} cores) | rtsup | nginx |")
    print("|---|---|---|")
    print("| legit handshake p50 / p99 (ms), no attack | " + " | ".join(
        f"{results[n]['baseline']['p50_ms']} / {results[n]['baseline']['p99_ms']}" for n in targets) + " |")
    for a in ("partial", "endless", "idle"):
        row = lambda key, fmt=str: " | ".join(fmt(results[n][a][key]) for n in targets)
        print(f"| **{a}**: RSS before → peak → {SETTLE:.0f} s after (MB) | " + " | ".join(
            "{:.1f} → {:.1f} → {:.1f}".format(results[n][a]['rss_before_kb'] / 1024, results[n][a]['rss_peak_kb'] / 1024,
                                                results[n][a]['rss_after_kb'] / 1024) for n in targets) + " |")
        print(f"| {a}: peak KB per connection | " + row("peak_kb_per_conn") + " |")
        print(f"| {a}: connections closed by the proxy at the end | " + row("closed_by_proxy") + " |")
        print(f"| {a}: legit handshake p50 / p99 (ms), failed | " + " | ".join(
            f"{results[n][a]['legit']['p50_ms']} / {results[n][a]['legit']['p99_ms']}, {results[n][a]['legit']['failed']}"
            for n in targets) + " |")


if __name__ == "__main__":
    main()
