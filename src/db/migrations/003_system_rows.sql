-- The system party owns the world account (and later the pool).
insert into parties (id, name) values ('sluice', 'Sluice system');
insert into accounts (id, owner_id, kind, currency) values ('world', 'sluice', 'world', 'UNIT');
