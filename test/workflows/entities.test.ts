import { ApplicationFailure } from '@temporalio/common';
import {
  creationWorkflowId,
  eliminationWorkflowId,
  lifecycleWorkflowId,
  subaccountEventKey,
  webhookWorkflowId,
  type CreationResult,
  type SagaStep,
  type Subaccount,
  type SubaccountEvent,
} from '../../src/domain/entities';
import type { StreamReceipt } from '../../src/domain/streams';
import { subaccountCreationWorkflow, subaccountEliminationWorkflow, subaccountLifecycleWorkflow } from '../../workflows';
import { ELIMINATION_ROUNDS_MAX } from '../../workflows/entities';
import { within } from '../support/timeSkipping';
import { failureOf, gate, heldUntil, refusal, startStubbedWorkflows, statusOf, uniqueId, until, type Stubs, type StubbedWorkflows } from './stubs';

/**
 * The subaccount workflows with stubbed ledger steps: the creation saga's success,
 * its refusals, each step failing with the compensations registered before it run in
 * reverse (and only those), a Temporal cancellation between its steps compensated out
 * of the cancellation's reach, and one arriving while a failed step's compensations run
 * not stopping them; the lifecycle's verdicts; the elimination's rounds.
 */
let w: StubbedWorkflows;
beforeAll(async () => {
  w = await startStubbedWorkflows();
});
afterAll(() => w?.stop());

const HOOK = 'http://hooks.test/sluice';
const DAY_MS = 24 * 60 * 60 * 1000;

const subOf = (entityId: string, status: Subaccount['status'], over: Partial<Subaccount> = {}): Subaccount => ({
  id: `${entityId}/1`, entityId, seq: 1, status, funding: 50, createdAt: '2024-05-01T00:00:00.000Z', ...over,
});
/** The saga's ledger as each step leaves the slot; `activated` is what activation makes of it. */
const ledger = (entityId: string, more: Stubs = {}, activated: Subaccount['status'] = 'active'): Stubs => ({
  allocateSubaccount: () => subOf(entityId, 'pending'),
  holdCollateral: () => subOf(entityId, 'pending'),
  fundSubaccount: () => subOf(entityId, 'pending', { accountId: `${entityId}/1` }),
  activateSubaccount: () => subOf(entityId, activated, { accountId: `${entityId}/1` }),
  releaseCollateral: () => true,
  unfundSubaccount: () => true,
  markSubaccountFailed: ({ step, failure }) => subOf(entityId, 'failed', { failedStep: step, failure }),
  markAllocationFailed: ({ failure }) => subOf(entityId, 'failed', { failedStep: 'allocate', failure }),
  webhookTargets: () => [],
  deliverWebhook: () => ({ statusCode: 204 }),
  ...more,
});

const create = (entityId: string) =>
  w.client.workflow.start(subaccountCreationWorkflow, { workflowId: creationWorkflowId(entityId, 'r1'), taskQueue: w.taskQueue, args: [{ entityId, requestId: 'r1' }] });
const run = async (entityId: string): Promise<CreationResult> => within(30_000, (await create(entityId)).result(), entityId);
const namesOf = (entityId: string) => w.names(creationWorkflowId(entityId, 'r1'));
const FORWARD = ['allocateSubaccount', 'holdCollateral', 'fundSubaccount', 'activateSubaccount'];

