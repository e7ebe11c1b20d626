import { z } from 'zod';
import { forbidden, SluiceError } from '../../domain/errors';
import { startStreamWorkflow } from '../../temporal/streams';
import { accruedUnbilled, moneyLeft, streamWorkflowId, tickDueAtMs, type DistributionMember, type StreamReceipt, type StreamRequest } from '../../domain/streams';
import { getAccount } from '../../ledger/accounts';
import { findStreamWithHistory, listStreams, recordHeartbeat, toReceipt, type StreamRow } from '../../ledger/streams';
import { cancelStreamSignal } from '../../../workflows/definitions';
import { routeChoice, tickAt } from '../../domain/crown';
import { holdersAt } from '../../ledger/rates';
import { DEFAULT_MARKET } from '../../ledger/markets';
import { appendEvent } from '../../ledger/events';
import { answerFor, internalBody } from '../errors';
import { membersOf, payableAccount, payerAccountFor, streamActor, visibleStream } from '../streamAccess';
import { idOfKey, type Actor } from '../auth';
import { StillRunning, withinDeadline, API_WAIT_MS_DEFAULT } from '../deadline';
import { closeStream } from '../../ledger/streams';
import { listStreamTicks } from '../../ledger/streamTicks';
import { workflowStatus } from '../../temporal/reconciler';
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
type OpenStreamInput = z.output<typeof OpenStreamBody>;

/**
 * The parameters that define a stream: the same ref with other parameters is a
 * conflict. Routed to payee "best" (no payee account asked for), the payee and the
 * rate were the router's: the rate only has to be within the buyer's limit.
 */
const sameStream = (
  row: StreamRow,
  r: Pick<StreamRequest, 'payerAccountId' | 'ratePerTick' | 'maxTotal' | 'tickIntervalMs' | 'mode'> & { payeeAccountId?: string; routed: boolean },
) => {
  // compared with the terms it opened on: top-ups and rate changes came later
  const openingRate = row.opening_rate_per_tick;
  const openingMax = row.max_total === null ? undefined : row.max_total - row.deposited;
  return (
    row.payer_account_id === r.payerAccountId &&
    (r.routed ? openingRate <= r.ratePerTick : (row.payee_account_id ?? undefined) === r.payeeAccountId && openingRate === r.ratePerTick) &&
    openingMax === r.maxTotal &&
    row.tick_interval_ms === r.tickIntervalMs &&
    row.mode === r.mode
  );
};

/**
 * A stream as the API shows it: the receipt so far plus the live view of money
 * moving, and when it runs out (`payerAvailable`: the payer's available balance,
 * given for a payg stream, which it limits). While paused the clock stands still: no next tick,
 * nothing accrues, no depletion time.
 */
function streamView(row: StreamRow, nowMs: number, payerAvailable: number | undefined) {
  const running = row.status === 'open' && row.paused_at === null;
  const dueOf = (tick: number) => tickDueAtMs(row.opened_at.getTime(), row.tick_interval_ms, tick, row.paused_ms);
  const { ticksLeft, capLeft, limitedBy, funds } = moneyLeft({ mode: row.mode, ratePerTick: row.rate_per_tick, maxTotal: row.max_total, paid: row.paid, available: payerAvailable });
  return {
    ...toReceipt(row),
    ...(row.proposed_rate_per_tick !== null && { proposedRatePerTick: row.proposed_rate_per_tick }),
    tickIntervalMs: row.tick_interval_ms,
    lastTick: row.last_tick,
    nextTickAt: running ? new Date(dueOf(row.last_tick + 1)).toISOString() : undefined,
    accruedUnbilled: running
      ? accruedUnbilled({
          nowMs,
          lastTickDueMs: dueOf(Math.max(row.last_tick, 1)),
          tickIntervalMs: row.tick_interval_ms,
          ratePerTick: row.rate_per_tick,
          remaining: capLeft ?? Number.MAX_SAFE_INTEGER,
        })
      : 0,
    ...(row.paused_at && { pausedAt: row.paused_at.toISOString() }),
    ...(row.status === 'open' && {
      depletion: {
        ticksLeft,
        ...(running && isoTime(dueOf(row.last_tick + ticksLeft))),
        limitedBy,
        funds,
      },
    }),
    workflowId: streamWorkflowId(row.ref),
  } as const;
}

