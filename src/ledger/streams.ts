import type { Pool, PoolClient, Queryable } from '../db/pool';
import { withTransaction } from '../db/pool';
import { notFound, SluiceError } from '../domain/errors';
import { assertUnits } from '../domain/money';
import {
  escrowKey,
  releaseKey,
  silenceMs,
  streamWorkflowId,
  tickAmount,
  tickKey,
  type CloseReason,
  type StreamReceipt,
  type StreamRequest,
  type StreamStatus,
  type TickOutcome,
} from '../domain/streams';
import { appendEvent, eventValues } from './events';
import { captureHoldIn, placeHoldIn, releaseHoldIfOpen, toHold, type Hold } from './holds';
import { postTransfer, type AlongWithTransfer } from './transfers';

export interface StreamRow {
  ref: string;
  payer: string;
  payee: string;
  payer_account_id: string;
  payee_account_id: string;
  rate_per_tick: number;
  max_total: number;
  tick_interval_ms: number;
  mode: 'escrow' | 'payg';
  liveness_timeout_ms: number | null;
  grace_ms: number | null;
  hold_id: number | null;
  status: 'open' | 'closed' | 'failed';
  paid: number;
  ticks_billed: number;
  last_tick: number;
  opened_at: Date;
  last_billed_at: Date | null;
  closed_at: Date | null;
  close_reason: CloseReason | null;
  closed_by: string | null;
  failure: string | null;
}

const STATUS: Record<StreamRow['status'], StreamStatus> = { open: 'STREAMING', closed: 'CONFIRMED', failed: 'FAILED' };

export function toReceipt(r: StreamRow): StreamReceipt {
  const receipt: StreamReceipt = {
    ref: r.ref,
    status: STATUS[r.status],
    payer: r.payer,
    payee: r.payee,
    mode: r.mode,
    ratePerTick: r.rate_per_tick,
    maxTotal: r.max_total,
    ticks: r.ticks_billed,
    totalPaid: r.paid,
    openedAt: r.opened_at.toISOString(),
  };
  if (r.closed_at) receipt.closedAt = r.closed_at.toISOString();
  if (r.close_reason) receipt.reason = r.close_reason;
  if (r.closed_by) receipt.closedBy = r.closed_by;
  if (r.failure) receipt.failure = r.failure;
  return receipt;
}

export async function findStream(db: Queryable, ref: string, forUpdate = false): Promise<StreamRow | undefined> {
  const { rows } = await db.query<StreamRow>(`select * from streams where ref = $1 ${forUpdate ? 'for update' : ''}`, [ref]);
  return rows[0];
}

export async function getStream(db: Queryable, ref: string): Promise<StreamRow> {
  const row = await findStream(db, ref);
  if (!row) throw notFound('stream', ref);
  return row;
}

/** A stream locked for billing a tick, with everything the tick decides on, read in one round trip. */
interface TickContext {
  stream: StreamRow;
  /** The transaction's time (now()): liveness is measured against it. */
  now: Date;
  /** The amount of this tick if it was billed before (a retry or a replay). */
  priorAmount: number | null;
  payerSeen: Date;
  payeeSeen: Date;
  /** The escrow hold (escrow mode), read under the stream's lock, which guards it. */
  hold?: Hold;
}

/**
 * Locks the stream row and reads the tick's prior billing, the parties' heartbeats
 * and now(). When each party was last seen: its latest heartbeat, or the stream's
 * opening (both were present then).
 */
async function lockStreamForTick(client: PoolClient, ref: string, tick: number): Promise<TickContext | undefined> {
  const { rows } = await client.query<StreamRow & { now_at: Date; prior_amount: number | null; payer_hb: Date | null; payee_hb: Date | null; hold: Record<string, unknown> | null }>({
    name: 'lock-stream-for-tick',
    text: `select s.*, now() as now_at,
                  (select amount from stream_ticks where stream_ref = s.ref and tick = $2) as prior_amount,
                  (select last_seen_at from party_heartbeats where party_id = s.payer) as payer_hb,
                  (select last_seen_at from party_heartbeats where party_id = s.payee) as payee_hb,
                  (select to_jsonb(h) from holds h where h.id = s.hold_id) as hold
             from streams s where s.ref = $1 for update of s`,
    values: [ref, tick],
  });
  const r = rows[0];
  if (!r) return undefined;
  const { now_at, prior_amount, payer_hb, payee_hb, hold, ...stream } = r;
  const seen = (hb: Date | null) => (hb && hb > stream.opened_at ? hb : stream.opened_at);
  return {
    stream,
    now: now_at,
    priorAmount: prior_amount,
    payerSeen: seen(payer_hb),
    payeeSeen: seen(payee_hb),
    ...(hold && { hold: toHold(hold) }),
  };
}

