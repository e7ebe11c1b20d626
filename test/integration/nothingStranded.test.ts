import { runAudit, WORKFLOWS_CHECK } from '../../src/audit';
import { parseFaults } from '../../src/domain/faults';
import { jobWorkflowId } from '../../src/domain/grants';
import { paymentWorkflowId } from '../../src/domain/payments';
import { creationWorkflowId } from '../../src/domain/entities';
import { streamWorkflowId } from '../../src/domain/streams';
import { settleStranded } from '../../src/temporal/reconciler';
import { ensureReconciler, reconcilerWorkflowId } from '../../src/temporal/reconcilerWorkflow';
import { paymentWorkflow } from '../../workflows/payment';
import { subaccountCreationWorkflow } from '../../workflows/entities';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';
import { sleep, testParties, until } from '../support/parties';

/**
 * Nothing stranded (DESIGN §3): money a workflow holds is settled whatever happens
 * to the workflow. Cancelled from outside (as the Temporal UI or CLI does), it
 * settles itself; terminated, the reconciler settles it; the API's cancel works
 * either way; and an open retried with the same key opens once.
 */
let stack: TestStack;
const { as, party, account, untilTicks } = testParties(() => stack);
const admin = () => api(stack.app, ADMIN_KEY);
type Res = { status: number; body: any; headers?: unknown };

beforeAll(async () => {
  // the creation sagas of "slowco" and "lostco" fail their collateral (resp. funding)
  // step twice, retried after 100 and 200 ms: a cancellation or a termination can land
  // while the saga is between its steps
  stack = await startTestStack({ faults: parseFaults('hold_collateral@slowco=2,fund@lostco=2') });
  // the worker's own reconciler would race the tests that look at a stranded stream
  // before anything settles it: it is stopped here, and started again by the test about it
  await stack.client.workflow.getHandle(reconcilerWorkflowId(stack.taskQueue)).terminate('stopped by the test');
});
afterAll(async () => stack?.stop());

const audit = () => runAudit(stack.db.pool, { client: stack.client, taskQueue: stack.taskQueue });
const workflowsCheck = async () => (await audit()).checks.find((c) => c.name === WORKFLOWS_CHECK)!;
const hold = async (ref: string) =>
  (await stack.db.pool.query<{ status: string }>('select h.status from holds h join streams s on s.hold_id = h.id where s.ref = $1', [ref])).rows[0]?.status;
const open = (payer: string, ref: string, extra: Record<string, unknown> = {}) =>
  as(payer).post('/v1/streams', { ref, fromAccountId: `${payer}.w`, toAccountId: 'shop.w', ratePerTick: 2, maxTotal: 1000, tickIntervalMs: 200, ...extra });

beforeAll(async () => {
  await party('shop');
});

