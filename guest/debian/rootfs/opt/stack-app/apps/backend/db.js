// One connection pool to the guest's PostgreSQL, shared by the server and the migrations.
const { Pool } = require("pg");

function connect() {
  const connectionString = process.env.STACK_DATABASE_CONNECTION_STRING;
  if (!connectionString) throw new Error("STACK_DATABASE_CONNECTION_STRING is not set");
  return new Pool({ connectionString, max: 4, connectionTimeoutMillis: 5000 });
}

module.exports = { connect };
