-- The billing clock: a few billing workflows (shards) bill every tick due by now in
-- set-based batches, instead of one timer, activity and transaction per tick.
--
--  * streams.next_due_ms: when the stream's next tick comes due, derived by the
--    database from the columns that decide it, so no writer can let it drift. Null
--    while the stream is closed, paused or halted (waiting for its workflow to close it).
--  * streams.shard_key: a stable hash of the payer's account (src/domain/billing.ts);
--    the clock of shard i of n bills the streams whose shard_key % n = i, so every
--    stream of one payer is billed by one clock, in one due order.
--  * party_heartbeat_log: a bounded history of heartbeats, so liveness is judged at a
--    tick's due time, also when the tick is billed late after an outage.
--  * transfers move balances once per statement: a batch of N ticks on one account
--    is one row update, not N.

-- epoch milliseconds of a timestamptz: immutable (the epoch does not depend on the time zone)
create function epoch_ms(t timestamptz) returns bigint language sql immutable parallel safe
  return floor(extract(epoch from t) * 1000)::bigint;

alter table streams
  add column shard_key integer not null default 0 check (shard_key >= 0),
  -- set by the billing clock when the stream completed, ran out of funds, was
  -- partitioned past grace or refused: no more ticks; its workflow closes it
  add column halted_reason text check (halted_reason in ('completed', 'insufficient_funds', 'partition', 'tick_refused')),
  -- the tick schedule of src/domain/streams.ts tickDueAtMs: tick n is due at
  -- opened + (n - 1) intervals + time paused; the next one is last_tick + 1
  add column next_due_ms bigint generated always as (
    case when status = 'open' and paused_at is null and halted_reason is null
         then epoch_ms(opened_at) + last_tick::bigint * tick_interval_ms + paused_ms end) stored;
create index streams_next_due_idx on streams (next_due_ms) where next_due_ms is not null;

-- the shard key of streams opened before the clock (FNV-1a of the payer's account, as src/domain/billing.ts)
create function fnv1a31(s text) returns integer language plpgsql immutable as $$
declare
  h bigint := 2166136261;
  b integer;
begin
  for i in 1 .. octet_length(convert_to(s, 'UTF8')) loop
    b := get_byte(convert_to(s, 'UTF8'), i - 1);
    h := ((h # b) * 16777619) % 4294967296;
  end loop;
  return (h % 2147483648)::integer;
end $$;
update streams set shard_key = fnv1a31(payer_account_id);

create table party_heartbeat_log (
  party_id text not null references parties(id),
  seen_at  timestamptz not null,
  primary key (party_id, seen_at)
);
insert into party_heartbeat_log select party_id, last_seen_at from party_heartbeats;

-- ---------------------------------------------------------------- transfers move balances, per statement
-- The same rules as the row trigger of 001 (captures leave their open hold, balances
-- follow, currencies match, the world account only through deposits and withdrawals),
-- applied once per statement over its new rows: a hold captured by many rows is
-- updated once, and an account touched by many rows is updated once by their sum.
drop trigger transfers_apply on transfers;
drop function apply_transfer();

create function apply_transfers() returns trigger language plpgsql as $$
declare
  holds_named integer;
  holds_captured integer;
  bad record;
begin
  select count(*) into holds_named from (select distinct hold_id, debit_account_id from new_transfers where hold_id is not null) h;
  if holds_named > 0 then
    with c as (select hold_id, debit_account_id, sum(amount) as amount, count(*) as n
                 from new_transfers where hold_id is not null group by hold_id, debit_account_id),
         u as (update holds h
                  set captured = h.captured + c.amount, capture_count = h.capture_count + c.n,
                      status = case when h.captured + c.amount + h.released = h.amount then 'captured' else h.status end,
                      resolved_at = case when h.captured + c.amount + h.released = h.amount then now() else h.resolved_at end
                 from c
                where h.id = c.hold_id and h.account_id = c.debit_account_id and h.status = 'open'
                returning h.id)
    select count(*) into holds_captured from u;
    if holds_captured <> holds_named then
      select t.hold_id, t.debit_account_id into bad from new_transfers t
       where t.hold_id is not null
         and not exists (select 1 from holds h where h.id = t.hold_id and h.account_id = t.debit_account_id and h.status in ('open', 'captured'))
       limit 1;
      raise exception 'hold % is not open on account %', coalesce(bad.hold_id::text, '(several captures)'), coalesce(bad.debit_account_id, '')
        using errcode = 'check_violation';
    end if;
  end if;

  select t.kind, da.currency as debit_currency, ca.currency as credit_currency, da.kind as debit_kind, ca.kind as credit_kind into bad
    from new_transfers t join accounts da on da.id = t.debit_account_id join accounts ca on ca.id = t.credit_account_id
   where da.currency <> ca.currency or ((da.kind = 'world' or ca.kind = 'world') and t.kind not in ('deposit', 'withdrawal'))
   limit 1;
  if found then
    if bad.debit_currency <> bad.credit_currency then
      raise exception 'transfer between % and % accounts', bad.debit_currency, bad.credit_currency using errcode = 'check_violation';
    end if;
    raise exception 'a % transfer cannot touch the world account', bad.kind using errcode = 'check_violation';
  end if;

  update accounts a set balance = a.balance + d.delta
    from (select account_id, sum(delta) as delta
            from (select debit_account_id as account_id, -amount as delta from new_transfers
                  union all
                  select credit_account_id, amount from new_transfers) m
           group by account_id) d
   where a.id = d.account_id and d.delta <> 0;
  return null;
end $$;

create trigger transfers_apply after insert on transfers
  referencing new table as new_transfers
  for each statement execute function apply_transfers();