/**
 * Bills tick `tick` inside the caller's transaction, the stream row locked by
 * lockStreamForTick. Exactly once: the key `stream:<ref>:tick:<n>`, the stream_ticks
 * primary key and a unique index on transfers all refuse a second billing of the
 * same tick. Nothing is written before the funds are checked, so an
 * `insufficient_funds` thrown from here leaves the transaction clean.
 */
async function billTickIn(client: PoolClient, ctx: TickContext, tick: number): Promise<TickOutcome> {
  const { stream: s, now, payerSeen, payeeSeen } = ctx;
  if (s.status !== 'open') return { kind: 'closed', tick };
  if (ctx.priorAmount !== null) {
    return { kind: 'billed', tick, amount: ctx.priorAmount, paid: s.paid, ticksBilled: s.ticks_billed, completed: s.paid >= s.max_total };
  }
  if (s.liveness_timeout_ms !== null) {
    const silentMs = silenceMs(now.getTime(), payerSeen.getTime(), payeeSeen.getTime());
    // `now` arrives cut to the millisecond but billed_at keeps now()'s microseconds: a
    // silence measured at exactly the timeout is up to 1 ms longer, so it is not billed
    if (silentMs >= s.liveness_timeout_ms) {
      await client.query(
        `with skip as (insert into stream_skips (stream_ref, tick, reason, silent_ms) values ($1, $2, 'partition', $3) on conflict do nothing)
         update streams set last_tick = greatest(last_tick, $2) where ref = $1`,
        [s.ref, tick, silentMs],
      );
      return { kind: 'skipped', tick, silentMs };
    }
  }
  const amount = tickAmount(s.rate_per_tick, s.max_total, s.paid);
  if (amount === 0) return { kind: 'billed', tick, amount: 0, paid: s.paid, ticksBilled: s.ticks_billed, completed: true };
  const refs = { key: tickKey(s.ref, tick), kind: 'stream_tick', amount, streamRef: s.ref, tick };
  // the row is ours (locked): paid and ticks_billed after this tick are known here
  const paid = s.paid + amount;
  const ticksBilled = s.ticks_billed + 1;
  // the tick row, the stream's totals and the event ride in the transfer's own statement
  const along: AlongWithTransfer = {
    name: 'stream-tick',
    ctes: `k as (insert into stream_ticks (stream_ref, tick, amount, transfer_id, payer_seen_at, payee_seen_at) select $15, $16, $17, t.id, $18, $19 from t),
           u as (update streams set paid = paid + $17, ticks_billed = ticks_billed + 1, last_tick = greatest(last_tick, $16), last_billed_at = now() where ref = $15),
           v as (insert into events (type, subject, payload, parties) select $20, $21, $22::jsonb || jsonb_build_object('transfer', t.id), $23 from t)`,
    values: [s.ref, tick, amount, payerSeen, payeeSeen,
      ...eventValues({ type: 'stream.tick', subject: s.ref, payload: { ref: s.ref, tick, amount, paid }, parties: [s.payer, s.payee] })],
  };
  if (s.mode === 'escrow') {
    await captureHoldIn(client, { ...refs, holdId: s.hold_id!, toAccountId: s.payee_account_id }, ctx.hold, along);
  } else {
    await postTransfer(client, { ...refs, debitAccountId: s.payer_account_id, creditAccountId: s.payee_account_id }, undefined, along);
  }
  return { kind: 'billed', tick, amount, paid, ticksBilled, completed: paid >= s.max_total };
}

/**
 * Opens a stream and bills its first tick in one transaction: the stream row, the
 * escrow hold (escrow mode) and tick 1 commit together or not at all, so a stream
 * the payer cannot pay for charges nothing. Such a stream is recorded as failed.
 * Re-opening the same ref returns the stream as it is.
 */
export async function openStream(pool: Pool, request: StreamRequest): Promise<StreamReceipt> {
  assertUnits(request.ratePerTick, 'ratePerTick');
  assertUnits(request.maxTotal, 'maxTotal');
  try {
    return await withTransaction(pool, async (client) => {
      const existing = await findStream(client, request.ref, true);
      if (existing) return toReceipt(existing);
      const hold =
        request.mode === 'escrow'
          ? await placeHoldIn(client, {
              key: escrowKey(request.ref),
              accountId: request.payerAccountId,
              amount: request.maxTotal,
              multiCapture: true,
              reference: { stream: request.ref },
            })
          : undefined;
      const opened = (await insertStream(client, request, { holdId: hold?.id }))!;
      await appendEvent(client, { type: 'stream.opened', subject: request.ref, payload: { ...request }, parties: [request.payer, request.payee] });
      const first = await billTickIn(client, (await lockStreamForTick(client, opened.ref, 1))!, 1);
      if (first.kind === 'insufficient_funds') throw new SluiceError('insufficient_funds', 'the payer cannot pay the first tick');
      return toReceipt((await findStream(client, request.ref))!);
    });
  } catch (error) {
    if (!(error instanceof SluiceError) || error.code !== 'insufficient_funds') throw error;
    return recordFailedOpen(pool, request, error.message);
  }
}

