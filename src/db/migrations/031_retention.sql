-- Retention (DESIGN §8): the three tables that grow with every tick (transfers,
-- stream_ticks, events) are partitioned by month, and a month long past is archived:
-- its partitions leave the live tables for the sluice_archive schema (from where an
-- operator exports them and drops them), and what the auditor needs of its money
-- stays behind as carried-forward totals, so that every balance is still its
-- carried-forward sum plus its live transfers.
--
-- A unique index on a partitioned table must include the partition key, so what must
-- be unique across the whole live ledger moves to transfer_claims: each transfer's
-- idempotency key (which for a stream's tick is the tick), claimed by a statement
-- trigger in the transfer's own statement. A claim leaves with its month's archive;
-- a stream's archived ticks stay refused by its carried-forward last tick.
--
-- The tables are rebuilt, not altered in place: rows are copied into the partitioned
-- table before its triggers exist, so no balance moves twice.

lock table transfers, stream_ticks, events, payments, refunds in access exclusive mode;

create schema sluice_archive;

-- ---------------------------------------------------------------- monthly partitions
-- The partition of `parent` for the UTC month `m` is named <parent>_<YYYY>m<MM>.
create function month_partition_name(parent text, m date) returns text language sql immutable as $$
  select parent || '_' || to_char(m, 'YYYY"m"MM')
$$;

-- the column `parent` is partitioned on: a tick's billing time, a transfer's or an event's creation
create function month_partition_key(parent text) returns text language sql immutable as $$
  select case parent when 'stream_ticks' then 'billed_at' else 'created_at' end
$$;

-- Creates the missing monthly partitions of `parent` for the months from `from_month`
-- up to (not including) `to_month`: not one that was archived, nor one whose rows the
-- default partition already holds (creating it would fail; `sluice retention` reports
-- them). Returns how many it made.
create function ensure_month_partitions(parent text, from_month date, to_month date) returns integer language plpgsql as $$
declare
  m date := date_trunc('month', from_month)::date;
  lo timestamptz;
  hi timestamptz;
  made integer := 0;
  part_name text;
  key text := month_partition_key(parent);
  stranded boolean;
begin
  while m < to_month loop
    part_name := month_partition_name(parent, m);
    lo := m::timestamp at time zone 'UTC';
    hi := (m + interval '1 month')::timestamp at time zone 'UTC';
    if to_regclass(format('public.%I', part_name)) is null
       and not exists (select 1 from archived_partitions a where a.partition = part_name) then
      execute format('select exists (select 1 from public.%I where %I >= $1 and %I < $2)', parent || '_default', key, key)
        into stranded using lo, hi;
      if not stranded then
        execute format('create table public.%I partition of public.%I for values from (%L) to (%L)', part_name, parent, lo, hi);
        made := made + 1;
      end if;
    end if;
    m := (m + interval '1 month')::date;
  end loop;
  return made;
end $$;

-- every month archived, one row per partition that left the live tables
create table archived_partitions (
  partition   text primary key,
  parent      text not null check (parent in ('transfers', 'stream_ticks', 'events')),
  month       date not null,
  rows        bigint not null,
  archived_at timestamptz not null default now()
);

-- ---------------------------------------------------------------- carried forward
-- The archived transfers, summed per everything the auditor groups them by (an
-- account pair and kind, a stream, a job, a subaccount, a payment, a hold): each
-- check reads these rows beside the live ones (the transfer_totals view).
create table transfers_carried (
  kind              text not null,
  debit_account_id  text not null references accounts(id),
  credit_account_id text not null references accounts(id),
  stream_ref        text,
  job_id            text,
  subaccount_id     text,
  payment_ref       text,
  hold_id           bigint,
  amount            bigint not null check (amount > 0),
  transfers         bigint not null check (transfers > 0),
  through           timestamptz not null,
  constraint transfers_carried_grouping unique nulls not distinct
    (kind, debit_account_id, credit_account_id, stream_ref, job_id, subaccount_id, payment_ref, hold_id)
);

-- the archived ticks per stream; last_tick keeps an archived tick from being billed again
create table stream_ticks_carried (
  stream_ref text primary key references streams(ref),
  amount     bigint not null check (amount > 0),
  ticks      bigint not null check (ticks > 0),
  last_tick  integer not null,
  through    timestamptz not null
);

-- ---------------------------------------------------------------- claims
-- A transfer's idempotency key, claimed for as long as its transfer is live. A
-- stream's tick is keyed by the tick (stream:<ref>:tick:<n>, a distribution member's
-- :<account> after it; the check transfers_keyed_by_tick below), so claiming the key
-- claims the tick: one claim per transfer, one index entry on the billing path.
create table transfer_claims (
  claim text primary key
);

