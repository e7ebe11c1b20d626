import { randomBytes } from 'node:crypto';
import { ApplicationFailure, Context } from '@temporalio/activity';
import { Client, WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Activities } from '../../activities';
import { SA_STATUS } from '../../workflows/searchAttributes';
import { startBundleWorker, startTimeSkippingEnv } from '../support/timeSkipping';

/**
 * The product workflows (the bundle of workflows/) on the time-skipping test server,
 * with every activity replaced by a stub the test sets: no database, no ledger. Each
 * call is recorded with the workflow that made it, so a test asserts the exact
 * sequence of steps and compensations its workflow ran.
 */

/** An activity's stub: the same arguments, a plain or promised result of the same type. */
type Stub<F> = F extends (...args: infer A) => Promise<infer R> ? (...args: A) => R | Promise<R> : never;
export type Stubs = { [K in keyof Activities]?: Stub<Activities[K]> };
export interface Call {
  name: keyof Activities;
  args: unknown[];
}

/**
 * Every activity a workflow can call, by name. Listed rather than read from the real
 * factory, so these tests load no ledger code; the check below fails the typecheck
 * when activities/index.ts gains an activity this list lacks.
 */
const ACTIVITY_NAMES = [
  'settlePayment', 'refundPayment', 'openStream', 'billTick', 'billDue', 'closeStream', 'pauseStream', 'resumeStream',
  'openGrant', 'payForGrant', 'performJobWork', 'settleGrant', 'releaseGrantReservation', 'refundGrantPayment', 'closeGrant',
  'openSession', 'openSessionRequest', 'closeSession',
  'allocateSubaccount', 'holdCollateral', 'fundSubaccount', 'activateSubaccount', 'releaseCollateral', 'unfundSubaccount', 'markAllocationFailed', 'markSubaccountFailed',
  'concludeChallenge', 'assessSubaccount', 'challengeOf', 'beginElimination', 'closeSubaccountStreams', 'settleElimination',
  'webhookTargets', 'reconcileHeldOpen', 'deliverWebhook', 'takeCheckpoints',
] as const satisfies ReadonlyArray<keyof Activities>;
type Unlisted = Exclude<keyof Activities, (typeof ACTIVITY_NAMES)[number]>;
const everyActivityListed: [Unlisted] extends [never] ? true : Unlisted = true;
void everyActivityListed;

export interface StubbedWorkflows {
  env: TestWorkflowEnvironment;
  /** Awaiting a result through it lets the server skip time (timers fire at once). */
  client: Client;
  /** The same server without time skipping: for a test that holds an activity while its workflow goes on. */
  plain: Client;
  taskQueue: string;
  /** The stubs from now on (an activity not stubbed fails for good, naming itself). */
  stub(stubs: Stubs): void;
  /** The calls made by one workflow, oldest first. */
  calls(workflowId: string): Call[];
  /** Their activity names. */
  names(workflowId: string): string[];
  stop(): Promise<void>;
}

export async function startStubbedWorkflows(): Promise<StubbedWorkflows> {
  const env = await startTimeSkippingEnv();
  const taskQueue = `stubbed-${randomBytes(4).toString('hex')}`;
  const recorded = new Map<string, Call[]>();
  let current: Stubs = {};
  const activities = Object.fromEntries(
    ACTIVITY_NAMES.map((name) => [
      name,
      async (...args: unknown[]) => {
        const workflowId = Context.current().info.workflowExecution?.workflowId ?? '';
        recorded.set(workflowId, [...(recorded.get(workflowId) ?? []), { name, args }]);
        const stub = current[name] as ((...a: unknown[]) => unknown) | undefined;
        if (!stub) throw ApplicationFailure.create({ type: 'not_stubbed', message: `activity ${name} is not stubbed`, nonRetryable: true });
        return stub(...args);
      },
    ]),
  );
  const worker = await startBundleWorker(env, taskQueue, activities);
  const plain = new Client({ connection: env.connection, namespace: env.namespace ?? 'default' });
  return {
    env,
    client: env.client,
    plain,
    taskQueue,
    stub(stubs) {
      current = stubs;
    },
    calls: (workflowId) => recorded.get(workflowId) ?? [],
    names: (workflowId) => (recorded.get(workflowId) ?? []).map((c) => c.name),
    async stop() {
      await worker.stop();
      await env.teardown();
    },
  };
}

/** A caller's error as the real activities throw it (activities/index.ts): final, its type the error code. */
export const refusal = (type: string, message = type, details?: unknown) => ApplicationFailure.create({ type, message, nonRetryable: true, details: details === undefined ? [] : [details] });

/** A workflow id no other test of the run uses. */
export const uniqueId = (prefix: string) => `${prefix}-${randomBytes(4).toString('hex')}`;

/** The failure a run ended with (its cause: the ApplicationFailure or CancelledFailure the workflow threw). */
export async function failureOf(result: Promise<unknown>): Promise<WorkflowFailedError> {
  const outcome = await result.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
  if (!('error' in outcome)) throw new Error(`expected the run to fail, it returned ${JSON.stringify(outcome.value)}`);
  if (!(outcome.error instanceof WorkflowFailedError)) throw outcome.error;
  return outcome.error;
}

/** The SluiceStatus search attribute a run set last. */
export const statusOf = async (handle: WorkflowHandle) => (await handle.describe()).typedSearchAttributes.get(SA_STATUS);

/** A promise the test settles: a stub waits on it to hold its workflow at a step. */
export function gate<T = void>() {
  let open!: (value: T) => void;
  const opened = new Promise<T>((resolve) => {
    open = resolve;
  });
  return { open, opened };
}

/** Waits for a gate from inside a stub, heartbeating (a ledger step's heartbeat timeout is 3 s), so the held step is not timed out and retried. */
export async function heldUntil(opened: Promise<unknown>): Promise<void> {
  const context = Context.current();
  const timer = setInterval(() => context.heartbeat(), 300);
  try {
    await opened;
  } finally {
    clearInterval(timer);
  }
}

/** Polls (real time) until `done()` holds, for a state the workflow reaches without a result to await. */
export async function until(done: () => boolean | Promise<boolean>, what: string, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
