import pg from 'pg';
import { withRole } from '../../src/db/pool';
import { READONLY_ROLE_DEFAULT, SECRET_COLUMNS } from '../../src/db/roles';
import { createParty } from '../../src/ledger/parties';
import { createAccount } from '../../src/ledger/accounts';
import { deposit } from '../../src/ledger/transfers';
import { startServiceProcess } from '../support/apiProcess';
import { createTestDatabase, type TestDatabase } from '../support/db';

/**
 * The database roles (src/db/roles.ts): the runtime role the API and the worker
 * connect as (every integration test's stack runs as it) can do what the ledger's
 * statements do and nothing that goes around them; the read-only role reads
 * everything but a credential. Each refusal is the server's own (42501).
 */
let db: TestDatabase;
let runtime: pg.Client;
let readonly: pg.Client;

beforeAll(async () => {
  db = await createTestDatabase();
  await createParty(db.pool, { id: 'ra', name: 'Ra' });
  await createParty(db.pool, { id: 'rb', name: 'Rb' });
  await createAccount(db.pool, { id: 'ra.w', ownerId: 'ra', kind: 'user' });
  await createAccount(db.pool, { id: 'rb.w', ownerId: 'rb', kind: 'user' });
  await deposit(db.pool, { key: 'roles-fund', accountId: 'ra.w', amount: 100 });
  runtime = new pg.Client({ connectionString: db.runtimeUrl });
  readonly = new pg.Client({ connectionString: withRole(db.url, READONLY_ROLE_DEFAULT) });
  await runtime.connect();
  await readonly.connect();
});
afterAll(async () => {
  await runtime?.end();
  await readonly?.end();
  await db?.drop();
});

const refused = { code: '42501' };
const balances = async () => (await db.pool.query<{ id: string; balance: number; held: number }>(`select id, balance, held from accounts where id in ('ra.w', 'rb.w') order by id`)).rows;

describe('the runtime role', () => {
  test('is no superuser and owns nothing', async () => {
    const { rows } = await runtime.query(`select rolsuper, rolcreaterole, rolcreatedb, rolbypassrls from pg_roles where rolname = current_user`);
    expect(rows[0]).toEqual({ rolsuper: false, rolcreaterole: false, rolcreatedb: false, rolbypassrls: false });
    const owned = await db.pool.query(`select count(*)::int as n from pg_class c join pg_roles r on r.oid = c.relowner where r.rolname = $1`, [new URL(db.runtimeUrl).username]);
    expect(owned.rows[0].n).toBe(0);
  });

  test("moves money through the ledger's own statements: a transfer's row moves both balances (its trigger runs as the owner), and it may lock account rows", async () => {
    await runtime.query('begin');
    await runtime.query(`select id from accounts where id = any($1) order by id for no key update`, [['ra.w', 'rb.w']]);
    await runtime.query(`insert into transfers (idempotency_key, kind, debit_account_id, credit_account_id, amount) values ('roles-t1', 'transfer', 'ra.w', 'rb.w', 30)`);
    await runtime.query('commit');
    expect(await balances()).toEqual([
      { id: 'ra.w', balance: 70, held: 0 },
      { id: 'rb.w', balance: 30, held: 0 },
    ]);
  });

  test.each([
    ['switch triggers off for its session', `set session_replication_role = replica`],
    ['switch a table’s triggers off', `alter table transfers disable trigger all`],
    ['set a balance', `update accounts set balance = balance + 1000 where id = 'ra.w'`],
    ['clear a hold from an account', `update accounts set held = 0 where id = 'ra.w'`],
    ['open an account with a balance', `insert into accounts (id, owner_id, kind, balance) values ('ra.rich', 'ra', 'user', 1000000)`],
    ['delete an account', `delete from accounts where id = 'rb.w'`],
    ['rewrite a transfer', `update transfers set amount = 1 where idempotency_key = 'roles-t1'`],
    ['delete a transfer', `delete from transfers where idempotency_key = 'roles-t1'`],
    ['rewrite an event', `update events set payload = '{}'`],
    ['delete events', `delete from events`],
    ['rewrite a billed tick', `update stream_ticks set amount = 0`],
    ['empty a table', `truncate transfers`],
    ['create a table', `create table evil (id int)`],
    ['drop a table', `drop table transfers`],
    ['replace the function that moves balances', `create or replace function apply_transfers() returns trigger language plpgsql as $$ begin return new; end $$`],
    ['make itself a superuser', `alter role current_user superuser`],
    ['take the owner’s rights', `set role postgres`],
  ])('may not %s', async (_what, statement) => {
    const before = await balances();
    await expect(runtime.query(statement)).rejects.toMatchObject(refused);
    expect(await balances()).toEqual(before);
  });
});

