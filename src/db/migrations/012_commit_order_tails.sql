-- Tails by commit order (issue 17). Ids come from a sequence when a row is inserted,
-- not when it commits: transaction A takes id 10, B takes 11 and commits first, and a
-- reader paging `where id > cursor` that saw 11 moves past 10 for good.
--
-- Each tailed row records the transaction that wrote it (its top-level xid, 64 bits,
-- never wrapping). A reader is shown only rows whose transaction is older than every
-- transaction still in flight, `xid < pg_snapshot_xmin(pg_current_snapshot())`, in
-- (xid, id) order. The rows below that horizon are final (each of their transactions
-- has committed or aborted), and no transaction that writes later can take an xid
-- below it, so a cursor (xid, id) that only moves forward misses no committed row and
-- shows none twice. The public cursor stays the row's id; src/ledger/tails.ts turns it
-- into the row's (xid, id).
--
-- The insert path pays a column default and one btree index per table (the billing
-- clock appends thousands of events per statement; every row of a statement has its
-- transaction's xid). Rows already here get xid 0: they all committed before this
-- migration (ALTER TABLE waits for their writers), so they come first, in id order,
-- and cursors handed out before it keep their place.
--
-- The xid must be the writer's own: no statement of ours sets it. (When the runtime
-- role of DESIGN §2 exists, it gets INSERT on the other columns only.)

alter table events add column xid xid8 not null default '0';
alter table events alter column xid set default pg_current_xact_id();
create index events_tail_idx on events (xid, id);

alter table rate_events add column xid xid8 not null default '0';
alter table rate_events alter column xid set default pg_current_xact_id();
create index rate_events_tail_idx on rate_events (xid, id);

-- an entity's log is read by entity in commit order; nothing else reads (entity_id, id)
alter table webhook_deliveries add column xid xid8 not null default '0';
alter table webhook_deliveries alter column xid set default pg_current_xact_id();
drop index webhook_deliveries_entity_idx;
create index webhook_deliveries_entity_tail_idx on webhook_deliveries (entity_id, xid, id);
