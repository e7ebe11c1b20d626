-- The double-entry ledger. The database, not the application, keeps the books:
--  * accounts.balance changes only through a transfers INSERT (trigger), so every
--    balance is the sum of its transfers and each transfer debits what it credits;
--  * accounts.held changes only through holds (trigger);
--  * available = balance - held >= 0 is a CHECK (the world account excepted);
--  * transfers, events are append-only (UPDATE/DELETE/TRUNCATE raise).

create table parties (
  id           text primary key check (id ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
  name         text not null check (length(name) between 1 and 200),
  -- sha256 of the API key; the key itself is shown once and never stored
  api_key_hash text unique,
  created_at   timestamptz not null default now()
);

create table accounts (
  id         text primary key check (id ~ '^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$'),
  owner_id   text not null references parties(id),
  kind       text not null check (kind in ('user', 'entity', 'subaccount', 'pool', 'escrow', 'world')),
  currency   text not null default 'UNIT' check (currency ~ '^[A-Z]{3,8}$'),
  balance    bigint not null default 0,
  held       bigint not null default 0 check (held >= 0),
  created_at timestamptz not null default now(),
  constraint available_not_negative check (kind = 'world' or balance - held >= 0),
  -- balances stay exact in JavaScript numbers (2^53 - 1)
  constraint balance_in_safe_range check (balance between -9007199254740991 and 9007199254740991)
);
create index accounts_owner_idx on accounts (owner_id);
-- exactly one world account per currency: the other side of deposits and withdrawals
create unique index accounts_one_world_per_currency on accounts (currency) where kind = 'world';

create table holds (
  id              bigserial primary key,
  account_id      text not null references accounts(id),
  amount          bigint not null check (amount > 0),
  captured        bigint not null default 0 check (captured >= 0),
  released        bigint not null default 0 check (released >= 0),
  -- stream escrow captures once per tick; every other hold captures at most once
  multi_capture   boolean not null default false,
  capture_count   integer not null default 0 check (multi_capture or capture_count <= 1),
  status          text not null default 'open' check (status in ('open', 'captured', 'released', 'expired')),
  expires_at      timestamptz,
  idempotency_key text not null unique,
  reference       jsonb not null default '{}'::jsonb,
  created_at      timestamptz not null default now(),
  resolved_at     timestamptz,
  constraint hold_resolves_at_most_once check (captured + released <= amount),
  constraint hold_status_matches_remaining check ((status = 'open') = (captured + released < amount))
);
create index holds_open_idx on holds (account_id) where status = 'open';

create table transfers (
  id                bigserial primary key,
  idempotency_key   text not null unique check (length(idempotency_key) between 1 and 300),
  kind              text not null check (kind ~ '^[a-z_]{1,40}$'),
  debit_account_id  text not null references accounts(id),
  credit_account_id text not null references accounts(id),
  amount            bigint not null check (amount > 0),
  hold_id           bigint references holds(id),
  payment_ref       text,
  stream_ref        text,
  tick              bigint,
  job_id            text,
  subaccount_id     text,
  memo              text check (length(memo) <= 500),
  created_at        timestamptz not null default now(),
  check (debit_account_id <> credit_account_id)
);
create index transfers_debit_idx on transfers (debit_account_id, id);
create index transfers_credit_idx on transfers (credit_account_id, id);

create table events (
  id         bigserial primary key,
  type       text not null check (type ~ '^[a-z_.]{1,80}$'),
  subject    text not null,
  payload    jsonb not null,
  -- parties allowed to read this event through the API (the admin reads all)
  parties    text[] not null default '{}',
  created_at timestamptz not null default now()
);
create index events_parties_idx on events using gin (parties);

-- Idempotency: one row per request key, written in the same transaction as the
-- money movement it guards. Same key + same request hash: the stored result.
create table idempotency_keys (
  key          text primary key check (length(key) between 1 and 300),
  operation    text not null,
  request_hash text not null,
  result       jsonb,
  created_at   timestamptz not null default now()
);

-- ---------------------------------------------------------------- append-only
create function forbid_change() returns trigger language plpgsql as $$
begin
  raise exception '% is append-only: % refused', tg_table_name, tg_op using errcode = 'restrict_violation';
end $$;

create trigger transfers_append_only before update or delete on transfers
  for each row execute function forbid_change();
create trigger transfers_no_truncate before truncate on transfers
  for each statement execute function forbid_change();
create trigger events_append_only before update or delete on events
  for each row execute function forbid_change();
create trigger events_no_truncate before truncate on events
  for each statement execute function forbid_change();

-- ---------------------------------------------------------------- transfers move balances
create function apply_transfer() returns trigger language plpgsql as $$
declare
  debit_currency text;
  credit_currency text;
  debit_kind text;
  credit_kind text;
begin
  if new.hold_id is not null then
    -- a capture: the money leaves the hold first (the holds trigger lowers accounts.held)
    update holds set captured = captured + new.amount, capture_count = capture_count + 1,
                     status = case when captured + new.amount + released = amount then 'captured' else status end,
                     resolved_at = case when captured + new.amount + released = amount then now() else resolved_at end
      where id = new.hold_id and account_id = new.debit_account_id and status = 'open';
    if not found then
      raise exception 'hold % is not open on account %', new.hold_id, new.debit_account_id using errcode = 'check_violation';
    end if;
  end if;
  update accounts set balance = balance - new.amount where id = new.debit_account_id returning currency, kind into debit_currency, debit_kind;
  update accounts set balance = balance + new.amount where id = new.credit_account_id returning currency, kind into credit_currency, credit_kind;
  if debit_currency is distinct from credit_currency then
    raise exception 'transfer between % and % accounts', debit_currency, credit_currency using errcode = 'check_violation';
  end if;
  -- the world account is the outside world: only deposits and withdrawals touch it
  if (debit_kind = 'world' or credit_kind = 'world') and new.kind not in ('deposit', 'withdrawal') then
    raise exception 'a % transfer cannot touch the world account', new.kind using errcode = 'check_violation';
  end if;
  return new;
end $$;

create trigger transfers_apply after insert on transfers
  for each row execute function apply_transfer();

-- ---------------------------------------------------------------- holds move accounts.held
create function apply_hold() returns trigger language plpgsql as $$
begin
  if tg_op = 'INSERT' then
    update accounts set held = held + new.amount where id = new.account_id;
    return new;
  end if;
  if tg_op = 'DELETE' then
    raise exception 'holds are never deleted' using errcode = 'restrict_violation';
  end if;
  if new.account_id <> old.account_id or new.amount <> old.amount
     or new.captured < old.captured or new.released < old.released then
    raise exception 'hold % may only be captured or released', old.id using errcode = 'restrict_violation';
  end if;
  if old.status <> 'open' then
    raise exception 'hold % is already %', old.id, old.status using errcode = 'check_violation';
  end if;
  update accounts
     set held = held - ((new.captured + new.released) - (old.captured + old.released))
   where id = new.account_id;
  return new;
end $$;

create trigger holds_apply_insert after insert on holds
  for each row execute function apply_hold();
create trigger holds_apply_update before update or delete on holds
  for each row execute function apply_hold();
