-- Stream controls: top-ups, pause/resume, rate changes, open-ended payg streams,
-- low-balance warnings, operators acting for a payer, and distribution streams
-- (one payer, a weighted group of payees). The stream row stays the one lock that
-- orders every change against billing: a control commits between two ticks.

-- an open-ended stream (no cap) bills the payer's account directly: payg only
alter table streams alter column max_total drop not null;
alter table streams add constraint stream_open_ended_is_payg check (max_total is not null or mode = 'payg');

-- a distribution stream pays its members (stream_members), not one payee
alter table streams alter column payee drop not null;
alter table streams alter column payee_account_id drop not null;
alter table streams
  add column kind text not null default 'direct' check (kind in ('direct', 'distribution')),
  add constraint stream_direct_has_payee check ((kind = 'direct') = (payee_account_id is not null and payee is not null));

alter table streams
  -- the terms the stream was opened with (a repeated open compares against these)
  add column opening_rate_per_tick bigint check (opening_rate_per_tick > 0),
  add column deposited bigint not null default 0 check (deposited >= 0),
  -- while paused no tick is billed; paused_ms is the time spent paused before, which
  -- pushes every later tick's due time back (the clock stops, nothing owed is lost)
  add column paused_at timestamptz,
  add column paused_ms bigint not null default 0 check (paused_ms >= 0),
  -- both parties count as seen at a resume: a silence during the pause is no partition
  add column resumed_at timestamptz,
  add constraint stream_paused_is_open check (paused_at is null or status = 'open'),
  -- 'payee': a rate change by the payer waits for the payee's agreement
  add column rate_consent text not null default 'payer' check (rate_consent in ('payer', 'payee')),
  add column proposed_rate_per_tick bigint check (proposed_rate_per_tick > 0),
  -- stream.low_balance fires once this many ticks before the money runs out (again after a top-up)
  add column low_balance_ticks integer not null default 3 check (low_balance_ticks >= 0),
  add column low_balance_at timestamptz,
  -- the operator that opened the stream for its payer, if one did
  add column opened_by text references parties(id);
-- streams opened before these controls kept the rate they opened with
update streams set opening_rate_per_tick = rate_per_tick where opening_rate_per_tick is null;
alter table streams alter column opening_rate_per_tick set not null;

-- A distribution stream's tick is one capture (or payg transfer) per member paid,
-- each keyed by stream, tick and member: a member is paid for a tick at most once.
create unique index transfers_one_split_per_stream_tick_member on transfers (stream_ref, tick, credit_account_id) where kind = 'stream_split';
-- its stream_ticks row sums the parts and names no single transfer
alter table stream_ticks alter column transfer_id drop not null;

create table stream_members (
  stream_ref text not null references streams(ref),
  account_id text not null references accounts(id),
  party      text not null references parties(id),
  weight     bigint not null check (weight between 1 and 1000000),
  -- what the member was paid minus its exact share since the membership last
  -- changed, in units of 1/(sum of weights): bounded, never drifting (src/domain/distribution.ts)
  residual   bigint not null default 0,
  received   bigint not null default 0 check (received >= 0),
  joined_at  timestamptz not null default now(),
  left_at    timestamptz,
  primary key (stream_ref, account_id)
);
create index stream_members_account_idx on stream_members (account_id);

-- Every control, in order, with who did it and for whom: the receipt's pauses and
-- rate history come from here.
create table stream_controls (
  id             bigserial primary key,
  stream_ref     text not null references streams(ref),
  action         text not null check (action in ('deposit', 'pause', 'resume', 'rate_proposed', 'rate_changed', 'member_joined', 'member_left')),
  by_party       text not null,
  -- an operator acting for the payer records the payer here
  on_behalf_of   text references parties(id),
  at             timestamptz not null default now(),
  details        jsonb not null default '{}'::jsonb
);
create index stream_controls_stream_idx on stream_controls (stream_ref, id);
create trigger stream_controls_append_only before update or delete on stream_controls
  for each row execute function forbid_change();

-- The escrow hold of a stream grows with a top-up: only an open multi-capture hold of a stream,
-- only upwards (accounts.held follows, so available >= 0 still guards the funds).
create or replace function apply_hold() returns trigger language plpgsql as $$
begin
  if tg_op = 'INSERT' then
    update accounts set held = held + new.amount where id = new.account_id;
    return new;
  end if;
  if tg_op = 'DELETE' then
    raise exception 'holds are never deleted' using errcode = 'restrict_violation';
  end if;
  if new.account_id <> old.account_id or new.captured < old.captured or new.released < old.released
     or new.amount < old.amount or (new.amount > old.amount and not (old.multi_capture and old.reference ? 'stream')) then
    raise exception 'hold % may only be captured, released or (a stream escrow) topped up', old.id using errcode = 'restrict_violation';
  end if;
  if old.status <> 'open' then
    raise exception 'hold % is already %', old.id, old.status using errcode = 'check_violation';
  end if;
  update accounts
     set held = held + (new.amount - old.amount) - ((new.captured + new.released) - (old.captured + old.released))
   where id = new.account_id;
  return new;
end $$;

-- Operators: a payer lets another party open, pause or cancel its streams, with a
-- limit on what the streams it opens may commit per UTC day.
create table operator_grants (
  payer       text not null references parties(id),
  operator    text not null references parties(id),
  scopes      text[] not null check (cardinality(scopes) > 0 and scopes <@ array['open', 'pause', 'cancel']),
  daily_limit bigint not null check (daily_limit > 0),
  granted_at  timestamptz not null default now(),
  revoked_at  timestamptz,
  primary key (payer, operator),
  check (payer <> operator)
);
create index operator_grants_operator_idx on operator_grants (operator);

-- What an operator's streams committed per day: maxTotal of each stream it opened.
-- The CHECK is the limit: a stream that would pass it does not open.
create table operator_spend (
  payer       text not null,
  operator    text not null,
  day         date not null,
  spent       bigint not null check (spent >= 0),
  daily_limit bigint not null,
  primary key (payer, operator, day),
  foreign key (payer, operator) references operator_grants (payer, operator),
  constraint operator_daily_limit check (spent <= daily_limit)
);

-- a subaccount joins a distribution only while it is live (as a stream's payee would)
create function refuse_member_not_live() returns trigger language plpgsql as $$
begin
  if new.left_at is null then
    perform refuse_subaccount_not_live(new.account_id);
  end if;
  return new;
end $$;
create trigger stream_members_refuse_subaccount_not_live before insert or update of left_at on stream_members
  for each row execute function refuse_member_not_live();
