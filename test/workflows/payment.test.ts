import type { PaymentReceipt, PaymentRequest, RefundReceipt, RefundRequest } from '../../src/domain/payments';
import { sluiceErrorFromTemporal } from '../../src/temporal/failures';
import { paymentWorkflow, refundWorkflow } from '../../workflows';
import { within } from '../support/timeSkipping';
import { failureOf, gate, heldUntil, refusal, startStubbedWorkflows, statusOf, uniqueId, until, type StubbedWorkflows } from './stubs';

/** paymentWorkflow and refundWorkflow with stubbed activities: one transaction each, its outcome the run's. */
let w: StubbedWorkflows;
beforeAll(async () => {
  w = await startStubbedWorkflows();
});
afterAll(() => w?.stop());

const request = (ref: string): PaymentRequest => ({ ref, payerAccountId: 'alice.wallet', payeeAccountId: 'bob.wallet', amount: 250, memo: 'gpu minutes' });
const receiptOf = (r: PaymentRequest): PaymentReceipt => ({
  ref: r.ref, status: 'CONFIRMED', payer: 'alice', payee: 'bob', payerAccountId: r.payerAccountId, payeeAccountId: r.payeeAccountId,
  amount: r.amount, refunded: 0, transferId: 7, memo: r.memo, paidAt: '2024-05-01T00:00:00.000Z',
});

describe('paymentWorkflow', () => {
  test('settles once and returns the ledger receipt as it is, SluiceStatus CONFIRMED', async () => {
    const workflowId = uniqueId('payment');
    const r = request(workflowId);
    w.stub({ settlePayment: (req) => receiptOf(req) });
    const handle = await w.client.workflow.start(paymentWorkflow, { workflowId, taskQueue: w.taskQueue, args: [r] });
    expect(await within(30_000, handle.result(), workflowId)).toEqual(receiptOf(r));
    expect(w.calls(workflowId)).toEqual([{ name: 'settlePayment', args: [r] }]);
    expect(await statusOf(handle)).toBe('CONFIRMED');
  });

  test('a refused payment fails the run with the ledger code and details, and sets no status', async () => {
    const workflowId = uniqueId('payment');
    w.stub({
      settlePayment: () => {
        throw refusal('insufficient_funds', 'alice.wallet has 10 available, 250 required', { available: 10, required: 250 });
      },
    });
    const handle = await w.client.workflow.start(paymentWorkflow, { workflowId, taskQueue: w.taskQueue, args: [request(workflowId)] });
    const failure = await within(30_000, failureOf(handle.result()), workflowId);
    expect(sluiceErrorFromTemporal(failure)).toMatchObject({ code: 'insufficient_funds', details: { available: 10, required: 250 } });
    expect(w.names(workflowId)).toEqual(['settlePayment']); // final: not retried
    expect(await statusOf(handle)).toBeUndefined();
  });

  test('cancelled through Temporal while its transaction runs: the transaction runs to its end and the run completes with the receipt', async () => {
    const workflowId = uniqueId('payment');
    const r = request(workflowId);
    const held = gate();
    w.stub({
      settlePayment: async (req) => {
        await heldUntil(held.opened);
        return receiptOf(req);
      },
    });
    const handle = await w.plain.workflow.start(paymentWorkflow, { workflowId, taskQueue: w.taskQueue, args: [r] });
    await until(() => w.calls(workflowId).length === 1, 'the settlement');
    await handle.cancel();
    await until(async () => ((await handle.fetchHistory()).events ?? []).some((e) => e.workflowExecutionCancelRequestedEventAttributes), 'the cancel request');
    held.open();
    expect(await within(30_000, handle.result(), workflowId)).toEqual(receiptOf(r));
    const events = (await handle.fetchHistory()).events ?? [];
    expect(events.some((e) => e.activityTaskCancelRequestedEventAttributes)).toBe(false); // the step was never asked to stop
    expect(w.names(workflowId)).toEqual(['settlePayment']);
  });
});

describe('refundWorkflow', () => {
  test('refunds once and returns the ledger receipt', async () => {
    const workflowId = uniqueId('refund');
    const r: RefundRequest = { ref: 'p1', refundKey: workflowId, amount: 100 };
    const receipt: RefundReceipt = { ref: 'p1', refundKey: workflowId, amount: 100, refundedTotal: 100, paymentAmount: 250, transferId: 9, refundedAt: '2024-05-01T00:00:00.000Z' };
    w.stub({ refundPayment: () => receipt });
    expect(await within(30_000, w.client.workflow.execute(refundWorkflow, { workflowId, taskQueue: w.taskQueue, args: [r] }), workflowId)).toEqual(receipt);
    expect(w.calls(workflowId)).toEqual([{ name: 'refundPayment', args: [r] }]);
  });

  test('a refund past what was paid fails the run with the ledger code', async () => {
    const workflowId = uniqueId('refund');
    w.stub({
      refundPayment: () => {
        throw refusal('refund_exceeds_payment', 'at most 150 can be refunded');
      },
    });
    const run = w.client.workflow.execute(refundWorkflow, { workflowId, taskQueue: w.taskQueue, args: [{ ref: 'p1', refundKey: workflowId, amount: 500 }] });
    expect(sluiceErrorFromTemporal(await within(30_000, failureOf(run), workflowId))).toMatchObject({ code: 'refund_exceeds_payment' });
    expect(w.names(workflowId)).toEqual(['refundPayment']);
  });
});
