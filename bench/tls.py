#!/usr/bin/env python3
"""TLS termination, rtsup vs nginx, same run, same certificate (ECDSA P-256, made here with
openssl), both proxying to one nginx `return 200` backend (supervised by rtsup as its only
worker). Neither logs requests.

  cargo build --release && THREADS=1 python3 bench/tls.py   (needs nginx, wrk, openssl)

Scenarios, each `wrk -t1 -c50` for DURATION, medians of ROUNDS interleaved rounds:
  full handshakes: `Connection: close` on every request, so every request is a new TLS
  connection with a full handshake (wrk keeps no session); keep-alive: requests on open TLS
  connections. CPU per request is the proxy processes' user + system time over the requests.
Raw numbers: target/bench/tls.json.
"""
import json, os, random, re, shutil, signal, statistics, subprocess, sys, tempfile, time

from common import BIN, ROOT, children, cpu_ticks, nginx_backend, nginx_front, start_rtsup, to_ms, us_per, wait_port
ROUNDS = int(os.environ.get("ROUNDS", "3"))
THREADS = int(os.environ.get("THREADS", "1"))
DURATION = os.environ.get("DURATION", "5s")


def wrk(port, pids, close):
    before = cpu_ticks(pids)
    args = ["wrk", "-t1", "-c50", f"-d{DURATION}", "--latency"]
    if close:
        args += ["-H", "Connection: close"]
    out = subprocess.run(args + [f"https://127.0.0.1:{port}/"], capture_output=True, text=True).stdout
    used = cpu_ticks(pids) - before
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": to_ms(re.search(r"\s50%\s+(\S+)", out).group(1)),
            "p99_ms": to_ms(re.search(r"\s99%\s+(\S+)", out).group(1)),
            "cpu_us_per_req": us_per(used, total),
            "non2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": sum(map(int, socket_errors.groups())) if socket_errors else 0}


def main():
    if not os.path.exists(BIN):
        sys.exit(f"missing {BIN}: cargo build --release")
    work = tempfile.mkdtemp(prefix="rtsup-tls-")
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    base = random.randint(20000, 31000)
    backend, lb, ngx = base, base + 10, base + 12
    rtsup = start_rtsup(work, nginx_backend(work, backend) + f"""[balancer]
listen = "127.0.0.1:{lb}"
# nginx here logs no requests either.
access_log = "off"
threads = {THREADS}
tls_cert = "{cert}"
tls_key = "{key}"
""")
    wait_port(backend)
    wait_port(lb)
    ngx_conf = nginx_front(work, ngx, backend, THREADS, tls=(cert, key))
    nginx = subprocess.Popen(["nginx", "-p", work, "-c", ngx_conf, "-g", "daemon off;"])
    wait_port(ngx)
    time.sleep(1)
    targets = {"rtsup": (lb, lambda: [rtsup.pid]), "nginx": (ngx, lambda: [nginx.pid] + children(nginx.pid))}
    raw = {name: {"handshakes": [], "keepalive": []} for name in targets}
    try:
        for r in range(ROUNDS):
            for name, (port, pids) in targets.items():
                print(f"# round {r + 1}: {name}", file=sys.stderr)
                raw[name]["handshakes"].append(wrk(port, pids(), close=True))
                raw[name]["keepalive"].append(wrk(port, pids(), close=False))
    finally:
        nginx.send_signal(signal.SIGQUIT)
        rtsup.send_signal(signal.SIGTERM)
        nginx.wait(timeout=30)
        rtsup.wait(timeout=60)
    summary = {}
    for name in targets:
        summary[name] = {kind: {key: statistics.median(x[key] for x in raw[name][kind])
                                for key in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req")}
                         for kind in ("handshakes", "keepalive")}
        for kind in ("handshakes", "keepalive"):
            summary[name][kind]["errors"] = sum(x["non2xx"] + x["socket_errors"] for x in raw[name][kind])
    os.makedirs(os.path.join(ROOT, "target/bench"), exist_ok=True)
    with open(os.path.join(ROOT, "target/bench/tls.json"), "w") as f:
        json.dump({"summary": summary, "raw": raw, "threads": THREADS}, f, indent=1)
    shutil.rmtree(work, ignore_errors=True)
    for kind, title in (("handshakes", "full TLS handshakes (a new connection per request)"),
                        ("keepalive", "keep-alive requests over TLS")):
        print(f"\n| {title}, {THREADS} proxy thread(s)/worker(s), wrk -t1 -c50 {DURATION}, median of {ROUNDS} "
              "| req/s | × nginx | p50 (ms) | p99 (ms) | proxy CPU per request (µs) | errors |")
        print("|---|---|---|---|---|---|---|")
        for name in targets:
            s = summary[name][kind]
            x = s["rps"] / summary["nginx"][kind]["rps"]
            print(f"| {name} | {s['rps']:,.0f} | {x:.2f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | "
                  f"{s['cpu_us_per_req']} | {s['errors']} |")


if __name__ == "__main__":
    main()
