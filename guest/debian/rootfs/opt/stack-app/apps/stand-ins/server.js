// What the real image runs in containers of their own beside the app, answering on the same guest ports as far as
// the host looks at them: MinIO (9090, its health check), Inbucket (9001, its web page) and the mock OAuth server
// (${prefix}14, the port the guest tells browsers about).
const { listen, send, sendJson } = require("../http-util.js");

const prefix = process.env.NEXT_PUBLIC_STACK_PORT_PREFIX || "81";

listen(
  "minio",
  (req, res) => {
    if (req.method === "GET" && req.url === "/minio/health/live") return send(res, 200, "text/plain", "");
    send(res, 404, "text/plain", "not found");
  },
  9090,
);
listen(
  "inbucket",
  (req, res) => {
    if (req.method === "GET" && req.url === "/") {
      return send(
        res,
        200,
        "text/html; charset=utf-8",
        "<!doctype html><title>Inbucket (Debian image)</title>",
      );
    }
    send(res, 404, "text/plain", "not found");
  },
  9001,
);
listen(
  "mock-oauth",
  (_req, res) => sendJson(res, 200, { service: "mock-oauth", image: "debian" }),
  Number(`${prefix}14`),
);
