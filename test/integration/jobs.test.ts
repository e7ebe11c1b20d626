import { jobWorkflowId } from '../../src/domain/grants';
import { runAudit } from '../../src/audit';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';

/**
 * Grant jobs end to end on a real Temporal dev server and a real database: each mode
 * with exact balances, the payment timeout, work failure with compensations, a
 * duplicate payment, and 200 concurrent jobs from 50 payers against a small pool.
 */
let stack: TestStack;
let admin: ReturnType<typeof api>;
const keys: Record<string, string> = {};
const as = (party: string) => api(stack.app, keys[party]);

async function party(id: string, funds: number, tier?: string) {
  const res = await admin.post('/v1/parties', { id, name: id });
  keys[id] = res.body.apiKey;
  await as(id).post('/v1/accounts', { id: `${id}.w` });
  if (funds) await admin.post('/v1/deposits', { accountId: `${id}.w`, amount: funds }, `fund-${id}`);
  if (tier) expect((await admin.post(`/v1/parties/${id}/tier`, { tier })).status).toBe(200);
}
const balance = async (id: string) => (await admin.get(`/v1/accounts/${id}`)).body;
const pool = async () => (await admin.get('/v1/pool')).body;
const job = (by: string, body: Record<string, unknown>) => as(by).post('/v1/jobs', { accountId: `${by}.w`, work: { description: 'resize images' }, ...body });
const result = (jobId: string) => stack.client.workflow.getHandle(jobWorkflowId(jobId)).result();

beforeAll(async () => {
  stack = await startTestStack();
  admin = api(stack.app, ADMIN_KEY);
  await party('est', 1000, 'established'); // 50 a day
  await party('tru', 1000, 'trusted'); // 200 a day
  await party('fresh', 1000); // tier new: 0 a day
  await party('broke', 5, 'established');
});
afterAll(() => stack.stop());

