import type { PoolClient } from 'pg';
import { runAudit } from '../../src/audit';
import type { Pool } from '../../src/db/pool';
import { DEFAULT_TIER_BUDGETS, utcDay } from '../../src/domain/grants';
import { lockAccounts } from '../../src/ledger/accounts';
import { openGrant, setTier, settleGrant } from '../../src/ledger/grants';
import { grantHolds } from '../../src/ledger/pool';
import { depositToStream } from '../../src/ledger/streamControls';
import { closeStream, openStream } from '../../src/ledger/streams';
import { sleep, testParties } from '../support/parties';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';

/**
 * Issue 17: every path that locks accounts takes its locks in the one order written
 * at the top of src/ledger/accounts.ts, so none deadlocks with another. PostgreSQL
 * counts every deadlock it breaks (pg_stat_database.deadlocks) even when the
 * transaction is retried and the caller never sees it (withTransaction retries
 * 40P01), so the count, not the answers, is what says there was none.
 */
let stack: TestStack;
let admin: ReturnType<typeof api>;
const parties = testParties(() => stack);
const { as, party } = parties;
const q = async (sql: string, params: unknown[] = []) => (await stack.db.pool.query(sql, params)).rows;

beforeAll(async () => {
  stack = await startTestStack({ writeRate: { max: 1_000_000, windowMs: 60_000 } });
  admin = api(stack.app, ADMIN_KEY);
});
afterAll(() => stack?.stop());

/**
 * The database's deadlock count, every backend's statistics flushed first. PG 15
 * flushes a backend's counters lazily (at most once a second while busy, after up
 * to 10 s idle), and only the backend that detected a deadlock counts it: every
 * connection of the pool (the API's and the worker's, all of this database's) is
 * checked out and asked to flush at its next idle moment, which comes before its
 * answer reaches us.
 */
async function deadlocks(pool: Pool): Promise<number> {
  const clients = await Promise.all(Array.from({ length: pool.options.max ?? 10 }, () => pool.connect()));
  try {
    await Promise.all(clients.map((c) => c.query('select pg_stat_force_next_flush()')));
    await clients[0]!.query('select pg_stat_clear_snapshot()');
    const { rows } = await clients[0]!.query<{ n: number }>('select deadlocks::int as n from pg_stat_database where datname = current_database()');
    return rows[0]!.n;
  } finally {
    for (const c of clients) c.release();
  }
}

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;

