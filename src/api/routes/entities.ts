import { z } from 'zod';
import { SUBACCOUNT_SEPARATOR, SUBACCOUNT_STATUSES } from '../../domain/entities';
import { LEDGER_POINTS_MAX } from '../../domain/checkpoints';
import { ASSESS_EVERY_MS_DEFAULT, CHALLENGE_MIN_BPS_DEFAULT, RULE_NAMES } from '../../domain/challengeRules';
import { OVERLAP_S_DEFAULT, OVERLAP_S_MAX, OVERLAP_S_MIN } from '../../ledger/entities';
import { entityService } from '../../services/entities';
import type { Api } from '../app';
import * as S from '../schemas';
import { PAGE_ROWS_MAX, WEBHOOK_URL_CHARS_MAX, WEBHOOK_URLS_MAX } from '../limits';

const errors = { ...S.WriteErrors, 429: S.ErrorBody };
const readErrors = S.ReadErrors;

const EntityId = z
  .string()
  .refine((s) => !s.includes(SUBACCOUNT_SEPARATOR), `entity ids may not contain '${SUBACCOUNT_SEPARATOR}': it separates entity and number in subaccount ids`)
  .pipe(S.PartyId);
const SubaccountParam = z.object({
  id: z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,62}\/[1-9][0-9]{0,9}$/, '<entity>/<n> (URL-encode the slash as %2F)'),
});
/** Subaccount numbers are a PostgreSQL integer: a cursor past it is refused here, not by the query. */
const SEQ_MAX = 2_147_483_647;
const SeqCursor = S.QueryInt(0, SEQ_MAX).default(0);

const Subaccount = z.object({
  id: z.string(),
  entityId: z.string(),
  seq: z.number().int(),
  status: z.enum(SUBACCOUNT_STATUSES),
  accountId: z.string().optional(),
  funding: z.number().int(),
  failedStep: z.string().optional(),
  failure: z.string().optional(),
  createdAt: z.string(),
  activatedAt: z.string().optional(),
  endedAt: z.string().optional(),
  creationWorkflowId: z.string().optional().describe("its creation saga's workflow id (Temporal UI: /namespaces/<ns>/workflows/<id>)"),
  highWaterMark: z.number().int().optional().describe('the high-water mark of its balance as last assessed (at least its funding)'),
  assessedAt: z.string().optional().describe('when its rules were last assessed'),
  eliminationRule: z
    .object({ rule: z.enum(RULE_NAMES) })
    .catchall(z.union([z.number(), z.string()]))
    .optional()
    .describe('the rule that fired, with its figures (min_balance: balance, funding, ratioBps, limitBps; max_drawdown: highWaterMark, balance, drawdownBps, limitBps; inactivity: lastActivityAt, idleMs, limitMs)'),
});

/** The rules run on the workflow's timers: a period shorter than this would be a busy loop. */
const ASSESS_EVERY_MS_MIN = 1000;
const DAY = 86_400_000;

