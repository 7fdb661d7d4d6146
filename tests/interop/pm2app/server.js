// Fixture of the PM2-migration tests: a typical PM2 cluster-mode app
// (Express + socket.io v4) that the tests import with
// `rtsup import ecosystem.config.js` and then run under rtsup.
//
// It behaves the way apps written for PM2 do:
//   - listens on $PORT (rtsup gives each worker its own consecutive port),
//   - reads NODE_APP_INSTANCE and the increment_var WORKER_ID,
//   - says process.send('ready') once listening (wait_ready),
//   - shuts down cleanly on SIGINT, SIGTERM or the 'shutdown' message.
//
// Env: PORT, NODE_APP_INSTANCE, NODE_ENV, GREETING, WORKER_ID, and
// NEVER_READY_INSTANCE (the instance that never says ready, for timeout tests).
"use strict";

const http = require("http");
const express = require("express");
const { Server } = require("socket.io");

const port = Number(process.env.PORT);
const instance = process.env.NODE_APP_INSTANCE;

const app = express();

app.get("/health", (req, res) => {
  res.type("text/plain").send("ok");
});

app.get("/env", (req, res) => {
  res.json({
    NODE_ENV: process.env.NODE_ENV,
    GREETING: process.env.GREETING,
    PORT: process.env.PORT,
    NODE_APP_INSTANCE: process.env.NODE_APP_INSTANCE,
    WORKER_ID: process.env.WORKER_ID,
    pid: process.pid,
  });
});

const httpServer = http.createServer(app);
const io = new Server(httpServer);

io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    socket.join(room);
    if (typeof ack === "function") ack("joined");
  });
  socket.on("whoami", (ack) => {
    if (typeof ack === "function") ack({ pid: process.pid, instance: process.env.NODE_APP_INSTANCE });
  });
});

httpServer.listen(port, "127.0.0.1", () => {
  console.log(`listening on ${port} as instance ${instance} (NODE_ENV=${process.env.NODE_ENV})`);
  const neverReady = process.env.NEVER_READY_INSTANCE;
  if (neverReady !== undefined && neverReady === instance) {
    console.log(`instance ${instance} will never say ready`);
    return;
  }
  if (typeof process.send === "function") process.send("ready");
});

// Graceful shutdown: io.close() disconnects the sockets and closes httpServer.
let shuttingDown = false;
function shutdown() {
  if (shuttingDown) return;
  shuttingDown = true;
  // Do not hang on lingering keep-alive or upgraded connections.
  setTimeout(() => process.exit(0), 1000).unref();
  io.close(() => process.exit(0));
}

process.on("SIGINT", () => {
  console.log("got SIGINT");
  shutdown();
});

process.on("SIGTERM", () => {
  console.log("got SIGTERM");
  shutdown();
});

process.on("message", (m) => {
  if (m === "shutdown") {
    console.log("got shutdown message");
    shutdown();
  }
});
