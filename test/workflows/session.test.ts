import { sessionJobId, sessionWorkflowId, type SessionOpening, type SessionRequestTerms, type SessionView } from '../../src/domain/sessions';
import type { GrantView } from '../../src/domain/grants';
import { sluiceErrorFromTemporal } from '../../src/temporal/failures';
import { startSessionWorkflow } from '../../src/services/starts';
import { closeSessionUpdate, sessionRequestUpdate } from '../../workflows/definitions';
import { WORK_ATTEMPTS_MAX } from '../../workflows/ledgerTimeouts';
import { within } from '../support/timeSkipping';
import { failureOf, gate, heldUntil, refusal, startStubbedWorkflows, uniqueId, until, type Stubs, type StubbedWorkflows } from './stubs';

/**
 * sessionWorkflow with stubbed ledger steps and work: the funding, each request's
 * reserve-work-settle (or its compensations, in reverse), requests refused or sent
 * again, and the close (by update or through Temporal) after the running requests.
 */
let w: StubbedWorkflows;
beforeAll(async () => {
  w = await startStubbedWorkflows();
});
afterAll(() => w?.stop());

const openingOf = (): SessionOpening => ({ sessionId: uniqueId('sess'), payer: 'alice', payerAccountId: 'alice.wallet', amountUnits: 500 });
const viewOf = (o: SessionOpening, over: Partial<SessionView> = {}): SessionView => ({
  sessionId: o.sessionId, payer: o.payer, payerAccountId: o.payerAccountId, accountId: `session:${o.sessionId}`, status: 'open',
  funded: o.amountUnits, balance: o.amountUnits, debited: 0, refunded: 0, createdAt: '2024-05-01T00:00:00.000Z',
  totals: { requests: 0, running: 0, settled: 0, failed: 0, estimated: 0, absorbed: 0, debited: 0, credited: 0, actualCost: 0 }, ...over,
});
const termsOf = (requestId: string, estimatedCost = 40): SessionRequestTerms => ({ requestId, estimatedCost, requestHash: `hash-${requestId}`, work: { description: requestId } });
const grantOf = (o: SessionOpening, t: SessionRequestTerms, over: Partial<GrantView>): GrantView => ({
  jobId: sessionJobId(o.sessionId, t.requestId), payer: o.payer, payerAccountId: `session:${o.sessionId}`, requestHash: t.requestHash, estimatedCost: t.estimatedCost,
  decision: 'partial', tier: 'established', advisoryAbsorb: 20, status: 'reserved', reserved: 20, absorbed: 0, returned: 0, paid: 20, refunded: 0, credited: 0,
  createdAt: '2024-05-01T00:00:00.000Z', sessionId: o.sessionId, requestId: t.requestId, ...over,
});
/** Each stub answers as its ledger step would; a request's grant is found by its job id. */
const ledger = (o: SessionOpening, more: Stubs = {}): Stubs => {
  const terms = new Map<string, SessionRequestTerms>();
  const grant = (jobId: string, over: Partial<GrantView>) => grantOf(o, terms.get(jobId)!, over);
  return {
    openSession: () => viewOf(o),
    openSessionRequest: (_s, t) => {
      terms.set(sessionJobId(o.sessionId, t.requestId), t);
      return grantOf(o, t, {});
    },
    performJobWork: () => ({ actualCost: 35 }),
    settleGrant: (jobId, actualCost) => grant(jobId, { status: 'settled', actualCost, absorbed: 20 }),
    refundGrantPayment: (jobId) => grant(jobId, { refunded: 20 }),
    releaseGrantReservation: (jobId) => grant(jobId, { returned: 20 }),
    closeGrant: ({ jobId, status, failure, reason, closedBy }) => grant(jobId, { status, failure, reason, closedBy }),
    closeSession: () => viewOf(o, { status: 'closed', balance: 0, refunded: o.amountUnits - 15, debited: 15, closedAt: '2024-05-01T00:01:00.000Z' }),
    ...more,
  };
};

