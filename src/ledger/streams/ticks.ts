import type { Pool, PoolClient } from '../../db/pool';
import { withTransaction } from '../../db/pool';
import { compile, params, sql } from '../../db/sql';
import { notFound, SluiceError } from '../../domain/errors';
import { isLowBalance, moneyLeft, silenceMs, splitKey, tickAmount, tickKey, type TickOutcome } from '../../domain/streams';
import { distributeTick } from '../../domain/distribution';
import { awaitHeartbeatsInFlight, livenessSince, silentParties } from './heartbeats';
import { lockAccounts } from '../accounts';
import { appendEvent, eventValues } from '../events';
import { captureHoldIn, toHold, type Hold } from '../holds';
import { assertCanDebit, postTransfer, type AlongWithTransfer } from '../transfers';
import { membersJson, streamParties, type MemberRow, type StreamRow } from './rows';

/**
 * Billing a stream's ticks one at a time, each under the stream's row lock: the
 * workflow's billTick, a stream's first tick at its opening and a distribution's ticks
 * at its close (lifecycle.ts); a direct stream's due ticks in batches are
 * src/ledger/tickBatch.ts. Also the parties' heartbeats, which a tick reads to tell a
 * partition from a quiet peer.
 */

/** A stream locked for billing a tick, with everything the tick decides on, read in one round trip. */
export interface TickContext {
  stream: StreamRow;
  /** When the tick came due: liveness is judged then, however late it is billed. */
  dueAtMs: number;
  /** The amount of this tick if it was billed before (a retry or a replay). */
  priorAmount: number | null;
  payerSeen: Date;
  payeeSeen: Date;
  /** The escrow hold (escrow mode), read under the stream's lock, which guards it. */
  hold?: Hold;
  /** A distribution's current members (ordered by account), read under the stream's lock, which guards them. */
  members?: MemberRow[];
}

/**
 * Locks the stream row and reads the tick's prior billing and when each party was
 * last seen at the tick's due time: its latest heartbeat at or before then
 * (party_heartbeat_log), or the stream's opening or its latest resume, whichever is later.
 */
export async function lockStreamForTick(client: PoolClient, ref: string, tick: number): Promise<TickContext | undefined> {
  type Row = StreamRow & { due_ms: string; prior_amount: number | null; payer_hb: Date | null; payee_hb: Date | null; hold: Record<string, unknown> | null; members: MemberRow[] | null; row_xmin: string; snapshot_xmin: string | null };
  const lock = () =>
    client.query<Row>({
      name: 'lock-stream-for-tick',
      text: `select s.*, d.due_ms::text as due_ms, s.xmin::text as row_xmin, (select x.xmin::text from streams x where x.ref = s.ref) as snapshot_xmin,
                    (select amount from stream_ticks where stream_ref = s.ref and tick = $2) as prior_amount,
                    (select max(seen_at) from party_heartbeat_log where party_id = s.payer and seen_at <= to_timestamp(d.due_ms / 1000.0)) as payer_hb,
                    (select max(seen_at) from party_heartbeat_log where party_id = s.payee and seen_at <= to_timestamp(d.due_ms / 1000.0)) as payee_hb,
                    (select to_jsonb(h) from holds h where h.id = s.hold_id) as hold,
                    ${membersJson('m.left_at is null')}
               from streams s, lateral (select epoch_ms(s.opened_at) + ($2::bigint - 1) * s.tick_interval_ms + s.paused_ms as due_ms) d
              where s.ref = $1 for update of s`,
      values: [ref, tick],
    });
  let { rows } = await lock();
  // A statement that waited for the lock gets the row as the other transaction left
  // it, but its subqueries still read the snapshot taken before the wait: a tick, a
  // top-up, a pause or a membership change committed meanwhile would go unseen.
  // Every one of those updates the stream row, so a row version (xmin) newer than
  // the snapshot's says so; read again, under the lock now held (rare: one round
  // trip in the common case).
  if (rows[0] && rows[0].row_xmin !== rows[0].snapshot_xmin) ({ rows } = await lock());
  if (!rows[0]) return undefined;
  // a resume restarts the liveness clock: nobody owes heartbeats while the stream
  // stands still, and after it both parties have a full timeout to be seen again
  const since = livenessSince(rows[0]);
  const seen = (hb: Date | null) => (hb && hb > since ? hb : since);
  // a tick about to be skipped first waits for the parties' heartbeats still committing, then reads again
  const silent = silentParties(rows[0], Number(rows[0].due_ms), seen(rows[0].payer_hb).getTime(), seen(rows[0].payee_hb).getTime());
  if (silent.length > 0) {
    await awaitHeartbeatsInFlight(client, silent);
    ({ rows } = await lock());
  }
  const r = rows[0]!;
  const { due_ms, prior_amount, payer_hb, payee_hb, hold, members, row_xmin: _x, snapshot_xmin: _s, ...stream } = r;
  return {
    stream,
    dueAtMs: Number(due_ms),
    priorAmount: prior_amount,
    payerSeen: seen(payer_hb),
    payeeSeen: seen(payee_hb),
    ...(hold && { hold: toHold(hold) }),
    ...(members && { members }),
  };
}

