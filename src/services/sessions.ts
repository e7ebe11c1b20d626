import { notFound, SluiceError } from '../domain/errors';
import type { GrantView, JobWork } from '../domain/grants';
import { sameRequestTerms, sessionWorkflowId, type SessionOpening, type SessionRequestTerms } from '../domain/sessions';
import { findSessionRequest, sameOpening, sessionClosed, sessionIdTaken, sessionPayer, sessionView, requestTermsTaken } from '../ledger/sessions';
import { sluiceErrorFromTemporal } from '../temporal/failures';
import { startSessionWorkflow } from './starts';
import { closeSessionUpdate, sessionRequestUpdate } from '../../workflows/definitions';
import { idOfKey, ownAccount, type Actor } from './actors';
import { StillRunning, withinDeadline } from './deadline';
import { waitMsOf, type ServiceDeps } from './deps';
import { sendUpdate } from './updates';
import { requestHashOf } from './jobs';

/** What a caller asks for to open a session (POST /v1/sessions). */
export interface OpenSessionInput {
  sessionId?: string;
  accountId: string;
  amount: number;
}

/** One request to a session as a caller sends it: the hash defaults to the work's. */
export interface SessionRequestInput {
  requestId: string;
  estimatedCost: number;
  requestHash?: string;
  work: JobWork;
}

/** An update's refusal (the validator's, or the ledger's through an activity) as the caller's error it is. */
const asCallerError = (error: unknown) => (error instanceof StillRunning ? error : (sluiceErrorFromTemporal(error) ?? error));

/**
 * Sessions (DESIGN §5): open one with a prepaid balance, send it requests (each
 * decided on its estimate, its free part reserved on the pool, its charge paid from
 * the balance, worked, settled on its actual cost), close it for what remains.
 */
export function sessionService(deps: ServiceDeps) {
  const { pool, temporal, taskQueue } = deps;
  const waitMs = waitMsOf(deps);

  const stillRunning = (sessionId: string) => () => new StillRunning(`/v1/sessions/${sessionId}`, { sessionId, workflowId: sessionWorkflowId(sessionId) });

  /** A session is its payer's (and the admin's) to see and act on; another party's is not found, as a missing one. */
  const visibleSession = async (actor: Actor, sessionId: string) => {
    const payer = await sessionPayer(pool, sessionId);
    if (payer === undefined || (actor.kind === 'party' && actor.party !== payer)) throw notFound('session', sessionId);
  };

  /**
   * Opens a session, its amount moved into its balance: the session with its requests,
   * `created` false when the id already names the same session.
   */
  const open = async (actor: Actor, input: OpenSessionInput, idempotencyKey?: string) => {
    const account = await ownAccount(pool, actor, input.accountId);
    if (account.kind !== 'user' && account.kind !== 'entity' && account.kind !== 'subaccount') {
      throw new SluiceError('invalid_request', `a session cannot be funded from the ${account.kind} account`, { account: account.id });
    }
    const sessionId = input.sessionId ?? (idempotencyKey !== undefined ? idOfKey(actor, idempotencyKey) : undefined);
    if (sessionId === undefined) {
      throw new SluiceError('invalid_request', 'give the session a sessionId, or send an Idempotency-Key header: a retried open must find the session it opened, not fund a second one', { param: 'sessionId' });
    }
    const opening: SessionOpening = { sessionId, payer: account.ownerId, payerAccountId: account.id, amountUnits: input.amount };
    if (await sessionPayer(pool, sessionId)) {
      const existing = await sessionView(pool, sessionId, true);
      if (!sameOpening(existing, opening)) throw sessionIdTaken(sessionId);
      return { created: false, session: existing };
    }
    try {
      const opened = await withinDeadline(startSessionWorkflow(temporal, taskQueue, opening), waitMs, stillRunning(sessionId));
      // a concurrent open with this id may have started the workflow: what it funded is its session
      if (!sameOpening(opened, opening)) throw sessionIdTaken(sessionId);
      return { created: true, session: await sessionView(pool, sessionId, true) };
    } catch (error) {
      throw asCallerError(error);
    }
  };

  /** A session: its balance, totals, and its requests with their grants. */
  const view = async (actor: Actor, sessionId: string) => {
    await visibleSession(actor, sessionId);
    return sessionView(pool, sessionId, true);
  };

  /**
   * Sends a request to a session through its workflow: its grant once settled,
   * `created` false when the request id was sent before (with the same terms).
   */
  const request = async (actor: Actor, sessionId: string, input: SessionRequestInput): Promise<{ created: boolean; grant: GrantView }> => {
    await visibleSession(actor, sessionId);
    const { requestId, estimatedCost, work } = input;
    const terms: SessionRequestTerms = { requestId, estimatedCost, work, requestHash: input.requestHash ?? requestHashOf(work) };
    const taken = await findSessionRequest(pool, sessionId, requestId);
    if (taken && !sameRequestTerms(taken, terms)) throw requestTermsTaken(sessionId, requestId);
    // sent again after its end: its grant answers
    if (taken && taken.status !== 'reserved' && taken.status !== 'awaiting_payment') return { created: false, grant: taken };
    if (!taken && (await sessionView(pool, sessionId)).status === 'closed') throw sessionClosed(sessionId);
    try {
      const handle = temporal.workflow.getHandle(sessionWorkflowId(sessionId));
      const grant = await withinDeadline(sendUpdate(() => handle.executeUpdate(sessionRequestUpdate, { args: [terms] }), waitMs, { sessionId, requestId: terms.requestId }), waitMs, stillRunning(sessionId));
      return { created: !taken, grant };
    } catch (error) {
      throw asCallerError(error);
    }
  };

  /** Closes a session through its workflow (closing again changes nothing): the session. */
  const close = async (actor: Actor, sessionId: string) => {
    await visibleSession(actor, sessionId);
    if ((await sessionView(pool, sessionId)).status === 'open') {
      try {
        const handle = temporal.workflow.getHandle(sessionWorkflowId(sessionId));
        await withinDeadline(sendUpdate(() => handle.executeUpdate(closeSessionUpdate), waitMs, { sessionId }), waitMs, stillRunning(sessionId));
      } catch (error) {
        // closed meanwhile (the run completed between our read and the update): the ledger answers
        if ((await sessionView(pool, sessionId)).status !== 'closed') throw asCallerError(error);
      }
    }
    return sessionView(pool, sessionId, true);
  };

  return { open, view, request, close };
}

export type SessionService = ReturnType<typeof sessionService>;
