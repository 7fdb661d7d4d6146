// One official socket.io client on each rtsup host of a cluster (reference workers), all in
// one room; the first sends a chat message, which every client must receive (rooms are shared
// across hosts through the workers' Redis adapter). Prints one JSON line.
//   node cluster_room.js URL1 URL2 ...
const { io } = require("socket.io-client");

const urls = process.argv.slice(2);
const room = `cluster-${process.pid}`;
const out = { clients: urls.length, joined: 0, received: [], errors: [] };
const finish = () => { console.log(JSON.stringify(out)); process.exit(0); };
setTimeout(() => { out.errors.push("timeout"); finish(); }, 20000);

const sockets = urls.map((url, i) => {
  const s = io(url, { transports: ["websocket"], reconnection: false, timeout: 10000 });
  s.on("connect_error", (e) => out.errors.push(`${url}: ${e.message}`));
  s.on("chat", (m) => {
    if (m.room === room && !out.received.includes(i)) out.received.push(i);
    if (out.received.length === urls.length) finish();
  });
  return s;
});

Promise.all(sockets.map((s) => new Promise((resolve) => {
  const join = () => s.timeout(10000).emit("join", room, (err) => { if (!err) out.joined++; resolve(); });
  if (s.connected) join(); else s.once("connect", join);
}))).then(() => {
  if (out.joined !== urls.length) { out.errors.push("not every client joined"); return finish(); }
  sockets[0].emit("chat", { room, text: "across hosts" });
});
