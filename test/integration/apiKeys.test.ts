import { createHash, randomBytes } from 'node:crypto';
import pg from 'pg';
import { loadMigrations } from '../../src/db/migrate';
import { withDatabase } from '../../src/db/pool';
import { partyForKey } from '../../src/ledger/apiKeys';
import { SERVER_URL } from '../support/db';
import { testParties } from '../support/parties';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';

/**
 * API keys (issue 22): a party holds up to two active keys, so it rotates one without
 * downtime (create, switch, revoke); a revoked key is refused at once on every route;
 * no party locks itself out by revoking the key it calls with; the admin manages any
 * party's keys. On the real stack.
 */

let stack: TestStack;
const { keys, party } = testParties(() => stack);
const admin = () => api(stack.app, ADMIN_KEY);
const withKey = (key: string) => api(stack.app, key);
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
const q = async <T = any>(sql: string, params: unknown[] = []) => (await stack.db.pool.query(sql, params)).rows as T[];

beforeAll(async () => {
  stack = await startTestStack();
  for (const id of ['rota', 'solo', 'capped', 'lost', 'other', 'lister']) await party(id);
});
afterAll(async () => {
  await stack?.stop();
});

/** A few routes of each kind a key may call: reads, writes, its own party's. */
const everyKindOfRoute = (party: string) => [
  { method: 'GET', url: '/v1/accounts' },
  { method: 'GET', url: `/v1/accounts/${party}.w` },
  { method: 'GET', url: '/v1/keys' },
  { method: 'GET', url: '/v1/events?after=0&limit=5' },
  { method: 'POST', url: `/v1/parties/${party}/heartbeat` },
] as const;

async function statuses(key: string, party: string) {
  const c = withKey(key);
  return Promise.all(everyKindOfRoute(party).map(async (r) => `${r.method} ${r.url} ${(r.method === 'GET' ? await c.get(r.url) : await c.post(r.url)).status}`));
}

test('a rotation: both keys work during the overlap; once the old one is revoked it is refused (401) on every route and the new one keeps working', async () => {
  const old = keys.rota!;
  const created = await withKey(old).post('/v1/keys', {});
  expect(created.status).toBe(201);
  const fresh: string = created.body.apiKey;
  expect(fresh).toMatch(/^sk_rota_[A-Za-z0-9_-]{32}$/);
  expect(created.body).toMatchObject({ party: 'rota', prefix: fresh.slice(0, 'sk_rota_'.length + 6), createdAt: expect.any(String) });

  const ok = everyKindOfRoute('rota').map((r) => `${r.method} ${r.url} 200`);
  expect(await statuses(old, 'rota')).toEqual(ok);
  expect(await statuses(fresh, 'rota')).toEqual(ok);

  const oldId = (await withKey(fresh).get('/v1/keys')).body.keys.find((k: { id: number }) => k.id !== created.body.id).id;
  const revoked = await withKey(fresh).post(`/v1/keys/${oldId}/revoke`);
  expect(revoked.status).toBe(200);
  expect(revoked.body).toMatchObject({ id: oldId, party: 'rota', revokedAt: expect.any(String) });

  expect(await statuses(old, 'rota')).toEqual(everyKindOfRoute('rota').map((r) => `${r.method} ${r.url} 401`));
  expect((await withKey(old).get('/v1/accounts')).body.error).toMatchObject({ code: 'unauthorized', message: 'unknown API key' });
  expect(await statuses(fresh, 'rota')).toEqual(ok);
  // the old key is refused by the lookup itself
  expect(await partyForKey(stack.db.pool, old)).toBeUndefined();
  expect(await partyForKey(stack.db.pool, fresh)).toEqual({ party: 'rota', keyId: created.body.id });
});

test('a third active key is refused (422 limit_exceeded, saying to revoke one first) and changes nothing', async () => {
  expect((await withKey(keys.capped!).post('/v1/keys', {})).status).toBe(201);
  const before = await q(`select id, revoked_at from api_keys where party_id = 'capped' order by id`);
  const third = await withKey(keys.capped!).post('/v1/keys', {});
  expect(third.status).toBe(422);
  expect(third.body.error).toMatchObject({ code: 'limit_exceeded', details: { party: 'capped', limit: 2 } });
  expect(third.body.error.message).toMatch(/already has 2 active API keys.*revoke one first/);
  // the admin is held to the same limit
  expect((await admin().post('/v1/parties/capped/keys')).status).toBe(422);
  expect(await q(`select id, revoked_at from api_keys where party_id = 'capped' order by id`)).toEqual(before);
  expect(await q(`select count(*)::int as n from events where type = 'key.created' and subject = 'capped'`)).toEqual([{ n: 2 }]);
});

