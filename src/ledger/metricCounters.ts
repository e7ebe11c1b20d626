import type { Queryable } from '../db/pool';

/**
 * Business counters kept in the ledger: bumped by the transaction that does what they
 * count, so they are exact whatever is retried (migrations 025, 026 and 029). A bump
 * inserts a delta row (`metric_counter_deltas`) and locks nothing, so it never joins a
 * deadlock. The ledger code bumps the creation and elimination counters itself (an
 * outcome, not a row); the rest count rows and are bumped by triggers on the tables
 * they count (migration 029 lists them), so no writer can forget one. The deltas are folded into `metric_counters` by every
 * /metrics read and by the worker's sweep, so they stay as few as the events between two
 * folds and a scrape never reads a whole table.
 */
export type CounterMetric =
  | 'subaccount_creations'
  | 'subaccount_eliminations'
  | 'webhook_deliveries'
  | 'ticks_billed'
  | 'tick_lag_bucket'
  | 'tick_lag_micros'
  | 'streams_opened'
  | 'streams_closed'
  | 'grant_decisions'
  | 'saga_compensations';

export interface CounterValue {
  metric: CounterMetric;
  labels: Record<string, string>;
  value: number;
}

/** Adds one to a counter. */
export async function bumpCounter(db: Queryable, metric: CounterMetric, labels: Record<string, string>): Promise<void> {
  await db.query('insert into metric_counter_deltas (metric, labels, value) values ($1, $2, 1)', [metric, labels]);
}

/**
 * Moves the deltas into the totals, in one statement (both or neither), upserting in
 * label order so two folds lock the totals in one order. Two folds at once never count a
 * delta twice: the second skips the rows the first deleted. Kept apart from the read
 * (readCounters) because a statement that waits on another's delete goes on with its
 * older snapshot: folding and summing in one statement could miss what the other folded.
 */
export async function foldCounterDeltas(db: Queryable): Promise<void> {
  await db.query(
    `with moved as (delete from metric_counter_deltas returning metric, labels, value)
     insert into metric_counters (metric, labels, shard, value)
     select metric, labels, 0, sum(value) from moved group by metric, labels order by metric, labels
     on conflict (metric, labels, shard) do update set value = metric_counters.value + excluded.value`,
  );
}

/**
 * Every counter's value by labels: the deltas folded first (so the read stays small),
 * then the totals and any deltas since summed in one snapshot.
 */
export async function readCounters(db: Queryable): Promise<CounterValue[]> {
  await foldCounterDeltas(db);
  const { rows } = await db.query<{ metric: CounterMetric; labels: Record<string, string>; value: string }>(
    `select metric, labels, sum(value)::bigint as value
       from (select metric, labels, value from metric_counters union all select metric, labels, value from metric_counter_deltas) t
      group by metric, labels`,
  );
  return rows.map((r) => ({ metric: r.metric, labels: r.labels, value: Number(r.value) }));
}
