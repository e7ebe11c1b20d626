-- Free-tier pool and partial-grant jobs (DESIGN §5). The pool is an ordinary account:
-- a reservation is a hold on it, so "the pool never goes negative" is the accounts
-- CHECK on available funds. What jobs cost is paid into the jobs account; 10% of
-- every paid amount goes from there back to the pool.
insert into accounts (id, owner_id, kind, currency) values ('sluice.pool', 'sluice', 'pool', 'UNIT');
insert into accounts (id, owner_id, kind, currency) values ('sluice.jobs', 'sluice', 'user', 'UNIT');

-- A payer without a row is tier `new`.
create table payer_tiers (
  party_id   text primary key references parties(id),
  tier       text not null check (tier in ('new', 'established', 'trusted', 'elite')),
  updated_at timestamptz not null default now()
);

-- One row per job: the decision, the reservation and how it resolved. A day's usage
-- of a payer's budget is sum(reserved - returned) over that day's rows, so no reset
-- job is needed and a restart loses nothing.
create table grants (
  job_id           text primary key check (job_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
  payer            text not null references parties(id),
  payer_account_id text not null references accounts(id),
  request_hash     text not null check (length(request_hash) between 1 and 128),
  work             jsonb not null,
  estimated_cost   bigint not null check (estimated_cost > 0),
  decision         text not null check (decision in ('free', 'partial', 'gate')),
  tier             text not null,
  -- what the decision offered; a reservation never exceeds it
  advisory_absorb  bigint not null check (advisory_absorb between 0 and estimated_cost),
  status           text not null check (status in ('awaiting_payment', 'reserved', 'settled', 'cancelled', 'failed')),
  -- the UTC day whose budget the reservation uses, and that budget when reserved
  day              date,
  budget           bigint check (budget >= 0),
  hold_id          bigint unique references holds(id),
  reserved         bigint not null default 0 check (reserved between 0 and advisory_absorb),
  absorbed         bigint not null default 0 check (absorbed >= 0),
  returned         bigint not null default 0 check (returned >= 0),
  paid             bigint not null default 0 check (paid between 0 and estimated_cost),
  refunded         bigint not null default 0 check (refunded between 0 and paid),
  credited         bigint not null default 0 check (credited >= 0),
  actual_cost      bigint check (actual_cost >= 0),
  failure          text,
  created_at       timestamptz not null default now(),
  reserved_at      timestamptz,
  resolved_at      timestamptz,
  constraint grant_resolves_at_most_reserved check (absorbed + returned <= reserved),
  constraint grant_resolved_in_full check (status not in ('settled', 'cancelled', 'failed') or (absorbed + returned = reserved and resolved_at is not null)),
  -- a job that ends without settling ends with its payer whole: a paid job is never closed without its refund
  constraint grant_closed_refunded check (status not in ('cancelled', 'failed') or (refunded = paid and absorbed = 0)),
  constraint grant_reservation_has_day check (reserved = 0 or (day is not null and budget is not null and reserved_at is not null)),
  -- 10% of what the payer kept paying, rounded down (domain/grants.ts poolCreditUnits)
  constraint grant_credit_is_a_tenth check (credited = (paid - refunded) / 10 or status <> 'settled')
);
create index grants_payer_day_idx on grants (payer, day);
create index grants_resolved_idx on grants (resolved_at);

-- The database refuses a payer over its daily budget, whatever the application does.
-- Writers lock the payer's party row first (FOR NO KEY UPDATE), so two reservations
-- for one payer cannot both read the same usage. The trigger does not count on it:
-- under READ COMMITTED two writers that skip that lock would each sum the day without
-- the other's uncommitted row, so it takes a transaction lock of its own on
-- (payer, day) first. The second writer waits there for the first to commit, and its
-- sum (a new statement, a new snapshot) then includes the first one's row. Only a
-- write that raises the day's usage needs the check (and the lock).
create function check_grant_budget() returns trigger language plpgsql as $$
declare
  used bigint;
begin
  if new.day is null or new.reserved - new.returned <= 0 then
    return new;
  end if;
  if tg_op = 'UPDATE' and old.day is not distinct from new.day and new.reserved - new.returned <= old.reserved - old.returned then
    return new;
  end if;
  perform pg_advisory_xact_lock(hashtext('grant-budget:' || new.payer), new.day - date '2000-01-01');
  select coalesce(sum(reserved - returned), 0) into used from grants where payer = new.payer and day = new.day;
  if used > new.budget then
    raise exception 'payer % would use % of its % budget on %', new.payer, used, new.budget, new.day using errcode = 'check_violation';
  end if;
  return new;
end $$;

create trigger grants_within_budget after insert or update on grants
  for each row execute function check_grant_budget();
