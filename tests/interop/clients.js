// Many official socket.io-client sockets through one URL; prints one JSON summary line.
//   node clients.js URL --clients N --transports polling|default [--broadcasts K]
//                       [--room R] [--kill-instance I] [--hold-ms H] [--timeout-ms T] [--app node|reference]
//                       [--sources K]
// --app reference speaks rtsup-worker's events (hello{slot}, chat{room,text}); the default
// speaks tests/interop/server.js (hello{instance}, broadcast -> msg).
// --hold-ms keeps every session idle that long before the broadcasts (idle-timeout check).
// --sources K connects client i from 127.0.(1 + i % K).1, as clients of K networks (the
// benchmarks' nginx ip_hash keys on the first three octets; see bench/sources.js).
// Counts connect errors, disconnects and "Session ID unknown" answers (HTTP 400 on polling),
// the spread over workers, and the delivery latency of room broadcasts.
const http = require("http");
const { io } = require("socket.io-client");
const { sourceAddress } = require("../../bench/sources");

const args = process.argv.slice(2);
const url = args[0];
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const N = Number(opt("clients", "200"));
const transports = opt("transports", "default");
const broadcasts = Number(opt("broadcasts", "5"));
const killInstance = opt("kill-instance", null);
const timeoutMs = Number(opt("timeout-ms", "60000"));
const holdMs = Number(opt("hold-ms", "0"));
const reference = opt("app", "node") === "reference";
const room = opt("room", "room-all");
const sources = Number(opt("sources", "0"));

const stats = {
  clients: N, transports, connected: 0, connectErrors: 0, disconnects: 0, sessionUnknown: 0,
  perWorker: {}, delivered: 0, expected: 0, latencyMs: { p50: null, p99: null, max: null },
  kill: null, errors: [],
};
const sockets = [];
const state = []; // per client: { instance, pid, disconnectedAt, reconnectedAt }
const latencies = [];

function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function done(code) {
  latencies.sort((a, b) => a - b);
  stats.latencyMs = { p50: percentile(latencies, 50), p99: percentile(latencies, 99), max: latencies[latencies.length - 1] ?? null };
  // Print before closing: closing fires "disconnect" events of our own making.
  console.log(JSON.stringify(stats));
  for (const s of sockets) s.close();
  process.exit(code);
}
setTimeout(() => { stats.errors.push("timeout"); done(2); }, timeoutMs).unref();

const waitFor = (pred, ms) => new Promise((resolve, reject) => {
  const t0 = Date.now();
  const tick = () => (pred() ? resolve() : Date.now() - t0 > ms ? reject(new Error("wait timeout")) : setTimeout(tick, 10));
  tick();
});

