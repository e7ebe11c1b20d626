import type { Queryable } from '../db/pool';

/**
 * Business counters kept in the ledger (migration 025, `metric_counters`): bumped by the
 * transaction that does what they count, so they are exact whatever is retried, and
 * read by the API's /metrics in one statement over a few rows (O(labels), no scan).
 */
export const COUNTER_SHARDS = 8;

export type CounterMetric = 'subaccount_creations' | 'subaccount_eliminations' | 'webhook_deliveries';

/** Adds one to a counter, on a random shard (concurrent transactions rarely meet on a row). */
export async function bumpCounter(db: Queryable, metric: CounterMetric, labels: Record<string, string>): Promise<void> {
  await db.query(
    `insert into metric_counters (metric, labels, shard, value) values ($1, $2, floor(random() * $3)::smallint, 1)
     on conflict (metric, labels, shard) do update set value = metric_counters.value + 1`,
    [metric, labels, COUNTER_SHARDS],
  );
}

/** Every counter's value by labels, the shards summed. */
export async function readCounters(db: Queryable): Promise<Array<{ metric: CounterMetric; labels: Record<string, string>; value: number }>> {
  const { rows } = await db.query<{ metric: CounterMetric; labels: Record<string, string>; value: string }>(
    'select metric, labels, sum(value)::bigint as value from metric_counters group by metric, labels',
  );
  return rows.map((r) => ({ metric: r.metric, labels: r.labels, value: Number(r.value) }));
}
