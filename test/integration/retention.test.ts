import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';
import pg from 'pg';
import { runAudit } from '../../src/audit';
import { withDatabase, withTransaction, type Pool } from '../../src/db/pool';
import { loadMigrations } from '../../src/db/migrate';
import { PARTITIONED_TABLES } from '../../src/db/partitions';
import { SluiceError } from '../../src/domain/errors';
import { DEFAULT_TIER_BUDGETS, utcDay } from '../../src/domain/grants';
import { createAccount } from '../../src/ledger/accounts';
import { captureHold, placeHold } from '../../src/ledger/holds';
import { openGrant, setTier, settleGrant } from '../../src/ledger/grants';
import { refundPayment, settlePayment } from '../../src/ledger/payments';
import { POOL_ACCOUNT, seedPool } from '../../src/ledger/pool';
import { migrateLedger } from '../../src/ledger/setup';
import { billTick, openStream } from '../../src/ledger/streams';
import { listStreamTicks } from '../../src/ledger/streamTicks';
import { deposit, transfer } from '../../src/ledger/transfers';
import { runRetention, type RetentionOptions } from '../../src/retention';
import { asSluiceError } from '../../src/temporal/failures';
import { createTestDatabase, SERVER_URL, type TestDatabase } from '../support/db';

/**
 * Retention (migration 031, src/retention.ts): transfers, stream_ticks and events are
 * partitioned by month; a month past the horizon is archived (its partitions leave
 * for sluice_archive) with its money carried forward, and the auditor's proof holds
 * on carried-forward totals plus live rows. The ledger here is moved by Sluice's own
 * functions, then aged: its rows are moved four months back (as the owner, triggers
 * off), which is what four months of waiting would have made of them.
 */
let db: TestDatabase;
const AGE = '4 months';
const KEEP: RetentionOptions = { keepMonths: 2, idempotencyWindowDays: 30 };
const S = 'ret-escrow';
const D = 'ret-split';
/** The month the ledger was aged into (`YYYY-MM`), set once the database is up. */
let AGE_MONTH = '';

/** Moves every row of the ledger's time-partitioned tables (and the claims and keys written with them) `age` back in time. */
async function ageLedger(pool: Pool, age: string): Promise<void> {
  await withTransaction(pool, async (c) => {
    // the month partitions the aged rows move into (the migration made only the current month's and those ahead)
    for (const t of PARTITIONED_TABLES) {
      await c.query(`select ensure_month_partitions($1, (date_trunc('month', now()) - interval '5 months')::date, date_trunc('month', now())::date)`, [t]);
    }
    await c.query(`set local session_replication_role = replica`);
    await c.query(`update transfers set created_at = created_at - $1::interval`, [age]);
    await c.query(
      `update stream_ticks set billed_at = billed_at - $1::interval, due_at = due_at - $1::interval,
              payer_seen_at = payer_seen_at - $1::interval, payee_seen_at = payee_seen_at - $1::interval`,
      [age],
    );
    await c.query(`update events set created_at = created_at - $1::interval`, [age]);
    await c.query(`update idempotency_keys set created_at = created_at - $1::interval`, [age]);
  });
}

/** Per account: its balance, and its balance as carried-forward totals plus live transfers (computed here, not by the auditor). */
async function balancesByParts(pool: Pool) {
  const { rows } = await pool.query<{ id: string; balance: number; carried: number; live: number }>(
    `select a.id, a.balance,
            (select coalesce(sum(case when credit_account_id = a.id then amount else -amount end), 0) from transfers_carried
              where a.id in (credit_account_id, debit_account_id))::bigint as carried,
            (select coalesce(sum(case when credit_account_id = a.id then amount else -amount end), 0) from transfers
              where a.id in (credit_account_id, debit_account_id))::bigint as live
       from accounts a order by a.id`,
  );
  return rows;
}

const redChecks = async (pool: Pool | pg.ClientBase) => (await runAudit(pool)).checks.filter((c) => !c.ok).map((c) => c.name);
const count = async (pool: Pool, sql: string, values: unknown[] = []) => (await pool.query<{ n: number }>(`select (${sql})::int as n`, values)).rows[0]!.n;
const monthsAgo = async (pool: Pool, n: number) =>
  (await pool.query<{ m: string }>(`select to_char(date_trunc('month', now()) - make_interval(months => $1), 'YYYY-MM') as m`, [n])).rows[0]!.m;

