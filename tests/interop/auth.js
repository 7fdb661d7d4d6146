// Auth and rate limiting of rtsup-worker with the official client. Prints one JSON line.
//   node auth.js URL SECRET
// - a token signed with SECRET connects as its user;
// - a token signed with another secret, one without `exp`, and no token at all get
//   connect_error ("invalid token" says nothing more);
// - 200 events in a burst: the excess is answered with error{code:"rate_limited"} (as far as
//   the socket's send buffer holds them) and dropped, a watcher in the room counts what
//   passed, and the socket stays connected; a client that keeps going (600 more) is disconnected.
const crypto = require("crypto");
const { io } = require("socket.io-client");

const [url, secret] = process.argv.slice(2);
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
const jwt = (claims, key) => {
  const head = b64({ alg: "HS256", typ: "JWT" });
  const body = b64(claims);
  const sig = crypto.createHmac("sha256", key).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
};
const attempt = (auth) => new Promise((resolve) => {
  const s = io(url, { auth, forceNew: true, reconnection: false, transports: ["websocket"] });
  s.once("hello", (h) => resolve({ ok: true, user: h.user, socket: s }));
  s.once("connect_error", (e) => { s.close(); resolve({ ok: false, error: e.message }); });
});

async function main() {
  const result = {};
  const exp = Math.floor(Date.now() / 1000) + 3600;
  const good = await attempt({ token: jwt({ sub: "u42", name: "Ada", exp }, secret) });
  result.good = { ok: good.ok, user: good.user };
  const forged = await attempt({ token: jwt({ sub: "u42", exp }, "not-the-secret") });
  result.forged = { ok: forged.ok, error: forged.error };
  const forever = await attempt({ token: jwt({ sub: "u42" }, secret) });
  result.forever = { ok: forever.ok, error: forever.error };
  const anonymous = await attempt({});
  result.anonymous = { ok: anonymous.ok, error: anonymous.error };
  const s = good.socket;
  // A second user in room "r" sees every typing event that passed the limit: counting the
  // refusals instead would undercount them, as the worker drops a reply its socket's send
  // buffer has no room for (a flooder does not get to grow it).
  const watcher = (await attempt({ token: jwt({ sub: "u44", name: "Bob", exp }, secret) })).socket;
  await new Promise((r) => watcher.emit("join", "r", r));
  let passed = 0;
  const marker = new Promise((r) => watcher.on("typing", (t) => {
    if (t.user !== "Ada") return;
    if (t.typing) passed++; else r(true);
  }));
  let limited = 0;
  s.on("error", (e) => { if (e.code === "rate_limited") limited++; });
  await new Promise((r) => s.emit("join", "r", r));
  const t0 = Date.now();
  for (let i = 0; i < 200; i++) s.emit("typing", { room: "r", typing: true });
  // The events leave as fast as the transport takes them; the last answer bounds the burst.
  const who = await new Promise((r) => setTimeout(() => s.emit("whoami", r), 1200));
  result.burstMs = Date.now() - t0;
  // By now the bucket has refilled: the marker passes, after every event of the burst.
  s.emit("typing", { room: "r", typing: false });
  result.markerSeen = await Promise.race([marker, new Promise((r) => setTimeout(() => r(false), 5000))]);
  result.passed = passed;
  result.rateLimited = limited;
  result.stillConnected = s.connected && who.user.id === "u42";
  watcher.close();
  s.close();
  const flooder = (await attempt({ token: jwt({ sub: "u43", exp }, secret) })).socket;
  const gone = new Promise((r) => flooder.once("disconnect", () => r(true)));
  for (let i = 0; i < 800; i++) flooder.emit("typing", { room: "r", typing: true });
  result.flooderDisconnected = await Promise.race([gone, new Promise((r) => setTimeout(() => r(false), 5000))]);
  flooder.close();
  console.log(JSON.stringify(result));
  process.exit(0);
}

main().catch((e) => { console.log(JSON.stringify({ error: String(e) })); process.exit(1); });
