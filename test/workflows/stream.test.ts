import type { temporal } from '@temporalio/proto';
import { BILLING_SHARDS_DEFAULT, billingClockWorkflowId, shardOf } from '../../src/domain/billing';
import { streamWorkflowId, type StreamReceipt, type StreamRequest } from '../../src/domain/streams';
import { sluiceErrorFromTemporal } from '../../src/temporal/failures';
import { startStreamWorkflow } from '../../src/services/starts';
import { billingDueSignal, cancelStreamSignal, pauseStreamUpdate, resumeStreamUpdate, streamHaltedSignal, streamViewQuery } from '../../workflows/definitions';
import type { StreamWorkflowOptions } from '../../workflows/stream';
import { within } from '../support/timeSkipping';
import { failureOf, refusal, startStubbedWorkflows, statusOf, uniqueId, type Stubs, type StubbedWorkflows } from './stubs';

/**
 * streamWorkflow (the billing clock's path, which every new run takes) with stubbed
 * ledger steps: opening (tick 1 at open, or failing), waking its shard's clock, then
 * closing on a cancel, a halt from the clock, a Temporal cancellation, or at once when
 * tick 1 reached the cap; pause and resume between.
 */
let w: StubbedWorkflows;
beforeAll(async () => {
  w = await startStubbedWorkflows();
});
afterAll(() => w?.stop());

const OPENED_AT_MS = Date.parse('2024-05-01T00:00:00.000Z');
const requestOf = (over: Partial<StreamRequest> = {}): StreamRequest => ({
  ref: uniqueId('str'), payer: 'alice', payee: 'bob', payerAccountId: 'alice.wallet', payeeAccountId: 'bob.wallet', mode: 'escrow', ratePerTick: 5, maxTotal: 100, tickIntervalMs: 1000, ...over,
});
const receiptOf = (r: StreamRequest, over: Partial<StreamReceipt> = {}): StreamReceipt => ({
  ref: r.ref, status: 'STREAMING', payer: r.payer, payee: r.payee, mode: r.mode, ratePerTick: r.ratePerTick, maxTotal: r.maxTotal,
  ticks: 1, totalPaid: r.ratePerTick, openedAt: new Date(OPENED_AT_MS).toISOString(), ...over,
});
const ledger = (r: StreamRequest, more: Stubs = {}): Stubs => ({
  openStream: () => receiptOf(r),
  closeStream: ({ reason, closedBy }) => receiptOf(r, { status: 'CONFIRMED', ticks: 4, totalPaid: 20, reason, closedBy, closedAt: '2024-05-01T00:00:03.500Z' }),
  pauseStream: () => ({ pausedAtMs: OPENED_AT_MS + 1500, pausedMs: 0 }),
  resumeStream: () => ({ pausedAtMs: null, pausedMs: 2000, paid: 10, ticksBilled: 2, lastTick: 2 }),
  ...more,
});

const open = (r: StreamRequest, options: StreamWorkflowOptions = {}) => startStreamWorkflow(w.client, w.taskQueue, r, options);
const namesOf = (r: StreamRequest) => w.names(streamWorkflowId(r.ref));

/** The billingDue signals the run sent: to which clock, for which due time. */
async function clockWakes(handle: { fetchHistory(): Promise<temporal.api.history.v1.IHistory> }) {
  return ((await handle.fetchHistory()).events ?? []).flatMap((e) => {
    const a = e.signalExternalWorkflowExecutionInitiatedEventAttributes;
    if (a?.signalName !== billingDueSignal.name) return [];
    return [{ clock: a.workflowExecution?.workflowId, dueMs: JSON.parse(Buffer.from(a.input!.payloads![0]!.data!).toString('utf8')) as number }];
  });
}

