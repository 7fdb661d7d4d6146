#!/usr/bin/env python3
"""The proxy's own cost, side by side in one run: rtsup's balancer, the minimal pingora proxy
(the ceiling: pingora with nothing but `upstream_peer`, same runtime layout), nginx, and no
proxy, all in front of the same fast backend (nginx `return 200`, supervised by rtsup as its
one worker), so the backend is never the bottleneck.

  bench/proxy_speed.py        (needs: cargo build --release --examples -p rtsup-balancer, nginx, wrk)

Per proxy: keep-alive req/s (wrk -t1 -c50), its CPU per request (from /proc, and its user and
system parts: the kernel's share is the loopback TCP stack every proxy pays), and the p50 /
p99 latency at c=1 and the latency added over direct; medians of ROUNDS interleaved rounds.
"rtsup, case kept" is a second rtsup with `preserve_header_case = true` (the price of that
option), in front of its own copy of the same backend.
THREADS (default 2) sets rtsup's `[balancer] threads`, the minimal proxy's services and
nginx's worker_processes. Raw numbers: target/bench/proxy_speed.json.
"""
import json, os, random, re, shutil, signal, statistics, subprocess, sys, tempfile, time

from common import BIN, ROOT, children, cpu_ticks_split, nginx_backend, nginx_front, start_rtsup, to_ms, us_per, wait_port
MINIMAL = os.path.join(ROOT, "target/release/examples/minimal_proxy")
ROUNDS = int(os.environ.get("ROUNDS", "3"))
THREADS = int(os.environ.get("THREADS", "2"))
DURATION = os.environ.get("DURATION", "5s")


def wrk(port, conns, pids):
    user0, sys0 = cpu_ticks_split(pids)
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{DURATION}", "--latency", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True).stdout
    user1, sys1 = cpu_ticks_split(pids)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    per_req = lambda ticks: us_per(ticks, total) if pids else None
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": to_ms(re.search(r"\s50%\s+(\S+)", out).group(1)),
            "p99_ms": to_ms(re.search(r"\s99%\s+(\S+)", out).group(1)),
            "cpu_us_per_req": per_req(user1 - user0 + sys1 - sys0),
            "user_us_per_req": per_req(user1 - user0),
            "sys_us_per_req": per_req(sys1 - sys0),
            "non2xx": int(errors.group(1)) if errors else 0}


def start_balancer(work, backend, lb, extra=""):
    """rtsup supervising its nginx backend on `backend`, proxying on `lb`, with `extra` lines
    in `[balancer]`."""
    return start_rtsup(work, nginx_backend(work, backend) + f"""[balancer]
listen = "127.0.0.1:{lb}"
# nginx here logs no requests either.
access_log = "off"
threads = {THREADS}
{extra}""")


def main():
    for path in (BIN, MINIMAL):
        if not os.path.exists(path):
            sys.exit(f"missing {path}: cargo build --release --examples -p rtsup-balancer && cargo build --release")
    work = tempfile.mkdtemp(prefix="rtsup-speed-")
    base = random.randint(20000, 31000)
    backend, lb, minimal, ngx = base, base + 10, base + 11, base + 12
    backend_cased, lb_cased = base + 1, base + 13
    rtsup = start_balancer(work, backend, lb)
    work_cased = tempfile.mkdtemp(prefix="rtsup-speed-case-")
    rtsup_cased = start_balancer(work_cased, backend_cased, lb_cased, "preserve_header_case = true\n")
    for port in (backend, lb, backend_cased, lb_cased):
        wait_port(port)
    mini = subprocess.Popen([MINIMAL, f"127.0.0.1:{minimal}", str(THREADS), f"127.0.0.1:{backend}"],
                            stderr=subprocess.DEVNULL)
    wait_port(minimal)
    ngx_conf = nginx_front(work, ngx, backend, THREADS)
    nginx = subprocess.Popen(["nginx", "-p", work, "-c", ngx_conf, "-g", "daemon off;"])
    wait_port(ngx)
    time.sleep(1)
    targets = {"rtsup": (lb, lambda: [rtsup.pid]), "rtsup, case kept": (lb_cased, lambda: [rtsup_cased.pid]),
               "pingora-minimal": (minimal, lambda: [mini.pid]),
               "nginx": (ngx, lambda: [nginx.pid] + children(nginx.pid)), "direct": (backend, lambda: [])}
    raw = {name: {"load": [], "c1": []} for name in targets}
    try:
        for r in range(ROUNDS):
            for name, (port, pids) in targets.items():
                print(f"# round {r + 1}: {name}", file=sys.stderr)
                raw[name]["load"].append(wrk(port, 50, pids()))
                raw[name]["c1"].append(wrk(port, 1, pids()))
    finally:
        nginx.send_signal(signal.SIGQUIT)
        mini.kill()  # pingora's own shutdown waits out a 300 s grace period
        rtsup.send_signal(signal.SIGTERM)
        rtsup_cased.send_signal(signal.SIGTERM)
        nginx.wait(timeout=30)
        mini.wait(timeout=30)
        rtsup.wait(timeout=60)
        rtsup_cased.wait(timeout=60)
    med = lambda name, kind, key: statistics.median(x[key] for x in raw[name][kind])
    summary = {}
    for name in targets:
        s = summary[name] = {"rps": med(name, "load", "rps"), "p99_ms": med(name, "load", "p99_ms"),
                             "c1_p50_ms": med(name, "c1", "p50_ms"),
                             "non2xx": sum(x["non2xx"] for x in raw[name]["load"])}
        if name != "direct":
            for key in ("cpu_us_per_req", "user_us_per_req", "sys_us_per_req"):
                s[key] = med(name, "load", key)
    for s in summary.values():
        s["x_nginx"] = round(s["rps"] / summary["nginx"]["rps"], 2)
        s["added_c1_ms"] = round(s["c1_p50_ms"] - summary["direct"]["c1_p50_ms"], 3)
    os.makedirs(os.path.join(ROOT, "target/bench"), exist_ok=True)
    with open(os.path.join(ROOT, "target/bench/proxy_speed.json"), "w") as f:
        json.dump({"summary": summary, "raw": raw, "threads": THREADS}, f, indent=1)
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(work_cased, ignore_errors=True)
    print(f"| {THREADS} proxy threads/workers, wrk -t1 -c50 {DURATION}, median of {ROUNDS} | req/s | × nginx | p99 (ms) | proxy CPU per request (µs) | of which user / system (µs) | p50 at c=1 (ms) | added at c=1 (ms) | non-2xx |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, s in summary.items():
        split = f"{s['user_us_per_req']} / {s['sys_us_per_req']}" if "user_us_per_req" in s else "—"
        print(f"| {name} | {s['rps']:,.0f} | {s['x_nginx']} | {s['p99_ms']:.2f} | {s.get('cpu_us_per_req', '—')} | {split} | "
              f"{s['c1_p50_ms']:.3f} | {s['added_c1_ms']:.3f} | {s['non2xx']} |")


if __name__ == "__main__":
    main()
