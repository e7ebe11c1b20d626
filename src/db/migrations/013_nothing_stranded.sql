-- Who closed a job and why (a job's "receipt"): the payer or the admin (cancelled),
-- the system (payment_timeout, work_failed, settlement_refused), or an operator (an
-- outside Temporal cancellation, workflow_cancelled, or the reconciler, workflow_<status>).
alter table grants add column closed_by text, add column close_reason text;
