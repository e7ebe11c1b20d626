import { allHandlersFinished, ApplicationFailure, CancellationScope, condition, isCancellation, continueAsNew, getExternalWorkflowHandle, patched, proxyActivities, setHandler, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import type { Activities } from '../activities';
import { BILLING_SHARDS_DEFAULT, billingClockWorkflowId, shardOf, type HaltReason } from '../src/domain/billing';
import { SA_STATUS } from './searchAttributes';
import { effectiveGraceMs, OPERATOR, tickDueAtMs, type CloseReason, type StreamProgress, type StreamReceipt, type StreamRequest, type TickOutcome } from '../src/domain/streams';
import {
  billingDueSignal,
  cancelStreamSignal,
  streamHaltedSignal,
  pauseStreamUpdate,
  resumeStreamUpdate,
  streamOpenedUpdate,
  streamViewQuery,
  type CancelStream,
  type StreamControlBy,
  type StreamView,
} from './definitions';
import { isFinalRefusal } from './failures';
import { LEDGER_STEP_OPTIONS } from './ledgerTimeouts';

// Billing is one idempotent transaction per tick: retry it until it commits.
const { openStream, billTick, closeStream, pauseStream, resumeStream } = proxyActivities<Activities>(LEDGER_STEP_OPTIONS);


/** Ticks per run before continue-as-new keeps the history bounded. */
export const HISTORY_TICKS_MAX = 500;

/**
 * Patch: a tick that is already due is billed at once, without a timer. Runs that
 * reached an overdue tick before it replay the old path (a 1 ms timer per overdue tick).
 */
export const OVERDUE_TICK_AT_ONCE_PATCH = 'stream-overdue-tick-at-once';

/**
 * Patch: the billing clock (workflows/billingClock.ts) bills the ticks; the stream
 * workflow sleeps without a timer until a cancel, a halt from the clock, or a
 * control. Runs that were already in the per-tick loop replay it and go on with it
 * (the clock and the loop bill the same keys, so a tick is still billed once).
 */
export const BILLING_CLOCK_PATCH = 'stream-billing-clock';
/** Patch: the clock to wake is the payer account's shard (runs before it woke the ref's). */
export const SHARD_BY_PAYER_PATCH = 'stream-billing-shard-by-payer';

/**
 * Patch: a Temporal cancellation (the UI's "Request Cancellation", `temporal workflow
 * cancel`) settles the stream like a cancel, `closedBy: operator`, reason
 * `workflow_cancelled`, and the run completes with the receipt. Runs cancelled before
 * it ended cancelled with the stream still open (the reconciler settles those).
 */
export const OUTSIDE_CANCEL_SETTLES_PATCH = 'stream-outside-cancel-settles';

export interface StreamWorkflowOptions {
  historyTicksMax?: number;
  /** The billing clock's shard count (SLUICE_BILLING_SHARDS): which clock to wake. */
  billingShards?: number;
}

/**
 * A stream (workflow id `stream-<ref>`). Opening bills tick 1; then the billing
 * clock of its shard bills each later tick, exactly once by `stream:<ref>:tick:<n>`,
 * and signals the workflow when it stops billing (maxTotal reached, an unpaid tick,
 * a partition past the grace period, a refused tick): the workflow closes the
 * stream with that reason. A cancel signal from either party wakes it at once; it
 * closes (billing what was already due first), releases the unused escrow and
 * returns the receipt.
 *
 * Pause and resume are updates: the ledger records each (keyed by its number, so a
 * retried activity finds its own), and the loop waits without a timer while paused.
 * Time paused pushes every later tick back, so resuming goes on with the same tick
 * numbers and nothing accrued before the pause is lost.
 */
export async function streamWorkflow(request: StreamRequest, options: StreamWorkflowOptions = {}, carried?: StreamProgress): Promise<StreamReceipt> {
  const historyTicksMax = options.historyTicksMax ?? HISTORY_TICKS_MAX;
  let cancel: CancelStream | undefined;
  let opened: StreamReceipt | undefined;
  let progress: StreamProgress | undefined = carried;
  let status: StreamView['status'] = 'STREAMING';
  // `pausing`/`resuming`: the ledger call is on its way; the other control waits its turn
  let pauseState: 'running' | 'pausing' | 'paused' | 'resuming' = carried?.pausedAtMs != null ? 'paused' : 'running';
  let closing = false;
  let halted: HaltReason | undefined;
  /** A due time to tell the billing clock about (after a resume). */
  let wakeClockAtMs: number | undefined;

  setHandler(cancelStreamSignal, (c) => {
    cancel ??= c;
  });
  setHandler(streamHaltedSignal, (h) => {
    halted ??= h.reason;
  });
  const refuse = (message: string) => {
    throw ApplicationFailure.create({ type: 'invalid_state', message, nonRetryable: true, details: [{ ref: request.ref }] });
  };
  const control = (from: typeof pauseState, via: typeof pauseState, to: typeof pauseState, run: (seq: number, by: StreamControlBy) => Promise<{ pausedAtMs: number | null; pausedMs: number; paid?: number; ticksBilled?: number; lastTick?: number }>, seqOf: (p: StreamProgress) => number) =>
    async (by: StreamControlBy): Promise<StreamView> => {
      pauseState = via;
      try {
        const seq = seqOf(progress!);
        const state = await run(seq, by);
        progress = { ...progress!, pauses: Math.max(progress!.pauses ?? 0, seq), pausedMs: state.pausedMs, pausedAtMs: state.pausedAtMs ?? undefined };
        // billed by the clock: the ledger's totals as of this control (older runs' results carry none)
        if (state.lastTick !== undefined) progress = { ...progress, paid: state.paid!, ticksBilled: state.ticksBilled!, lastTick: Math.max(progress.lastTick, state.lastTick) };
        pauseState = to;
        if (to === 'running') wakeClockAtMs = Date.now();
      } catch (error) {
        pauseState = from;
        throw error;
      }
      return view();
    };
  const controllable = (want: typeof pauseState, what: string) => (_by: StreamControlBy) => {
    if (!progress || status !== 'STREAMING' || closing || cancel || halted) refuse(`stream ${request.ref} is not streaming`);
    if (pauseState === 'pausing' || pauseState === 'resuming') refuse(`stream ${request.ref} is ${pauseState} already`);
    if (pauseState !== want) refuse(`stream ${request.ref} is ${pauseState === 'paused' ? 'already paused' : 'not paused'}: it cannot ${what}`);
  };
  setHandler(pauseStreamUpdate, control('running', 'pausing', 'paused', (seq, by) => pauseStream({ ref: request.ref, seq, ...by }), (p) => (p.pauses ?? 0) + 1), {
    validator: controllable('running', 'pause'),
  });
  setHandler(resumeStreamUpdate, control('paused', 'resuming', 'running', (seq, by) => resumeStream({ ref: request.ref, seq, ...by }), (p) => p.pauses ?? 0), {
    validator: controllable('paused', 'resume'),
  });
  setHandler(streamOpenedUpdate, async (): Promise<StreamReceipt> => {
    await condition(() => opened !== undefined || progress !== undefined);
    if (opened) return opened;
    // a later run (after continue-as-new) answers from what it carried
    const p = progress!;
    return { ref: request.ref, status, payer: request.payer, payee: request.payee, mode: request.mode, ratePerTick: request.ratePerTick,
      maxTotal: request.maxTotal, ticks: p.ticksBilled, totalPaid: p.paid, openedAt: new Date(p.openedAtMs).toISOString() };
  });
  const view = (): StreamView => ({
    status: status === 'STREAMING' && pauseState === 'paused' ? 'PAUSED' : status,
    paid: progress?.paid ?? 0,
    ticks: progress?.ticksBilled ?? 0,
    lastTick: progress?.lastTick ?? 0,
    nextTickAtMs:
      progress && status === 'STREAMING' && pauseState === 'running'
        ? tickDueAtMs(progress.openedAtMs, request.tickIntervalMs, progress.lastTick + 1, progress.pausedMs)
        : undefined,
    ...(pauseState !== 'running' && { paused: pauseState !== 'pausing' }),
  });
  setHandler(streamViewQuery, view);

  try {
    return await run();
  } catch (error) {
    if (!isCancellation(error) || !patched(OUTSIDE_CANCEL_SETTLES_PATCH)) throw error;
    // Cancelled from outside: settle as a cancel would, whatever was in flight (an
    // open or a close may have committed anyway: both are idempotent by ref).
    return CancellationScope.nonCancellable(async () => {
      if (!progress) {
        opened = await openStream(request);
        if (opened.status !== 'STREAMING') return opened;
      }
      return finish('workflow_cancelled', OPERATOR);
    });
  }

  async function run(): Promise<StreamReceipt> {
    if (!progress) {
      opened = await openStream(request);
      if (opened.status !== 'STREAMING') {
        status = opened.status;
        upsertSearchAttributes([{ key: SA_STATUS, value: status }]);
        return opened;
      }
      progress = { lastTick: 1, paid: opened.totalPaid, ticksBilled: opened.ticks, openedAtMs: Date.parse(opened.openedAt) };
      if (request.maxTotal !== undefined && opened.totalPaid >= request.maxTotal) return finish('completed', 'system');
    }

    if (patched(BILLING_CLOCK_PATCH)) return clocked(progress);

    const graceMs = effectiveGraceMs(request);
    for (let ticksThisRun = 0; ; ticksThisRun++) {
      if (ticksThisRun >= historyTicksMax && !cancel) {
        // a signal that arrives during the hand-over is delivered to the next run; a
        // pause or resume on its way finishes here first, and a cancel that came
        // while it did closes this run instead of being left behind
        await condition(allHandlersFinished);
        if (cancel) break;
        return continueAsNew<typeof streamWorkflow>(request, options, progress);
      }
      if (pauseState !== 'running') {
        // paused: no timer, no tick, until resumed or cancelled
        await condition(() => cancel !== undefined || pauseState === 'running');
        if (cancel) break;
      }
      const tick: number = progress.lastTick + 1;
      const waitMs = Math.max(0, tickDueAtMs(progress.openedAtMs, request.tickIntervalMs, tick, progress.pausedMs) - Date.now());
      // A tick already due (the worker was down, a timer fired late) is billed now:
      // condition(fn, 0) would still start a timer, one per overdue tick, and a stream
      // whose timers take longer than its interval would never catch up.
      const overdue = waitMs === 0 && patched(OVERDUE_TICK_AT_ONCE_PATCH);
      if (overdue ? cancel !== undefined : await condition(() => cancel !== undefined || pauseState !== 'running', waitMs)) {
        if (cancel) break;
        continue; // paused while waiting: the tick waits for the resume
      }
      let outcome: TickOutcome;
      try {
        outcome = await billTick(request.ref, tick);
      } catch (error) {
        // a tick the ledger refuses for good (a payee account that can no longer take
        // money): close, so the escrow goes back instead of staying held by a failed run
        if (!isFinalRefusal(error)) throw error;
        return finish('tick_refused', 'system');
      }
      if (outcome.kind === 'paused') {
        // the ledger saw a pause first; its update is on its way (or, at worst, wait a tick and look again)
        await condition(() => cancel !== undefined || pauseState !== 'running', request.tickIntervalMs);
        continue;
      }
      progress = { ...progress, lastTick: tick };
      if (outcome.kind === 'billed') {
        progress = { ...progress, paid: outcome.paid, ticksBilled: outcome.ticksBilled };
        if (outcome.completed) return finish('completed', 'system');
      } else if (outcome.kind === 'insufficient_funds') {
        return finish('insufficient_funds', 'system');
      } else if (outcome.kind === 'skipped') {
        if (graceMs !== undefined && outcome.silentMs > graceMs) return finish('partition', 'system');
      } else {
        break; // closed underneath us: settle and report
      }
    }
    return finish(cancel ? 'cancelled' : 'completed', cancel?.by ?? 'system');
  }

  /** Billed by the clock: wake it for the next tick, then wait for a cancel or a halt, waking it again after each resume. */
  async function clocked(p: StreamProgress): Promise<StreamReceipt> {
    const shards = options.billingShards ?? BILLING_SHARDS_DEFAULT;
    const shard = patched(SHARD_BY_PAYER_PATCH) ? shardOf(request.payerAccountId, shards) : shardOf(request.ref, shards);
    const clock = getExternalWorkflowHandle(billingClockWorkflowId(workflowInfo().taskQueue, shard, shards));
    // a clock that is not running yet is started by the worker and reads the due times from the ledger
    const wake = (dueMs: number) => clock.signal(billingDueSignal, dueMs).catch(() => undefined);
    if (pauseState === 'running') await wake(tickDueAtMs(p.openedAtMs, request.tickIntervalMs, p.lastTick + 1, p.pausedMs));
    for (;;) {
      await condition(() => cancel !== undefined || halted !== undefined || wakeClockAtMs !== undefined);
      if (cancel || halted) break;
      const dueMs = wakeClockAtMs!;
      wakeClockAtMs = undefined;
      await wake(dueMs);
    }
    // a pause or resume on its way finishes before the close
    await condition(allHandlersFinished);
    return halted && !cancel ? finish(halted, 'system') : finish('cancelled', cancel!.by);
  }

  async function finish(reason: CloseReason, closedBy: string): Promise<StreamReceipt> {
    closing = true;
    const receipt = await closeStream({ ref: request.ref, reason, closedBy });
    status = receipt.status;
    if (progress) progress = { ...progress, paid: receipt.totalPaid, ticksBilled: receipt.ticks };
    upsertSearchAttributes([{ key: SA_STATUS, value: receipt.status }]);
    // a pause or resume racing the close ends (refused by the ledger) before the run does
    await condition(allHandlersFinished);
    return receipt;
  }
}
