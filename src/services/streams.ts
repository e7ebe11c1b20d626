import { notFound, SluiceError } from '../domain/errors';
import { DEFAULT_TIER_STREAM_QUOTAS, streamQuotaRefusal } from '../domain/streamQuotas';
import { routeChoice, tickAt, type Direction } from '../domain/crown';
import { accruedUnbilled, moneyLeft, streamWorkflowId, tickDueAtMs, type StreamReceipt, type StreamRequest, type StreamRoute } from '../domain/streams';
import { getAccount } from '../ledger/accounts';
import { firstEventPayload } from '../ledger/events';
import { DEFAULT_MARKET } from '../ledger/markets';
import { holdersAt } from '../ledger/rates';
import { closeStream, findStreamWithHistory, listStreams, openStreamsOf, recordHeartbeat, toReceipt, type StreamRow } from '../ledger/streams';
import { listStreamTicks } from '../ledger/streamTicks';
import { workflowStatus } from '../temporal/reconciler';
import { startStreamWorkflow } from './starts';
import { cancelStreamSignal } from '../../workflows/definitions';
import { idOfKey, type Actor } from './actors';
import { StillRunning, withinDeadline } from './deadline';
import { waitMsOf, type ServiceDeps } from './deps';
import { membersOf, payableAccount, payerAccountFor, streamActor, visibleStream } from './streamAccess';

/** What a caller asks for to open a stream (POST /v1/streams, a batch's `open`). */
export interface OpenStreamInput {
  ref?: string;
  fromAccountId: string;
  toAccountId?: string;
  payee?: 'best';
  market?: string;
  members?: { accountId: string; weight: number }[];
  ratePerTick: number;
  maxTotal?: number;
  tickIntervalMs: number;
  mode: 'escrow' | 'payg';
  livenessTimeoutMs?: number;
  graceMs?: number;
  rateConsent: 'payer' | 'payee';
  lowBalanceTicks?: number;
}

export type BatchItem = ({ op: 'open' } & OpenStreamInput & { ref: string }) | { op: 'cancel'; ref: string; reason?: string };
export type BatchOutcome = { ok: true; created: boolean; body: StreamReceipt & { route?: StreamRoute } } | { ok: false; error: unknown };

/** How many of a batch's items on different refs run at once. */
const BATCH_LANES_MAX = 8;

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

/** `{at}` for a time a Date can hold (a long stream at a low rate can run out past year 275760): else nothing. */
const isoTime = (ms: number): { at?: string } => (Math.abs(ms) <= 8.64e15 ? { at: new Date(ms).toISOString() } : {});

const failedToOpen = (receipt: StreamReceipt) =>
  new SluiceError('insufficient_funds', `stream ${receipt.ref} failed to open: ${receipt.failure}; nothing was charged`, { stream: receipt });

/**
 * A stream as the API shows it: the receipt so far plus the live view of money
 * moving, and when it runs out (`payerAvailable`: the payer's available balance,
 * given for a payg stream, which it limits). While paused the clock stands still: no next tick,
 * nothing accrues, no depletion time.
 */
