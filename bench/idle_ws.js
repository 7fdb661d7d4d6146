// Hold N idle engine.io WebSocket sessions (raw `ws`, EIO=4 websocket-first, answering pings);
// prints {"open":N} once all are open, then holds until stdin closes or HOLD_MS passes.
// With SOURCES > 0, session i connects from 127.0.(1 + i % SOURCES).1 (see bench/sources.js).
//   NODE_PATH=tests/interop/node_modules node bench/idle_ws.js WS_URL N [HOLD_MS] [SOURCES]
const WebSocket = require("ws");
const { sourceAddress } = require("./sources");

const [url, n, hold = "60000", sources = "0"] = process.argv.slice(2);
const N = Number(n);
let open = 0, failed = 0;
const sockets = [];

function connect(i) {
  return new Promise((resolve) => {
    const localAddress = sourceAddress(i, Number(sources));
    const ws = new WebSocket(`${url}/socket.io/?EIO=4&transport=websocket`, { localAddress });
    ws.on("message", (data) => {
      const msg = data.toString();
      if (msg === "2") ws.send("3"); // engine.io ping → pong
      else if (msg.startsWith("0") && !settled) { settled = true; open++; resolve(); }
    });
    let settled = false;
    const fail = () => { if (!settled) { settled = true; failed++; resolve(); } };
    ws.on("error", fail);
    ws.on("close", fail);
    setTimeout(fail, 15000);
    sockets.push(ws);
  });
}

(async () => {
  for (let i = 0; i < N; i += 200) {
    await Promise.all(Array.from({ length: Math.min(200, N - i) }, (_, j) => connect(i + j)));
  }
  console.log(JSON.stringify({ open, failed }));
  setTimeout(() => process.exit(0), Number(hold));
  process.stdin.on("close", () => process.exit(0));
  process.stdin.resume();
})();
