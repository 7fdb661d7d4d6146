#!/usr/bin/env python3
"""Keep-alive GETs through rtsup and nginx round by round, with what moves a round: the
proxy's CPU per request and the upstream connections it opened (compare.py's layout: four
reference workers supervised by rtsup, two proxy threads / nginx workers, wrk -t2 -c64).

  python3 bench/keepalive_rounds.py     (needs: a release build, nginx, wrk, perf)

ROUNDS (default 4) interleaved rounds of DURATION seconds (default 5) each, the order shuffled
per round; prints one line per round: req/s, the proxy's user and system CPU per request (µs),
its `connect` calls during the round (perf's syscall tracepoint), the workers' CPU per
request, the share of a core each of the proxy's two busiest threads (or processes) used, and
the machine's idle share of its cores. A proxy whose idle upstream pool is too small for its share of the clients shows it
as thousands of connects a round (docs/BENCHMARKS.md, run Q).
"""
import os, random, re, signal, subprocess, sys, tempfile, time

from common import HZ, children, cpu_ticks, cpu_ticks_split, nginx_reference_front, reference_balancer, wait_port

ROUNDS = int(os.environ.get("ROUNDS", "4"))
DURATION = int(os.environ.get("DURATION", "5"))


def thread_ticks(pids):
    """CPU ticks (user + system) of every thread of `pids`, by thread id. Read from
    /proc/PID/task/TID/stat: /proc/TID/stat counts the whole process."""
    out = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            out[tid] = cpu_ticks([f"{pid}/task/{tid}"])
    return out


def idle_ticks():
    """The machine's idle and total CPU ticks (all cores, from /proc/stat)."""
    fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    return fields[3] + fields[4], sum(fields)


def measure(port, proxy, workers):
    perf = subprocess.Popen(["perf", "stat", "-e", "syscalls:sys_enter_connect", "-p", ",".join(map(str, proxy)),
                             "--", "sleep", str(DURATION)], stderr=subprocess.PIPE, text=True)
    p0, w0, t0, i0 = cpu_ticks_split(proxy), cpu_ticks_split(workers), thread_ticks(proxy), idle_ticks()
    out = subprocess.run(["wrk", "-t2", "-c64", f"-d{DURATION}s", f"http://127.0.0.1:{port}/health"],
                         capture_output=True, text=True).stdout
    p1, w1, t1, i1 = cpu_ticks_split(proxy), cpu_ticks_split(workers), thread_ticks(proxy), idle_ticks()
    busiest = sorted((t1[t] - t0.get(t, 0) for t in t1), reverse=True)[:2]
    shares = "/".join(f"{100 * b / HZ / DURATION:.0f}" for b in busiest)
    stat = perf.communicate()[1]
    served = int(re.search(r"(\d+) requests in", out).group(1))
    us = lambda ticks: ticks / HZ * 1e6 / max(served, 1)
    connects = re.search(r"([\d,]+)\s+syscalls:sys_enter_connect", stat)
    return (f"{served / DURATION:8.0f} req/s  proxy user {us(p1[0] - p0[0]):4.1f} sys {us(p1[1] - p0[1]):4.1f} µs"
            f"  connects {connects.group(1) if connects else '?':>6}"
            f"  workers user {us(w1[0] - w0[0]):4.1f} sys {us(w1[1] - w0[1]):4.1f} µs"
            f"  threads {shares:>7} %  idle {100 * (i1[0] - i0[0]) / max(i1[1] - i0[1], 1):3.0f} %"
            + ("  NON-2xx" if "Non-2xx" in out else ""))


def main():
    work = tempfile.mkdtemp(prefix="rtsup-rounds-")
    base = random.randint(20000, 31000)
    lb, ngx = base + 10, base + 12
    rtsup = reference_balancer(work, base, 4, lb)
    for port in [base + i for i in range(4)] + [lb]:
        wait_port(port)
    conf = nginx_reference_front(work, ngx, base, 4)
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
