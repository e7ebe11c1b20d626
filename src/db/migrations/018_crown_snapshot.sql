-- Each seller's whole state from each of its rate events on (DESIGN §6), so the state
-- as a window opens is one row per seller, not three probes of rate_events per seller
-- (rate, active and busy are set by different events: each probe walked back past the
-- events that left its field alone). Derived from rate_events alone, by the trigger
-- below; rate_events stays the record.
create table rate_states (
  event_id  bigint primary key references rate_events(id),
  seller    text not null,
  tick      bigint not null,
  -- the seller's state once every one of its events up to (tick, event_id) applied:
  -- a field no event set yet is no offer's (rate 0, inactive, idle)
  rate      bigint not null check (rate >= 0),
  active    boolean not null,
  busy      boolean not null
);
-- the latest row per seller before a tick is one backward step of this index (index only)
create index rate_states_seller_idx on rate_states (seller, tick, event_id) include (rate, active, busy);

-- An event's state is the seller's state just before it (in (tick, id) order) with
-- the event's fields applied. An event may be posted for a tick before events already
-- posted for later ticks (postRateEvent refuses only the past), so the states after
-- it are folded again, in order: few rows (the seller's events for later ticks).
-- The fold relies on its writers being serialised: postRateEvent holds the rate
-- board's lock. The trigger takes no lock of its own (the tails' tests write rows
-- outside the board lock from transactions committing in any order, and must not
-- queue): two transactions inserting one seller's events at once without the board
-- lock would each fold without the other's, so any other writer takes it. Rows of one
-- statement are taken in id order and each sees those before it: a multi-row insert
-- folds like the same events inserted one by one.
create function fold_rate_state() returns trigger language plpgsql as $$
declare
  prior record;
  later record;
  rate_now bigint;
  active_now boolean;
  busy_now boolean;
begin
  select s.rate, s.active, s.busy into prior from rate_states s
   where s.seller = new.seller and (s.tick, s.event_id) < (new.tick, new.id)
   order by s.tick desc, s.event_id desc limit 1;
  rate_now := coalesce(new.rate, prior.rate, 0);
  active_now := coalesce(new.active, prior.active, false);
  busy_now := coalesce(new.busy, prior.busy, false);
  insert into rate_states (event_id, seller, tick, rate, active, busy) values (new.id, new.seller, new.tick, rate_now, active_now, busy_now);
  for later in
    select e.id, e.rate, e.active, e.busy from rate_states s join rate_events e on e.id = s.event_id
     where s.seller = new.seller and (s.tick, s.event_id) > (new.tick, new.id)
     order by s.tick, s.event_id
  loop
    rate_now := coalesce(later.rate, rate_now);
    active_now := coalesce(later.active, active_now);
    busy_now := coalesce(later.busy, busy_now);
    update rate_states set rate = rate_now, active = active_now, busy = busy_now where event_id = later.id;
  end loop;
  return null;
end $$;

-- no event may commit between the fold of those already posted and the trigger's start
lock table rate_events in share row exclusive mode;

-- the events already posted, folded as the trigger would have (one seller at a time, in (tick, id) order)
do $$
declare
  e record;
  seller_now text;
  rate_now bigint;
  active_now boolean;
  busy_now boolean;
begin
  for e in select id, seller, tick, rate, active, busy from rate_events order by seller, tick, id loop
    if seller_now is distinct from e.seller then
      seller_now := e.seller;
      rate_now := 0;
      active_now := false;
      busy_now := false;
    end if;
    rate_now := coalesce(e.rate, rate_now);
    active_now := coalesce(e.active, active_now);
    busy_now := coalesce(e.busy, busy_now);
    insert into rate_states (event_id, seller, tick, rate, active, busy) values (e.id, e.seller, e.tick, rate_now, active_now, busy_now);
  end loop;
end $$;

create trigger rate_events_fold_state after insert on rate_events
  for each row execute function fold_rate_state();
