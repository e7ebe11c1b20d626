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
import { appendEvent } from './events';
import { captureHoldIn, placeHoldIn, releaseHoldIn } from './holds';
import { postTransfer } from './transfers';

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

/** When each party was last seen: its latest heartbeat, or the stream's opening (both were present then). */
async function lastSeen(client: PoolClient, s: StreamRow): Promise<{ payerSeen: Date; payeeSeen: Date; now: Date }> {
  const { rows } = await client.query<{ party_id: string; last_seen_at: Date }>(
    'select party_id, last_seen_at from party_heartbeats where party_id = any($1)',
    [[s.payer, s.payee]],
  );
  const seen = (party: string) => {
    const hb = rows.find((r) => r.party_id === party)?.last_seen_at;
    return hb && hb > s.opened_at ? hb : s.opened_at;
  };
  const { rows: t } = await client.query<{ now: Date }>('select now() as now');
  return { payerSeen: seen(s.payer), payeeSeen: seen(s.payee), now: t[0]!.now };
}

/**
 * Bills tick `tick` inside the caller's transaction, the stream row already locked.
 * Exactly once: the key `stream:<ref>:tick:<n>`, the stream_ticks primary key and
 * a unique index on transfers all refuse a second billing of the same tick.
 */
async function billTickIn(client: PoolClient, s: StreamRow, tick: number): Promise<TickOutcome> {
  if (s.status !== 'open') return { kind: 'closed', tick };
  const prior = await client.query<{ amount: number }>('select amount from stream_ticks where stream_ref = $1 and tick = $2', [s.ref, tick]);
  if (prior.rows[0]) {
    return { kind: 'billed', tick, amount: prior.rows[0].amount, paid: s.paid, ticksBilled: s.ticks_billed, completed: s.paid >= s.max_total };
  }
  const { payerSeen, payeeSeen, now } = await lastSeen(client, s);
  if (s.liveness_timeout_ms !== null) {
    const silentMs = silenceMs(now.getTime(), payerSeen.getTime(), payeeSeen.getTime());
    // `now` arrives cut to the millisecond but billed_at keeps now()'s microseconds: a
    // silence measured at exactly the timeout is up to 1 ms longer, so it is not billed
    if (silentMs >= s.liveness_timeout_ms) {
      await client.query(
        `insert into stream_skips (stream_ref, tick, reason, silent_ms) values ($1, $2, 'partition', $3) on conflict do nothing`,
        [s.ref, tick, silentMs],
      );
      await client.query('update streams set last_tick = greatest(last_tick, $2) where ref = $1', [s.ref, tick]);
      return { kind: 'skipped', tick, silentMs };
    }
  }
  const amount = tickAmount(s.rate_per_tick, s.max_total, s.paid);
  if (amount === 0) return { kind: 'billed', tick, amount: 0, paid: s.paid, ticksBilled: s.ticks_billed, completed: true };
  const refs = { key: tickKey(s.ref, tick), kind: 'stream_tick', amount, streamRef: s.ref, tick };
  const transfer =
    s.mode === 'escrow'
      ? (await captureHoldIn(client, { ...refs, holdId: s.hold_id!, toAccountId: s.payee_account_id })).transfer
      : await postTransfer(client, { ...refs, debitAccountId: s.payer_account_id, creditAccountId: s.payee_account_id });
  await client.query(
    `insert into stream_ticks (stream_ref, tick, amount, transfer_id, payer_seen_at, payee_seen_at) values ($1, $2, $3, $4, $5, $6)`,
    [s.ref, tick, amount, transfer.id, payerSeen, payeeSeen],
  );
  const { rows } = await client.query<{ paid: number; ticks_billed: number }>(
    `update streams set paid = paid + $2, ticks_billed = ticks_billed + 1, last_tick = greatest(last_tick, $3), last_billed_at = now()
      where ref = $1 returning paid, ticks_billed`,
    [s.ref, amount, tick],
  );
  const { paid, ticks_billed: ticksBilled } = rows[0]!;
  await appendEvent(client, {
    type: 'stream.tick',
    subject: s.ref,
    payload: { ref: s.ref, tick, amount, paid, transfer: transfer.id },
    parties: [s.payer, s.payee],
  });
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
      const first = await billTickIn(client, opened, 1);
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
    const s = await findStream(client, ref, true);
    if (!s) throw notFound('stream', ref);
    try {
      await client.query('savepoint tick');
      return await billTickIn(client, s, tick);
    } catch (error) {
      if (error instanceof SluiceError && error.code === 'insufficient_funds') {
        await client.query('rollback to savepoint tick');
        return { kind: 'insufficient_funds', tick };
      }
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
    if (s.hold_id !== null) {
      const { rows } = await client.query<{ status: string }>('select status from holds where id = $1', [s.hold_id]);
      if (rows[0]?.status === 'open') await releaseHoldIn(client, { key: releaseKey(s.ref), holdId: s.hold_id });
    }
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
