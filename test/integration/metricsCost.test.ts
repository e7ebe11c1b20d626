import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { PoolClient } from 'pg';
import { buildApp } from '../../src/api/app';
import { TICK_LAG_BUCKETS_SECONDS } from '../../src/api/ledgerMetrics';
import { createMetrics } from '../../src/api/metrics';
import { createLogger } from '../../src/logger';
import { ADMIN_KEY, api, METRICS_TOKEN, startTestStack, type TestStack } from '../support/stack';
import { figuresBesideTruth, figuresFromRows, samplesOf, scrapeMetrics } from '../support/metrics';
import { testParties } from '../support/parties';
import { ERROR_SHAPE } from '../support/routeCatalog';

/**
 * What a scrape of /metrics costs and who may make one (issue 22). Every figure it
 * serves is a counter the ledger keeps in the transaction that writes what it counts
 * (migration 029), so a scrape reads a few counter rows and the pool's stripes, never
 * the tables the figures count: proven here on tables grown by thousands of rows with
 * PostgreSQL's own per-transaction access statistics. And /metrics takes the scrape
 * token (SLUICE_METRICS_TOKEN) and nothing else.
 */
let stack: TestStack;
const { party } = testParties(() => stack);

/** The tables the figures count (and those a scrape once joined): a scrape reads none of them. */
const COUNTED = ['stream_ticks', 'streams', 'grants', 'webhook_deliveries', 'subaccounts', 'holds', 'transfers'];
const GROWN = { accounts: 3_000, streams: 2_000, stream_ticks: 6_000, grants: 3_000, webhook_deliveries: 4_000 };

beforeAll(async () => {
  stack = await startTestStack();
  await party('payer', 1_000);
  await party('payee');
  const entity = await api(stack.app, ADMIN_KEY).post('/v1/entities', { id: 'ent', name: 'ent', collateral: 100, funding: 50 });
  expect(entity.status).toBe(201);
}, 60_000);
afterAll(() => stack?.stop());

const series = (s: Map<string, number>, name: string) => s.get(name) ?? 0;

test('rows written straight into the tables, as by any writer, are counted by the database: each figure moves by the rows written and equals their count', async () => {
  const before = await scrapeMetrics(stack.app);
  const db = stack.db.pool;
  await db.query(`insert into accounts (id, owner_id, kind) select 'payer.g' || i, 'payer', 'user' from generate_series(1, $1) i`, [GROWN.accounts]);
  // closed streams, and one whose ticks follow
  await db.query(
    `insert into streams (ref, payer, payee, payer_account_id, payee_account_id, rate_per_tick, opening_rate_per_tick, max_total, tick_interval_ms, mode, status, closed_at, workflow_id)
     select 'grown-' || i, 'payer', 'payee', 'payer.w', 'payee.w', 1, 1, 1000000, 1000, 'payg', 'closed', now(), 'grown' from generate_series(1, $1) i`,
    [GROWN.streams],
  );
  // a lag in every bucket, +Inf included, in turn; the first 500 ticks have no due time (billed before migration 010)
  await db.query(
    `insert into stream_ticks (stream_ref, tick, amount, due_at, billed_at)
     select 'grown-1', i, 1, case when i > 500 then now() - interval '1 hour' end,
            now() - interval '1 hour' + (array[0.005, 0.02, 0.04, 0.09, 0.2, 0.4, 0.9, 2, 4, 9, 20, 50, 200, 400])[1 + i % 14] * interval '1 second'
       from generate_series(1, $1) i`,
    [GROWN.stream_ticks],
  );
  await db.query(
    `insert into grants (job_id, payer, payer_account_id, request_hash, work, estimated_cost, decision, tier, advisory_absorb, status, resolved_at, jobs_account_id)
     select 'grown-' || i, 'payer', 'payer.w', 'h', '{}', 10, (array['free', 'partial', 'gate'])[1 + i % 3], 'new', 0, 'cancelled', now(), 'sluice.jobs'
       from generate_series(1, $1) i`,
    [GROWN.grants],
  );
  await db.query(
    `insert into webhook_deliveries (entity_id, event_key, event_type, url, attempt, status_code, ok)
     select 'ent', 'grown:' || i, 'grown', 'http://127.0.0.1:9/hooks', 1, case when i % 4 = 0 then 503 else 204 end, i % 4 <> 0 from generate_series(1, $1) i`,
    [GROWN.webhook_deliveries],
  );
  // the planner sees the tables' real sizes
  await db.query('analyze accounts, streams, stream_ticks, grants, webhook_deliveries');

  const after = await scrapeMetrics(stack.app);
  const moved = (name: string) => series(after, name) - series(before, name);
  expect(moved('sluice_ticks_billed_total')).toBe(GROWN.stream_ticks);
  expect(moved('sluice_tick_lag_seconds_count')).toBe(GROWN.stream_ticks - 500);
  expect(moved('sluice_webhook_delivery_attempts_total')).toBe(GROWN.webhook_deliveries);
  expect(moved('sluice_webhook_delivery_failures_total')).toBe(GROWN.webhook_deliveries / 4);
  for (const mode of ['free', 'partial', 'gate']) expect(moved(`sluice_grant_decisions_total{mode="${mode}"}`)).toBe(GROWN.grants / 3);
  // ticks in every bucket: each cumulative bucket above the one before, +Inf above the last bound
  const buckets = [...TICK_LAG_BUCKETS_SECONDS, '+Inf'].map((le) => moved(`sluice_tick_lag_seconds_bucket{le="${le}"}`));
  expect({ buckets, rising: buckets.every((n, i) => i === 0 || n > buckets[i - 1]!) }).toEqual({ buckets, rising: true });

  const { served, truth } = await figuresBesideTruth(stack.app, stack.db.pool);
  expect(served).toEqual(truth);
});