/**
 * Bills tick `tick` inside the caller's transaction, the stream row locked by
 * lockStreamForTick. Exactly once: the tick's key `stream:<ref>:tick:<n>` (the only
 * key a tick may have) is claimed once by the database (transfer_claims; an archived month's ticks by
 * the stream's carried-forward last tick), which refuses a second billing of the
 * same tick. Nothing is written before the funds are checked, so an
 * `insufficient_funds` thrown from here leaves the transaction clean. A paused stream
 * bills nothing and keeps the tick's number for after the resume.
 */
export async function billTickIn(client: PoolClient, ctx: TickContext, tick: number): Promise<TickOutcome> {
  const { stream: s, dueAtMs, payerSeen, payeeSeen } = ctx;
  if (s.status !== 'open') return { kind: 'closed', tick };
  if (ctx.priorAmount !== null) {
    return { kind: 'billed', tick, amount: ctx.priorAmount, paid: s.paid, ticksBilled: s.ticks_billed, completed: capReached(s, s.paid) };
  }
  if (s.paused_at !== null) return { kind: 'paused', tick };
  if (s.liveness_timeout_ms !== null) {
    // judged at the due time (in whole milliseconds, as the batch biller does), however late the tick is billed
    const silentMs = silenceMs(dueAtMs, Math.floor(payerSeen.getTime()), Math.floor(payeeSeen.getTime()));
    if (silentMs >= s.liveness_timeout_ms) return skipTick(client, s, tick, 'partition', silentMs);
  }
  const amount = tickAmount(s.rate_per_tick, s.max_total, s.paid);
  if (amount === 0) return { kind: 'billed', tick, amount: 0, paid: s.paid, ticksBilled: s.ticks_billed, completed: true };
  // the row is ours (locked): paid and ticks_billed after this tick are known here
  const paid = s.paid + amount;
  const ticksBilled = s.ticks_billed + 1;
  // the schedule the workflow's timer follows (domain/streams.ts), for the tick-lag metric
  const dueAt = new Date(dueAtMs);
  const [eventType, eventSubject, eventPayload, eventParties] = eventValues({ type: 'stream.tick', subject: s.ref, payload: { ref: s.ref, tick, amount, paid }, parties: streamParties(s, ctx.members) });
  // the tick row, the stream's totals and the stream.tick event, by name in both statements below
  const p = params({ ref: s.ref, tick, amount, payerSeen, payeeSeen, dueAt, eventType, eventSubject, eventPayload, eventParties });
  let fundsLeft: number | undefined;
  if (s.kind === 'distribution') {
    const members = ctx.members ?? [];
    if (members.length === 0) return skipTick(client, s, tick, 'no_members', 0);
    fundsLeft = await billSplitIn(client, ctx, tick, amount, members);
    await client.query({
      name: 'stream-split-tick',
      ...compile(sql`with k as (insert into stream_ticks (stream_ref, tick, amount, payer_seen_at, payee_seen_at, due_at) values (${p.ref}, ${p.tick}, ${p.amount}, ${p.payerSeen}, ${p.payeeSeen}, ${p.dueAt})),
                  u as (update streams set paid = paid + ${p.amount}, ticks_billed = ticks_billed + 1, last_tick = greatest(last_tick, ${p.tick}), last_billed_at = now() where ref = ${p.ref})
             insert into events (type, subject, payload, parties) values (${p.eventType}, ${p.eventSubject}, ${p.eventPayload}, ${p.eventParties})`),
    });
  } else {
    const refs = { key: tickKey(s.ref, tick), kind: 'stream_tick', amount, streamRef: s.ref, tick };
    // the tick row, the stream's totals and the event ride in the transfer's own statement
    const along: AlongWithTransfer = {
      name: 'stream-tick',
      ctes: sql`k as (insert into stream_ticks (stream_ref, tick, amount, transfer_id, payer_seen_at, payee_seen_at, due_at) select ${p.ref}, ${p.tick}, ${p.amount}, t.id, ${p.payerSeen}, ${p.payeeSeen}, ${p.dueAt} from t),
             u as (update streams set paid = paid + ${p.amount}, ticks_billed = ticks_billed + 1, last_tick = greatest(last_tick, ${p.tick}), last_billed_at = now() where ref = ${p.ref}),
             v as (insert into events (type, subject, payload, parties) select ${p.eventType}, ${p.eventSubject}, ${p.eventPayload}::jsonb || jsonb_build_object('transfer', t.id), ${p.eventParties} from t)`,
    };
    if (s.mode === 'escrow') {
      await captureHoldIn(client, { ...refs, holdId: s.hold_id!, toAccountId: s.payee_account_id! }, ctx.hold, along);
    } else {
      // locked here (postTransfer would lock them anyway) to know what the payer has left
      const locked = await lockAccounts(client, [s.payer_account_id, s.payee_account_id!]);
      await postTransfer(client, { ...refs, debitAccountId: s.payer_account_id, creditAccountId: s.payee_account_id! }, locked, along);
      fundsLeft = locked.get(s.payer_account_id)!.available - amount;
    }
  }
  await warnIfLowBalance(client, s, paid, fundsLeft, ctx.members);
  return { kind: 'billed', tick, amount, paid, ticksBilled, completed: capReached(s, paid) };
}