beforeAll(async () => {
  db = await createTestDatabase({ poolSeedUnits: 10_000 });
  await db.pool.query(`insert into parties (id, name) values ('p', 'payer'), ('q', 'payee'), ('r', 'member')`);
  for (const [id, ownerId] of [['p.w', 'p'], ['q.w', 'q'], ['r.w', 'r']] as const) await createAccount(db.pool, { id, ownerId, kind: 'user' });
  // four months ago: a deposit, a hold captured in part, an escrow stream and a distribution billing two ticks each,
  // a payment refunded in part, a free job, and a transfer whose request key is long past its window
  await deposit(db.pool, { key: 'd-old', accountId: 'p.w', amount: 10_000 });
  const hold = await placeHold(db.pool, { key: 'h-old', accountId: 'p.w', amount: 100 });
  await captureHold(db.pool, { key: 'hc-old', holdId: hold.id, amount: 40, toAccountId: 'q.w' });
  const terms = { payer: 'p', payerAccountId: 'p.w', ratePerTick: 10, maxTotal: 1000, tickIntervalMs: 1000 };
  await openStream(db.pool, { ...terms, payee: 'q', payeeAccountId: 'q.w', ref: S, mode: 'escrow' });
  const members = [
    { accountId: 'q.w', party: 'q', weight: 1 },
    { accountId: 'r.w', party: 'r', weight: 2 },
  ];
  await openStream(db.pool, { ...terms, ratePerTick: 9, members, ref: D, mode: 'escrow' });
  for (const tick of [1, 2]) {
    await billTick(db.pool, S, tick);
    await billTick(db.pool, D, tick);
  }
  await settlePayment(db.pool, { ref: 'pay-old', payerAccountId: 'p.w', payeeAccountId: 'q.w', amount: 50 });
  await refundPayment(db.pool, { ref: 'pay-old', refundKey: 'rf-old', amount: 20 });
  await setTier(db.pool, 'p', 'trusted');
  const job = { payer: 'p', payerAccountId: 'p.w', requestHash: 'h', work: { description: 'retention' }, paymentTimeoutMs: 60_000 };
  await openGrant(db.pool, { request: { ...job, jobId: 'g-old', estimatedCost: 30 }, day: utcDay(Date.now()), budgets: DEFAULT_TIER_BUDGETS });
  await settleGrant(db.pool, { jobId: 'g-old', actualCost: 20 });
  await transfer(db.runtimePool, { key: 't-old', kind: 'transfer', debitAccountId: 'q.w', creditAccountId: 'r.w', amount: 7 });
  await ageLedger(db.pool, AGE);
  AGE_MONTH = await monthsAgo(db.pool, 4);
  // this month: the same streams bill their third tick, and a transfer whose request key is fresh
  await billTick(db.pool, S, 3);
  await billTick(db.pool, D, 3);
  await transfer(db.runtimePool, { key: 't-new', kind: 'transfer', debitAccountId: 'q.w', creditAccountId: 'r.w', amount: 5 });
});
afterAll(() => db?.drop());

