import type { Queryable } from './pool';

/*
 * The tables partitioned by UTC month (migration 031): one partition per month,
 * named <table>_<YYYY>m<MM>, and a default partition that takes a row whose month
 * has none (so a write is never refused for want of a partition).
 */

/** The tables partitioned by month, in the order a month leaves them (ticks reference their transfers). */
export const PARTITIONED_TABLES = ['stream_ticks', 'transfers', 'events'] as const;
export type PartitionedTable = (typeof PARTITIONED_TABLES)[number];

/** Months made ready after the current one, by every migration run and every retention run. */
export const MONTHS_AHEAD = 3;

/** Makes the monthly partitions missing from the current month to MONTHS_AHEAD after it; returns how many. As the owner. */
export async function ensurePartitionsAhead(db: Queryable): Promise<number> {
  const { rows } = await db.query<{ made: number }>(
    `select coalesce(sum(ensure_month_partitions(t, date_trunc('month', now())::date,
                                                 (date_trunc('month', now()) + make_interval(months => $2 + 1))::date)), 0)::int as made
       from unnest($1::text[]) t`,
    [PARTITIONED_TABLES, MONTHS_AHEAD],
  );
  return rows[0]!.made;
}

/** The monthly partitions ensurePartitionsAhead would make. */
export async function missingAhead(db: Queryable): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    `select count(*)::int as n
       from unnest($1::text[]) t,
            generate_series(date_trunc('month', now()), date_trunc('month', now()) + make_interval(months => $2), interval '1 month') m
      where to_regclass('public.' || month_partition_name(t, m::date)) is null`,
    [PARTITIONED_TABLES, MONTHS_AHEAD],
  );
  return rows[0]!.n;
}
