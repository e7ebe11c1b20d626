-- The debt ledger (DESIGN §4): each live subaccount's balance, held, paid and received,
-- checkpointed daily (the checkpoint workflow, at UTC midnight) and on demand. A round
-- is one `at` for all of an entity's live subaccounts, so an entity's figure at any time
-- is the sum of its latest round before then (an eliminated subaccount is in no later
-- round, and drops out).
create table subaccount_checkpoints (
  subaccount_id text not null references subaccounts(id),
  entity_id     text not null references entities(id),
  at            timestamptz not null,
  balance       bigint not null,
  held          bigint not null check (held >= 0),
  paid          bigint not null check (paid >= 0),
  received      bigint not null check (received >= 0),
  primary key (subaccount_id, at)
);
-- an entity's rounds, and one round's rows, are each one range of this index
create index subaccount_checkpoints_entity_idx on subaccount_checkpoints (entity_id, at);
