import { bumpCounter, readCounters } from '../../src/ledger/metricCounters';
import { createTestDatabase, type TestDatabase } from '../support/db';

/**
 * The ledger's business counters (src/ledger/metricCounters.ts): a bump locks no row, so
 * transactions bumping the same counters in opposite orders, each holding its first
 * bump while it makes the second, all commit (an in-place upsert deadlocked here); a
 * read folds the deltas into the totals and counts each bump exactly once.
 */
let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(() => db?.drop());

/** A transaction on a connection of its own, not retried (withTransaction retries a deadlock, which would hide it). */
async function once(fn: (c: import('pg').PoolClient) => Promise<void>): Promise<void> {
  const c = await db.pool.connect();
  try {
    await c.query('begin');
    await fn(c);
    await c.query('commit');
  } catch (error) {
    await c.query('rollback');
    throw error;
  } finally {
    c.release();
  }
}

const count = async (table: string) => Number((await db.pool.query(`select count(*) as n from ${table}`)).rows[0].n);

test('the control: the same two bumps as in-place upserts of one row each, in opposite orders, deadlock', async () => {
  await db.pool.query('create table upsert_counters (k text primary key, v bigint not null)');
  const upsert = (c: { query: (sql: string, p: unknown[]) => Promise<unknown> }, k: string) =>
    c.query('insert into upsert_counters (k, v) values ($1, 1) on conflict (k) do update set v = upsert_counters.v + 1', [k]);
  await db.pool.query(`insert into upsert_counters values ('a', 0), ('b', 0)`);
  const results = await Promise.allSettled(
    [['a', 'b'], ['b', 'a']].map(([first, second]) =>
      once(async (c) => {
        await upsert(c, first!);
        await c.query('select pg_sleep(0.2)');
        await upsert(c, second!);
      }),
    ),
  );
  expect(results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason.code)).toEqual(['40P01']);
});

test('40 transactions bump two counters in opposite orders, pausing between: none deadlocks, every bump counted once, a read folds the deltas', async () => {
  const a = { metric: 'webhook_deliveries', labels: { outcome: 'delivered' } } as const;
  const b = { metric: 'webhook_deliveries', labels: { outcome: 'failed' } } as const;
  const results = await Promise.allSettled(
    Array.from({ length: 40 }, (_, i) =>
      once(async (c) => {
        const [first, second] = i % 2 === 0 ? [a, b] : [b, a];
        await bumpCounter(c, first.metric, first.labels);
        await c.query('select pg_sleep(0.05)');
        await bumpCounter(c, second.metric, second.labels);
      }),
    ),
  );
  expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
  expect(await count('metric_counter_deltas')).toBe(80);
  const value = (counters: Awaited<ReturnType<typeof readCounters>>, outcome: string) => counters.find((c) => c.labels.outcome === outcome)?.value;
  const first = await readCounters(db.pool);
  expect([value(first, 'delivered'), value(first, 'failed')]).toEqual([40, 40]);
  // folded: the deltas are gone, the totals hold them, and a second read says the same
  expect(await count('metric_counter_deltas')).toBe(0);
  const second = await readCounters(db.pool);
  expect([value(second, 'delivered'), value(second, 'failed')]).toEqual([40, 40]);
  // a later bump adds to the folded total
  await bumpCounter(db.pool, a.metric, a.labels);
  expect(value(await readCounters(db.pool), 'delivered')).toBe(41);
});

test('reads at once on many connections, while bumps go on, each see every bump committed before they began: a fold in flight never hides what it moved', async () => {
  const metric = 'webhook_deliveries';
  const labels = { outcome: 'failed' };
  const total = async () => (await readCounters(db.pool)).filter((c) => c.metric === metric && c.labels.outcome === 'failed').reduce((n, c) => n + c.value, 0);
  const committed = await total();
  let bumped = 0;
  for (let round = 0; round < 10; round++) {
    // 30 new deltas, then 12 reads and 12 more bumps at once: two reads' folds contend
    // for the same delta rows (folding and summing in one statement, the loser
    // answered from its older snapshot without the rows the winner had moved)
    for (let i = 0; i < 30; i++) await bumpCounter(db.pool, metric, labels);
    bumped += 30;
    const floor = committed + bumped;
    const results = await Promise.all([
      ...Array.from({ length: 12 }, () => total()),
      ...Array.from({ length: 12 }, () => bumpCounter(db.pool, metric, labels).then(() => undefined)),
    ]);
    bumped += 12;
    const reads = results.filter((r): r is number => r !== undefined);
    expect({ round, short: reads.filter((n) => n < floor || n > committed + bumped) }).toEqual({ round, short: [] });
  }
  expect(await total()).toBe(committed + bumped);
});
