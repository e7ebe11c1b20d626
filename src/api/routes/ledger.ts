import { z } from 'zod';
import { accountService } from '../../services/accounts';
import { reconcileService } from '../../services/reconcile';
import type { Api } from '../app';
import * as S from '../schemas';

const errors = S.WriteErrors;
const readErrors = S.ReadErrors;

/** Parties, accounts, deposits and withdrawals, transfers, holds and the event tail. */
export function ledgerRoutes(app: Api) {
  const accounts = accountService(app.deps);
  const checks = reconcileService(app.deps);

  app.post('/v1/parties', {
    config: { auth: 'admin' },
    schema: {
      tags: ['parties'],
      summary: 'Register a party and issue its API key (admin)',
      body: z.object({ id: S.PartyId, name: S.PartyName }),
      response: { 201: z.object({ id: z.string(), name: z.string(), apiKey: z.string() }), ...errors },
    },
    handler: async (req, reply) => reply.status(201).send(await accounts.registerParty(req.body)),
  });

  app.post('/v1/accounts', {
    schema: {
      tags: ['accounts'],
      summary: 'Open an account (parties open their own; the admin may name the owner and kind)',
      body: z.object({
        id: S.AccountId.optional(),
        currency: S.Currency.optional(),
        ownerId: S.PartyId.optional(),
        kind: z.enum(['user', 'entity', 'pool', 'escrow']).optional(),
      }),
      response: { 201: S.Account.describe('the account, opened'), 200: S.Account.describe('the account this id already names, on the same terms (a retried creation)'), ...errors },
    },
    handler: async (req, reply) => {
      const { created, account } = await accounts.openAccount(req.actor, req.body);
      return reply.status(created ? 201 : 200).send(account);
    },
  });

  app.get('/v1/accounts', {
    schema: {
      tags: ['accounts'],
      summary: "The caller's accounts by id, a page at a time",
      querystring: z.object({ ownerId: S.PartyId.optional(), after: S.AccountId.optional().describe('the last id of the previous page'), limit: S.PageLimit('GET /v1/accounts') }),
      response: { 200: z.object({ accounts: z.array(S.Account), next: z.string().optional().describe('pass as `after` for the next page; left out on the last') }), ...readErrors },
    },
    handler: async (req) => accounts.accounts(req.actor, req.query),
  });

  app.get('/v1/accounts/:id', {
    schema: { tags: ['accounts'], summary: 'Balance, held and available of an account', params: S.IdParam, response: { 200: S.Account, ...readErrors } },
    handler: async (req) => accounts.account(req.actor, req.params.id),
  });

  const moneyBody = z.object({ accountId: S.AccountId, amount: S.Units, memo: S.Memo.optional() });
  for (const [path, move, summary] of [
    ['/v1/deposits', accounts.deposit, 'Money in from the outside world (admin)'],
    ['/v1/withdrawals', accounts.withdraw, 'Money out to the outside world (admin)'],
  ] as const) {
    app.post(path, {
      config: { auth: 'admin' },
      schema: { tags: ['money'], summary, headers: S.IdempotencyHeaders, body: moneyBody, response: { 201: S.Transfer, ...readErrors } },
      handler: async (req, reply) => reply.status(201).send(await move(req.actor, req.headers['idempotency-key'], req.body)),
    });
  }

  app.post('/v1/transfers', {
    schema: {
      tags: ['money'],
      summary: "Move money from one of the caller's accounts to any account",
      headers: S.IdempotencyHeaders,
      body: z.object({ fromAccountId: S.AccountId, toAccountId: S.AccountId, amount: S.Units, memo: S.Memo.optional() }),
      response: { 201: S.Transfer, ...errors },
    },
    handler: async (req, reply) => reply.status(201).send(await accounts.transfer(req.actor, req.headers['idempotency-key'], req.body)),
  });

  app.post('/v1/holds', {
    schema: {
      tags: ['holds'],
      summary: 'Hold funds on one of your accounts (two-phase: capture part or all, release the rest)',
      headers: S.IdempotencyHeaders,
      body: z.object({ accountId: S.AccountId, amount: S.Units, expiresAt: z.iso.datetime({ offset: true }).optional() }),
      response: { 201: S.Hold, ...errors },
    },
    handler: async (req, reply) => reply.status(201).send(await accounts.placeHold(req.actor, req.headers['idempotency-key'], req.body)),
  });

  app.get('/v1/holds/:id', {
    schema: { tags: ['holds'], summary: 'A hold and what remains of it', params: S.HoldIdParam, response: { 200: S.Hold, ...readErrors } },
    handler: async (req) => accounts.hold(req.actor, req.params.id),
  });

  app.post('/v1/holds/:id/capture', {
    schema: {
      tags: ['holds'],
      summary: 'Post part or all of what remains on a hold to another account',
      params: S.HoldIdParam,
      headers: S.IdempotencyHeaders,
      body: z.object({ amount: S.Units, toAccountId: S.AccountId, memo: S.Memo.optional() }),
      response: { 200: z.object({ hold: S.Hold, transfer: S.Transfer }), ...errors },
    },
    handler: async (req) => accounts.captureHold(req.actor, req.headers['idempotency-key'], req.params.id, req.body),
  });

  app.post('/v1/holds/:id/release', {
    schema: { tags: ['holds'], summary: 'Void what remains on a hold', params: S.HoldIdParam, headers: S.IdempotencyHeaders, response: { 200: S.Hold, ...errors } },
    handler: async (req) => accounts.releaseHold(req.actor, req.headers['idempotency-key'], req.params.id),
  });

  app.get('/v1/audit', {
    config: { auth: 'admin' },
    schema: {
      tags: ['audit'],
      summary: 'Check every invariant over the whole ledger; each violation comes with the rows involved (admin)',
      response: { 200: S.AuditReport, ...readErrors },
    },
    handler: async () => checks.audit(),
  });

  app.get('/v1/events', {
    schema: {
      tags: ['events'],
      summary: 'Tail the event log by cursor, in commit order: no committed event is skipped or repeated (a party sees its own events; the admin sees all)',
      querystring: z.object({
        after: S.PageAfter.describe('0 for the start, or `next` of the previous page (an event id; any other id is a 400)'),
        limit: S.PageLimit('GET /v1/events'),
        subject: z.string().min(1).max(200).optional().describe("only this subject's events: a stream's ref, a job's id, an account's id"),
        type: z.string().regex(/^[a-z_.]{1,80}$/, 'an event type such as stream.tick').optional().describe('only events of this type, e.g. stream.tick, stream.closed, hold.placed'),
      }),
      response: { 200: z.object({ events: z.array(S.Event), next: z.number().int().describe('the id of the last event returned, or `after` when none: pass it as the next `after`') }), ...readErrors },
    },
    handler: async (req) => accounts.events(req.actor, req.query),
  });
}