const capReached = (s: StreamRow, paid: number) => s.max_total !== null && paid >= s.max_total;

/** A tick that came due but is not charged (a partition, a distribution with no members): recorded, its number used. */
async function skipTick(client: PoolClient, s: StreamRow, tick: number, reason: 'partition' | 'no_members', silentMs: number): Promise<TickOutcome> {
  await client.query(
    `with skip as (insert into stream_skips (stream_ref, tick, reason, silent_ms) values ($1, $2, $3, $4) on conflict do nothing)
     update streams set last_tick = greatest(last_tick, $2) where ref = $1`,
    [s.ref, tick, reason, silentMs],
  );
  return { kind: 'skipped', tick, silentMs };
}

/**
 * A distribution tick: the amount split by weight (domain/distribution.ts), one
 * transfer per member paid (captured from the escrow, or straight from the payer in
 * payg), the members' credits and totals updated. Returns the payer's funds left in
 * payg (escrow: undefined, the cap says it).
 */
async function billSplitIn(client: PoolClient, ctx: TickContext, tick: number, amount: number, members: MemberRow[]): Promise<number | undefined> {
  const s = ctx.stream;
  const parts = distributeTick(amount, members.map((m) => ({ key: m.accountId, weight: m.weight, credit: m.residual })), tick);
  const locked = await lockAccounts(client, [s.payer_account_id, ...members.map((m) => m.accountId)]);
  const payer = locked.get(s.payer_account_id)!;
  if (s.mode === 'payg') assertCanDebit(payer, amount);
  for (const p of parts) {
    if (p.part === 0) continue;
    const refs = { key: splitKey(s.ref, tick, p.key), kind: 'stream_split', amount: p.part, streamRef: s.ref, tick };
    if (s.mode === 'escrow') await captureHoldIn(client, { ...refs, holdId: s.hold_id!, toAccountId: p.key }, ctx.hold);
    else await postTransfer(client, { ...refs, debitAccountId: s.payer_account_id, creditAccountId: p.key }, locked);
  }
  await client.query(
    `update stream_members m set residual = p.credit, received = m.received + p.part
       from unnest($2::text[], $3::bigint[], $4::bigint[]) as p(account_id, part, credit)
      where m.stream_ref = $1 and m.account_id = p.account_id`,
    [s.ref, parts.map((p) => p.key), parts.map((p) => p.part), parts.map((p) => p.credit)],
  );
  return s.mode === 'payg' ? payer.available - amount : undefined;
}

/**
 * stream.low_balance, once (again after a top-up): when this tick leaves the money
 * for `low_balance_ticks` ticks or fewer at the current rate. Escrow: what is left
 * of the cap is what the hold still has; payg: the payer's available balance too.
 */
async function warnIfLowBalance(client: PoolClient, s: StreamRow, paid: number, available: number | undefined, members?: MemberRow[]): Promise<void> {
  if (s.low_balance_at !== null) return;
  const { ticksLeft, capLeft } = moneyLeft({ mode: s.mode, ratePerTick: s.rate_per_tick, maxTotal: s.max_total, paid, available });
  if (!isLowBalance(ticksLeft, s.low_balance_ticks)) return;
  await client.query('update streams set low_balance_at = now() where ref = $1', [s.ref]);
  await appendEvent(client, {
    type: 'stream.low_balance',
    subject: s.ref,
    payload: { ref: s.ref, ticksLeft, ratePerTick: s.rate_per_tick, ...(capLeft !== null && { capLeft }), ...(available !== undefined && { available }) },
    parties: streamParties(s, members),
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

