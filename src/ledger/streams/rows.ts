import type { Pool, PoolClient, Queryable } from '../../db/pool';
import { withTransaction } from '../../db/pool';
import { notFound, SluiceError, sluiceErrorFromDatabase } from '../../domain/errors';
import { assertUnits } from '../../domain/money';
import {
  effectiveGraceMs,
  escrowKey,
  isLowBalance,
  releaseKey,
  silenceMs,
  splitKey,
  moneyLeft,
  LOW_BALANCE_TICKS_DEFAULT,
  type DistributionMember,
  type StreamKind,
  type StreamPause,
  type StreamRate,
  streamWorkflowId,
  tickAmount,
  tickKey,
  ticksDueBy,
  type CloseReason,
  type StreamReceipt,
  type StreamRequest,
  type StreamStatus,
  type TickOutcome,
} from '../../domain/streams';
import { distributeTick } from '../../domain/distribution';
import { haltAfter, shardKeyOf, type HaltReason } from '../../domain/billing';
import { billDueIn, livenessSince, type LockedStream } from '../tickBatch';
import { lockAccounts } from '../accounts';
import { appendEvent, eventValues } from '../events';
import { captureHoldIn, placeHoldIn, releaseHoldIfOpen, toHold, type Hold } from '../holds';
import { spendOperatorAllowance } from '../operators';
import { assertCanDebit, postTransfer, type AlongWithTransfer } from '../transfers';
import { assertPageRows } from '../paging';

export interface StreamRow {
  ref: string;
  kind: StreamKind;
  payer: string;
  payee: string | null;
  payer_account_id: string;
  payee_account_id: string | null;
  rate_per_tick: number;
  max_total: number | null;
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
  opening_rate_per_tick: number;
  deposited: number;
  paused_at: Date | null;
  paused_ms: number;
  resumed_at: Date | null;
  rate_consent: 'payer' | 'payee';
  proposed_rate_per_tick: number | null;
  low_balance_ticks: number;
  low_balance_at: Date | null;
  opened_by: string | null;
  /** A stable hash of the payer's account: the billing clock's shard is shard_key % shards. */
  shard_key: number;
  /** Set by the billing clock when it stopped billing the stream; its workflow closes it. */
  halted_reason: HaltReason | null;
  /** When the next tick comes due (epoch ms); null while closed, paused or halted. */
  next_due_ms: string | null;
  /** With withHistory: ticks that came due but were not charged (stream_skips). */
  ticks_skipped?: number;
  /** With withHistory and in lists: the escrow hold's released part (null for payg). */
  escrow_released?: string | null;
  /** With withHistory: the stream's controls, oldest first, and a distribution's members. */
  controls?: StreamControl[];
  members?: MemberRow[];
}

export interface StreamControl {
  action: 'deposit' | 'pause' | 'resume' | 'rate_proposed' | 'rate_changed' | 'member_joined' | 'member_left';
  by: string;
  onBehalfOf: string | null;
  at: string;
  details: Record<string, unknown>;
}

export interface MemberRow {
  accountId: string;
  party: string;
  weight: number;
  residual: number;
  received: number;
  left: boolean;
}

const STATUS: Record<StreamRow['status'], StreamStatus> = { open: 'STREAMING', closed: 'CONFIRMED', failed: 'FAILED' };

/**
 * A stream row as its receipt. Read with its history (withHistory), the receipt also
 * lists the pauses, the rate history and a distribution's members.
 */
