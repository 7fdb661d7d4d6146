// Two official socket.io-client sockets on two different rtsup-worker processes: prove that a
// room message, a private message and a room count cross workers. Prints one JSON line.
//   node chat.js URL [--emit-token T]   (with a token: also POST /emit and await the event)
const { io } = require("socket.io-client");

const url = process.argv[2];
const timeout = setTimeout(() => finish({ error: "timeout" }, 2), 20000);
const result = {};
const finish = (extra, code = 0) => {
  clearTimeout(timeout);
  console.log(JSON.stringify({ ...result, ...extra }));
  process.exit(code);
};
const once = (s, ev) => new Promise((r) => s.once(ev, r));
const ack = (s, ev, arg) => new Promise((r) => (arg === undefined ? s.emit(ev, r) : s.emit(ev, arg, r)));

async function connect(name) {
  const s = io(url, { auth: { name }, transports: ["polling", "websocket"], forceNew: true });
  const hello = await once(s, "hello");
  return { s, hello };
}

async function main() {
  const a = await connect("alice");
  let b = await connect("bob");
  // New sessions are spread by least-conn; retry until bob lands on another worker.
  for (let i = 0; i < 10 && b.hello.slot === a.hello.slot; i++) {
    b.s.close();
    b = await connect("bob");
  }
  result.workers = [a.hello.slot, b.hello.slot];
  await ack(a.s, "join", "room1");
  await ack(b.s, "join", "room1");
  const count = await ack(a.s, "room_count", "room1");
  result.roomCount = count.count;
  const gotChat = once(b.s, "chat");
  a.s.emit("chat", { room: "room1", text: "hi from alice" });
  const chat = await gotChat;
  result.chat = { text: chat.text, from: chat.from, worker: chat.worker };
  const gotDm = once(a.s, "dm");
  b.s.emit("dm", { to: a.hello.user.id, text: "psst" });
  result.dm = (await gotDm).text;
  const i = process.argv.indexOf("--emit-token");
  if (i > 0) {
    const gotNote = once(b.s, "notification");
    const res = await fetch(`${url}/emit`, {
      method: "POST",
      headers: { authorization: `Bearer ${process.argv[i + 1]}`, "content-type": "application/json" },
      body: JSON.stringify({ room: "room1", event: "notification", data: { n: 1 } }),
    });
    result.emitStatus = res.status;
    result.notification = await gotNote;
  }
  const whoami = await ack(b.s, "whoami");
  result.whoami = { slot: whoami.slot, pid: whoami.pid, transport: whoami.transport };
  a.s.close();
  b.s.close();
  finish({});
}

main().catch((e) => finish({ error: String(e) }, 1));
