import type { Pool, PoolClient } from '../../db/pool';
import { withTransaction } from '../../db/pool';
import { notFound, SluiceError, sluiceErrorFromDatabase } from '../../domain/errors';
import { assertUnits } from '../../domain/money';
import { DEFAULT_TIER_STREAM_QUOTAS, type TierStreamQuotas } from '../../domain/streamQuotas';
import {
  effectiveGraceMs,
  escrowKey,
  releaseKey,
  LOW_BALANCE_TICKS_DEFAULT,
  type CloseReason,
  type DistributionMember,
  type StreamReceipt,
  type StreamRequest,
  streamWorkflowId,
  type TickOutcome,
} from '../../domain/streams';
import { haltAfter, shardKeyOf } from '../../domain/billing';
import { billDueIn, type LockedStream } from '../tickBatch';
import { lockAccounts } from '../accounts';
import { appendEvent } from '../events';
import { placeHoldIn, releaseHoldIfOpen } from '../holds';
import { spendOperatorAllowance } from '../operators';
import { assertStreamQuota } from './quotas';
import { findStream, findStreamWithHistory, getStream, receiptOf, streamParties, toReceipt, type StreamRow } from './rows';
import { billTickIn, lockStreamForTick } from './ticks';

/**
 * A stream's life in the ledger: its opening (the row, the escrow hold and tick 1 in
 * one transaction, or a failed row), a distribution's members joining, and its close
 * (the ticks due settled, the escrow released). The controls between the two are
 * src/ledger/streamControls.ts.
 */

/**
 * Opens a stream and bills its first tick in one transaction: the stream row, the
 * escrow hold (escrow mode) and tick 1 commit together or not at all, so a stream
 * the payer cannot pay for charges nothing. Such a stream is recorded as failed.
 * Re-opening the same ref returns the stream as it is.
 */
export async function openStream(pool: Pool, request: StreamRequest, quotas: TierStreamQuotas = DEFAULT_TIER_STREAM_QUOTAS): Promise<StreamReceipt> {
  assertUnits(request.ratePerTick, 'ratePerTick');
  if (request.maxTotal !== undefined) assertUnits(request.maxTotal, 'maxTotal');
  try {
    return await withTransaction(pool, async (client) => {
      const existing = await findStream(client, request.ref, true);
      if (existing) return toReceipt(existing);
      // the payer's quota, under its party row (lock order step 1: the ref named no row, so no stream row is held yet)
      await assertStreamQuota(client, quotas, { payer: request.payer, tickIntervalMs: request.tickIntervalMs });
      // every account the opening touches, locked at once lowest id first (the order the
      // billing clock and every transfer use): locking the payer for the hold and the
      // payee later for tick 1 deadlocked with a batch holding the payee
      await lockAccounts(client, [request.payerAccountId, ...(request.payeeAccountId ? [request.payeeAccountId] : []), ...(request.members ?? []).map((m) => m.accountId)]);
      // an operator's stream counts against its daily limit (a CHECK refuses the excess)
      if (request.openedBy) await spendOperatorAllowance(client, { payer: request.payer, operator: request.openedBy, amount: request.maxTotal! });
      const hold =
        request.mode === 'escrow'
          ? await placeHoldIn(client, {
              key: escrowKey(request.ref),
              accountId: request.payerAccountId,
              amount: request.maxTotal!,
              multiCapture: true,
              reference: { stream: request.ref },
            })
          : undefined;
      const opened = (await insertStream(client, request, { holdId: hold?.id }))!;
      if (request.members) await insertMembers(client, request.ref, request.members);
      const { route, ...opening } = request;
      await appendEvent(client, { type: 'stream.opened', subject: request.ref, payload: { ...opening }, parties: streamParties(request, request.members) });
      // routed to payee "best": which holder, at which tick, is part of the opening (a repeat reads it back)
      if (route) await appendEvent(client, { type: 'stream.routed', subject: request.ref, payload: { ref: request.ref, ...route }, parties: streamParties(request, request.members) });
      const first = await billTickIn(client, (await lockStreamForTick(client, opened.ref, 1))!, 1);
      if (first.kind === 'insufficient_funds') throw new SluiceError('insufficient_funds', 'the payer cannot pay the first tick');
      return receiptOf(client, request.ref);
    });
  } catch (error) {
    if (!(error instanceof SluiceError) || error.code !== 'insufficient_funds') throw error;
    return recordFailedOpen(pool, request, error.message);
  }
}

