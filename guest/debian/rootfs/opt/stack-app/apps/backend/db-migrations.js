// node db-migrations.js migrate|seed: what the stack server's dist/db-migrations.mjs does for prepare-app, on
// this image's schema. Both are idempotent: prepare-app runs them at every start of the app.
//   migrate  creates the tables: "ApiKeySet" and "LocalEmulatorProject" in the shape of the stack server's (a
//            config file's project: its absolute path on the host), "KeyValue" for app data
//   seed     upserts the internal project's key set from the STACK_SEED_INTERNAL_PROJECT_* values the
//            entrypoint exports (the rotated keys once there are any), so the database agrees with the env file
const { connect } = require("./db.js");

const PROJECT_ID = "internal";
const KEY_SET_ID = "3142e763-b230-44b5-8636-aa62f7489c26";
// At boot PostgreSQL may still be starting: wait for it rather than fail the app's start.
const CONNECT_WAIT_MS = 120_000;

async function waitForDatabase(pool) {
  const deadline = Date.now() + CONNECT_WAIT_MS;
  for (;;) {
    try {
      await pool.query("SELECT 1");
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}

const MIGRATION = `
CREATE TABLE IF NOT EXISTS "ApiKeySet" (
  "projectId" text NOT NULL,
  "id" uuid PRIMARY KEY,
  "description" text NOT NULL,
  "publishableClientKey" text UNIQUE,
  "secretServerKey" text UNIQUE,
  "superSecretAdminKey" text UNIQUE,
  "createdAt" timestamp(3) NOT NULL DEFAULT now(),
  "updatedAt" timestamp(3) NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS "ApiKeySet_projectId_idx" ON "ApiKeySet" ("projectId");
CREATE TABLE IF NOT EXISTS "LocalEmulatorProject" (
  "absoluteFilePath" text PRIMARY KEY,
  "projectId" uuid NOT NULL UNIQUE,
  "createdAt" timestamp(3) NOT NULL DEFAULT now(),
  "updatedAt" timestamp(3) NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS "KeyValue" (
  "name" text PRIMARY KEY,
  "value" bytea NOT NULL,
  "updatedAt" timestamp(3) NOT NULL DEFAULT now()
);`;

async function seed(pool) {
  const keys = [
    "STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY",
    "STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY",
    "STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY",
  ].map((name) => {
    const value = process.env[name];
    if (!value) throw new Error(`${name} is not set (the entrypoint exports it)`);
    return value;
  });
  await pool.query(
    `INSERT INTO "ApiKeySet" ("projectId", "id", "description", "publishableClientKey", "secretServerKey", "superSecretAdminKey")
     VALUES ($1, $2, 'internal project keys', $3, $4, $5)
     ON CONFLICT ("id") DO UPDATE SET "publishableClientKey" = $3, "secretServerKey" = $4, "superSecretAdminKey" = $5,
       "updatedAt" = now()
     WHERE ("ApiKeySet"."publishableClientKey", "ApiKeySet"."secretServerKey", "ApiKeySet"."superSecretAdminKey")
       IS DISTINCT FROM ($3, $4, $5)`,
    [PROJECT_ID, KEY_SET_ID, ...keys],
  );
}

async function main(command) {
  if (command !== "migrate" && command !== "seed")
    throw new Error("usage: node db-migrations.js migrate|seed");
  const pool = connect();
  try {
    await waitForDatabase(pool);
    if (command === "migrate") await pool.query(MIGRATION);
    else await seed(pool);
  } finally {
    await pool.end();
  }
}

main(process.argv[2]).catch((error) => {
  console.error(`db-migrations: ${error.message}`);
  process.exit(1);
});