describe('grant jobs', () => {
  test('the pool is seeded at migration and reports its state', async () => {
    expect(await pool()).toMatchObject({ accountId: 'sluice.pool', balance: 10_000, held: 0, available: 10_000, absorbedToday: 0, creditedToday: 0 });
  });

  test('free: reserved at once, the pool absorbs the actual cost and the over-reservation goes back', async () => {
    const before = await balance('tru.w');
    const res = await job('tru', { jobId: 'j-free', estimatedCost: 40, work: { description: 'thumbs', simulate: { actualCost: 30, durationMs: 300 } } });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ jobId: 'j-free', decision: 'free', status: 'reserved', reserved: 40, tier: 'trusted' });
    const settled = await result('j-free');
    expect(settled).toMatchObject({ status: 'settled', reserved: 40, absorbed: 30, returned: 10, paid: 0, credited: 0, actualCost: 30 });
    expect(await balance('tru.w')).toMatchObject({ balance: before.balance, held: 0 });
    expect(await pool()).toMatchObject({ balance: 10_000 - 30, held: 0, absorbedToday: 30 });
    expect((await as('tru').get('/v1/jobs/j-free')).body).toEqual(settled);
    // the budget used is what was absorbed: 200 − 30 left
    expect((await as('tru').get('/v1/estimate?estimatedCost=500')).body).toMatchObject({
      decision: { mode: 'partial', absorbUnits: 170, chargeUnits: 330 },
      budget: { tier: 'trusted', daily: 200, used: 30, remaining: 170 },
    });
  });

  test('partial: advisory until paid; the payment re-grants, charges the rest, and 10% of it goes to the pool', async () => {
    const poolBefore = (await pool()).balance;
    const res = await job('est', { jobId: 'j-partial', estimatedCost: 80, work: { description: 'transcode', simulate: { actualCost: 80 } } });
    expect(res.body).toMatchObject({ decision: 'partial', status: 'awaiting_payment', advisoryAbsorb: 50, reserved: 0, paid: 0 });
    const paid = await as('est').post('/v1/jobs/j-partial/payment');
    expect(paid.status).toBe(200);
    expect(paid.body).toMatchObject({ status: 'reserved', reserved: 50, paid: 30 });
    // a duplicate payment changes nothing
    const again = await as('est').post('/v1/jobs/j-partial/payment');
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ reserved: 50, paid: 30 });
    const settled = await result('j-partial');
    expect(settled).toMatchObject({ status: 'settled', absorbed: 50, returned: 0, paid: 30, refunded: 0, credited: 3 });
    expect(await balance('est.w')).toMatchObject({ balance: 1000 - 30, held: 0 });
    expect((await pool()).balance).toBe(poolBefore - 50 + 3);
    expect((await as('est').post('/v1/jobs/j-partial/payment')).body).toEqual(settled);
    expect((await stack.db.pool.query(`select count(*)::int as n from transfers where job_id = 'j-partial' and kind = 'job_payment'`)).rows[0].n).toBe(1);
  });

  test('gate: tier new pays all; work cheaper than the estimate refunds the difference', async () => {
    const res = await job('fresh', { jobId: 'j-gate', estimatedCost: 25, work: { description: 'ocr', simulate: { actualCost: 21 } } });
    expect(res.body).toMatchObject({ decision: 'gate', advisoryAbsorb: 0, status: 'awaiting_payment' });
    expect((await as('fresh').post('/v1/jobs/j-gate/payment')).body).toMatchObject({ reserved: 0, paid: 25 });
    expect(await result('j-gate')).toMatchObject({ status: 'settled', absorbed: 0, paid: 25, refunded: 4, credited: 2 });
    expect(await balance('fresh.w')).toMatchObject({ balance: 1000 - 21, held: 0 });
  });

  test('no payment within the timeout cancels the job; nothing is reserved or charged', async () => {
    const before = await pool();
    const res = await job('fresh', { jobId: 'j-timeout', estimatedCost: 10, paymentTimeoutMs: 1000 });
    expect(res.body.status).toBe('awaiting_payment');
    expect(await result('j-timeout')).toMatchObject({ status: 'cancelled', reserved: 0, paid: 0, failure: 'no payment within 1000 ms' });
    const late = await as('fresh').post('/v1/jobs/j-timeout/payment');
    expect(late.status).toBe(409);
    expect(late.body.error.code).toBe('job_conflict');
    expect(await balance('fresh.w')).toMatchObject({ balance: 1000 - 21 });
    expect((await pool()).balance).toBe(before.balance);
  });

  test('the payer can cancel a job waiting for payment', async () => {
    await job('est', { jobId: 'j-cancel', estimatedCost: 500 });
    const res = await as('est').post('/v1/jobs/j-cancel/cancel', { reason: 'changed my mind' });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: 'cancelled', failure: 'cancelled by est: changed my mind' });
    expect((await as('tru').post('/v1/jobs/j-cancel/cancel', {})).status).toBe(403);
  });

  test('work failure compensates: the payment is refunded, the reservation released, the budget given back', async () => {
    const estBefore = await balance('est.w');
    const poolBefore = await pool();
    // est has used its 50 today: a new payer at tier established to see the budget come back
    await party('est2', 1000, 'established');
    await job('est2', { jobId: 'j-fail', estimatedCost: 70, work: { description: 'crash', simulate: { failTimes: 'always' } } });
    expect((await as('est2').post('/v1/jobs/j-fail/payment')).body).toMatchObject({ reserved: 50, paid: 20 });
    const failed = await result('j-fail');
    expect(failed).toMatchObject({ status: 'failed', reserved: 50, absorbed: 0, returned: 50, paid: 20, refunded: 20, credited: 0 });
    expect(failed.failure).toMatch(/simulated failure/);
    expect(await balance('est2.w')).toMatchObject({ balance: 1000, held: 0 });
    expect(await pool()).toMatchObject({ balance: poolBefore.balance, held: 0 });
    expect(await balance('est.w')).toEqual(estBefore);
    expect((await as('est2').get('/v1/estimate?estimatedCost=50')).body).toMatchObject({ decision: { mode: 'free' }, budget: { used: 0, remaining: 50 } });
    // a work that fails once and then succeeds settles normally
    await job('est2', { jobId: 'j-flaky', estimatedCost: 10, work: { description: 'flaky', simulate: { failTimes: 1, actualCost: 10 } } });
    expect(await result('j-flaky')).toMatchObject({ status: 'settled', decision: 'free', absorbed: 10 });
  });

  test('a payer that cannot pay gets 422 and the job keeps waiting', async () => {
    await job('broke', { jobId: 'j-broke', estimatedCost: 100, paymentTimeoutMs: 60_000 });
    const res = await as('broke').post('/v1/jobs/j-broke/payment');
    expect(res.status).toBe(422);
    expect(res.body.error.code).toBe('insufficient_funds');
    expect((await as('broke').get('/v1/jobs/j-broke')).body).toMatchObject({ status: 'awaiting_payment', paid: 0, reserved: 0 });
    expect(await balance('broke.w')).toMatchObject({ balance: 5, held: 0 });
    await as('broke').post('/v1/jobs/j-broke/cancel', {});
  });

  test('bad input is a clear 4xx and starts nothing', async () => {
    expect((await job('est', { estimatedCost: 0 })).status).toBe(400);
    expect((await job('est', { estimatedCost: -5 })).status).toBe(400);
    expect((await as('est').get('/v1/estimate?estimatedCost=0')).status).toBe(400);
    expect((await as('est').post('/v1/jobs', { accountId: 'tru.w', estimatedCost: 5, work: { description: 'x' } })).status).toBe(403);
    expect((await as('est').post('/v1/parties/est/tier', { tier: 'elite' })).status).toBe(403);
    expect((await admin.post('/v1/parties/est/tier', { tier: 'platinum' })).status).toBe(400);
    expect((await admin.post('/v1/parties/nobody/tier', { tier: 'elite' })).status).toBe(404);
    expect((await as('tru').get('/v1/jobs/j-free')).status).toBe(200);
    expect((await as('est').get('/v1/jobs/j-free')).status).toBe(403);
    expect((await as('tru').post('/v1/jobs/j-free/payment')).status).toBe(409);
  });

  test('the database refuses a day over budget and a pool below zero, bypassing application code', async () => {
    await expect(
      stack.db.pool.query(
        `insert into grants (job_id, payer, payer_account_id, request_hash, work, estimated_cost, decision, tier, advisory_absorb, status, day, budget, reserved, reserved_at)
         values ('j-sneak', 'tru', 'tru.w', 'h', '{}', 500, 'free', 'trusted', 500, 'reserved', current_date, 200, 500, now())`,
      ),
    ).rejects.toThrow(/would use 530 of its 200 budget/) // 30 used by j-free + 500;
    await expect(stack.db.pool.query(`insert into holds (account_id, amount, idempotency_key) values ('sluice.pool', 100000000, 'sneak')`)).rejects.toThrow(
      /check constraint/,
    );
    expect((await pool()).held).toBe(0);
  });

  test('the auditor is green after all of it', async () => {
    const report = await runAudit(stack.db.pool);
    expect(report.checks.filter((c) => !c.ok)).toEqual([]);
    expect(report.checks.map((c) => c.name)).toEqual(expect.arrayContaining(['grants.within_daily_budget', 'grants.reservation_matches_hold', 'grants.money_matches_transfers', 'grants.pool_conservation']));
  });
});
