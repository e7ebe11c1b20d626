/**
 * bench:streams' books, read after the workers stop, in one snapshot: no tick billed
 * twice, early or after its stream's close; streams and holds agreeing with their
 * ticks; balances summing to zero; every cancel receipt agreeing with the database.
 */
import type pg from 'pg';
import type { StreamReceipt } from '../../src/domain/streams';
import { log } from '../support/runner';

export interface Verification {
  streams: number;
  openLatencyStreams: number;
  streamTicks: number;
  tickTransfers: number;
  duplicateTicks: number;
  /** Ticks billed before they were due: after both the billing transaction's start and the stream's close. */
  billedBeforeDue: number;
  /** Ticks of a closed stream due after its close. */
  dueAfterClose: number;
  streamMismatches: number;
  holdMismatches: number;
  balanceSum: string;
  receiptMismatches: number;
  ok: boolean;
}

export async function verify(monitor: pg.Client, runId: string, receipts: Map<string, StreamReceipt>): Promise<Verification> {
  // one statement: one snapshot, whatever is still committing. A close bills what is due
  // by its own instant (closed_at, clock_timestamp) with the transaction's start as
  // billed_at: a tick is early only if it was due after both.
  const { rows } = await monitor.query<Omit<Verification, 'receiptMismatches' | 'ok'>>(
    `with t as (select k.stream_ref, sum(k.amount) as paid, count(*) as n, max(k.tick) as max_tick,
                       count(*) filter (where k.due_at > greatest(k.billed_at, s.closed_at)) as early,
                       count(*) filter (where k.due_at > s.closed_at) as after_close
                  from stream_ticks k join streams s on s.ref = k.stream_ref group by k.stream_ref)
     select (select count(*) from streams)::int as streams,
            (select count(*) from streams where ref like $1 and status = 'open')::int as "openLatencyStreams",
            (select count(*) from stream_ticks)::bigint as "streamTicks",
            (select count(*) from transfers where kind = 'stream_tick')::bigint as "tickTransfers",
            (select count(*) from (select 1 from transfers where kind = 'stream_tick' group by stream_ref, tick having count(*) > 1) d)::int as "duplicateTicks",
            (select coalesce(sum(early), 0) from t)::bigint as "billedBeforeDue",
            (select coalesce(sum(after_close), 0) from t)::bigint as "dueAfterClose",
            (select count(*) from streams s left join t on t.stream_ref = s.ref
              where s.paid <> coalesce(t.paid, 0) or s.ticks_billed <> coalesce(t.n, 0) or s.last_tick < coalesce(t.max_tick, 0))::int as "streamMismatches",
            (select count(*) from streams s join holds h on h.id = s.hold_id
              where s.mode = 'escrow' and (h.captured <> s.paid or (s.status = 'closed' and h.captured + h.released <> h.amount)))::int as "holdMismatches",
            (select coalesce(sum(balance), 0)::text from accounts) as "balanceSum"`,
    [`lat-${runId}-%`],
  );
  const v = rows[0]!;
  if (v.billedBeforeDue > 0 || v.dueAfterClose > 0) {
    const { rows: early } = await monitor.query(
      `select k.stream_ref, k.tick, k.due_at, k.billed_at, s.opened_at, s.closed_at, s.tick_interval_ms
         from stream_ticks k join streams s on s.ref = k.stream_ref
        where k.due_at > greatest(k.billed_at, s.closed_at) or k.due_at > s.closed_at order by k.billed_at limit 5`,
    );
    log(`ticks billed early, e.g.: ${JSON.stringify(early)}`);
  }
  const { rows: db } = await monitor.query<{ ref: string; paid: number; ticks: number }>(
    'select ref, paid, ticks_billed as ticks from streams where ref = any($1)',
    [[...receipts.keys()]],
  );
  const byRef = new Map(db.map((r) => [r.ref, r]));
  const receiptMismatches = [...receipts.values()].filter((r) => {
    const d = byRef.get(r.ref);
    return r.status !== 'CONFIRMED' || r.reason !== 'cancelled' || !d || d.paid !== r.totalPaid || d.ticks !== r.ticks;
  }).length;
  const ok =
    v.duplicateTicks === 0 &&
    v.tickTransfers === v.streamTicks &&
    v.billedBeforeDue === 0 &&
    v.dueAfterClose === 0 &&
    v.streamMismatches === 0 &&
    v.holdMismatches === 0 &&
    v.openLatencyStreams === 0 &&
    v.balanceSum === '0' &&
    receiptMismatches === 0;
  return { ...v, receiptMismatches, ok };
}
