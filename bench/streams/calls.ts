/**
 * How bench:streams drives Temporal, each call timed on this process's clock: stream
 * opens and cancels the way the API makes them, and the bare baseline's starts (with
 * its no-op activities); a call lost to an RPC deadline is made again.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { WithStartWorkflowOperation, WorkflowUpdateRPCTimeoutOrCancelledError } from '@temporalio/client';
import { streamWorkflowId, type StreamReceipt } from '../../src/domain/streams';
import { startStreamWorkflow } from '../../src/services/starts';
import { cancelStreamSignal } from '../../workflows/definitions';
import { mapConcurrently, type Rate, rateOf } from '../support/measure';
import { bareOpenedUpdate, bareTickWorkflow, bareWorkflowId, type BareActivities } from './bareTickWorkflow';
import type { Call } from './histories';
import { streamRequest, type Pair, type Stack } from './stack';

/** The bare workflows' tick interval: after tick 1 they only wait (a day). */
const BARE_INTERVAL_MS = 86_400_000;

/** The bare workflows' no-op activities: every tick 1 that ran, by workflow id. */
const bareTicked = new Set<string>();
export const bareActivities: BareActivities = {
  async noopTick(id) {
    bareTicked.add(id);
    return Date.now();
  },
  async noopClose() {
    return Date.now();
  },
};

/** The rate of calls over `seconds`, and their latencies (sent to answered). */
export const callRate = (calls: Call[], seconds: number): Rate =>
  rateOf(
    calls.map((c) => c.doneAt - c.sentAt),
    seconds,
  );

/** Calls made again after an RPC deadline (an overloaded server), by kind. */
export const retried: Record<string, number> = {};
const CALL_ATTEMPTS = 5;

/**
 * Runs `fn` and records when it was sent and answered (this process's clock, epoch ms).
 * On an overloaded server an update-with-start or a result can end in an RPC deadline
 * ("context deadline exceeded") although the server went on: the call is made again,
 * as a client of the API would with the same ref (update-with-start USE_EXISTING
 * attaches to the run, a signal is idempotent here, a result is read again); the time
 * counted is the client's, retries included.
 */
async function call<T>(workflowId: string, fn: () => Promise<T>, kind = 'call'): Promise<{ value: T; call: Call }> {
  const sentAt = Date.now();
  for (let attempt = 1; ; attempt++) {
    try {
      const value = await fn();
      return { value, call: { workflowId, sentAt, doneAt: Date.now() } };
    } catch (error) {
      const message = error instanceof Error ? `${error.message} ${(error.cause as Error | undefined)?.message ?? ''}` : String(error);
      const deadline = error instanceof WorkflowUpdateRPCTimeoutOrCancelledError || /deadline exceeded|context canceled/i.test(message);
      if (!deadline || attempt >= CALL_ATTEMPTS) throw error;
      retried[kind] = (retried[kind] ?? 0) + 1;
    }
  }
}

/** Bare workflows by update-with-start until their no-op tick 1 answered: the same call shape as an open. */
export async function bareStarts(s: Stack, n: number, tag: string): Promise<{ rate: Rate; calls: Call[] }> {
  const ids = Array.from({ length: n }, (_, i) => `${s.runId}-${tag}-${i}`);
  const t = performance.now();
  const calls = await mapConcurrently(ids, s.o.openConcurrency, async (id) =>
    (
      await call(
        bareWorkflowId(id),
        () =>
          s.client.workflow.executeUpdateWithStart(bareOpenedUpdate, {
            startWorkflowOperation: new WithStartWorkflowOperation(bareTickWorkflow, {
              workflowId: bareWorkflowId(id),
              taskQueue: s.bareQueue,
              args: [{ id, tickIntervalMs: BARE_INTERVAL_MS }],
              workflowIdConflictPolicy: 'USE_EXISTING',
            }),
          }),
        'bare start',
      )
    ).call,
  );
  return { rate: callRate(calls, (performance.now() - t) / 1000), calls };
}

/** Plain workflow.start of a bare workflow (returns once the server has the start): context, not the baseline. */
export async function plainStarts(s: Stack, n: number): Promise<Rate & { allTickedSeconds: number }> {
  const ids = Array.from({ length: n }, (_, i) => `${s.runId}-plain-${i}`);
  const t = performance.now();
  const calls = await mapConcurrently(ids, s.o.openConcurrency, async (id) =>
    (await call(bareWorkflowId(id), () => s.client.workflow.start(bareTickWorkflow, { workflowId: bareWorkflowId(id), taskQueue: s.bareQueue, args: [{ id, tickIntervalMs: BARE_INTERVAL_MS }] }), 'plain start')).call,
  );
  const seconds = (performance.now() - t) / 1000;
  // the worker still runs their tick 1: wait for it, so the next phase starts quiet
  const deadline = performance.now() + 120_000;
  while (ids.some((id) => !bareTicked.has(id)) && performance.now() < deadline) await sleep(50);
  return { ...callRate(calls, seconds), allTickedSeconds: (performance.now() - t) / 1000 };
}

export async function openThroughApi(s: Stack, refs: string[], pairs: Pair[], intervalMs: number): Promise<{ rate: Rate; calls: Call[] }> {
  const t = performance.now();
  const opened = await mapConcurrently(refs, s.o.openConcurrency, (ref, i) =>
    // the way POST /v1/streams opens one (update-with-start, search attributes, the worker's shard count)
    call(streamWorkflowId(ref), async () => (await startStreamWorkflow(s.client, s.taskQueue, streamRequest(pairs[i % pairs.length]!, ref, intervalMs), { billingShards: s.o.shards })).opened, 'open'),
  );
  const seconds = (performance.now() - t) / 1000;
  const bad = opened.filter((r) => r.value.status !== 'STREAMING');
  if (bad.length) throw new Error(`${bad.length} stream(s) did not open: ${JSON.stringify(bad[0]!.value)}`);
  const calls = opened.map((r) => r.call);
  return { rate: callRate(calls, seconds), calls };
}

export async function cancelThroughApi(s: Stack, ref: string, by: string): Promise<{ receipt: StreamReceipt; call: Call }> {
  // src/api/routes/streams.ts cancelOne: signal, then the workflow's result
  const { value, call: c } = await call(
    streamWorkflowId(ref),
    async () => {
      const handle = s.client.workflow.getHandle(streamWorkflowId(ref));
      await handle.signal(cancelStreamSignal, { by, reason: 'bench' }).catch(() => undefined);
      return (await handle.result()) as StreamReceipt;
    },
    'cancel',
  );
  return { receipt: value, call: c };
}
