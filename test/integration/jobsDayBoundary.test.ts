import { randomBytes } from 'node:crypto';
import { Client } from '@temporalio/client';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { createActivities } from '../../activities';
import { runAudit } from '../../src/audit';
import { jobWorkflowId, utcDay, type GrantView, type JobRequest } from '../../src/domain/grants';
import { createAccount, getAccount } from '../../src/ledger/accounts';
import { getGrant, setTier, usageOn } from '../../src/ledger/grants';
import { createParty } from '../../src/ledger/parties';
import { poolTotals } from '../../src/ledger/pool';
import { deposit } from '../../src/ledger/transfers';
import { grantJobWorkflow } from '../../workflows';
import { jobDecidedUpdate, jobPaymentUpdate } from '../../workflows/definitions';
import { createTestDatabase, type TestDatabase } from '../support/db';
import { startBundleWorker, startTimeSkippingEnv, within } from '../support/timeSkipping';

/**
 * Day boundary: a payer's daily budget is per UTC day of the workflow's own clock.
 * On the time-skipping test server (real activities, real database) a payer at tier
 * established (50 a day) uses its whole day; a second job that day is gated; the
 * clock is moved a day forward and a third job is free again, on the next day, while
 * the first day's usage stays what it was.
 *
 * The clock moves only through `env.sleep` (plus real time): results are awaited with
 * a plain client, not the environment's time-skipping one. Awaiting a result through
 * `env.client` unlocks time skipping, and this test server (1.40) then jumps about ten
 * years ahead once a workflow that ran activities has completed (to some timer of the
 * 10-year default it leaves behind), which would make "the next day" a decade later.
 */
const HOUR_MS = 60 * 60 * 1000;
const DAY_MS = 24 * HOUR_MS;
const PAYER = 'dayp';
const ACCOUNT = 'dayp.w';
const FUNDS = 1000;

let env: TestWorkflowEnvironment;
/** Starts workflows and awaits results without touching time skipping. */
let client: Client;
let db: TestDatabase;
let worker: Awaited<ReturnType<typeof startBundleWorker>> | undefined;
const taskQueue = `dayboundary-${randomBytes(4).toString('hex')}`;

const request = (jobId: string, estimatedCost: number, extra: Partial<JobRequest> = {}): JobRequest => ({
  jobId,
  payer: PAYER,
  payerAccountId: ACCOUNT,
  estimatedCost,
  requestHash: `hash-${jobId}`,
  work: { description: `day boundary ${jobId}`, simulate: { actualCost: estimatedCost } },
  paymentTimeoutMs: HOUR_MS,
  ...extra,
});

const start = (r: JobRequest) => client.workflow.start(grantJobWorkflow, { workflowId: jobWorkflowId(r.jobId), taskQueue, args: [r] });
const run = (r: JobRequest) => within(30_000, client.workflow.execute(grantJobWorkflow, { workflowId: jobWorkflowId(r.jobId), taskQueue, args: [r] }), r.jobId);
const nextDay = (day: string) => utcDay(Date.parse(`${day}T00:00:00Z`) + DAY_MS);

beforeAll(async () => {
  env = await startTimeSkippingEnv();

  client = new Client({ connection: env.connection, namespace: env.namespace ?? 'default' });

  db = await createTestDatabase();
  await createParty(db.pool, { id: PAYER, name: 'Day Payer' });
  await createAccount(db.pool, { id: ACCOUNT, ownerId: PAYER, kind: 'user' });
  await deposit(db.pool, { key: 'seed-dayp', accountId: ACCOUNT, amount: FUNDS });
  await setTier(db.pool, PAYER, 'established'); // 50 a day

  worker = await startBundleWorker(env, taskQueue, createActivities({ pool: db.runtimePool }));
});

afterAll(async () => {
  await worker?.stop();
  await db?.drop();
  await env?.teardown();
});

