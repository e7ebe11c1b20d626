-- The tails' horizon, placed without a race (migration 014 left one).
--
-- Migration 014's tail_horizon() ran inside the reading statement: it took that
-- statement's snapshot, then read pg_stat_activity to drop the in-flight xids of other
-- databases. A transaction of another database that ended between the two could not be
-- placed, so it counted as ours, and for that one read the horizon fell below rows the
-- tail had already shown: a page came back empty while committed rows were there, and
-- a reader that stops at an empty page stopped early. With many databases writing on
-- one server (the test suite's, a shared server's) it happened.
--
-- Now the order is the other way round: first who is writing in another database
-- (pg_stat_activity), then a snapshot taken after that read (a statement of its own in
-- this VOLATILE function, so a fresh snapshot under READ COMMITTED). An xid in flight in
-- that snapshot that belongs to another database was already writing at the first read,
-- so it is placed and dropped. One that is not in the first read is ours, or began
-- since; it counts, which can only hide rows newer than itself, rows not final anyway.
--
-- The horizon is that of a snapshot taken inside the function, later than the calling
-- statement's own. A page must therefore be read by a later statement
-- (src/ledger/tails.ts reads the horizon, then the page below it), never by the same
-- one, which could pass rows committed after its snapshot but before the horizon's.
create or replace function tail_horizon() returns xid8 language plpgsql volatile as $$
declare
  elsewhere bigint[];
  snap pg_snapshot;
begin
  select coalesce(array_agg(a.backend_xid::text::bigint), '{}') into elsewhere
    from pg_stat_activity a
   where a.backend_xid is not null and a.datname is distinct from current_database();
  select pg_current_snapshot() into snap;
  return coalesce(
    (select min(x) from pg_snapshot_xip(snap) as x
      where (x::text::numeric % 4294967296)::bigint <> all (elsewhere)),
    pg_snapshot_xmax(snap));
end
$$;