describe('the read-only role', () => {
  test('reads the ledger', async () => {
    const { rows } = await readonly.query(`select count(*)::int as n from transfers`);
    expect(rows[0].n).toBeGreaterThanOrEqual(2);
    expect((await readonly.query(`select id, name from parties order by id`)).rows.map((r) => r.id)).toEqual(expect.arrayContaining(['ra', 'rb']));
  });

  test.each(Object.entries(SECRET_COLUMNS).flatMap(([table, columns]) => columns.map((column) => [table, column] as const)))('never reads %s.%s, alone or through *', async (table, column) => {
    await expect(readonly.query(`select ${column} from ${table}`)).rejects.toMatchObject(refused);
    await expect(readonly.query(`select * from ${table}`)).rejects.toMatchObject(refused);
  });

  test('may not write', async () => {
    await expect(readonly.query(`insert into events (type, subject, payload) values ('x', 'y', '{}')`)).rejects.toMatchObject(refused);
    await expect(readonly.query(`update accounts set balance = 0`)).rejects.toMatchObject(refused);
  });
});

test('every column that looks like a credential is a secret column, and every secret column exists', async () => {
  const { rows } = await db.pool.query<{ t: string; c: string }>(
    `select table_name as t, column_name as c from information_schema.columns where table_schema = 'public' order by 1, 2`,
  );
  // a request's hash identifies what was asked (idempotency), it grants nothing; a rotation's times are no secret
  const notCredentials = ['grants.request_hash', 'idempotency_keys.request_hash', 'entities.webhook_secret_previous_until', 'entities.webhook_secret_rotated_at'];
  const looksSecret = rows.map((r) => `${r.t}.${r.c}`).filter((c) => /secret|password|_hash$|token/.test(c) && !notCredentials.includes(c));
  const declared = Object.entries(SECRET_COLUMNS).flatMap(([t, cs]) => cs.map((c) => `${t}.${c}`));
  expect(looksSecret.filter((c) => !declared.includes(c))).toEqual([]);
  const existing = new Set(rows.map((r) => `${r.t}.${r.c}`));
  expect(declared.filter((c) => !existing.has(c))).toEqual([]);
});

describe('the API and the worker refuse to run as a superuser or the owner', () => {
  test.each(['api', 'worker'] as const)('%s as the superuser the migrations ran as: exit 1, the message names the role and the fix', async (command) => {
    const service = await startServiceProcess(command, db.url);
    const { code, stderr } = await service.exited;
    expect(code).toBe(1);
    expect(stderr).toContain(`DATABASE_URL connects as ${new URL(db.url).username}, a superuser`);
    expect(stderr).toContain('connect the API and the worker as the runtime role (SLUICE_RUNTIME_ROLE, default sluice_app');
  }, 70_000);

  test('the API as the runtime role starts and answers', async () => {
    const service = await startServiceProcess('api', db.runtimeUrl);
    try {
      await service.ready;
      expect((await fetch(`${service.url}/healthz`)).status).toBe(200);
    } finally {
      await service.stop();
    }
    expect((await service.exited).stderr).not.toContain('DATABASE_URL connects as');
  }, 70_000);
});
