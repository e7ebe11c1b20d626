import { runAudit } from '../../src/audit';
import { recordHeartbeat } from '../../src/ledger/streams';
import { createWorker } from '../../src/worker';
import { sleep } from '../support/parties';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';

/**
 * The billing clock under load and under failure, on a real dev server and a real
 * PostgreSQL: every due tick billed exactly once, the books balanced, no deadlock
 * between the clock and the opens, controls and cancels that touch the same
 * accounts, and liveness judged at each tick's due time across a worker outage.
 * No assertion here depends on how fast the machine is: a close bills every tick
 * that was due, so a slow clock changes when ticks are billed, never which.
 */
let stack: TestStack;
let admin: ReturnType<typeof api>;
const keys: Record<string, string> = {};
const q = async (sql: string, params: unknown[] = []) => (await stack.db.pool.query(sql, params)).rows;

beforeAll(async () => {
  stack = await startTestStack({ writeRate: { max: 1_000_000, windowMs: 60_000 } });
  admin = api(stack.app, ADMIN_KEY);
});
afterAll(() => stack?.stop());

async function party(id: string, funds: number): Promise<void> {
  const res = await admin.post('/v1/parties', { id, name: id });
  expect(res.status).toBe(201);
  keys[id] = res.body.apiKey;
  expect((await api(stack.app, keys[id]).post('/v1/accounts', { id: `${id}.w` })).status).toBe(201);
  if (funds) expect((await admin.post('/v1/deposits', { accountId: `${id}.w`, amount: funds }, `fund-${id}`)).status).toBe(201);
}

/** Opens or cancels through POST /v1/streams/batch, 100 items a call, the calls side by side; every item must succeed. */
async function batch(items: Record<string, unknown>[]): Promise<Record<string, any>[]> {
  const calls: Record<string, unknown>[][] = [];
  for (let i = 0; i < items.length; i += 100) calls.push(items.slice(i, i + 100));
  const answers = await Promise.all(calls.map((chunk) => admin.post('/v1/streams/batch', { items: chunk })));
  return answers.flatMap((res) => {
    expect(res.status).toBe(200);
    return res.body.results.map((r: { status: number; body: Record<string, any> }) => {
      if (r.status >= 300) throw new Error(`batch item failed: ${JSON.stringify(r)}`);
      return r.body;
    });
  });
}
const t0 = Date.now();
const log = (what: string) => console.log(`${((Date.now() - t0) / 1000).toFixed(1)} s: ${what}`);

/** Each stream's billed ticks are exactly 1..ticks (no gap, no repeat) and its paid total is their sum. */
async function expectEachTickOnce(refs: string[]): Promise<void> {
  const rows = await q(
    `select s.ref, s.ticks_billed, s.paid, count(k.tick)::int as n, count(distinct k.tick)::int as distinct_n, coalesce(max(k.tick), 0) as max_tick,
            coalesce(sum(k.amount), 0)::bigint as sum_amount,
            (select count(*)::int from transfers t where t.stream_ref = s.ref and t.kind = 'stream_tick') as transfers
       from streams s left join stream_ticks k on k.stream_ref = s.ref
      where s.ref = any($1) group by s.ref`,
    [refs],
  );
  expect(rows).toHaveLength(refs.length);
  for (const r of rows) {
    expect({ ref: r.ref, n: r.n, distinct: r.distinct_n, max: r.max_tick, transfers: r.transfers, paid: Number(r.paid) }).toEqual({
      ref: r.ref, n: r.ticks_billed, distinct: r.ticks_billed, max: r.ticks_billed, transfers: r.ticks_billed, paid: Number(r.sum_amount),
    });
  }
}

