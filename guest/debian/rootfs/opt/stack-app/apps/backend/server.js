// The emulator's stand-in for the stack backend: the part of its API the host and the guest contract use
// (docs/guest-contract.md), answered as the dev image's backend answers it (guest/dev/rootfs/usr/local/lib/stack/http),
// on PostgreSQL: keys are checked against "ApiKeySet" (which the seed and rotate-secrets write), a config file's
// project is found through "LocalEmulatorProject", and the config file itself is read and written at /host<path>.
const { randomBytes, randomUUID } = require("node:crypto");
const { existsSync, readFileSync } = require("node:fs");
const fs = require("node:fs/promises");
const path = require("node:path");
const { connect } = require("./db.js");
const { listen, send, sendJson } = require("../http-util.js");

const INTERNAL_PROJECT_ID = "internal";
const HOST_MOUNT = process.env.STACK_LOCAL_EMULATOR_HOST_MOUNT_ROOT || "/host";
const MAX_VALUE_BYTES = 1024 * 1024;
const MAX_PROJECT_REQUEST_BYTES = 64 * 1024;
const KV_NAME = /^(?!\.)[A-Za-z0-9._-]{1,128}$/;
const pool = connect();

/** An answer other than 200, shaped as the real backend shapes its errors: {code, error}. */
class Refusal extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}
const refuse = (status, code, message) => {
  throw new Refusal(status, code, message);
};

function readBody(req, maxBytes) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size > maxBytes) {
        reject(new Refusal(413, "BODY_TOO_LARGE", `the request body is at most ${maxBytes} bytes`));
        req.destroy();
      } else chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

async function readJsonObject(req, maxBytes) {
  try {
    const value = JSON.parse((await readBody(req, maxBytes)).toString("utf8"));
    return value !== null && typeof value === "object" && !Array.isArray(value) ? value : undefined;
  } catch (error) {
    if (error instanceof Refusal) throw error;
    return undefined;
  }
}

// x-stack-access-type, the header with its key, the "ApiKeySet" column it is checked against, the error code.
const ACCESS = {
  client: { level: 1, header: "x-stack-publishable-client-key", column: "publishableClientKey" },
  server: { level: 2, header: "x-stack-secret-server-key", column: "secretServerKey" },
  admin: { level: 3, header: "x-stack-super-secret-admin-key", column: "superSecretAdminKey" },
};
const KEY_ERROR = {
  client: "INVALID_PUBLISHABLE_CLIENT_KEY",
  server: "INVALID_SECRET_SERVER_KEY",
  admin: "INVALID_SUPER_SECRET_ADMIN_KEY",
};

/**
 * The request's project (x-stack-project-id, unless the endpoint names it) must exist, and the request must prove an
 * access type at least `minimum` (client < server < admin) with that type's key. Returns the project id.
 */
async function requireAccess(req, minimum, projectId = req.headers["x-stack-project-id"]) {
  if (!projectId) refuse(400, "PROJECT_ID_REQUIRED", "the x-stack-project-id header is required");
  const type = req.headers["x-stack-access-type"];
  if (!type) {
    refuse(
      401,
      "ACCESS_TYPE_REQUIRED",
      "the x-stack-access-type header is required (client, server or admin)",
    );
  }
  const access = Object.hasOwn(ACCESS, type) ? ACCESS[type] : undefined;
  if (!access) refuse(400, "INVALID_ACCESS_TYPE", "x-stack-access-type must be client, server or admin");
  const key = req.headers[access.header];
  const { rows } = await pool.query(
    `SELECT count(*) > 0 AS "exists", coalesce(bool_or("${access.column}" = $2), false) AS "valid"
     FROM "ApiKeySet" WHERE "projectId" = $1`,
    [projectId, key ?? ""],
  );
  if (!rows[0].exists) refuse(401, "INVALID_PROJECT_FOR_ACCESS_TOKEN", `no project ${projectId}`);
  if (!key || !rows[0].valid)
    refuse(401, KEY_ERROR[type], `the ${type} key is missing or not this project's`);
  if (access.level < ACCESS[minimum].level) {
    refuse(401, "INSUFFICIENT_ACCESS_TYPE", `this endpoint needs ${minimum} access or higher`);
  }
  return projectId;
}