export function streamRoutes(app: Api) {
  const { pool, temporal, taskQueue } = app.deps;
  const waitMs = app.deps.waitMs ?? API_WAIT_MS_DEFAULT;

  /**
   * payee "best": a crown holder now, among those with a payout account other than
   * the payer itself; ties broken by the tick's rotation (tickOwner), so the same
   * moment always picks the same seller. The holders are the market's, in its
   * direction: the lowest rate in an ask market, the highest in a bid market. The
   * stream pays the holder's own rate; the buyer's `ratePerTick` is the most it will
   * pay, in either direction (money never moves past what the payer agreed to).
   */
  const routeToBest = async (payer: string, market: string, limitPerTick: number) => {
    const tick = tickAt(Date.now());
    const now = await holdersAt(pool, market, tick);
    const seller = routeChoice(tick, now.holders, (h) => Boolean(now.accounts[h]) && h !== payer);
    if (seller === null) {
      throw new SluiceError('invalid_request', `no seller holds the crown of market ${market} now (none is active, idle and priced with a payout account)`, { market, tick, holders: now.holders });
    }
    if (now.bestRate! > limitPerTick) {
      throw new SluiceError('limit_exceeded', `the best offer is ${now.bestRate} per tick, above your ratePerTick ${limitPerTick}`, { market, tick, bestRate: now.bestRate, ratePerTick: limitPerTick });
    }
    return { market, direction: now.direction, seller, accountId: now.accounts[seller]!, tick, holders: now.holders, bestRate: now.bestRate! };
  };

  /** How a stream opened to payee "best" was routed (its stream.routed event), for a repeated request. */
  const routeOf = async (ref: string) => {
    const { rows } = await pool.query<{ payload: { market?: string; direction?: 'ask' | 'bid'; seller: string; tick: number; holders: string[]; bestRate: number } }>(
      `select payload from events where type = 'stream.routed' and subject = $1 order by id limit 1`,
      [ref],
    );
    const p = rows[0]?.payload;
    // routed before markets existed: the default market's, an ask market
    return p && { market: p.market ?? DEFAULT_MARKET, direction: p.direction ?? 'ask', seller: p.seller, tick: p.tick, holders: p.holders, bestRate: p.bestRate };
  };

  /** Whether `ref` is a stream still opening that `actor` may see (its payer or payee, per its workflow's memo, or the admin). */
  const openingFor = async (actor: Actor, ref: string): Promise<boolean> => {
    const described = await temporal.workflow.getHandle(streamWorkflowId(ref)).describe().catch(() => undefined);
    if (described?.status.name !== 'RUNNING') return false;
    const memo = (described.memo ?? {}) as { payer?: string; payee?: string | null };
    return actor.kind === 'admin' || actor.party === memo.payer || actor.party === memo.payee;
  };

  /** Opens one stream (POST /v1/streams and each `open` of a batch): the status and body to answer with. */
  const openOne = async (actor: Actor, body: OpenStreamInput, idempotencyKey?: string): Promise<{ status: number; body: Record<string, unknown> }> => {
    const { account: payer, openedBy } = await payerAccountFor(pool, actor, body.fromAccountId);
    const { fromAccountId, toAccountId, payee: best, market: named, members, ref: given, rateConsent, lowBalanceTicks, ...terms } = body;
    const ref = given ?? (idempotencyKey !== undefined ? idOfKey(actor, idempotencyKey) : undefined);
    if (ref === undefined) {
      throw new SluiceError('invalid_request', 'give the stream a ref, or send an Idempotency-Key header: a retried open must find the stream it opened, not open a second one', { param: 'ref' });
    }
    if ([toAccountId, best, members].filter((x) => x !== undefined).length !== 1) {
      throw new SluiceError('invalid_request', 'give exactly one of toAccountId, payee: "best" or members');
    }
    if (named !== undefined && !best) throw new SluiceError('invalid_request', 'market names the crown followed by payee "best": give it only with payee "best"', { param: 'market' });
    const market = named ?? DEFAULT_MARKET;
    if (terms.maxTotal === undefined && terms.mode === 'escrow') throw new SluiceError('invalid_request', 'an escrow stream needs maxTotal (only a payg stream may be open-ended)');
    if (terms.maxTotal === undefined && openedBy) throw new SluiceError('invalid_request', "an operator's stream needs maxTotal: it counts against the operator's daily limit");
    if (members && terms.livenessTimeoutMs !== undefined) throw new SluiceError('invalid_request', 'a distribution stream has no liveness timeout (its members come and go)');
    if (members && rateConsent === 'payee') throw new SluiceError('invalid_request', "a distribution stream has no single payee to agree to a rate (rateConsent 'payee')");
    // a repeated request answers with the stream it opened, before any routing: the crown may have moved since
    const existing = await findStreamWithHistory(pool, ref);
    if (existing) {
      const routed = best ? await routeOf(ref) : undefined;
      const same =
        (!best || (routed !== undefined && routed.market === market)) &&
        (members !== undefined) === (existing.kind === 'distribution') &&
        sameStream(existing, { ...terms, payerAccountId: payer.id, payeeAccountId: toAccountId, routed: best !== undefined });
      if (!same) throw new SluiceError('ref_conflict', `stream ref ${ref} is already used by another stream`, { ref });
      // a repeat answers as the first call did: a stream that failed to open is still a 422
      if (existing.status === 'failed') throw failedToOpen(toReceipt(existing));
      return { status: 200, body: (routed ? { ...toReceipt(existing), route: routed } : toReceipt(existing)) as unknown as Record<string, unknown> };
    }
    const route = best ? await routeToBest(payer.ownerId, market, terms.ratePerTick) : undefined;
    const payee = members ? undefined : await payableAccount(pool, payer, route?.accountId ?? toAccountId!);
    const request: StreamRequest = {
      ...terms,
      ...(route && { ratePerTick: route.bestRate }),
      ref,
      payer: payer.ownerId,
      payerAccountId: payer.id,
      ...(payee && { payee: payee.ownerId, payeeAccountId: payee.id }),
      ...(members && { members: await membersOf(pool, members, payer) }),
      ...(rateConsent === 'payee' && { rateConsent }),
      ...(lowBalanceTicks !== undefined && { lowBalanceTicks }),
      ...(openedBy && { openedBy }),
    };
    const { opened: receipt } = await withinDeadline(startStreamWorkflow(temporal, taskQueue, request, { billingShards: app.deps.billingShards }), waitMs, () =>
      new StillRunning(`/v1/streams/${ref}`, { ref, workflowId: streamWorkflowId(ref) }),
    );
    if (receipt.status === 'FAILED') throw failedToOpen(receipt);
    if (!route) return { status: 201, body: receipt as unknown as Record<string, unknown> };
    const { accountId: _a, ...routed } = route;
    await appendEvent(pool, { type: 'stream.routed', subject: ref, payload: { ref, ...routed }, parties: [request.payer, request.payee!] });
    return { status: 201, body: { ...receipt, route: routed } };
  };

  /**
   * Cancels one stream (its cancel route and each `cancel` of a batch): the receipt, the
   * same on a repeat. A running workflow is signalled and settles; a workflow that is
   * gone (terminated, failed, lost) or ends without settling leaves the stream to the
   * ledger, which closes it here the same way (due ticks billed, escrow released).
   */
  const cancelOne = async (actor: Actor, ref: string, reason?: string): Promise<StreamReceipt> => {
    const row = await visibleStream(pool, actor, ref);
    const { by } = await streamActor(pool, actor, row, 'cancel');
    if (row.status !== 'open') return toReceipt(row);
    const workflowId = streamWorkflowId(row.ref);
    const throughLedger = () => closeStream(pool, { ref: row.ref, reason: 'cancelled', closedBy: by });
    if ((await workflowStatus(temporal, workflowId)) !== 'RUNNING') return throughLedger();
    const handle = temporal.workflow.getHandle(workflowId);
    await handle.signal(cancelStreamSignal, { by, reason }).catch(() => undefined); // already closing: read the result
    const settled = handle.result().then(
      (receipt: StreamReceipt) => receipt,
      // the run ended without a receipt (terminated or failed as it closed): the ledger settles
      () => throughLedger(),
    );
    return withinDeadline(settled, waitMs, () => new StillRunning(`/v1/streams/${row.ref}`, { ref: row.ref, workflowId }));
  };

  app.post('/v1/streams', {
    schema: {
      tags: ['streams'],
      summary: 'Open a stream (workflow stream-<ref>); the first tick is billed before this returns',
      headers: S.IdempotencyHeaders.partial(),
      body: OpenStreamBody,
      response: { 201: S.StreamReceipt, 200: S.StreamReceipt, 202: S.StillRunning, ...errors },
    },
    handler: async (req, reply) => {
      const { status, body } = await openOne(req.actor, req.body, req.headers['idempotency-key']);
      return reply.status(status).send(body as z.infer<typeof S.StreamReceipt>);
    },
  });

  const BatchItem = z.discriminatedUnion('op', [
    // a batch names every stream it opens: retrying the batch must not open new ones
    OpenStreamBody.extend({ op: z.literal('open'), ref: S.Ref }),
    z.object({ op: z.literal('cancel'), ref: S.Ref, reason: S.Memo.optional() }),
  ]);
  app.post('/v1/streams/batch', {
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
      const run = async (raw: unknown): Promise<{ status: number; body: Record<string, unknown> }> => {
        const parsed = BatchItem.safeParse(raw);
        if (!parsed.success) {
          const issues = parsed.error.issues.map((i) => ({ path: `/${i.path.join('/')}`, message: i.message }));
          throw new SluiceError('invalid_request', `invalid item: ${issues.map((i) => `${i.path} ${i.message}`).join('; ')}`, { issues });
        }
        const item = parsed.data;
        if (item.op === 'cancel') return { status: 200, body: (await cancelOne(req.actor, item.ref, item.reason)) as unknown as Record<string, unknown> };
        const { op: _op, ...open } = item;
        return openOne(req.actor, open);
      };
      // Items on different refs run a few at a time (each open waits for its first tick,
      // each cancel for its receipt); items on the same ref run in their order, so
      // "open r, then cancel r" in one batch means what it says.
      const results = new Array<{ index: number; op: string; status: number; body: Record<string, unknown> }>(req.body.items.length);
      const lanes = new Map<string, number[]>();
      req.body.items.forEach((raw, index) => {
        const ref = (raw as { ref?: unknown }).ref;
        const lane = typeof ref === 'string' ? `ref:${ref}` : `item:${index}`;
        lanes.set(lane, [...(lanes.get(lane) ?? []), index]);
      });
      await forEachConcurrently([...lanes.values()], 8, async (indices) => {
        for (const index of indices) {
          const raw = req.body.items[index]!;
          const op = String(raw.op);
          try {
            results[index] = { index, op, ...(await run(raw)) };
          } catch (error) {
            // an item fails on its own, even unexpectedly: the others' results are not lost
            const answer = answerFor(error);
            if (!answer) req.log.error({ err: error, index }, 'batch item failed');
            results[index] = { index, op, status: answer?.status ?? 500, body: answer?.body ?? internalBody('item may be retried with the same ref') };
          }
        }
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
    handler: async (req) => {
      const { status, after, limit, party: counterparty, refPrefix } = req.query;
      const rows = await listStreams(pool, { party: req.actor.kind === 'party' ? req.actor.party : undefined, status, after, limit, counterparty, refPrefix });
      const streams = rows.map((row) => ({ ...toReceipt(row), tickIntervalMs: row.tick_interval_ms, workflowId: streamWorkflowId(row.ref) }));
      return { streams, ...(rows.length === limit && { next: rows.at(-1)!.ref }) };
    },
  });

  app.get('/v1/streams/:ref', {
    schema: {
      tags: ['streams'],
      summary: 'A stream: paid so far, ticks, next tick time, accrued but not yet billed, when its money runs out',
      params: S.RefParam,
      response: { 200: S.StreamView, 202: S.StillRunning, ...readErrors },
    },
    handler: async (req) => {
      const row = await visibleStream(pool, req.actor, req.params.ref).catch(async (error: unknown) => {
        // an open still on its way (answered 202): its workflow runs, its row is not written yet
        if (error instanceof SluiceError && error.code === 'not_found' && (await openingFor(req.actor, req.params.ref))) {
          throw new StillRunning(`/v1/streams/${req.params.ref}`, { ref: req.params.ref, workflowId: streamWorkflowId(req.params.ref) });
        }
        throw error;
      });
      // only a payg stream is limited by the payer's balance (an escrow's money is its hold)
      const payerAvailable = row.mode === 'payg' ? (await getAccount(pool, row.payer_account_id)).available : undefined;
      return streamView(row, Date.now(), payerAvailable);
    },
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
    handler: async (req) => {
      await visibleStream(pool, req.actor, req.params.ref);
      const ticks = await listStreamTicks(pool, req.params.ref, req.query);
      return { ref: req.params.ref, ticks, ...(ticks.length === req.query.limit && { next: ticks.at(-1)!.tick }) };
    },
  });

  app.post('/v1/streams/:ref/cancel', {
    schema: {
      tags: ['streams'],
      summary: 'Close a stream now (payer, payee, an operator granted cancel); returns the receipt. Cancelling again returns the same receipt',
      params: S.RefParam,
      body: z.object({ reason: S.Memo.optional() }).default({}),
      response: { 200: S.StreamReceipt, 202: S.StillRunning, ...errors },
    },
    handler: async (req) => cancelOne(req.actor, req.params.ref, req.body?.reason),
  });

  app.post('/v1/parties/:id/heartbeat', {
    schema: {
      tags: ['streams'],
      summary: 'Report that a party is alive (streams with a liveness timeout bill only while both parties are)',
      params: z.object({ id: S.PartyId }),
      response: { 200: z.object({ party: z.string(), lastSeenAt: z.string() }), ...errors },
    },
    handler: async (req) => {
      if (req.actor.kind === 'party' && req.actor.party !== req.params.id) throw forbidden('a party reports its own heartbeat');
      return { party: req.params.id, lastSeenAt: await recordHeartbeat(pool, req.params.id).catch((e: { code?: string }) => {
        if (e.code === '23503') throw new SluiceError('not_found', `party ${req.params.id} not found`);
        throw e;
      }) };
    },
  });
}

/** `{at}` for a time a Date can hold (a long stream at a low rate can run out past year 275760): else nothing. */
const isoTime = (ms: number): { at?: string } => (Math.abs(ms) <= 8.64e15 ? { at: new Date(ms).toISOString() } : {});

const failedToOpen = (receipt: StreamReceipt) =>
  new SluiceError('insufficient_funds', `stream ${receipt.ref} failed to open: ${receipt.failure}; nothing was charged`, { stream: receipt });

/** Runs `fn` over the items, at most `limit` at once. */
async function forEachConcurrently<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < items.length; i = next++) await fn(items[i]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