export function toReceipt(r: StreamRow): StreamReceipt {
  const receipt: StreamReceipt = {
    ref: r.ref,
    status: r.status === 'open' && r.paused_at !== null ? 'PAUSED' : STATUS[r.status],
    payer: r.payer,
    mode: r.mode,
    ratePerTick: r.rate_per_tick,
    ticks: r.ticks_billed,
    totalPaid: r.paid,
    openedAt: r.opened_at.toISOString(),
  };
  if (r.kind === 'distribution') receipt.kind = 'distribution';
  if (r.payee !== null) receipt.payee = r.payee;
  receipt.fromAccountId = r.payer_account_id;
  if (r.kind !== 'distribution' && r.payee_account_id !== null) receipt.toAccountId = r.payee_account_id;
  if (r.max_total !== null) receipt.maxTotal = r.max_total;
  if (r.closed_at) receipt.closedAt = r.closed_at.toISOString();
  if (r.close_reason) receipt.reason = r.close_reason;
  if (r.closed_by) receipt.closedBy = r.closed_by;
  if (r.failure) receipt.failure = r.failure;
  if (r.opened_by) receipt.openedBy = r.opened_by;
  receipt.tickIntervalMs = r.tick_interval_ms;
  if (r.closed_at) receipt.ticksDue = ticksDueBy(r.opened_at.getTime(), r.tick_interval_ms, Number(r.paused_ms), r.closed_at.getTime());
  if (r.ticks_skipped !== undefined) receipt.ticksSkipped = r.ticks_skipped;
  if (r.deposited > 0) receipt.deposited = r.deposited;
  // what the escrow gave back to the payer at the close: the hold's released part
  if (r.closed_at && r.escrow_released !== undefined && r.escrow_released !== null) receipt.escrowReturned = Number(r.escrow_released);
  if (r.controls) {
    const pauses = pausesOf(r.controls);
    if (pauses.length > 0) receipt.pauses = pauses;
    receipt.rates = ratesOf(r);
  }
  if (r.members) receipt.members = r.members.map(({ residual: _r, left, ...m }) => ({ ...m, ...(left && { left }) }));
  return receipt;
}

/** Pause/resume pairs in order; a pause still running (or ended by the close) has no resumedAt. */
function pausesOf(controls: StreamControl[]): StreamPause[] {
  const pauses: StreamPause[] = [];
  for (const c of controls) {
    if (c.action === 'pause') pauses.push({ pausedAt: c.at, by: c.by });
    else if (c.action === 'resume' && pauses.length > 0) pauses[pauses.length - 1]!.resumedAt = c.at;
  }
  return pauses;
}

/** The opening rate from tick 1, then each change from the tick it took effect. */
function ratesOf(r: StreamRow): StreamRate[] {
  const opening: StreamRate = { ratePerTick: r.opening_rate_per_tick, fromTick: 1, at: r.opened_at.toISOString(), by: r.opened_by ?? r.payer };
  return [
    opening,
    ...r.controls!.filter((c) => c.action === 'rate_changed').map((c) => ({
      ratePerTick: c.details.ratePerTick as number,
      fromTick: c.details.fromTick as number,
      at: c.at,
      by: c.by,
      ...(typeof c.details.agreedBy === 'string' && { agreedBy: c.details.agreedBy }),
    })),
  ];
}

export async function findStream(db: Queryable, ref: string, forUpdate = false): Promise<StreamRow | undefined> {
  const { rows } = await db.query<StreamRow>(`select * from streams where ref = $1 ${forUpdate ? 'for update' : ''}`, [ref]);
  return rows[0];
}

/**
 * A distribution's members (those matching `where`) as MemberRow JSON, ordered by
 * account, as a column `members` of a query over `streams s`; null for a direct stream.
 */
const membersJson = (where: string) => `case when s.kind = 'distribution' then
  (select coalesce(jsonb_agg(jsonb_build_object('accountId', m.account_id, 'party', m.party, 'weight', m.weight, 'residual', m.residual,
                                                'received', m.received, 'left', m.left_at is not null) order by m.account_id), '[]')
     from stream_members m where m.stream_ref = s.ref and ${where}) end as members`;

/** The escrow hold's released part, as a column of a query over `streams s` (null for payg). */
const ESCROW_RELEASED = `(select h.released from holds h where h.id = s.hold_id) as escrow_released`;

/** A stream with its controls and members, for a full receipt or view (one round trip). */
export async function findStreamWithHistory(db: Queryable, ref: string): Promise<StreamRow | undefined> {
  const { rows } = await db.query<StreamRow>(
    `select s.*,
            (select coalesce(jsonb_agg(jsonb_build_object('action', c.action, 'by', c.by_party, 'onBehalfOf', c.on_behalf_of,
                                                          'at', to_char(c.at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), 'details', c.details) order by c.id), '[]')
               from stream_controls c where c.stream_ref = s.ref) as controls,
            (select count(*)::int from stream_skips k where k.stream_ref = s.ref) as ticks_skipped,
            ${ESCROW_RELEASED},
            ${membersJson('true')}
       from streams s where s.ref = $1`,
    [ref],
  );
  const row = rows[0];
  if (row && row.members === null) delete row.members;
  return row;
}

