-- When each tick came due (the stream's schedule: opened_at + (n-1) intervals + the
-- time paused before it), recorded as it is billed: billed_at - due_at is the tick's
-- lag, which /metrics reports as a histogram. Null for ticks billed before this
-- column existed (their due time is not recoverable once a later pause moved paused_ms).
alter table stream_ticks add column due_at timestamptz;