describe('a Temporal cancellation settles', () => {
  test('a stream cancelled from outside closes: receipt closedBy operator, reason workflow_cancelled, escrow back', async () => {
    await party('ocan', 5000);
    expect((await open('ocan', 'oc-1')).status).toBe(201);
    await untilTicks('oc-1', 3);
    const handle = stack.client.workflow.getHandle(streamWorkflowId('oc-1'));
    await handle.cancel();
    const receipt = await handle.result();
    expect(receipt).toMatchObject({ ref: 'oc-1', status: 'CONFIRMED', closedBy: 'operator', reason: 'workflow_cancelled' });
    expect((await handle.describe()).status.name).toBe('COMPLETED');
    expect(await hold('oc-1')).toBe('released');
    expect(await account('ocan.w')).toMatchObject({ balance: 5000 - receipt.totalPaid, held: 0 });
    // the API answers the same receipt, and a cancel after it changes nothing
    const again = await as('ocan').post('/v1/streams/oc-1/cancel', {});
    expect(again).toMatchObject({ status: 200, body: { closedBy: 'operator', reason: 'workflow_cancelled', totalPaid: receipt.totalPaid } });
    expect((await workflowsCheck()).ok).toBe(true);
  });

  test('a job cancelled from outside while its work runs: refunded, released, closedBy operator', async () => {
    await party('ojob', 1000);
    await admin().post('/v1/parties/ojob/tier', { tier: 'established' });
    const started = await as('ojob').post('/v1/jobs', { jobId: 'oj-1', accountId: 'ojob.w', estimatedCost: 80, work: { description: 'slow', simulate: { actualCost: 80, durationMs: 5000 } } });
    expect(started.status).toBe(201);
    expect((await as('ojob').post('/v1/jobs/oj-1/payment')).body).toMatchObject({ status: 'reserved', paid: 30 });
    const handle = stack.client.workflow.getHandle(jobWorkflowId('oj-1'));
    await handle.cancel();
    await expect(handle.result()).rejects.toThrow(/cancel/i);
    const grant = (await as('ojob').get('/v1/jobs/oj-1')).body;
    expect(grant).toMatchObject({ status: 'cancelled', paid: 30, refunded: 30, closedBy: 'operator', reason: 'workflow_cancelled' });
    expect(grant.returned).toBe(grant.reserved);
    expect(await account('ojob.w')).toMatchObject({ balance: 1000, held: 0 });
  });

  test('a creation saga cancelled between its steps compensates: the slot fails, the collateral is released', async () => {
    const created = await admin().post('/v1/entities', { id: 'slowco', name: 'slowco', collateral: 100, funding: 50 });
    expect(created.status).toBe(201);
    await admin().post('/v1/deposits', { accountId: created.body.mainAccountId, amount: 1000 }, 'fund-slowco');
    const mainAccount = created.body.mainAccountId;
    const before = await account(mainAccount);
    const workflowId = creationWorkflowId('slowco', 'r1');
    const handle = await stack.client.workflow.start(subaccountCreationWorkflow, { workflowId, taskQueue: stack.taskQueue, args: [{ entityId: 'slowco', requestId: 'r1' }] });
    // the slot is allocated and the collateral step is failing and being retried: cancel now
    await until('the slot allocated', async () => (await stack.db.pool.query(`select 1 from subaccounts where entity_id = 'slowco' and status = 'pending'`)).rows[0]);
    await handle.cancel();
    const result = await handle.result();
    expect(result).toMatchObject({ error: { code: 'workflow_cancelled' }, subaccount: { status: 'failed' } });
    expect(result.compensated).toContain('mark_failed');
    expect(await account(mainAccount)).toMatchObject({ balance: before.balance, held: 0 });
    expect((await audit()).ok).toBe(true);
  });

  test('a payment cancelled as it starts still ends with its receipt: paid once, never left half done', async () => {
    await party('opay', 500);
    const request = { ref: 'op-1', payerAccountId: 'opay.w', payeeAccountId: 'shop.w', amount: 120 };
    const handle = await stack.client.workflow.start(paymentWorkflow, { workflowId: paymentWorkflowId('op-1'), taskQueue: stack.taskQueue, args: [request] });
    await handle.cancel();
    expect(await handle.result()).toMatchObject({ ref: 'op-1', amount: 120 });
    expect(await account('opay.w')).toMatchObject({ balance: 380 });
  });
});

