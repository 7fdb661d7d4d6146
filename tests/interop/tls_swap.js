// Holds one websocket-only and one polling-only official socket.io client over HTTPS while
// the test swaps the balancer's certificate, and answers commands on stdin, one JSON line each:
//   ready (printed once both are connected), "check" -> both clients' state after a round
//   trip each, and the serial of the certificate a fresh TLS handshake gets now.
//   NODE_EXTRA_CA_CERTS=ca.pem node tls_swap.js https://localhost:PORT
const tls = require("tls");
const readline = require("readline");
const { io } = require("socket.io-client");

const url = new URL(process.argv[2]);
const opts = { forceNew: true, reconnection: false, timeout: 10000 };
const clients = {
  websocket: io(url.href, { ...opts, transports: ["websocket"] }),
  polling: io(url.href, { ...opts, transports: ["polling"] }),
};
const state = {};
for (const [name, s] of Object.entries(clients)) {
  state[name] = { id: null, disconnects: 0, errors: [], roundTrips: 0 };
  s.on("connect", () => {
    state[name].id = s.id;
    s.emit("join", `tls-${name}`);
  });
  s.on("disconnect", (reason) => { state[name].disconnects++; state[name].errors.push(`disconnect: ${reason}`); });
  s.on("connect_error", (e) => state[name].errors.push(`connect_error: ${e.message}`));
  s.on("msg", () => state[name].roundTrips++);
}

// The serial of the certificate a new handshake is given (hex, upper case, as node prints it).
const serial = () => new Promise((resolve) => {
  const c = tls.connect({ host: url.hostname, port: Number(url.port), servername: url.hostname }, () => {
    const s = c.getPeerCertificate().serialNumber;
    c.end();
    resolve(s);
  });
  c.on("error", (e) => resolve(`error: ${e.message}`));
});

// One broadcast to each client's own room, answered by a "msg" (a real round trip).
async function roundTrip() {
  const before = Object.fromEntries(Object.keys(clients).map((n) => [n, state[n].roundTrips]));
  for (const [name, s] of Object.entries(clients)) s.emit("broadcast", { room: `tls-${name}`, payload: name });
  const t0 = Date.now();
  while (Date.now() - t0 < 5000) {
    if (Object.keys(clients).every((n) => state[n].roundTrips > before[n])) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

async function report() {
  const ok = await roundTrip();
  const transports = Object.fromEntries(
    Object.entries(clients).map(([n, s]) => [n, s.connected ? s.io.engine.transport.name : null]));
  console.log(JSON.stringify({ roundTrip: ok, serial: await serial(), transports, state }));
}

(async () => {
  const t0 = Date.now();
  while (!Object.values(clients).every((s) => s.connected)) {
    if (Date.now() - t0 > 15000) {
      console.log(JSON.stringify({ ready: false, state }));
      process.exit(1);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  await report();
  const rl = readline.createInterface({ input: process.stdin });
  rl.on("line", (line) => { if (line.trim() === "check") report(); });
  rl.on("close", () => { for (const s of Object.values(clients)) s.close(); process.exit(0); });
})();