describe('retention', () => {
  test('the aged ledger is green and its old rows sit in the month four months back, the new ones in this month', async () => {
    expect(await redChecks(db.pool)).toEqual([]);
    const old = await monthsAgo(db.pool, 4);
    const inMonth = (t: string, m: string) => count(db.pool, `select count(*) from ${t}_${m.replace('-', 'm')}`);
    expect(await inMonth('transfers', old)).toBeGreaterThan(10);
    expect(await inMonth('stream_ticks', old)).toBe(4);
    expect(await inMonth('stream_ticks', await monthsAgo(db.pool, 0))).toBe(2);
    for (const t of PARTITIONED_TABLES) expect(await count(db.pool, `select count(*) from ${t}_default`)).toBe(0);
  });

  test('a red audit refuses the archive, and nothing moves', async () => {
    await db.pool.query(`update streams set paid = paid + 1 where ref = $1`, [S]);
    try {
      await expect(runRetention(db.pool, KEEP)).rejects.toMatchObject({ code: 'invalid_state', details: { failed: ['streams.paid_is_sum_of_ticks', 'streams.escrow_matches_cap'] } });
      expect(await count(db.pool, `select count(*) from archived_partitions`)).toBe(0);
      expect(await count(db.pool, `select count(*) from transfers where created_at < date_trunc('month', now()) - interval '1 month'`)).toBeGreaterThan(10);
    } finally {
      await db.pool.query(`update streams set paid = paid - 1 where ref = $1`, [S]);
    }
  });

  test('a dry run names the months it would archive, with their rows, and changes nothing', async () => {
    const before = await count(db.pool, `select count(*) from transfers`);
    const report = await runRetention(db.pool, { ...KEEP, dryRun: true });
    const old = report.archived.find((m) => m.month === AGE_MONTH);
    expect(old).toMatchObject({ stream_ticks: 4 });
    expect(old!.transfers).toBeGreaterThan(10);
    expect(report.keysExpired).toBeGreaterThanOrEqual(2);
    expect(await count(db.pool, `select count(*) from transfers`)).toBe(before);
    expect(await count(db.pool, `select count(*) from archived_partitions`)).toBe(0);
  });

  test('archiving moves the old months to sluice_archive, carries their money forward, and every balance is carried plus live; the audit stays green', async () => {
    const balancesBefore = new Map((await balancesByParts(db.pool)).map((r) => [r.id, r.balance]));
    const oldRows = {
      transfers: await count(db.pool, `select count(*) from transfers where created_at < date_trunc('month', now()) - interval '1 month'`),
      events: await count(db.pool, `select count(*) from events where created_at < date_trunc('month', now()) - interval '1 month'`),
    };
    const report = await runRetention(db.pool, KEEP);
    const old = report.archived.find((m) => m.month === AGE_MONTH)!;
    expect(old).toEqual({ month: AGE_MONTH, transfers: oldRows.transfers, stream_ticks: 4, events: oldRows.events });
    // every month before the horizon went, the empty ones too; this month and last stayed
    expect(report.archived.map((m) => m.month)).toEqual([await monthsAgo(db.pool, 5), await monthsAgo(db.pool, 4), await monthsAgo(db.pool, 3), await monthsAgo(db.pool, 2)]);
    expect(await count(db.pool, `select count(*) from transfers where created_at < date_trunc('month', now()) - interval '1 month'`)).toBe(0);
    expect(await count(db.pool, `select count(*) from sluice_archive.transfers_${AGE_MONTH.replace('-', 'm')}`)).toBe(oldRows.transfers);
    expect(await count(db.pool, `select count(*) from sluice_archive.events_${AGE_MONTH.replace('-', 'm')}`)).toBe(oldRows.events);
    // the claims of the archived transfers left with them; this month's stay
    expect(await count(db.pool, `select count(*) from transfer_claims where claim = 'd-old'`)).toBe(0);
    expect(await count(db.pool, `select count(*) from transfer_claims where claim = 't-new'`)).toBe(1);
    expect(await count(db.pool, `select count(*) from transfer_claims`)).toBe(await count(db.pool, `select count(*) from transfers`));

    // balance = carried-forward + live, for every account, and the carried part is not nothing
    const parts = await balancesByParts(db.pool);
    for (const r of parts) {
      expect({ id: r.id, balance: r.balance }).toEqual({ id: r.id, balance: balancesBefore.get(r.id) });
      expect({ id: r.id, sum: r.carried + r.live }).toEqual({ id: r.id, sum: r.balance });
    }
    expect(parts.find((r) => r.id === 'p.w')).toMatchObject({ carried: expect.any(Number), live: -(10 + 9) });
    expect(parts.find((r) => r.id === 'p.w')!.carried).toBeGreaterThan(9000);
    // a stream's archived ticks are carried as their total and last tick
    const { rows: carried } = await db.pool.query(`select stream_ref, amount, ticks, last_tick from stream_ticks_carried order by 1`);
    expect(carried).toEqual([
      { stream_ref: S, amount: 20, ticks: 2, last_tick: 2 },
      { stream_ref: D, amount: 18, ticks: 2, last_tick: 2 },
    ].sort((a, b) => a.stream_ref.localeCompare(b.stream_ref)));
    expect(await redChecks(db.pool)).toEqual([]);
    // archived once: a second run has nothing to do
    expect((await runRetention(db.pool, KEEP)).archived).toEqual([]);
  });

  test('the auditor reads what was carried forward: a carried total changed by hand turns the conservation check red', async () => {
    const c = await db.pool.connect();
    try {
      await c.query('begin');
      await c.query(`update transfers_carried set amount = amount + 1 where kind = 'deposit' and credit_account_id = 'p.w'`);
      expect(await redChecks(c)).toEqual(['conservation.balance_is_sum_of_transfers']);
    } finally {
      await c.query('rollback');
      c.release();
    }
  });

  test('after archival the ledger goes on: the streams bill their fourth tick, and an archived tick billed again is refused by the database', async () => {
    expect(await billTick(db.pool, S, 4)).toMatchObject({ kind: 'billed', amount: 10, paid: 40 });
    expect(await billTick(db.pool, D, 4)).toMatchObject({ kind: 'billed', amount: 9, paid: 36 });
    const forge = (key: string, kind: string, credit: string, ref: string, tick: number) =>
      db.runtimePool.query(
        `insert into transfers (idempotency_key, kind, debit_account_id, credit_account_id, amount, stream_ref, tick)
         values ($1, $2, 'p.w', $3, 10, $4, $5)`,
        [key, kind, credit, ref, tick],
      );
    // tick 1 again: its key's claim left with the archive, and only the carried-forward last tick knows it was billed
    await expect(forge(`stream:${S}:tick:1`, 'stream_tick', 'q.w', S, 1)).rejects.toMatchObject({ code: '23505', constraint: 'stream_ticks_carried_last_tick' });
    await expect(forge(`stream:${D}:tick:2:r.w`, 'stream_split', 'r.w', D, 2)).rejects.toMatchObject({ code: '23505', constraint: 'stream_ticks_carried_last_tick' });
    // a live tick again, its key claimed; and a tick under a key that is not its own (which would claim nothing)
    await expect(forge(`stream:${S}:tick:4`, 'stream_tick', 'q.w', S, 4)).rejects.toMatchObject({ code: '23505', constraint: 'transfer_claims_pkey' });
    await expect(forge('forged-tick-9', 'stream_tick', 'q.w', S, 9)).rejects.toMatchObject({ code: '23514', constraint: 'transfers_keyed_by_tick' });
    await expect(forge(`stream:${D}:tick:9:q.w`, 'stream_split', 'r.w', D, 9)).rejects.toMatchObject({ code: '23514', constraint: 'transfers_keyed_by_tick' });
    // the stream's tick list starts at its first live tick, its running total counting what the archived ticks carried
    expect((await listStreamTicks(db.pool, S, { after: 0, limit: 10 })).map((t) => [t.tick, t.paid])).toEqual([
      [3, 30],
      [4, 40],
    ]);
    await deposit(db.pool, { key: 'd-after', accountId: 'p.w', amount: 100 });
    expect(await redChecks(db.pool)).toEqual([]);
  });

  test('the pool seed, archived, is not paid again by a later migration run', async () => {
    const pool = async () => (await db.pool.query<{ b: number }>(`select sum(balance)::bigint as b from accounts where kind = 'pool'`)).rows[0]!.b;
    expect(await count(db.pool, `select count(*) from transfers where idempotency_key like 'pool:seed%'`)).toBe(0);
    const before = await pool();
    const c = await db.pool.connect();
    try {
      expect(await seedPool(c, 10_000)).toBe(false);
    } finally {
      c.release();
    }
    expect(await pool()).toBe(before);
    expect(before).toBeGreaterThan(0);
    expect(await count(db.pool, `select count(*) from transfers_carried where credit_account_id = $1 and kind = 'deposit'`, [POOL_ACCOUNT])).toBe(1);
  });

  test('the runtime role can neither archive a month, end a claim, forge a carried total nor read the archive', async () => {
    const refusals = [
      `select archive_month(date_trunc('month', now() - interval '1 month')::date)`,
      `delete from transfer_claims`,
      `update transfers_carried set amount = amount + 1`,
      `insert into stream_ticks_carried (stream_ref, amount, ticks, last_tick, through) values ('${S}', 1, 1, 99, now())`,
      `select count(*) from sluice_archive.transfers_${AGE_MONTH.replace('-', 'm')}`,
      `delete from archived_partitions`,
    ];
    for (const sql of refusals) await expect(db.runtimePool.query(sql)).rejects.toMatchObject({ code: '42501' });
  });

  test('request idempotency keys expire after their window; a replay whose transfer is still live is refused, not posted twice', async () => {
    const input = { key: 't-window', kind: 'transfer', debitAccountId: 'q.w', creditAccountId: 'r.w', amount: 3 };
    await transfer(db.runtimePool, input);
    // within the window a replay answers the first transfer
    expect((await transfer(db.runtimePool, input)).key).toBe('t-window');
    await db.pool.query(`update idempotency_keys set created_at = now() - interval '31 days' where key = 't-window'`);
    const report = await runRetention(db.pool, KEEP);
    expect(report.keysExpired).toBe(1);
    expect(await count(db.pool, `select count(*) from idempotency_keys where key = 't-window'`)).toBe(0);
    expect(await count(db.pool, `select count(*) from idempotency_keys where key = 't-new'`)).toBe(1);
    const balances = await balancesByParts(db.pool);
    // the database refuses it (the key's claim lives as long as its transfer), and the API answers what asSluiceError makes of it: a 409
    const refused = await transfer(db.runtimePool, input).catch((error: unknown) => error);
    expect(refused).toMatchObject({ code: '23505', constraint: 'transfer_claims_pkey' });
    const answer = asSluiceError(refused);
    expect(answer).toBeInstanceOf(SluiceError);
    expect(answer).toMatchObject({ code: 'idempotency_conflict', message: 'idempotency key t-window was used by an earlier transfer, whose stored answer has expired' });
    expect(await balancesByParts(db.pool)).toEqual(balances);
    expect(await count(db.pool, `select count(*) from transfers where idempotency_key = 't-window'`)).toBe(1);
  });

  test('a row for a month with no partition of its own is kept by the default partition and reported, and `sluice retention` prints the run', async () => {
    await db.runtimePool.query(`insert into events (type, subject, payload, created_at) values ('test.far', 'x', '{}', now() + interval '5 years')`);
    const cli = execFileSync(process.execPath, ['--import', 'tsx', resolve(__dirname, '../../src/cli.ts'), 'retention', '--dry-run'], {
      env: { ...process.env, DATABASE_URL: db.url, SLUICE_MIGRATION_DATABASE_URL: db.url, SLUICE_RETENTION_MONTHS: '2' },
      encoding: 'utf8',
    });
    expect(cli).toContain(`retention on ${db.url} (dry run)`);
    expect(cli).toContain('archive: no month past the horizon');
    expect(cli).toContain('default partitions: events 1 rows with no month of their own');
  });
});