test('500 streams at 100 ms ticks for 20 s, with billing connections cut mid-batch: every due tick is billed exactly once and the books balance', async () => {
  const payers = Array.from({ length: 10 }, (_, i) => `lp${i}`);
  const payees = Array.from({ length: 5 }, (_, i) => `le${i}`);
  for (const p of payers) await party(p, 10_000_000);
  for (const p of payees) await party(p, 0);
  const refs = Array.from({ length: 500 }, (_, i) => `load-${i}`);
  const opened = await batch(
    refs.map((ref, i) => ({ op: 'open', ref, fromAccountId: `${payers[i % payers.length]}.w`, toAccountId: `${payees[i % payees.length]}.w`, ratePerTick: 1 + (i % 7), maxTotal: 100_000, tickIntervalMs: 100 })),
  );
  expect(opened.filter((r) => r.status !== 'STREAMING')).toEqual([]);

  // while the streams run, cut the database connection of every billing transaction caught writing a batch
  let terminated = 0;
  log('opened 500 streams');
  const runUntil = Date.now() + 20_000;
  while (Date.now() < runUntil) {
    const [r] = await q(
      `select count(*)::int as n from (select pg_terminate_backend(pid) as ok from pg_stat_activity
          where datname = current_database() and pid <> pg_backend_pid() and query like '/* sluice:tick-batch */%' and state <> 'idle') t where ok`,
    );
    terminated += r.n;
    await sleep(terminated < 3 ? 20 : 500);
  }
  // the failure happened: batches were cut in the middle, and their retries billed on
  expect(terminated).toBeGreaterThanOrEqual(1);
  const [{ billed }] = await q(`select count(*)::int as billed from stream_ticks where stream_ref like 'load-%'`);
  expect(billed).toBeGreaterThan(500 * 10);

  log(`cut ${terminated} billing transactions mid-batch; ${billed} ticks billed`);
  const receipts = await batch(refs.map((ref) => ({ op: 'cancel', ref })));
  log('cancelled 500 streams');
  for (const r of receipts) {
    expect(r).toMatchObject({ status: 'CONFIRMED', reason: 'cancelled', tickIntervalMs: 100 });
    // the close billed every tick that was due by it
    expect(r.ticks).toBe(r.ticksDue);
    expect(r.ticksSkipped).toBe(0);
  }
  await expectEachTickOnce(refs);
  const audit = await runAudit(stack.db.pool);
  expect(audit.checks.filter((c) => !c.ok)).toEqual([]);
  const [{ total }] = await q(`select sum(balance)::bigint as total from accounts`);
  expect(Number(total)).toBe(0);
}, 600_000);

test('opens from ten payers to one payee, pauses, resumes and cancels while the clock bills those accounts: no deadlock, every tick once', async () => {
  const [{ deadlocks: before }] = await q(`select deadlocks::int from pg_stat_database where datname = current_database()`);
  await party('hot', 0);
  const payers = Array.from({ length: 10 }, (_, i) => `dp${i}`);
  for (const p of payers) await party(p, 1_000_000);
  // 30 streams already billing into the same payee
  const running = Array.from({ length: 30 }, (_, i) => `dl-run-${i}`);
  await batch(running.map((ref, i) => ({ op: 'open', ref, fromAccountId: `${payers[i % 10]}.w`, toAccountId: 'hot.w', ratePerTick: 1, maxTotal: 50_000, tickIntervalMs: 100 })));
  const storm = async (round: number) => {
    const refs = payers.map((p) => `dl-${round}-${p}`);
    const opens = await Promise.all(
      refs.map((ref, i) =>
        api(stack.app, keys[payers[i]!]).post('/v1/streams', { ref, fromAccountId: `${payers[i]}.w`, toAccountId: 'hot.w', ratePerTick: 2, maxTotal: 10_000, tickIntervalMs: 100 }),
      ),
    );
    expect(opens.map((o) => o.status)).toEqual(refs.map(() => 201));
    const controls = await Promise.all(refs.map((ref, i) => api(stack.app, keys[payers[i]!]).post(`/v1/streams/${ref}/pause`)));
    expect(controls.map((c) => c.status)).toEqual(refs.map(() => 200));
    const resumes = await Promise.all(refs.map((ref, i) => api(stack.app, keys[payers[i]!]).post(`/v1/streams/${ref}/resume`)));
    expect(resumes.map((c) => c.status)).toEqual(refs.map(() => 200));
    await sleep(300);
    const cancels = await Promise.all(refs.map((ref, i) => api(stack.app, keys[payers[i]!]).post(`/v1/streams/${ref}/cancel`, {})));
    expect(cancels.map((c) => c.status)).toEqual(refs.map(() => 200));
    return refs;
  };
  const stormed: string[] = [];
  for (let round = 0; round < 3; round++) stormed.push(...(await storm(round)));
  await batch(running.map((ref) => ({ op: 'cancel', ref })));

  const [{ deadlocks: after }] = await q(`select deadlocks::int from pg_stat_database where datname = current_database()`);
  expect(after - before).toBe(0);
  await expectEachTickOnce([...running, ...stormed]);
  const audit = await runAudit(stack.db.pool);
  expect(audit.checks.filter((c) => !c.ok)).toEqual([]);
}, 300_000);

