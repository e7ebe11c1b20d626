-- The tails' horizon (migration 012), per database. pg_snapshot_xmin is the oldest
-- transaction in flight on the whole server: one left open in another database (a
-- dashboard's session, a migration, a test holding a lock on purpose) would stall
-- every tail here until it ended, though it can write no row of ours.
--
-- tail_horizon() is the oldest transaction of the reader's snapshot still in flight
-- that may be ours: every xid of the snapshot's in-flight list, except those that
-- pg_stat_activity shows running in another database. One that ended between the
-- snapshot and the read of pg_stat_activity cannot be placed and counts (it is gone
-- from the next snapshot anyway); with none left, the snapshot's xmax. Rows below it
-- are final and no later writer of this database can sort below it, as with
-- pg_snapshot_xmin. (pg_stat_activity shows a backend's xid as 32 bits: the match is
-- on the xid8 modulo 2^32, which can only wrongly count a transaction, never drop one.)
create function tail_horizon() returns xid8 language sql stable as $$
  with snap as (select pg_current_snapshot() as s),
  flight as (
    select x from snap, pg_snapshot_xip(snap.s) as x
     where not exists (
       select 1 from pg_stat_activity a
        where a.backend_xid is not null
          and a.datname is distinct from current_database()
          and a.backend_xid::text::bigint = (x::text::numeric % 4294967296)::bigint))
  select coalesce((select min(x) from flight), (select pg_snapshot_xmax(s) from snap))
$$;
