import type { Queryable } from '../db/pool';
import type { BilledTick } from '../domain/streams';
import { pageRows } from './paging';

/** Ticks one page of GET /v1/streams/:ref/ticks holds at most. */
export const STREAM_TICKS_PAGE_MAX = 1000;

/**
 * A stream's billed ticks in tick order, after tick `after` (0: from the first): one
 * range of stream_ticks' primary key (stream_ref, tick, billed_at), so a page costs its own rows however long the
 * stream ran. Ticks are billed in order and never rewritten, so the tick number is a
 * stable cursor. `paid` sums every tick up to each one (the earlier ticks through the
 * same index, once per page; an archived month's ticks by their carried-forward total).
 * The ticks of an archived month are not listed: they are in sluice_archive.
 */
export async function listStreamTicks(db: Queryable, ref: string, opts: { after: number; limit: number }): Promise<BilledTick[]> {
  const { rows } = await db.query<{ tick: number; amount: string; paid: string; billed_at: Date; transfer_id: string }>(
    `with page as (
       select tick, amount, billed_at, transfer_id from stream_ticks
        where stream_ref = $1 and tick > $2 order by tick limit $3)
     select p.tick, p.amount, p.billed_at, p.transfer_id,
            (select coalesce(sum(amount), 0) from stream_ticks where stream_ref = $1 and tick <= $2)
              + (select coalesce(sum(amount), 0) from stream_ticks_carried where stream_ref = $1)
              + sum(p.amount) over (order by p.tick) as paid
       from page p order by p.tick`,
    [ref, opts.after, pageRows(opts.limit, STREAM_TICKS_PAGE_MAX)],
  );
  return rows.map((r) => ({ tick: r.tick, amount: Number(r.amount), paid: Number(r.paid), billedAt: r.billed_at.toISOString(), transferId: Number(r.transfer_id) }));
}