describe('subaccountCreationWorkflow', () => {
  test('every step commits: active, announced to each webhook URL (its delivery workflow), nothing compensated, SluiceStatus ACTIVE', async () => {
    const entityId = uniqueId('ent');
    w.stub(ledger(entityId, { webhookTargets: () => [HOOK] }));
    const handle = await create(entityId);
    const result = await within(30_000, handle.result(), entityId);
    expect(result).toEqual({ subaccount: subOf(entityId, 'active', { accountId: `${entityId}/1` }), compensated: [] });
    const calls = w.calls(handle.workflowId);
    expect(calls.map((c) => c.name)).toEqual([...FORWARD, 'webhookTargets']);
    expect(calls.map((c) => c.args)).toEqual([[entityId, 'r1'], [`${entityId}/1`], [`${entityId}/1`], [`${entityId}/1`], [entityId]]);
    expect(await statusOf(handle)).toBe('ACTIVE');
    const delivery = webhookWorkflowId(subaccountEventKey('subaccount.active', `${entityId}/1`));
    expect(await within(30_000, w.client.workflow.getHandle(delivery).result(), delivery)).toEqual({ delivered: [HOOK], failed: [] });
    const [event, url] = w.calls(delivery)[0]!.args as [SubaccountEvent, string];
    expect(url).toBe(HOOK);
    expect(event).toMatchObject({ type: 'subaccount.active', entityId, key: subaccountEventKey('subaccount.active', `${entityId}/1`), subaccount: result.subaccount });
  });

  test('activated into its challenge: announced as such and its lifecycle started, asleep on its challenge period', async () => {
    const entityId = uniqueId('ent');
    const id = `${entityId}/1`;
    w.stub({ ...ledger(entityId, {}, 'challenge'), challengeOf: () => ({ challengeMs: 7 * DAY_MS }) });
    const handle = await create(entityId);
    expect((await within(30_000, handle.result(), entityId)).subaccount).toMatchObject({ id, status: 'challenge' });
    expect(await statusOf(handle)).toBe('CHALLENGE');
    expect(w.names(handle.workflowId)).toEqual([...FORWARD, 'webhookTargets']);
    // the lifecycle (abandoned by the saga) reads its period and sleeps; its verdicts are the lifecycle tests' below
    const lifecycle = w.plain.workflow.getHandle(lifecycleWorkflowId(id));
    await until(async () => ((await lifecycle.fetchHistory()).events ?? []).some((e) => e.timerStartedEventAttributes), 'the challenge timer');
    expect(w.calls(lifecycleWorkflowId(id))).toEqual([{ name: 'challengeOf', args: [id] }]);
    await lifecycle.terminate('the test is over');
  });

  test('an allocation refused (rate limit): the run fails with that code, nothing allocated and nothing to undo, SluiceStatus REFUSED', async () => {
    const entityId = uniqueId('ent');
    w.stub(ledger(entityId, { allocateSubaccount: () => { throw refusal('rate_limited', 'at most 10 an hour'); } }));
    const handle = await create(entityId);
    const failure = await within(30_000, failureOf(handle.result()), entityId);
    expect(failure.cause).toBeInstanceOf(ApplicationFailure);
    expect(failure.cause).toMatchObject({ type: 'rate_limited', message: 'at most 10 an hour', details: [{ failedStep: 'allocate', compensated: [], subaccount: null }] });
    expect(namesOf(entityId)).toEqual(['allocateSubaccount']);
    expect(await statusOf(handle)).toBe('REFUSED');
  });

  test('an allocation that failed otherwise (its reply lost): its slot, allocated after all, is marked failed and announced', async () => {
    const entityId = uniqueId('ent');
    w.stub(ledger(entityId, { allocateSubaccount: () => { throw refusal('injected_fault', 'reply lost'); } }));
    const handle = await create(entityId);
    expect(await within(30_000, handle.result(), entityId)).toEqual({
      subaccount: subOf(entityId, 'failed', { failedStep: 'allocate', failure: 'reply lost' }), failedStep: 'allocate', error: { code: 'injected_fault', message: 'reply lost' }, compensated: ['mark_failed'],
    });
    const calls = w.calls(handle.workflowId);
    expect(calls.map((c) => c.name)).toEqual(['allocateSubaccount', 'markAllocationFailed', 'webhookTargets']);
    expect(calls[1]!.args).toEqual([{ entityId, requestId: 'r1', failure: 'reply lost' }]);
    expect(await statusOf(handle)).toBe('FAILED');
  });

  test('an allocation that failed with no slot to find: the run fails creation_failed', async () => {
    const entityId = uniqueId('ent');
    w.stub(ledger(entityId, { allocateSubaccount: () => { throw refusal('injected_fault', 'reply lost'); }, markAllocationFailed: () => null }));
    const failure = await within(30_000, failureOf(create(entityId).then((h) => h.result())), entityId);
    expect(failure.cause).toMatchObject({ type: 'creation_failed', details: [{ failedStep: 'allocate', compensated: [], subaccount: null }] });
    expect(namesOf(entityId)).toEqual(['allocateSubaccount', 'markAllocationFailed']);
  });

  // each failing step: the compensations registered before it run, last first; one that finds
  // nothing to undo (false) is not reported; the slot is marked failed and announced
  test.each<{ step: SagaStep; failing: keyof Stubs; undone: Partial<Stubs>; compensations: string[]; compensated: string[] }>([
    { step: 'hold_collateral', failing: 'holdCollateral', undone: { releaseCollateral: () => false }, compensations: ['releaseCollateral'], compensated: ['mark_failed'] },
    { step: 'fund', failing: 'fundSubaccount', undone: { unfundSubaccount: () => false }, compensations: ['unfundSubaccount', 'releaseCollateral'], compensated: ['release_collateral', 'mark_failed'] },
    { step: 'activate', failing: 'activateSubaccount', undone: {}, compensations: ['unfundSubaccount', 'releaseCollateral'], compensated: ['unfund', 'release_collateral', 'mark_failed'] },
  ])('$step fails for good: $compensations, then mark_failed; reported $compensated', async ({ step, failing, undone, compensations, compensated }) => {
    const entityId = uniqueId('ent');
    w.stub(ledger(entityId, { ...undone, [failing]: () => { throw refusal('injected_fault', `${step} refused`); } }));
    const handle = await create(entityId);
    const result = await within(30_000, handle.result(), entityId);
    expect(result).toEqual({ subaccount: subOf(entityId, 'failed', { failedStep: step, failure: `${step} refused` }), failedStep: step, error: { code: 'injected_fault', message: `${step} refused` }, compensated });
    const calls = w.calls(handle.workflowId);
    const ran = FORWARD.slice(0, FORWARD.indexOf(failing) + 1);
    expect(calls.map((c) => c.name)).toEqual([...ran, ...compensations, 'markSubaccountFailed', 'webhookTargets']);
    expect(calls.at(-2)!.args).toEqual([{ id: `${entityId}/1`, step, failure: `${step} refused` }]);
    expect(await statusOf(handle)).toBe('FAILED');
  });

  test('a step that fails once is retried (a durable timer between attempts) and the saga goes on', async () => {
    const entityId = uniqueId('ent');
    let attempts = 0;
    w.stub(ledger(entityId, { fundSubaccount: () => { if (++attempts === 1) throw new Error('connection reset'); return subOf(entityId, 'pending'); } }));
    expect(await run(entityId)).toMatchObject({ subaccount: { status: 'active' }, compensated: [] });
    expect(namesOf(entityId)).toEqual(['allocateSubaccount', 'holdCollateral', 'fundSubaccount', 'fundSubaccount', 'activateSubaccount', 'webhookTargets']);
  });

  test('cancelled through Temporal while a step retries: the step ends, the saga stops before the next, releases the collateral and fails the slot; the run completes', async () => {
    const entityId = uniqueId('ent');
    const workflowId = creationWorkflowId(entityId, 'r1');
    let attempts = 0;
    w.stub(
      ledger(entityId, {
        holdCollateral: async () => {
          if (++attempts > 1) return subOf(entityId, 'pending');
          await w.plain.workflow.getHandle(workflowId).cancel(); // taken once the step has ended
          throw new Error('lock timeout');
        },
      }),
    );
    const handle = await create(entityId);
    expect(await within(30_000, handle.result(), entityId)).toEqual({
      subaccount: subOf(entityId, 'failed', { failedStep: 'fund', failure: 'cancelled through Temporal by an operator' }),
      failedStep: 'fund',
      error: { code: 'workflow_cancelled', message: 'cancelled through Temporal by an operator' },
      compensated: ['release_collateral', 'mark_failed'],
    });
    expect(namesOf(entityId)).toEqual(['allocateSubaccount', 'holdCollateral', 'holdCollateral', 'releaseCollateral', 'markSubaccountFailed', 'webhookTargets']);
    const events = (await handle.fetchHistory()).events ?? [];
    expect(events.some((e) => e.workflowExecutionCancelRequestedEventAttributes)).toBe(true);
    expect(await statusOf(handle)).toBe('FAILED');
  });

  test('cancelled through Temporal while a failed step compensates: every compensation runs to its end, last first, the slot is marked failed and announced; the run completes with the step failure', async () => {
    const entityId = uniqueId('ent');
    const workflowId = creationWorkflowId(entityId, 'r1');
    const held = gate();
    const ended: string[] = [];
    w.stub(
      ledger(entityId, {
        activateSubaccount: () => { throw refusal('injected_fault', 'activate refused'); },
        unfundSubaccount: async () => {
          await heldUntil(held.opened); // the first compensation, held while the cancellation comes in
          ended.push('unfundSubaccount');
          return true;
        },
        releaseCollateral: () => {
          ended.push('releaseCollateral');
          return true;
        },
      }),
    );
    const handle = await w.plain.workflow.start(subaccountCreationWorkflow, { workflowId, taskQueue: w.taskQueue, args: [{ entityId, requestId: 'r1' }] });
    await until(() => w.names(workflowId).includes('unfundSubaccount'), 'the first compensation');
    await handle.cancel();
    // the run has taken the cancellation (a workflow task completed after it) while the compensation is still held
    await until(async () => {
      const events = (await handle.fetchHistory()).events ?? [];
      const at = events.findIndex((e) => e.workflowExecutionCancelRequestedEventAttributes);
      return at >= 0 && events.slice(at).some((e) => e.workflowTaskCompletedEventAttributes);
    }, 'the cancellation taken');
    expect(ended).toEqual([]);
    held.open();
    expect(await within(30_000, handle.result(), entityId)).toEqual({
      subaccount: subOf(entityId, 'failed', { failedStep: 'activate', failure: 'activate refused' }),
      failedStep: 'activate',
      error: { code: 'injected_fault', message: 'activate refused' },
      compensated: ['unfund', 'release_collateral', 'mark_failed'],
    });
    expect(ended).toEqual(['unfundSubaccount', 'releaseCollateral']);
    const calls = w.calls(workflowId);
    expect(calls.map((c) => c.name)).toEqual([...FORWARD, 'unfundSubaccount', 'releaseCollateral', 'markSubaccountFailed', 'webhookTargets']);
    expect(calls.at(-2)!.args).toEqual([{ id: `${entityId}/1`, step: 'activate', failure: 'activate refused' }]);
    const events = (await handle.fetchHistory()).events ?? [];
    expect(events.some((e) => e.workflowExecutionCancelRequestedEventAttributes)).toBe(true);
    expect(events.some((e) => e.activityTaskCancelRequestedEventAttributes)).toBe(false); // no compensation was asked to stop
    expect(await statusOf(handle)).toBe('FAILED');
  });

  test('a request whose slot an earlier run concluded failed: that outcome, nothing run again', async () => {
    const entityId = uniqueId('ent');
    w.stub(ledger(entityId, { allocateSubaccount: () => subOf(entityId, 'failed', { failedStep: 'fund', failure: 'earlier' }) }));
    expect(await run(entityId)).toEqual({
      subaccount: subOf(entityId, 'failed', { failedStep: 'fund', failure: 'earlier' }), failedStep: 'fund', error: { code: 'creation_failed', message: 'earlier' }, compensated: [],
    });
    expect(namesOf(entityId)).toEqual(['allocateSubaccount']);
  });

  test('a request whose slot is found live (steps run again after a lost task): concluded, announced, no step repeated', async () => {
    const entityId = uniqueId('ent');
    w.stub(ledger(entityId, { allocateSubaccount: () => subOf(entityId, 'active') }));
    expect(await run(entityId)).toEqual({ subaccount: subOf(entityId, 'active'), compensated: [] });
    expect(namesOf(entityId)).toEqual(['allocateSubaccount', 'webhookTargets']);
  });
});

