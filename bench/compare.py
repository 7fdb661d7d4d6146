#!/usr/bin/env python3
"""Side-by-side proxy benchmark: rtsup vs nginx vs direct, same run, same four rtsup-worker
processes (supervised by rtsup; nginx points at the same ports).

nginx is configured with the policy rtsup applies: sticky by client address (`ip_hash`, as
socket.io's documentation has it) for /socket.io/, round-robin for the other paths (an
operator's choice: only sessions need to stick), upstream keep-alive, and `X-Forwarded-For`
(rtsup sends it too). The Node clients connect from SOURCES (default 64)
loopback addresses of different /24 networks (bench/sources.js), as real clients of many
networks do: from one address, nginx's ip_hash would put every session on one worker while
rtsup spreads them, and the run would compare two different backend layouts. wrk has one
source address, hence round-robin for its path. The consecutive networks happen to fall
evenly on nginx's four workers (its best case; real networks spread less evenly).

  bench/compare.py            (needs: cargo build --release, nginx, wrk, node + tests/interop)

The WebSocket round trips are also measured with the clients spread over the four workers
themselves ("direct (4 workers)"): the proxies' layout without a proxy, so its ratio is what
the proxy adds (direct, one worker, also differs in the number of worker processes sharing
the cores).

Keep-alive HTTP, WebSocket round trips and polling handshakes are measured in ROUNDS
(default 3) interleaved rounds, the targets in a new random order each round, and reported as
medians (errors summed), so one noisy stretch of a shared 2-core machine does not decide a
measure; idle memory and fan-out are measured once. Keep-alive requests and polling sessions also
report the proxy's own user and system CPU per request or session (from /proc): a figure less
moved by the other processes on the machine than the rates. Prints a markdown table and each
goal of issue #14 as a ratio of the same run; raw numbers (every round) go to
target/bench/compare.json.
"""
import json, os, random, re, shutil, signal, statistics, subprocess, sys, tempfile, time

from common import (BIN, ROOT, children, cpu_ticks_split, nginx_reference_front, reference_balancer, rss_kb, to_ms, us_per,
                    wait_port)