create function claim_transfers() returns trigger language plpgsql as $$
begin
  insert into transfer_claims (claim) select n.idempotency_key from new_transfers n;
  if exists (select 1 from new_transfers n join stream_ticks_carried c on c.stream_ref = n.stream_ref
              where n.kind in ('stream_tick', 'stream_split') and n.tick <= c.last_tick) then
    raise exception 'a tick of an archived month is billed again' using errcode = 'unique_violation', constraint = 'stream_ticks_carried_last_tick';
  end if;
  return null;
end $$;

-- ---------------------------------------------------------------- the rebuild
-- `parent` as a table partitioned by month, holding the rows it held: the old table is
-- renamed <parent>_031 (dropped by the caller once nothing refers to it), and its rows
-- are copied before the new table has a trigger
create function pg_temp.rebuild_by_month(parent text) returns void language plpgsql as $$
declare
  key text := month_partition_key(parent);
  earliest timestamptz;
begin
  execute format('alter table %I rename to %I', parent, parent || '_031');
  execute format('create table %I (like %I including defaults including constraints) partition by range (%I)', parent, parent || '_031', key);
  execute format('create table %I partition of %I default', parent || '_default', parent);
  execute format('select min(%I) from %I', key, parent || '_031') into earliest;
  perform ensure_month_partitions(parent, coalesce(earliest, now())::date, (now() + interval '4 months')::date);
  execute format('insert into %I select * from %I', parent, parent || '_031');
end $$;

-- ---------------------------------------------------------------- transfers
alter sequence transfers_id_seq owned by none;
select pg_temp.rebuild_by_month('transfers');
insert into transfer_claims (claim) select idempotency_key from transfers;
-- what made a tick unique (a unique index on (stream_ref, tick) per kind) is its key's claim
alter table transfers add constraint transfers_keyed_by_tick check (
  case kind when 'stream_tick' then idempotency_key is not distinct from 'stream:' || stream_ref || ':tick:' || tick
            when 'stream_split' then idempotency_key is not distinct from 'stream:' || stream_ref || ':tick:' || tick || ':' || credit_account_id
            else true end);
-- payments' and refunds' foreign keys to their transfers go with it: a payment outlives its transfer's month
drop table transfers_031 cascade;
alter sequence transfers_id_seq owned by transfers.id;
alter table transfers add primary key (id, created_at);
alter table transfers add foreign key (debit_account_id) references accounts(id);
alter table transfers add foreign key (credit_account_id) references accounts(id);
alter table transfers add foreign key (hold_id) references holds(id);
create index transfers_debit_idx on transfers (debit_account_id, id);
create index transfers_credit_idx on transfers (credit_account_id, id);
create index transfers_key_idx on transfers (idempotency_key);
create index transfers_stream_tick_idx on transfers (stream_ref, tick) where stream_ref is not null;

create trigger transfers_append_only before update or delete on transfers
  for each row execute function forbid_change();
create trigger transfers_no_truncate before truncate on transfers
  for each statement execute function forbid_change();
create trigger transfers_refuse_ended_subaccount before insert on transfers
  for each row execute function refuse_transfer_on_ended_subaccount();
create trigger transfers_apply after insert on transfers
  referencing new table as new_transfers for each statement execute function apply_transfers();
create trigger transfers_claimed after insert on transfers
  referencing new table as new_transfers for each statement execute function claim_transfers();
create trigger transfers_session_accounts after insert on transfers
  referencing new table as new_transfers for each statement execute function check_session_transfers();

-- ---------------------------------------------------------------- stream_ticks
-- a tick is billed in its transfer's transaction (billed_at is the transfer's
-- created_at), so the two land in the same month and are archived together
select pg_temp.rebuild_by_month('stream_ticks');
drop table stream_ticks_031 cascade;
alter table stream_ticks add primary key (stream_ref, tick, billed_at);
alter table stream_ticks add unique (transfer_id, billed_at);
alter table stream_ticks add foreign key (stream_ref) references streams(ref);
alter table stream_ticks add foreign key (transfer_id, billed_at) references transfers(id, created_at);

create trigger stream_ticks_append_only before update or delete on stream_ticks
  for each row execute function forbid_change();
create trigger stream_ticks_counted after insert on stream_ticks
  referencing new table as new_ticks for each statement execute function count_stream_ticks();

-- ---------------------------------------------------------------- events
alter sequence events_id_seq owned by none;
select pg_temp.rebuild_by_month('events');
drop table events_031 cascade;
alter sequence events_id_seq owned by events.id;
alter table events add primary key (id, created_at);
create index events_parties_idx on events using gin (parties);
create index events_tail_idx on events (xid, id);
create index events_subject_tail_idx on events (subject, xid, id);

create trigger events_append_only before update or delete on events
  for each row execute function forbid_change();
create trigger events_no_truncate before truncate on events
  for each statement execute function forbid_change();

