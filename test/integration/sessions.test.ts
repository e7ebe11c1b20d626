import { runAudit } from '../../src/audit';
import { sessionWorkflowId } from '../../src/domain/sessions';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';
import { testParties } from '../support/parties';

/**
 * Sessions end to end on a real Temporal dev server and a real database, mirroring
 * the jobs' tests: free, partial and gate requests with exact balances, work cheaper
 * and dearer than the estimate, work that fails and compensates, a charge past the
 * balance refused before anything moves, requests sent again, the close's refund.
 */
let stack: TestStack;
let admin: ReturnType<typeof api>;
// parties with a wallet `<id>.w`, funded and tiered by the admin (test/support/parties.ts)
const { as, party, account: balance } = testParties(() => stack);
const pool = async () => (await admin.get('/v1/pool')).body;
const open = (by: string, sessionId: string, amount: number) => as(by).post('/v1/sessions', { sessionId, accountId: `${by}.w`, amount });
const send = (by: string, sessionId: string, requestId: string, estimatedCost: number, simulate: Record<string, unknown> = {}) =>
  as(by).post(`/v1/sessions/${sessionId}/requests`, { requestId, estimatedCost, work: { description: 'summarise', simulate } });
const session = async (id: string) => (await admin.get(`/v1/sessions/${id}`)).body;
const estimate = async (by: string, units: number) => (await as(by).get(`/v1/estimate?units=${units}`)).body;

beforeAll(async () => {
  stack = await startTestStack();
  admin = api(stack.app, ADMIN_KEY);
  await party('est', 1000, 'established'); // 50 a day
  await party('tru', 1000, 'trusted'); // 200 a day
  await party('fresh', 1000); // tier new: 0 a day
  await party('poor', 30, 'established');
  await party('other', 1000, 'trusted');
});
afterAll(() => stack.stop());

