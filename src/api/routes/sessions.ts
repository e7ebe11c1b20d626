import { createHash } from 'node:crypto';
import { z } from 'zod';
import { forbidden, SluiceError } from '../../domain/errors';
import { SESSION_ID_PATTERN, SESSION_REQUEST_ID_PATTERN, SESSION_REQUESTS_MAX, sameRequestTerms, sessionWorkflowId, type SessionOpening, type SessionRequestTerms } from '../../domain/sessions';
import { findSessionRequest, sessionClosed, sessionIdTaken, sessionPayer, sessionView } from '../../ledger/sessions';
import { startSessionWorkflow } from '../../temporal/sessions';
import { sluiceErrorFromTemporal } from '../../temporal/failures';
import { closeSessionUpdate, sessionRequestUpdate } from '../../../workflows/definitions';
import { idOfKey, ownAccount, type Actor } from '../../services/actors';
import { API_WAIT_MS_DEFAULT, StillRunning, withinDeadline } from '../../services/deadline';
import type { Api } from '../app';
import * as S from '../schemas';

const errors = S.WriteErrors;

const SessionId = z.string().regex(SESSION_ID_PATTERN, "1 to 64 letters, digits and _ . - (starting with a letter or digit; no ':')");
const RequestId = z.string().regex(SESSION_REQUEST_ID_PATTERN, "1 to 55 letters, digits and _ . - (starting with a letter or digit; no ':')");
const SessionIdParam = z.object({ id: SessionId });

const Totals = z.object({
  requests: z.number().int(),
  running: z.number().int(),
  settled: z.number().int(),
  failed: z.number().int(),
  estimated: z.number().int().describe("the requests' estimates"),
  absorbed: z.number().int().describe('what the pool absorbed'),
  debited: z.number().int().describe('what the session balance paid, net of what settlement gave back'),
  credited: z.number().int().describe('10% of what was paid, back to the pool'),
  actualCost: z.number().int().describe("the settled requests' actual costs"),
});

const Session = z.object({
  sessionId: z.string(),
  payer: z.string(),
  payerAccountId: z.string(),
  accountId: z.string().describe("the session's balance account (session:<id>)"),
  status: z.enum(['open', 'closed']),
  funded: z.number().int(),
  balance: z.number().int().describe('funded − debited − refunded'),
  debited: z.number().int(),
  refunded: z.number().int().describe("given back to the payer's account at the close"),
  totals: Totals,
  createdAt: z.string(),
  closedAt: z.string().optional(),
  requests: z.array(S.Grant).optional().describe(`its requests oldest first (each a grant: decision, reservation, charge, settlement), at most ${SESSION_REQUESTS_MAX}`),
});

const OpenSessionBody = z.object({
  sessionId: SessionId.optional().describe('the session id (workflow session-<id>): opening it again returns the same session. Required, or an Idempotency-Key header'),
  accountId: S.AccountId.describe("the payer's account: funds the session, receives what remains at the close"),
  amount: S.Units.describe('moved into the session balance at once'),
});

const RequestBody = z.object({
  requestId: RequestId.describe('the request id within the session: sending it again returns the same request'),
  estimatedCost: S.Units.describe('decided free, partial or gate on this, before the work runs'),
  requestHash: z.string().regex(/^[A-Za-z0-9:_-]{1,128}$/).optional().describe('identifies the request (default: sha256 of the work)'),
  work: S.Work,
});

/**
 * Sessions (DESIGN §5): open one with a prepaid balance, send it requests (each
 * decided on its estimate, its free part reserved on the pool, its charge paid from
 * the balance, worked, settled on its actual cost), close it for what remains.
 */
