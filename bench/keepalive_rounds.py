#!/usr/bin/env python3
"""Keep-alive GETs through rtsup and nginx round by round, with what moves a round: the
proxy's CPU per request and the upstream connections it opened (compare.py's layout: four
reference workers supervised by rtsup, two proxy threads / nginx workers, wrk -t2 -c64).

  python3 bench/keepalive_rounds.py     (needs: a release build, nginx, wrk, perf)

ROUNDS (default 4) interleaved rounds of DURATION seconds (default 5) each, the order shuffled
per round; prints one line per round: req/s, the proxy's user and system CPU per request (µs),
its `connect` calls during the round (perf's syscall tracepoint), and the workers' CPU per
request. A proxy whose idle upstream pool is too small for its share of the clients shows it
as thousands of connects a round (docs/BENCHMARKS.md, run Q).
"""
import os, random, re, signal, subprocess, sys, tempfile, time

from common import BIN, HZ, children, cpu_ticks_split, reference_app, start_rtsup, wait_port

ROUNDS = int(os.environ.get("ROUNDS", "4"))
DURATION = int(os.environ.get("DURATION", "5"))


def measure(port, proxy, workers):
    perf = subprocess.Popen(["perf", "stat", "-e", "syscalls:sys_enter_connect", "-p", ",".join(map(str, proxy)),
                             "--", "sleep", str(DURATION)], stderr=subprocess.PIPE, text=True)
    p0, w0 = cpu_ticks_split(proxy), cpu_ticks_split(workers)
    out = subprocess.run(["wrk", "-t2", "-c64", f"-d{DURATION}s", f"http://127.0.0.1:{port}/health"],
                         capture_output=True, text=True).stdout
    p1, w1 = cpu_ticks_split(proxy), cpu_ticks_split(workers)
    stat = perf.communicate()[1]
    served = int(re.search(r"(\d+) requests in", out).group(1))
    us = lambda ticks: ticks / HZ * 1e6 / max(served, 1)
    connects = re.search(r"([\d,]+)\s+syscalls:sys_enter_connect", stat)
    return (f"{served / DURATION:8.0f} req/s  proxy user {us(p1[0] - p0[0]):4.1f} sys {us(p1[1] - p0[1]):4.1f} µs"
            f"  connects {connects.group(1) if connects else '?':>6}"
            f"  workers user {us(w1[0] - w0[0]):4.1f} sys {us(w1[1] - w0[1]):4.1f} µs"
            + ("  NON-2xx" if "Non-2xx" in out else ""))


def main():
    work = tempfile.mkdtemp(prefix="rtsup-rounds-")
    base = random.randint(20000, 31000)
    lb, ngx = base + 10, base + 12
    rtsup = start_rtsup(work, reference_app(base, 4) + f"""[balancer]
listen = "127.0.0.1:{lb}"
access_log = "off"
threads = 2
# wrk's 64 connections all come from 127.0.0.1 (nginx has no per-address bound either).
max_connections_per_address = 0
""")
    for port in [base + i for i in range(4)] + [lb]:
        wait_port(port)
    conf = os.path.join(work, "nginx.conf")
    servers = "\n".join(f"    server 127.0.0.1:{base + i};" for i in range(4))
    with open(conf, "w") as f:
        f.write(f"""worker_processes 2;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  upstream workers {{
{servers}
    keepalive 64;
  }}
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
  server {{ listen 127.0.0.1:{ngx} reuseport; location / {{ proxy_pass http://workers; }} }}
}}
""")
    nginx = subprocess.Popen(["nginx", "-p", work, "-c", conf, "-g", "daemon off;"])
    wait_port(ngx)
    time.sleep(2)
    workers = children(rtsup.pid)
    targets = {"rtsup": (lb, lambda: [rtsup.pid]), "nginx": (ngx, lambda: [nginx.pid] + children(nginx.pid))}
    try:
        for r in range(ROUNDS):
            order = list(targets)
            random.shuffle(order)
            for name in order:
                port, pids = targets[name]
                print(f"round {r + 1} {name:5} {measure(port, pids(), workers)}", flush=True)
    finally:
        nginx.send_signal(signal.SIGQUIT)
        rtsup.send_signal(signal.SIGTERM)
        nginx.wait(timeout=30)
        rtsup.wait(timeout=60)


if __name__ == "__main__":
    main()
