-- A creation whose saga has begun to undo it (its first compensation ran): the slot
-- is still `pending`, so it still counts against the entity's cap, and a refusal at
-- the cap can say how many slots are on their way back and that a retry soon succeeds.
alter table subaccounts add column rolling_back_at timestamptz;
