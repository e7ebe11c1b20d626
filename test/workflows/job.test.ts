import { CancelledFailure } from '@temporalio/common';
import { jobWorkflowId, type GrantView, type JobRequest } from '../../src/domain/grants';
import { sluiceErrorFromTemporal } from '../../src/temporal/failures';
import { grantJobWorkflow } from '../../workflows';
import { cancelJobSignal, jobDecidedUpdate, jobPaymentUpdate, jobViewQuery } from '../../workflows/definitions';
import { WORK_ATTEMPTS_MAX } from '../../workflows/job';
import { within } from '../support/timeSkipping';
import { failureOf, gate, heldUntil, refusal, startStubbedWorkflows, statusOf, uniqueId, until, type Stubs, type StubbedWorkflows } from './stubs';

/**
 * grantJobWorkflow with stubbed ledger steps and work: each branch (free, partial
 * paid, payment timeout, work failed, settlement refused, cancelled by the payer or
 * through Temporal) runs exactly the steps and compensations it should, in order.
 */
let w: StubbedWorkflows;
beforeAll(async () => {
  w = await startStubbedWorkflows();
});
afterAll(() => w?.stop());

const PAYMENT_TIMEOUT_MS = 60_000;
const jobRequest = (): JobRequest => ({
  jobId: uniqueId('job'), payer: 'alice', payerAccountId: 'alice.wallet', estimatedCost: 80, requestHash: 'h', work: { description: 'stubbed' }, paymentTimeoutMs: PAYMENT_TIMEOUT_MS,
});
const grantOf = (r: JobRequest, over: Partial<GrantView>): GrantView => ({
  jobId: r.jobId, payer: r.payer, payerAccountId: r.payerAccountId, requestHash: r.requestHash, estimatedCost: r.estimatedCost,
  decision: 'free', tier: 'trusted', advisoryAbsorb: r.estimatedCost, status: 'reserved',
  reserved: 0, absorbed: 0, returned: 0, paid: 0, refunded: 0, credited: 0, createdAt: '2024-05-01T00:00:00.000Z', ...over,
});
/** The ledger as the steps leave it: each stub answers with the grant as that step would. */
const ledger = (r: JobRequest, opened: Partial<GrantView>, more: Stubs = {}): Stubs => ({
  openGrant: () => grantOf(r, opened),
  payForGrant: () => grantOf(r, { ...opened, status: 'reserved', paid: 30 }),
  performJobWork: () => ({ actualCost: 70 }),
  settleGrant: (_jobId, actualCost) => grantOf(r, { ...opened, status: 'settled', actualCost }),
  refundGrantPayment: () => grantOf(r, { ...opened, refunded: 30 }),
  releaseGrantReservation: () => grantOf(r, { ...opened, returned: 50 }),
  closeGrant: ({ status, failure, closedBy, reason }) => grantOf(r, { ...opened, status, failure, closedBy, reason }),
  ...more,
});
const FREE = { decision: 'free', status: 'reserved', reserved: 80 } as const;
const PARTIAL = { decision: 'partial', status: 'awaiting_payment', advisoryAbsorb: 50 } as const;
const GATE = { decision: 'gate', status: 'awaiting_payment', advisoryAbsorb: 0 } as const;

const start = (r: JobRequest, client = w.client) => client.workflow.start(grantJobWorkflow, { workflowId: jobWorkflowId(r.jobId), taskQueue: w.taskQueue, args: [r] });
const COMPENSATE_PAID = ['refundGrantPayment', 'releaseGrantReservation', 'closeGrant'];