const open = (o: SessionOpening) => startSessionWorkflow(w.client, w.taskQueue, o);
const handleOf = (o: SessionOpening) => w.client.workflow.getHandle(sessionWorkflowId(o.sessionId));
const namesOf = (o: SessionOpening) => w.names(sessionWorkflowId(o.sessionId));
const request = (o: SessionOpening, t: SessionRequestTerms) => handleOf(o).executeUpdate(sessionRequestUpdate, { args: [t] });
const codeOf = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => sluiceErrorFromTemporal(e)?.code ?? String(e));
const COMPENSATIONS = ['refundGrantPayment', 'releaseGrantReservation', 'closeGrant'];

describe('sessionWorkflow', () => {
  test('funded, a request reserved, worked and settled, then closed: the close update and the run return the receipt', async () => {
    const o = openingOf();
    w.stub(ledger(o));
    expect(await open(o)).toEqual(viewOf(o));
    const t = termsOf('r1');
    expect(await request(o, t)).toMatchObject({ status: 'settled', actualCost: 35, requestId: 'r1' });
    const receipt = await handleOf(o).executeUpdate(closeSessionUpdate);
    expect(receipt).toMatchObject({ status: 'closed', balance: 0 });
    expect(await within(30_000, handleOf(o).result(), o.sessionId)).toEqual(receipt);
    const calls = w.calls(sessionWorkflowId(o.sessionId));
    expect(calls.map((c) => c.name)).toEqual(['openSession', 'openSessionRequest', 'performJobWork', 'settleGrant', 'closeSession']);
    expect(calls[0]!.args).toEqual([o]);
    expect(calls[1]!.args).toEqual([o.sessionId, t, expect.stringMatching(/^\d{4}-\d{2}-\d{2}$/)]);
    // the request's work is a job paid from the session's balance, with no payment wait
    const jobId = sessionJobId(o.sessionId, 'r1');
    expect(calls[2]!.args).toEqual([{ jobId, payer: 'alice', payerAccountId: `session:${o.sessionId}`, estimatedCost: 40, requestHash: 'hash-r1', work: { description: 'r1' }, paymentTimeoutMs: 0 }]);
    expect(calls[3]!.args).toEqual([jobId, 35]);
    expect(calls[4]!.args).toEqual([o.sessionId]);
  });

  test('a funding the payer cannot pay: the open update and the run fail with the ledger code, nothing else runs', async () => {
    const o = openingOf();
    w.stub(ledger(o, { openSession: () => { throw refusal('insufficient_funds', 'alice.wallet has 3 available, 500 required'); } }));
    expect(await codeOf(open(o))).toBe('insufficient_funds');
    expect(sluiceErrorFromTemporal(await within(30_000, failureOf(handleOf(o).result()), o.sessionId))).toMatchObject({ code: 'insufficient_funds' });
    expect(namesOf(o)).toEqual(['openSession']);
  });

  test(`a request whose work fails ${WORK_ATTEMPTS_MAX} times: the payment back to the session, then the reservation released, the request closed failed`, async () => {
    const o = openingOf();
    w.stub(ledger(o, { performJobWork: () => { throw new Error('model crashed'); } }));
    await open(o);
    expect(await request(o, termsOf('bad'))).toMatchObject({ status: 'failed', reason: 'work_failed', failure: 'model crashed', closedBy: 'system' });
    const calls = w.calls(sessionWorkflowId(o.sessionId));
    expect(calls.map((c) => c.name)).toEqual(['openSession', 'openSessionRequest', ...Array(WORK_ATTEMPTS_MAX).fill('performJobWork'), ...COMPENSATIONS]);
    const jobId = sessionJobId(o.sessionId, 'bad');
    expect(calls.slice(-3).map((c) => c.args)).toEqual([[jobId], [jobId], [{ jobId, status: 'failed', failure: 'model crashed', closedBy: 'system', reason: 'work_failed' }]]);
    await handleOf(o).executeUpdate(closeSessionUpdate);
  });

  test('a settlement the ledger refuses for good compensates the request the same way (settlement_refused)', async () => {
    const o = openingOf();
    w.stub(ledger(o, { settleGrant: () => { throw refusal('invalid_state', 'pool stripe gone'); } }));
    await open(o);
    expect(await request(o, termsOf('r1'))).toMatchObject({ status: 'failed', reason: 'settlement_refused', failure: 'settlement refused: pool stripe gone' });
    expect(namesOf(o)).toEqual(['openSession', 'openSessionRequest', 'performJobWork', 'settleGrant', ...COMPENSATIONS]);
    await handleOf(o).executeUpdate(closeSessionUpdate);
  });

  test('a request the balance cannot pay is refused with the ledger code, nothing to compensate; sent again later it runs', async () => {
    const o = openingOf();
    let refuse = true;
    const base = ledger(o);
    w.stub({ ...base, openSessionRequest: (s, t, day) => { if (refuse) throw refusal('insufficient_funds'); return base.openSessionRequest!(s, t, day); } });
    await open(o);
    expect(await codeOf(request(o, termsOf('big')))).toBe('insufficient_funds');
    refuse = false;
    expect(await request(o, termsOf('big'))).toMatchObject({ status: 'settled' });
    expect(namesOf(o)).toEqual(['openSession', 'openSessionRequest', 'openSessionRequest', 'performJobWork', 'settleGrant']);
    await handleOf(o).executeUpdate(closeSessionUpdate);
  });

  test('a request sent again gets the first outcome without running again; with other terms it is refused (ref_conflict)', async () => {
    const o = openingOf();
    w.stub(ledger(o));
    await open(o);
    const first = await request(o, termsOf('r1'));
    expect(await request(o, termsOf('r1'))).toEqual(first);
    expect(await codeOf(request(o, termsOf('r1', 99)))).toBe('ref_conflict');
    expect(namesOf(o)).toEqual(['openSession', 'openSessionRequest', 'performJobWork', 'settleGrant']);
    await handleOf(o).executeUpdate(closeSessionUpdate);
  });

  test('the close waits for a running request to settle, then refunds; a new request after it is refused (invalid_state)', async () => {
    const o = openingOf();
    const held = gate();
    w.stub(ledger(o, { performJobWork: async () => { await heldUntil(held.opened); return { actualCost: 30 }; } }));
    await open(o);
    const running = request(o, termsOf('slow'));
    await until(() => namesOf(o).includes('performJobWork'), 'the work');
    const closing = handleOf(o).executeUpdate(closeSessionUpdate);
    await until(async () => ((await handleOf(o).fetchHistory()).events ?? []).filter((e) => e.workflowExecutionUpdateAcceptedEventAttributes).length === 3, 'the close accepted');
    expect(await codeOf(request(o, termsOf('late')))).toBe('invalid_state');
    expect(namesOf(o)).not.toContain('closeSession');
    held.open();
    expect(await running).toMatchObject({ status: 'settled', actualCost: 30 });
    expect(await closing).toMatchObject({ status: 'closed' });
    expect(namesOf(o)).toEqual(['openSession', 'openSessionRequest', 'performJobWork', 'settleGrant', 'closeSession']);
  });

  test('cancelled through Temporal: the session closes as its close would, and the run completes with the receipt', async () => {
    const o = openingOf();
    w.stub(ledger(o));
    await open(o);
    await request(o, termsOf('r1'));
    await handleOf(o).cancel();
    expect(await within(30_000, handleOf(o).result(), o.sessionId)).toMatchObject({ status: 'closed', sessionId: o.sessionId });
    expect(namesOf(o)).toEqual(['openSession', 'openSessionRequest', 'performJobWork', 'settleGrant', 'closeSession']);
  });

  test('a request its ledger finds resolved already (sent again after its end) is answered from the ledger, no work', async () => {
    const o = openingOf();
    const base = ledger(o);
    w.stub({ ...base, openSessionRequest: (_s, t) => grantOf(o, t, { status: 'settled', actualCost: 12 }) });
    await open(o);
    expect(await request(o, termsOf('old'))).toMatchObject({ status: 'settled', actualCost: 12 });
    expect(namesOf(o)).toEqual(['openSession', 'openSessionRequest']);
    await handleOf(o).executeUpdate(closeSessionUpdate);
  });
});