export function entityRoutes(app: Api) {
  const entities = entityService(app.deps);

  app.post('/v1/entities', {
    config: { auth: 'admin' },
    schema: {
      tags: ['entities'],
      summary: 'Register an entity (admin): its API key, main account (collateral and funding come from it) and webhook secret, shown once',
      body: z.object({
        id: EntityId,
        name: S.PartyName,
        collateral: S.Units.describe('held on the main account per live subaccount'),
        funding: z.number().int().min(0).max(1e15).describe('moved into each new subaccount'),
        webhookUrls: z.array(z.url({ protocol: /^https?$/ }).max(WEBHOOK_URL_CHARS_MAX)).max(WEBHOOK_URLS_MAX).default([]),
        challengeMs: z.number().int().min(0).max(90 * 86_400_000).optional().describe('0: active at once'),
        challengeMinBps: z.number().int().min(0).max(10_000).optional().describe(`rule min_balance: the balance a subaccount must keep, in basis points of its funding (default ${CHALLENGE_MIN_BPS_DEFAULT})`),
        maxDrawdownBps: z.number().int().min(1).max(10_000).optional().describe('rule max_drawdown: the most its balance may fall from its high-water mark, in basis points of the mark (off unless set)'),
        inactivityMs: z.number().int().min(ASSESS_EVERY_MS_MIN).max(366 * DAY).optional().describe('rule inactivity: the longest it may go without a stream tick paid or received (off unless set)'),
        assessEveryMs: z
          .number()
          .int()
          .max(90 * DAY)
          .refine((ms) => ms === 0 || ms >= ASSESS_EVERY_MS_MIN, `0 (only at the end of the challenge) or at least ${ASSESS_EVERY_MS_MIN} ms`)
          .optional()
          .describe(`how often an active subaccount's rules are assessed after its challenge (default ${ASSESS_EVERY_MS_DEFAULT}, a day; 0: only at the end of the challenge)`),
        subaccountCap: z.number().int().min(1).max(100_000).optional().describe('live subaccounts (default: SLUICE_SUBACCOUNT_CAP)'),
        creationsPerHour: z.number().int().min(1).max(100_000).optional().describe('default: SLUICE_SUBACCOUNT_CREATIONS_PER_HOUR'),
      }).superRefine((b, ctx) => {
        // the rules are assessed by a subaccount's lifecycle, which begins with its challenge period
        for (const rule of ['maxDrawdownBps', 'inactivityMs'] as const) {
          if (b[rule] !== undefined && !b.challengeMs) ctx.addIssue({ code: 'custom', path: [rule], message: `${rule} needs a challenge period (challengeMs > 0): the rules are assessed at its end and then every assessEveryMs` });
        }
      }),
      response: { 201: z.object({ id: z.string(), apiKey: z.string(), webhookSecret: z.string(), mainAccountId: z.string() }), ...errors },
    },
    handler: async (req, reply) => reply.status(201).send(await entities.register(req.body)),
  });

  app.get('/v1/entities', {
    config: { auth: 'admin' },
    schema: {
      tags: ['entities'],
      summary: `Every entity by id, with its live subaccounts (admin); at most ${PAGE_ROWS_MAX['GET /v1/entities']} a page`,
      querystring: z.object({
        after: S.PartyId.optional().describe('the last id of the previous page (its next)'),
        limit: S.PageLimit('GET /v1/entities'),
      }),
      response: {
        200: z.object({
          entities: z.array(z.object({ id: z.string(), name: z.string(), mainAccountId: z.string(), liveSubaccounts: z.number().int(), createdAt: z.string() })),
          next: z.string().optional().describe('pass as `after` for the next page; left out on the last page'),
        }),
        ...readErrors,
      },
    },
    handler: async (req) => entities.list(req.query),
  });

  app.get('/v1/entities/:id', {
    schema: {
      tags: ['entities'],
      summary: 'An entity (itself or the admin): terms, webhook URLs (never the secret), and where it stands against its limits',
      params: z.object({ id: S.PartyId }),
      response: {
        200: z.object({
          id: z.string(),
          mainAccountId: z.string(),
          collateral: z.number().int(),
          funding: z.number().int(),
          webhookUrls: z.array(z.string()),
          webhookSecretOverlapUntil: z.string().optional().describe("during a rotation's overlap: when the previous webhook secret stops signing (left out otherwise)"),
          challengeMs: z.number().int(),
          challengeMinBps: z.number().int(),
          maxDrawdownBps: z.number().int().optional(),
          inactivityMs: z.number().int().optional(),
          assessEveryMs: z.number().int(),
          nextSeq: z.number().int(),
          subaccountCap: z.number().int().describe('live subaccounts at most (its own, else SLUICE_SUBACCOUNT_CAP)'),
          creationsPerHour: z.number().int().describe('creations per rolling hour at most (its own, else SLUICE_SUBACCOUNT_CREATIONS_PER_HOUR)'),
          liveSubaccounts: z.number().int().describe('pending, challenge, active or eliminating: each counts against the cap'),
          rollingBack: z.number().int().describe('of the live: failed creations whose sagas are still undoing them (their slots free within seconds)'),
          creationsLastHour: z.number().int().describe('successful and in-flight creations of the last hour'),
          nextCreationAt: z.string().optional().describe('at the hourly limit: when one more creation is let through'),
        }),
        ...readErrors,
      },
    },
    handler: async (req) => entities.get(req.actor, req.params.id),
  });

  app.post('/v1/entities/:id/subaccounts', {
    schema: {
      tags: ['entities'],
      summary: 'Create a subaccount (creation saga): answers with it, or with the failed step and what was rolled back',
      params: z.object({ id: S.PartyId }),
      headers: S.IdempotencyHeaders.partial(),
      body: z.object({ requestId: S.Ref.optional().describe('the same request id (or Idempotency-Key) returns the same creation') }).default({}),
      response: { 201: z.object({ subaccount: Subaccount, compensated: z.array(z.string()) }), 202: S.StillRunning, ...errors },
    },
    handler: async (req, reply) =>
      reply.status(201).send(await entities.createSubaccount(req.actor, req.params.id, { requestId: req.body?.requestId, idempotencyKey: req.headers['idempotency-key'] })),
  });

  app.get('/v1/entities/:id/subaccounts', {
    schema: { tags: ['entities'], summary: "An entity's subaccounts by number, a page at a time", params: z.object({ id: S.PartyId }), querystring: z.object({ after: SeqCursor, limit: S.PageLimit('GET /v1/entities/:id/subaccounts') }), response: { 200: z.object({ subaccounts: z.array(Subaccount) }), ...readErrors } },
    handler: async (req) => entities.subaccounts(req.actor, req.params.id, req.query),
  });

  app.get('/v1/subaccounts/:id', {
    schema: { tags: ['entities'], summary: 'A subaccount (its entity or the admin)', params: SubaccountParam, response: { 200: Subaccount, ...readErrors } },
    handler: async (req) => entities.subaccount(req.actor, req.params.id),
  });

  app.post('/v1/subaccounts/:id/eliminate', {
    schema: {
      tags: ['entities'],
      summary: 'Eliminate a subaccount: close its streams, sweep its balance to the entity, release its collateral',
      params: SubaccountParam,
      body: z.object({ reason: S.Memo.optional() }).default({}),
      response: {
        200: z.object({ subaccount: Subaccount, swept: z.number().int(), collateralReleased: z.boolean(), streams: z.array(S.StreamReceipt) }),
        202: S.StillRunning,
        ...errors,
      },
    },
    handler: async (req) => entities.eliminate(req.actor, req.params.id, req.body?.reason),
  });

  const LedgerPoint = z.object({
    at: z.string().describe('the end of the step: the figures as they stood then'),
    checkpointAt: z.string().optional().describe('the round they come from (left out before the first round)'),
    subaccounts: z.number().int(),
    balance: z.number().int(),
    held: z.number().int(),
    paid: z.number().int(),
    received: z.number().int(),
  });
  app.get('/v1/entities/:id/ledger', {
    schema: {
      tags: ['entities'],
      summary: `The debt ledger (itself or the admin): the entity's subaccounts' balance, held, paid and received summed at every step from its checkpoints (or one subaccount's); at most ${LEDGER_POINTS_MAX} points`,
      params: z.object({ id: S.PartyId }),
      querystring: z.object({
        from: z.iso.datetime({ offset: true }).optional().describe('ISO time of the first point (default: 30 days before `to`)'),
        to: z.iso.datetime({ offset: true }).optional().describe('ISO time of the last point (default: now)'),
        step: S.QueryInt(60, 366 * 86_400).default(86_400).describe('seconds between points (default a day)'),
        subaccount: SubaccountParam.shape.id.optional().describe("one subaccount's series instead of the entity's"),
      }),
      response: { 200: z.object({ entity: z.string(), subaccount: z.string().optional(), step: z.number().int(), points: z.array(LedgerPoint) }), ...readErrors },
    },
    handler: async (req) => entities.ledger(req.actor, req.params.id, req.query),
  });

  app.post('/v1/entities/:id/checkpoints', {
    schema: {
      tags: ['entities'],
      summary: "Checkpoint the entity's live subaccounts now (itself or the admin): one round of the debt ledger, beside the daily one at UTC midnight",
      params: z.object({ id: S.PartyId }),
      response: { 201: z.object({ entity: z.string(), at: z.string(), subaccounts: z.number().int() }), ...errors },
    },
    handler: async (req, reply) => reply.status(201).send(await entities.checkpoint(req.actor, req.params.id)),
  });

  app.get('/v1/entities/:id/dashboard', {
    schema: {
      tags: ['entities'],
      summary: `All subaccounts at once (one query): a row each (balance, held, open streams, paid, received, status), status counts, and totals with the main account and the collateral it holds; rows by number, at most ${PAGE_ROWS_MAX['GET /v1/entities/:id/dashboard']} a page`,
      params: z.object({ id: S.PartyId }),
      querystring: z.object({
        after: SeqCursor,
        limit: S.PageLimit('GET /v1/entities/:id/dashboard', PAGE_ROWS_MAX['GET /v1/entities/:id/dashboard']),
      }),
      response: {
        200: z.object({
          entity: z.string(),
          statusCounts: z.record(z.enum(SUBACCOUNT_STATUSES), z.number().int()),
          totals: z.object({
            balance: z.number().int(),
            held: z.number().int(),
            openStreams: z.number().int(),
            paid: z.number().int(),
            received: z.number().int(),
            mainBalance: z.number().int().describe("the entity's main account"),
            mainHeld: z.number().int(),
            collateralHeld: z.number().int().describe('held on the main account for live subaccounts'),
          }),
          subaccounts: z.array(
            z.object({
              id: z.string(),
              seq: z.number().int(),
              status: z.enum(SUBACCOUNT_STATUSES),
              accountId: z.string().optional(),
              balance: z.number().int(),
              held: z.number().int(),
              openStreams: z.number().int(),
              paid: z.number().int().describe('paid out by its streams'),
              received: z.number().int().describe('received by its streams'),
            }),
          ),
          nextAfter: z.number().int().optional().describe('pass as `after` for the next page'),
        }),
        ...readErrors,
      },
    },
    handler: async (req) => entities.dashboard(req.actor, req.params.id, req.query),
  });

  app.get('/v1/entities/:id/deliveries', {
    schema: {
      tags: ['entities'],
      summary: 'Webhook delivery attempts with their outcome, in commit order after a cursor (0, or the id of the last attempt of the previous page)',
      params: z.object({ id: S.PartyId }),
      querystring: z.object({ after: S.PageAfter, limit: S.PageLimit('GET /v1/entities/:id/deliveries') }),
      response: {
        200: z.object({
          deliveries: z.array(z.object({ id: z.number().int(), deliveryId: z.string().describe('the sluice-delivery header: the same on every attempt of one event to one URL'), eventKey: z.string(), eventType: z.string(), url: z.string(), attempt: z.number().int(), statusCode: z.number().int().optional(), ok: z.boolean(), error: z.string().optional(), at: z.string() })),
        }),
        ...readErrors,
      },
    },
    handler: async (req) => entities.deliveries(req.actor, req.params.id, req.query),
  });

  app.post('/v1/entities/:id/webhook-secret/rotate', {
    schema: {
      tags: ['entities'],
      summary:
        'Rotate the webhook secret (itself or the admin): the new secret, shown once; deliveries are signed with it and the previous one (two v1 values) until retired or overlapUntil. Rotating during an overlap replaces the new secret and keeps the previous one',
      params: z.object({ id: S.PartyId }),
      body: z
        .object({
          overlapS: z.number().int().min(OVERLAP_S_MIN).max(OVERLAP_S_MAX).default(OVERLAP_S_DEFAULT).describe(`seconds the previous secret keeps signing unless retired first (default ${OVERLAP_S_DEFAULT}, a day)`),
        })
        .default({ overlapS: OVERLAP_S_DEFAULT }),
      response: {
        201: z.object({ id: z.string(), webhookSecret: z.string().describe('shown once: no later answer holds it'), overlapUntil: z.string().describe('when the previous secret stops signing, unless retired first') }),
        ...errors,
      },
    },
    handler: async (req, reply) => reply.status(201).send(await entities.rotateSecret(req.actor, req.params.id, { overlapS: req.body?.overlapS ?? OVERLAP_S_DEFAULT })),
  });

  app.post('/v1/entities/:id/webhook-secret/retire', {
    schema: {
      tags: ['entities'],
      summary: 'End the overlap of a webhook secret rotation now (itself or the admin): only the current secret signs from here on; without an overlap it changes nothing (retired: false)',
      params: z.object({ id: S.PartyId }),
      response: { 200: z.object({ id: z.string(), retired: z.boolean().describe('false: there was no overlap to end') }), ...errors },
    },
    handler: async (req) => entities.retireSecret(req.actor, req.params.id),
  });
}
