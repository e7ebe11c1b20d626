import { createHash, randomBytes } from 'node:crypto';
import { inTransaction, type Queryable } from '../db/pool';
import { notFound, SluiceError } from '../domain/errors';
import { appendEvent } from './events';
import { pageRows } from './paging';

/** Active keys a party may hold at once: two, so a key is rotated without downtime (migration 027 keeps it). */
export const API_KEYS_ACTIVE_MAX = 2;
/** Keys one page of a key list holds at most. */
export const API_KEYS_PAGE_MAX = 100;
/** Random characters of a key shown in its prefix (of 32: the other 26, 156 bits, stay secret). */
const PREFIX_RANDOM_CHARS = 6;
/** How stale a key's last use may be before a lookup writes it again. */
const LAST_USED_REFRESH = '60 seconds';

export const hashApiKey = (key: string) => createHash('sha256').update(key).digest('hex');

/** A key as its owner and the admin see it: never the key, never its hash. */
export interface ApiKeyView {
  id: number;
  party: string;
  prefix: string;
  createdAt: string;
  revokedAt?: string;
  lastUsedAt?: string;
}

/** A key just made: the only time the key itself is shown. */
export interface NewApiKey extends ApiKeyView {
  apiKey: string;
}

interface KeyRow {
  id: string;
  party_id: string;
  prefix: string;
  created_at: Date;
  revoked_at: Date | null;
  last_used_at: Date | null;
}

const KEY_COLUMNS = 'id, party_id, prefix, created_at, revoked_at, last_used_at';

const toView = (r: KeyRow): ApiKeyView => ({
  id: Number(r.id),
  party: r.party_id,
  prefix: r.prefix,
  createdAt: r.created_at.toISOString(),
  ...(r.revoked_at && { revokedAt: r.revoked_at.toISOString() }),
  ...(r.last_used_at && { lastUsedAt: r.last_used_at.toISOString() }),
});

/** A new key for `party`: `sk_<party>_` and 24 random bytes (192 bits). */
function newKey(party: string) {
  const random = randomBytes(24).toString('base64url');
  return { apiKey: `sk_${party}_${random}`, prefix: `sk_${party}_${random.slice(0, PREFIX_RANDOM_CHARS)}` };
}

/** A party that must exist (404 if not); `lock`: its row locked, so a party's key changes are counted one after the other (the trigger locks it too). */
export async function assertParty(db: Queryable, party: string, lock: 'lock' | 'read' = 'read'): Promise<void> {
  const { rowCount } = await db.query(`select 1 from parties where id = $1${lock === 'lock' ? ' for update' : ''}`, [party]);
  if (!rowCount) throw notFound('party', party);
}

/**
 * Issues a key for a party and its key.created event, in the caller's transaction (a
 * party's registration) or its own. A party already holding API_KEYS_ACTIVE_MAX active
 * keys is refused: a rotation revokes the old key after switching to the new one.
 */
export function createApiKey(db: Queryable, input: { party: string; by: string }): Promise<NewApiKey> {
  const { apiKey, prefix } = newKey(input.party);
  return inTransaction(db, async (client) => {
    await assertParty(client, input.party, 'lock');
    let row: KeyRow;
    try {
      const inserted = await client.query<KeyRow>(`insert into api_keys (party_id, key_hash, prefix) values ($1, $2, $3) returning ${KEY_COLUMNS}`, [input.party, hashApiKey(apiKey), prefix]);
      row = inserted.rows[0]!;
    } catch (error) {
      const e = error as { code?: string; constraint?: string };
      if (e.code === '23514' && e.constraint === 'api_keys_active_max') {
        throw new SluiceError(
          'limit_exceeded',
          `party ${input.party} already has ${API_KEYS_ACTIVE_MAX} active API keys, the most it may hold: revoke one first (POST /v1/keys/<id>/revoke), then create the new one. A rotation is: create the new key, switch to it, revoke the old one`,
          { party: input.party, limit: API_KEYS_ACTIVE_MAX },
        );
      }
      throw error;
    }
    const key = toView(row);
    await appendEvent(client, { type: 'key.created', subject: input.party, payload: { party: input.party, keyId: key.id, prefix, by: input.by }, parties: [input.party] });
    return { ...key, apiKey };
  });
}

