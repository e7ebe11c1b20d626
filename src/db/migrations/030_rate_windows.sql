-- Rate-limit windows shared by every API process (issue 22): one row per bucket, the
-- hits counted in its current fixed window. Two API replicas behind one load balancer
-- then enforce one limit, not one each. Unlogged: a window is worth nothing after a
-- crash (the limits start afresh), and its writes skip the WAL on every request.
create unlogged table rate_windows (
  key        text primary key,
  started_at timestamptz not null,
  window_ms  integer not null check (window_ms > 0),
  hits       bigint not null check (hits >= 0)
);
-- the worker drops windows long over (callers gone quiet, addresses seen once)
create index rate_windows_started_idx on rate_windows (started_at);