/** A config file as the guest sees it, under /host; only normalized absolute paths, so nothing else is reachable. */
function hostFile(absolutePath) {
  if (!absolutePath.startsWith("/") || /\/\/|\/\.\.?\//.test(`${absolutePath}/`)) return undefined;
  return `${HOST_MOUNT}${absolutePath}`;
}

const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);

/**
 * The `config` a config file exports: what follows `export const config[: Type] =`, up to the final semicolon, must
 * be a JSON object (what the dashboard writes); no such export, or an empty file, is an empty config.
 */
function parseConfig(text) {
  const start = /^[ \t]*export[ \t]+const[ \t]+config[ \t]*(?::[^=\n]*)?=/m.exec(text);
  if (!start) return {};
  const config = JSON.parse(text.slice(start.index + start[0].length).replace(/;[ \t\r\n]*$/, ""));
  if (!isObject(config)) throw new Error("not an object");
  return config;
}

async function readConfig(file, requested) {
  try {
    return parseConfig(await fs.readFile(file, "utf8"));
  } catch {
    refuse(
      400,
      "BAD_REQUEST",
      `Invalid config in ${requested}. The file must export a 'config' object (this image reads a JSON object literal).`,
    );
  }
}

/**
 * Nested objects from dotted keys ("a.b": 1 -> {a: {b: 1}}), as the backend normalizes configs; a dotted key into a
 * value that is not an object would drop it, and is refused. Objects without a prototype: "__proto__" is a key.
 */
function setPath(target, dotted, value) {
  const keys = dotted.split(".");
  let node = target;
  for (const key of keys.slice(0, -1)) {
    if (node[key] === undefined || node[key] === null) node[key] = Object.create(null);
    else if (!isObject(node[key]))
      refuse(400, "BAD_REQUEST", "the override conflicts with the config (a key would be dropped)");
    node = node[key];
  }
  node[keys[keys.length - 1]] = value;
}
function normalize(value) {
  if (!isObject(value)) return value;
  const out = Object.create(null);
  for (const [key, item] of Object.entries(value)) setPath(out, key, normalize(item));
  return out;
}

/**
 * The @stackframe package whose StackConfig type a written config imports: from the nearest package.json of the
 * file's folder or its parents, as the backend's detectImportPackageFromDir does; @stackframe/js when none says.
 */
function importPackage(dir) {
  for (let current = dir; ; current = path.dirname(current)) {
    const manifest = path.join(current, "package.json");
    if (existsSync(manifest)) {
      try {
        const pkg = JSON.parse(readFileSync(manifest, "utf8"));
        const deps = [...Object.keys(pkg.dependencies ?? {}), ...Object.keys(pkg.devDependencies ?? {})];
        const found = [
          "@stackframe/stack",
          "@stackframe/react",
          "@stackframe/js",
          "@stackframe/template",
        ].find((p) => deps.includes(p));
        if (found) return found;
      } catch {}
      break;
    }
    if (current === path.dirname(current)) break;
  }
  return "@stackframe/js";
}

/** Written in place (the host's sync sees the same file), rendered as the backend renders a config file. */
async function writeConfig(file, config) {
  const text = `import type { StackConfig } from "${importPackage(path.dirname(file))}";\n\nexport const config: StackConfig = ${JSON.stringify(config, null, 2)};\n`;
  await fs.writeFile(file, text);
}

const newKey = (prefix) => `${prefix}_${randomBytes(32).toString("hex")}`;

/**
 * The project of a config file, keyed by its absolute path so that editing the config keeps the project and its
 * data, with a key set of its own; one transaction, serialized per path, so two requests at once get one project.
 */
