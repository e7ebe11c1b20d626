/**
 * The bench's baseline: a stream with the ledger taken out. Same shape as
 * `streamWorkflow` — tick 1 runs at start and answers an update-with-start, each
 * later tick waits on `condition(cancelled, due − now)` with the same schedule math
 * (`tickDueAtMs`), a tick already due runs at once without a timer (as the stream's
 * `stream-overdue-tick-at-once` patch does, `patched()` call included), then one
 * activity with the same timeouts and retry policy — but the activity is a no-op
 * (no database). A cancel signal wakes it at once; it runs one closing no-op
 * activity (as `closeStream` would) and returns a receipt.
 *
 * Keep it in step with workflows/stream.ts: the ratio is only fair while both loops
 * make the same Temporal calls.
 *
 * Bundled with the real workflows through bench/streams/workflows.ts.
 */
import { condition, defineSignal, defineUpdate, patched, proxyActivities, setHandler } from '@temporalio/workflow';
import { tickDueAtMs } from '../../src/domain/streams';

/** The no-op activities (bench/streams/calls.ts implements them, in memory). */
export interface BareActivities {
  /** Records that tick `n` of `id` ran; returns the time it ran (ms). */
  noopTick(id: string, n: number): Promise<number>;
  /** The close step: returns the time it ran (ms). */
  noopClose(id: string): Promise<number>;
}

// workflows/stream.ts's retry policy, but not (yet) the rest of its LEDGER_STEP_OPTIONS
// (a 60 s start-to-close, a 3 s heartbeat timeout, waiting for a cancellation, since
// 7c05058): the baseline was measured with these, and aligning it is a change of what
// is measured, to be made with a run before and after.
const { noopTick, noopClose } = proxyActivities<BareActivities>({
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '200 milliseconds', backoffCoefficient: 2, maximumInterval: '10 seconds' },
});

export interface BareRequest {
  id: string;
  tickIntervalMs: number;
}

export interface BareReceipt {
  id: string;
  ticks: number;
  openedAtMs: number;
  closedAtMs?: number;
}

export const bareCancelSignal = defineSignal('bareCancel');
/** Completes once tick 1 has run, like `streamOpenedUpdate`. */
export const bareOpenedUpdate = defineUpdate<BareReceipt>('bareOpened');

export const bareWorkflowId = (id: string) => `bare-${id}`;

export async function bareTickWorkflow(request: BareRequest): Promise<BareReceipt> {
  let cancelled = false;
  let openedAtMs: number | undefined;
  let ticks = 0;
  setHandler(bareCancelSignal, () => {
    cancelled = true;
  });
  setHandler(bareOpenedUpdate, async (): Promise<BareReceipt> => {
    await condition(() => openedAtMs !== undefined);
    return { id: request.id, ticks: 1, openedAtMs: openedAtMs! };
  });

  // tick 1 at open; its time is the schedule's origin, as opened_at is for a stream
  const origin = await noopTick(request.id, 1);
  openedAtMs = origin;
  ticks = 1;
  for (let tick = 2; ; tick++) {
    const waitMs = Math.max(0, tickDueAtMs(origin, request.tickIntervalMs, tick) - Date.now());
    const overdue = waitMs === 0 && patched('bench-bare-overdue-tick-at-once');
    if (overdue ? cancelled : await condition(() => cancelled, waitMs)) break;
    await noopTick(request.id, tick);
    ticks++;
  }
  const closedAtMs = await noopClose(request.id);
  return { id: request.id, ticks, openedAtMs: origin, closedAtMs };
}