export function sessionRoutes(app: Api) {
  const { pool, temporal, taskQueue } = app.deps;
  const waitMs = app.deps.waitMs ?? API_WAIT_MS_DEFAULT;

  /** A session is its payer's (and the admin's) to see and act on. */
  const visibleSession = async (actor: Actor, sessionId: string) => {
    const payer = await sessionPayer(pool, sessionId);
    if (payer === undefined) throw new SluiceError('not_found', `session ${sessionId} not found`, { session: sessionId });
    if (actor.kind === 'party' && actor.party !== payer) throw forbidden(`session ${sessionId} is not yours`);
  };
  const still = (sessionId: string) => () => new StillRunning(`/v1/sessions/${sessionId}`, { sessionId, workflowId: sessionWorkflowId(sessionId) });
  /** An update's refusal (the validator's, or the ledger's through an activity) as the caller's error it is. */
  const asCallerError = (error: unknown) => {
    if (error instanceof StillRunning) return error;
    return sluiceErrorFromTemporal(error) ?? error;
  };

  app.post('/v1/sessions', {
    schema: {
      tags: ['sessions'],
      summary: "Open a prepaid session (workflow session-<id>): the amount moves from the payer's account into the session's balance before this returns",
      headers: S.IdempotencyHeaders.partial(),
      body: OpenSessionBody,
      response: { 201: Session, 200: Session, 202: S.StillRunning, ...errors },
    },
    handler: async (req, reply) => {
      const account = await ownAccount(pool, req.actor, req.body.accountId);
      if (account.kind !== 'user' && account.kind !== 'entity' && account.kind !== 'subaccount') {
        throw new SluiceError('invalid_request', `a session cannot be funded from the ${account.kind} account`, { account: account.id });
      }
      const key = req.headers['idempotency-key'];
      const sessionId = req.body.sessionId ?? (key !== undefined ? idOfKey(req.actor, key) : undefined);
      if (sessionId === undefined) {
        throw new SluiceError('invalid_request', 'give the session a sessionId, or send an Idempotency-Key header: a retried open must find the session it opened, not fund a second one', { param: 'sessionId' });
      }
      const opening: SessionOpening = { sessionId, payer: account.ownerId, payerAccountId: account.id, amountUnits: req.body.amount };
      const same = (v: { payer: string; payerAccountId: string; funded: number }) => v.payer === opening.payer && v.payerAccountId === opening.payerAccountId && v.funded === opening.amountUnits;
      if (await sessionPayer(pool, sessionId)) {
        const existing = await sessionView(pool, sessionId, true);
        if (!same(existing)) throw sessionIdTaken(sessionId);
        return reply.status(200).send(existing);
      }
      try {
        const opened = await withinDeadline(startSessionWorkflow(temporal, taskQueue, opening), waitMs, still(sessionId));
        // a concurrent open with this id may have started the workflow: what it funded is its session
        if (!same(opened)) throw sessionIdTaken(sessionId);
        return reply.status(201).send(await sessionView(pool, sessionId, true));
      } catch (error) {
        throw asCallerError(error);
      }
    },
  });

  app.get('/v1/sessions/:id', {
    schema: {
      tags: ['sessions'],
      summary: 'A session: its balance (funded − debited − refunded), totals, and its requests with their grants',
      params: SessionIdParam,
      response: { 200: Session, ...S.ReadErrors },
    },
    handler: async (req) => {
      await visibleSession(req.actor, req.params.id);
      return sessionView(pool, req.params.id, true);
    },
  });

  app.post('/v1/sessions/:id/requests', {
    schema: {
      tags: ['sessions'],
      summary:
        'Send a request to a session: decided free, partial or gate on its estimate and its free part reserved before the work runs; worked; settled on its actual cost. A charge past the balance is refused (422) and reserves nothing',
      params: SessionIdParam,
      body: RequestBody,
      response: { 201: S.Grant, 200: S.Grant, 202: S.StillRunning, ...errors },
    },
    handler: async (req, reply) => {
      const sessionId = req.params.id;
      await visibleSession(req.actor, sessionId);
      const { requestId, estimatedCost, work } = req.body;
      const terms: SessionRequestTerms = { requestId, estimatedCost, work, requestHash: req.body.requestHash ?? createHash('sha256').update(JSON.stringify(work)).digest('hex') };
      const taken = await findSessionRequest(pool, sessionId, requestId);
      if (taken && !sameRequestTerms(taken, terms)) {
        throw new SluiceError('ref_conflict', `request ${requestId} of session ${sessionId} was sent with other terms`, { sessionId, requestId });
      }
      // sent again after its end: its grant answers
      if (taken && taken.status !== 'reserved' && taken.status !== 'awaiting_payment') return reply.status(200).send(taken);
      if (!taken && (await sessionView(pool, sessionId)).status === 'closed') throw sessionClosed(sessionId);
      try {
        const handle = temporal.workflow.getHandle(sessionWorkflowId(sessionId));
        const outcome = await withinDeadline(handle.executeUpdate(sessionRequestUpdate, { args: [terms] }), waitMs, still(sessionId));
        return reply.status(taken ? 200 : 201).send(outcome);
      } catch (error) {
        throw asCallerError(error);
      }
    },
  });

  app.post('/v1/sessions/:id/close', {
    schema: {
      tags: ['sessions'],
      summary: "Close a session: new requests are refused, running ones end, what remains goes back to the payer's account; returns the session. Closing again changes nothing",
      params: SessionIdParam,
      response: { 200: Session, 202: S.StillRunning, ...errors },
    },
    handler: async (req) => {
      const sessionId = req.params.id;
      await visibleSession(req.actor, sessionId);
      if ((await sessionView(pool, sessionId)).status === 'open') {
        try {
          const handle = temporal.workflow.getHandle(sessionWorkflowId(sessionId));
          await withinDeadline(handle.executeUpdate(closeSessionUpdate), waitMs, still(sessionId));
        } catch (error) {
          // closed meanwhile (the run completed between our read and the update): the ledger answers
          if ((await sessionView(pool, sessionId)).status !== 'closed') throw asCallerError(error);
        }
      }
      return sessionView(pool, sessionId, true);
    },
  });
}