describe('migration 031 on a ledger that already has rows', () => {
  const name = `sluice_test_pre031_${process.pid}_${Date.now()}`;
  const url = withDatabase(SERVER_URL, name);
  let admin: pg.Client;

  beforeAll(async () => {
    // a database migrated to 030 only, moved by raw statements as Sluice's triggers kept it then
    admin = new pg.Client({ connectionString: SERVER_URL });
    await admin.connect();
    await admin.query(`create database ${name}`);
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      const before031 = loadMigrations().filter((x) => x.version < 31);
      for (const m of before031) await c.query(m.sql);
      await c.query(`create table schema_migrations (version integer primary key, name text not null, applied_at timestamptz not null default now())`);
      await c.query(`insert into schema_migrations (version, name) select v, 'before 031' from unnest($1::int[]) v`, [before031.map((x) => x.version)]);
      await c.query(`insert into parties (id, name) values ('a', 'a'), ('b', 'b')`);
      await c.query(`insert into accounts (id, owner_id, kind) values ('a.w', 'a', 'user'), ('b.w', 'b', 'user')`);
      await c.query(`insert into transfers (idempotency_key, kind, debit_account_id, credit_account_id, amount) values ('dep', 'deposit', 'world', 'a.w', 100)`);
      await c.query(`insert into transfers (idempotency_key, kind, debit_account_id, credit_account_id, amount) values ('t1', 'transfer', 'a.w', 'b.w', 30)`);
      await c.query(`insert into events (type, subject, payload) values ('transfer.posted', '1', '{}'), ('transfer.posted', '2', '{}')`);
    } finally {
      await c.end();
    }
  });
  afterAll(async () => {
    await admin?.query(`drop database if exists ${name} with (force)`);
    await admin?.end();
  });

  test('its rows move into the partitions once, no balance moves twice, its keys stay claimed, and the ids go on from where they were', async () => {
    await migrateLedger(url, { poolSeedUnits: 0 });
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      const { rows } = await c.query(`select id, balance from accounts where id in ('a.w', 'b.w') order by id`);
      expect(rows).toEqual([
        { id: 'a.w', balance: 70 },
        { id: 'b.w', balance: 30 },
      ]);
      expect((await c.query(`select count(*)::int as n from transfers`)).rows[0].n).toBe(2);
      expect((await c.query(`select count(*)::int as n from events`)).rows[0].n).toBe(2);
      expect((await c.query(`select relkind from pg_class where relname = 'transfers'`)).rows[0].relkind).toBe('p');
      await expect(
        c.query(`insert into transfers (idempotency_key, kind, debit_account_id, credit_account_id, amount) values ('t1', 'transfer', 'a.w', 'b.w', 30)`),
      ).rejects.toMatchObject({ code: '23505', constraint: 'transfer_claims_pkey' });
      const { rows: next } = await c.query(
        `insert into transfers (idempotency_key, kind, debit_account_id, credit_account_id, amount) values ('t2', 'transfer', 'a.w', 'b.w', 5) returning id`,
      );
      // after the two copied rows (the refused insert above took a number too)
      expect(Number(next[0].id)).toBeGreaterThan(2);
      expect((await c.query(`select balance from accounts where id = 'b.w'`)).rows[0].balance).toBe(35);
      expect((await runAudit(c)).checks.filter((x) => !x.ok).map((x) => x.name)).toEqual([]);
    } finally {
      await c.end();
    }
  });
});