NODE_ENV = dict(os.environ, NODE_PATH=os.path.join(ROOT, "tests/interop/node_modules"))
IDLE_SESSIONS = int(os.environ.get("IDLE_SESSIONS", "8000"))
FANOUT_CLIENTS = int(os.environ.get("FANOUT_CLIENTS", "1000"))
# WebSocket round trips: the target is measured with 1,000 clients.
WS_CLIENTS = int(os.environ.get("WS_CLIENTS", "1000"))
WS_ROUNDS = int(os.environ.get("WS_ROUNDS", "20"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
SOURCES = int(os.environ.get("SOURCES", "64"))
if not 0 <= SOURCES <= 254:
    sys.exit("SOURCES must be 0 (all from 127.0.0.1) to 254")


def merged(runs):
    """One measure over its rounds: the median of each number, errors summed."""
    if not runs:
        return {}
    out = {}
    for key, first in runs[0].items():
        values = [r.get(key) for r in runs]
        if isinstance(first, dict):
            out[key] = merged([v for v in values if isinstance(v, dict)])
        elif isinstance(first, (int, float)) and not isinstance(first, bool) \
                and all(isinstance(v, (int, float)) for v in values):
            out[key] = sum(values) if "error" in key or key == "non2xx" else statistics.median(values)
        else:
            out[key] = first
    return out


def node(script, *args, timeout=600):
    out = subprocess.run(["node", os.path.join(ROOT, script), *map(str, args)],
                         capture_output=True, text=True, env=NODE_ENV, timeout=timeout)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    return json.loads(lines[-1]) if lines else {"error": out.stderr[-500:]}


def proxy_cpu(pids, before, count):
    """The proxy's user and system CPU (µs) per unit of load (`count` of them) since `before`
    (`cpu_ticks_split` of `pids`); nothing for no proxy."""
    if not pids:
        return {}
    user, system = cpu_ticks_split(pids)
    return {"proxy_user_us": us_per(user - before[0], count), "proxy_sys_us": us_per(system - before[1], count)}


def wrk(port, pids):
    before = cpu_ticks_split(pids)
    out = subprocess.run(["wrk", "-t2", "-c64", "-d10s", "--latency", f"http://127.0.0.1:{port}/health"],
                         capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = to_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "non2xx": int(errors.group(1)) if errors else 0,
            **proxy_cpu(pids, before, total)}


def polling(port, pids):
    """Polling sessions established per second (bench/poll_rate.js), with the proxy's CPU per
    session."""
    before = cpu_ticks_split(pids)
    res = node("bench/poll_rate.js", f"http://127.0.0.1:{port}", 32, 10000, SOURCES)
    return {**res, **proxy_cpu(pids, before, res.get("sessions", 0))}


def idle(port, pids_fn):
    before = rss_kb(pids_fn())
    proc = subprocess.Popen(["node", os.path.join(ROOT, "bench/idle_ws.js"), f"ws://127.0.0.1:{port}",
                             str(IDLE_SESSIONS), "120000", str(SOURCES)], stdout=subprocess.PIPE, stdin=subprocess.PIPE,
                            text=True, env=NODE_ENV)
    status = json.loads(proc.stdout.readline())
    time.sleep(2)  # let allocations settle before reading RSS
    after = rss_kb(pids_fn())
    proc.stdin.close()
    proc.wait(timeout=30)
    n = max(status["open"], 1)
    return {"open": status["open"], "failed": status["failed"], "rss_before_kb": before,
            "rss_after_kb": after, "bytes_per_session": round((after - before) * 1024 / n)}


def main():
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release")
    work = tempfile.mkdtemp(prefix="rtsup-bench-")
    base = random.randint(20000, 31000)
    lb, ngx = base + 10, base + 12
    rtsup = reference_balancer(work, base, 4, lb, f"""[admin]
listen = "127.0.0.1:{base + 11}"
""")
    for p in [base + i for i in range(4)] + [lb]:
        wait_port(p)
    ngx_conf = nginx_reference_front(work, ngx, base, 4)
    nginx = subprocess.Popen(["nginx", "-p", work, "-c", ngx_conf, "-g", "daemon off;"])
    wait_port(ngx)
    time.sleep(1)
    # "direct4": the WebSocket clients spread over the four workers themselves, no proxy: the
    # proxies' layout without them (direct is one worker).
    targets = {"rtsup": lb, "nginx": ngx, "direct": base, "direct4": None}
    pids = {"rtsup": lambda: [rtsup.pid], "nginx": lambda: [nginx.pid] + children(nginx.pid), "direct": lambda: []}
    results = {}
    rounds = {name: {"http": [], "ws_rtt": [], "polling": []} for name in targets}
    try:
        for i in range(ROUNDS):
            order = list(targets)
            random.shuffle(order)
            for name in order:
                port = targets[name]
                if port is None:
                    print(f"# round {i + 1}: {name}: websocket round trips", file=sys.stderr)
                    urls = ",".join(f"http://127.0.0.1:{base + w}" for w in range(4))
                    rounds[name]["ws_rtt"].append(node("bench/ws_rtt.js", urls, WS_CLIENTS, WS_ROUNDS, SOURCES))
                    continue
                print(f"# round {i + 1}: {name}: http, websocket round trips, polling sessions/s", file=sys.stderr)
                rounds[name]["http"].append(wrk(port, pids[name]()))
                rounds[name]["ws_rtt"].append(
                    node("bench/ws_rtt.js", f"http://127.0.0.1:{port}", WS_CLIENTS, WS_ROUNDS, SOURCES))
                rounds[name]["polling"].append(polling(port, pids[name]()))
        for name, port in targets.items():
            r = results.setdefault(name, {})
            for measure, runs in rounds[name].items():
                if runs:
                    r[measure] = merged(runs)
            r["rounds"] = rounds[name]
            if port is not None and name != "direct":
                print(f"# {name}: {IDLE_SESSIONS} idle websocket sessions", file=sys.stderr)
                r["idle"] = idle(port, pids[name])
                print(f"# {name}: room fan-out", file=sys.stderr)
                r["fanout"] = node("tests/interop/clients.js", f"http://127.0.0.1:{port}", "--clients", FANOUT_CLIENTS,
                                   "--broadcasts", 10, "--app", "reference", "--timeout-ms", 120000, "--room", f"bench-{name}",
                                   "--sources", SOURCES)
    finally:
        nginx.send_signal(signal.SIGQUIT)
        rtsup.send_signal(signal.SIGTERM)
        nginx.wait(timeout=30)
        rtsup.wait(timeout=60)
    os.makedirs(os.path.join(ROOT, "target/bench"), exist_ok=True)
    with open(os.path.join(ROOT, "target/bench/compare.json"), "w") as f:
        json.dump(results, f, indent=1)
    shutil.rmtree(work, ignore_errors=True)

    def cell(name, *path, fmt="{}"):
        v = results.get(name, {})
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        return "n/a" if v is None else fmt.format(v)

    rows = [
        ("HTTP keep-alive GET /health, wrk -t2 -c64 10 s (rounds): req/s", ("http", "rps"), "{:.0f}"),
        ("  latency p50 (ms)", ("http", "p50_ms"), "{:.2f}"),
        ("  latency p99 (ms)", ("http", "p99_ms"), "{:.2f}"),
        ("  proxy CPU per request, user (µs)", ("http", "proxy_user_us"), "{:.1f}"),
        ("  proxy CPU per request, system (µs)", ("http", "proxy_sys_us"), "{:.1f}"),
        (f"WebSocket round trip, {WS_CLIENTS} conns × {WS_ROUNDS} acks (rounds): p50 (ms)", ("ws_rtt", "p50"), "{:.2f}"),
        ("  p99 (ms)", ("ws_rtt", "p99"), "{:.2f}"),
        ("  errors", ("ws_rtt", "errors"), "{}"),
        (f"{IDLE_SESSIONS} idle engine.io WebSockets: proxy RSS per session (bytes)", ("idle", "bytes_per_session"), "{}"),
        ("  sessions open / failed", ("idle", "open"), "{}"),
        (f"room fan-out, {FANOUT_CLIENTS} clients / 4 workers: p50 (ms)", ("fanout", "latencyMs", "p50"), "{}"),
        ("  p99 (ms)", ("fanout", "latencyMs", "p99"), "{}"),
        ("  clients per worker", ("fanout", "perWorker"), "{}"),
        ("  delivered / expected", ("fanout", "delivered"), "{}"),
        ("polling sessions established /s (32 loops, 10 s, rounds)", ("polling", "per_s"), "{:.0f}"),
        ("  errors (non-200, incl. Session ID unknown)", ("polling", "errors"), "{}"),
        ("  proxy CPU per session, user (µs)", ("polling", "proxy_user_us"), "{:.1f}"),
        ("  proxy CPU per session, system (µs)", ("polling", "proxy_sys_us"), "{:.1f}"),
    ]
    print(f"| measure (same run, medians of {ROUNDS} interleaved rounds where marked; {os.cpu_count()} cores, "
          f"load generator on the same machine; Node clients from {SOURCES} source networks) "
          "| rtsup | nginx | direct (1 worker) | direct (4 workers, WebSockets only) |")
    print("|---|---|---|---|---|")
    for label, path, fmt in rows:
        print(f"| {label} | " + " | ".join(cell(n, *path, fmt=fmt) for n in ("rtsup", "nginx", "direct", "direct4")) + " |")

    def ratio(a, b, *path):
        """`a`'s figure over `b`'s, from the table's cells."""
        x, y = cell(a, *path), cell(b, *path)
        try:
            return f"{float(x) / float(y):.2f}×"
        except (ValueError, ZeroDivisionError):
            return "n/a"

    print()
    print("| goal (issue #14) | ratio in this run |")
    print("|---|---|")
    print(f"| keep-alive req/s ≥ 1.0× nginx | {ratio('rtsup', 'nginx', 'http', 'rps')} |")
    print(f"| p99 under load ≤ nginx's | {ratio('rtsup', 'nginx', 'http', 'p99_ms')} |")
    print(f"| handshakes (polling sessions)/s ≥ 1.0× nginx | {ratio('rtsup', 'nginx', 'polling', 'per_s')} |")
    print(f"| WebSocket RTT p99, {WS_CLIENTS} clients ≤ 1.1× direct | {ratio('rtsup', 'direct', 'ws_rtt', 'p99')}"
          f" (nginx {ratio('nginx', 'direct', 'ws_rtt', 'p99')}); × the four workers direct:"
          f" {ratio('rtsup', 'direct4', 'ws_rtt', 'p99')} (nginx {ratio('nginx', 'direct4', 'ws_rtt', 'p99')}) |")
    print(f"| idle WebSocket memory ≤ 1.2× nginx | {ratio('rtsup', 'nginx', 'idle', 'bytes_per_session')} |")
    for name in ("rtsup", "nginx"):
        f = results.get(name, {}).get("fanout", {})
        print(f"# {name} fan-out: delivered {f.get('delivered')}/{f.get('expected')}, idle failed {results.get(name, {}).get('idle', {}).get('failed')}", file=sys.stderr)


if __name__ == "__main__":
    main()
