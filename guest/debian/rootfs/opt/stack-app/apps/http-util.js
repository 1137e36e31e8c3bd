// The little HTTP plumbing the backend and the dashboard share.

function send(res, status, type, body, headers = {}) {
  res.writeHead(status, {
    "content-type": type,
    "cache-control": "no-store",
    connection: "close",
    ...headers,
  });
  res.end(body);
}

function sendJson(res, status, value) {
  send(res, status, "application/json", JSON.stringify(value));
}

/**
 * Listens on `port` (default $PORT, which supervisord.conf sets per program from BACKEND_PORT and DASHBOARD_PORT)
 * and says so on stdout, which goes to the journal of stack.service.
 */
function listen(name, handler, port = Number(process.env.PORT)) {
  const http = require("node:http");
  const server = http.createServer((req, res) => {
    Promise.resolve(handler(req, res)).catch((error) => {
      console.error(`${name}: ${req.method} ${req.url}: ${error.message}`);
      if (!res.headersSent) sendJson(res, 500, { error: "internal error" });
      else res.destroy();
    });
  });
  server.listen(port, process.env.HOSTNAME || "0.0.0.0", () => console.log(`${name}: listening on ${port}`));
  // supervisord stops the group with TERM: exit at once, so a restart can bind the port again.
  process.on("SIGTERM", () => process.exit(0));
}

module.exports = { send, sendJson, listen };