/**
 * Revokes a key of `party` (a key of another party is not found, as a missing one is),
 * with its key.revoked event; revoking a revoked key answers it unchanged. `callerKeyId`
 * is the key the request came with: revoking it is refused while it is the party's
 * only active key, so no party locks itself out by mistake (the admin, calling with no
 * party key, may revoke any).
 */
export function revokeApiKey(db: Queryable, input: { party?: string; keyId: number; by: string; callerKeyId?: number }): Promise<ApiKeyView> {
  return inTransaction(db, async (client) => {
    const found = await client.query<KeyRow>(`select ${KEY_COLUMNS} from api_keys where id = $1 and ($2::text is null or party_id = $2)`, [input.keyId, input.party ?? null]);
    if (!found.rows[0]) throw notFound('key', String(input.keyId));
    const party = found.rows[0].party_id;
    await assertParty(client, party, 'lock');
    const { rows } = await client.query<KeyRow & { others_active: number }>(
      `select ${KEY_COLUMNS}, (select count(*)::int from api_keys o where o.party_id = k.party_id and o.id <> k.id and o.revoked_at is null) as others_active
         from api_keys k where id = $1`,
      [input.keyId],
    );
    const row = rows[0]!;
    if (row.revoked_at) return toView(row);
    if (input.callerKeyId === Number(row.id) && row.others_active === 0) {
      throw new SluiceError(
        'invalid_state',
        `key ${input.keyId} is the only active key of ${party} and this request is signed with it: revoking it would lock ${party} out. Create a new key (POST /v1/keys), switch to it, then revoke this one`,
        { keyId: input.keyId, party },
      );
    }
    const revoked = await client.query<KeyRow>(`update api_keys set revoked_at = now() where id = $1 returning ${KEY_COLUMNS}`, [input.keyId]);
    await appendEvent(client, { type: 'key.revoked', subject: party, payload: { party, keyId: Number(row.id), prefix: row.prefix, by: input.by }, parties: [party] });
    return toView(revoked.rows[0]!);
  });
}

/** Keys by id after a cursor: one party's, or every party's (the admin's list). */
export async function listApiKeys(db: Queryable, opts: { party?: string; after: number; limit: number }): Promise<ApiKeyView[]> {
  const { rows } = await db.query<KeyRow>(`select ${KEY_COLUMNS} from api_keys where ($1::text is null or party_id = $1) and id > $2 order by id limit $3`, [
    opts.party ?? null,
    opts.after,
    pageRows(opts.limit, API_KEYS_PAGE_MAX),
  ]);
  return rows.map(toView);
}

/** Who an API key authenticates: its party and the key's id, or undefined (unknown or revoked). */
export interface KeyOwner {
  party: string;
  keyId: number;
}

/**
 * The active key with this key's hash, in one statement on the unique index; the key's
 * last use is written when it is more than a minute old, so a burst of requests costs
 * one write a minute, not one each.
 */
export async function partyForKey(db: Queryable, apiKey: string): Promise<KeyOwner | undefined> {
  const { rows } = await db.query<{ id: string; party_id: string }>({
    name: 'api-key-lookup',
    text: `with k as (select id, party_id, last_used_at from api_keys where key_hash = $1 and revoked_at is null),
                touched as (update api_keys a set last_used_at = now() from k
                             where a.id = k.id and (k.last_used_at is null or k.last_used_at < now() - interval '${LAST_USED_REFRESH}'))
           select id, party_id from k`,
    values: [hashApiKey(apiKey)],
  });
  const row = rows[0];
  return row && { party: row.party_id, keyId: Number(row.id) };
}
