import pg from 'pg';
import { READONLY_ROLE_DEFAULT, RUNTIME_ROLE_DEFAULT } from '../domain/settings';
import type { Queryable } from './pool';

/*
 * The database roles Sluice runs as (DESIGN §2):
 * - the owner: whoever runs the migrations (SLUICE_MIGRATION_DATABASE_URL). It owns
 *   every table and the functions the ledger's triggers run; nothing else connects as it.
 * - the runtime role (the API and the worker, DATABASE_URL): not a superuser, owns
 *   nothing, so it can neither switch triggers off (session_replication_role needs a
 *   superuser, ALTER TABLE … DISABLE TRIGGER the owner) nor change a balance: the
 *   ledger's triggers move balances and holds as the owner (SECURITY DEFINER), and the
 *   runtime role may not update accounts nor rewrite the append-only tables.
 * - the read-only role (reporting, the auditor from outside): SELECT, never a secret.
 * Roles are cluster-wide; the grants are per database and made again after every
 * migration run, so a new table gets its grants with the migration that adds it.
 */

export { READONLY_ROLE_DEFAULT, RUNTIME_ROLE_DEFAULT };

/**
 * Columns that hold a credential (a key's hash, a signing secret): the runtime role
 * needs them, the read-only role never reads them. A table named here is granted to
 * the read-only role column by column, every other column but these.
 */
export const SECRET_COLUMNS: Record<string, readonly string[]> = {
  api_keys: ['key_hash'],
  entities: ['webhook_secret', 'webhook_secret_previous'],
};

/**
 * What the runtime role may do per table, where it is less than everything (SELECT,
 * INSERT, UPDATE, DELETE). Append-only tables (a trigger refuses changes too) take
 * no UPDATE or DELETE; accounts are inserted with their terms only (a balance or a
 * hold starts at 0) and never updated: their balances move by the ledger's triggers.
 * `lock` columns: FOR [NO KEY] UPDATE needs UPDATE on some column of the table, so
 * the runtime role may lock account rows through one that carries no money.
 */
const RUNTIME_TABLES: Record<string, { privileges: string; insertColumns?: string[]; lockColumn?: string }> = {
  accounts: { privileges: 'select', insertColumns: ['id', 'owner_id', 'kind', 'currency'], lockColumn: 'created_at' },
  transfers: { privileges: 'select, insert' },
  events: { privileges: 'select, insert' },
  stream_ticks: { privileges: 'select, insert' },
  stream_controls: { privileges: 'select, insert' },
  rate_events: { privileges: 'select, insert' },
  refunds: { privileges: 'select, insert' },
  schema_migrations: { privileges: 'select' },
  // retention (migration 031): a claim is written with its transfer and ended only by
  // archiving its month (the owner), as are the totals carried forward
  transfer_claims: { privileges: 'select, insert' },
  transfers_carried: { privileges: 'select' },
  stream_ticks_carried: { privileges: 'select' },
  archived_partitions: { privileges: 'select' },
};

/** The ledger's trigger functions that write balances: they run as their owner, so the runtime role needs no UPDATE on accounts. */
export const BALANCE_FUNCTIONS = ['apply_transfers', 'apply_hold'] as const;

export interface RoleOptions {
  runtimeRole?: string;
  /** Sets the runtime role's password (a server with password auth); omitted: left as it is. */
  runtimePassword?: string;
  readonlyRole?: string;
}

/** Creates a login role that is no superuser, tolerating a concurrent creator (roles are cluster-wide). */
async function ensureRole(client: pg.ClientBase, role: string): Promise<void> {
  await client.query(`do $$ begin
      if not exists (select 1 from pg_roles where rolname = ${pg.escapeLiteral(role)}) then
        create role ${pg.escapeIdentifier(role)} login nosuperuser nocreatedb nocreaterole noinherit nobypassrls;
      end if;
    exception when unique_violation or duplicate_object then null;
    end $$`);
}

/**
 * The tables of the public schema, a partitioned table as one (its partitions are
 * reached through it, and granting one directly would open a side door to its rows).
 */
async function tablesOf(client: pg.ClientBase): Promise<string[]> {
  const { rows } = await client.query<{ name: string }>(
    `select c.relname as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relispartition order by 1`,
  );
  return rows.map((r) => r.name);
}

/** The views of the public schema: read-only by nature, each read as its owner. */
async function viewsOf(client: pg.ClientBase): Promise<string[]> {
  const { rows } = await client.query<{ name: string }>(`select viewname as name from pg_views where schemaname = 'public' order by 1`);
  return rows.map((r) => r.name);
}