interface Access {
  seq_scan: number;
  seq_tup_read: number;
  idx_scan: number;
  idx_tup_fetch: number;
}

/**
 * This transaction's reads of each table so far (pg_stat_xact_user_tables: this backend, this transaction, no other's).
 * A partitioned table (migration 031) is read through its partitions, so its reads are theirs, summed.
 */
async function reads(client: PoolClient, tables: string[]): Promise<Record<string, Access>> {
  const { rows } = await client.query<{ relname: string } & Record<keyof Access, string>>(
    `select t.name as relname, sum(s.seq_scan) as seq_scan, sum(s.seq_tup_read) as seq_tup_read,
            sum(coalesce(s.idx_scan, 0)) as idx_scan, sum(coalesce(s.idx_tup_fetch, 0)) as idx_tup_fetch
       from unnest($1::text[]) t(name)
       join lateral (select ('public.' || t.name)::regclass as relid union select relid from pg_partition_tree(('public.' || t.name)::regclass)) p on true
       join pg_stat_xact_user_tables s on s.relid = p.relid
      group by t.name`,
    [tables],
  );
  return Object.fromEntries(
    rows.map((r) => [r.relname, { seq_scan: Number(r.seq_scan), seq_tup_read: Number(r.seq_tup_read), idx_scan: Number(r.idx_scan), idx_tup_fetch: Number(r.idx_tup_fetch) }]),
  );
}
const delta = (a: Record<string, Access>, b: Record<string, Access>, table: string): Access => ({
  seq_scan: b[table]!.seq_scan - a[table]!.seq_scan,
  seq_tup_read: b[table]!.seq_tup_read - a[table]!.seq_tup_read,
  idx_scan: b[table]!.idx_scan - a[table]!.idx_scan,
  idx_tup_fetch: b[table]!.idx_tup_fetch - a[table]!.idx_tup_fetch,
});
const NOTHING: Access = { seq_scan: 0, seq_tup_read: 0, idx_scan: 0, idx_tup_fetch: 0 };

test('a scrape on the grown tables reads none of the tables its figures count, and of accounts only the pool stripes by their index; the old count(*) shows up in the same measure', async () => {
  const { rows: stripes } = await stack.db.pool.query<{ n: number }>(`select count(*)::int as n from accounts where kind = 'pool'`);
  const tables = [...COUNTED, 'accounts'];
  const client = await stack.db.pool.connect();
  let scrape: Record<string, Access>;
  let control: Access;
  try {
    // the scrape's own statements (the registry /metrics serves) on one connection, in one
    // transaction, so the statistics are its alone; rolled back, it leaves the counters as they were
    await client.query('begin');
    const start = await reads(client, tables);
    const text = await createMetrics(client).registry.metrics();
    expect(text).toMatch(/^sluice_ticks_billed_total \d+$/m);
    const end = await reads(client, tables);
    scrape = Object.fromEntries(tables.map((t) => [t, delta(start, end, t)]));
    await client.query('select count(*) from stream_ticks');
    control = delta(end, await reads(client, tables), 'stream_ticks');
  } finally {
    await client.query('rollback');
    client.release();
  }
  expect(Object.fromEntries(COUNTED.map((t) => [t, scrape[t]]))).toEqual(Object.fromEntries(COUNTED.map((t) => [t, NOTHING])));
  // the pool's figures: its stripe accounts, found by the partial index on kind = 'pool'
  expect(scrape.accounts!.seq_scan).toBe(0);
  expect(scrape.accounts!.idx_tup_fetch).toBeLessThanOrEqual(stripes[0]!.n);
  // the measure sees a scan: what every scrape used to run
  expect(control.seq_scan + control.idx_scan).toBeGreaterThan(0);
});

