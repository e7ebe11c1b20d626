import { DEFAULT_TIER_STREAM_QUOTAS, type TierStreamQuotas } from '../src/domain/streamQuotas';
import { takeCheckpoints } from '../src/ledger/checkpoints';
import { ApplicationFailure, Context } from '@temporalio/activity';
import { DEFAULT_TIER_BUDGETS, type JobRequest } from '../src/domain/grants';
import { closeGrant, type CloseGrant, openGrant, payForGrant, refundGrantPayment, releaseGrantReservation, settleGrant, type TierBudgets } from '../src/ledger/grants';
import { simulatedWork, type WorkRunner } from '../src/jobs/work';
import { closeSession, openSession, openSessionRequest } from '../src/ledger/sessions';
import type { SessionOpening, SessionRequestTerms } from '../src/domain/sessions';
import { faultFor, faultIsFinal, type Fault, type FaultStep } from '../src/domain/faults';
import { deliverWebhook } from '../src/webhooks/deliver';
import {
  CREATIONS_PER_HOUR_DEFAULT,
  SUBACCOUNT_CAP_DEFAULT,
  type SubaccountEvent,
} from '../src/domain/entities';
import {
  activateSubaccount,
  allocateSubaccount,
  assessSubaccount,
  beginElimination,
  concludeChallenge,
  fundSubaccount,
  getEntity,
  getSubaccount,
  holdCollateral,
  markSubaccountFailed,
  streamsToCloseOf,
  markAllocationFailed,
  releaseCollateral,
  settleElimination,
  unfundSubaccount,
  type Limits,
} from '../src/ledger/entities';
import type { Pool } from '../src/db/pool';
import type { Client } from '@temporalio/client';
import { reconcile } from '../src/temporal/reconciler';
import { SluiceError, sluiceErrorFromDatabase } from '../src/domain/errors';
import type { PaymentRequest, RefundRequest } from '../src/domain/payments';
import { refundPayment, settlePayment } from '../src/ledger/payments';
import { billTick, closeStream, openStream } from '../src/ledger/streams';
import { billDueSession, type BillDueOptions } from '../src/ledger/billingClock';
import { leaveAllDistributions, pauseStream, resumeStream, type Actor } from '../src/ledger/streamControls';
import type { CloseReason, StreamRequest } from '../src/domain/streams';

export interface ActivityDeps {
  pool: Pool;
  /** Daily pool budgets per tier (config SLUICE_TIER_BUDGETS). */
  budgets?: TierBudgets;
  /** The jobs' work; default: simulated (src/jobs/work.ts). */
  work?: WorkRunner;
  /** Subaccount cap and hourly creation limit per entity. */
  limits?: Limits;
  /** Open streams and the shortest tick per payer tier (config SLUICE_TIER_STREAM_QUOTAS). */
  streamQuotas?: TierStreamQuotas;
  /** Injected saga faults (SLUICE_FAULTS); none in production. */
  faults?: Fault[];
  /** Temporal, for the reconciler (which asks whether a workflow still runs) and its task queue. */
  temporal?: Client;
  taskQueue?: string;
}

/**
 * An activity that configured faults may fail (src/domain/faults.ts): before it does
 * anything, or (`after`) once it has committed, as a step whose reply was lost.
 * With no fault configured the activity is returned as it is: production never
 * runs this wrapper.
 */
function faulty<A extends [unknown, ...unknown[]], R>(faults: Fault[], step: FaultStep, subjectOf: (first: A[0]) => string, fn: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
  if (!faults.some((f) => f.step === step)) return fn;
  return async (...args: A): Promise<R> => {
    const attempt = Context.current().info.attempt;
    const fault = faultFor(faults, step, subjectOf(args[0]), attempt);
    if (fault?.times === 'after') await fn(...args);
    if (fault) throw ApplicationFailure.create({ type: 'injected_fault', message: `injected fault: ${step} (attempt ${attempt})`, nonRetryable: faultIsFinal(fault) });
    return fn(...args);
  };
}

/**
 * A caller's error (insufficient funds, a taken ref…) will not heal on retry: it
 * crosses Temporal as a non-retryable ApplicationFailure whose type is the error
 * code, so the API can answer with the same 4xx. Anything else (a lost connection,
 * a crash) is thrown as is and retried; every activity is idempotent by key.
 */
