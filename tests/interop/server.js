// Official Node socket.io server, one per rtsup slot, sharing rooms through
// @socket.io/redis-adapter. Env: PORT, RTSUP_INSTANCE, REDIS_URL, ADAPTER_KEY.
const http = require("http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

const port = Number(process.env.PORT);
const instance = Number(process.env.RTSUP_INSTANCE);

async function main() {
  const pub = createClient({ url: process.env.REDIS_URL || "redis://127.0.0.1:6379" });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  const httpServer = http.createServer((req, res) => {
    const body = `worker ${instance}\n`;
    res.writeHead(200, { "content-type": "text/plain", "content-length": Buffer.byteLength(body) });
    res.end(body);
  });
  const io = new Server(httpServer, {
    adapter: createAdapter(pub, sub, { key: process.env.ADAPTER_KEY || "socket.io" }),
  });
  io.on("connection", (socket) => {
    socket.emit("hello", { instance, pid: process.pid });
    socket.on("join", (room, ack) => {
      socket.join(room);
      if (typeof ack === "function") ack({ instance });
    });
    socket.on("broadcast", ({ room, payload }) => io.to(room).emit("msg", payload));
  });
  // Ready (for rtsup's tcp probe) only once Redis is connected.
  httpServer.listen(port, "127.0.0.1", () => console.log(`socket.io worker ${instance} on ${port}`));
  process.on("SIGTERM", () => {
    io.close();
    httpServer.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
