// WebSocket round trips: N socket.io clients (websocket transport only), each sending K
// acknowledged `whoami` events one after another once every client is connected (the
// samples are messages' round trips, not waits behind the other clients' handshakes); prints
// {clients, rounds, p50, p99, errors}.
// With SOURCES > 0, client i connects from 127.0.(1 + i % SOURCES).1 (see bench/sources.js).
// URL may list several, comma-separated: client i connects to the (i mod count)-th.
//   NODE_PATH=tests/interop/node_modules node bench/ws_rtt.js URL[,URL…] [CLIENTS] [ROUNDS] [SOURCES]
const { io } = require("socket.io-client");
const { sourceAddress } = require("./sources");

const [urlList, n = "100", k = "50", sources = "0"] = process.argv.slice(2);
const urls = urlList.split(",");
const N = Number(n), K = Number(k);
const rtts = [];
let errors = 0;
// Resolved once every client connected or failed to.
let settled = 0, allSettled;
const everyone = new Promise((res) => { allSettled = res; });
const settle = () => { if (++settled === N) allSettled(); };

async function client(i) {
  const localAddress = sourceAddress(i, Number(sources));
  const s = io(urls[i % urls.length], { transports: ["websocket"], forceNew: true, reconnection: false, localAddress });
  try {
    await new Promise((res, rej) => { s.once("hello", res); s.once("connect_error", rej); });
  } finally {
    settle();
  }
  await everyone;
  for (let i = 0; i < K; i++) {
    const t0 = process.hrtime.bigint();
    await new Promise((res) => s.timeout(5000).emit("whoami", (err) => { if (err) errors++; res(); }));
    rtts.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  s.close();
}

Promise.all(Array.from({ length: N }, (_, i) => client(i).catch(() => errors++))).then(() => {
  rtts.sort((a, b) => a - b);
  const p = (q) => rtts.length ? rtts[Math.min(rtts.length - 1, Math.floor(q * rtts.length))] : null;
  console.log(JSON.stringify({ clients: N, rounds: K, samples: rtts.length, p50: p(0.5), p99: p(0.99), errors }));
  process.exit(0);
});
