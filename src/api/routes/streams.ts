import { z } from 'zod';
import { SluiceError } from '../../domain/errors';
import { streamService } from '../../services/streams';
import { answerFor, internalBody } from '../errors';
import { chargeWrites, rateLimitsOf } from '../rateLimits';
import type { Api } from '../app';
import * as S from '../schemas';
import { PAGE_ROWS_MAX, STREAM_BATCH_ITEMS_MAX, STREAM_MEMBERS_MAX, TICK_INTERVAL_MS_MAX, TICK_INTERVAL_MS_MIN } from '../limits';

const errors = S.WriteErrors;
const readErrors = S.ReadErrors;

export const MemberInput = z.object({ accountId: S.AccountId, weight: z.number().int().min(1).max(1_000_000) });
export const MembersInput = z.array(MemberInput).min(1).max(STREAM_MEMBERS_MAX);


const OpenStreamBody = z.object({
  ref: S.Ref.optional().describe('the stream\'s ref (workflow stream-<ref>): sending the same open again returns the same stream. Required, or an Idempotency-Key header'),
  fromAccountId: S.AccountId.describe("the payer's account (an operator names its payer's)"),
  toAccountId: S.AccountId.optional().describe('the payee account; or say payee "best", or give members'),
  payee: z.literal('best').optional().describe('route to a current crown holder of the rate board'),
  market: S.MarketId.optional().describe('with payee "best": the market whose crown holder is paid, in its direction (default `default`)'),
  members: MembersInput.optional().describe('a distribution stream: each tick is split among these accounts by weight'),
  ratePerTick: S.Units.describe('units per tick; with payee "best", the most you pay (the stream runs at the holder\'s rate)'),
  maxTotal: S.Units.optional().describe('the cap; required in escrow mode; left out, a payg stream is open-ended'),
  tickIntervalMs: z.number().int().min(TICK_INTERVAL_MS_MIN).max(TICK_INTERVAL_MS_MAX),
  mode: z.enum(['escrow', 'payg']).default('escrow'),
  livenessTimeoutMs: z.number().int().min(TICK_INTERVAL_MS_MIN).max(TICK_INTERVAL_MS_MAX).optional(),
  graceMs: z.number().int().min(TICK_INTERVAL_MS_MIN).max(7 * TICK_INTERVAL_MS_MAX).optional(),
  rateConsent: z.enum(['payer', 'payee']).default('payer').describe("'payee': a rate change by the payer applies once the payee accepts it"),
  lowBalanceTicks: z.number().int().min(0).max(1_000_000).optional().describe('stream.low_balance fires this many ticks before the money runs out (default 3)'),
});
export function streamRoutes(app: Api) {
  const streams = streamService(app.deps);

  app.post('/v1/streams', {
    schema: {
      tags: ['streams'],
      summary: 'Open a stream (workflow stream-<ref>); the first tick is billed before this returns',
      headers: S.IdempotencyHeaders.partial(),
      body: OpenStreamBody,
      response: { 201: S.StreamReceipt, 200: S.StreamReceipt, 202: S.StillRunning, ...errors },
    },
    handler: async (req, reply) => {
      const { created, receipt } = await streams.open(req.actor, req.body, req.headers['idempotency-key']);
      return reply.status(created ? 201 : 200).send(receipt);
    },
  });

  const BatchItem = z.discriminatedUnion('op', [
    // a batch names every stream it opens: retrying the batch must not open new ones
    OpenStreamBody.extend({ op: z.literal('open'), ref: S.Ref }),
    z.object({ op: z.literal('cancel'), ref: S.Ref, reason: S.Memo.optional() }),
  ]);
  app.post('/v1/streams/batch', {
    // each item is a write: the limiter counted the request as one on arrival, the rest are counted here before any runs
    preHandler: async (req) => chargeWrites(app.deps.pool, req, rateLimitsOf(app.deps).writes, req.body.items.length - 1),
    schema: {
      tags: ['streams'],
      summary: `Open or cancel up to ${STREAM_BATCH_ITEMS_MAX} streams in one call; each item succeeds or fails on its own`,
      description:
        'Each item is `{"op": "open", ...the body of POST /v1/streams, with its ref required}` or `{"op": "cancel", "ref": ..., "reason"?: ...}`. ' +
        'The answer lists one result per item, in order, with the status and body that item would have had on its own route.',
      body: z.object({ items: z.array(z.object({ op: z.enum(['open', 'cancel']) }).passthrough()).min(1).max(STREAM_BATCH_ITEMS_MAX) }),
      response: {
        200: z.object({
          succeeded: z.number().int(),
          failed: z.number().int(),
          results: z.array(z.object({ index: z.number().int(), op: z.string(), status: z.number().int(), body: z.record(z.string(), z.unknown()) })),
        }),
        ...errors,
      },
    },
    handler: async (req) => {
      const items = req.body.items.map((raw) => {
        const parsed = BatchItem.safeParse(raw);
        if (parsed.success) return parsed.data;
        const issues = parsed.error.issues.map((i) => ({ path: `/${i.path.join('/')}`, message: i.message }));
        return new SluiceError('invalid_request', `invalid item: ${issues.map((i) => `${i.path} ${i.message}`).join('; ')}`, { issues });
      });
      const valid = items.flatMap((item) => (item instanceof SluiceError ? [] : [item]));
      const outcomes = await streams.batch(req.actor, valid);
      let next = 0;
      const results = items.map((item, index) => {
        const op = String(req.body.items[index]!.op);
        const outcome = item instanceof SluiceError ? ({ ok: false, error: item } as const) : outcomes[next++]!;
        if (outcome.ok) return { index, op, status: outcome.created ? 201 : 200, body: outcome.body as unknown as Record<string, unknown> };
        const answer = answerFor(outcome.error);
        if (!answer) req.log.error({ err: outcome.error, index }, 'batch item failed');
        return { index, op, status: answer?.status ?? 500, body: answer?.body ?? internalBody('item may be retried with the same ref') };
      });
      const succeeded = results.filter((r) => r.status < 300).length;
      return { succeeded, failed: results.length - succeeded, results };
    },
  });

  app.get('/v1/streams', {
    schema: {
      tags: ['streams'],
      summary: `Streams newest first, the caller's own (payer, payee, member, or operator for the payer; the admin sees all); at most ${PAGE_ROWS_MAX['GET /v1/streams']} a page`,
      querystring: z.object({
        status: z.enum(['open', 'paused', 'closed', 'failed']).optional().describe('open: STREAMING or PAUSED; paused: PAUSED only; closed: CONFIRMED; failed: FAILED'),
        party: S.PartyId.optional().describe('only streams this party pays, is paid by or is a member of'),
        refPrefix: z.string().min(1).max(128).optional().describe('only streams whose ref starts with this'),
        after: S.Ref.optional().describe('the last ref of the previous page (its next)'),
        limit: S.PageLimit('GET /v1/streams'),
      }),
      response: {
        200: z.object({
          streams: z.array(S.StreamReceipt.extend({ tickIntervalMs: z.number().int(), workflowId: z.string() })),
          next: z.string().optional().describe('pass as `after` for the next page; left out on the last page'),
        }),
        ...readErrors,
      },
    },
    handler: async (req) => streams.list(req.actor, req.query),
  });

  app.get('/v1/streams/:ref', {
    schema: {
      tags: ['streams'],
      summary: 'A stream: paid so far, ticks, next tick time, accrued but not yet billed, when its money runs out',
      params: S.RefParam,
      response: { 200: S.StreamView, 202: S.StillRunning, ...readErrors },
    },
    handler: async (req) => streams.view(req.actor, req.params.ref),
  });

  app.get('/v1/streams/:ref/ticks', {
    schema: {
      tags: ['streams'],
      summary: `A stream's billed ticks in order (whoever may read the stream), cursor-paged by tick number; at most ${PAGE_ROWS_MAX['GET /v1/streams/:ref/ticks']} a page`,
      params: S.RefParam,
      querystring: z.object({
        // a tick number is a PostgreSQL integer
        after: S.QueryInt(0, 2_147_483_647).default(0).describe('0 for the first tick, or `next` of the previous page'),
        limit: S.PageLimit('GET /v1/streams/:ref/ticks'),
      }),
      response: {
        200: z.object({
          ref: z.string(),
          ticks: z.array(z.object({ tick: z.number().int(), amount: z.number().int(), paid: z.number().int().describe('paid in total once this tick was billed'), billedAt: z.string(), transferId: z.number().int() })),
          next: z.number().int().optional().describe('pass as `after` for the next page; left out on the last page'),
        }),
        ...readErrors,
      },
    },
    handler: async (req) => streams.ticks(req.actor, req.params.ref, req.query),
  });

  app.post('/v1/streams/:ref/cancel', {
    schema: {
      tags: ['streams'],
      summary: 'Close a stream now (payer, payee, an operator granted cancel); returns the receipt. Cancelling again returns the same receipt',
      params: S.RefParam,
      body: z.object({ reason: S.Memo.optional() }).default({}),
      response: { 200: S.StreamReceipt, 202: S.StillRunning, ...errors },
    },
    handler: async (req) => streams.cancel(req.actor, req.params.ref, req.body?.reason),
  });

  app.post('/v1/parties/:id/heartbeat', {
    schema: {
      tags: ['streams'],
      summary: 'Report that a party is alive (streams with a liveness timeout bill only while both parties are)',
      params: z.object({ id: S.PartyId }),
      response: { 200: z.object({ party: z.string(), lastSeenAt: z.string() }), ...errors },
    },
    handler: async (req) => streams.heartbeat(req.actor, req.params.id),
  });
}