describe('a terminated workflow is found and settled', () => {
  test('the auditor sees a terminated stream (red), the API cancel settles it through the ledger, and the auditor is green again', async () => {
    await party('term', 5000);
    expect((await open('term', 'tm-1')).status).toBe(201);
    await untilTicks('tm-1', 2);
    await stack.client.workflow.getHandle(streamWorkflowId('tm-1')).terminate('operator pulled the plug');
    const red = await workflowsCheck();
    expect(red).toMatchObject({ ok: false, violations: 1 });
    expect(red.rows[0]).toMatchObject({ kind: 'stream', id: 'tm-1', workflow_status: 'TERMINATED' });
    expect((await admin().get('/v1/audit')).body.ok).toBe(false);

    const cancelled = await as('term').post('/v1/streams/tm-1/cancel', { reason: 'done' });
    expect(cancelled).toMatchObject({ status: 200, body: { status: 'CONFIRMED', closedBy: 'term', reason: 'cancelled' } });
    expect(await hold('tm-1')).toBe('released');
    expect(await account('term.w')).toMatchObject({ balance: 5000 - cancelled.body.totalPaid, held: 0 });
    expect((await workflowsCheck()).ok).toBe(true);
  });

  test('POST /v1/reconcile settles a terminated stream as its cancel would (closedBy operator, workflow_terminated); a running one is a 409', async () => {
    await party('rec', 5000);
    expect((await open('rec', 'rc-1')).status).toBe(201);
    expect((await open('rec', 'rc-2')).status).toBe(201);
    await stack.client.workflow.getHandle(streamWorkflowId('rc-1')).terminate('gone');
    expect((await admin().post('/v1/reconcile', { stream: 'rc-2' })).status).toBe(409);
    // no workflow to pause it: a clear 409, not a 500
    const paused = await as('rec').post('/v1/streams/rc-1/pause');
    expect(paused).toMatchObject({ status: 409, body: { error: { code: 'invalid_state' } } });
    expect(paused.body.error.message).toMatch(/no running workflow/);
    expect((await as('rec').post('/v1/reconcile', { stream: 'rc-1' })).status).toBe(403);
    const report = await admin().post('/v1/reconcile', { stream: 'rc-1' });
    expect(report).toMatchObject({ status: 200, body: { heldOpen: 1, stranded: [{ kind: 'stream', id: 'rc-1', workflowStatus: 'TERMINATED', outcome: 'settled', reason: 'workflow_terminated' }] } });
    const view = (await as('rec').get('/v1/streams/rc-1')).body;
    expect(view).toMatchObject({ status: 'CONFIRMED', closedBy: 'operator', reason: 'workflow_terminated' });
    // again: nothing left to do, the receipt unchanged
    expect((await admin().post('/v1/reconcile', { stream: 'rc-1' })).body).toEqual({ heldOpen: 0, stranded: [] });
    expect((await as('rec').get('/v1/streams/rc-1')).body.totalPaid).toBe(view.totalPaid);
    expect((await as('rec').post('/v1/streams/rc-2/cancel', {})).status).toBe(200);
  });

  test('the reconciler, on its own, settles a terminated stream, a terminated paid job and a lost creation saga', async () => {
    await party('lost', 5000);
    await admin().post('/v1/parties/lost/tier', { tier: 'established' });
    expect((await open('lost', 'ls-1')).status).toBe(201);
    await as('lost').post('/v1/jobs', { jobId: 'lj-1', accountId: 'lost.w', estimatedCost: 80, work: { description: 'slow', simulate: { actualCost: 80, durationMs: 60_000 } } });
    expect((await as('lost').post('/v1/jobs/lj-1/payment')).body).toMatchObject({ status: 'reserved', paid: 30 });
    await stack.client.workflow.getHandle(streamWorkflowId('ls-1')).terminate('gone');
    await stack.client.workflow.getHandle(jobWorkflowId('lj-1')).terminate('gone');
    // a creation whose saga is gone: its slot allocated and its collateral held by a run that no longer exists
    const created = await admin().post('/v1/entities', { id: 'lostco', name: 'lostco', collateral: 100, funding: 50 });
    const mainAccount: string = created.body.mainAccountId;
    await admin().post('/v1/deposits', { accountId: mainAccount, amount: 1000 }, 'fund-lostco');
    const sagaId = creationWorkflowId('lostco', 'r1');
    const before = await account(mainAccount);
    const saga = await stack.client.workflow.start(subaccountCreationWorkflow, { workflowId: sagaId, taskQueue: stack.taskQueue, args: [{ entityId: 'lostco', requestId: 'r1' }] });
    // terminated once its collateral is held and its funding step is failing and being retried
    for (let i = 0; i < 500; i++) {
      const { rows } = await stack.db.pool.query(`select 1 from subaccounts where entity_id = 'lostco' and status = 'pending' and hold_id is not null`);
      if (rows[0]) break;
      await sleep(5);
    }
    await saga.terminate('gone');
    expect((await account(mainAccount)).held).toBe(100); // the collateral, stranded
    const stranded = await workflowsCheck();
    expect(stranded.ok).toBe(false);
    expect(stranded.rows.map((r) => r.kind).sort()).toEqual(['creation', 'job', 'stream']);

    await ensureReconciler(stack.client, stack.taskQueue, 1_000);
    await until('the reconciler settled everything', async () => ((await workflowsCheck()).ok ? true : undefined));
    expect((await as('lost').get('/v1/streams/ls-1')).body).toMatchObject({ status: 'CONFIRMED', closedBy: 'operator', reason: 'workflow_terminated' });
    expect((await as('lost').get('/v1/jobs/lj-1')).body).toMatchObject({ status: 'cancelled', paid: 30, refunded: 30, closedBy: 'operator', reason: 'workflow_terminated' });
    const stream = (await as('lost').get('/v1/streams/ls-1')).body;
    expect(await account('lost.w')).toMatchObject({ balance: 5000 - stream.totalPaid, held: 0 });
    const { rows: subs } = await stack.db.pool.query(`select status, failed_step, failure from subaccounts where entity_id = 'lostco'`);
    expect(subs).toEqual([expect.objectContaining({ status: 'failed', failure: expect.stringMatching(/workflow_terminated/) })]);
    expect(await account(mainAccount)).toMatchObject({ balance: before.balance, held: 0 });
    expect((await audit()).ok).toBe(true);
  });
});