describe('grantJobWorkflow', () => {
  test('free: reserved at decide time, worked, settled on the actual cost; nothing compensated', async () => {
    const r = jobRequest();
    w.stub(ledger(r, FREE));
    const handle = await start(r);
    expect(await within(30_000, handle.result(), r.jobId)).toMatchObject({ status: 'settled', actualCost: 70 });
    const calls = w.calls(handle.workflowId);
    expect(calls.map((c) => c.name)).toEqual(['openGrant', 'performJobWork', 'settleGrant']);
    expect(calls[0]!.args).toEqual([r, expect.stringMatching(/^\d{4}-\d{2}-\d{2}$/)]);
    expect(calls[2]!.args).toEqual([r.jobId, 70]);
    expect(await statusOf(handle)).toBe('SETTLED');
  });

  test('partial: waits for the payment update, pays once (a second payment answers the same grant), works, settles', async () => {
    const r = jobRequest();
    w.stub(ledger(r, PARTIAL));
    const handle = await start(r);
    expect(await handle.executeUpdate(jobDecidedUpdate)).toMatchObject({ decision: 'partial', status: 'awaiting_payment' });
    const paid = await handle.executeUpdate(jobPaymentUpdate);
    expect(paid).toMatchObject({ status: 'reserved', paid: 30 });
    expect(await handle.executeUpdate(jobPaymentUpdate)).toEqual(paid);
    expect(await within(30_000, handle.result(), r.jobId)).toMatchObject({ status: 'settled', actualCost: 70 });
    expect(w.names(handle.workflowId)).toEqual(['openGrant', 'payForGrant', 'performJobWork', 'settleGrant']);
  });

  test('no payment within the timeout: cancelled, the payment refunded then the reservation released, closed by the system', async () => {
    const r = jobRequest();
    w.stub(ledger(r, PARTIAL));
    const handle = await start(r);
    const closed = await within(30_000, handle.result(), r.jobId); // the time-skipping server fires the timeout at once
    expect(closed).toMatchObject({ status: 'cancelled', closedBy: 'system', reason: 'payment_timeout', failure: `no payment within ${PAYMENT_TIMEOUT_MS} ms` });
    const calls = w.calls(handle.workflowId);
    expect(calls.map((c) => c.name)).toEqual(['openGrant', ...COMPENSATE_PAID]);
    expect(calls.slice(1, 3).map((c) => c.args)).toEqual([[r.jobId], [r.jobId]]);
    expect(calls[3]!.args).toEqual([{ jobId: r.jobId, status: 'cancelled', failure: `no payment within ${PAYMENT_TIMEOUT_MS} ms`, closedBy: 'system', reason: 'payment_timeout' }]);
    expect(await statusOf(handle)).toBe('CANCELLED');
  });

  test('a refused payment leaves the job waiting (the update fails with the ledger code); the timeout then cancels it', async () => {
    const r = jobRequest();
    w.stub(ledger(r, GATE, { payForGrant: () => { throw refusal('insufficient_funds'); } }));
    const handle = await start(r);
    const refused = await handle.executeUpdate(jobPaymentUpdate).then(() => undefined, (e: unknown) => e);
    expect(sluiceErrorFromTemporal(refused)).toMatchObject({ code: 'insufficient_funds' });
    expect(await handle.query(jobViewQuery)).toMatchObject({ status: 'awaiting_payment' });
    expect(await within(30_000, handle.result(), r.jobId)).toMatchObject({ status: 'cancelled', reason: 'payment_timeout' });
    expect(w.names(handle.workflowId)).toEqual(['openGrant', 'payForGrant', ...COMPENSATE_PAID]);
  });

  test(`work that fails ${WORK_ATTEMPTS_MAX} times fails the job: refund, release (reverse order), closed failed with the work's message`, async () => {
    const r = jobRequest();
    w.stub(ledger(r, GATE, { performJobWork: () => { throw new Error('gpu on fire'); } }));
    const handle = await start(r);
    await handle.executeUpdate(jobPaymentUpdate);
    expect(await within(30_000, handle.result(), r.jobId)).toMatchObject({ status: 'failed', reason: 'work_failed', closedBy: 'system', failure: 'gpu on fire' });
    expect(w.names(handle.workflowId)).toEqual(['openGrant', 'payForGrant', ...Array(WORK_ATTEMPTS_MAX).fill('performJobWork'), ...COMPENSATE_PAID]);
    expect(await statusOf(handle)).toBe('FAILED');
  });

  test('work that fails once is retried and the job settles', async () => {
    const r = jobRequest();
    let attempts = 0;
    w.stub(ledger(r, FREE, { performJobWork: () => { if (++attempts === 1) throw new Error('flaky'); return { actualCost: 60 }; } }));
    const handle = await start(r);
    expect(await within(30_000, handle.result(), r.jobId)).toMatchObject({ status: 'settled', actualCost: 60 });
    expect(w.names(handle.workflowId)).toEqual(['openGrant', 'performJobWork', 'performJobWork', 'settleGrant']);
  });

  test('a settlement the ledger refuses for good compensates (refund, release) and closes the job failed', async () => {
    const r = jobRequest();
    w.stub(ledger(r, GATE, { settleGrant: () => { throw refusal('invalid_state', 'pool stripe gone'); } }));
    const handle = await start(r);
    await handle.executeUpdate(jobPaymentUpdate);
    expect(await within(30_000, handle.result(), r.jobId)).toMatchObject({ status: 'failed', reason: 'settlement_refused', failure: 'settlement refused: pool stripe gone' });
    expect(w.names(handle.workflowId)).toEqual(['openGrant', 'payForGrant', 'performJobWork', 'settleGrant', ...COMPENSATE_PAID]);
  });

  test("the payer's cancel while it waits for the payment: compensated, closed cancelled by the payer, the run completes", async () => {
    const r = jobRequest();
    w.stub(ledger(r, PARTIAL));
    const handle = await start(r);
    await handle.executeUpdate(jobDecidedUpdate);
    await handle.signal(cancelJobSignal, { by: 'alice', reason: 'changed my mind' });
    expect(await within(30_000, handle.result(), r.jobId)).toMatchObject({ status: 'cancelled', closedBy: 'alice', reason: 'cancelled', failure: 'cancelled by alice: changed my mind' });
    expect(w.names(handle.workflowId)).toEqual(['openGrant', ...COMPENSATE_PAID]);
  });

  test("the payer's cancel while the paid work runs: the work is abandoned, the payment refunded, the reservation released", async () => {
    const r = jobRequest();
    const held = gate();
    w.stub(ledger(r, PARTIAL, { performJobWork: async () => { await heldUntil(held.opened); return { actualCost: 70 }; } }));
    const handle = await start(r, w.plain);
    await handle.executeUpdate(jobPaymentUpdate);
    await until(() => w.names(handle.workflowId).includes('performJobWork'), 'the work');
    await handle.signal(cancelJobSignal, { by: 'admin' });
    expect(await within(30_000, handle.result(), r.jobId)).toMatchObject({ status: 'cancelled', closedBy: 'admin', reason: 'cancelled', failure: 'cancelled by admin' });
    held.open();
    expect(w.names(handle.workflowId)).toEqual(['openGrant', 'payForGrant', 'performJobWork', ...COMPENSATE_PAID]);
  });

  test('cancelled through Temporal while a free job works: the reservation released, closed by the operator, the run ends cancelled', async () => {
    const r = jobRequest();
    const held = gate();
    w.stub(ledger(r, FREE, { performJobWork: async () => { await heldUntil(held.opened); return { actualCost: 70 }; } }));
    const handle = await start(r, w.plain);
    await until(() => w.names(handle.workflowId).includes('performJobWork'), 'the work');
    await handle.cancel();
    const failure = await within(30_000, failureOf(handle.result()), r.jobId);
    held.open();
    expect(failure.cause).toBeInstanceOf(CancelledFailure);
    const calls = w.calls(handle.workflowId);
    expect(calls.map((c) => c.name)).toEqual(['openGrant', 'performJobWork', 'releaseGrantReservation', 'closeGrant']);
    expect(calls[3]!.args).toEqual([{ jobId: r.jobId, status: 'cancelled', failure: 'cancelled through Temporal', closedBy: 'operator', reason: 'workflow_cancelled' }]);
    expect(await statusOf(handle)).toBe('CANCELLED');
  });

  test('a job its ledger finds over already (its workflow ran before) returns that grant and runs nothing more', async () => {
    const r = jobRequest();
    w.stub(ledger(r, { decision: 'free', status: 'settled', actualCost: 55 }));
    const handle = await start(r);
    expect(await within(30_000, handle.result(), r.jobId)).toMatchObject({ status: 'settled', actualCost: 55 });
    expect(w.names(handle.workflowId)).toEqual(['openGrant']);
  });
});