describe('the lock order, step by step (one transaction held mid-way, the others probed with NOWAIT)', () => {
  let holder: PoolClient;
  let probe: PoolClient;
  beforeAll(async () => {
    // created out of id order, so neither the heap's order nor the order of creation is the id order
    for (const id of ['lo-e', 'lo-a', 'lo-d', 'lo-f', 'lo-b', 'lo-c']) await party(id, 1_000);
    holder = await stack.db.pool.connect();
    probe = await stack.db.pool.connect();
  });
  afterAll(() => {
    holder.release();
    probe.release();
  });

  /** Whether another transaction holds a row lock on the row (NOWAIT fails at once instead of queueing). */
  const locked = async (table: 'accounts' | 'holds' | 'grants' | 'parties', id: string | number): Promise<boolean> => {
    try {
      await probe.query('begin');
      await probe.query(`select 1 from ${table} where ${table === 'grants' ? 'job_id' : 'id'} = $1 for no key update nowait`, [id]);
      return false;
    } catch (error) {
      if ((error as { code?: string }).code === '55P03') return true; // lock_not_available
      throw error;
    } finally {
      await probe.query('rollback');
    }
  };
  /** Waits until some other backend of this database waits on a lock. */
  const untilWaiting = async () => {
    for (let i = 0; i < 200; i++) {
      const [{ n }] = await q(`select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`);
      if (n > 0) return;
      await sleep(25);
    }
    throw new Error('no transaction ever waited on the held lock');
  };

  test('lockAccounts locks ascending by id, whatever order it is given: held up at lo-b.w, it holds lo-a.w and not yet lo-c.w', async () => {
    await holder.query('begin');
    await holder.query(`select 1 from accounts where id = 'lo-b.w' for no key update`);
    const mover = await stack.db.pool.connect();
    try {
      await mover.query('begin');
      const locking = lockAccounts(mover, ['lo-c.w', 'lo-a.w', 'lo-b.w']);
      await untilWaiting();
      expect(await locked('accounts', 'lo-a.w')).toBe(true);
      expect(await locked('accounts', 'lo-c.w')).toBe(false);
      await holder.query('commit');
      expect([...(await locking).keys()].sort()).toEqual(['lo-a.w', 'lo-b.w', 'lo-c.w']);
    } finally {
      await holder.query('rollback').catch(() => undefined);
      await mover.query('rollback');
      mover.release();
    }
  });

  test('the transfers trigger locks the accounts of its statement ascending by id before it moves a balance, even for a writer that locked nothing first', async () => {
    await holder.query('begin');
    await holder.query(`select 1 from accounts where id = 'lo-c.w' for no key update`);
    const writer = await stack.db.pool.connect();
    try {
      await writer.query('begin');
      // six accounts in one statement, named out of order: balances moved in the order of the
      // rows, of the heap or of a hash would lock some account above lo-c.w before waiting there
      const inserting = writer.query(
        `insert into transfers (idempotency_key, kind, debit_account_id, credit_account_id, amount)
         values ('lo-1', 'transfer', 'lo-f.w', 'lo-c.w', 1), ('lo-2', 'transfer', 'lo-e.w', 'lo-a.w', 1),
                ('lo-3', 'transfer', 'lo-d.w', 'lo-b.w', 1)`,
      );
      await untilWaiting();
      const held = [];
      for (const id of ['lo-a.w', 'lo-b.w', 'lo-d.w', 'lo-e.w', 'lo-f.w']) if (await locked('accounts', id)) held.push(id);
      expect(held).toEqual(['lo-a.w', 'lo-b.w']);
      await holder.query('commit');
      await inserting;
    } finally {
      // the holder lets go first: the writer's rollback queues behind its waiting insert
      await holder.query('rollback').catch(() => undefined);
      await writer.query('rollback');
      writer.release();
    }
  });

  test("a top-up of a stream's escrow from its own payer locks the payer's account before it grows the hold (accounts, then holds)", async () => {
    const pool = stack.db.pool;
    await openStream(pool, { ref: 'lo-escrow', payer: 'lo-a', payee: 'lo-b', payerAccountId: 'lo-a.w', payeeAccountId: 'lo-b.w', ratePerTick: 1, maxTotal: 100, tickIntervalMs: 3_600_000, mode: 'escrow' });
    const [{ hold_id: holdId }] = await q(`select hold_id from streams where ref = 'lo-escrow'`);
    let topUp: Promise<unknown> = Promise.resolve();
    try {
      await holder.query('begin');
      await holder.query(`select 1 from accounts where id = 'lo-a.w' for no key update`);
      topUp = depositToStream(pool, { ref: 'lo-escrow', key: 'lo-top-up', fromAccountId: 'lo-a.w', amount: 10, by: 'lo-a' });
      await untilWaiting();
      // it waits at the account, the hold untouched: a path holding the account could still take the hold
      expect(await locked('holds', holdId)).toBe(false);
      await holder.query('commit');
      expect(await topUp).toMatchObject({ maxTotal: 110, deposited: 10 });
    } finally {
      await holder.query('rollback').catch(() => undefined);
      await topUp.catch(() => undefined);
      await closeStream(pool, { ref: 'lo-escrow', reason: 'cancelled', closedBy: 'admin' });
    }
  });

  test("a step on a job's grant locks the grant row before the accounts (domain row, then accounts): a settle held up at its pool stripe holds its payer's budget lock and its grant", async () => {
    const pool = stack.db.pool;
    await setTier(pool, 'lo-a', 'trusted');
    const request = { jobId: 'lo-job', payer: 'lo-a', payerAccountId: 'lo-a.w', estimatedCost: 30, requestHash: 'h', work: { description: 'lock order' }, paymentTimeoutMs: 60_000 };
    expect(await openGrant(pool, { request, day: utcDay(Date.now()), budgets: DEFAULT_TIER_BUDGETS })).toMatchObject({ decision: 'free', status: 'reserved' });
    let settling: Promise<unknown> = Promise.resolve();
    try {
      await holder.query('begin');
      const [hold] = await grantHolds(pool, 'lo-job');
      await holder.query(`select 1 from accounts where id = $1 for no key update`, [hold!.accountId]);
      settling = settleGrant(pool, { jobId: 'lo-job', actualCost: 20 });
      await untilWaiting();
      expect(await locked('parties', 'lo-a')).toBe(true);
      expect(await locked('grants', 'lo-job')).toBe(true);
      await holder.query('commit');
      expect(await settling).toMatchObject({ status: 'settled', absorbed: 20 });
    } finally {
      await holder.query('rollback').catch(() => undefined);
      await settling.catch(() => undefined);
    }
  });
});