async function columnsOf(client: pg.ClientBase, table: string): Promise<string[]> {
  const { rows } = await client.query<{ name: string }>(
    `select column_name as name from information_schema.columns where table_schema = 'public' and table_name = $1 order by ordinal_position`,
    [table],
  );
  return rows.map((r) => r.name);
}

/** Grants the runtime and read-only roles what they may do on the current schema, and takes back anything more. */
export async function grantRoles(client: pg.ClientBase, options: RoleOptions = {}): Promise<void> {
  const runtime = options.runtimeRole ?? RUNTIME_ROLE_DEFAULT;
  const readonly = options.readonlyRole ?? READONLY_ROLE_DEFAULT;
  const db = pg.escapeIdentifier((await client.query<{ db: string }>('select current_database() as db')).rows[0]!.db);
  const tables = await tablesOf(client);
  const views = await viewsOf(client);
  for (const role of [runtime, readonly]) {
    await ensureRole(client, role);
    const r = pg.escapeIdentifier(role);
    await client.query(`grant connect on database ${db} to ${r}`);
    await client.query(`grant usage on schema public to ${r}`);
    await client.query(`revoke create on schema public from ${r}`);
    // from nothing each time: a grant taken back here (a table made append-only) is taken back on every database
    for (const table of tables) await client.query(`revoke all on table ${pg.escapeIdentifier(table)} from ${r}`);
    for (const view of views) {
      await client.query(`revoke all on table ${pg.escapeIdentifier(view)} from ${r}`);
      await client.query(`grant select on table ${pg.escapeIdentifier(view)} to ${r}`);
    }
  }
  if (options.runtimePassword !== undefined) await client.query(`alter role ${pg.escapeIdentifier(runtime)} password ${pg.escapeLiteral(options.runtimePassword)}`);

  const rt = pg.escapeIdentifier(runtime);
  for (const table of tables) {
    const t = pg.escapeIdentifier(table);
    const limits = RUNTIME_TABLES[table];
    await client.query(`grant ${limits?.privileges ?? 'select, insert, update, delete'} on table ${t} to ${rt}`);
    if (limits?.insertColumns) await client.query(`grant insert (${limits.insertColumns.map((c) => pg.escapeIdentifier(c)).join(', ')}) on table ${t} to ${rt}`);
    if (limits?.lockColumn) await client.query(`grant update (${pg.escapeIdentifier(limits.lockColumn)}) on table ${t} to ${rt}`);
  }
  await client.query(`grant usage, select on all sequences in schema public to ${rt}`);
  // after every migration run: a later CREATE OR REPLACE of one of them would make it SECURITY INVOKER again
  for (const fn of BALANCE_FUNCTIONS) await client.query(`alter function ${pg.escapeIdentifier(fn)}() security definer set search_path = public, pg_temp`);

  const ro = pg.escapeIdentifier(readonly);
  for (const table of tables) {
    const t = pg.escapeIdentifier(table);
    const secrets = SECRET_COLUMNS[table];
    if (!secrets) {
      await client.query(`grant select on table ${t} to ${ro}`);
      continue;
    }
    const readable = (await columnsOf(client, table)).filter((c) => !secrets.includes(c));
    await client.query(`grant select (${readable.map((c) => pg.escapeIdentifier(c)).join(', ')}) on table ${t} to ${ro}`);
  }
}

/**
 * Why the API or the worker must not run as the role it connected as, or undefined
 * when it may: a superuser can switch the ledger's triggers off and the tables' owner
 * can alter them, so either could move money around the ledger's guards. Refused
 * outside a development stack.
 */
export async function runtimeRoleRefusal(db: Queryable, devMode: boolean): Promise<string | undefined> {
  if (devMode) return undefined;
  const { rows } = await db.query<{ role: string; superuser: boolean; owns: number }>(
    `select current_user as role, r.rolsuper as superuser,
            (select count(*)::int from pg_tables t where t.schemaname = 'public' and t.tableowner = current_user) as owns
       from pg_roles r where r.rolname = current_user`,
  );
  const { role, superuser, owns } = rows[0]!;
  if (!superuser && owns === 0) return undefined;
  return (
    `DATABASE_URL connects as ${role}, ${superuser ? 'a superuser' : `the owner of ${owns} of the ledger's tables`}, which could move money around the ledger's guards: ` +
    `connect the API and the worker as the runtime role (SLUICE_RUNTIME_ROLE, default ${RUNTIME_ROLE_DEFAULT}, made by \`sluice migrate\`), ` +
    'run the migrations as the owner (SLUICE_MIGRATION_DATABASE_URL), or set SLUICE_DEV_MODE=true for a development stack'
  );
}
