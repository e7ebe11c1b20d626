import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { forbidden, SluiceError } from '../../domain/errors';
import { startStreamWorkflow } from '../../temporal/streams';
import { accruedUnbilled, streamWorkflowId, tickDueAtMs, type StreamReceipt, type StreamRequest } from '../../domain/streams';
import { getAccount } from '../../ledger/accounts';
import { findStream, getStream, recordHeartbeat, toReceipt, type StreamRow } from '../../ledger/streams';
import { cancelStreamSignal } from '../../../workflows/definitions';
import { tickAt, tickOwner } from '../../domain/crown';
import { holdersAt } from '../../ledger/rates';
import { appendEvent } from '../../ledger/events';
import { ownAccount, type Actor } from '../auth';
import type { Api } from '../app';
import * as S from '../schemas';

const errors = { 400: S.ErrorBody, 401: S.ErrorBody, 403: S.ErrorBody, 404: S.ErrorBody, 409: S.ErrorBody, 422: S.ErrorBody };

export const TICK_INTERVAL_MS_MIN = 100;
export const TICK_INTERVAL_MS_MAX = 86_400_000;

const OpenStreamBody = z.object({
  ref: S.Ref.optional(),
  fromAccountId: S.AccountId,
  toAccountId: S.AccountId.optional().describe('the payee account; or leave it out and say payee "best"'),
  payee: z.literal('best').optional().describe('route to a current crown holder of the rate board'),
  ratePerTick: S.Units.describe('units per tick; with payee "best", the most you pay (the stream runs at the holder\'s rate)'),
  maxTotal: S.Units,
  tickIntervalMs: z.number().int().min(TICK_INTERVAL_MS_MIN).max(TICK_INTERVAL_MS_MAX),
  mode: z.enum(['escrow', 'payg']).default('escrow'),
  livenessTimeoutMs: z.number().int().min(TICK_INTERVAL_MS_MIN).max(TICK_INTERVAL_MS_MAX).optional(),
  graceMs: z.number().int().min(TICK_INTERVAL_MS_MIN).max(7 * TICK_INTERVAL_MS_MAX).optional(),
});

/**
 * The parameters that define a stream: the same ref with other parameters is a
 * conflict. Routed to payee "best" (no payee account asked for), the payee and the
 * rate were the router's: the rate only has to be within the buyer's limit.
 */
const sameStream = (
  row: StreamRow,
  r: Pick<StreamRequest, 'payerAccountId' | 'ratePerTick' | 'maxTotal' | 'tickIntervalMs' | 'mode'> & { payeeAccountId?: string },
) =>
  row.payer_account_id === r.payerAccountId &&
  (r.payeeAccountId === undefined ? row.rate_per_tick <= r.ratePerTick : row.payee_account_id === r.payeeAccountId && row.rate_per_tick === r.ratePerTick) &&
  row.max_total === r.maxTotal &&
  row.tick_interval_ms === r.tickIntervalMs &&
  row.mode === r.mode;

/** A stream as the API shows it: the receipt so far plus the live view of money moving. */
function streamView(row: StreamRow, nowMs: number) {
  const open = row.status === 'open';
  const openedAtMs = row.opened_at.getTime();
  return {
    ...toReceipt(row),
    tickIntervalMs: row.tick_interval_ms,
    lastTick: row.last_tick,
    nextTickAt: open ? new Date(tickDueAtMs(openedAtMs, row.tick_interval_ms, row.last_tick + 1)).toISOString() : undefined,
    accruedUnbilled: open
      ? accruedUnbilled({
          nowMs,
          lastTickDueMs: tickDueAtMs(openedAtMs, row.tick_interval_ms, Math.max(row.last_tick, 1)),
          tickIntervalMs: row.tick_interval_ms,
          ratePerTick: row.rate_per_tick,
          remaining: row.max_total - row.paid,
        })
      : 0,
    workflowId: streamWorkflowId(row.ref),
  };
}

