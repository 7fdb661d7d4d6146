// The smallest app rtsup can supervise: a Node HTTP server on $PORT that says which worker
// answered. Run it with `rtsup start -c configs/node-http.toml`.
const http = require("http");

const port = Number(process.env.PORT || 3000);
const instance = process.env.RTSUP_INSTANCE || "0";

const server = http.createServer((req, res) => {
  if (req.url === "/health") {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("ok\n");
    return;
  }
  res.writeHead(200, { "content-type": "text/plain" });
  res.end(`hello from worker ${instance} (pid ${process.pid}, port ${port})\n`);
});

server.listen(port, "127.0.0.1", () => console.log(`worker ${instance} listening on ${port}`));

// Finish in-flight requests on SIGTERM, as rtsup's stop and restart expect.
process.on("SIGTERM", () => server.close(() => process.exit(0)));