test('a party silent during a worker outage: the ticks that fell due while it was unseen are skipped after recovery, the others billed late', async () => {
  await party('op-payer', 1_000_000);
  await party('op-payee', 0);
  const LIVENESS_MS = 1_000;
  const opened = await admin.post('/v1/streams', {
    ref: 'outage', fromAccountId: 'op-payer.w', toAccountId: 'op-payee.w', ratePerTick: 3, maxTotal: 100_000, tickIntervalMs: 200, livenessTimeoutMs: LIVENESS_MS, graceMs: 600_000,
  });
  expect(opened.status).toBe(201);
  let payeeSilent = false;
  let beating = true;
  const beats = (async () => {
    while (beating) {
      await recordHeartbeat(stack.db.pool, 'op-payer');
      if (!payeeSilent) await recordHeartbeat(stack.db.pool, 'op-payee');
      await sleep(100);
    }
  })();
  await sleep(1_000);

  // the worker goes down (the clock with it); meanwhile the payee is silent for 3 s, then heard again
  stack.worker.shutdown();
  while (stack.worker.getState() !== 'STOPPED') await sleep(50);
  await sleep(500);
  const [{ t: downAt }] = await q(`select clock_timestamp() as t`);
  const [{ n: lastBeforeDown }] = await q(`select last_tick as n from streams where ref = 'outage'`);
  payeeSilent = true;
  await sleep(3_000);
  payeeSilent = false;
  await sleep(1_500);
  // nothing was billed while the worker was down: the failure is real
  const [{ n: lastAfterOutage }] = await q(`select last_tick as n from streams where ref = 'outage'`);
  expect(lastAfterOutage).toBe(lastBeforeDown);

  // a new worker on the same task queue: the clock catches up
  const restarted = await createWorker({ pool: stack.db.pool, address: process.env.SLUICE_TEST_TEMPORAL_ADDRESS!, namespace: 'default', taskQueue: stack.taskQueue, workflowBundlePath: process.env.SLUICE_TEST_WORKFLOW_BUNDLE!, dailyCheckpoints: false });
  const run = restarted.worker.run();
  try {
    for (let i = 0; i < 300; i++) {
      const [{ behind }] = await q(`select (epoch_ms(clock_timestamp()) - next_due_ms) / tick_interval_ms as behind from streams where ref = 'outage'`);
      if (Number(behind) < 2) break;
      await sleep(100);
    }
    beating = false;
    await beats;
    const receipt = await api(stack.app, keys['op-payer']).post('/v1/streams/outage/cancel', {});
    expect(receipt.status).toBe(200);

    // every tick decided as the rule says at its due time, from the heartbeat history
    const decided = await q(
      `with due as (select n as tick, epoch_ms(s.opened_at) + (n - 1) * s.tick_interval_ms + s.paused_ms as due_ms, s.opened_at
                      from streams s, generate_series(2, s.last_tick) n where s.ref = 'outage'),
            seen as (select d.tick, d.due_ms,
                            least(greatest(epoch_ms(d.opened_at), (select epoch_ms(max(seen_at)) from party_heartbeat_log where party_id = 'op-payer' and epoch_ms(seen_at) <= d.due_ms)),
                                  greatest(epoch_ms(d.opened_at), (select epoch_ms(max(seen_at)) from party_heartbeat_log where party_id = 'op-payee' and epoch_ms(seen_at) <= d.due_ms))) as seen_ms
                       from due d)
       select s.tick, (s.due_ms - s.seen_ms) >= $1 as silent, exists (select 1 from stream_ticks k where k.stream_ref = 'outage' and k.tick = s.tick) as billed,
              exists (select 1 from stream_skips k where k.stream_ref = 'outage' and k.tick = s.tick) as skipped,
              (select k.billed_at > to_timestamp(s.due_ms / 1000.0) + interval '1 second' from stream_ticks k where k.stream_ref = 'outage' and k.tick = s.tick) as late
         from seen s order by s.tick`,
      [LIVENESS_MS],
    );
    const silent = decided.filter((d) => d.silent);
    // the payee was unseen for ~2 s of the outage (3 s silent, minus the 1 s timeout): ~10 ticks
    expect(silent.length).toBeGreaterThanOrEqual(5);
    for (const d of decided) expect({ tick: d.tick, billed: d.billed, skipped: d.skipped }).toEqual({ tick: d.tick, billed: !d.silent, skipped: d.silent });
    // ticks due during the outage (with both parties seen) were billed, and late: after the recovery
    const dueInOutage = await q(`select k.tick from stream_ticks k where k.stream_ref = 'outage' and k.due_at > $1 and k.billed_at > k.due_at + interval '1 second'`, [downAt]);
    expect(dueInOutage.length).toBeGreaterThanOrEqual(3);
    expect(receipt.body.ticksSkipped).toBe(silent.length);
    const audit = await runAudit(stack.db.pool);
    expect(audit.checks.filter((c) => !c.ok)).toEqual([]);
  } finally {
    restarted.worker.shutdown();
    await run;
    await restarted.connection.close();
  }
}, 300_000);
