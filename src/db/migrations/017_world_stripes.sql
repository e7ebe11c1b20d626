-- The world side of deposits and withdrawals as K stripe accounts per currency, so
-- concurrent deposits and withdrawals do not queue on one row (DESIGN §2, issue 18).
-- Every account of kind 'world' is a stripe of its currency's world: stripe 0 keeps
-- its id ('world' for UNIT) and what it held so far; stripes 1 .. K-1 are
-- '<stripe 0>.<i>', added by the migrator from SLUICE_WORLD_STRIPES
-- (src/ledger/world.ts ensureWorldStripes). The world is the contra account: any
-- stripe may go negative, and the world's balance is the sum of its stripes, so every
-- currency's balances still sum to zero.
drop index accounts_one_world_per_currency;

-- A deposit or withdrawal finds its currency's stripes by this index.
create index accounts_world_idx on accounts (currency, id) where kind = 'world';