/** The full receipt of a stream known to exist (read in the transaction that just changed it). */
export const receiptOf = async (db: Queryable, ref: string): Promise<StreamReceipt> => toReceipt((await findStreamWithHistory(db, ref))!);

export async function getStreamWithHistory(db: Queryable, ref: string): Promise<StreamRow> {
  const row = await findStreamWithHistory(db, ref);
  if (!row) throw notFound('stream', ref);
  return row;
}

export async function getStream(db: Queryable, ref: string): Promise<StreamRow> {
  const row = await findStream(db, ref);
  if (!row) throw notFound('stream', ref);
  return row;
}

/** Streams one page of GET /v1/streams holds at most. */
export const STREAMS_PAGE_MAX = 100;

export interface StreamListQuery {
  /** Only the streams this party pays, is paid by, is a member of, or operates for the payer of; all for undefined (the admin). */
  party?: string;
  /** A row status, or 'paused': open streams whose clock a pause stopped. */
  status?: StreamRow['status'] | 'paused';
  /** Only streams this party pays, is paid by or is a member of (within what the caller sees). */
  counterparty?: string;
  /** Only streams whose ref starts with this. */
  refPrefix?: string;
  /** The last ref of the previous page: the page continues after it, newest first. */
  after?: string;
  limit: number;
}

/**
 * Streams newest first (opened_at, then ref, so the order is total and a ref is a
 * cursor), scoped as GET /v1/streams/:ref is: whatever a party could open one by
 * one, it sees listed. An unknown cursor gives an empty page.
 */
export async function listStreams(db: Queryable, q: StreamListQuery): Promise<StreamRow[]> {
  const { rows } = await db.query<StreamRow>(
    `select s.*, ${ESCROW_RELEASED} from streams s
      where ($1::text is null
             or s.payer = $1 or s.payee = $1
             or exists (select 1 from stream_members m where m.stream_ref = s.ref and m.party = $1)
             or exists (select 1 from operator_grants g where g.payer = s.payer and g.operator = $1 and g.revoked_at is null))
        and ($2::text is null or s.status = $2 or ($2 = 'paused' and s.status = 'open' and s.paused_at is not null))
        and ($3::text is null or (s.opened_at, s.ref) < (select c.opened_at, c.ref from streams c where c.ref = $3))
        and ($5::text is null or s.payer = $5 or s.payee = $5 or exists (select 1 from stream_members m where m.stream_ref = s.ref and m.party = $5))
        and ($6::text is null or starts_with(s.ref, $6))
      order by s.opened_at desc, s.ref desc
      limit $4`,
    [q.party ?? null, q.status ?? null, q.after ?? null, assertPageRows(q.limit, STREAMS_PAGE_MAX, 'stream'), q.counterparty ?? null, q.refPrefix ?? null],
  );
  return rows;
}

