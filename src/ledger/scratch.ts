import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { createPool, withDatabase, withRole, type Pool } from '../db/pool';
import { RUNTIME_ROLE_DEFAULT } from '../db/roles';
import { migrateLedger } from './setup';

/** A fresh, migrated database of its own, a ledger migrated and set up, for a test file or the history recorder; `drop()` removes it. */
export interface ScratchDatabase {
  /** The owner's URL and pool (the migrations ran as it): for setting up and inspecting what a test needs. */
  url: string;
  pool: Pool;
  /** The runtime role's URL and pool (src/db/roles.ts): what the API and the worker connect as. */
  runtimeUrl: string;
  runtimePool: Pool;
  drop(): Promise<void>;
}

export interface ScratchOptions {
  /** The name's prefix (a random suffix follows). */
  prefix: string;
  /**
   * `false`: commits return before the WAL reaches the disk (synchronous_commit = off).
   * A commit can then be lost only if PostgreSQL itself crashes, never half-applied;
   * callers that commit thousands of transactions one after another save the fsync on
   * each. Default: durable, as in production.
   */
  durableCommits?: boolean;
  /** Units the free-tier pool is seeded with (default: the product's default, 10,000). */
  poolSeedUnits?: number;
  /** Stripe accounts the pool is held as (default: the product's default, 8). */
  poolStripes?: number;
}

/** Creates and migrates a database on `serverUrl` (a URL of any database on that server). */
export async function createScratchDatabase(serverUrl: string, options: ScratchOptions): Promise<ScratchDatabase> {
  const name = `${options.prefix}_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`create database ${name}`);
  // a database default: every session on it (the migrations, the pool) starts with it
  if (options.durableCommits === false) await admin.query(`alter database ${name} set synchronous_commit = off`);
  await admin.end();
  const url = withDatabase(serverUrl, name);
  await migrateLedger(url, { poolSeedUnits: options.poolSeedUnits, poolStripes: options.poolStripes });
  const pool = createPool(url, 20);
  const runtimeUrl = withRole(url, RUNTIME_ROLE_DEFAULT);
  const runtimePool = createPool(runtimeUrl, 20);
  return {
    url,
    pool,
    runtimeUrl,
    runtimePool,
    async drop() {
      await pool.end();
      await runtimePool.end();
      const c = new pg.Client({ connectionString: serverUrl });
      await c.connect();
      await c.query(`drop database if exists ${name} with (force)`);
      await c.end();
    },
  };
}