/**
 * The stream row: `open` with its escrow hold, or `failed` (closed at once, the
 * failure recorded). A failed row yields to a row already there (the first word wins).
 */
async function insertStream(client: PoolClient, r: StreamRequest, opts: { holdId?: number; failure?: string }): Promise<StreamRow | undefined> {
  const failed = opts.failure !== undefined;
  const { rows } = await client.query<StreamRow>(
    `insert into streams (ref, payer, payee, payer_account_id, payee_account_id, rate_per_tick, max_total, tick_interval_ms,
                          mode, liveness_timeout_ms, grace_ms, hold_id, status, closed_at, close_reason, failure, workflow_id)
     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, case when $14 then now() end, case when $14 then 'insufficient_funds' end, $15, $16)
     ${failed ? 'on conflict (ref) do nothing' : ''} returning *`,
    [r.ref, r.payer, r.payee, r.payerAccountId, r.payeeAccountId, r.ratePerTick, r.maxTotal, r.tickIntervalMs, r.mode,
     r.livenessTimeoutMs ?? null, r.graceMs ?? null, opts.holdId ?? null, failed ? 'failed' : 'open', failed, opts.failure ?? null,
     streamWorkflowId(r.ref)],
  );
  return rows[0];
}

async function recordFailedOpen(pool: Pool, request: StreamRequest, failure: string): Promise<StreamReceipt> {
  return withTransaction(pool, async (client) => {
    const inserted = await insertStream(client, request, { failure });
    const row = inserted ?? (await getStream(client, request.ref));
    if (inserted) await appendEvent(client, { type: 'stream.failed', subject: request.ref, payload: { ref: request.ref, failure }, parties: [request.payer, request.payee] });
    return toReceipt(row);
  });
}

/** Bills one tick in its own transaction (the workflow's activity). */
export function billTick(pool: Pool, ref: string, tick: number): Promise<TickOutcome> {
  return withTransaction(pool, async (client) => {
    const ctx = await lockStreamForTick(client, ref, tick);
    if (!ctx) throw notFound('stream', ref);
    try {
      return await billTickIn(client, ctx, tick);
    } catch (error) {
      // refused before anything was written (billTickIn checks funds first): commit nothing new
      if (error instanceof SluiceError && error.code === 'insufficient_funds') return { kind: 'insufficient_funds', tick };
      throw error;
    }
  });
}

/**
 * Closes a stream: marks it closed (the row lock makes this the line after which
 * no tick can commit) and releases the unused escrow, in one transaction. Closing a
 * closed stream returns the same receipt.
 */
export function closeStream(pool: Pool, input: { ref: string; reason: CloseReason; closedBy: string }): Promise<StreamReceipt> {
  return withTransaction(pool, async (client) => {
    const s = await findStream(client, input.ref, true);
    if (!s) throw notFound('stream', input.ref);
    if (s.status !== 'open') return toReceipt(s);
    // clock_timestamp(), read under the row lock: every tick committed before this
    // close has an earlier time, and none can commit after it (the auditor relies on it)
    await client.query(`update streams set status = 'closed', closed_at = clock_timestamp(), close_reason = $2, closed_by = $3 where ref = $1`, [
      s.ref,
      input.reason,
      input.closedBy,
    ]);
    if (s.hold_id !== null) await releaseHoldIfOpen(client, { key: releaseKey(s.ref), holdId: s.hold_id });
    const receipt = toReceipt((await findStream(client, s.ref))!);
    await appendEvent(client, { type: 'stream.closed', subject: s.ref, payload: { ...receipt }, parties: [s.payer, s.payee] });
    return receipt;
  });
}

/** A party says it is alive; streams use it to tell a partition from a quiet peer. */
export async function recordHeartbeat(db: Queryable, party: string): Promise<string> {
  const { rows } = await db.query<{ last_seen_at: Date }>(
    `insert into party_heartbeats (party_id, last_seen_at) values ($1, now())
     on conflict (party_id) do update set last_seen_at = excluded.last_seen_at returning last_seen_at`,
    [party],
  );
  return rows[0]!.last_seen_at.toISOString();
}
