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
  -- the creation request that allocated it: a retried step finds its slot again
  request_id    text not null unique,
  status        text not null check (status in ('pending', 'challenge', 'active', 'failed', 'eliminated')),
  account_id    text unique references accounts(id),
  hold_id       bigint unique references holds(id),
  funding       bigint not null check (funding >= 0),
  failed_step   text,
  failure       text,
  created_at    timestamptz not null default now(),
  activated_at  timestamptz,
  ended_at      timestamptz,
  unique (entity_id, seq),
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

-- the dashboard and elimination find a subaccount's streams by account
create index streams_payer_account_idx on streams (payer_account_id) where status = 'open';
create index streams_payee_account_idx on streams (payee_account_id) where status = 'open';
