import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { grantRoles, type RoleOptions } from './roles';

const MIGRATIONS_DIR = join(__dirname, 'migrations');
// one migrator at a time per database (the launcher, tests and workers may race)
const MIGRATION_LOCK_ID = 0x511ce;

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export function loadMigrations(dir = MIGRATIONS_DIR): Migration[] {
  return readdirSync(dir)
    .filter((f) => /^\d{3}_[a-z0-9_]+\.sql$/.test(f))
    .sort()
    .map((file) => ({ version: Number(file.slice(0, 3)), name: file.replace(/\.sql$/, ''), sql: readFileSync(join(dir, file), 'utf8') }));
}

export interface MigrateOptions extends RoleOptions {
  /**
   * Run once the schema is current, on the same connection and under the same lock
   * (the ledger's setup: its stripe accounts and the pool's seed, src/ledger/setup.ts).
   */
  afterSchema?: (client: pg.Client) => Promise<void>;
}

/**
 * Applies the versioned migrations not yet applied, each in its own transaction,
 * then grants the runtime and read-only roles what they may do (src/db/roles.ts),
 * then runs `afterSchema`.
 * Returns the versions applied.
 */
export async function migrate(url: string, options: MigrateOptions = {}): Promise<number[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query('select pg_advisory_lock($1)', [MIGRATION_LOCK_ID]);
    await client.query(`create table if not exists schema_migrations (
      version integer primary key, name text not null, applied_at timestamptz not null default now())`);
    const { rows } = await client.query<{ version: number }>('select version from schema_migrations');
    const done = new Set(rows.map((r) => r.version));
    const applied: number[] = [];
    for (const m of loadMigrations()) {
      if (done.has(m.version)) continue;
      await client.query('begin');
      try {
        await client.query(m.sql);
        await client.query('insert into schema_migrations (version, name) values ($1, $2)', [m.version, m.name]);
        await client.query('commit');
        applied.push(m.version);
      } catch (error) {
        await client.query('rollback');
        throw new Error(`migration ${m.name} failed: ${(error as Error).message}`);
      }
    }
    await grantRoles(client, options);
    await options.afterSchema?.(client);
    return applied;
  } finally {
    await client.query('select pg_advisory_unlock($1)', [MIGRATION_LOCK_ID]).catch(() => undefined);
    await client.end();
  }
}