async function main() {
  const ioOpts = { reconnectionDelay: 100, reconnectionDelayMax: 500, forceNew: true, timeout: 10000 };
  if (transports === "polling") ioOpts.transports = ["polling"];
  for (let i = 0; i < N; i++) {
    let from = {};
    const localAddress = sourceAddress(i, sources);
    if (localAddress) {
      // WebSocket and polling requests alike (polling goes through the agent).
      from = { localAddress, agent: new http.Agent({ localAddress }) };
    }
    const s = io(url, { ...ioOpts, ...from });
    const st = { instance: null, pid: null, connects: 0, joined: false, disconnectedAt: null, reconnectedAt: null };
    state.push(st);
    sockets.push(s);
    s.on("hello", ({ instance, slot, pid }) => {
      if (instance === undefined) instance = slot;
      if (st.disconnectedAt && !st.reconnectedAt) st.reconnectedAt = Date.now();
      st.instance = instance; st.pid = pid;
    });
    // Joined once the worker acknowledges (both test servers ack `join`); every (re)connect joins again.
    s.on("connect", () => { st.connects++; st.joined = false; s.emit("join", room, () => { if (s.connected) st.joined = true; }); });
    s.on("connect_error", () => stats.connectErrors++);
    s.on("disconnect", () => { stats.disconnects++; st.disconnectedAt = st.disconnectedAt || Date.now(); });
    s.io.on("open", () => {
      s.io.engine.on("close", (reason, desc) => {
        const status = desc && (desc.description ?? desc.context?.status);
        if (status === 400) {
          stats.sessionUnknown++;
          const body = desc.context && desc.context.responseText;
          if (body && stats.errors.length < 5) stats.errors.push(`400: ${body}`);
        }
      });
    });
    const onPayload = (p) => { stats.delivered++; latencies.push(Date.now() - p.t); };
    if (reference) s.on("chat", (m) => onPayload(JSON.parse(m.text)));
    else s.on("msg", onPayload);
  }
  try {
    await waitFor(() => state.every((st) => st.instance !== null), 30000);
  } catch (e) {
    stats.errors.push("not every client connected");
  }
  stats.connected = state.filter((st) => st.instance !== null).length;
  // A progress line for callers that act while the swarm holds (the summary stays last).
  console.log(JSON.stringify({ phase: "connected", connected: stats.connected }));
  for (const st of state) if (st.instance !== null) stats.perWorker[st.instance] = (stats.perWorker[st.instance] || 0) + 1;
  // Let the joins land and any mis-routed polling request surface.
  await new Promise((r) => setTimeout(r, 1000));

  if (killInstance !== null) {
    const victims = state.filter((st) => String(st.instance) === killInstance);
    const others = state.filter((st) => String(st.instance) !== killInstance);
    const disconnectsBefore = stats.disconnects;
    const pid = victims[0] && victims[0].pid;
    const killedAt = Date.now();
    if (pid) process.kill(pid, "SIGKILL");
    try {
      await waitFor(() => victims.every((st) => st.reconnectedAt), 10000);
    } catch (e) {
      stats.errors.push("victims did not reconnect");
    }
    const times = victims.filter((st) => st.reconnectedAt).map((st) => st.reconnectedAt - killedAt).sort((a, b) => a - b);
    stats.kill = {
      instance: Number(killInstance), pid, victims: victims.length,
      reconnected: times.length, reconnectMsMax: times[times.length - 1] ?? null, reconnectMsP50: percentile(times, 50),
      othersDisconnected: others.filter((st) => st.disconnectedAt).length,
      disconnectsDuringKill: stats.disconnects - disconnectsBefore,
    };
    await new Promise((r) => setTimeout(r, 500));
  }

  if (holdMs > 0) {
    stats.disconnectsBeforeHold = stats.disconnects;
    await new Promise((r) => setTimeout(r, holdMs));
  }

  // Everyone still (or again) connected, e.g. after a rolling reload moved them.
  try {
    await waitFor(() => sockets.every((s) => s.connected), 15000);
  } catch (e) {
    stats.errors.push("not every client reconnected");
  }
  stats.connectedAtEnd = sockets.filter((s) => s.connected).length;
  // Joins are re-sent on every connect: broadcast once every client's worker acknowledged its join.
  try {
    await waitFor(() => sockets.every((s, i) => s.connected && state[i].joined), 15000);
  } catch (e) {
    stats.errors.push("not every client re-joined its room");
  }

  // One client broadcasts to the room; every client (on every worker) must receive it.
  for (let k = 0; k < broadcasts; k++) {
    stats.expected += sockets.length;
    const payload = { t: Date.now(), k };
    if (reference) sockets[k % sockets.length].emit("chat", { room, text: JSON.stringify(payload) });
    else sockets[k % sockets.length].emit("broadcast", { room, payload });
    await new Promise((r) => setTimeout(r, 200));
  }
  try {
    await waitFor(() => stats.delivered >= stats.expected, 10000);
  } catch (e) {
    stats.errors.push("broadcasts not all delivered");
  }
  done(0);
}

main().catch((e) => { stats.errors.push(String(e)); done(1); });