function businessErrorsAreFinal<A extends unknown[], R>(fn: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
  return async (...args) => {
    try {
      return await fn(...args);
    } catch (error) {
      // a database guard that refused the caller's request (a stream on an eliminated subaccount) is as final
      const known = error instanceof SluiceError ? error : sluiceErrorFromDatabase(error);
      if (known) {
        throw ApplicationFailure.create({ type: known.code, message: known.message, details: [known.details], nonRetryable: true });
      }
      throw error;
    }
  };
}

/**
 * Heartbeats while `fn` runs (three times per heartbeat timeout, when the workflow
 * set one): a worker that dies mid-work is then noticed within the heartbeat
 * timeout and the work retried, instead of the job standing still until the
 * work's whole start-to-close timeout has passed.
 */
async function whileHeartbeating<T>(fn: () => Promise<T>): Promise<T> {
  const context = Context.current();
  const timeoutMs = context.info.heartbeatTimeoutMs;
  if (!timeoutMs) return fn();
  const timer = setInterval(() => context.heartbeat(), Math.max(100, Math.floor(timeoutMs / 3)));
  try {
    return await fn();
  } finally {
    clearInterval(timer);
  }
}

/** How long one billDue activity keeps billing as ticks come due before it hands back to its clock workflow. */
export const BILLING_SESSION_MS = 10_000;

/**
 * A ledger activity: heartbeats while it runs (the workflows set a heartbeat timeout
 * of a few seconds, so a worker killed mid-transaction is noticed in seconds and the
 * step retried elsewhere, not after its whole start-to-close timeout), and a caller's
 * error is final.
 */
const ledger = <A extends unknown[], R>(fn: (...args: A) => Promise<R>): ((...args: A) => Promise<R>) =>
  businessErrorsAreFinal((...args: A) => whileHeartbeating(() => fn(...args)));