-- ---------------------------------------------------------------- what the auditor sums
create view transfer_totals as
  select kind, debit_account_id, credit_account_id, stream_ref, job_id, subaccount_id, payment_ref, hold_id, amount, 1::bigint as transfers
    from transfers
  union all
  select kind, debit_account_id, credit_account_id, stream_ref, job_id, subaccount_id, payment_ref, hold_id, amount, transfers
    from transfers_carried;

create view stream_tick_totals as
  select stream_ref, amount, 1::bigint as ticks from stream_ticks
  union all
  select stream_ref, amount, ticks from stream_ticks_carried;

-- ---------------------------------------------------------------- archiving a month
-- Moves the month's partitions of stream_ticks, transfers and events to
-- sluice_archive, in one transaction with the totals it carries forward and the
-- claims it ends. Only for a month that ended more than a day ago (a transaction
-- that began in it has long committed). The caller proves the books first (the
-- auditor, `sluice retention`): the archived rows are read no more.
create function archive_month(month date) returns jsonb language plpgsql as $$
declare
  hi timestamptz := (month + interval '1 month')::timestamp at time zone 'UTC';
  ticks_part text := month_partition_name('stream_ticks', month);
  transfers_part text := month_partition_name('transfers', month);
  events_part text := month_partition_name('events', month);
  counted jsonb := jsonb_build_object('month', to_char(month, 'YYYY-MM'));
  part record;
  n bigint;
  fk record;
begin
  if date_trunc('month', month)::date <> month then
    raise exception 'a month is archived from its first day, not %', month using errcode = 'invalid_parameter_value';
  end if;
  if hi > now() - interval '1 day' then
    raise exception 'the month % has not been over for a day', to_char(month, 'YYYY-MM') using errcode = 'invalid_parameter_value';
  end if;
  if exists (select 1 from archived_partitions a where a.month = archive_month.month) then
    raise exception 'the month % is archived already', to_char(month, 'YYYY-MM') using errcode = 'invalid_parameter_value';
  end if;

  if to_regclass(format('public.%I', ticks_part)) is not null then
    execute format(
      'insert into stream_ticks_carried (stream_ref, amount, ticks, last_tick, through)
       select stream_ref, sum(amount), count(*), max(tick), $1 from public.%I group by stream_ref
       on conflict (stream_ref) do update
          set amount = stream_ticks_carried.amount + excluded.amount, ticks = stream_ticks_carried.ticks + excluded.ticks,
              last_tick = greatest(stream_ticks_carried.last_tick, excluded.last_tick), through = greatest(stream_ticks_carried.through, excluded.through)',
      ticks_part) using hi;
  end if;
  if to_regclass(format('public.%I', transfers_part)) is not null then
    execute format(
      'insert into transfers_carried (kind, debit_account_id, credit_account_id, stream_ref, job_id, subaccount_id, payment_ref, hold_id, amount, transfers, through)
       select kind, debit_account_id, credit_account_id, stream_ref, job_id, subaccount_id, payment_ref, hold_id, sum(amount), count(*), $1
         from public.%I group by kind, debit_account_id, credit_account_id, stream_ref, job_id, subaccount_id, payment_ref, hold_id
       on conflict on constraint transfers_carried_grouping do update
          set amount = transfers_carried.amount + excluded.amount, transfers = transfers_carried.transfers + excluded.transfers,
              through = greatest(transfers_carried.through, excluded.through)',
      transfers_part) using hi;
    execute format('delete from transfer_claims c using public.%I t where c.claim = t.idempotency_key', transfers_part);
  end if;

  -- ticks first: they reference their transfers
  for part in select * from (values ('stream_ticks', ticks_part), ('transfers', transfers_part), ('events', events_part)) p(parent, name) loop
    continue when to_regclass(format('public.%I', part.name)) is null;
    execute format('alter table public.%I detach partition public.%I', part.parent, part.name);
    -- an archive stands alone: it references nothing that may be archived after it
    -- (the top ones: a key referencing a partitioned table has a child per referenced partition, dropped with it)
    for fk in select conname from pg_constraint where conrelid = format('public.%I', part.name)::regclass and contype = 'f' and conparentid = 0 loop
      execute format('alter table public.%I drop constraint %I', part.name, fk.conname);
    end loop;
    execute format('alter table public.%I set schema sluice_archive', part.name);
    execute format('select count(*) from sluice_archive.%I', part.name) into n;
    insert into archived_partitions (partition, parent, month, rows) values (part.name, part.parent, archive_month.month, n);
    counted := counted || jsonb_build_object(part.parent, n);
  end loop;
  return counted;
end $$;

-- the owner's alone: a function is executable by everyone unless taken back
revoke execute on function ensure_month_partitions(text, date, date), archive_month(date) from public;
