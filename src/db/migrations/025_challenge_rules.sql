-- Challenge and elimination rules per entity (DESIGN §4, issue 19): besides the
-- minimum balance ratio (challenge_min_bps, unchanged), an optional maximum drawdown
-- from the high-water mark and an optional inactivity limit, assessed at the end of the
-- challenge period and then every assess_every_ms for as long as the subaccount is
-- active (0: only at the end of the challenge, as before).
alter table entities
  add column max_drawdown_bps integer check (max_drawdown_bps between 1 and 10000),
  add column inactivity_ms bigint check (inactivity_ms > 0),
  add column assess_every_ms bigint not null default 86400000 check (assess_every_ms >= 0);

-- The high-water mark of the subaccount's balance (as assessed; never below its
-- funding) and the rule that fired, with its figures, once one has. The rule is only
-- recorded on a live subaccount being assessed or one it ended.
alter table subaccounts
  add column high_water_mark bigint,
  add column assessed_at timestamptz,
  add column elimination_rule jsonb,
  add constraint subaccount_high_water_mark_covers_funding check (high_water_mark is null or high_water_mark >= funding),
  add constraint subaccount_elimination_rule_named check (
    elimination_rule is null
    or (jsonb_typeof(elimination_rule) = 'object'
        and elimination_rule->>'rule' in ('min_balance', 'max_drawdown', 'inactivity')
        and status in ('challenge', 'active', 'eliminating', 'eliminated')));

-- Business counters the API's /metrics reads in O(labels) per scrape, incremented in
-- the transactions that do what they count (a creation concluded, an elimination
-- settled, a webhook attempt logged), so a retried activity counts once. Each counter
-- is spread over a few shards so concurrent transactions do not queue on one row.
create table metric_counters (
  metric text not null,
  labels jsonb not null default '{}',
  shard  smallint not null check (shard between 0 and 7),
  value  bigint not null default 0 check (value >= 0),
  primary key (metric, labels, shard)
);