export function createActivities({
  pool,
  budgets = DEFAULT_TIER_BUDGETS,
  work = simulatedWork,
  limits = { cap: SUBACCOUNT_CAP_DEFAULT, perHour: CREATIONS_PER_HOUR_DEFAULT },
  streamQuotas = DEFAULT_TIER_STREAM_QUOTAS,
  faults = [],
  temporal,
  taskQueue,
}: ActivityDeps) {
  /** A ledger step fault injection can name: a caller's error is final, an injected fault as configured. */
  const step = <A extends [unknown, ...unknown[]], R>(name: FaultStep, subjectOf: (first: A[0]) => string, fn: (...args: A) => Promise<R>) =>
    ledger(faulty(faults, name, subjectOf, fn));
  return {
    settlePayment: ledger((request: PaymentRequest) => settlePayment(pool, request)),
    refundPayment: ledger((request: RefundRequest) => refundPayment(pool, request)),
    openStream: ledger((request: StreamRequest) => openStream(pool, request, streamQuotas)),
    billTick: ledger((ref: string, tick: number) => billTick(pool, ref, tick)),
    /** A billing session of a clock's shard: every tick due by now, in set-based batches, and the next ones as they come due (SESSION_MS). */
    billDue: (input: BillDueOptions) => whileHeartbeating(() => billDueSession(pool, { sessionMs: BILLING_SESSION_MS, ...input }, { onRound: () => Context.current().heartbeat() })),
    closeStream: ledger((input: { ref: string; reason: CloseReason; closedBy: string }) => closeStream(pool, input)),
    pauseStream: ledger((input: { ref: string; seq: number } & Actor) => pauseStream(pool, input)),
    resumeStream: ledger((input: { ref: string; seq: number } & Actor) => resumeStream(pool, input)),
    openGrant: step('open_grant', (request: JobRequest) => request.jobId, (request: JobRequest, day: string) => openGrant(pool, { request, day, budgets })),
    payForGrant: step('pay', (jobId: string) => jobId, (jobId: string, day: string) => payForGrant(pool, { jobId, day, budgets })),
    performJobWork: faulty(faults, 'work', (job: JobRequest) => job.jobId, (job: JobRequest) => whileHeartbeating(() => work.perform(job, Context.current().info.attempt))),
    settleGrant: step('settle', (jobId: string) => jobId, (jobId: string, actualCost: number) => settleGrant(pool, { jobId, actualCost })),
    releaseGrantReservation: step('release_reservation', (jobId: string) => jobId, (jobId: string) => releaseGrantReservation(pool, jobId)),
    refundGrantPayment: step('refund_payment', (jobId: string) => jobId, (jobId: string) => refundGrantPayment(pool, jobId)),
    closeGrant: step('close_grant', (input: { jobId: string }) => input.jobId, (input: CloseGrant) => closeGrant(pool, input)),
    /** Sessions (src/ledger/sessions.ts): the funding, a request decided, reserved and paid, the close's refund. */
    openSession: ledger((opening: SessionOpening) => openSession(pool, opening)),
    openSessionRequest: ledger((sessionId: string, terms: SessionRequestTerms, day: string) => openSessionRequest(pool, { sessionId, terms, day, budgets })),
    closeSession: ledger((sessionId: string) => closeSession(pool, sessionId)),
    allocateSubaccount: step('allocate', (entityId: string) => entityId, (entityId: string, requestId: string) => allocateSubaccount(pool, { entityId, requestId, limits })),
    holdCollateral: step('hold_collateral', (id: string) => id, (id: string) => holdCollateral(pool, id)),
    fundSubaccount: step('fund', (id: string) => id, (id: string) => fundSubaccount(pool, id)),
    activateSubaccount: step('activate', (id: string) => id, (id: string) => activateSubaccount(pool, id)),
    releaseCollateral: step('release_collateral', (id: string) => id, (id: string) => releaseCollateral(pool, id)),
    unfundSubaccount: step('unfund', (id: string) => id, (id: string) => unfundSubaccount(pool, id)),
    markAllocationFailed: step('mark_failed', (input: { entityId: string }) => input.entityId, async (input: { entityId: string; requestId: string; failure: string }) =>
      (await markAllocationFailed(pool, input)) ?? null,
    ),
    markSubaccountFailed: step('mark_failed', (input: { id: string }) => input.id, (input: { id: string; step: string; failure: string }) => markSubaccountFailed(pool, input)),
    concludeChallenge: ledger((id: string) => concludeChallenge(pool, id)),
    /** The rules at the end of the challenge and on each periodic assessment, at the workflow's time. */
    assessSubaccount: ledger((id: string, atMs: number) => assessSubaccount(pool, id, atMs)),
    challengeOf: ledger(async (id: string) => {
      const sub = await getSubaccount(pool, id);
      return { challengeMs: (await getEntity(pool, sub.entityId)).challenge_ms };
    }),
    beginElimination: step('begin_elimination', (id: string) => id, (id: string) => beginElimination(pool, id)),
    /** Closes the subaccount's open streams in the ledger (their workflows are signalled by the caller) and returns the receipts. */
    closeSubaccountStreams: step('close_streams', (id: string) => id, async (id: string, closedBy: string) => {
      const sub = await getSubaccount(pool, id);
      if (!sub.accountId) return [];
      // out of the distributions it is paid by, then its own streams closed
      await leaveAllDistributions(pool, sub.accountId, closedBy);
      const refs = await streamsToCloseOf(pool, { id, entityId: sub.entityId, accountId: sub.accountId });
      return Promise.all(refs.map((ref) => closeStream(pool, { ref, reason: 'cancelled', closedBy })));
    }),
    settleElimination: step('settle_elimination', (input: { id: string }) => input.id, (input: { id: string; reason: string }) => settleElimination(pool, input)),
    webhookTargets: ledger(async (entityId: string) => (await getEntity(pool, entityId)).webhook_urls),
    /** One round of the reconciler: settles what the ledger holds open for a workflow no longer running. */
    reconcileHeldOpen: () => {
      if (!temporal || !taskQueue) throw new Error('the reconciler needs a Temporal client and its task queue (ActivityDeps.temporal, taskQueue)');
      return whileHeartbeating(() => reconcile({ pool, temporal, taskQueue }));
    },
    deliverWebhook: (event: SubaccountEvent, url: string) => deliverWebhook(pool, event, url, Context.current().info.attempt, Context.current().log),
    /** A daily round of the debt ledger, every entity's live subaccounts at `at` (idempotent: a retry adds nothing). */
    takeCheckpoints: ledger((at: string) => takeCheckpoints(pool, { at: new Date(at) })),
  };
}

export type Activities = ReturnType<typeof createActivities>;