/** A stream locked for billing a tick, with everything the tick decides on, read in one round trip. */
interface TickContext {
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
async function lockStreamForTick(client: PoolClient, ref: string, tick: number): Promise<TickContext | undefined> {
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
  const r = rows[0];
  if (!r) return undefined;
  const { due_ms, prior_amount, payer_hb, payee_hb, hold, members, row_xmin: _x, snapshot_xmin: _s, ...stream } = r;
  // a resume restarts the liveness clock: nobody owes heartbeats while the stream
  // stands still, and after it both parties have a full timeout to be seen again
  const since = livenessSince(stream);
  const seen = (hb: Date | null) => (hb && hb > since ? hb : since);
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
 * lockStreamForTick. Exactly once: the key `stream:<ref>:tick:<n>`, the stream_ticks
 * primary key and a unique index on transfers all refuse a second billing of the
 * same tick. Nothing is written before the funds are checked, so an
 * `insufficient_funds` thrown from here leaves the transaction clean. A paused stream
 * bills nothing and keeps the tick's number for after the resume.
 */
async function billTickIn(client: PoolClient, ctx: TickContext, tick: number): Promise<TickOutcome> {
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
  const tickEvent = eventValues({ type: 'stream.tick', subject: s.ref, payload: { ref: s.ref, tick, amount, paid }, parties: streamParties(s, ctx.members) });
  let fundsLeft: number | undefined;
  if (s.kind === 'distribution') {
    const members = ctx.members ?? [];
    if (members.length === 0) return skipTick(client, s, tick, 'no_members', 0);
    fundsLeft = await billSplitIn(client, ctx, tick, amount, members);
    await client.query({
      name: 'stream-split-tick',
      text: `with k as (insert into stream_ticks (stream_ref, tick, amount, payer_seen_at, payee_seen_at, due_at) values ($1, $2, $3, $4, $5, $10)),
                  u as (update streams set paid = paid + $3, ticks_billed = ticks_billed + 1, last_tick = greatest(last_tick, $2), last_billed_at = now() where ref = $1)
             insert into events (type, subject, payload, parties) values ($6, $7, $8, $9)`,
      values: [s.ref, tick, amount, payerSeen, payeeSeen, ...tickEvent, dueAt],
    });
  } else {
    const refs = { key: tickKey(s.ref, tick), kind: 'stream_tick', amount, streamRef: s.ref, tick };
    // the tick row, the stream's totals and the event ride in the transfer's own statement
    const along: AlongWithTransfer = {
      name: 'stream-tick',
      ctes: `k as (insert into stream_ticks (stream_ref, tick, amount, transfer_id, payer_seen_at, payee_seen_at, due_at) select $15, $16, $17, t.id, $18, $19, $24 from t),
             u as (update streams set paid = paid + $17, ticks_billed = ticks_billed + 1, last_tick = greatest(last_tick, $16), last_billed_at = now() where ref = $15),
             v as (insert into events (type, subject, payload, parties) select $20, $21, $22::jsonb || jsonb_build_object('transfer', t.id), $23 from t)`,
      values: [s.ref, tick, amount, payerSeen, payeeSeen, ...tickEvent, dueAt],
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

/** Who may read a stream's events: its payer and payee, or every member of a distribution. */
export const streamParties = (s: { payer: string; payee?: string | null }, members?: { party: string }[]) => [s.payer, ...(s.payee ? [s.payee] : []), ...(members ?? []).map((m) => m.party)];

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

/**
 * Opens a stream and bills its first tick in one transaction: the stream row, the
 * escrow hold (escrow mode) and tick 1 commit together or not at all, so a stream
 * the payer cannot pay for charges nothing. Such a stream is recorded as failed.
 * Re-opening the same ref returns the stream as it is.
 */
export async function openStream(pool: Pool, request: StreamRequest): Promise<StreamReceipt> {
  assertUnits(request.ratePerTick, 'ratePerTick');
  if (request.maxTotal !== undefined) assertUnits(request.maxTotal, 'maxTotal');
  try {
    return await withTransaction(pool, async (client) => {
      const existing = await findStream(client, request.ref, true);
      if (existing) return toReceipt(existing);
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
      await appendEvent(client, { type: 'stream.opened', subject: request.ref, payload: { ...request }, parties: streamParties(request, request.members) });
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

/** How long heartbeats are kept: a tick billed later than this after it came due (a longer outage) counts its parties as unseen. */
export const HEARTBEAT_HISTORY_MS = 3_600_000;

/**
 * A party says it is alive; streams use it to tell a partition from a quiet peer.
 * The history (party_heartbeat_log) lets a tick billed late be judged at its due
 * time; each heartbeat trims the party's own history past HEARTBEAT_HISTORY_MS.
 */
export async function recordHeartbeat(db: Queryable, party: string): Promise<string> {
  const { rows } = await db.query<{ last_seen_at: Date }>({
    name: 'record-heartbeat',
    text: `with logged as (insert into party_heartbeat_log (party_id, seen_at) values ($1, now()) on conflict do nothing),
                trimmed as (delete from party_heartbeat_log where party_id = $1 and seen_at < now() - make_interval(secs => $2 / 1000.0))
           insert into party_heartbeats (party_id, last_seen_at) values ($1, now())
           on conflict (party_id) do update set last_seen_at = excluded.last_seen_at returning last_seen_at`,
    values: [party, HEARTBEAT_HISTORY_MS],
  });
  return rows[0]!.last_seen_at.toISOString();
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
