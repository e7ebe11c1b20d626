-- Sessions (DESIGN §5): a prepaid balance that takes requests, each decided, reserved
-- and settled like a job's grant. The balance is an account of its own, kind
-- `session`, owned by Sluice: "never negative" is the accounts CHECK on available
-- funds, and every movement of it is a transfer with its own idempotency key
-- (the funding, each request's payment and refund, the closing refund).
alter table accounts drop constraint accounts_kind_check;
alter table accounts add constraint accounts_kind_check
  check (kind in ('user', 'entity', 'subaccount', 'pool', 'escrow', 'world', 'session'));

create table sessions (
  session_id       text primary key check (session_id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
  payer            text not null references parties(id),
  -- funds the session and takes back what is left at the close
  payer_account_id text not null references accounts(id),
  -- the session's balance
  account_id       text not null unique references accounts(id),
  status           text not null check (status in ('open', 'closed')),
  funded           bigint not null check (funded > 0),
  refunded         bigint not null default 0 check (refunded between 0 and funded),
  created_at       timestamptz not null default now(),
  closed_at        timestamptz,
  constraint session_closed_has_time check ((status = 'closed') = (closed_at is not null)),
  constraint session_open_refunds_nothing check (status = 'closed' or refunded = 0)
);
create index sessions_payer_idx on sessions (payer, created_at);

-- A request is a grant of its session (job id `session:<session>:<request>`): the pool's
-- reservation, the payer's daily budget (the grants trigger counts it with the payer's
-- jobs) and settlement are the jobs' own. Its payment comes from the session's account.
alter table grants add column session_id text references sessions(session_id),
                   add column request_id text check (request_id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,54}$');
alter table grants add constraint grant_session_request check ((session_id is null) = (request_id is null));
create unique index grants_session_request_idx on grants (session_id, request_id) where session_id is not null;

-- A session account moves only through a session's steps: no payment, stream or
-- withdrawal may touch it, and it holds nothing (a hold would hide a negative balance
-- behind `available`).
create function check_session_transfers() returns trigger language plpgsql as $$
declare
  bad record;
begin
  select m.kind, a.id into bad
    from (select kind, debit_account_id as account_id from new_transfers
          union all
          select kind, credit_account_id from new_transfers) m
    join accounts a on a.id = m.account_id
   where a.kind = 'session' and m.kind not in ('session_fund', 'session_refund', 'job_payment', 'job_refund')
   limit 1;
  if found then
    raise exception 'a % transfer cannot move session account % (a session moves only through its own steps)', bad.kind, bad.id
      using errcode = 'check_violation', constraint = 'session_account_moves';
  end if;
  return null;
end $$;
create trigger transfers_session_accounts after insert on transfers
  referencing new table as new_transfers for each statement execute function check_session_transfers();

create function check_session_holds() returns trigger language plpgsql as $$
begin
  if exists (select 1 from accounts where id = new.account_id and kind = 'session') then
    raise exception 'session account % holds nothing', new.account_id using errcode = 'check_violation', constraint = 'session_account_moves';
  end if;
  return new;
end $$;
create trigger holds_not_on_sessions before insert on holds for each row execute function check_session_holds();

-- A closed session takes no request, and closes only with every request resolved
-- and its balance given back.
create function check_session_grant() returns trigger language plpgsql as $$
begin
  if not exists (select 1 from sessions where session_id = new.session_id and status = 'open') then
    raise exception 'session % is closed: it takes no request', new.session_id using errcode = 'check_violation', constraint = 'session_closed';
  end if;
  return new;
end $$;
create trigger grants_session_open before insert on grants
  for each row when (new.session_id is not null) execute function check_session_grant();

create function check_session_close() returns trigger language plpgsql as $$
begin
  if new.status = 'closed' and old.status = 'open' then
    if exists (select 1 from grants where session_id = new.session_id and status in ('awaiting_payment', 'reserved')) then
      raise exception 'session % still runs requests', new.session_id using errcode = 'check_violation', constraint = 'session_closed';
    end if;
    if (select balance from accounts where id = new.account_id) <> 0 then
      raise exception 'session % closes with its balance given back', new.session_id using errcode = 'check_violation', constraint = 'session_closed';
    end if;
  end if;
  if old.status = 'closed' and new is distinct from old then
    raise exception 'a closed session never changes (session %)', old.session_id using errcode = 'check_violation';
  end if;
  return new;
end $$;
create trigger sessions_close_resolved before update on sessions
  for each row execute function check_session_close();