/** A distribution's members join (or, having left, join again with a new weight); every credit restarts at zero. */
export async function insertMembers(client: PoolClient, ref: string, members: DistributionMember[]): Promise<void> {
  // two statements: in one, the reset could reach a member's row before the upsert does, and
  // PostgreSQL refuses to change a row twice in one command (a weight change or a re-join failed)
  await client.query(
    `insert into stream_members (stream_ref, account_id, party, weight)
     select $1, * from unnest($2::text[], $3::text[], $4::bigint[])
     on conflict (stream_ref, account_id) do update set weight = excluded.weight, left_at = null, joined_at = now()`,
    [ref, members.map((m) => m.accountId), members.map((m) => m.party), members.map((m) => m.weight)],
  );
  await client.query('update stream_members set residual = 0 where stream_ref = $1', [ref]);
}

/**
 * The stream row: `open` with its escrow hold, or `failed` (closed at once, the
 * failure recorded). A failed row yields to a row already there (the first word wins).
 */
async function insertStream(client: PoolClient, r: StreamRequest, opts: { holdId?: number; failure?: string }): Promise<StreamRow | undefined> {
  const failed = opts.failure !== undefined;
  const { rows } = await client.query<StreamRow>(
    `insert into streams (ref, payer, payee, payer_account_id, payee_account_id, rate_per_tick, max_total, tick_interval_ms,
                          mode, liveness_timeout_ms, grace_ms, hold_id, status, closed_at, close_reason, failure, workflow_id,
                          kind, opening_rate_per_tick, rate_consent, low_balance_ticks, opened_by, shard_key)
     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, case when $14 then now() end, case when $14 then 'insufficient_funds' end, $15, $16,
             $17, $6, $18, $19, $20, $21)
     ${failed ? 'on conflict (ref) do nothing' : ''} returning *`,
    [r.ref, r.payer, r.payee ?? null, r.payerAccountId, r.payeeAccountId ?? null, r.ratePerTick, r.maxTotal ?? null, r.tickIntervalMs, r.mode,
     r.livenessTimeoutMs ?? null, r.graceMs ?? null, opts.holdId ?? null, failed ? 'failed' : 'open', failed, opts.failure ?? null,
     streamWorkflowId(r.ref), r.members ? 'distribution' : 'direct', r.rateConsent ?? 'payer', r.lowBalanceTicks ?? LOW_BALANCE_TICKS_DEFAULT,
     r.openedBy ?? null, shardKeyOf(r.payerAccountId)],
  );
  return rows[0];
}

async function recordFailedOpen(pool: Pool, request: StreamRequest, failure: string): Promise<StreamReceipt> {
  return withTransaction(pool, async (client) => {
    const inserted = await insertStream(client, request, { failure });
    const row = inserted ?? (await getStream(client, request.ref));
    if (inserted) {
      if (request.members) await insertMembers(client, request.ref, request.members);
      await appendEvent(client, { type: 'stream.failed', subject: request.ref, payload: { ref: request.ref, failure }, parties: streamParties(request, request.members) });
    }
    return toReceipt(row);
  });
}

/**
 * Closes a stream: first bills every tick already due at the close (as the billing
 * clock would, liveness judged at each due time), then marks it closed (the row lock
 * makes this the line after which no tick can commit) and releases the unused
 * escrow, in one transaction. Closing a closed stream returns the same receipt.
 */