async function projectForPath(absolutePath) {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    await client.query("SELECT pg_advisory_xact_lock(hashtext($1))", [absolutePath]);
    await client.query(
      `INSERT INTO "LocalEmulatorProject" ("absoluteFilePath", "projectId") VALUES ($1, $2)
       ON CONFLICT ("absoluteFilePath") DO NOTHING`,
      [absolutePath, randomUUID()],
    );
    const { rows } = await client.query(
      `SELECT p."projectId", k."publishableClientKey", k."secretServerKey", k."superSecretAdminKey"
       FROM "LocalEmulatorProject" p LEFT JOIN "ApiKeySet" k ON k."projectId" = p."projectId"::text
       WHERE p."absoluteFilePath" = $1 ORDER BY k."createdAt" DESC LIMIT 1`,
      [absolutePath],
    );
    let project = rows[0];
    if (!project.publishableClientKey) {
      project = {
        ...project,
        publishableClientKey: newKey("pck"),
        secretServerKey: newKey("ssk"),
        superSecretAdminKey: newKey("sak"),
      };
      await client.query(
        `INSERT INTO "ApiKeySet" ("projectId", "id", "description", "publishableClientKey", "secretServerKey", "superSecretAdminKey")
         VALUES ($1, $2, $3, $4, $5, $6)`,
        [
          project.projectId,
          randomUUID(),
          `Local emulator key set for ${absolutePath}`,
          project.publishableClientKey,
          project.secretServerKey,
          project.superSecretAdminKey,
        ],
      );
    }
    await client.query("COMMIT");
    return project;
  } catch (error) {
    await client.query("ROLLBACK").catch(() => {});
    throw error;
  } finally {
    client.release();
  }
}

async function localEmulatorProject(req, res) {
  if (req.headers["x-stack-project-id"] !== INTERNAL_PROJECT_ID) {
    refuse(403, "FORBIDDEN", "only the internal project provisions local emulator projects");
  }
  await requireAccess(req, "client");
  const body = await readJsonObject(req, MAX_PROJECT_REQUEST_BYTES);
  const requested = body?.absolute_file_path;
  if (typeof requested !== "string") {
    refuse(400, "SCHEMA_ERROR", "the body must be a JSON object with an absolute_file_path string");
  }
  if (!requested.startsWith("/")) refuse(400, "BAD_REQUEST", "absolute_file_path must be an absolute path.");
  const file = hostFile(requested);
  if (!file) refuse(400, "BAD_REQUEST", "absolute_file_path must be a normalized absolute path");
  const stat = await fs.stat(file).catch(() => undefined);
  if (!stat?.isFile()) refuse(400, "BAD_REQUEST", `Config file not found: ${requested}`);
  if ((await fs.readFile(file, "utf8")).trim() === "") {
    await writeConfig(file, {}).catch(() => refuse(500, "WRITE_FAILED", "could not write a default config"));
  }
  const config = await readConfig(file, requested);
  const project = await projectForPath(requested);
  sendJson(res, 200, {
    project_id: project.projectId,
    publishable_client_key: project.publishableClientKey,
    secret_server_key: project.secretServerKey,
    super_secret_admin_key: project.superSecretAdminKey,
    branch_config_override_string: JSON.stringify(config),
  });
}

/**
 * GET and PATCH /api/v1/internal/config/override/branch for a local emulator project: its config lives in its
 * config file, read afresh on every request (so a host edit shows at once) and written back on a change.
 */
