import { condition, continueAsNew, getExternalWorkflowHandle, patched, proxyActivities, setHandler, workflowInfo } from '@temporalio/workflow';
import type { Activities } from '../activities';
import { streamWorkflowId } from '../src/domain/streams';
import { billingDueSignal, streamHaltedSignal } from './definitions';

// A batch is idempotent per tick (keyed stream:<ref>:tick:<n>): retry it until it commits.
// It heartbeats after each transaction, so a worker that dies mid-batch is noticed in
// seconds, not after the whole start-to-close timeout.
const { billDue } = proxyActivities<Activities>({
  startToCloseTimeout: '120 seconds',
  heartbeatTimeout: '3 seconds',
  retry: { initialInterval: '200 milliseconds', backoffCoefficient: 2, maximumInterval: '5 seconds' },
});

export interface BillingClockInput {
  shard: number;
  shards: number;
  /** Ticks one billing transaction writes at most. */
  rowsMax: number;
}

/** How long a clock with nothing due sleeps at most before it looks again (a missed wake costs no more). */
export const BILLING_IDLE_MAX_MS = 60_000;
/** Due ticks whose rows another transaction held (a close, a control): looked at again this soon. */
export const BILLING_LOCKED_RETRY_MS = 20;
/** Below this the next due tick is the billing session's to wait for (in-process), not a durable timer's. */
export const BILLING_TIMER_MIN_MS = 1_000;
/**
 * Patch: a busy shard goes from one billing session to the next without a timer (the
 * session sleeps in-process until the next tick); a timer is only for a quiet shard.
 * On a loaded server a short timer could fire far too late and stall the shard.
 */
export const BILLING_SESSIONS_PATCH = 'billing-clock-sessions';

/** Events before the history is handed to a fresh run (continue-as-new). */
export const BILLING_HISTORY_EVENTS_MAX = 5_000;

/**
 * One shard of the billing clock (workflow id: src/domain/billing.ts
 * billingClockWorkflowId). It sleeps on a durable timer until the earliest due
 * tick of its shard, or until a stream signals an earlier one (`billingDue`: an
 * open, a resume), bills every tick due by then in set-based batches, and tells
 * the workflows of the streams a batch halted to close them. Its history stays
 * bounded: a fresh run takes over past BILLING_HISTORY_EVENTS_MAX events.
 */
export async function billingClockWorkflow(input: BillingClockInput): Promise<void> {
  let wakeAtMs: number | undefined;
  setHandler(billingDueSignal, (dueMs) => {
    wakeAtMs = wakeAtMs === undefined ? dueMs : Math.min(wakeAtMs, dueMs);
  });
  while (workflowInfo().historyLength < BILLING_HISTORY_EVENTS_MAX) {
    wakeAtMs = undefined;
    const result = await billDue(input);
    // each halted stream's workflow closes it; a workflow that is gone is the reconciler's
    await Promise.all(
      result.halted.map((h) =>
        getExternalWorkflowHandle(streamWorkflowId(h.ref))
          .signal(streamHaltedSignal, { reason: h.reason })
          .catch(() => undefined),
      ),
    );
    if (!result.caughtUp) continue;
    if (result.nextDueMs !== null && result.nextDueMs - result.nowMs < BILLING_TIMER_MIN_MS && patched(BILLING_SESSIONS_PATCH)) continue;
    const now = Date.now();
    const nextMs = result.nextDueMs === null ? now + BILLING_IDLE_MAX_MS : Math.max(result.nextDueMs, now + (result.nextDueMs <= now ? BILLING_LOCKED_RETRY_MS : 0));
    let until = Math.min(nextMs, now + BILLING_IDLE_MAX_MS, wakeAtMs ?? Infinity);
    // a stream signalling an earlier due tick moves the alarm forward
    while (until > Date.now()) {
      const target = until;
      if (!(await condition(() => wakeAtMs !== undefined && wakeAtMs < target, target - Date.now()))) break;
      until = wakeAtMs!;
    }
  }
  return continueAsNew<typeof billingClockWorkflow>(input);
}
