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
  // an idle client that loses its server must not crash the process
  pool.on('error', () => undefined);
  return pool;
}

const RETRYABLE = new Set(['40001', '40P01']); // serialization_failure, deadlock_detected
const ATTEMPTS_MAX = 5;

/**
 * Runs `fn` in one transaction. Serialization failures and deadlocks (which the
 * lock order should prevent, but a retry is the safe answer if one slips through)
 * are retried a bounded number of times; everything else rolls back and rethrows.
 */
export async function withTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const client = await pool.connect();
    try {
      await client.query('begin');
      const result = await fn(client);
      await client.query('commit');
      return result;
    } catch (error) {
      await client.query('rollback').catch(() => undefined);
      const code = (error as { code?: string }).code;
      if (code && RETRYABLE.has(code) && attempt < ATTEMPTS_MAX) continue;
      throw error;
    } finally {
      client.release();
    }
  }
}

/** Database URL with another database name (tests and the launcher create databases). */
export function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
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
