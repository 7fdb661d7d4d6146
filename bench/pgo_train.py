#!/usr/bin/env python3
"""The training load of the profile-guided release build (scripts/release.sh): runs BIN, an
rtsup built with `-Cprofile-generate`, as supervisor, balancer and two reference workers
(`rtsup worker`, the same binary) and drives through it what a Socket.IO deployment serves,
so the profile holds the paths production runs and not one benchmark's:

  plain HTTP/1.1   keep-alive GETs (wrk), one request per connection (wrk, `Connection:
                   close`), engine.io polling handshakes (open, connect, answer), socket.io
                   clients on WebSockets exchanging acknowledged events;
  HTTPS            the same balancer with a certificate: keep-alive GETs, a TLS handshake per
                   request, HTTP/2 requests (curl), polling handshakes over TLS.

Every load must succeed (no error, no non-2xx answer), else the script fails: a build trained
on error pages would optimize the wrong paths. Then rtsup gets SIGTERM and must exit 0 (an
instrumented process writes its profile when it exits; the workers exit through rtsup).

  python3 bench/pgo_train.py BIN     (needs wrk, curl, openssl, node + tests/interop)

SECONDS_PER_LOAD (default 4) sets each load's length; `SECONDS_PER_LOAD=1` runs the whole
script in under a minute, which is how scripts/test.sh checks it against the debug binary.
"""
import json, os, random, re, shutil, signal, ssl, subprocess, sys, tempfile, time, urllib.request

from common import ROOT, reference_balancer

SECONDS = int(os.environ.get("SECONDS_PER_LOAD", "4"))
NODE_ENV = dict(os.environ, NODE_PATH=os.path.join(ROOT, "tests/interop/node_modules"))


def run(what, args, env=None):
    """Runs one load; its output, or the script fails saying which load failed and why."""
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=SECONDS * 10 + 60)
    if out.returncode != 0:
        sys.exit(f"pgo_train: {what} failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


def wrk(what, url, *extra):
    out = run(what, ["wrk", "-t1", "-c16", f"-d{SECONDS}s", *extra, url])
    served = int(re.search(r"(\d+) requests in", out).group(1))
    if served == 0 or "Non-2xx" in out or "Socket errors" in out:
        sys.exit(f"pgo_train: {what}: {served} requests, output:\n{out}")
    print(f"# {what}: {served} requests", file=sys.stderr)


def node(what, script, *args, env=NODE_ENV):
    out = run(what, ["node", os.path.join(ROOT, script), *map(str, args)], env=env)
    if '"errors":0' not in out:
        sys.exit(f"pgo_train: {what}: {out}")
    print(f"# {what}: {out.strip()}", file=sys.stderr)


def h2(url, count):
    """`count` HTTP/2 requests on one TLS connection (curl reuses it for every URL)."""
    out = run("HTTP/2 requests", ["curl", "-sk", "--http2", "-w", "\\n=%{http_version} %{http_code}\\n", *[url] * count])
    answers = [line for line in out.split("\n") if line.startswith("=")]
    if answers != ["=2 200"] * count:
        sys.exit(f"pgo_train: HTTP/2 requests answered: {sorted(set(answers))}")
    print(f"# HTTP/2: {count} requests", file=sys.stderr)


def log_tail(work):
    try:
        with open(os.path.join(work, "rtsup.log")) as log:
            return log.read()[-4000:]
    except OSError as e:
        return f"(no log: {e})"


def stop(rtsup):
    """SIGTERM, then SIGKILL after 60 s; rtsup's exit code (the workers exit through it)."""
    rtsup.send_signal(signal.SIGTERM)
    try:
        return rtsup.wait(timeout=60)
    except subprocess.TimeoutExpired:
        rtsup.kill()
        return rtsup.wait()


def phase(work, bin_, base, tls, loads):
    """rtsup (`bin_`) with two reference workers from port `base`, balancing on `base + 10`
    (over TLS with `tls = (cert, key)`): once it answers through each worker (each is routed to
    only once its readiness probe passed), `loads(url)`; then rtsup must exit 0. rtsup is
    stopped whatever fails; a failure of its own comes with its log."""
    listen = base + 10
    scheme, extra = "http", ""
    if tls:
        scheme, extra = "https", f'tls_cert = "{tls[0]}"\ntls_key = "{tls[1]}"\n'
    os.makedirs(work)
    url = f"{scheme}://127.0.0.1:{listen}"
    rtsup = reference_balancer(work, base, 2, listen, extra, bin_)
    try:
        insecure = ssl._create_unverified_context()
        slots = set()
        end = time.time() + 60
        while slots != {0, 1}:
            if rtsup.poll() is not None or time.time() > end:
                state = f"exited {rtsup.returncode}" if rtsup.poll() is not None else "answered through no worker in 60 s"
                sys.exit(f"pgo_train: rtsup on {url} {state}; its log:\n{log_tail(work)}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2, context=insecure) as answer:
                    slots.add(json.loads(answer.read())["slot"])
            except (OSError, ValueError, KeyError):
                time.sleep(0.1)
        loads(url)
    except BaseException:
        stop(rtsup)
        raise
    code = stop(rtsup)
    if code != 0:
        sys.exit(f"pgo_train: rtsup exited {code} (an instrumented process writes its profile only on a clean "
                 f"exit); its log:\n{log_tail(work)}")


def plain_loads(url):
    wrk("keep-alive GET", f"{url}/health")
    wrk("a connection per request", f"{url}/health", "-H", "Connection: close")
    node("polling handshakes", "bench/poll_rate.js", url, 8, SECONDS * 1000)
    node("WebSocket events", "bench/ws_rtt.js", url, 100, 10 * SECONDS)


def tls_loads(url):
    wrk("HTTPS keep-alive GET", f"{url}/health")
    wrk("a TLS handshake per request", f"{url}/health", "-H", "Connection: close")
    h2(f"{url}/health", 200 * SECONDS)
    node("polling handshakes over TLS", "bench/poll_rate.js", url, 8, SECONDS * 1000,
         env=dict(NODE_ENV, NODE_TLS_REJECT_UNAUTHORIZED="0"))


def main():
    if len(sys.argv) != 2 or not os.path.exists(sys.argv[1]):
        sys.exit("usage: bench/pgo_train.py BIN (an rtsup binary)")
    missing = [tool for tool in ("wrk", "curl", "openssl", "node") if not shutil.which(tool)]
    if missing or not os.path.isdir(NODE_ENV["NODE_PATH"]):
        sys.exit(f"pgo_train: missing {', '.join(missing) or NODE_ENV['NODE_PATH']} (scripts/setup.sh installs them)")
    # A job timeout or `kill` sends SIGTERM: unwind (stop rtsup, remove the temp dir) as on error.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bin_ = os.path.abspath(sys.argv[1])
    base = random.randint(20000, 31000)
    with tempfile.TemporaryDirectory(prefix="rtsup-pgo-") as work:
        phase(os.path.join(work, "plain"), bin_, base, None, plain_loads)
        cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
        made = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                               "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                               "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], capture_output=True, text=True)
        if made.returncode != 0:
            sys.exit(f"pgo_train: openssl failed: {made.stderr.strip()}")
        phase(os.path.join(work, "tls"), bin_, base + 20, (cert, key), tls_loads)


if __name__ == "__main__":
    start = time.time()
    main()
    print(f"# training done in {time.time() - start:.0f} s", file=sys.stderr)