describe('the daily budget resets at UTC midnight of the workflow clock', () => {
  let day1: string;
  let day2: string;

  test('the clock is moved to 01:00 UTC of the next day, so the day-one steps cannot cross midnight', async () => {
    const now = await env.currentTimeMs();
    const target = Math.floor(now / DAY_MS) * DAY_MS + DAY_MS + HOUR_MS;
    await env.sleep(target - now);
    const after = await env.currentTimeMs();
    expect(after).toBeGreaterThanOrEqual(target);
    expect(after).toBeLessThan(target + HOUR_MS);
    day1 = utcDay(after);
    expect(day1).toBe(nextDay(utcDay(now)));
  });

  test('day one: a free job of 50 uses the whole budget of tier established', async () => {
    const a = await run(request('day-a', 50));
    expect(a).toMatchObject({ decision: 'free', tier: 'established', status: 'settled', day: day1, reserved: 50, absorbed: 50, returned: 0, paid: 0, actualCost: 50 });
    expect(await usageOn(db.pool, PAYER, day1)).toBe(50);
    expect(await getAccount(db.pool, ACCOUNT)).toMatchObject({ balance: FUNDS, held: 0 });
  });

  test('day one: the next job is gated (nothing left today) and times out unpaid; the clock stays on day one', async () => {
    const before = await env.currentTimeMs();
    const handle = await start(request('day-b', 10, { paymentTimeoutMs: 2 * HOUR_MS }));
    const decided: GrantView = await within(30_000, handle.executeUpdate(jobDecidedUpdate), 'day-b decided');
    expect(decided).toMatchObject({ decision: 'gate', advisoryAbsorb: 0, status: 'awaiting_payment', reserved: 0 });
    // two hours pass on the server: the payment timeout fires
    await env.sleep(2 * HOUR_MS + 1000);
    const b = (await within(30_000, handle.result(), 'day-b')) as GrantView;
    expect(b).toMatchObject({ status: 'cancelled', decision: 'gate', reserved: 0, paid: 0, failure: `no payment within ${2 * HOUR_MS} ms` });
    const after = await env.currentTimeMs();
    expect(after - before).toBeGreaterThanOrEqual(2 * HOUR_MS);
    expect(utcDay(after)).toBe(day1);
    expect(await usageOn(db.pool, PAYER, day1)).toBe(50);
  });

  test('a gate job decided on day one waits across midnight (payment timeout of two days)', async () => {
    const handle = await start(request('day-late', 30, { paymentTimeoutMs: 2 * DAY_MS }));
    expect(await within(30_000, handle.executeUpdate(jobDecidedUpdate), 'day-late decided')).toMatchObject({ decision: 'gate', advisoryAbsorb: 0, status: 'awaiting_payment' });
  });

  test('a day later (time skipped), the job decided yesterday is paid: booked today, but no more than its advisory 0', async () => {
    const before = await env.currentTimeMs();
    await env.sleep('24 hours');
    const now = await env.currentTimeMs();
    expect(now - before).toBeGreaterThanOrEqual(DAY_MS);
    day2 = utcDay(now);
    expect(day2).toBe(nextDay(day1));
    expect(Date.parse(day2) - Date.parse(day1)).toBe(DAY_MS);
    // today's budget is whole (50 left), yet the payer gains nothing by having waited for the reset
    const handle = client.workflow.getHandle(jobWorkflowId('day-late'));
    const paid: GrantView = await within(30_000, handle.executeUpdate(jobPaymentUpdate), 'day-late payment');
    expect(paid).toMatchObject({ status: 'reserved', decision: 'gate', reserved: 0, paid: 30, day: day2 });
    expect(await within(30_000, handle.result(), 'day-late')).toMatchObject({ status: 'settled', reserved: 0, absorbed: 0, paid: 30, refunded: 0, credited: 3, day: day2 });
    expect(await usageOn(db.pool, PAYER, day2)).toBe(0);
  });

  test('day two: the budget is whole again, a free job of 50 on the new day; day one keeps its usage', async () => {
    const c = await run(request('day-c', 50));
    expect(c).toMatchObject({ decision: 'free', tier: 'established', advisoryAbsorb: 50, status: 'settled', day: day2, reserved: 50, absorbed: 50, returned: 0, paid: 0 });
    // day one's usage is as it was; day two's is its own
    expect(await usageOn(db.pool, PAYER, day1)).toBe(50);
    expect(await usageOn(db.pool, PAYER, day2)).toBe(50);
    expect(await getGrant(db.pool, 'day-a')).toMatchObject({ day: day1, reserved: 50, returned: 0, absorbed: 50, status: 'settled' });
  });

  test('day two, budget used again: the next job is gated; yesterday does not count, today does', async () => {
    const handle = await start(request('day-d', 5, { paymentTimeoutMs: HOUR_MS }));
    expect(await within(30_000, handle.executeUpdate(jobDecidedUpdate), 'day-d decided')).toMatchObject({ decision: 'gate', advisoryAbsorb: 0 });
    await env.sleep(HOUR_MS + 1000);
    expect(await within(30_000, handle.result(), 'day-d')).toMatchObject({ status: 'cancelled', reserved: 0, paid: 0 });
    expect(utcDay(await env.currentTimeMs())).toBe(day2);
    expect(await usageOn(db.pool, PAYER, day1)).toBe(50);
    expect(await usageOn(db.pool, PAYER, day2)).toBe(50);
  });

  test('the ledger agrees: payer paid 30, the pool absorbed 100 and got 3 back, and the auditor is green', async () => {
    expect(await getAccount(db.pool, ACCOUNT)).toMatchObject({ balance: FUNDS - 30, held: 0 });
    expect(await poolTotals(db.pool)).toMatchObject({ balance: 10_000 - 100 + 3, held: 0 }); // over its stripes
    const { rows } = await db.pool.query(`select job_id, to_char(day, 'YYYY-MM-DD') as day, reserved - returned as used from grants where reserved > 0 order by job_id`);
    expect(rows).toEqual([
      { job_id: 'day-a', day: day1, used: 50 },
      { job_id: 'day-c', day: day2, used: 50 },
    ]);
    const report = await runAudit(db.pool);
    expect(report.checks.filter((c) => !c.ok)).toEqual([]);
  });
});
