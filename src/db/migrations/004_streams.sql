-- Streams: pay per tick. The workflow drives time; this table is the truth about
-- money. Every tick is billed in one transaction that locks the stream row first,
-- so a closed stream can never be debited again (no drain after close).

create table streams (
  ref                  text primary key check (ref ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
  payer                text not null references parties(id),
  payee                text not null references parties(id),
  payer_account_id     text not null references accounts(id),
  payee_account_id     text not null references accounts(id),
  rate_per_tick        bigint not null check (rate_per_tick > 0),
  max_total            bigint not null check (max_total > 0),
  tick_interval_ms     integer not null check (tick_interval_ms >= 100),
  mode                 text not null check (mode in ('escrow', 'payg')),
  -- partition awareness is opt-in per stream: null means no liveness checks
  liveness_timeout_ms  integer check (liveness_timeout_ms > 0),
  grace_ms             integer check (grace_ms > 0),
  hold_id              bigint references holds(id),
  status               text not null check (status in ('open', 'closed', 'failed')),
  paid                 bigint not null default 0,
  ticks_billed         integer not null default 0 check (ticks_billed >= 0),
  last_tick            integer not null default 0 check (last_tick >= 0),
  opened_at            timestamptz not null default now(),
  last_billed_at       timestamptz,
  closed_at            timestamptz,
  close_reason         text,
  closed_by            text,
  failure              text,
  workflow_id          text not null,
  constraint stream_paid_within_cap check (paid >= 0 and paid <= max_total),
  constraint stream_escrow_has_hold check ((mode = 'escrow') = (hold_id is not null) or status = 'failed'),
  constraint stream_closed_has_time check ((status = 'open') = (closed_at is null))
);
create index streams_payer_idx on streams (payer, status);
create index streams_payee_idx on streams (payee, status);

-- one row per billed tick; the primary key makes tick n of a stream billable once
create table stream_ticks (
  stream_ref     text not null references streams(ref),
  tick           integer not null check (tick >= 1),
  amount         bigint not null check (amount > 0),
  transfer_id    bigint not null unique references transfers(id),
  billed_at      timestamptz not null default now(),
  -- the liveness evidence the tick was billed on (the auditor re-checks it)
  payer_seen_at  timestamptz,
  payee_seen_at  timestamptz,
  primary key (stream_ref, tick)
);

-- ticks that came due while a party was silent: recorded, never charged
create table stream_skips (
  stream_ref text not null references streams(ref),
  tick       integer not null check (tick >= 1),
  reason     text not null,
  silent_ms  bigint not null,
  at         timestamptz not null default now(),
  primary key (stream_ref, tick)
);

create table party_heartbeats (
  party_id     text primary key references parties(id),
  last_seen_at timestamptz not null
);

-- a stream tick is a transfer that names its stream and tick, at most once each
create unique index transfers_one_per_stream_tick on transfers (stream_ref, tick) where kind = 'stream_tick';

create trigger stream_ticks_append_only before update or delete on stream_ticks
  for each row execute function forbid_change();
