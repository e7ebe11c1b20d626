import type { Pool, PoolClient } from '../db/pool';
import { withTransaction } from '../db/pool';
import { notFound, SluiceError } from '../domain/errors';
import { AMOUNT_UNITS_MAX, assertUnits } from '../domain/money';
import { createHash } from 'node:crypto';
import { depositKey, DISTRIBUTION_MEMBERS_MAX, type DistributionMember, type StreamReceipt } from '../domain/streams';
import { lockAccounts } from './accounts';
import { appendEvent } from './events';
import { idempotent } from './idempotency';
import { insertMembers } from './streams/lifecycle';
import { findStream, receiptOf, streamParties, type StreamControl, type StreamRow } from './streams/rows';
import { postTransfer } from './transfers';

/**
 * The controls of an open stream, each one transaction under the stream's row lock,
 * the lock every tick takes first: a control commits between two ticks, never
 * inside one. Each is logged in stream_controls with who did it (and for whom).
 * Top-ups, rate changes and membership need nothing from the workflow (the next
 * tick reads the row); pause and resume change its timers, so the workflow calls
 * them (workflows/stream.ts).
 */

export interface Actor {
  /** Who did it: a party, or `admin`. */
  by: string;
  /** The payer an operator acted for. */
  onBehalfOf?: string;
}

async function lockOpenStream(client: PoolClient, ref: string): Promise<StreamRow> {
  const s = await findStream(client, ref, true);
  if (!s) throw notFound('stream', ref);
  if (s.status !== 'open') throw new SluiceError('invalid_state', `stream ${ref} is ${s.status === 'closed' ? 'closed' : 'failed'}`, { ref, status: s.status });
  return s;
}

/**
 * Logs a control and touches the stream row, in one statement. Every control comes
 * through here, so every one leaves a new row version: a tick that waited on the
 * stream's lock sees from it that what it read beside the row (members, hold) may
 * have changed, and reads again (lockStreamForTick in ledger/streams/ticks.ts).
 */
async function recordControl(client: PoolClient, s: StreamRow, action: StreamControl['action'], actor: Actor, details: Record<string, unknown>): Promise<void> {
  await client.query(
    `with c as (insert into stream_controls (stream_ref, action, by_party, on_behalf_of, details) values ($1, $2, $3, $4, $5))
     update streams set kind = kind where ref = $1`,
    [
    s.ref,
    action,
    actor.by,
    actor.onBehalfOf ?? null,
    JSON.stringify(details),
  ]);
  const members = s.kind === 'distribution' ? (await client.query<{ party: string }>('select party from stream_members where stream_ref = $1', [s.ref])).rows : undefined;
  await appendEvent(client, {
    type: `stream.${action}`,
    subject: s.ref,
    payload: { ref: s.ref, by: actor.by, ...(actor.onBehalfOf && { onBehalfOf: actor.onBehalfOf }), ...details },
    parties: [...streamParties(s, members), ...(actor.by === 'admin' ? [] : [actor.by])],
  });
}


/**
 * A top-up: `amount` from the depositor's account into the stream's escrow, and
 * maxTotal grows by as much. Anyone may top a stream up. From another party's
 * account the money first moves to the payer's (a `stream_deposit` transfer); in
 * escrow mode the escrow hold then grows by the amount (the holds trigger allows a
 * stream's hold to grow, never to shrink). Idempotent by key; a low-balance warning
 * may fire again afterwards.
 */
export function depositToStream(pool: Pool, input: { ref: string; key: string; fromAccountId: string; amount: number } & Actor): Promise<StreamReceipt> {
  assertUnits(input.amount, 'amount');
  // the caller's (scoped) key, hashed: a ref and a key of the longest kinds still fit the 300-character key columns
  const key = depositKey(input.ref, createHash('sha256').update(input.key).digest('hex'));
  return withTransaction(pool, (client) =>
    idempotent(client, key, 'stream.deposit', input, async () => {
      const s = await lockOpenStream(client, input.ref);
      if (s.max_total !== null && s.paid >= s.max_total) {
        throw new SluiceError('invalid_state', `stream ${s.ref} has reached its maxTotal and is closing: a top-up would only be released`, { ref: s.ref });
      }
      if (s.max_total !== null && s.max_total + input.amount > AMOUNT_UNITS_MAX) {
        throw new SluiceError('limit_exceeded', `maxTotal would pass ${AMOUNT_UNITS_MAX}`, { ref: s.ref, maxTotal: s.max_total });
      }
      if (s.max_total === null && input.fromAccountId === s.payer_account_id) {
        throw new SluiceError('invalid_request', `stream ${s.ref} is open-ended and bills ${s.payer_account_id} directly: a deposit from that account changes nothing`);
      }
      // the accounts before the hold (the lock order, src/ledger/accounts.ts), also when the payer tops up its own stream
      const accounts = await lockAccounts(client, [...new Set([input.fromAccountId, s.payer_account_id])]);
      if (input.fromAccountId !== s.payer_account_id) {
        await postTransfer(
          client,
          { key: `${key}:transfer`, kind: 'stream_deposit', debitAccountId: input.fromAccountId, creditAccountId: s.payer_account_id, amount: input.amount, streamRef: s.ref },
          accounts,
        );
      }
      if (s.hold_id !== null) {
        // the payer's available balance must cover the growth: available >= 0 is a CHECK
        await client.query(`update holds set amount = amount + $2 where id = $1`, [s.hold_id, input.amount]).catch((e: { code?: string; constraint?: string }) => {
          if (e.code === '23514' && e.constraint === 'available_not_negative') {
            throw new SluiceError('insufficient_funds', `account ${s.payer_account_id} cannot cover a top-up of ${input.amount}`, { account: s.payer_account_id, amount: input.amount });
          }
          throw e;
        });
      }
      await client.query(`update streams set max_total = max_total + $2, deposited = deposited + $2, low_balance_at = null where ref = $1`, [s.ref, input.amount]);
      await recordControl(client, s, 'deposit', input, { amount: input.amount, fromAccountId: input.fromAccountId, ...(s.max_total !== null && { maxTotal: s.max_total + input.amount }) });
      return receiptOf(client, s.ref);
    }),
  );
}

