-- The rate board (DESIGN §6): sellers post rate and state events, each effective
-- from a tick; the crown is replayed from them (src/domain/crown.ts). Append-only:
-- history is what rewards and audits replay, so it is never rewritten.
create table sellers (
  id          text primary key references parties(id),
  -- where streams routed to this seller (payee "best") are paid
  account_id  text references accounts(id),
  created_at  timestamptz not null default now()
);

create table rate_events (
  id         bigserial primary key,
  seller     text not null references sellers(id),
  tick       bigint not null check (tick >= 0),
  rate       bigint check (rate >= 0),
  active     boolean,
  busy       boolean,
  created_at timestamptz not null default now(),
  constraint rate_event_changes_something check (rate is not null or active is not null or busy is not null)
);
create index rate_events_tick_idx on rate_events (tick, id);
create index rate_events_seller_idx on rate_events (seller, tick, id);

create trigger rate_events_append_only before update or delete on rate_events
  for each row execute function forbid_change();
create trigger rate_events_no_truncate before truncate on rate_events
  for each statement execute function forbid_change();