export function streamRoutes(app: Api) {
  const { pool, temporal, taskQueue } = app.deps;

  /**
   * payee "best": a crown holder now, among those with a payout account other than
   * the payer itself; ties broken by the tick's rotation (tickOwner), so the same
   * moment always picks the same seller. The stream pays the holder's own rate;
   * the buyer's `ratePerTick` is the most it will pay.
   */
  const routeToBest = async (payer: string, limitPerTick: number) => {
    const tick = tickAt(Date.now());
    const now = await holdersAt(pool, tick);
    const eligible = now.holders.filter((h) => now.accounts[h] && h !== payer);
    if (eligible.length === 0) {
      throw new SluiceError('invalid_request', 'no seller holds the crown now (none is active, idle and priced with a payout account)', { tick, holders: now.holders });
    }
    if (now.bestRate! > limitPerTick) {
      throw new SluiceError('limit_exceeded', `the best offer is ${now.bestRate} per tick, above your ratePerTick ${limitPerTick}`, { tick, bestRate: now.bestRate, ratePerTick: limitPerTick });
    }
    const seller = tickOwner(tick, eligible);
    return { seller, accountId: now.accounts[seller]!, tick, holders: now.holders, bestRate: now.bestRate! };
  };

  /** How a stream opened to payee "best" was routed (its stream.routed event), for a repeated request. */
  const routeOf = async (ref: string) => {
    const { rows } = await pool.query<{ payload: { seller: string; tick: number; holders: string[]; bestRate: number } }>(
      `select payload from events where type = 'stream.routed' and subject = $1 order by id limit 1`,
      [ref],
    );
    const p = rows[0]?.payload;
    return p && { seller: p.seller, tick: p.tick, holders: p.holders, bestRate: p.bestRate };
  };

  const visibleStream = async (actor: Actor, ref: string) => {
    const row = await getStream(pool, ref);
    if (actor.kind === 'party' && actor.party !== row.payer && actor.party !== row.payee) throw forbidden(`stream ${ref} is not yours`);
    return row;
  };

  app.post('/v1/streams', {
    schema: {
      tags: ['streams'],
      summary: 'Open a stream (workflow stream-<ref>); the first tick is billed before this returns',
      body: OpenStreamBody,
      response: { 201: S.StreamReceipt, 200: S.StreamReceipt, ...errors },
    },
    handler: async (req, reply) => {
      const payer = await ownAccount(pool, req.actor, req.body.fromAccountId);
      if ((req.body.toAccountId === undefined) === (req.body.payee === undefined)) {
        throw new SluiceError('invalid_request', 'give either toAccountId or payee: "best"');
      }
      const { fromAccountId, toAccountId, payee: best, ref = `s-${randomBytes(8).toString('hex')}`, ...terms } = req.body;
      // a repeated request answers with the stream it opened, before any routing: the crown may have moved since
      const existing = await findStream(pool, ref);
      if (existing) {
        const routed = best ? await routeOf(ref) : undefined;
        const same = (!best || routed !== undefined) && sameStream(existing, { ...terms, payerAccountId: payer.id, payeeAccountId: toAccountId });
        if (!same) throw new SluiceError('ref_conflict', `stream ref ${ref} is already used by another stream`, { ref });
        return reply.status(200).send(routed ? { ...toReceipt(existing), route: routed } : toReceipt(existing));
      }
      const route = best ? await routeToBest(payer.ownerId, terms.ratePerTick) : undefined;
      const payee = await getAccount(pool, route?.accountId ?? toAccountId!);
      if (payee.id === payer.id) throw new SluiceError('invalid_request', 'a stream needs two different accounts');
      const request: StreamRequest = {
        ...terms,
        ...(route && { ratePerTick: route.bestRate }),
        ref,
        payer: payer.ownerId,
        payee: payee.ownerId,
        payerAccountId: payer.id,
        payeeAccountId: payee.id,
      };
      const { opened: receipt } = await startStreamWorkflow(temporal, taskQueue, request);
      if (receipt.status === 'FAILED') {
        throw new SluiceError('insufficient_funds', `stream ${ref} failed to open: ${receipt.failure}; nothing was charged`, { stream: receipt });
      }
      if (!route) return reply.status(201).send(receipt);
      const { accountId: _a, ...routed } = route;
      await appendEvent(pool, { type: 'stream.routed', subject: ref, payload: { ref, ...routed }, parties: [request.payer, request.payee] });
      return reply.status(201).send({ ...receipt, route: routed });
    },
  });

  app.get('/v1/streams/:ref', {
    schema: { tags: ['streams'], summary: 'A stream: paid so far, ticks, next tick time, accrued but not yet billed', params: S.RefParam, response: { 200: S.StreamView, ...errors } },
    handler: async (req) => streamView(await visibleStream(req.actor, req.params.ref), Date.now()),
  });

  app.post('/v1/streams/:ref/cancel', {
    schema: {
      tags: ['streams'],
      summary: 'Close a stream now (payer or payee); returns the receipt. Cancelling again returns the same receipt',
      params: S.RefParam,
      body: z.object({ reason: S.Memo.optional() }).default({}),
      response: { 200: S.StreamReceipt, ...errors },
    },
    handler: async (req) => {
      const row = await visibleStream(req.actor, req.params.ref);
      if (row.status !== 'open') return toReceipt(row);
      const by = req.actor.kind === 'party' ? req.actor.party : 'admin';
      const handle = temporal.workflow.getHandle(streamWorkflowId(row.ref));
      await handle.signal(cancelStreamSignal, { by, reason: req.body?.reason }).catch(() => undefined); // already closing: read the result
      return (await handle.result()) as StreamReceipt;
    },
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