test('the database keeps the limit too: a third active key inserted directly is refused by its trigger', async () => {
  const insert = (hash: string) => q(`insert into api_keys (party_id, key_hash, prefix) values ('capped', $1, 'sk_capped_')`, [hash]);
  await expect(insert(sha256('direct'))).rejects.toMatchObject({ code: '23514', constraint: 'api_keys_active_max' });
  // and a revocation is final
  const { id } = (await q<{ id: string }>(`select id from api_keys where party_id = 'capped' order by id limit 1`))[0]!;
  await expect(q(`update api_keys set key_hash = $2 where id = $1`, [id, sha256('other')])).rejects.toMatchObject({ constraint: 'api_keys_immutable' });
  await expect(q(`delete from api_keys where id = $1`, [id])).rejects.toMatchObject({ constraint: 'api_keys_immutable' });
});

test('revoking the key you call with is refused (409) while it is your only active key; revoking is idempotent; another party’s key is not found, as a missing one', async () => {
  const own = (await withKey(keys.solo!).get('/v1/keys')).body.keys;
  expect(own).toHaveLength(1);
  const self = await withKey(keys.solo!).post(`/v1/keys/${own[0].id}/revoke`);
  expect(self.status).toBe(409);
  expect(self.body.error).toMatchObject({ code: 'invalid_state' });
  expect(self.body.error.message).toMatch(/only active key of solo.*lock solo out.*Create a new key/);
  expect((await withKey(keys.solo!).get('/v1/accounts')).status).toBe(200);

  // with a second key, the first may go; the same revocation again answers the same key
  const second = (await withKey(keys.solo!).post('/v1/keys', {})).body;
  const first = await withKey(keys.solo!).post(`/v1/keys/${own[0].id}/revoke`);
  expect(first.status).toBe(200);
  const again = await withKey(second.apiKey).post(`/v1/keys/${own[0].id}/revoke`);
  expect(again).toMatchObject({ status: 200, body: first.body });
  expect(await q(`select count(*)::int as n from events where type = 'key.revoked' and subject = 'solo'`)).toEqual([{ n: 1 }]);

  // solo's key, asked for by another party, is answered as a key that does not exist
  const hidden = await withKey(keys.other!).post(`/v1/keys/${second.id}/revoke`);
  const missing = await withKey(keys.other!).post('/v1/keys/999999999/revoke');
  const shape = (b: any) => JSON.stringify({ ...b.error, request_id: undefined }).replaceAll(String(second.id), '<id>').replaceAll('999999999', '<id>');
  expect({ status: hidden.status, body: shape(hidden.body) }).toEqual({ status: missing.status, body: shape(missing.body) });
  expect(hidden.status).toBe(404);
  expect((await withKey(second.apiKey).get('/v1/accounts')).status).toBe(200);
});

test('a key list shows id, party, prefix and times, never a key or its hash; lastUsedAt is written once the key is used', async () => {
  const created = (await withKey(keys.lister!).post('/v1/keys', {})).body;
  const before = (await admin().get('/v1/parties/lister/keys')).body.keys.find((k: { id: number }) => k.id === created.id);
  expect(before.lastUsedAt).toBeUndefined();
  expect((await withKey(created.apiKey).get('/v1/accounts')).status).toBe(200);
  const res = await withKey(keys.lister!).get('/v1/keys');
  expect(res.status).toBe(200);
  expect(res.body.keys).toEqual([
    { id: expect.any(Number), party: 'lister', prefix: 'sk_lister_' + keys.lister!.slice('sk_lister_'.length, 'sk_lister_'.length + 6), createdAt: expect.any(String), lastUsedAt: expect.any(String) },
    { id: created.id, party: 'lister', prefix: created.prefix, createdAt: created.createdAt, lastUsedAt: expect.any(String) },
  ]);
  const text = JSON.stringify(res.body);
  for (const secret of [keys.lister!, created.apiKey, sha256(keys.lister!), sha256(created.apiKey)]) expect(text).not.toContain(secret);
  // the events say who did what, with no key in them
  const events = (await withKey(keys.lister!).get('/v1/events?after=0&type=key.created')).body.events;
  expect(events.map((e: any) => e.payload)).toEqual([
    { party: 'lister', keyId: res.body.keys[0].id, prefix: res.body.keys[0].prefix, by: 'admin' },
    { party: 'lister', keyId: created.id, prefix: created.prefix, by: 'lister' },
  ]);
});

