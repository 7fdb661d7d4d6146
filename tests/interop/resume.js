// Two clients on two workers in one room; alice sends a chat every 100 ms, and every message
// bob receives is printed as a JSON line {"seq":n,"at":ms}. Used to watch broadcasts stop and
// resume while the adapter's Redis restarts. Runs for --duration-ms, then prints {"done":true}.
//   node resume.js URL --duration-ms 30000
const { io } = require("socket.io-client");

const url = process.argv[2];
const i = process.argv.indexOf("--duration-ms");
const duration = i > 0 ? Number(process.argv[i + 1]) : 30000;
const once = (s, ev) => new Promise((r) => s.once(ev, r));

async function connect(name) {
  const s = io(url, { auth: { name }, forceNew: true, reconnectionDelay: 100, reconnectionDelayMax: 500 });
  const hello = await once(s, "hello");
  return { s, hello };
}

async function main() {
  const a = await connect("alice");
  let b = await connect("bob");
  for (let k = 0; k < 10 && b.hello.slot === a.hello.slot; k++) {
    b.s.close();
    b = await connect("bob");
  }
  // Rejoin on every (re)connect, as a real client must.
  for (const c of [a, b]) {
    c.s.on("connect", () => c.s.emit("join", "room1"));
    await new Promise((r) => c.s.emit("join", "room1", r));
  }
  console.log(JSON.stringify({ ready: true, workers: [a.hello.slot, b.hello.slot] }));
  b.s.on("chat", (m) => console.log(JSON.stringify({ seq: Number(m.text), at: Date.now() })));
  let seq = 0;
  const timer = setInterval(() => a.s.emit("chat", { room: "room1", text: String(seq++) }), 100);
  setTimeout(() => {
    clearInterval(timer);
    console.log(JSON.stringify({ done: true }));
    process.exit(0);
  }, duration);
}

main().catch((e) => {
  console.log(JSON.stringify({ error: String(e) }));
  process.exit(1);
});
