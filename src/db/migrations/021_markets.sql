-- Markets (DESIGN §6): sellers post to a named market, and each market has its own
-- crown, replayed from its own events. A market's direction says which rate wins:
-- `ask`, the lowest (today's rule), or `bid`, the highest. The `default` market is
-- `ask`, and every event posted before markets existed is its: old clients and old
-- data keep the crown they had.
create table markets (
  id         text primary key check (id ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
  direction  text not null check (direction in ('ask', 'bid')),
  created_at timestamptz not null default now()
);
insert into markets (id, direction) values ('default', 'ask');

-- A market's direction is what its whole history was replayed with: it never changes
-- (a bid market turned ask would rewrite crown time already read and paid).
create function forbid_market_direction_change() returns trigger language plpgsql as $$
begin
  if new.direction is distinct from old.direction or new.id is distinct from old.id then
    raise exception 'a market''s id and direction never change (market %)', old.id using errcode = 'check_violation';
  end if;
  return new;
end $$;
create trigger markets_direction_fixed before update on markets
  for each row execute function forbid_market_direction_change();
create trigger markets_no_delete before delete on markets
  for each row execute function forbid_change();
create trigger markets_no_truncate before truncate on markets
  for each statement execute function forbid_change();

-- no event may commit while the column and the snapshot's key change
lock table rate_events in share row exclusive mode;

-- A constant default adds the column without rewriting rate_events (append-only: no
-- update trigger fires): every existing event is the default market's.
alter table rate_events add column market text not null default 'default' references markets(id);
-- a market's window is one range of this index (the replay reads (tick, id) order)
create index rate_events_market_tick_idx on rate_events (market, tick, id);

-- From here on, the snapshot's part (test/integration/crownSnapshot.test.ts runs it
-- again over migration 018's fold, on a database that already holds events).

-- The sellers that ever posted to a market, so a replay of the market looks up the
-- state of its own sellers only. Kept by the fold below, from rate_events alone.
create table market_sellers (
  market text not null references markets(id),
  seller text not null references sellers(id),
  primary key (market, seller)
);
insert into market_sellers (market, seller) select distinct 'default', seller from rate_events;

-- The snapshot (migration 018) becomes per (market, seller): a seller's state in one
-- market is folded from its events in that market only. Every row so far was folded
-- over all of a seller's events, which were all the default market's: they are right
-- as they are, with their market said.
alter table rate_states add column market text not null default 'default' references markets(id);
alter table rate_states alter column market drop default;
drop index rate_states_seller_idx;
-- the latest row of a (market, seller) before a tick is one backward step of this index (index only)
create index rate_states_market_seller_idx on rate_states (market, seller, tick, event_id) include (rate, active, busy);

-- As migration 018's fold, keyed by (market, seller) instead of seller; and the
-- seller is registered in the market. Its writers are serialised as before
-- (postRateEvent holds the rate board's lock).
create or replace function fold_rate_state() returns trigger language plpgsql as $$
declare
  prior record;
  later record;
  rate_now bigint;
  active_now boolean;
  busy_now boolean;
begin
  insert into market_sellers (market, seller) values (new.market, new.seller) on conflict do nothing;
  select s.rate, s.active, s.busy into prior from rate_states s
   where s.market = new.market and s.seller = new.seller and (s.tick, s.event_id) < (new.tick, new.id)
   order by s.tick desc, s.event_id desc limit 1;
  rate_now := coalesce(new.rate, prior.rate, 0);
  active_now := coalesce(new.active, prior.active, false);
  busy_now := coalesce(new.busy, prior.busy, false);
  insert into rate_states (event_id, market, seller, tick, rate, active, busy) values (new.id, new.market, new.seller, new.tick, rate_now, active_now, busy_now);
  for later in
    select e.id, e.rate, e.active, e.busy from rate_states s join rate_events e on e.id = s.event_id
     where s.market = new.market and s.seller = new.seller and (s.tick, s.event_id) > (new.tick, new.id)
     order by s.tick, s.event_id
  loop
    rate_now := coalesce(later.rate, rate_now);
    active_now := coalesce(later.active, active_now);
    busy_now := coalesce(later.busy, busy_now);
    update rate_states set rate = rate_now, active = active_now, busy = busy_now where event_id = later.id;
  end loop;
  return null;
end $$;