describe('streamWorkflow', () => {
  test('a first tick that cannot be paid: the open update and the run answer the FAILED receipt, nothing else runs, no clock woken', async () => {
    const r = requestOf();
    const failed = receiptOf(r, { status: 'FAILED', ticks: 0, totalPaid: 0, failure: 'insufficient_funds' });
    w.stub(ledger(r, { openStream: () => failed }));
    const { opened, handle } = await open(r);
    expect(opened).toEqual(failed);
    expect(await within(30_000, handle.result(), r.ref)).toEqual(failed);
    expect(w.calls(handle.workflowId)).toEqual([{ name: 'openStream', args: [r] }]);
    expect(await clockWakes(handle)).toEqual([]);
    expect(await statusOf(handle)).toBe('FAILED');
  });

  test('an opening the ledger refuses for good fails the run with its code', async () => {
    const r = requestOf();
    w.stub(ledger(r, { openStream: () => { throw refusal('subaccount_not_live', 'alice.wallet is eliminated'); } }));
    const refused = await open(r).then(() => undefined, (e: unknown) => e);
    expect(sluiceErrorFromTemporal(refused)).toMatchObject({ code: 'subaccount_not_live' });
    const failure = await within(30_000, failureOf(w.client.workflow.getHandle(streamWorkflowId(r.ref)).result()), r.ref);
    expect(sluiceErrorFromTemporal(failure)).toMatchObject({ code: 'subaccount_not_live' });
    expect(namesOf(r)).toEqual(['openStream']);
  });

  test("opened (tick 1), its payer's shard clock woken for tick 2, cancelled by the payer: closed with who and why", async () => {
    const r = requestOf();
    w.stub(ledger(r));
    const { opened, handle } = await open(r);
    expect(opened).toEqual(receiptOf(r));
    expect(await handle.query(streamViewQuery)).toEqual({ status: 'STREAMING', paid: 5, ticks: 1, lastTick: 1, nextTickAtMs: OPENED_AT_MS + 1000 });
    await handle.signal(cancelStreamSignal, { by: 'alice', reason: 'done' });
    expect(await within(30_000, handle.result(), r.ref)).toMatchObject({ status: 'CONFIRMED', reason: 'cancelled', closedBy: 'alice' });
    const calls = w.calls(handle.workflowId);
    expect(calls.map((c) => c.name)).toEqual(['openStream', 'closeStream']);
    expect(calls[1]!.args).toEqual([{ ref: r.ref, reason: 'cancelled', closedBy: 'alice' }]);
    const clock = billingClockWorkflowId(w.taskQueue, shardOf(r.payerAccountId, BILLING_SHARDS_DEFAULT), BILLING_SHARDS_DEFAULT);
    expect(await clockWakes(handle)).toEqual([{ clock, dueMs: OPENED_AT_MS + 1000 }]);
    expect(await statusOf(handle)).toBe('CONFIRMED');
  });

  test('halted by the clock (the payer ran out): closed with the halt reason by the system', async () => {
    const r = requestOf();
    w.stub(ledger(r));
    const { handle } = await open(r);
    await handle.signal(streamHaltedSignal, { reason: 'insufficient_funds' });
    expect(await within(30_000, handle.result(), r.ref)).toMatchObject({ reason: 'insufficient_funds', closedBy: 'system' });
    expect(w.calls(handle.workflowId).map((c) => [c.name, c.args])).toEqual([
      ['openStream', [r]],
      ['closeStream', [{ ref: r.ref, reason: 'insufficient_funds', closedBy: 'system' }]],
    ]);
  });

  test('tick 1 already reaches the cap: completed at once, no clock woken', async () => {
    const r = requestOf({ ratePerTick: 10, maxTotal: 10 });
    w.stub(ledger(r, { openStream: () => receiptOf(r, { totalPaid: 10 }) }));
    const { handle } = await open(r);
    expect(await within(30_000, handle.result(), r.ref)).toMatchObject({ reason: 'completed', closedBy: 'system' });
    expect(namesOf(r)).toEqual(['openStream', 'closeStream']);
    expect(await clockWakes(handle)).toEqual([]);
  });

  test('paused (no wake while paused), a second pause and a resume-while-running refused, resumed (the clock woken again), paused and cancelled while paused', async () => {
    const r = requestOf();
    const shards = 4;
    let pauses = 0;
    w.stub(ledger(r, { pauseStream: () => ({ pausedAtMs: OPENED_AT_MS + 1500 + 3000 * pauses++, pausedMs: pauses > 1 ? 2000 : 0 }) }));
    const { handle } = await open(r, { billingShards: shards });
    const refusedCode = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => sluiceErrorFromTemporal(e)?.code);
    expect(await refusedCode(handle.executeUpdate(resumeStreamUpdate, { args: [{ by: 'alice' }] }))).toBe('invalid_state');
    expect(await handle.executeUpdate(pauseStreamUpdate, { args: [{ by: 'alice' }] })).toEqual({ status: 'PAUSED', paid: 5, ticks: 1, lastTick: 1, paused: true }); // no next tick while paused
    expect(await refusedCode(handle.executeUpdate(pauseStreamUpdate, { args: [{ by: 'alice' }] }))).toBe('invalid_state');
    expect(await handle.executeUpdate(resumeStreamUpdate, { args: [{ by: 'ops', onBehalfOf: 'alice' }] })).toMatchObject({ status: 'STREAMING', paid: 10, ticks: 2, lastTick: 2 });
    await handle.executeUpdate(pauseStreamUpdate, { args: [{ by: 'alice' }] });
    await handle.signal(cancelStreamSignal, { by: 'bob' });
    expect(await within(30_000, handle.result(), r.ref)).toMatchObject({ reason: 'cancelled', closedBy: 'bob' });
    const calls = w.calls(handle.workflowId);
    expect(calls.map((c) => [c.name, c.args])).toEqual([
      ['openStream', [r]],
      ['pauseStream', [{ ref: r.ref, seq: 1, by: 'alice' }]],
      ['resumeStream', [{ ref: r.ref, seq: 1, by: 'ops', onBehalfOf: 'alice' }]],
      ['pauseStream', [{ ref: r.ref, seq: 2, by: 'alice' }]],
      ['closeStream', [{ ref: r.ref, reason: 'cancelled', closedBy: 'bob' }]],
    ]);
    // woken at open for tick 2, and again at the resume (the clock skips a paused stream), on the 4-shard clock
    const wakes = await clockWakes(handle);
    const clock = billingClockWorkflowId(w.taskQueue, shardOf(r.payerAccountId, shards), shards);
    expect(wakes.map((x) => x.clock)).toEqual([clock, clock]);
    expect(wakes[0]!.dueMs).toBe(OPENED_AT_MS + 1000);
  });

  test('cancelled through Temporal: settled as a cancel by the operator, and the run completes with the receipt', async () => {
    const r = requestOf();
    w.stub(ledger(r));
    const { handle } = await open(r);
    await handle.cancel();
    expect(await within(30_000, handle.result(), r.ref)).toMatchObject({ status: 'CONFIRMED', reason: 'workflow_cancelled', closedBy: 'operator' });
    expect(w.calls(handle.workflowId).map((c) => [c.name, c.args])).toEqual([
      ['openStream', [r]],
      ['closeStream', [{ ref: r.ref, reason: 'workflow_cancelled', closedBy: 'operator' }]],
    ]);
  });
});
