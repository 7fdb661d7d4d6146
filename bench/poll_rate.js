// Polling session establishment rate: for DURATION ms, CONC loops each run a full engine.io
// polling handshake: GET (open) → POST "40" (socket.io connect) → GET (the connect answer).
// Prints {sessions, per_s, errors}; any non-200 is an error ("Session ID unknown" included).
// With SOURCES > 0, loop i connects from 127.0.(1 + i % SOURCES).1, so the loops look like
// clients of different networks (nginx's ip_hash keys on the first three octets).
// An https:// URL is fetched over TLS (NODE_TLS_REJECT_UNAUTHORIZED=0 for a self-signed one).
//   node bench/poll_rate.js URL [CONC] [DURATION_MS] [SOURCES]
const http = require(process.argv[2].startsWith("https:") ? "https" : "http");
const { sourceAddress } = require("./sources");

const [base, c = "32", d = "10000", sources = "0"] = process.argv.slice(2);
const agent = new http.Agent({ keepAlive: true, maxSockets: Number(c) * 2 });
let sessions = 0, errors = 0;

function req(localAddress, method, path, body) {
  return new Promise((resolve) => {
    const r = http.request(base + path, { method, agent, localAddress, headers: body ? { "content-type": "text/plain;charset=UTF-8", "content-length": Buffer.byteLength(body) } : {} }, (res) => {
      let data = "";
      res.on("data", (ch) => (data += ch));
      res.on("end", () => resolve({ status: res.statusCode, data }));
    });
    r.on("error", () => resolve({ status: 0, data: "" }));
    if (body) r.write(body);
    r.end();
  });
}

async function loop(i, deadline) {
  const from = sourceAddress(i, Number(sources));
  while (Date.now() < deadline) {
    const open = await req(from, "GET", "/socket.io/?EIO=4&transport=polling");
    const m = /"sid":"([^"]+)"/.exec(open.data);
    if (open.status !== 200 || !m) { errors++; continue; }
    const q = `/socket.io/?EIO=4&transport=polling&sid=${m[1]}`;
    const post = await req(from, "POST", q, "40");
    const poll = await req(from, "GET", q);
    if (post.status !== 200 || poll.status !== 200) { errors++; continue; }
    sessions++;
  }
}

const t0 = Date.now();
const deadline = t0 + Number(d);
Promise.all(Array.from({ length: Number(c) }, (_, i) => loop(i, deadline))).then(() => {
  const secs = (Date.now() - t0) / 1000;
  console.log(JSON.stringify({ sessions, per_s: Math.round(sessions / secs), errors }));
  process.exit(0);
});