test("migration 029's backfill, run again from zero on the grown tables, counts what the rows say", async () => {
  const migration = readFileSync(join(__dirname, '../../src/db/migrations/029_metric_rollups.sql'), 'utf8');
  const backfill = migration.slice(migration.indexOf('-- ---- the backfill'));
  const client = await stack.db.pool.connect();
  try {
    await client.query('begin');
    // nothing moves while the counts are redone: the migration's own lock
    await client.query('lock table stream_ticks, streams, grants, subaccounts, webhook_deliveries in share row exclusive mode');
    await client.query(
      `delete from metric_counters where metric in ('ticks_billed', 'tick_lag_bucket', 'tick_lag_micros', 'streams_opened', 'streams_closed', 'grant_decisions', 'saga_compensations');
       delete from metric_counter_deltas`,
    );
    await client.query(backfill);
    const served = samplesOf(await createMetrics(client).registry.metrics());
    const truth = await figuresFromRows(client);
    const round = (s: string, v: number) => (s.endsWith('_sum') ? Math.round(v * 1e6) : v);
    expect(Object.fromEntries([...truth.keys()].map((s) => [s, round(s, served.get(s) ?? 0)]))).toEqual(Object.fromEntries([...truth].map(([s, v]) => [s, round(s, v)])));
    expect(truth.get('sluice_ticks_billed_total')).toBeGreaterThanOrEqual(GROWN.stream_ticks);
  } finally {
    await client.query('rollback');
    client.release();
  }
});

test("the ledger's lag buckets are the ones /metrics exposes", async () => {
  const { rows } = await stack.db.pool.query<{ bounds: number[] }>('select tick_lag_bounds()::float8[] as bounds');
  expect(rows[0]!.bounds).toEqual(TICK_LAG_BUCKETS_SECONDS);
});

describe('who may scrape', () => {
  const get = (headers: Record<string, string> = {}, app = stack.app) => app.inject({ method: 'GET', url: '/metrics', headers });

  test('the metrics token opens /metrics; no token, a wrong one or the admin key is 401 in the one error shape', async () => {
    const ok = await get({ authorization: `Bearer ${METRICS_TOKEN}` });
    expect(ok.statusCode).toBe(200);
    expect(ok.headers['content-type']).toMatch(/^text\/plain/);
    for (const [what, headers, message] of [
      ['no token', {}, /missing metrics token/],
      ['a wrong token', { authorization: `Bearer ${METRICS_TOKEN}x` }, /wrong metrics token/],
      ['the token as another scheme', { authorization: `Basic ${METRICS_TOKEN}` }, /missing metrics token/],
      ['the admin key', { authorization: `Bearer ${ADMIN_KEY}` }, /wrong metrics token/],
    ] as const) {
      const res = await get(headers);
      expect({ what, status: res.statusCode }).toEqual({ what, status: 401 });
      expect(res.json()).toEqual(ERROR_SHAPE);
      expect(res.json().error).toMatchObject({ code: 'unauthorized', message: expect.stringMatching(message), request_id: res.headers['x-request-id'] });
      // and it told nothing: no figure in the body
      expect(res.body).not.toMatch(/sluice_/);
    }
  });

  test('an API built without a token (a loopback or development one: the config refuses any other) serves /metrics to anyone', async () => {
    const open = await buildApp({ ...stack.app.deps, metricsToken: undefined, logger: createLogger('silent') });
    try {
      expect((await get({}, open)).statusCode).toBe(200);
    } finally {
      await open.close();
    }
  });
});