export function closeStream(pool: Pool, input: { ref: string; reason: CloseReason; closedBy: string }): Promise<StreamReceipt> {
  return withTransaction(pool, async (client) => {
    const s = await lockStreamToClose(client, input.ref);
    if (!s) throw notFound('stream', input.ref);
    if (s.status !== 'open') return receiptOf(client, s.ref);
    // the close instant, read under the row lock: every tick committed before it has an
    // earlier time, none can commit after it (the auditor relies on it), and every
    // tick due by it is billed here first
    // (as text: a JavaScript Date would cut it to the millisecond, before the ticks' own times)
    const { rows } = await client.query<{ at: string; at_ms: string }>('select t.at::text as at, epoch_ms(t.at)::text as at_ms from (select clock_timestamp() as at) t');
    const closedAt = rows[0]!.at;
    await settleDueIn(client, s, Number(rows[0]!.at_ms));
    // a pause still running ends with the close (its time counts as paused)
    await client.query(
      `update streams set status = 'closed', closed_at = $4, close_reason = $2, closed_by = $3,
              paused_ms = paused_ms + coalesce(floor(extract(epoch from $4::timestamptz - paused_at) * 1000)::bigint, 0), paused_at = null
        where ref = $1`,
      [s.ref, input.reason, input.closedBy, closedAt],
    );
    if (s.hold_id !== null) await releaseHoldIfOpen(client, { key: releaseKey(s.ref), holdId: s.hold_id });
    const closed = (await findStreamWithHistory(client, s.ref))!;
    const receipt = toReceipt(closed);
    await appendEvent(client, { type: 'stream.closed', subject: s.ref, payload: { ...receipt }, parties: streamParties(closed, closed.members) });
    return receipt;
  });
}

async function lockStreamToClose(client: PoolClient, ref: string): Promise<LockedStream | undefined> {
  const { rows } = await client.query<LockedStream>('select s.*, epoch_ms(s.opened_at)::text as opened_ms from streams s where s.ref = $1 for update', [ref]);
  return rows[0];
}

/** Ticks one close settles at most (a stream closed after a very long outage bills the rest as skipped time is not owed). */
export const CLOSE_SETTLE_TICKS_MAX = 100_000;

/**
 * Bills, inside a close, every tick of the locked stream already due (unless it is
 * paused or the clock halted it): a direct stream through the batch biller, a
 * distribution one tick at a time. The payee is paid for every tick it was owed.
 */
async function settleDueIn(client: PoolClient, s: LockedStream, nowMs: number): Promise<void> {
  if (s.next_due_ms === null || Number(s.next_due_ms) > nowMs) return;
  if (s.kind === 'direct') {
    await billDueIn(client, [s], nowMs, CLOSE_SETTLE_TICKS_MAX);
    return;
  }
  const graceMs = effectiveGraceMs({ livenessTimeoutMs: s.liveness_timeout_ms ?? undefined, graceMs: s.grace_ms ?? undefined });
  const dueTicks = Math.min(CLOSE_SETTLE_TICKS_MAX, Math.floor((nowMs - Number(s.next_due_ms)) / s.tick_interval_ms) + 1);
  for (let tick = s.last_tick + 1; tick <= s.last_tick + dueTicks; tick++) {
    const ctx = (await lockStreamForTick(client, s.ref, tick))!;
    await client.query('savepoint settle_tick');
    let outcome: TickOutcome;
    try {
      outcome = await billTickIn(client, ctx, tick);
    } catch (error) {
      // a tick the payer cannot cover, or a member that can no longer be paid: the close goes on
      await client.query('rollback to savepoint settle_tick');
      if (error instanceof SluiceError || sluiceErrorFromDatabase(error)) return;
      throw error;
    }
    if (haltAfter(outcome, graceMs) !== undefined) return;
  }
}