describe('subaccountLifecycleWorkflow', () => {
  // a server of its own: the time-skipping server stops skipping once a child abandoned by its
  // parent (the saga's webhook delivery above) completes after that parent, and these tests need
  // it to skip their challenge periods
  let life: StubbedWorkflows;
  beforeAll(async () => {
    life = await startStubbedWorkflows();
  });
  afterAll(() => life?.stop());

  const runLifecycle = async (id: string) => {
    const startedMs = await life.env.currentTimeMs();
    const result = await within(30_000, life.client.workflow.execute(subaccountLifecycleWorkflow, { workflowId: lifecycleWorkflowId(id), taskQueue: life.taskQueue, args: [{ id }] }), id);
    return { result, startedMs };
  };
  const eliminationStubs = (entityId: string, eliminated: Subaccount): Stubs => ({
    beginElimination: () => subOf(entityId, 'eliminating'),
    closeSubaccountStreams: () => [],
    settleElimination: () => ({ subaccount: eliminated, swept: 20, collateralReleased: true, openStreams: [] }),
    webhookTargets: () => [],
  });

  test('a challenge passed: assessed once its period has passed (a week, skipped), promoted and announced; no periodic rules, so it ends', async () => {
    const entityId = uniqueId('ent');
    const id = `${entityId}/1`;
    life.stub({
      challengeOf: () => ({ challengeMs: 7 * DAY_MS }),
      assessSubaccount: () => ({ subaccount: subOf(entityId, 'active'), verdict: 'promoted', assessEveryMs: 0 }),
      webhookTargets: () => [],
    });
    const { result, startedMs } = await runLifecycle(id);
    expect(result).toEqual(subOf(entityId, 'active'));
    const calls = life.calls(lifecycleWorkflowId(id));
    expect(calls.map((c) => c.name)).toEqual(['challengeOf', 'assessSubaccount', 'webhookTargets']);
    const [assessedId, atMs] = calls[1]!.args as [string, number];
    expect(assessedId).toBe(id);
    expect(atMs - startedMs).toBeGreaterThanOrEqual(7 * DAY_MS);
  });

  test('promoted, then kept by a daily assessment, then breached by the next: the elimination child runs and the lifecycle returns its outcome', async () => {
    const entityId = uniqueId('ent');
    const id = `${entityId}/1`;
    const eliminated = subOf(entityId, 'eliminated', { failure: 'rule_breached' });
    const verdicts = ['promoted', 'kept', 'breached'] as const;
    let assessed = 0;
    life.stub({
      ...eliminationStubs(entityId, eliminated),
      challengeOf: () => ({ challengeMs: DAY_MS }),
      assessSubaccount: () => ({ subaccount: subOf(entityId, 'active'), verdict: verdicts[assessed++]!, assessEveryMs: DAY_MS }),
    });
    const { result, startedMs } = await runLifecycle(id);
    expect(result).toEqual(eliminated);
    const calls = life.calls(lifecycleWorkflowId(id));
    expect(calls.map((c) => c.name)).toEqual(['challengeOf', 'assessSubaccount', 'webhookTargets', 'assessSubaccount', 'assessSubaccount']);
    expect((calls[4]!.args[1] as number) - startedMs).toBeGreaterThanOrEqual(3 * DAY_MS);
    const elimination = life.calls(eliminationWorkflowId(id));
    expect(elimination.map((c) => c.name)).toEqual(['beginElimination', 'closeSubaccountStreams', 'settleElimination', 'webhookTargets']);
    expect(elimination[2]!.args).toEqual([{ id, reason: 'rule_breached' }]);
  });

  test('a challenge that breaches a rule: eliminated as challenge_failed, nothing announced by the lifecycle', async () => {
    const entityId = uniqueId('ent');
    const id = `${entityId}/1`;
    const eliminated = subOf(entityId, 'eliminated', { failure: 'challenge_failed' });
    life.stub({
      ...eliminationStubs(entityId, eliminated),
      challengeOf: () => ({ challengeMs: DAY_MS }),
      assessSubaccount: () => ({ subaccount: subOf(entityId, 'challenge'), verdict: 'breached', assessEveryMs: 0 }),
    });
    expect((await runLifecycle(id)).result).toEqual(eliminated);
    expect(life.names(lifecycleWorkflowId(id))).toEqual(['challengeOf', 'assessSubaccount']);
    expect(life.calls(eliminationWorkflowId(id))[2]!.args).toEqual([{ id, reason: 'challenge_failed' }]);
  });
});

