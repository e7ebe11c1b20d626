-- API keys (issue 22): a party holds up to two active keys at once, so a key is rotated
-- without a moment of downtime (create a new key, switch the callers to it, revoke the
-- old one), and a key can be revoked at all. Authentication is one indexed lookup of
-- the key's SHA-256 among the active keys (src/ledger/apiKeys.ts).
create table api_keys (
  id           bigserial primary key,
  party_id     text not null references parties(id),
  -- sha256 of the key (hex); the key itself is shown once and never stored
  key_hash     text not null unique check (key_hash ~ '^[0-9a-f]{64}$'),
  -- the key's first characters (`sk_<party>_` and a few random ones): not secret, for a
  -- person to tell a party's keys apart
  prefix       text not null check (length(prefix) between 1 and 100),
  created_at   timestamptz not null default now(),
  revoked_at   timestamptz,
  -- refreshed at most once a minute per key by the lookup (a write per request would not be cheap)
  last_used_at timestamptz,
  constraint api_keys_revoked_after_created check (revoked_at is null or revoked_at >= created_at)
);
-- a party's keys, listed and counted
create index api_keys_party_idx on api_keys (party_id, id);

-- At most two active keys per party, kept by the database whatever the code does: the
-- party's row is locked first, so two concurrent creations for one party are counted one
-- after the other. The ledger words the refusal (src/ledger/apiKeys.ts).
create function api_keys_active_max() returns trigger language plpgsql as $$
begin
  perform 1 from parties where id = new.party_id for update;
  if (select count(*) from api_keys where party_id = new.party_id and revoked_at is null) >= 2 then
    raise exception 'party % already has 2 active API keys', new.party_id
      using errcode = 'check_violation', constraint = 'api_keys_active_max';
  end if;
  return new;
end $$;
create trigger api_keys_active_max before insert on api_keys for each row execute function api_keys_active_max();

-- A key's identity never changes and a revocation is final: only revoked_at (once, from
-- null) and last_used_at may be updated, and no row is deleted (the list keeps history).
create function api_keys_immutable() returns trigger language plpgsql as $$
begin
  if tg_op = 'DELETE' then
    raise exception 'api_keys rows are never deleted: revoke the key' using errcode = 'check_violation', constraint = 'api_keys_immutable';
  end if;
  if new.id <> old.id or new.party_id <> old.party_id or new.key_hash <> old.key_hash or new.prefix <> old.prefix or new.created_at <> old.created_at
     or (old.revoked_at is not null and new.revoked_at is distinct from old.revoked_at) then
    raise exception 'api key % changed other than by its revocation or its last use', old.id using errcode = 'check_violation', constraint = 'api_keys_immutable';
  end if;
  return new;
end $$;
create trigger api_keys_immutable before update or delete on api_keys for each row execute function api_keys_immutable();

-- Every party's one key so far, so existing keys keep working. Its random part was never
-- stored, so its prefix is the part every key of the party shares.
insert into api_keys (party_id, key_hash, prefix, created_at)
  select id, api_key_hash, 'sk_' || id || '_', created_at from parties where api_key_hash is not null order by created_at, id;

-- Dropped rather than kept unused: a revocation must reach every copy of a key's hash,
-- and a column nothing reads would keep the first key's hash (a secret to hide from the
-- read-only role) in parties for ever, and an older API reading it would still let a
-- revoked key in.
alter table parties drop column api_key_hash;
