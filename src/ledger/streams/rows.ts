import type { Queryable } from '../../db/pool';
import { notFound } from '../../domain/errors';
import { ticksDueBy, type CloseReason, type StreamKind, type StreamPause, type StreamRate, type StreamReceipt, type StreamStatus } from '../../domain/streams';
import type { HaltReason } from '../../domain/billing';
import { assertPageRows } from '../paging';

/**
 * A stream as the ledger stores it (the `streams` row, its controls and a
 * distribution's members) and the reads of it: finders, the list, and the receipt
 * every API answer and event is built from. The money moves in ticks.ts (billing)
 * and lifecycle.ts (open and close).
 */

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
export const membersJson = (where: string) => `case when s.kind = 'distribution' then
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

/** Who may read a stream's events: its payer and payee, or every member of a distribution. */
export const streamParties = (s: { payer: string; payee?: string | null }, members?: { party: string }[]) => [s.payer, ...(s.payee ? [s.payee] : []), ...(members ?? []).map((m) => m.party)];
