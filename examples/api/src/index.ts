import { createServer, IncomingMessage, ServerResponse } from "node:http";
import { userInfo } from "node:os";

const port = Number(process.env.PORT ?? 8000);

function handle(req: IncomingMessage, res: ServerResponse): void {
  if (req.url === "/health") {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("ok\n");
    return;
  }
  const body = {
    service: "kiln-example-api",
    uid: userInfo().uid,
    user: userInfo().username,
    node: process.version,
    path: req.url,
  };
  res.writeHead(200, { "content-type": "application/json" });
  res.end(JSON.stringify(body) + "\n");
}

const server = createServer(handle).listen(port, () => {
  console.log(`listening on :${port}`);
});

// As the first process of its container, node ignores SIGTERM unless it
// handles it: `docker stop`, `kiln stop` and `compose down` would wait their
// grace period (10 s) and then kill it.
process.on("SIGTERM", () => {
  console.log("stopping");
  server.close(() => process.exit(0));
});
