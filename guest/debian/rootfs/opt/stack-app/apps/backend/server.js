// The emulator's stand-in for the stack backend, with the guest contract's endpoints (docs/architecture.md):
// health with a real database check, the publishable-key check against the "ApiKeySet" row (which
// rotate-secrets updates), the runtime config in use, and a key-value store kept in PostgreSQL.
const { connect } = require("./db.js");
const { listen, send, sendJson } = require("../http-util.js");

const PROJECT_ID = "internal";
const MAX_VALUE_BYTES = 1024 * 1024;
const KV_NAME = /^(?!\.)[A-Za-z0-9._-]{1,128}$/;
const pool = connect();

async function keyIsValid(key) {
  if (typeof key !== "string" || key === "") return false;
  const result = await pool.query(
    'SELECT 1 FROM "ApiKeySet" WHERE "projectId" = $1 AND "publishableClientKey" = $2',
    [PROJECT_ID, key],
  );
  return result.rowCount > 0;
}

function runtimeConfig() {
  const names = (process.env.STACK_RUNTIME_CONFIG_NAMES || "").split(" ").filter(Boolean);
  const config = {};
  for (const name of names) {
    if (/(SECRET|PASSWORD|TOKEN|_KEY$)/.test(name)) continue;
    config[name] = process.env[name] ?? "";
  }
  return config;
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size > MAX_VALUE_BYTES) {
        reject(Object.assign(new Error("too large"), { tooLarge: true }));
        req.destroy();
      } else chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

async function health(res, url) {
  if (url.searchParams.get("db") !== "1") return sendJson(res, 200, { status: "ok" });
  try {
    await pool.query("SELECT 1");
    sendJson(res, 200, { status: "ok", db: "ok" });
  } catch (error) {
    sendJson(res, 503, { status: "error", db: error.message });
  }
}

async function keyValue(req, res, name) {
  if (!KV_NAME.test(name)) {
    return sendJson(res, 400, {
      error: "kv names are 1-128 characters of A-Z a-z 0-9 . _ - and do not start with .",
    });
  }
  if (req.method === "GET") {
    const result = await pool.query('SELECT "value" FROM "KeyValue" WHERE "name" = $1', [name]);
    if (result.rowCount === 0) return sendJson(res, 404, { error: "no such kv entry" });
    return send(res, 200, "application/octet-stream", result.rows[0].value);
  }
  if (req.method !== "POST" && req.method !== "PUT") return sendJson(res, 405, { error: "use GET or POST" });
  let value;
  try {
    value = await readBody(req);
  } catch (error) {
    if (error.tooLarge) return sendJson(res, 413, { error: "values are at most 1 MiB" });
    throw error;
  }
  // Committed (and so flushed by PostgreSQL) before the reply: a value the client saw stored survives a kill.
  await pool.query(
    `INSERT INTO "KeyValue" ("name", "value") VALUES ($1, $2)
     ON CONFLICT ("name") DO UPDATE SET "value" = EXCLUDED."value", "updatedAt" = now()`,
    [name, value],
  );
  sendJson(res, 200, { name, bytes: value.length });
}

listen("backend", async (req, res) => {
  const url = new URL(req.url, "http://backend");
  const path = url.pathname;
  if (req.method === "GET" && path === "/health") return health(res, url);
  if (req.method === "GET" && path === "/api/v1/config") return sendJson(res, 200, runtimeConfig());
  const needsKey = path === "/api/v1/projects/current" || path.startsWith("/api/v1/kv/");
  if (!needsKey) return sendJson(res, 404, { error: "not found" });
  if (!(await keyIsValid(req.headers["x-stack-publishable-client-key"]))) {
    return sendJson(res, 401, {
      error: "missing or invalid x-stack-publishable-client-key header",
      code: "INVALID_PUBLISHABLE_CLIENT_KEY",
    });
  }
  if (path === "/api/v1/projects/current" && req.method === "GET") {
    return sendJson(res, 200, { id: PROJECT_ID, display_name: "Stack Emulator (Debian image)" });
  }
  if (path.startsWith("/api/v1/kv/"))
    return keyValue(req, res, decodeURIComponent(path.slice("/api/v1/kv/".length)));
  sendJson(res, 404, { error: "not found" });
});
