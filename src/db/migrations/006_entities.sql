-- Entities and subaccounts (DESIGN §4). An entity is a party (its own API key) with
-- one main account that backs its subaccounts: each live subaccount holds
-- `collateral` on it and was funded from it. Subaccount ids are `<entity>/<n>`: the
-- entity id (a party id) cannot contain '/', so the id parses one way, and the
-- reverse lookup is the indexed entity_id column.
create table entities (
  id                 text primary key references parties(id),
  main_account_id    text not null unique references accounts(id),
  collateral         bigint not null check (collateral > 0),
  funding            bigint not null check (funding >= 0),
  webhook_urls       text[] not null default '{}',
  webhook_secret     text not null check (length(webhook_secret) >= 32),
  -- 0: a new subaccount is active at once; otherwise it stays `challenge` this long
  challenge_ms       bigint not null default 0 check (challenge_ms >= 0),
  -- at the end of the challenge it stays only if balance >= funding * bps / 10000
  challenge_min_bps  integer not null default 5000 check (challenge_min_bps between 0 and 10000),
  -- this entity's own limits, overriding the configured defaults (null: the default)
  subaccount_cap     integer check (subaccount_cap >= 1),
  creations_per_hour integer check (creations_per_hour >= 1),
  next_seq           integer not null default 1 check (next_seq >= 1),
  created_at         timestamptz not null default now()
);

create table subaccounts (
  id            text primary key,
  entity_id     text not null references entities(id),
  seq           integer not null check (seq >= 1),
  -- the creation request that allocated it: a retried step finds its slot again.
  -- Unique per entity, not globally: request ids are the entity's own namespace
  request_id    text not null,
  -- `eliminating`: elimination has begun; no new stream or hold may touch it
  status        text not null check (status in ('pending', 'challenge', 'active', 'eliminating', 'failed', 'eliminated')),
  account_id    text unique references accounts(id),
  hold_id       bigint unique references holds(id),
  funding       bigint not null check (funding >= 0),
  failed_step   text,
  failure       text,
  created_at    timestamptz not null default now(),
  activated_at  timestamptz,
  ended_at      timestamptz,
  unique (entity_id, seq),
  unique (entity_id, request_id),
  constraint subaccount_id_is_entity_and_seq check (id = entity_id || '/' || seq),
  constraint subaccount_ended_has_time check ((status in ('failed', 'eliminated')) = (ended_at is not null))
);
create index subaccounts_entity_status_idx on subaccounts (entity_id, status);

-- every webhook delivery attempt, with its outcome
create table webhook_deliveries (
  id           bigserial primary key,
  entity_id    text not null references entities(id),
  event_key    text not null,
  event_type   text not null,
  url          text not null,
  attempt      integer not null check (attempt >= 1),
  status_code  integer,
  ok           boolean not null,
  error        text,
  at           timestamptz not null default now()
);
create index webhook_deliveries_entity_idx on webhook_deliveries (entity_id, id);

-- Elimination finds a subaccount's open streams by account, and the dashboard sums
-- paid and received over all of them (open or not): the status and paid ride in the
-- index so both are index-only scans.
create index streams_payer_account_idx on streams (payer_account_id, status) include (paid);
create index streams_payee_account_idx on streams (payee_account_id, status) include (paid);

-- ---------------------------------------------------------------- ended subaccounts stay ended
-- The database refuses what application code must never do (DESIGN §2: the last line
-- of defence). Each guard raises check_violation with a named constraint, which the
-- API and the activities map to one typed error (src/domain/errors.ts).

-- Money into or out of a failed or eliminated subaccount's account: refused. (An
-- `eliminating` one still settles its closing streams and is swept.) Writers lock
-- the accounts before inserting a transfer, and the status changes to an ended one
-- under the same account lock, so this read cannot race with the change.
create function refuse_transfer_on_ended_subaccount() returns trigger language plpgsql as $$
declare
  ended text;
begin
  select id into ended from subaccounts
   where account_id in (new.debit_account_id, new.credit_account_id) and status in ('failed', 'eliminated') limit 1;
  if ended is not null then
    raise exception 'subaccount % has ended: its account takes no more money', ended
      using errcode = 'check_violation', constraint = 'subaccount_not_live';
  end if;
  return new;
end $$;
create trigger transfers_refuse_ended_subaccount before insert on transfers
  for each row execute function refuse_transfer_on_ended_subaccount();

-- A new hold, or a new open stream, on a subaccount's account only while it is live
-- (challenge or active): not while pending, eliminating or ended, so elimination's
-- `eliminating` mark stops new streams and holds before it closes the open ones.
create function refuse_subaccount_not_live(account text) returns void language plpgsql as $$
declare
  s record;
begin
  select id, status into s from subaccounts where account_id = account;
  if found and s.status not in ('challenge', 'active') then
    raise exception 'subaccount % is %: it takes no new holds or streams', s.id, s.status
      using errcode = 'check_violation', constraint = 'subaccount_not_live';
  end if;
end $$;

create function refuse_hold_on_subaccount_not_live() returns trigger language plpgsql as $$
begin
  perform refuse_subaccount_not_live(new.account_id);
  return new;
end $$;
create trigger holds_refuse_subaccount_not_live before insert on holds
  for each row execute function refuse_hold_on_subaccount_not_live();

create function refuse_stream_on_subaccount_not_live() returns trigger language plpgsql as $$
begin
  if new.status = 'open' then
    perform refuse_subaccount_not_live(new.payer_account_id);
    perform refuse_subaccount_not_live(new.payee_account_id);
  end if;
  return new;
end $$;
create trigger streams_refuse_subaccount_not_live before insert on streams
  for each row execute function refuse_stream_on_subaccount_not_live();

-- A subaccount ends (failed or eliminated) empty: no balance, nothing held on its
-- account, its collateral hold no longer open. Whatever path led there (a
-- compensation after a step that committed late, an elimination racing a hold),
-- a slot that would end holding money is refused, not recorded.
create function subaccount_ends_empty() returns trigger language plpgsql as $$
begin
  if new.status in ('failed', 'eliminated') and old.status not in ('failed', 'eliminated') then
    if exists (select 1 from accounts where id = new.account_id and (balance <> 0 or held <> 0))
       or exists (select 1 from holds where id = new.hold_id and status = 'open') then
      raise exception 'subaccount % cannot end %: its account or collateral still holds money', new.id, new.status
        using errcode = 'check_violation', constraint = 'subaccount_ends_empty';
    end if;
  end if;
  return new;
end $$;
create trigger subaccounts_end_empty before update of status on subaccounts
  for each row execute function subaccount_ends_empty();
