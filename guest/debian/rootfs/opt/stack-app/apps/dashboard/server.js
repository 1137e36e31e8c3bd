// The emulator's stand-in for the stack dashboard: the sign-in page with the URLs in use, and a built script
// that carries the publishable key the way a Next.js build inlines it (prepare-app fills it in on the first
// start, rotate-secrets rewrites it on every rotation).
const { readFileSync } = require("node:fs");
const { join } = require("node:path");
const { listen, send } = require("../http-util.js");

const escapeHtml = (s) =>
  String(s ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

function signIn() {
  const dashboard = escapeHtml(process.env.NEXT_PUBLIC_STACK_DASHBOARD_URL);
  const backend = escapeHtml(process.env.NEXT_PUBLIC_STACK_API_URL);
  return `<!doctype html>
<html><head><title>Sign in - Stack Emulator (Debian image)</title><script src="/static/app.js"></script></head><body>
<h1>Sign in</h1>
<p>Dashboard: <a id="dashboard-url" href="${dashboard}">${dashboard}</a></p>
<p>Backend: <span id="backend-url">${backend}</span></p>
</body></html>
`;
}

listen("dashboard", (req, res) => {
  const path = new URL(req.url, "http://dashboard").pathname;
  if (req.method !== "GET") return send(res, 405, "text/plain", "use GET");
  if (path === "/handler/sign-in") return send(res, 200, "text/html; charset=utf-8", signIn());
  if (path === "/") return send(res, 302, "text/plain", "", { location: "/handler/sign-in" });
  // Read per request: a rotation rewrites the file in place of the old one.
  if (path === "/static/app.js") {
    return send(res, 200, "text/javascript", readFileSync(join(__dirname, "static", "app.js")));
  }
  send(res, 404, "text/plain", "not found");
});
