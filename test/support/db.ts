import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { createPool, withDatabase, type Pool } from '../../src/db/pool';
import { migrate } from '../../src/db/migrate';

/** The server tests create their databases on (trust auth on this machine kind). */
export const SERVER_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export interface TestDatabase {
  url: string;
  pool: Pool;
  drop(): Promise<void>;
}

export interface TestDatabaseOptions {
  /**
   * `false`: commits return before the WAL reaches the disk (synchronous_commit = off).
   * A commit can then be lost only if PostgreSQL itself crashes, never half-applied, and
   * no test crashes PostgreSQL; tests that commit thousands of transactions one after
   * another (a long stream) save the fsync on each. Default: durable, as in production.
   */
  durableCommits?: boolean;
  /** Units the free-tier pool is seeded with (default: the product's default, 10,000). */
  poolSeedUnits?: number;
  /** Stripe accounts the pool is held as (default: the product's default, 8). */
  poolStripes?: number;
}

/** A fresh, migrated database for one test file; `drop()` removes it. */
export async function createTestDatabase(options: TestDatabaseOptions = {}): Promise<TestDatabase> {
  const name = `sluice_test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: SERVER_URL });
  await admin.connect();
  await admin.query(`create database ${name}`);
  // a database default: every session on it (the migrations, the pool) starts with it
  if (options.durableCommits === false) await admin.query(`alter database ${name} set synchronous_commit = off`);
  await admin.end();
  const url = withDatabase(SERVER_URL, name);
  await migrate(url, { poolSeedUnits: options.poolSeedUnits, poolStripes: options.poolStripes });
  const pool = createPool(url, 20);
  return {
    url,
    pool,
    async drop() {
      await pool.end();
      const c = new pg.Client({ connectionString: SERVER_URL });
      await c.connect();
      await c.query(`drop database if exists ${name} with (force)`);
      await c.end();
    },
  };
}