describe('subaccountEliminationWorkflow', () => {
  const receipt = (ref: string): StreamReceipt => ({ ref, status: 'CONFIRMED', payer: 'p', payee: 'q', mode: 'escrow', ratePerTick: 1, ticks: 1, totalPaid: 1, openedAt: '2024-05-01T00:00:00.000Z' });

  test('a stream opened as it began is closed in a second round; the receipts of both rounds are returned', async () => {
    const entityId = uniqueId('ent');
    const id = `${entityId}/1`;
    const eliminated = subOf(entityId, 'eliminated');
    let round = 0;
    w.stub({
      beginElimination: () => subOf(entityId, 'eliminating'),
      closeSubaccountStreams: () => [receipt(`s${round + 1}`)],
      settleElimination: () => ({ subaccount: eliminated, swept: 20, collateralReleased: true, openStreams: ++round === 1 ? ['s2'] : [] }),
      webhookTargets: () => [],
    });
    const input = { id, reason: 'requested', by: 'ops' };
    const result = await within(30_000, w.client.workflow.execute(subaccountEliminationWorkflow, { workflowId: eliminationWorkflowId(id), taskQueue: w.taskQueue, args: [input] }), id);
    expect(result).toEqual({ subaccount: eliminated, swept: 20, collateralReleased: true, streams: [receipt('s1'), receipt('s2')] });
    const calls = w.calls(eliminationWorkflowId(id));
    expect(calls.map((c) => c.name)).toEqual(['beginElimination', 'closeSubaccountStreams', 'settleElimination', 'closeSubaccountStreams', 'settleElimination', 'webhookTargets']);
    expect(calls[1]!.args).toEqual([id, 'ops']);
  });

  test(`streams still open after ${ELIMINATION_ROUNDS_MAX} rounds fail it (elimination_stuck): a bug, not a loop`, async () => {
    const entityId = uniqueId('ent');
    const id = `${entityId}/1`;
    w.stub({
      beginElimination: () => subOf(entityId, 'eliminating'),
      closeSubaccountStreams: () => [],
      settleElimination: () => ({ subaccount: subOf(entityId, 'eliminating'), swept: 0, collateralReleased: false, openStreams: ['s'] }),
    });
    const run = w.client.workflow.execute(subaccountEliminationWorkflow, { workflowId: eliminationWorkflowId(id), taskQueue: w.taskQueue, args: [{ id, reason: 'requested', by: 'ops' }] });
    expect((await within(30_000, failureOf(run), id)).cause).toMatchObject({ type: 'elimination_stuck' });
    expect(w.names(eliminationWorkflowId(id))).toEqual(['beginElimination', ...Array(ELIMINATION_ROUNDS_MAX).fill(['closeSubaccountStreams', 'settleElimination']).flat()]);
  });
});
