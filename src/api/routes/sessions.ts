import { z } from 'zod';
import { SESSION_ID_PATTERN, SESSION_REQUEST_ID_PATTERN, SESSION_REQUESTS_MAX } from '../../domain/sessions';
import { sessionService } from '../../services/sessions';
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
  const sessions = sessionService(app.deps);

  app.post('/v1/sessions', {
    schema: {
      tags: ['sessions'],
      summary: "Open a prepaid session (workflow session-<id>): the amount moves from the payer's account into the session's balance before this returns",
      headers: S.IdempotencyHeaders.partial(),
      body: OpenSessionBody,
      response: { 201: Session, 200: Session, 202: S.StillRunning, ...errors },
    },
    handler: async (req, reply) => {
      const { created, session } = await sessions.open(req.actor, req.body, req.headers['idempotency-key']);
      return reply.status(created ? 201 : 200).send(session);
    },
  });

  app.get('/v1/sessions/:id', {
    schema: {
      tags: ['sessions'],
      summary: 'A session: its balance (funded − debited − refunded), totals, and its requests with their grants',
      params: SessionIdParam,
      response: { 200: Session, ...S.ReadErrors },
    },
    handler: async (req) => sessions.view(req.actor, req.params.id),
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
      const { created, grant } = await sessions.request(req.actor, req.params.id, req.body);
      return reply.status(created ? 201 : 200).send(grant);
    },
  });

  app.post('/v1/sessions/:id/close', {
    schema: {
      tags: ['sessions'],
      summary: "Close a session: new requests are refused, running ones end, what remains goes back to the payer's account; returns the session. Closing again changes nothing",
      params: SessionIdParam,
      response: { 200: Session, 202: S.StillRunning, ...errors },
    },
    handler: async (req) => sessions.close(req.actor, req.params.id),
  });
}
