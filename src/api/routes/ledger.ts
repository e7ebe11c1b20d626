import { z } from 'zod';
import { forbidden, SluiceError } from '../../domain/errors';
import { createAccount, getAccount, listAccounts } from '../../ledger/accounts';
import { listEvents } from '../../ledger/events';
import { assertNotManaged, captureHold, getHold, placeHold, releaseHold } from '../../ledger/holds';
import { createParty } from '../../ledger/parties';
import { runAudit } from '../../audit';
import { deposit, transfer, withdraw } from '../../ledger/transfers';
import { ownAccount, scopedKey, type Actor } from '../../services/actors';
import type { Api } from '../app';
import * as S from '../schemas';
import { SUBACCOUNT_SEPARATOR } from '../../domain/entities';

const errors = S.WriteErrors;
const readErrors = S.ReadErrors;

/** Parties, accounts, deposits and withdrawals, transfers, holds and the event tail. */
export function ledgerRoutes(app: Api) {
  const { pool } = app.deps;

  app.post('/v1/parties', {
    config: { auth: 'admin' },
    schema: {
      tags: ['parties'],
      summary: 'Register a party and issue its API key (admin)',
      body: z.object({ id: S.PartyId, name: S.PartyName }),
      response: { 201: z.object({ id: z.string(), name: z.string(), apiKey: z.string() }), ...errors },
    },
    handler: async (req, reply) => reply.status(201).send(await createParty(pool, req.body)),
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
      response: { 201: S.Account, ...errors },
    },
    handler: async (req, reply) => {
      const { actor } = req;
      if (actor.kind === 'party' && ((req.body.ownerId && req.body.ownerId !== actor.party) || (req.body.kind && req.body.kind !== 'user'))) {
        throw forbidden('a party opens user accounts for itself only');
      }
      const ownerId = actor.kind === 'party' ? actor.party : req.body.ownerId;
      if (!ownerId) throw new SluiceError('invalid_request', 'the admin must name the ownerId');
      // `<entity>/<n>` names subaccounts: nobody may take such an id ahead of the saga
      if (req.body.id?.includes(SUBACCOUNT_SEPARATOR)) {
        throw new SluiceError('invalid_request', `account ids may not contain '${SUBACCOUNT_SEPARATOR}': it is reserved for subaccounts`, { id: req.body.id });
      }
      const account = await createAccount(pool, { id: req.body.id, ownerId, kind: req.body.kind ?? 'user', currency: req.body.currency });
      return reply.status(201).send(account);
    },
  });

  app.get('/v1/accounts', {
    schema: {
      tags: ['accounts'],
      summary: "The caller's accounts by id, a page at a time",
      querystring: z.object({ ownerId: S.PartyId.optional(), after: S.AccountId.optional().describe('the last id of the previous page'), limit: S.PageLimit('GET /v1/accounts') }),
      response: { 200: z.object({ accounts: z.array(S.Account), next: z.string().optional().describe('pass as `after` for the next page; left out on the last') }), ...readErrors },
    },
    handler: async (req) => {
      const owner = req.actor.kind === 'party' ? req.actor.party : req.query.ownerId;
      if (!owner) throw new SluiceError('invalid_request', 'the admin must name the ownerId');
      const accounts = await listAccounts(pool, owner, req.query);
      return { accounts, ...(accounts.length === req.query.limit && { next: accounts.at(-1)!.id }) };
    },
  });

  app.get('/v1/accounts/:id', {
    schema: { tags: ['accounts'], summary: 'Balance, held and available of an account', params: S.IdParam, response: { 200: S.Account, ...readErrors } },
    handler: async (req) => ownAccount(pool, req.actor, req.params.id),
  });

  const moneyBody = z.object({ accountId: S.AccountId, amount: S.Units, memo: S.Memo.optional() });
  for (const [path, move, summary] of [
    ['/v1/deposits', deposit, 'Money in from the outside world (admin)'],
    ['/v1/withdrawals', withdraw, 'Money out to the outside world (admin)'],
  ] as const) {
    app.post(path, {
      config: { auth: 'admin' },
      schema: { tags: ['money'], summary, headers: S.IdempotencyHeaders, body: moneyBody, response: { 201: S.Transfer, ...readErrors } },
      handler: async (req, reply) => {
        await getAccount(pool, req.body.accountId);
        const t = await move(pool, { key: scopedKey(req.actor, req.headers['idempotency-key']), ...req.body });
        return reply.status(201).send(t);
      },
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
    handler: async (req, reply) => {
      await ownAccount(pool, req.actor, req.body.fromAccountId);
      const t = await transfer(pool, {
        key: scopedKey(req.actor, req.headers['idempotency-key']),
        kind: 'transfer',
        debitAccountId: req.body.fromAccountId,
        creditAccountId: req.body.toAccountId,
        amount: req.body.amount,
        memo: req.body.memo,
      });
      return reply.status(201).send(t);
    },
  });

  app.post('/v1/holds', {
    schema: {
      tags: ['holds'],
      summary: 'Hold funds on one of your accounts (two-phase: capture part or all, release the rest)',
      headers: S.IdempotencyHeaders,
      body: z.object({ accountId: S.AccountId, amount: S.Units, expiresAt: z.iso.datetime({ offset: true }).optional() }),
      response: { 201: S.Hold, ...errors },
    },
    handler: async (req, reply) => {
      await ownAccount(pool, req.actor, req.body.accountId);
      const hold = await placeHold(pool, { key: scopedKey(req.actor, req.headers['idempotency-key']), ...req.body });
      return reply.status(201).send(hold);
    },
  });

  /** A hold may be read and resolved by the owner of the held account (resolved only if no workflow owns it). */
  const ownHold = async (actor: Actor, id: number, resolving = false) => {
    const hold = await getHold(pool, id);
    await ownAccount(pool, actor, hold.accountId);
    if (resolving) assertNotManaged(hold);
    return hold;
  };

  app.get('/v1/holds/:id', {
    schema: { tags: ['holds'], summary: 'A hold and what remains of it', params: S.HoldIdParam, response: { 200: S.Hold, ...readErrors } },
    handler: async (req) => ownHold(req.actor, req.params.id),
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
    handler: async (req) => {
      await ownHold(req.actor, req.params.id, true);
      return captureHold(pool, { key: scopedKey(req.actor, req.headers['idempotency-key']), holdId: req.params.id, ...req.body });
    },
  });

  app.post('/v1/holds/:id/release', {
    schema: { tags: ['holds'], summary: 'Void what remains on a hold', params: S.HoldIdParam, headers: S.IdempotencyHeaders, response: { 200: S.Hold, ...errors } },
    handler: async (req) => {
      await ownHold(req.actor, req.params.id, true);
      return releaseHold(pool, { key: scopedKey(req.actor, req.headers['idempotency-key']), holdId: req.params.id });
    },
  });

  app.get('/v1/audit', {
    config: { auth: 'admin' },
    schema: {
      tags: ['audit'],
      summary: 'Check every invariant over the whole ledger; each violation comes with the rows involved (admin)',
      response: { 200: S.AuditReport, ...readErrors },
    },
    handler: async () => runAudit(pool, { client: app.deps.temporal, taskQueue: app.deps.taskQueue }),
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
    handler: async (req) => {
      const events = await listEvents(pool, { ...req.query, party: req.actor.kind === 'party' ? req.actor.party : undefined });
      return { events, next: events.at(-1)?.id ?? req.query.after };
    },
  });
}