export interface PauseState {
  /** When the current pause began (null: running). */
  pausedAtMs: number | null;
  /** Time spent paused before the current pause. */
  pausedMs: number;
  /** What the stream has billed so far (the billing clock bills it; the workflow's view shows it as of each control). */
  paid?: number;
  ticksBilled?: number;
  lastTick?: number;
}

/**
 * Pause number `seq` of the stream (the workflow counts them, so a retried activity
 * finds its own pause already recorded). No tick bills while paused.
 */
export function pauseStream(pool: Pool, input: { ref: string; seq: number } & Actor): Promise<PauseState> {
  return withTransaction(pool, async (client) => {
    const s = await lockOpenStream(client, input.ref);
    if ((await countControls(client, s.ref, 'pause')) < input.seq) {
      if (s.paused_at !== null) throw new SluiceError('invalid_state', `stream ${s.ref} is already paused`, { ref: s.ref });
      await client.query(`update streams set paused_at = now() where ref = $1`, [s.ref]);
      await recordControl(client, s, 'pause', input, { pause: input.seq });
    }
    return pauseStateOf(client, s.ref);
  });
}

/** Resume number `seq`: the time paused joins paused_ms, which pushes every later tick back. */
export function resumeStream(pool: Pool, input: { ref: string; seq: number } & Actor): Promise<PauseState> {
  return withTransaction(pool, async (client) => {
    const s = await lockOpenStream(client, input.ref);
    if ((await countControls(client, s.ref, 'resume')) < input.seq) {
      if (s.paused_at === null) throw new SluiceError('invalid_state', `stream ${s.ref} is not paused`, { ref: s.ref });
      await client.query(
        `update streams set paused_ms = paused_ms + floor(extract(epoch from now() - paused_at) * 1000)::bigint, paused_at = null, resumed_at = now() where ref = $1`,
        [s.ref],
      );
      await recordControl(client, s, 'resume', input, { resume: input.seq });
    }
    return pauseStateOf(client, s.ref);
  });
}

async function countControls(client: PoolClient, ref: string, action: StreamControl['action']): Promise<number> {
  const { rows } = await client.query<{ n: number }>(`select count(*)::int as n from stream_controls where stream_ref = $1 and action = $2`, [ref, action]);
  return rows[0]!.n;
}

async function pauseStateOf(client: PoolClient, ref: string): Promise<PauseState> {
  const { rows } = await client.query<{ paused_at: Date | null; paused_ms: number; paid: number; ticks_billed: number; last_tick: number }>(
    `select paused_at, paused_ms, paid, ticks_billed, last_tick from streams where ref = $1`,
    [ref],
  );
  const r = rows[0]!;
  return { pausedAtMs: r.paused_at?.getTime() ?? null, pausedMs: r.paused_ms, paid: Number(r.paid), ticksBilled: r.ticks_billed, lastTick: r.last_tick };
}

/**
 * A new rate from the next tick on. A stream opened with rateConsent `payee` takes
 * the payer's change as a proposal that applies once the payee accepts it
 * (acceptRate); otherwise it applies at once. The history is kept as controls.
 */
export function changeRate(pool: Pool, input: { ref: string; ratePerTick: number } & Actor): Promise<StreamReceipt & { proposedRatePerTick?: number }> {
  assertUnits(input.ratePerTick, 'ratePerTick');
  return withTransaction(pool, async (client) => {
    const s = await lockOpenStream(client, input.ref);
    if (s.rate_consent === 'payee') {
      await client.query(`update streams set proposed_rate_per_tick = $2 where ref = $1`, [s.ref, input.ratePerTick]);
      await recordControl(client, s, 'rate_proposed', input, { ratePerTick: input.ratePerTick, from: s.rate_per_tick });
      return { ...(await receiptOf(client, s.ref)), proposedRatePerTick: input.ratePerTick };
    }
    return applyRate(client, s, input.ratePerTick, input);
  });
}

