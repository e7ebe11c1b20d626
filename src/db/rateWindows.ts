import type { Queryable } from './pool';

/*
 * Fixed-window counters in PostgreSQL (table rate_windows), so every API process
 * counts against one limit. A bucket's window starts at its first hit and lasts
 * `windowMs`; the first hit after it ends starts the next one.
 */

/** The hits in `key`'s current window once `cost` more are counted, and the milliseconds left in it: one statement. */
export async function countHits(db: Queryable, key: string, windowMs: number, cost: number): Promise<{ hits: number; ttlMs: number }> {
  const { rows } = await db.query<{ hits: number; ttl_ms: number }>({
    name: 'rate-window-hit',
    text: `insert into rate_windows as w (key, started_at, window_ms, hits) values ($1, now(), $2, $3)
           on conflict (key) do update set
             started_at = case when w.started_at + w.window_ms * interval '1 millisecond' <= now() then now() else w.started_at end,
             window_ms = $2,
             hits = case when w.started_at + w.window_ms * interval '1 millisecond' <= now() then $3 else w.hits + $3 end
           returning hits, greatest(0, ceil(extract(epoch from (started_at + window_ms * interval '1 millisecond' - now())) * 1000))::int as ttl_ms`,
    values: [key, windowMs, cost],
  });
  return { hits: rows[0]!.hits, ttlMs: rows[0]!.ttl_ms };
}

/** Drops windows begun more than `olderThanMs` ago (longer than any window lasts); returns how many. */
export async function pruneRateWindows(db: Queryable, olderThanMs: number): Promise<number> {
  const { rowCount } = await db.query(`delete from rate_windows where started_at < now() - $1::bigint * interval '1 millisecond'`, [olderThanMs]);
  return rowCount ?? 0;
}