export function streamView(row: StreamRow, nowMs: number, payerAvailable: number | undefined) {
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

/** Streams: opening (with routing to the best offer), cancelling, batches, and what a caller may read. */
export function streamService(deps: ServiceDeps) {
  const { pool, temporal, taskQueue } = deps;
  const waitMs = waitMsOf(deps);

  /**
   * payee "best": a crown holder now, among those with a payout account other than
   * the payer itself; ties broken by the tick's rotation (tickOwner), so the same
   * moment always picks the same seller. The holders are the market's, in its
   * direction: the lowest rate in an ask market, the highest in a bid market. The
   * stream pays the holder's own rate; the buyer's `ratePerTick` is the most it will
   * pay, in either direction (money never moves past what the payer agreed to).
   */
  const routeToBest = async (payer: string, market: string, limitPerTick: number): Promise<{ route: StreamRoute; accountId: string }> => {
    const tick = tickAt(Date.now());
    const now = await holdersAt(pool, market, tick);
    const seller = routeChoice(tick, now.holders, (h) => Boolean(now.accounts[h]) && h !== payer);
    if (seller === null) {
      throw new SluiceError('invalid_request', `no seller holds the crown of market ${market} now (none is active, idle and priced with a payout account)`, { market, tick, holders: now.holders });
    }
    if (now.bestRate! > limitPerTick) {
      throw new SluiceError('limit_exceeded', `the best offer is ${now.bestRate} per tick, above your ratePerTick ${limitPerTick}`, { market, tick, bestRate: now.bestRate, ratePerTick: limitPerTick });
    }
    return { route: { market, direction: now.direction, seller, tick, holders: now.holders, bestRate: now.bestRate! }, accountId: now.accounts[seller]! };
  };

  /** How a stream opened to payee "best" was routed (its stream.routed event), for a repeated request. */
  const routeOf = async (ref: string): Promise<StreamRoute | undefined> => {
    const p = await firstEventPayload<{ market?: string; direction?: Direction; seller: string; tick: number; holders: string[]; bestRate: number }>(pool, 'stream.routed', ref);
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

  /**
   * Opens one stream: its receipt once tick 1 has settled, `created` false when the
   * ref already names the same stream (a repeat answers as the first call did).
   */
  const open = async (actor: Actor, body: OpenStreamInput, idempotencyKey?: string): Promise<{ created: boolean; receipt: StreamReceipt & { route?: StreamRoute } }> => {
    const { account: payer, openedBy } = await payerAccountFor(pool, actor, body.fromAccountId);
    const { fromAccountId: _f, toAccountId, payee: best, market: named, members, ref: given, rateConsent, lowBalanceTicks, ...terms } = body;
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
      return { created: false, receipt: routed ? { ...toReceipt(existing), route: routed } : toReceipt(existing) };
    }
    // over its tier's quota: refused before a workflow starts (the ledger checks again under the payer's lock)
    const overQuota = streamQuotaRefusal(deps.streamQuotas ?? DEFAULT_TIER_STREAM_QUOTAS, { payer: payer.ownerId, tickIntervalMs: terms.tickIntervalMs, ...(await openStreamsOf(pool, payer.ownerId)) });
    if (overQuota) throw overQuota;
    const routed = best ? await routeToBest(payer.ownerId, market, terms.ratePerTick) : undefined;
    const payee = members ? undefined : await payableAccount(pool, payer, routed?.accountId ?? toAccountId!);
    const request: StreamRequest = {
      ...terms,
      // the stream pays the holder's own rate; its route is written in the opening's transaction
      ...(routed && { ratePerTick: routed.route.bestRate, route: routed.route }),
      ref,
      payer: payer.ownerId,
      payerAccountId: payer.id,
      ...(payee && { payee: payee.ownerId, payeeAccountId: payee.id }),
      ...(members && { members: await membersOf(pool, members, payer) }),
      ...(rateConsent === 'payee' && { rateConsent }),
      ...(lowBalanceTicks !== undefined && { lowBalanceTicks }),
      ...(openedBy && { openedBy }),
    };
    const { opened: receipt } = await withinDeadline(startStreamWorkflow(temporal, taskQueue, request, { billingShards: deps.billingShards }), waitMs, () =>
      new StillRunning(`/v1/streams/${ref}`, { ref, workflowId: streamWorkflowId(ref) }),
    );
    if (receipt.status === 'FAILED') throw failedToOpen(receipt);
    return { created: true, receipt: request.route ? { ...receipt, route: request.route } : receipt };
  };

  /**
   * Cancels one stream: the receipt, the same on a repeat. A running workflow is
   * signalled and settles; a workflow that is gone (terminated, failed, lost) or ends
   * without settling leaves the stream to the ledger, which closes it here the same
   * way (due ticks billed, escrow released).
   */
  const cancel = async (actor: Actor, ref: string, reason?: string): Promise<StreamReceipt> => {
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

  /**
   * A batch of opens and cancels, each succeeding or failing on its own. Items on
   * different refs run a few at a time (each open waits for its first tick, each
   * cancel for its receipt); items on the same ref run in their order, so "open r,
   * then cancel r" in one batch means what it says.
   */
  const batch = async (actor: Actor, items: BatchItem[]): Promise<BatchOutcome[]> => {
    const outcomes = new Array<BatchOutcome>(items.length);
    const lanes = new Map<string, number[]>();
    items.forEach((item, index) => lanes.set(item.ref, [...(lanes.get(item.ref) ?? []), index]));
    await forEachConcurrently([...lanes.values()], BATCH_LANES_MAX, async (indices) => {
      for (const index of indices) {
        const item = items[index]!;
        try {
          if (item.op === 'cancel') {
            outcomes[index] = { ok: true, created: false, body: await cancel(actor, item.ref, item.reason) };
          } else {
            const { op: _op, ...input } = item;
            const { created, receipt } = await open(actor, input);
            outcomes[index] = { ok: true, created, body: receipt };
          }
        } catch (error) {
          // an item fails on its own, even unexpectedly: the others' outcomes are not lost
          outcomes[index] = { ok: false, error };
        }
      }
    });
    return outcomes;
  };

  /** The caller's streams, newest first (the admin sees all). */
  const list = async (actor: Actor, q: { status?: 'open' | 'paused' | 'closed' | 'failed'; after?: string; limit: number; party?: string; refPrefix?: string }) => {
    const rows = await listStreams(pool, { party: actor.kind === 'party' ? actor.party : undefined, status: q.status, after: q.after, limit: q.limit, counterparty: q.party, refPrefix: q.refPrefix });
    const streams = rows.map((row) => ({ ...toReceipt(row), tickIntervalMs: row.tick_interval_ms, workflowId: streamWorkflowId(row.ref) }));
    return { streams, ...(rows.length === q.limit && { next: rows.at(-1)!.ref }) };
  };

  /** A stream's live view; a stream still opening (its workflow runs, its row is not written yet) is "still running". */
  const view = async (actor: Actor, ref: string) => {
    const row = await visibleStream(pool, actor, ref).catch(async (error: unknown) => {
      if (error instanceof SluiceError && error.code === 'not_found' && (await openingFor(actor, ref))) {
        throw new StillRunning(`/v1/streams/${ref}`, { ref, workflowId: streamWorkflowId(ref) });
      }
      throw error;
    });
    // only a payg stream is limited by the payer's balance (an escrow's money is its hold)
    const payerAvailable = row.mode === 'payg' ? (await getAccount(pool, row.payer_account_id)).available : undefined;
    return streamView(row, Date.now(), payerAvailable);
  };

  /** A stream's billed ticks in order, for whoever may read the stream. */
  const ticks = async (actor: Actor, ref: string, page: { after: number; limit: number }) => {
    await visibleStream(pool, actor, ref);
    const rows = await listStreamTicks(pool, ref, page);
    return { ref, ticks: rows, ...(rows.length === page.limit && { next: rows.at(-1)!.tick }) };
  };

  /** A party reports it is alive (its own heartbeat only). */
  const heartbeat = async (actor: Actor, party: string) => {
    // another party's liveness is not the caller's to see: that party is not found, as a missing one
    if (actor.kind === 'party' && actor.party !== party) throw notFound('party', party);
    return { party, lastSeenAt: await recordHeartbeat(pool, party) };
  };

  return { open, cancel, batch, list, view, ticks, heartbeat };
}

export type StreamService = ReturnType<typeof streamService>;

/** Runs `fn` over the items, at most `limit` at once. */
async function forEachConcurrently<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < items.length; i = next++) await fn(items[i]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
