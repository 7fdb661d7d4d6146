// Reconnect stampede: N socket.io WebSocket clients on worker A; then A's connections end
// either all at once (--mode kill: SIGKILL to A, what a worker's death does today) or through
// the balancer's gradual release (--mode release --window-ms W). Prints closes and reconnects
// per 100 ms bucket as one JSON line.
//
//   cargo build -p rtsup-balancer --release --example release_proxy
//   NODE_PATH=tests/interop/node_modules node bench/stampede.js \
//       [--clients 2000] [--mode release|kill] [--window-ms 5000] \
//       [--reconnect-delay-ms 1000] [--transports websocket|default]
//       [--proxy target/release/examples/release_proxy]
//
// Everything runs on loopback: two plain socket.io workers (child processes of this script,
// no Redis), the balancer between them and the clients (`release_proxy`, which starts with A
// Ready and B Starting and on `release W` publishes A Draining, B Ready and calls
// `ProxyHandle::release("a#1", W)`), and the clients in this process. socket.io-client's
// reconnection is left at its defaults unless --reconnect-delay-ms says otherwise (default
// delay 1000 ms with ±50 % jitter, so a stampede of closes already spreads over ~1 s of
// reconnects).
//
// Against a running rtsup (once the supervisor calls release before stopping a draining worker)
// use --url http://HOST:PORT --mode external: the script opens the clients, waits for Enter on
// stdin (run `rtsup reload` then), and buckets from that moment.
const { spawn } = require("child_process");
const path = require("path");
const readline = require("readline");

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};

if (args[0] === "--worker") {
  // A bare socket.io worker: hello{port,pid} on connection.
  const { Server } = require("socket.io");
  const port = Number(args[1]);
  const io = new Server(port, { pingInterval: 25000, pingTimeout: 20000 });
  io.on("connection", (s) => s.emit("hello", { port, pid: process.pid }));
  console.log("ready");
  return;
}

const { io } = require("socket.io-client");
const N = Number(opt("clients", "2000"));
const mode = opt("mode", "release");
const windowMs = Number(opt("window-ms", "5000"));
const delayMs = opt("reconnect-delay-ms", null);
const root = path.resolve(__dirname, "..");
const proxyBin = opt("proxy", path.join(root, "target/release/examples/release_proxy"));
const base = Number(opt("base-port", String(20000 + Math.floor(Math.random() * 20000))));
const [portA, portB, portP] = [base, base + 1, base + 2];
const external = mode === "external";
const url = opt("url", `http://127.0.0.1:${portP}`);
const BUCKET = 100;

const children = [];
function child(cmd, argv) {
  const c = spawn(cmd, argv, { stdio: ["pipe", "pipe", "inherit"], env: process.env });
  children.push(c);
  const lines = readline.createInterface({ input: c.stdout });
  const waiters = [];
  lines.on("line", (l) => { const w = waiters.shift(); if (w) w(l); });
  c.nextLine = () => new Promise((r) => waiters.push(r));
  return c;
}
function cleanup() { for (const c of children) { try { c.kill("SIGKILL"); } catch {} } }
process.on("exit", cleanup);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const waitFor = async (pred, ms, what) => {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error(`timeout waiting for ${what}`);
    await sleep(20);
  }
};

function histogram(times, t0) {
  const b = [];
  for (const t of times) {
    const i = Math.floor((t - t0) / BUCKET);
    b[i] = (b[i] || 0) + 1;
  }
  return Array.from(b, (x) => x || 0);
}

