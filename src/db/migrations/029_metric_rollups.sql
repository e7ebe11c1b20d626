-- Every figure /metrics serves is a counter kept as things happen (issue 22). Until
-- now a scrape counted stream_ticks (twice: the total and the lag histogram),
-- webhook_deliveries, grants, open streams and failed subaccounts joined with their
-- holds and transfers: each scrape cost a scan of tables that only grow, on the
-- primary. From here the database keeps the counts itself: a trigger on each table
-- adds a delta row (metric_counter_deltas, migration 026) in the transaction that
-- writes the row it counts, whichever code path writes it, and a scrape reads the
-- few rows of metric_counters plus the deltas since the last fold.
--
-- The counters this migration adds (metric, labels):
--   ticks_billed        {}                        one per stream_ticks row
--   tick_lag_bucket     {le}                      ticks with a due time, by the first bucket bound at or above
--                                                 their lag (not cumulative: /metrics sums them up)
--   tick_lag_micros     {}                        the sum of those lags, in microseconds
--   streams_opened      {mode, kind}              a stream entered status 'open' (open now = opened − closed,
--   streams_closed      {mode, kind}              a stream left it              so both only grow)
--   grant_decisions     {mode}                    one per grants row, by its decision
--   saga_compensations  {compensation, failed_step}  when a subaccount becomes 'failed': mark_failed, and
--                                                 release_collateral / unfund if its collateral hold is
--                                                 released / its unfund transfer exists by then
--   webhook_deliveries  {outcome}                 one per webhook_deliveries row: delivered (ok) or failed
--                                                 (migration 025 bumped it in the ledger's insert; now a
--                                                 trigger does, and it is set to the log's own counts once,
--                                                 so attempts before 025 count too)

-- Every table whose rows are counted, locked first and at once: rows written while the
-- triggers are created and the counts backfilled would be counted twice or not at all.
lock table stream_ticks, streams, grants, subaccounts, webhook_deliveries in share row exclusive mode;

-- The lag histogram's bucket bounds, in seconds: src/api/ledgerMetrics.ts
-- TICK_LAG_BUCKETS_SECONDS exposes them and a test checks the two agree.
create function tick_lag_bounds() returns numeric[] language sql immutable as $$
  select '{0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10,30,60,300}'::numeric[]
$$;

-- The `le` label of a lag's bucket: the first bound at or above it, '+Inf' above the last.
create function tick_lag_bucket(lag_micros bigint) returns text language sql immutable strict as $$
  select coalesce((select min(b) from unnest(tick_lag_bounds()) b where lag_micros <= b * 1000000)::text, '+Inf')
$$;

-- A tick's lag: from its due time to its billing, never below 0 (the worker's clock a
-- little ahead of the database's); null for ticks billed before due_at existed (010).
create function tick_lag_micros(due_at timestamptz, billed_at timestamptz) returns bigint language sql immutable strict as $$
  select greatest(0, extract(epoch from billed_at - due_at) * 1000000)::bigint
$$;

-- ---- stream ticks: one statement bills many ticks (a billing batch), so counted per statement

create function count_stream_ticks() returns trigger language plpgsql as $$
begin
  with lag as (select tick_lag_micros(due_at, billed_at) as micros from new_ticks)
  insert into metric_counter_deltas (metric, labels, value)
  select 'ticks_billed', '{}'::jsonb, count(*) from lag having count(*) > 0
  union all
  select 'tick_lag_bucket', jsonb_build_object('le', tick_lag_bucket(micros)), count(*) from lag where micros is not null group by 2
  union all
  select 'tick_lag_micros', '{}'::jsonb, sum(micros) from lag having sum(micros) > 0;
  return null;
end $$;
create trigger stream_ticks_counted after insert on stream_ticks
  referencing new table as new_ticks for each statement execute function count_stream_ticks();

-- ---- grants: by decision (never changed after the insert)

create function count_grant_decisions() returns trigger language plpgsql as $$
begin
  insert into metric_counter_deltas (metric, labels, value)
  select 'grant_decisions', jsonb_build_object('mode', decision), count(*) from new_grants group by decision;
  return null;
end $$;
create trigger grants_counted after insert on grants
  referencing new table as new_grants for each statement execute function count_grant_decisions();

-- ---- webhook deliveries: every attempt, by outcome

create function count_webhook_deliveries() returns trigger language plpgsql as $$
begin
  insert into metric_counter_deltas (metric, labels, value)
  select 'webhook_deliveries', jsonb_build_object('outcome', case when ok then 'delivered' else 'failed' end), count(*) from new_deliveries group by ok;
  return null;
