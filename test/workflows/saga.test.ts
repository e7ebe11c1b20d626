import { randomBytes } from 'node:crypto';
import { ApplicationFailure, Context } from '@temporalio/activity';
import { Client } from '@temporalio/client';
import { CancelledFailure } from '@temporalio/common';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { startTimeSkippingEnv, within } from '../support/timeSkipping';
import { sagaProbe, type ProbeActivities } from './fixtures/sagaProbe';
import { failureOf, until } from './stubs';

/**
 * The saga helper's rules (workflows/saga.ts), in a workflow that runs nothing else
 * (fixtures/sagaProbe.ts): compensations run last first, including the failing step's
 * own (registered before it ran); one that found nothing to undo is not reported;
 * each runs once; a cancellation does not reach them, unless the caller opts out.
 */
let env: TestWorkflowEnvironment;
let worker: Worker;
let running: Promise<void>;
let plain: Client;
const taskQueue = `saga-${randomBytes(4).toString('hex')}`;
const calls = new Map<string, string[]>();
const record = (workflowId: string, call: string) => calls.set(workflowId, [...(calls.get(workflowId) ?? []), call]);
/** Steps named `fail…` fail for good; compensations of steps named `…noop` find nothing to undo. */
const activities: ProbeActivities = {
  async step(name) {
    record(Context.current().info.workflowExecution!.workflowId, `step ${name}`);
    if (name.startsWith('fail')) throw ApplicationFailure.create({ message: `${name} refused`, nonRetryable: true });
  },
  async undo(name) {
    record(Context.current().info.workflowExecution!.workflowId, `undo ${name}`);
    return !name.endsWith('noop');
  },
};

beforeAll(async () => {
  env = await startTimeSkippingEnv();
  worker = await Worker.create({
    connection: env.nativeConnection,
    namespace: env.namespace ?? 'default',
    taskQueue,
    workflowsPath: require.resolve('./fixtures/sagaProbe'),
    activities,
  });
  running = worker.run();
  plain = new Client({ connection: env.connection, namespace: env.namespace ?? 'default' });
});
afterAll(async () => {
  worker?.shutdown();
  await running;
  await env?.teardown();
});

const id = () => `probe-${randomBytes(4).toString('hex')}`;
const probe = (workflowId: string, steps: string[], options: { shielded?: boolean } = {}) =>
  within(30_000, env.client.workflow.execute(sagaProbe, { workflowId, taskQueue, args: [steps, options] }), workflowId);

/** Starts a probe that waits at a `wait` step and cancels it there (time does not skip: the day's timer holds it). */
async function cancelledAtWait(steps: string[], options: { shielded?: boolean } = {}) {
  const workflowId = id();
  const handle = await plain.workflow.start(sagaProbe, { workflowId, taskQueue, args: [steps, options] });
  await until(async () => ((await handle.fetchHistory()).events ?? []).some((e) => e.timerStartedEventAttributes), 'the wait');
  await handle.cancel();
  return { workflowId, handle };
}

describe('Saga', () => {
  test('steps that all succeed compensate nothing', async () => {
    const workflowId = id();
    expect(await probe(workflowId, ['a', 'b'])).toEqual({ ended: 'completed', compensated: [], again: [] });
    expect(calls.get(workflowId)).toEqual(['step a', 'step b']);
  });

  test("a failing step: every registered compensation runs last first, the failing step's own included; each once", async () => {
    const workflowId = id();
    expect(await probe(workflowId, ['a', 'b', 'fail-c'])).toEqual({ ended: 'failed', compensated: ['fail-c', 'b', 'a'], again: [] });
    expect(calls.get(workflowId)).toEqual(['step a', 'step b', 'step fail-c', 'undo fail-c', 'undo b', 'undo a']);
  });

  test('a compensation that found nothing to undo (false) runs but is not reported', async () => {
    const workflowId = id();
    expect(await probe(workflowId, ['a-noop', 'b', 'fail-c-noop'])).toEqual({ ended: 'failed', compensated: ['b'], again: [] });
    expect(calls.get(workflowId)).toEqual(['step a-noop', 'step b', 'step fail-c-noop', 'undo fail-c-noop', 'undo b', 'undo a-noop']);
  });

  test('cancelled mid-saga: the compensations run out of the cancellation\'s reach, last first, and the run completes', async () => {
    const { workflowId, handle } = await cancelledAtWait(['a', 'b', 'wait']);
    expect(await within(30_000, handle.result(), workflowId)).toEqual({ ended: 'cancelled', compensated: ['wait', 'b', 'a'], again: [] });
    expect(calls.get(workflowId)).toEqual(['step a', 'step b', 'undo wait', 'undo b', 'undo a']);
  });

  test('shielded: false leaves them in the cancelled scope: none is even scheduled and the run ends cancelled', async () => {
    const { workflowId, handle } = await cancelledAtWait(['a', 'b', 'wait'], { shielded: false });
    expect((await within(30_000, failureOf(handle.result()), workflowId)).cause).toBeInstanceOf(CancelledFailure);
    expect(calls.get(workflowId)).toEqual(['step a', 'step b']);
  });
});
