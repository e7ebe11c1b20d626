import { ApplicationFailure, CancellationScope, CancelledFailure, condition, isCancellation, patched, proxyActivities, setHandler, upsertSearchAttributes } from '@temporalio/workflow';
import type { Activities } from '../activities';
import { utcDay, type GrantView, type JobRequest } from '../src/domain/grants';
import { SA_STATUS } from './searchAttributes';
import { OPERATOR } from '../src/domain/streams';
import { cancelJobSignal, jobDecidedUpdate, jobPaymentUpdate, jobViewQuery, type CancelJob } from './definitions';
import { isFinalRefusal } from './failures';
import { GRANT_WORK_OPTIONS, LEDGER_STEP_OPTIONS, WORK_ATTEMPTS_MAX } from './ledgerTimeouts';
import { Saga } from './saga';

// Ledger steps are idempotent transactions keyed by the job id: retry until they commit.
const { openGrant, payForGrant, settleGrant, releaseGrantReservation, refundGrantPayment, closeGrant } = proxyActivities<Activities>(LEDGER_STEP_OPTIONS);

/** Attempts of the work before the job fails and compensates. */
export { WORK_ATTEMPTS_MAX };
const { performJobWork } = proxyActivities<Activities>(GRANT_WORK_OPTIONS);

/**
 * Patch: a settlement the ledger refuses for good fails the job and compensates it
 * (refund, release, close `failed`) instead of failing the run with the pool
 * reservation and the payment still held. Runs before it took the old path.
 */
export const SETTLE_REFUSED_COMPENSATES_PATCH = 'job-settle-refused-compensates';

/**
 * A grant job (workflow id `job-<jobId>`, DESIGN §5). Decide; a `free` job is
 * reserved at once (pool hold + budget, one transaction). A `partial` or `gate` job
 * waits for its payment (an update) until the payment timeout or a cancel; the
 * payment re-grants what is left then and reserves it. Then the work runs and the job
 * settles against its actual cost. If the work fails, or the job is cancelled at any
 * point before it settles (the API's cancel signal, or a Temporal cancellation from
 * the UI or CLI), the compensations run in reverse: refund the payment, release the
 * reservation (which gives the budget back).
 *
 * Every ledger step runs in a non-cancellable scope: a cancelled activity stops being
 * awaited but may still commit, so a cancel must never race a reservation, a payment
 * or a compensation. Only the waits and the work are cancellable.
 * The day whose budget a job uses is the workflow's own clock's UTC day.
 */
export async function grantJobWorkflow(request: JobRequest): Promise<GrantView> {
  let grant: GrantView | undefined;
  let cancel: CancelJob | undefined;
  let paying: Promise<GrantView> | undefined;
  /** Set once the job stops taking payments (paid, timed out or cancelled). */
  let closing = false;
  const ledger = <T>(step: () => Promise<T>) => CancellationScope.nonCancellable(step);
  // the payment wait and the work; the cancel signal cancels it, as a Temporal cancellation does
  const cancellable = new CancellationScope();

  setHandler(jobViewQuery, () => grant);
  setHandler(jobDecidedUpdate, async () => {
    await condition(() => grant !== undefined);
    return grant!;
  });
  setHandler(cancelJobSignal, (c) => {
    cancel ??= c;
    cancellable.cancel();
  });
  setHandler(
    jobPaymentUpdate,
    async () => {
      await condition(() => grant !== undefined);
      if (grant!.status !== 'awaiting_payment') return grant!; // paid already: the same grant, nothing moves
      // one payment at a time; a failed one (insufficient funds) leaves the job waiting
      paying ??= ledger(() => payForGrant(request.jobId, utcDay(Date.now())))
        .then((paid) => (grant = paid))
        .finally(() => {
          paying = undefined;
        });
      return paying;
    },
    {
      validator: () => {
        if (grant?.decision === 'free') throw ApplicationFailure.create({ type: 'job_conflict', message: `job ${request.jobId} is free: it takes no payment` });
        if (closing && grant?.status === 'awaiting_payment') {
          throw ApplicationFailure.create({ type: 'job_conflict', message: `job ${request.jobId} is cancelled: it takes no payment` });
        }
      },
    },
  );
  const setStatus = (g: GrantView) => {
    grant = g;
    upsertSearchAttributes([{ key: SA_STATUS, value: g.status.toUpperCase() }]);
    return g;
  };

  const saga = new Saga();
  saga.add('release_reservation', () => releaseGrantReservation(request.jobId));
  setStatus(await ledger(() => openGrant(request, utcDay(Date.now()))));
  if (grant!.status !== 'reserved' && grant!.status !== 'awaiting_payment') return grant!; // a job already over (its workflow ran before)
  // before the payment, which the payment update makes
  if (grant!.status === 'awaiting_payment') saga.add('refund_payment', () => refundGrantPayment(request.jobId));

  let outcome: { actualCost: number } | { status: 'cancelled' | 'failed'; failure: string; closedBy: string; reason: string };
  try {
    outcome = await cancellable.run(async () => {
      if (grant!.status === 'awaiting_payment') {
        await condition(() => grant!.status !== 'awaiting_payment', request.paymentTimeoutMs);
        closing = true;
        await condition(() => paying === undefined); // a payment in flight at the timeout still counts
        if (grant!.status === 'awaiting_payment') return { status: 'cancelled', failure: `no payment within ${request.paymentTimeoutMs} ms`, closedBy: 'system', reason: 'payment_timeout' };
        setStatus(grant!);
      }
      closing = true;
      return performJobWork(request);
    });
  } catch (error) {
    if (!isCancellation(error)) {
      outcome = { status: 'failed', failure: error instanceof Error ? (error.cause instanceof Error ? error.cause.message : error.message) : String(error), closedBy: 'system', reason: 'work_failed' };
    } else if (cancel) {
      outcome = { status: 'cancelled', failure: `cancelled by ${cancel.by}${cancel.reason ? `: ${cancel.reason}` : ''}`, closedBy: cancel.by, reason: 'cancelled' };
    } else {
      outcome = { status: 'cancelled', failure: 'cancelled through Temporal', closedBy: OPERATOR, reason: 'workflow_cancelled' };
    }
  }
  if ('actualCost' in outcome) {
    const { actualCost } = outcome;
    try {
      return setStatus(await ledger(() => settleGrant(request.jobId, actualCost)));
    } catch (error) {
      if (!isFinalRefusal(error) || !patched(SETTLE_REFUSED_COMPENSATES_PATCH)) throw error;
      outcome = { status: 'failed', failure: `settlement refused: ${error instanceof Error && error.cause instanceof Error ? error.cause.message : String(error)}`, closedBy: 'system', reason: 'settlement_refused' };
    }
  }
  const { status, failure, closedBy, reason } = outcome;
  const closed = await ledger(async () => {
    closing = true;
    await condition(() => paying === undefined); // compensate what a payment in flight commits, too
    await saga.compensate();
    return setStatus(await closeGrant({ jobId: request.jobId, status, failure, closedBy, reason }));
  });
  // a Temporal cancellation ends the workflow as cancelled (the UI shows it so), once compensated
  if (status === 'cancelled' && CancellationScope.current().consideredCancelled) throw new CancelledFailure(failure);
  return closed;
}