describe('sessions', () => {
  test('opening moves the amount into the session balance; the same open again is the same session; other terms are a conflict', async () => {
    const res = await open('tru', 's-tru', 500);
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ sessionId: 's-tru', payer: 'tru', payerAccountId: 'tru.w', accountId: 'session:s-tru', status: 'open', funded: 500, balance: 500, debited: 0, refunded: 0, requests: [] });
    expect(await balance('tru.w')).toMatchObject({ balance: 500, held: 0 });
    expect(await balance('session:s-tru')).toMatchObject({ kind: 'session', ownerId: 'sluice', balance: 500 });
    const again = await open('tru', 's-tru', 500);
    expect(again.status).toBe(200);
    expect(again.body).toEqual(res.body);
    const other = await open('tru', 's-tru', 400);
    expect(other.status).toBe(409);
    expect(other.body.error.code).toBe('ref_conflict');
    expect(await balance('tru.w')).toMatchObject({ balance: 500 });
  });

  test('an Idempotency-Key names the session; neither a key nor a sessionId is a 400', async () => {
    const keyed = await as('other').post('/v1/sessions', { accountId: 'other.w', amount: 100 }, 'sess-key-1');
    expect(keyed.status).toBe(201);
    expect(keyed.body.sessionId).toMatch(/^k-[0-9a-f]{32}$/);
    const again = await as('other').post('/v1/sessions', { accountId: 'other.w', amount: 100 }, 'sess-key-1');
    expect(again.status).toBe(200);
    expect(again.body.sessionId).toBe(keyed.body.sessionId);
    const none = await as('other').post('/v1/sessions', { accountId: 'other.w', amount: 100 });
    expect(none.status).toBe(400);
    expect(none.body.error.param).toBe('sessionId');
    expect(await balance('other.w')).toMatchObject({ balance: 900 });
  });

  test('a payer short of the amount opens nothing (422), and may open the same id once funded', async () => {
    const res = await open('poor', 's-poor', 100);
    expect(res.status).toBe(422);
    expect(res.body.error.code).toBe('insufficient_funds');
    expect((await admin.get('/v1/sessions/s-poor')).status).toBe(404);
    expect(await balance('poor.w')).toMatchObject({ balance: 30 });
    await admin.post('/v1/deposits', { accountId: 'poor.w', amount: 100 }, 'fund-poor-2');
    const retried = await open('poor', 's-poor', 100);
    expect(retried.status).toBe(201);
    expect(retried.body).toMatchObject({ balance: 100, funded: 100 });
  });

  test('free: decided on the estimate and reserved before the work; the pool absorbs the actual cost, the over-reservation goes back; the session pays nothing', async () => {
    const before = await pool();
    const res = await send('tru', 's-tru', 'r-free', 40, { actualCost: 30 });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ jobId: 'session:s-tru:r-free', sessionId: 's-tru', requestId: 'r-free', decision: 'free', status: 'settled', reserved: 40, absorbed: 30, returned: 10, paid: 0, credited: 0, actualCost: 30 });
    expect(await pool()).toMatchObject({ balance: before.balance - 30, held: 0 });
    expect(await session('s-tru')).toMatchObject({ balance: 500, debited: 0, totals: { requests: 1, settled: 1, absorbed: 30, debited: 0 } });
    // the budget is the payer's one budget, shared with its jobs: 200 − 30
    expect((await estimate('tru', 1)).budget).toMatchObject({ used: 30, remaining: 170 });
  });

  test('partial: the free part reserved, the charged part paid from the balance; 10% of it goes to the pool', async () => {
    expect((await open('est', 's-est', 200)).status).toBe(201);
    const before = await pool();
    const res = await send('est', 's-est', 'r-partial', 80, { actualCost: 80 });
    expect(res.body).toMatchObject({ decision: 'partial', status: 'settled', advisoryAbsorb: 50, reserved: 50, absorbed: 50, paid: 30, refunded: 0, credited: 3 });
    expect(await session('s-est')).toMatchObject({ balance: 170, debited: 30, totals: { absorbed: 50, debited: 30, credited: 3 } });
    expect((await pool()).balance).toBe(before.balance - 50 + 3);
    expect(await balance('est.w')).toMatchObject({ balance: 800 });
  });

  test('gate: tier new pays all from the balance; work cheaper than the estimate is debited only what it cost', async () => {
    expect((await open('fresh', 's-fresh', 100)).status).toBe(201);
    const before = await pool();
    const res = await send('fresh', 's-fresh', 'r-gate', 25, { actualCost: 21 });
    expect(res.body).toMatchObject({ decision: 'gate', reserved: 0, absorbed: 0, paid: 25, refunded: 4, credited: 2, actualCost: 21 });
    expect(await session('s-fresh')).toMatchObject({ balance: 79, debited: 21 });
    expect((await pool()).balance).toBe(before.balance + 2);
  });

  test('work dearer than the estimate: the pool absorbs at most the grant and the session pays at most the charge (the estimate is the quote)', async () => {
    const s = await session('s-est');
    const res = await send('est', 's-est', 'r-over', 20, { actualCost: 35 });
    // the budget is spent: gated on the estimate, 20 charged, the 15 beyond it not
    expect(res.body).toMatchObject({ decision: 'gate', reserved: 0, absorbed: 0, paid: 20, refunded: 0, credited: 2, actualCost: 35 });
    expect(await session('s-est')).toMatchObject({ balance: s.balance - 20, debited: s.debited + 20 });
    const free = await send('tru', 's-tru', 'r-free-over', 10, { actualCost: 14 });
    expect(free.body).toMatchObject({ decision: 'free', reserved: 10, absorbed: 10, returned: 0, paid: 0 });
  });

  test('work that fails compensates: the reservation released (budget given back), the payment refunded to the session, the request failed', async () => {
    const before = { pool: await pool(), session: await session('s-tru'), budget: (await estimate('tru', 1)).budget };
    // 160 of tru's budget left: 160 reserved, 40 paid from the balance, then all of it undone
    const res = await send('tru', 's-tru', 'r-fail', 200, { failTimes: 'always' });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ status: 'failed', reason: 'work_failed', decision: 'partial', reserved: 160, returned: 160, absorbed: 0, paid: 40, refunded: 40 });
    expect(await pool()).toMatchObject({ balance: before.pool.balance, held: 0 });
    expect(await session('s-tru')).toMatchObject({ balance: before.session.balance, debited: before.session.debited, totals: { failed: 1 } });
    expect((await estimate('tru', 1)).budget).toEqual(before.budget);
  });

  test('a charge past the remaining balance is refused before the work runs (422) and reserves nothing', async () => {
    const before = { pool: await pool(), session: await session('s-fresh') };
    const res = await send('fresh', 's-fresh', 'r-too-dear', 500);
    expect(res.status).toBe(422);
    expect(res.body.error).toMatchObject({ code: 'insufficient_funds', details: { sessionId: 's-fresh', requestId: 'r-too-dear', available: 79, required: 500 } });
    expect(res.body.error.message).toMatch(/has 79 left; request r-too-dear would charge 500/);
    expect(await pool()).toEqual(before.pool);
    const after = await session('s-fresh');
    expect(after).toMatchObject({ balance: 79, totals: { requests: 1 } });
    expect(after.requests.map((r: { requestId: string }) => r.requestId)).toEqual(['r-gate']);
    expect((await stack.db.pool.query(`select count(*)::int as n from holds where reference->>'job' = 'session:s-fresh:r-too-dear'`)).rows[0].n).toBe(0);
    // once refused, the same request may be sent again (it is refused again: nothing refilled the balance)
    expect((await send('fresh', 's-fresh', 'r-too-dear', 500)).status).toBe(422);
  });

  test('a request sent again returns the same grant and moves nothing; the same id with other terms is a conflict', async () => {
    const first = await send('fresh', 's-fresh', 'r-twice', 10, { actualCost: 10 });
    expect(first.status).toBe(201);
    const again = await send('fresh', 's-fresh', 'r-twice', 10, { actualCost: 10 });
    expect(again.status).toBe(200);
    expect(again.body).toEqual(first.body);
    const [a, b] = await Promise.all([send('fresh', 's-fresh', 'r-twice-2', 5, { actualCost: 5, durationMs: 300 }), send('fresh', 's-fresh', 'r-twice-2', 5, { actualCost: 5, durationMs: 300 })]);
    expect(a.body).toEqual(b.body);
    const other = await send('fresh', 's-fresh', 'r-twice', 11);
    expect(other.status).toBe(409);
    expect(other.body.error.code).toBe('ref_conflict');
    const payments = await stack.db.pool.query(`select count(*)::int as n from transfers where job_id in ('session:s-fresh:r-twice', 'session:s-fresh:r-twice-2') and kind = 'job_payment'`);
    expect(payments.rows[0].n).toBe(2);
    expect(await session('s-fresh')).toMatchObject({ balance: 79 - 10 - 5, totals: { requests: 3 } });
  });

  test('another party can neither see nor use a session; a session account moves through nothing else', async () => {
    expect((await as('est').get('/v1/sessions/s-tru')).status).toBe(404);
    expect((await send('est', 's-tru', 'r-x', 5)).status).toBe(404);
    expect((await as('est').post('/v1/sessions/s-tru/close')).status).toBe(404);
    expect((await admin.get('/v1/sessions/nope')).status).toBe(404);
    // not even the admin moves a session's balance outside its steps
    const moved = await admin.post('/v1/payments', { ref: 'steal-1', fromAccountId: 'session:s-tru', toAccountId: 'est.w', amount: 1 });
    expect(moved.status).toBeGreaterThanOrEqual(400);
    expect(moved.status).toBeLessThan(500);
    expect(await session('s-tru')).toMatchObject({ balance: 500 });
    // nor is a session's request cancelled as a job
    const cancel = await as('tru').post(`/v1/jobs/${encodeURIComponent('session:s-tru:r-free')}/cancel`, {});
    expect(cancel.status).toBe(409);
  });

  test('closing refunds what remains to the payer, completes the workflow with the receipt, and refuses later requests', async () => {
    const before = await balance('est.w');
    const s = await session('s-est');
    const res = await as('est').post('/v1/sessions/s-est/close');
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: 'closed', balance: 0, refunded: s.balance, funded: 200, debited: 50 });
    expect(res.body.funded).toBe(res.body.debited + res.body.refunded + res.body.balance);
    expect(await balance('est.w')).toMatchObject({ balance: before.balance + s.balance });
    const receipt = await stack.client.workflow.getHandle(sessionWorkflowId('s-est')).result();
    expect(receipt).toMatchObject({ sessionId: 's-est', status: 'closed', refunded: s.balance, balance: 0 });
    const late = await send('est', 's-est', 'r-late', 5);
    expect(late.status).toBe(409);
    expect(late.body.error.code).toBe('invalid_state');
    // a request sent again after the close still answers with its grant
    expect((await send('est', 's-est', 'r-partial', 80, { actualCost: 80 })).status).toBe(200);
    const again = await as('est').post('/v1/sessions/s-est/close');
    expect(again.status).toBe(200);
    expect(again.body).toEqual(res.body);
    expect(await balance('est.w')).toMatchObject({ balance: before.balance + s.balance });
  });

  test('closing waits for the running requests; a request arriving while it closes is refused', async () => {
    expect((await open('other', 's-slow', 300)).status).toBe(201);
    const slow = send('other', 's-slow', 'r-slow', 50, { actualCost: 50, durationMs: 1500 });
    // the request is reserved before the close is sent
    for (let i = 0; i < 50 && (await session('s-slow')).totals.requests === 0; i++) await new Promise((r) => setTimeout(r, 100));
    const closing = as('other').post('/v1/sessions/s-slow/close');
    await new Promise((r) => setTimeout(r, 300));
    const refused = await send('other', 's-slow', 'r-after-close', 5);
    expect(refused.status).toBe(409);
    const [done, closed] = await Promise.all([slow, closing]);
    expect(done.body).toMatchObject({ status: 'settled', absorbed: 50 });
    expect(closed.body).toMatchObject({ status: 'closed', balance: 0, refunded: 300, totals: { requests: 1, settled: 1, running: 0 } });
  });

  test('the Temporal UI shows who funded a session with how much on the workflow itself, not only in its memo', async () => {
    expect((await open('est', 's-ui', 20)).status).toBe(201);
    const described = await stack.client.workflow.getHandle(sessionWorkflowId('s-ui')).describe();
    expect(await described.staticSummary()).toBe('session s-ui for est, funded 20 from est.w');
    expect(await described.staticDetails()).toContain('**amount**: 20');
    expect(described.memo).toMatchObject({ summary: 'session s-ui for est, funded 20 from est.w', payer: 'est' });
    await admin.post('/v1/sessions/s-ui/close');
  });

  test('the auditor is green, with its session checks', async () => {
    await Promise.all(['s-tru', 's-fresh', 's-poor'].map((id) => admin.post(`/v1/sessions/${id}/close`)));
    const report = await runAudit(stack.db.pool);
    expect(report.checks.filter((c) => !c.ok)).toEqual([]);
    expect(report.checks.map((c) => c.name)).toEqual(expect.arrayContaining(['sessions.conservation', 'sessions.closed_released', 'grants.money_matches_transfers']));
  });
});
