import { allHandlersFinished, ApplicationFailure, CancellationScope, condition, isCancellation, proxyActivities, setHandler } from '@temporalio/workflow';
import type { Activities } from '../activities';
import { utcDay, type GrantView, type JobRequest } from '../src/domain/grants';
import { SESSION_REQUESTS_MAX, sameRequestTerms, sessionJobId, type SessionOpening, type SessionRequestTerms, type SessionView } from '../src/domain/sessions';
import { closeSessionUpdate, sessionOpenedUpdate, sessionRequestUpdate } from './definitions';
import { isFinalRefusal } from './failures';
import { GRANT_WORK_OPTIONS, LEDGER_STEP_OPTIONS } from './ledgerTimeouts';
import { Saga } from './saga';

// Ledger steps are idempotent transactions keyed by the session and request ids: retry until they commit.
const { openSession, openSessionRequest, settleGrant, releaseGrantReservation, refundGrantPayment, closeGrant, closeSession } = proxyActivities<Activities>(LEDGER_STEP_OPTIONS);

// a request's work: a job's, with a job's attempts before it fails and compensates
const { performJobWork } = proxyActivities<Activities>(GRANT_WORK_OPTIONS);

/** The failure a ledger refusal crossed Temporal as (its type the error code), for an update to answer with. */
function refusalOf(error: unknown): ApplicationFailure {
  const cause = error instanceof Error ? error.cause : undefined;
  if (cause instanceof ApplicationFailure) return ApplicationFailure.create({ type: cause.type ?? undefined, message: cause.message, details: cause.details as unknown[], nonRetryable: true });
  return ApplicationFailure.create({ type: 'invalid_request', message: error instanceof Error ? error.message : String(error), nonRetryable: true });
}

const messageOf = (error: unknown) => (error instanceof Error ? (error.cause instanceof Error ? error.cause.message : error.message) : String(error));

/**
 * A prepaid session (workflow id `session-<id>`, DESIGN §5). Open: the amount moves
 * from the payer's account into the session's balance. Then each request (an update)
 * runs as a small grant job: decided on its estimate and reserved, the charged part
 * paid from the balance, in one ledger step (a charge the balance cannot pay refuses
 * the request before anything moves); its work; settled on its actual cost. Work that
 * fails compensates in reverse: the payment back to the session, the reservation back
 * to the pool and the budget; the request ends `failed`. Closing (an update, or a
 * Temporal cancellation) refuses new requests, waits for the running ones, refunds
 * what remains and completes the workflow with the receipt.
 *
 * Requests run concurrently; every ledger step runs in a non-cancellable scope (a
 * cancelled step may still commit), so a cancellation only closes the session.
 */
export async function sessionWorkflow(opening: SessionOpening): Promise<SessionView> {
  const { sessionId } = opening;
  const ledger = <T>(step: () => Promise<T>) => CancellationScope.nonCancellable(step);
  let opened: SessionView | undefined;
  let refused: ApplicationFailure | undefined;
  let closing = false;
  let running = 0;
  let closed: Promise<SessionView> | undefined;
  /** Every request taken, by id: a request sent again gets the first one's outcome. */
  const requests = new Map<string, { terms: SessionRequestTerms; outcome: Promise<GrantView> }>();

  const runRequest = (terms: SessionRequestTerms): Promise<GrantView> =>
    ledger(async () => {
      await condition(() => opened !== undefined);
      const jobId = sessionJobId(sessionId, terms.requestId);
      const job: JobRequest = { jobId, payer: opening.payer, payerAccountId: opened!.accountId, estimatedCost: terms.estimatedCost, requestHash: terms.requestHash, work: terms.work, paymentTimeoutMs: 0 };
      // both before the one step that reserves and pays (one transaction)
      const saga = new Saga();
      saga.add('release_reservation', () => releaseGrantReservation(jobId));
      saga.add('refund_payment', () => refundGrantPayment(jobId));
      const reserved = await openSessionRequest(sessionId, terms, utcDay(Date.now()));
      if (reserved.status !== 'reserved') return reserved; // already resolved (sent again after its end)
      let failure: { reason: string; failure: string } | undefined;
      try {
        const { actualCost } = await performJobWork(job);
        try {
          return await settleGrant(jobId, actualCost);
        } catch (error) {
          if (!isFinalRefusal(error)) throw error;
          failure = { reason: 'settlement_refused', failure: `settlement refused: ${messageOf(error)}` };
        }
      } catch (error) {
        if (isCancellation(error)) throw error;
        failure ??= { reason: 'work_failed', failure: messageOf(error) };
      }
      await saga.compensate();
      return closeGrant({ jobId, status: 'failed', failure: failure!.failure, closedBy: 'system', reason: failure!.reason });
    });

  const close = () =>
    (closed ??= ledger(async () => {
      closing = true;
      await condition(() => opened !== undefined && running === 0);
      return closeSession(sessionId);
    }));

  setHandler(sessionOpenedUpdate, async () => {
    await condition(() => opened !== undefined || refused !== undefined);
    if (refused) throw refused;
    return opened!;
  });
  setHandler(
    sessionRequestUpdate,
    async (terms) => {
      const taken = requests.get(terms.requestId);
      if (taken) {
        if (!sameRequestTerms(taken.terms, terms)) {
          throw ApplicationFailure.create({ type: 'ref_conflict', message: `request ${terms.requestId} of session ${sessionId} was sent with other terms`, nonRetryable: true });
        }
        return taken.outcome;
      }
      running++;
      const outcome = runRequest(terms).finally(() => running--);
      requests.set(terms.requestId, { terms, outcome });
      try {
        return await outcome;
      } catch (error) {
        // refused before anything moved (its charge past the balance): the same request may be sent again
        requests.delete(terms.requestId);
        throw isFinalRefusal(error) ? refusalOf(error) : error;
      }
    },
    {
      validator: (terms) => {
        if (closing && !requests.has(terms.requestId)) {
          throw ApplicationFailure.create({ type: 'invalid_state', message: `session ${sessionId} is closed: it takes no requests`, nonRetryable: true });
        }
        if (requests.size >= SESSION_REQUESTS_MAX && !requests.has(terms.requestId)) {
          throw ApplicationFailure.create({ type: 'limit_exceeded', message: `session ${sessionId} has taken its ${SESSION_REQUESTS_MAX} requests: open another`, nonRetryable: true });
        }
      },
    },
  );
  setHandler(closeSessionUpdate, () => close());

  try {
    opened = await ledger(() => openSession(opening));
  } catch (error) {
    if (!isFinalRefusal(error)) throw error;
    refused = refusalOf(error);
    await condition(allHandlersFinished);
    throw refused;
  }
  try {
    await condition(() => closing);
  } catch (error) {
    // cancelled through Temporal (the UI, the CLI): the session closes, as its close would
    if (!isCancellation(error)) throw error;
  }
  const receipt = await close();
  // the close and any request sent again after it answer before the run completes
  await ledger(() => condition(allHandlersFinished));
  return receipt;
}
