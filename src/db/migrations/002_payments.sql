-- One-shot payments (a workflow each) and their refunds.
create table payments (
  ref               text primary key check (ref ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
  payer_account_id  text not null references accounts(id),
  payee_account_id  text not null references accounts(id),
  amount            bigint not null check (amount > 0),
  -- the database refuses a refund total above what was paid
  refunded          bigint not null default 0 check (refunded >= 0 and refunded <= amount),
  transfer_id       bigint not null references transfers(id),
  memo              text,
  created_at        timestamptz not null default now()
);
create index payments_payer_idx on payments (payer_account_id);
create index payments_payee_idx on payments (payee_account_id);

create table refunds (
  id          bigserial primary key,
  payment_ref text not null references payments(ref),
  refund_key  text not null,
  amount      bigint not null check (amount > 0),
  transfer_id bigint not null references transfers(id),
  created_at  timestamptz not null default now(),
  unique (payment_ref, refund_key)
);

create trigger refunds_append_only before update or delete on refunds
  for each row execute function forbid_change();
