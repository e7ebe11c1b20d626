import type { Queryable } from '../db/pool';

/**
 * Business counters kept in the ledger: bumped by the transaction that does what they
 * count, so they are exact whatever is retried (migrations 025 and 026). A bump inserts a
 * delta row (`metric_counter_deltas`) and locks nothing, so it never joins a deadlock;
 * the API's /metrics read folds the deltas into `metric_counters` in the same statement
 * that sums them, so a scrape reads the totals (O(labels)) and the events since the last
 * scrape, never a whole table.
 */
export type CounterMetric = 'subaccount_creations' | 'subaccount_eliminations' | 'webhook_deliveries';

/** The statement that adds one to a counter, as a fragment over a CTE or table yielding one row per bump. */
export const BUMP_COUNTER_SQL = 'insert into metric_counter_deltas (metric, labels, value)';

/** Adds one to a counter. */
export async function bumpCounter(db: Queryable, metric: CounterMetric, labels: Record<string, string>): Promise<void> {
  await db.query(`${BUMP_COUNTER_SQL} values ($1, $2, 1)`, [metric, labels]);
}

/**
 * Every counter's value by labels: the deltas since the last read moved into the totals
 * (in label order, so two readers fold in one order) and both summed, in one statement.
 */
export async function readCounters(db: Queryable): Promise<Array<{ metric: CounterMetric; labels: Record<string, string>; value: number }>> {
  const { rows } = await db.query<{ metric: CounterMetric; labels: Record<string, string>; value: string }>(
    `with moved as (delete from metric_counter_deltas returning metric, labels, value),
     folded as (
       insert into metric_counters (metric, labels, shard, value)
       select metric, labels, 0, sum(value) from moved group by metric, labels order by metric, labels
       on conflict (metric, labels, shard) do update set value = metric_counters.value + excluded.value)
     select metric, labels, sum(value)::bigint as value
       from (select metric, labels, value from metric_counters union all select metric, labels, value from moved) t
      group by metric, labels`,
  );
  return rows.map((r) => ({ metric: r.metric, labels: r.labels, value: Number(r.value) }));
}