async function branchConfig(req, res) {
  const projectId = await requireAccess(req, "server");
  const { rows } = await pool.query(
    'SELECT "absoluteFilePath" FROM "LocalEmulatorProject" WHERE "projectId"::text = $1',
    [projectId],
  );
  if (rows.length === 0)
    refuse(404, "NOT_A_LOCAL_EMULATOR_PROJECT", `project ${projectId} has no config file`);
  const requested = rows[0].absoluteFilePath;
  const file = hostFile(requested);
  const exists = existsSync(file);
  if (req.method === "GET") {
    const config = exists ? await readConfig(file, requested) : {};
    return sendJson(res, 200, { config_string: JSON.stringify(config) });
  }
  if (req.method !== "PATCH") refuse(405, "METHOD_NOT_ALLOWED", "use GET or PATCH");
  const body = await readJsonObject(req, MAX_VALUE_BYTES);
  let override;
  try {
    override = JSON.parse(body?.config_override_string);
  } catch {}
  if (!isObject(override)) refuse(400, "BAD_REQUEST", "Invalid config JSON");
  if (!existsSync(path.dirname(file))) {
    refuse(500, "HOST_MOUNT_MISSING", `the folder of ${requested} is not available at ${path.dirname(file)}`);
  }
  const merged = normalize(exists ? await readConfig(file, requested) : {});
  for (const [key, value] of Object.entries(override)) setPath(merged, key, normalize(value));
  await writeConfig(file, normalize(merged)).catch(() =>
    refuse(500, "WRITE_FAILED", `could not write ${requested}`),
  );
  console.log(`backend: wrote the config of project ${projectId}`);
  sendJson(res, 200, { success: true });
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

/**
 * The app's settings in use, for checking what the guest rendered: names that look like credentials left out, and
 * connection strings, which carry a password.
 */
function publicConfig() {
  return Object.fromEntries(
    Object.entries(process.env).filter(
      ([name]) =>
        /^(STACK|NEXT_PUBLIC|BACKEND|DASHBOARD|MOCK)_[A-Z0-9_]*$/.test(name) &&
        !/(SECRET|PASSWORD|TOKEN|KEY|CONNECTION_STRING)/.test(name),
    ),
  );
}

async function keyValue(req, res, name) {
  if (!KV_NAME.test(name)) {
    refuse(400, "BAD_REQUEST", "kv names are 1-128 characters of A-Z a-z 0-9 . _ - and do not start with .");
  }
  if (req.method === "GET") {
    const result = await pool.query('SELECT "value" FROM "KeyValue" WHERE "name" = $1', [name]);
    if (result.rowCount === 0) refuse(404, "NOT_FOUND", "no such kv entry");
    return send(res, 200, "application/octet-stream", result.rows[0].value);
  }
  if (req.method !== "POST" && req.method !== "PUT") refuse(405, "METHOD_NOT_ALLOWED", "use GET or POST");
  const value = await readBody(req, MAX_VALUE_BYTES);
  // Committed (and so flushed by PostgreSQL) before the reply: a value the client saw stored survives a kill.
  await pool.query(
    `INSERT INTO "KeyValue" ("name", "value") VALUES ($1, $2)
     ON CONFLICT ("name") DO UPDATE SET "value" = EXCLUDED."value", "updatedAt" = now()`,
    [name, value],
  );
  sendJson(res, 200, { name, bytes: value.length });
}

async function route(req, res) {
  const url = new URL(req.url, "http://backend");
  const at = `${req.method} ${url.pathname}`;
  if (at === "GET /health") return health(res, url);
  if (at === "GET /api/v1/config") return sendJson(res, 200, publicConfig());
  if (at === "GET /api/v1/projects/current") {
    const projectId = await requireAccess(req, "client");
    return sendJson(res, 200, { id: projectId, display_name: "Stack Emulator (Debian image)" });
  }
  if (at === "POST /api/v1/internal/local-emulator/project") return localEmulatorProject(req, res);
  if (url.pathname === "/api/v1/internal/config/override/branch") return branchConfig(req, res);
  if (url.pathname.startsWith("/api/v1/kv/")) {
    // The store is the internal project's.
    await requireAccess(req, "client", INTERNAL_PROJECT_ID);
    return keyValue(req, res, decodeURIComponent(url.pathname.slice("/api/v1/kv/".length)));
  }
  refuse(404, "NOT_FOUND", "not found");
}

listen("backend", (req, res) =>
  route(req, res).catch((error) => {
    if (!(error instanceof Refusal)) throw error;
    sendJson(res, error.status, { code: error.code, error: error.message });
  }),
);