end $$;
create trigger webhook_deliveries_counted after insert on webhook_deliveries
  referencing new table as new_deliveries for each statement execute function count_webhook_deliveries();

-- ---- streams: entering and leaving 'open', by mode and kind

create function count_open_streams() returns trigger language plpgsql as $$
begin
  if tg_op in ('UPDATE', 'DELETE') and old.status = 'open' then
    insert into metric_counter_deltas (metric, labels, value) values ('streams_closed', jsonb_build_object('mode', old.mode, 'kind', old.kind), 1);
  end if;
  if tg_op in ('INSERT', 'UPDATE') and new.status = 'open' then
    insert into metric_counter_deltas (metric, labels, value) values ('streams_opened', jsonb_build_object('mode', new.mode, 'kind', new.kind), 1);
  end if;
  return null;
end $$;
create trigger streams_opened_counted after insert on streams
  for each row when (new.status = 'open') execute function count_open_streams();
-- a stream leaving 'open', or (never expected) its mode or kind changing while open
create trigger streams_open_changed_counted after update of status, mode, kind on streams
  for each row when ((old.status = 'open' or new.status = 'open') and (old.status, old.mode, old.kind) is distinct from (new.status, new.mode, new.kind))
  execute function count_open_streams();
create trigger streams_closed_counted after delete on streams
  for each row when (old.status = 'open') execute function count_open_streams();

-- ---- subaccounts: the creation saga's compensations, counted when the slot is marked failed
-- (its last compensation; the reconciler's unfunds and releases in the same transaction)

create function saga_compensations_of(sub subaccounts) returns table (compensation text, failed_step text) language sql stable as $$
  select c, coalesce(sub.failed_step, 'unknown')
    from (values
      ('release_collateral', exists (select 1 from holds h where h.id = sub.hold_id and h.status = 'released')),
      ('unfund', exists (select 1 from transfers t where t.idempotency_key = 'sub:' || sub.id || ':unfund')),
      ('mark_failed', true)) v(c, done)
   where done
$$;

create function count_saga_compensations() returns trigger language plpgsql as $$
begin
  insert into metric_counter_deltas (metric, labels, value)
  select 'saga_compensations', jsonb_build_object('compensation', compensation, 'failed_step', failed_step), 1 from saga_compensations_of(new);
  return null;
end $$;
create trigger subaccounts_failed_counted after insert on subaccounts
  for each row when (new.status = 'failed') execute function count_saga_compensations();
create trigger subaccounts_failing_counted after update of status on subaccounts
  for each row when (new.status = 'failed' and old.status <> 'failed') execute function count_saga_compensations();

-- ---- the backfill: what the rows written so far count

with lag as (select tick_lag_micros(due_at, billed_at) as micros from stream_ticks),
     bucket as (select b::text as le from unnest(tick_lag_bounds()) b union all select '+Inf'),
     in_bucket as (select tick_lag_bucket(micros) as le, count(*) as n from lag where micros is not null group by 1)
insert into metric_counters (metric, labels, shard, value)
select 'ticks_billed', '{}'::jsonb, 0, count(*) from lag
union all
-- every bucket has its row, at 0 when empty
select 'tick_lag_bucket', jsonb_build_object('le', le), 0, coalesce(n, 0) from bucket left join in_bucket using (le)
union all
select 'tick_lag_micros', '{}'::jsonb, 0, coalesce(sum(micros), 0) from lag;

insert into metric_counters (metric, labels, shard, value)
select 'grant_decisions', jsonb_build_object('mode', m.mode), 0, count(g.job_id)
  from (values ('free'), ('partial'), ('gate')) m(mode) left join grants g on g.decision = m.mode
 group by m.mode;

insert into metric_counters (metric, labels, shard, value)
select 'streams_opened', jsonb_build_object('mode', mode, 'kind', kind), 0, count(*) from streams where status = 'open' group by mode, kind;

insert into metric_counters (metric, labels, shard, value)
select 'saga_compensations', jsonb_build_object('compensation', c.compensation, 'failed_step', c.failed_step), 0, count(*)
  from subaccounts s cross join lateral saga_compensations_of(s) c
 where s.status = 'failed'
 group by c.compensation, c.failed_step;

-- the webhook log's counter, from the log itself (it began at 0 in migration 025)
delete from metric_counter_deltas where metric = 'webhook_deliveries';
delete from metric_counters where metric = 'webhook_deliveries';
insert into metric_counters (metric, labels, shard, value)
select 'webhook_deliveries', jsonb_build_object('outcome', case when ok then 'delivered' else 'failed' end), 0, count(*) from webhook_deliveries group by ok;
