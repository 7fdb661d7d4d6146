"""Helpers shared by the bench scripts: waiting for a port, reading a process's RSS, CPU time
and children from /proc, and wrk's latency units."""
import os, re, socket, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The rtsup binary measured: the release build (scripts/release.sh: profile-guided; or a plain
# `cargo build --release`), or RTSUP_BIN, e.g. to set two builds side by side.
BIN = os.environ.get("RTSUP_BIN") or os.path.join(ROOT, "target/release/rtsup")
HZ = os.sysconf("SC_CLK_TCK")


def wait_port(port, deadline=30):
    end = time.time() + deadline
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"port {port} never opened")


def rss_kb(pids):
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_ticks_split(pids):
    """User and system CPU ticks of `pids` (all their threads), as (user, system)."""
    user = system = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            user += int(fields[11])
            system += int(fields[12])
        except (OSError, IndexError):
            pass
    return user, system


def cpu_ticks(pids):
    return sum(cpu_ticks_split(pids))


def us_per(ticks, count):
    """CPU `ticks` as microseconds per unit of load (`count` units), to 0.1 µs."""
    return round(ticks / HZ * 1e6 / max(count, 1), 1)


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def to_ms(v):
    num, unit = re.match(r"([\d.]+)(\w+)", v).groups()
    return float(num) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def start_rtsup(work, body, bin_=None):
    """Start `rtsup start` (BIN, or `bin_`) on `[supervisor]` (socket and logs in `work`) plus
    `body`; its stderr goes to `work`/rtsup.log."""
    conf = os.path.join(work, "rtsup.toml")
    with open(conf, "w") as f:
        f.write(f'[supervisor]\ncontrol_socket = "{work}/rtsup.sock"\nlog_dir = "{work}/logs"\n{body}')
    return subprocess.Popen([bin_ or BIN, "start", "-c", conf], stderr=open(os.path.join(work, "rtsup.log"), "w"))


def reference_balancer(work, base, instances, listen, extra="", bin_=None):
    """rtsup (BIN, or `bin_`) supervising `instances` reference workers from port `base`,
    balancing on `listen` with two proxy threads, no access log (nginx beside it logs none
    either) and no per-address bounds: the benchmark clients come from a few loopback
    addresses, and the new-session rate and connection cap per address (meant for one client
    among many) would refuse most of them; nginx has neither bound. `extra` is appended (more
    `[balancer]` keys, or further tables)."""
    return start_rtsup(work, reference_app(base, instances, bin_) + f"""[balancer]
listen = "127.0.0.1:{listen}"
access_log = "off"
threads = 2
session_rate = 0
max_connections_per_address = 0
{extra}""", bin_)


def nginx_reference_front(work, port, base, instances):
    """nginx (2 workers) in front of the reference workers on `instances` ports from `base`, with
    the policy rtsup applies: sticky by client address (`ip_hash`) for /socket.io/, round-robin
    for the other paths, upstream keep-alive, WebSocket upgrades, `X-Forwarded-For`. Returns
    its config file."""
    conf = os.path.join(work, "nginx.conf")
    upstream = "\n".join(f"    server 127.0.0.1:{base + i};" for i in range(instances))
    with open(conf, "w") as f:
        f.write(f"""user root;
worker_processes 2;
worker_rlimit_nofile 20000;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 19000; }}
http {{
  access_log off;
  upstream sessions {{
    ip_hash;
{upstream}
    keepalive 64;
  }}
  upstream workers {{
{upstream}
    keepalive 64;
  }}
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
  proxy_http_version 1.1;
  proxy_set_header Upgrade $http_upgrade;
  proxy_set_header Connection $connection_upgrade;
  proxy_set_header Host $host;
  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
  proxy_read_timeout 120s;
  proxy_buffering off;
  server {{
    listen 127.0.0.1:{port} reuseport;
    location /socket.io/ {{ proxy_pass http://sessions; }}
    location / {{ proxy_pass http://workers; }}
  }}
}}
""")
    return conf


def reference_app(base, instances, bin_=None):
    """`[[app]]` of `instances` reference workers (`rtsup worker` of BIN, or of `bin_`) from
    port `base`."""
    return f"""[[app]]
name = "ref"
command = "{bin_ or BIN}"
args = ["worker"]
instances = {instances}
port = {base}
ready = "http:/health"
env = {{ RTSUP_RATE_LIMIT = "1000000" }}
"""


def nginx_backend(work, port):
    """An nginx `return 200 "ok"` server on `port` (1 worker, no log): its config file and the
    `[[app]]` that has rtsup supervise it as its only worker."""
    conf = os.path.join(work, "backend.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1;
pid {work}/backend.pid;
error_log {work}/backend-error.log crit;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  server {{ listen 127.0.0.1:{port}; keepalive_requests 1000000; location / {{ return 200 "ok"; }} }}
}}
""")
    return f"""[[app]]
name = "backend"
command = "nginx"
args = ["-p", "{work}", "-c", "{conf}", "-g", "daemon off;"]
instances = 1
port = {port}
ready = "tcp"
"""


def nginx_front(work, port, backend, workers, tls=None):
    """nginx in front of `backend` (upstream keep-alive, no log) on `port`, with `workers`
    worker processes; over TLS with `tls = (cert, key)`. Returns its config file."""
    conf = os.path.join(work, "nginx.conf")
    ssl = ""
    if tls:
        ssl = f"""ssl_certificate {tls[0]};
    ssl_certificate_key {tls[1]};
    ssl_protocols TLSv1.2 TLSv1.3;
    keepalive_requests 1000000;
    """
    with open(conf, "w") as f:
        f.write(f"""worker_processes {workers};
pid {work}/nginx.pid;
error_log {work}/nginx-error.log crit;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port}{" ssl" if tls else ""} reuseport;
    {ssl}location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
""")
    return conf