test('a storm of 50 opens to one payee, while 20 streams tick and are paused, resumed, topped up, re-rated and cancelled, with transfers and payments between the same accounts: no deadlock, every open answered 201 within the API wait, the books right', async () => {
  const OPENS = 50;
  const RUNNING = 20;
  const RUNNER_PAYERS = 10;
  const before = await deadlocks(stack.db.pool);

  await party('hot', 1_000_000);
  await party('warm', 0);
  const runners = Array.from({ length: RUNNER_PAYERS }, (_, i) => `rp${i}`);
  for (const p of runners) await party(p, 10_000_000);
  const stormers = Array.from({ length: OPENS }, (_, i) => `sp${i}`);
  for (const p of stormers) await party(p, 100_000);

  // 20 streams billing already: each runner pays two, into the storm's payee and another; some payg
  const running = Array.from({ length: RUNNING }, (_, i) => ({ ref: `dl-run-${i}`, payer: runners[i % RUNNER_PAYERS]!, payee: i % 3 === 2 ? 'warm' : 'hot' }));
  const opened = await Promise.all(
    running.map((s, i) =>
      as(s.payer).post('/v1/streams', { ref: s.ref, fromAccountId: `${s.payer}.w`, toAccountId: `${s.payee}.w`, ratePerTick: 1 + (i % 3), maxTotal: 1_000_000, tickIntervalMs: 100, mode: i % 4 === 3 ? 'payg' : 'escrow' }),
    ),
  );
  expect(opened.map((o) => o.status)).toEqual(running.map(() => 201));
  await sleep(500);

  const failures: string[] = [];
  const expectStatus = (what: string, res: { status: number; body: unknown }, status: number) => {
    if (res.status !== status) failures.push(`${what}: ${res.status} ${JSON.stringify(res.body)}`);
  };
  const cancelled = new Set<string>();

  // the storm: 50 opens to hot.w, each from a payer of its own, each timed, each racing a
  // transfer each way between the same two accounts
  const latencies: number[] = [];
  const opens = stormers.map(async (p, i) => {
    const ref = `dl-open-${i}`;
    const t = Date.now();
    const [res, paid, repaid] = await Promise.all([
      as(p).post('/v1/streams', { ref, fromAccountId: `${p}.w`, toAccountId: 'hot.w', ratePerTick: 1 + (i % 5), maxTotal: 10_000, tickIntervalMs: 100 + (i % 2) * 100, mode: i % 3 === 2 ? 'payg' : 'escrow' })
        .then((r) => (latencies.push(Date.now() - t), r)),
      as('hot').post('/v1/transfers', { fromAccountId: 'hot.w', toAccountId: `${p}.w`, amount: 2 }, `dl-t-hot-${p}`),
      as(p).post('/v1/transfers', { fromAccountId: `${p}.w`, toAccountId: 'hot.w', amount: 1 }, `dl-t-${p}-hot`),
    ]);
    expectStatus(`transfer hot -> ${p}`, paid, 201);
    expectStatus(`transfer ${p} -> hot`, repaid, 201);
    expectStatus(`open ${ref}`, res, 201);
    // every fifth is cancelled as soon as it is open: a close on the hot payee among the opens
    if (res.status === 201 && i % 5 === 4) {
      expectStatus(`cancel ${ref}`, await as(p).post(`/v1/streams/${ref}/cancel`, {}), 200);
      cancelled.add(ref);
    }
    return res;
  });

  // controls on the running streams, three rounds; each stream's controls in order, the streams side by side
  const toCancel = running.slice(15);
  const controlled = running.slice(0, 15);
  const controls = (async () => {
    for (let round = 0; round < 3; round++) {
      await Promise.all(
        controlled.map(async (s, i) => {
          const other = runners[(i + 1) % RUNNER_PAYERS]!;
          switch ((i + round) % 4) {
            case 0:
              expectStatus(`pause ${s.ref}`, await as(s.payer).post(`/v1/streams/${s.ref}/pause`), 200);
              expectStatus(`resume ${s.ref}`, await as(s.payer).post(`/v1/streams/${s.ref}/resume`), 200);
              break;
            case 1: // the payee tops up the stream that pays it: its account and the payer's, under the stream's lock
              expectStatus(`top-up ${s.ref} from hot`, await as('hot').post(`/v1/streams/${s.ref}/deposits`, { fromAccountId: 'hot.w', amount: 50 }, `dl-top-hot-${s.ref}-${round}`), 201);
              break;
            case 2: // another payer tops it up
              expectStatus(`top-up ${s.ref} from ${other}`, await as(other).post(`/v1/streams/${s.ref}/deposits`, { fromAccountId: `${other}.w`, amount: 50 }, `dl-top-${other}-${s.ref}-${round}`), 201);
              break;
            default:
              expectStatus(`rate ${s.ref}`, await as(s.payer).post(`/v1/streams/${s.ref}/rate`, { ratePerTick: 1 + round }), 200);
          }
        }),
      );
    }
  })();

  // cancels of running streams into both payees, spread over the storm
  const cancels = (async () => {
    for (const s of toCancel) {
      await sleep(150);
      expectStatus(`cancel ${s.ref}`, await as(s.payer).post(`/v1/streams/${s.ref}/cancel`, {}), 200);
      cancelled.add(s.ref);
    }
  })();

  // money moved between the same accounts in both directions: transfers and payments
  const moves = (async () => {
    await Promise.all(
      runners.map(async (p, i) => {
        const next = runners[(i + 1) % RUNNER_PAYERS]!;
        expectStatus(`transfer ${p} -> hot`, await as(p).post('/v1/transfers', { fromAccountId: `${p}.w`, toAccountId: 'hot.w', amount: 7 }, `dl-t-${p}-hot`), 201);
        expectStatus(`transfer hot -> ${p}`, await as('hot').post('/v1/transfers', { fromAccountId: 'hot.w', toAccountId: `${p}.w`, amount: 5 }, `dl-t-hot-${p}`), 201);
        expectStatus(`transfer ${p} -> ${next}`, await as(p).post('/v1/transfers', { fromAccountId: `${p}.w`, toAccountId: `${next}.w`, amount: 3 }, `dl-t-${p}-${next}`), 201);
        expectStatus(`payment ${p} -> hot`, await as(p).post('/v1/payments', { ref: `dl-pay-${p}`, fromAccountId: `${p}.w`, toAccountId: 'hot.w', amount: 11 }), 200);
        expectStatus(`payment hot -> ${p}`, await as('hot').post('/v1/payments', { ref: `dl-pay-hot-${p}`, fromAccountId: 'hot.w', toAccountId: `${p}.w`, amount: 4 }), 200);
      }),
    );
  })();

  await Promise.all([...opens, controls, cancels, moves]);
  // the streams keep ticking a little after the storm, then everything still open is cancelled
  await sleep(500);
  const open = [...running.map((s) => s.ref), ...stormers.map((_, i) => `dl-open-${i}`)].filter((ref) => !cancelled.has(ref));
  const closing = await admin.post('/v1/streams/batch', { items: open.map((ref) => ({ op: 'cancel', ref })) });
  expect(closing.status).toBe(200);
  expect(closing.body.results.filter((r: { status: number }) => r.status !== 200)).toEqual([]);

  const after = await deadlocks(stack.db.pool);
  const sorted = [...latencies].sort((a, b) => a - b);
  console.log(`opens: ${OPENS}, latency p50 ${percentile(sorted, 50)} ms, p90 ${percentile(sorted, 90)} ms, max ${sorted.at(-1)} ms; deadlocks ${after - before}`);

  expect(failures).toEqual([]);
  expect(after - before).toBe(0);
  expect(latencies).toHaveLength(OPENS);
  // the books: every stream closed and billed, the auditor green, every balance summing to zero
  const [{ n: stillOpen }] = await q(`select count(*)::int as n from streams where status = 'open'`);
  expect(stillOpen).toBe(0);
  const audit = await runAudit(stack.db.pool);
  expect(audit.checks.filter((c) => !c.ok).map((c) => ({ name: c.name, rows: c.rows }))).toEqual([]);
  expect(audit.ok).toBe(true);
  const [{ total }] = await q(`select sum(balance)::bigint as total from accounts`);
  expect(Number(total)).toBe(0);
}, 300_000);
