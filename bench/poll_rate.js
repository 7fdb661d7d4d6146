// Polling session establishment rate: for DURATION ms, CONC loops each run a full engine.io
// polling handshake: GET (open) → POST "40" (socket.io connect) → GET (the connect answer).
// Prints {sessions, per_s, errors}; any non-200 is an error ("Session ID unknown" included).
//   node bench/poll_rate.js URL [CONC] [DURATION_MS]
const http = require("http");

const [base, c = "32", d = "10000"] = process.argv.slice(2);
const agent = new http.Agent({ keepAlive: true, maxSockets: Number(c) * 2 });
let sessions = 0, errors = 0;

function req(method, path, body) {
  return new Promise((resolve) => {
    const r = http.request(base + path, { method, agent, headers: body ? { "content-type": "text/plain;charset=UTF-8", "content-length": Buffer.byteLength(body) } : {} }, (res) => {
      let data = "";
      res.on("data", (ch) => (data += ch));
      res.on("end", () => resolve({ status: res.statusCode, data }));
    });
    r.on("error", () => resolve({ status: 0, data: "" }));
    if (body) r.write(body);
    r.end();
  });
}

async function loop(deadline) {
  while (Date.now() < deadline) {
    const open = await req("GET", "/socket.io/?EIO=4&transport=polling");
    const m = /"sid":"([^"]+)"/.exec(open.data);
    if (open.status !== 200 || !m) { errors++; continue; }
    const q = `/socket.io/?EIO=4&transport=polling&sid=${m[1]}`;
    const post = await req("POST", q, "40");
    const poll = await req("GET", q);
    if (post.status !== 200 || poll.status !== 200) { errors++; continue; }
    sessions++;
  }
}

const t0 = Date.now();
const deadline = t0 + Number(d);
Promise.all(Array.from({ length: Number(c) }, () => loop(deadline))).then(() => {
  const secs = (Date.now() - t0) / 1000;
  console.log(JSON.stringify({ sessions, per_s: Math.round(sessions / secs), errors }));
  process.exit(0);
});
