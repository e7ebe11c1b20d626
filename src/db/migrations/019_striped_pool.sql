-- The free-tier pool as K stripe accounts (DESIGN §5), so concurrent reservations
-- do not queue on one row. Every account of kind 'pool' is a stripe: sluice.pool
-- (stripe 0, which keeps what the pool held so far) and sluice.pool.1 .. K-1, created
-- by the migrator from SLUICE_POOL_STRIPES (src/ledger/pool.ts ensurePoolStripes).
-- The pool's balance is the sum of its stripes; "never below zero" is each stripe's
-- accounts CHECK.
--
-- A reservation that no single stripe can hold spills across stripes, so a grant may
-- own several pool holds: grant_holds lists them (it replaces grants.hold_id).
-- The foreign key to the grant is checked at commit: a reservation places its hold
-- before it writes the grant row that records what it got.
create table grant_holds (
  job_id  text not null references grants(job_id) deferrable initially deferred,
  hold_id bigint not null unique references holds(id),
  primary key (job_id, hold_id)
);

insert into grant_holds (job_id, hold_id) select job_id, hold_id from grants where hold_id is not null;
alter table grants drop column hold_id;

-- The pool's accounts, found by kind on every reservation.
create index accounts_pool_idx on accounts (id) where kind = 'pool';

-- The account jobs' payments are paid into (and their absorbs captured into, their
-- refunds and credits paid from) is striped alike: sluice.jobs (stripe 0) and
-- sluice.jobs.1 .. K-1, created by the migrator beside the pool's stripes. Each job
-- keeps to one, chosen by its id when its grant is recorded, so every job's money
-- in and out of it nets to what it kept, and no stripe goes below zero.
alter table grants add column jobs_account_id text not null default 'sluice.jobs' references accounts(id);
alter table grants alter column jobs_account_id drop default;
