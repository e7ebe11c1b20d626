-- Counter bumps as inserted deltas, folded into metric_counters by the reader.
-- Migration 025 bumped a counter row in place (an upsert on one of 8 shards): a
-- transaction that bumped two counters, or one counter after locking other rows, could
-- deadlock with another doing the same in the other order (found by the tails test,
-- several deliveries logged in one transaction). An insert locks no existing row, so a
-- bump can no longer take part in a deadlock; the /metrics read folds the deltas into
-- metric_counters in the same statement it sums them, so the deltas stay as few as the
-- events between two scrapes.
create table metric_counter_deltas (
  metric text not null,
  labels jsonb not null default '{}',
  value  bigint not null check (value > 0)
);
