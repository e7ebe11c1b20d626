-- Webhook secret rotation (issue 22). During a rotation's overlap an entity's
-- deliveries are signed with two secrets: webhook_secret (the new one, which signs
-- first) and webhook_secret_previous (the one it replaced), until the entity retires
-- the previous one or webhook_secret_previous_until passes, whichever comes first.
-- The two secret columns are entities.webhook_secret and entities.webhook_secret_previous:
-- the read-only role is granted neither (src/db/roles.ts, SECRET_COLUMNS).
alter table entities
  add column webhook_secret_previous text check (length(webhook_secret_previous) >= 32),
  add column webhook_secret_previous_until timestamptz,
  add column webhook_secret_rotated_at timestamptz,
  add constraint entity_previous_secret_has_end check ((webhook_secret_previous is null) = (webhook_secret_previous_until is null)),
  add constraint entity_previous_secret_is_another check (webhook_secret_previous is distinct from webhook_secret);