async function main() {
  let workerA, proxy;
  if (!external) {
    workerA = child(process.execPath, [__filename, "--worker", String(portA)]);
    const workerB = child(process.execPath, [__filename, "--worker", String(portB)]);
    await Promise.all([workerA.nextLine(), workerB.nextLine()]);
    proxy = child(proxyBin, [`127.0.0.1:${portP}`, `127.0.0.1:${portA}`, `127.0.0.1:${portB}`]);
    await proxy.nextLine();
    // pingora binds on its own thread shortly after.
    await sleep(300);
  }

  // websocket: WebSocket-first sessions; default: polling handshake, then the upgrade.
  const opts = { forceNew: true, timeout: 20000 };
  if (opt("transports", "websocket") === "websocket") opts.transports = ["websocket"];
  if (delayMs !== null) { opts.reconnectionDelay = Number(delayMs); opts.reconnectionDelayMax = Math.max(5000, Number(delayMs)); }
  const st = [];
  const sockets = [];
  let connectErrors = 0;
  for (let i = 0; i < N; i += 200) {
    const batch = [];
    for (let j = i; j < Math.min(N, i + 200); j++) {
      const s = io(url, opts);
      const c = { first: null, closedAt: null, reason: null, reconnectedAt: null, second: null };
      st.push(c);
      sockets.push(s);
      batch.push(new Promise((resolve) => {
        s.on("hello", ({ port, pid }) => {
          const who = port ?? pid;
          if (c.first === null) { c.first = who; resolve(); }
          else if (c.closedAt !== null && c.reconnectedAt === null) { c.reconnectedAt = Date.now(); c.second = who; }
        });
        s.on("connect_error", () => connectErrors++);
      }));
      s.on("disconnect", (reason) => {
        if (c.closedAt === null) { c.closedAt = Date.now(); c.reason = reason; }
      });
    }
    await Promise.all(batch);
  }
  // Polling sessions upgrade shortly after connecting.
  if (opts.transports === undefined) {
    await waitFor(() => sockets.every((s) => s.io.engine && s.io.engine.transport.name === "websocket"), 20000, "upgrades").catch(() => {});
  }
  const count = async () => { if (!proxy) return null; proxy.stdin.write("count\n"); return JSON.parse(await proxy.nextLine()); };
  const before = await count();
  const onA = st.filter((c) => c.first === (external ? st[0].first : portA)).length;

  let t0, released = null;
  if (external) {
    process.stderr.write(`${N} clients connected; trigger the drain, then press Enter\n`);
    await new Promise((r) => process.stdin.once("data", r));
    t0 = Date.now();
  } else if (mode === "kill") {
    t0 = Date.now();
    proxy.stdin.write("drain\n");
    await proxy.nextLine();
    workerA.kill("SIGKILL");
  } else {
    t0 = Date.now();
    proxy.stdin.write(`release ${windowMs}\n`);
    released = JSON.parse(await proxy.nextLine());
  }
  await waitFor(() => st.every((c) => c.closedAt !== null && c.reconnectedAt !== null), windowMs + 60000, "every reconnect").catch(() => {});
  const after = await count();
  const closes = st.filter((c) => c.closedAt !== null).map((c) => c.closedAt);
  const reconnects = st.filter((c) => c.reconnectedAt !== null).map((c) => c.reconnectedAt);
  const reasons = {};
  for (const c of st) if (c.reason) reasons[c.reason] = (reasons[c.reason] || 0) + 1;
  const closeH = histogram(closes, t0);
  const reconH = histogram(reconnects, t0);
  const out = {
    clients: N, mode, windowMs: mode === "release" ? windowMs : null, onA, connectErrors,
    released, reasons, onABefore: before, onAAfter: after,
    closed: closes.length, reconnected: reconnects.length,
    reconnectedToB: st.filter((c) => c.second === portB).length,
    lastCloseMs: Math.max(...closes) - t0, lastReconnectMs: Math.max(...reconnects) - t0,
    maxClosesPer100ms: Math.max(...closeH), maxReconnectsPer100ms: Math.max(...reconH),
    closesPer100ms: closeH, reconnectsPer100ms: reconH,
  };
  console.log(JSON.stringify(out));
  for (const s of sockets) s.close();
  cleanup();
  process.exit(0);
}

main().catch((e) => { console.error(e); cleanup(); process.exit(1); });
