import pg from 'pg';
import { parseUnits } from '../domain/money';

// bigint columns (money, ids) arrive as numbers, refused if they exceed 2^53.
pg.types.setTypeParser(pg.types.builtins.INT8, parseUnits);

export type Pool = pg.Pool;
/** A connection the caller runs a transaction on (from the pool, or the migrator's own). */
export type PoolClient = pg.ClientBase;
export type Queryable = pg.Pool | pg.ClientBase;

export function createPool(connectionString: string, max = 10): pg.Pool {
  const pool = new pg.Pool({ connectionString, max, application_name: 'sluice' });
  // An idle client that loses its server must not crash the process; nor must one
  // that loses it while checked out (a terminated backend, a restarted server): the
  // pool listens only to idle clients, and an 'error' event nobody listens to
  // brings the whole process down. The statement in flight, or the next one, fails
  // with the error instead, and the pool drops the broken client on its release.
  pool.on('error', () => undefined);
  pool.on('connect', (client) => client.on('error', () => undefined));
  return pool;
}

const RETRYABLE = new Set(['40001', '40P01']); // serialization_failure, deadlock_detected
const ATTEMPTS_MAX = 5;

// admin_shutdown (pg_terminate_backend), crash_shutdown, cannot_connect_now, connection_exception and failures
const CONNECTION_LOST_CODES = new Set(['57P01', '57P02', '57P03', '08000', '08003', '08006']);

/** The server went away under the client (its backend terminated, the server restarting, the socket cut): an outage, not a bug. */
export function isConnectionLost(error: unknown): boolean {
  const e = error as { code?: string; message?: string } | undefined;
  if (!e) return false;
  if (e.code && (CONNECTION_LOST_CODES.has(e.code) || e.code === 'ECONNRESET' || e.code === 'ECONNREFUSED' || e.code === 'EPIPE')) return true;
  // pg's own, when the socket ends: no SQLSTATE
  return /^Connection terminated|^Client has encountered a connection error and is not queryable/.test(e.message ?? '');
}

/**
 * Runs `fn` in one transaction. Serialization failures and deadlocks (which the
 * lock order should prevent, but a retry is the safe answer if one slips through)
 * are retried a bounded number of times, and so is a connection lost before the
 * COMMIT was sent (the server rolled the transaction back: running it again on
 * another connection is safe). A connection lost during the COMMIT is rethrown: the
 * transaction may have committed, and only an idempotency key can tell.
 * Everything else rolls back and rethrows.
 */
export async function withTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const client = await pool.connect();
    let committing = false;
    try {
      await client.query('begin');
      const result = await fn(client);
      committing = true;
      await client.query('commit');
      return result;
    } catch (error) {
      await client.query('rollback').catch(() => undefined);
      const code = (error as { code?: string }).code;
      if (code && RETRYABLE.has(code) && attempt < ATTEMPTS_MAX) continue;
      if (!committing && isConnectionLost(error) && attempt < ATTEMPTS_MAX) continue;
      throw error;
    } finally {
      client.release();
    }
  }
}

/**
 * Runs `fn` in the caller's transaction when given a client, or in a transaction of
 * its own when given the pool: a write of several statements (a row and its event) is
 * one transaction either way.
 */
export function inTransaction<T>(db: Queryable, fn: (client: PoolClient) => Promise<T>): Promise<T> {
  return db instanceof pg.Pool ? withTransaction(db, fn) : fn(db as PoolClient);
}

/** Database URL with another database name (tests and the launcher create databases). */
export function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

/** Database URL of another role on the same server and database (the runtime role's, from the owner's); `password` replaces the owner's, if any. */
export function withRole(url: string, role: string, password?: string): string {
  const parsed = new URL(url);
  parsed.username = encodeURIComponent(role);
  parsed.password = password === undefined ? '' : encodeURIComponent(password);
  return parsed.toString();
}

/** A database URL fit to print: its password, if any, replaced by `***`. */
export function redactUrl(url: string): string {
  const parsed = new URL(url);
  if (parsed.password) parsed.password = '***';
  return parsed.toString();
}

export function databaseName(url: string): string {
  return decodeURIComponent(new URL(url).pathname.replace(/^\//, '')) || 'postgres';
}

/** Creates the database if it does not exist (connecting to the server's `postgres` db). */
export async function ensureDatabase(url: string): Promise<void> {
  const name = databaseName(url);
  const admin = new pg.Client({ connectionString: withDatabase(url, 'postgres') });
  await admin.connect();
  try {
    const { rowCount } = await admin.query('select 1 from pg_database where datname = $1', [name]);
    if (!rowCount) await admin.query(`create database ${pg.escapeIdentifier(name)}`).catch((e: { code?: string }) => {
      if (e.code !== '42P04') throw e; // created concurrently
    });
  } finally {
    await admin.end();
  }
}