describe('a stale listing', () => {
  test('a creation its saga activated after the reconciler listed it pending is left alone (concluded): still active, funded, its collateral held', async () => {
    const created = await admin().post('/v1/entities', { id: 'lateco', name: 'lateco', collateral: 100, funding: 50 });
    const mainAccount: string = created.body.mainAccountId;
    await admin().post('/v1/deposits', { accountId: mainAccount, amount: 1000 }, 'fund-lateco');
    const sagaId = creationWorkflowId('lateco', 'r1');
    const saga = await stack.client.workflow.start(subaccountCreationWorkflow, { workflowId: sagaId, taskQueue: stack.taskQueue, args: [{ entityId: 'lateco', requestId: 'r1' }] });
    const result = await saga.result();
    expect(result.subaccount).toMatchObject({ status: 'active' });
    // the reconciler read it pending, then found its workflow completed: the listing is stale
    expect((await saga.describe()).status.name).toBe('COMPLETED');
    const id: string = result.subaccount!.id;
    const outcome = await settleStranded({ pool: stack.db.pool, temporal: stack.client, taskQueue: stack.taskQueue }, { kind: 'creation', id, workflowId: sagaId }, 'workflow_completed');
    expect(outcome).toBe('concluded');
    const { rows } = await stack.db.pool.query(`select status, failure from subaccounts where id = $1`, [id]);
    expect(rows).toEqual([{ status: 'active', failure: null }]);
    const { rows: balances } = await stack.db.pool.query(`select id, balance::int, held::int from accounts where id in ($1, $2) order by id = $1 desc`, [id, mainAccount]);
    expect(balances).toEqual([
      { id, balance: 50, held: 0 },
      { id: mainAccount, balance: 1000 - 50, held: 100 },
    ]);
    expect((await audit()).ok).toBe(true);
  });
});

describe('opens are idempotent', () => {
  test('an open without a ref or an Idempotency-Key is refused and opens nothing', async () => {
    await party('noref', 500);
    const res = await as('noref').post('/v1/streams', { fromAccountId: 'noref.w', toAccountId: 'shop.w', ratePerTick: 1, maxTotal: 10, tickIntervalMs: 1000 });
    expect(res).toMatchObject({ status: 400, body: { error: { code: 'invalid_request', details: { param: 'ref' } } } });
    expect(res.body.error.message).toMatch(/ref.*Idempotency-Key/);
    const job = await as('noref').post('/v1/jobs', { accountId: 'noref.w', estimatedCost: 5, work: { description: 'x' } });
    expect(job).toMatchObject({ status: 400, body: { error: { code: 'invalid_request', details: { param: 'jobId' } } } });
    expect(await account('noref.w')).toMatchObject({ balance: 500, held: 0 });
  });

  test('a retried open under one Idempotency-Key (the first answer lost) opens one stream and charges once; other terms are a 409', async () => {
    await party('retry', 1000);
    const body = { fromAccountId: 'retry.w', toAccountId: 'shop.w', ratePerTick: 5, maxTotal: 100, tickIntervalMs: 60_000 };
    // the first answer is "lost": the client sends again, twice at once for good measure
    const [a, b, c] = (await Promise.all([1, 2, 3].map(() => as('retry').post('/v1/streams', body, 'open-once-1')))) as [Res, Res, Res];
    const refs = new Set([a, b, c].map((r) => r.body.ref));
    expect(refs.size).toBe(1);
    expect([a, b, c].map((r) => r.status).sort()).toEqual(expect.arrayContaining([201]));
    for (const r of [a, b, c]) expect([200, 201]).toContain(r.status);
    const { rows } = await stack.db.pool.query(`select ref from streams where payer_account_id = 'retry.w'`);
    expect(rows).toHaveLength(1);
    // escrow held once (100), tick 1 paid once (5)
    expect(await account('retry.w')).toMatchObject({ balance: 995, held: 95 });
    const other = await as('retry').post('/v1/streams', { ...body, ratePerTick: 6 }, 'open-once-1');
    expect(other).toMatchObject({ status: 409, body: { error: { code: 'ref_conflict' } } });
    // the same key from another caller is another stream
    await party('retry2', 1000);
    const theirs = await as('retry2').post('/v1/streams', { ...body, fromAccountId: 'retry2.w' }, 'open-once-1');
    expect(theirs.status).toBe(201);
    expect(theirs.body.ref).not.toBe(a.body.ref);
  });
});

describe('deadlines', () => {
  let slow: TestStack;
  afterAll(async () => slow?.stop());

  test('past the API wait an open answers 202 with a status URL that answers until the stream is open', async () => {
    slow = await startTestStack({ waitMs: 100 });
    const { as: slowAs, party: slowParty } = testParties(() => slow);
    await slowParty('dl', 1000);
    await slowParty('dlshop');
    // the worker is stopped: the open is accepted and waits for it
    slow.worker.shutdown();
    await sleep(500);
    const res = await slowAs('dl').post('/v1/streams', { ref: 'dl-1', fromAccountId: 'dl.w', toAccountId: 'dlshop.w', ratePerTick: 1, maxTotal: 10, tickIntervalMs: 1000 });
    expect(res).toMatchObject({ status: 202, body: { status: 'PENDING', statusUrl: '/v1/streams/dl-1', ref: 'dl-1', workflowId: 'stream-dl-1' } });
    expect((await slowAs('dl').get('/v1/streams/dl-1')).status).toBe(202);
    expect((await slowAs('dlshop').get('/v1/streams/dl-1')).status).toBe(202);
    await slowParty('stranger');
    expect((await slowAs('stranger').get('/v1/streams/dl-1')).status).toBe(404);
  });
});
