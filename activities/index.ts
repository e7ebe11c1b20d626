import { ApplicationFailure, Context } from '@temporalio/activity';
import { DEFAULT_TIER_BUDGETS, type JobRequest } from '../src/domain/grants';
import { closeGrant, openGrant, payForGrant, refundGrantPayment, releaseGrantReservation, settleGrant, type TierBudgets } from '../src/ledger/grants';
import { simulatedWork, type WorkRunner } from '../src/jobs/work';
import { faultFor, type Fault } from '../src/jobs/faults';
import { deliverWebhook } from '../src/webhooks/deliver';
import {
  CREATIONS_PER_HOUR_DEFAULT,
  SUBACCOUNT_CAP_DEFAULT,
  type SagaStep,
  type SubaccountEvent,
} from '../src/domain/entities';
import {
  activateSubaccount,
  allocateSubaccount,
  beginElimination,
  concludeChallenge,
  fundSubaccount,
  getEntity,
  getSubaccount,
  holdCollateral,
  markSubaccountFailed,
  openStreamsOf,
  releaseCollateral,
  settleElimination,
  unfundSubaccount,
  type Limits,
} from '../src/ledger/entities';
import type { Pool } from '../src/db/pool';
import { SluiceError, sluiceErrorFromDatabase } from '../src/domain/errors';
import type { PaymentRequest, RefundRequest } from '../src/domain/payments';
import { refundPayment, settlePayment } from '../src/ledger/payments';
import { billTick, closeStream, openStream } from '../src/ledger/streams';
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
  /** Injected saga faults (SLUICE_FAULTS); none in production. */
  faults?: Fault[];
}

/**
 * A saga step's activity: an injected fault fails it before it does anything, or
 * (`after`) once it has committed, as a step whose reply was lost and whose retries
 * were refused, so the compensations meet a step that did its work.
 */
function sagaStep<A extends unknown[], R>(faults: Fault[], step: SagaStep, entityOf: (...args: A) => string, fn: (...args: A) => Promise<R>) {
  return businessErrorsAreFinal(async (...args: A): Promise<R> => {
    const attempt = Context.current().info.attempt;
    const fault = faultFor(faults, step, entityOf(...args), attempt);
    if (fault?.times === 'after') await fn(...args);
    if (fault) {
      throw ApplicationFailure.create({ type: 'injected_fault', message: `injected fault: ${step} (attempt ${attempt})`, nonRetryable: typeof fault.times === 'string' });
    }
    return fn(...args);
  });
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

export function createActivities({
  pool,
  budgets = DEFAULT_TIER_BUDGETS,
  work = simulatedWork,
  limits = { cap: SUBACCOUNT_CAP_DEFAULT, perHour: CREATIONS_PER_HOUR_DEFAULT },
  faults = [],
}: ActivityDeps) {
  return {
    settlePayment: businessErrorsAreFinal((request: PaymentRequest) => settlePayment(pool, request)),
    refundPayment: businessErrorsAreFinal((request: RefundRequest) => refundPayment(pool, request)),
    openStream: businessErrorsAreFinal((request: StreamRequest) => openStream(pool, request)),
    billTick: businessErrorsAreFinal((ref: string, tick: number) => billTick(pool, ref, tick)),
    closeStream: businessErrorsAreFinal((input: { ref: string; reason: CloseReason; closedBy: string }) => closeStream(pool, input)),
    pauseStream: businessErrorsAreFinal((input: { ref: string; seq: number } & Actor) => pauseStream(pool, input)),
    resumeStream: businessErrorsAreFinal((input: { ref: string; seq: number } & Actor) => resumeStream(pool, input)),
    openGrant: businessErrorsAreFinal((request: JobRequest, day: string) => openGrant(pool, { request, day, budgets })),
    payForGrant: businessErrorsAreFinal((jobId: string, day: string) => payForGrant(pool, { jobId, day, budgets })),
    performJobWork: (job: JobRequest) => work.perform(job, Context.current().info.attempt),
    settleGrant: businessErrorsAreFinal((jobId: string, actualCost: number) => settleGrant(pool, { jobId, actualCost })),
    releaseGrantReservation: businessErrorsAreFinal((jobId: string) => releaseGrantReservation(pool, jobId)),
    refundGrantPayment: businessErrorsAreFinal((jobId: string) => refundGrantPayment(pool, jobId)),
    closeGrant: businessErrorsAreFinal((input: { jobId: string; status: 'cancelled' | 'failed'; failure: string }) => closeGrant(pool, input)),
    allocateSubaccount: sagaStep(faults, 'allocate', (entityId: string, _requestId: string) => entityId, (entityId: string, requestId: string) => allocateSubaccount(pool, { entityId, requestId, limits })),
    holdCollateral: sagaStep(faults, 'hold_collateral', (id: string) => id, (id: string) => holdCollateral(pool, id)),
    fundSubaccount: sagaStep(faults, 'fund', (id: string) => id, (id: string) => fundSubaccount(pool, id)),
    activateSubaccount: sagaStep(faults, 'activate', (id: string) => id, (id: string) => activateSubaccount(pool, id)),
    releaseCollateral: businessErrorsAreFinal((id: string) => releaseCollateral(pool, id)),
    unfundSubaccount: businessErrorsAreFinal((id: string) => unfundSubaccount(pool, id)),
    markSubaccountFailed: businessErrorsAreFinal((input: { id: string; step: string; failure: string }) => markSubaccountFailed(pool, input)),
    concludeChallenge: businessErrorsAreFinal((id: string) => concludeChallenge(pool, id)),
    challengeOf: businessErrorsAreFinal(async (id: string) => {
      const sub = await getSubaccount(pool, id);
      return { challengeMs: (await getEntity(pool, sub.entityId)).challenge_ms };
    }),
    beginElimination: businessErrorsAreFinal((id: string) => beginElimination(pool, id)),
    /** Closes the subaccount's open streams in the ledger (their workflows are signalled by the caller) and returns the receipts. */
    closeSubaccountStreams: businessErrorsAreFinal(async (id: string, closedBy: string) => {
      const sub = await getSubaccount(pool, id);
      if (!sub.accountId) return [];
      // out of the distributions it is paid by, then its own streams closed
      await leaveAllDistributions(pool, sub.accountId, closedBy);
      const refs = await openStreamsOf(pool, sub.accountId);
      return Promise.all(refs.map((ref) => closeStream(pool, { ref, reason: 'cancelled', closedBy })));
    }),
    settleElimination: businessErrorsAreFinal((input: { id: string; reason: string }) => settleElimination(pool, input)),
    webhookTargets: businessErrorsAreFinal(async (entityId: string) => (await getEntity(pool, entityId)).webhook_urls),
    deliverWebhook: (event: SubaccountEvent, url: string) => deliverWebhook(pool, event, url, Context.current().info.attempt, Context.current().log),
  };
}

export type Activities = ReturnType<typeof createActivities>;