/** The payee agrees to the payer's proposal (it names the rate it agrees to, so a newer proposal is not taken by mistake). */
export function acceptRate(pool: Pool, input: { ref: string; ratePerTick: number } & Actor): Promise<StreamReceipt> {
  return withTransaction(pool, async (client) => {
    const s = await lockOpenStream(client, input.ref);
    if (s.proposed_rate_per_tick !== input.ratePerTick) {
      throw new SluiceError('invalid_state', s.proposed_rate_per_tick === null ? `stream ${s.ref} has no rate proposal` : `the proposal on stream ${s.ref} is ${s.proposed_rate_per_tick} per tick, not ${input.ratePerTick}`, {
        ref: s.ref,
        proposedRatePerTick: s.proposed_rate_per_tick,
      });
    }
    // the change is the proposer's, agreed by the payee
    const { rows } = await client.query<{ by_party: string }>(
      `select by_party from stream_controls where stream_ref = $1 and action = 'rate_proposed' order by id desc limit 1`,
      [s.ref],
    );
    return applyRate(client, s, input.ratePerTick, { by: rows[0]?.by_party ?? s.payer }, input.by);
  });
}

async function applyRate(client: PoolClient, s: StreamRow, ratePerTick: number, actor: Actor, agreedBy?: string): Promise<StreamReceipt> {
  const fromTick = s.last_tick + 1;
  await client.query(`update streams set rate_per_tick = $2, proposed_rate_per_tick = null where ref = $1`, [s.ref, ratePerTick]);
  await recordControl(client, s, 'rate_changed', actor, { ratePerTick, from: s.rate_per_tick, fromTick, ...(agreedBy && { agreedBy }) });
  return receiptOf(client, s.ref);
}

/** Members join a distribution (or change weight) between two ticks; the credits restart. */
export function joinDistribution(pool: Pool, input: { ref: string; members: DistributionMember[] } & Actor): Promise<StreamReceipt> {
  return withTransaction(pool, async (client) => {
    const s = await lockDistribution(client, input.ref);
    const { rows } = await client.query<{ n: number }>(
      `select count(*)::int as n from stream_members where stream_ref = $1 and left_at is null and not (account_id = any($2))`,
      [s.ref, input.members.map((m) => m.accountId)],
    );
    if (rows[0]!.n + input.members.length > DISTRIBUTION_MEMBERS_MAX) {
      throw new SluiceError('limit_exceeded', `a distribution has at most ${DISTRIBUTION_MEMBERS_MAX} members`, { ref: s.ref, members: rows[0]!.n });
    }
    await insertMembers(client, s.ref, input.members);
    await recordControl(client, s, 'member_joined', input, { members: input.members });
    return receiptOf(client, s.ref);
  });
}

/** A member leaves between two ticks (keeping what it received); the others' credits restart. */
export function leaveDistribution(pool: Pool, input: { ref: string; accountId: string } & Actor): Promise<StreamReceipt> {
  return withTransaction(pool, async (client) => {
    const s = await lockDistribution(client, input.ref);
    const { rowCount } = await client.query(
      `with gone as (update stream_members set left_at = now() where stream_ref = $1 and account_id = $2 and left_at is null returning 1)
       update stream_members set residual = 0 where stream_ref = $1 and exists (select 1 from gone)`,
      [s.ref, input.accountId],
    );
    if (!rowCount) throw new SluiceError('not_found', `${input.accountId} is not a member of stream ${s.ref}`, { ref: s.ref, accountId: input.accountId });
    await recordControl(client, s, 'member_left', input, { accountId: input.accountId });
    return receiptOf(client, s.ref);
  });
}

async function lockDistribution(client: PoolClient, ref: string): Promise<StreamRow> {
  const s = await lockOpenStream(client, ref);
  if (s.kind !== 'distribution') throw new SluiceError('invalid_request', `stream ${ref} pays one payee; members belong to distribution streams`, { ref });
  return s;
}

/** The distributions an account is a member of (elimination takes a subaccount out of them). */
export async function leaveAllDistributions(pool: Pool, accountId: string, by: string): Promise<void> {
  const { rows } = await pool.query<{ stream_ref: string }>(
    `select m.stream_ref from stream_members m join streams s on s.ref = m.stream_ref where m.account_id = $1 and m.left_at is null and s.status = 'open'`,
    [accountId],
  );
  for (const r of rows) {
    await leaveDistribution(pool, { ref: r.stream_ref, accountId, by }).catch((e) => {
      // closed or left meanwhile: nothing to leave
      if (!(e instanceof SluiceError)) throw e;
    });
  }
}
