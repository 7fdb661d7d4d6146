// Official socket.io clients through rtsup's balancer to the PM2 fixture app (server.js);
// prints one JSON line. Each client asks `whoami` three times (half of them polling only,
// half upgrading to WebSocket) and must get the same worker every time.
//   node client.js URL N
const { io } = require("socket.io-client");

const [url, n] = [process.argv[2], Number(process.argv[3] || "20")];
const out = { clients: n, connected: 0, answered: 0, moved: 0, errors: [], instances: {} };

function one(i) {
  return new Promise((resolve) => {
    const s = io(url, {
      transports: i % 2 ? ["polling"] : ["polling", "websocket"],
      reconnection: false,
      timeout: 10000,
    });
    const done = (err) => { if (err) out.errors.push(String(err)); s.disconnect(); resolve(); };
    s.on("connect_error", (e) => done(e.message));
    s.on("connect", async () => {
      out.connected++;
      let first = null;
      try {
        for (let k = 0; k < 3; k++) {
          const me = await s.timeout(10000).emitWithAck("whoami");
          out.answered++;
          if (first === null) { first = me.pid; out.instances[me.instance] = (out.instances[me.instance] || 0) + 1; }
          else if (me.pid !== first) out.moved++;
        }
        done();
      } catch (e) { done(e.message); }
    });
  });
}

Promise.all(Array.from({ length: n }, (_, i) => one(i))).then(() => {
  console.log(JSON.stringify(out));
  process.exit(0);
});
setTimeout(() => { out.errors.push("timeout"); console.log(JSON.stringify(out)); process.exit(0); }, 60000);