test('a filter or field naming another party is refused (403) for a party, never ignored; the party’s own id is fine', async () => {
  const refused = await withKey(keys.lister!).get('/v1/keys?party=rota');
  expect(refused.status).toBe(403);
  expect(refused.body.error).toMatchObject({ code: 'forbidden', param: 'party' });
  expect(refused.body.error.message).toMatch(/query parameter party names rota/);
  expect((await withKey(keys.lister!).get('/v1/keys?party=lister')).status).toBe(200);
  const created = await withKey(keys.lister!).post('/v1/keys', { party: 'rota' });
  expect(created.status).toBe(403);
  expect(created.body.error).toMatchObject({ code: 'forbidden', param: 'party' });
  // the admin must name the party on /v1/keys: it has no key of its own
  expect((await admin().post('/v1/keys', {})).body.error).toMatchObject({ code: 'invalid_request', param: 'party' });
});

test('the admin recovers a party whose only key was lost: a new key for it, then the lost one revoked (the admin may revoke a last key)', async () => {
  const lostId = (await admin().get('/v1/parties/lost/keys')).body.keys[0].id;
  const created = await admin().post('/v1/parties/lost/keys');
  expect(created.status).toBe(201);
  expect(created.body).toMatchObject({ party: 'lost', apiKey: expect.stringMatching(/^sk_lost_/) });
  expect((await admin().post(`/v1/parties/lost/keys/${lostId}/revoke`)).body).toMatchObject({ id: lostId, revokedAt: expect.any(String) });
  expect((await withKey(keys.lost!).get('/v1/accounts')).status).toBe(401);
  expect((await withKey(created.body.apiKey).get('/v1/accounts/lost.w')).status).toBe(200);
  // the admin may revoke a party's last key (a stolen key), and under another party's path the key is not found
  expect((await admin().post(`/v1/parties/rota/keys/${created.body.id}/revoke`)).status).toBe(404);
  expect((await admin().post(`/v1/parties/lost/keys/${created.body.id}/revoke`)).status).toBe(200);
  expect((await withKey(created.body.apiKey).get('/v1/accounts')).status).toBe(401);
  expect((await admin().get('/v1/parties/nobody-here/keys')).status).toBe(404);
  expect((await admin().post('/v1/parties/nobody-here/keys')).status).toBe(404);
});

test('migration 027 carries every key of parties.api_key_hash over: a key issued before it keeps working', async () => {
  const name = `sluice_test_keys_${randomBytes(4).toString('hex')}`;
  const server = new pg.Client({ connectionString: SERVER_URL });
  await server.connect();
  await server.query(`create database ${name}`);
  const db = new pg.Client({ connectionString: withDatabase(SERVER_URL, name) });
  try {
    await db.connect();
    const migrations = loadMigrations();
    for (const m of migrations.filter((m) => m.version < 27)) await db.query(m.sql);
    const key = `sk_early_${randomBytes(24).toString('base64url')}`;
    await db.query(`insert into parties (id, name, api_key_hash) values ('early', 'Early', $1), ('keyless', 'Keyless', null)`, [sha256(key)]);
    await db.query(migrations.find((m) => m.version === 27)!.sql);
    expect(await partyForKey(db, key)).toEqual({ party: 'early', keyId: expect.any(Number) });
    expect((await db.query(`select party_id, prefix, revoked_at from api_keys`)).rows).toEqual([{ party_id: 'early', prefix: 'sk_early_', revoked_at: null }]);
    expect((await db.query(`select column_name from information_schema.columns where table_name = 'parties' and column_name = 'api_key_hash'`)).rows).toEqual([]);
  } finally {
    await db.end().catch(() => undefined);
    await server.query(`drop database if exists ${name}`);
    await server.end();
  }
});
