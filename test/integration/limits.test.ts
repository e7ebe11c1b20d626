import { randomBytes } from 'node:crypto';
import { WorkflowNotFoundError } from '@temporalio/client';
import { buildApp, type Api } from '../../src/api/app';
import { countHits, pruneRateWindows } from '../../src/db/rateWindows';
import {
  BODY_LIMIT_BYTES_DEFAULT,
  IDEMPOTENCY_KEY_CHARS_MAX,
  PAGE_ROWS_MAX,
  STREAM_BATCH_ITEMS_MAX,
  STREAM_MEMBERS_MAX,
  WEBHOOK_URLS_MAX,
  WRITE_RATE_MAX_DEFAULT,
  WRITE_RATE_WINDOW_MS_DEFAULT,
} from '../../src/api/limits';
import { loadConfig } from '../../src/config';
import { paymentWorkflowId } from '../../src/domain/payments';
import { startServiceProcess } from '../support/apiProcess';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';
import { sleep, testParties } from '../support/parties';
import { databaseSnapshot } from '../support/routeCatalog';

/**
 * The limits of the API against the real stack: writes per caller per window (429
 * with Retry-After, nothing changed, no idempotency key used, no workflow started),
 * the body size (413), page sizes (400 above each route's maximum), batch and member
 * counts, and the Idempotency-Key's length on every keyed route.
 */

let stack: TestStack;
const { keys, as, party } = testParties(() => stack);
const admin = () => api(stack.app, ADMIN_KEY);
// workflow ids (payment-<ref>, stream-<ref>) are shared by every test file on the dev server
const RUN = randomBytes(4).toString('hex');
const ref = (name: string) => `lim-${RUN}-${name}`;

const q = async (sql: string, params: unknown[] = []) => (await stack.db.pool.query(sql, params)).rows;
/** Everything a refused request could have changed: every table. */
const snapshot = () => databaseSnapshot(stack);

/** Another API on the same database and task queue with other limits; closed by the test. */
const apps: Api[] = [];
async function apiWith(changes: { writeRate?: { max: number; windowMs: number }; readRate?: { max: number; windowMs: number }; bodyLimitBytes?: number; trustProxy?: number }): Promise<Api> {
  const app = await buildApp({ ...stack.app.deps, ...changes });
  apps.push(app);
  return app;
}

beforeAll(async () => {
  stack = await startTestStack();
  await party('alice', 10_000);
  await party('bob', 1_000);
});
afterEach(async () => {
  await Promise.all(apps.splice(0).map((a) => a.close()));
});
afterAll(async () => stack?.stop());

describe('reads per caller, and a batch counted per item', () => {
  test('the read past the limit is 429 rate_limited with Retry-After; another party still reads, and health and metrics are not counted', async () => {
    const limited = await apiWith({ readRate: { max: 3, windowMs: 60_000 } });
    const bob = api(limited, keys.bob);
    for (let i = 0; i < 3; i++) expect((await bob.get('/v1/accounts/bob.w')).status).toBe(200);
    const res = await limited.inject({ method: 'GET', url: '/v1/accounts/bob.w', headers: { authorization: `Bearer ${keys.bob}` } });
    expect(res.statusCode).toBe(429);
    expect(res.json().error).toMatchObject({ code: 'rate_limited', message: expect.stringContaining('too many reads: at most 3 per 60000 ms'), details: { limit: 3, windowMs: 60_000 } });
    expect(Number(res.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect((await api(limited, keys.alice).get('/v1/accounts/alice.w')).status).toBe(200);
    for (let i = 0; i < 5; i++) expect((await limited.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    // writes are another bucket: bob still writes
    expect((await bob.post('/v1/parties/bob/heartbeat')).status).toBe(200);
  });

  test('each item of a batch is a write: a batch past the limit is refused whole (429) and opens nothing; one within it leaves the rest of the window', async () => {
    const limited = await apiWith({ writeRate: { max: 4, windowMs: 60_000 } });
    const alice = api(limited, keys.alice);
    const open = (i: number, tag: string) => ({ op: 'open', ref: ref(`batch-${tag}-${i}`), fromAccountId: 'alice.w', toAccountId: 'bob.w', ratePerTick: 1, maxTotal: 5, tickIntervalMs: 3_600_000 });
    const before = await snapshot();
    const tooMany = await alice.post('/v1/streams/batch', { items: [0, 1, 2, 3, 4].map((i) => open(i, 'over')) });
    expect(tooMany.status).toBe(429);
    expect(tooMany.body.error).toMatchObject({ code: 'rate_limited', details: { limit: 4 } });
    expect(await snapshot()).toBe(before);
    expect((await q(`select count(*)::int as n from streams where ref like $1`, [ref('batch-over-%')]))[0].n).toBe(0);

    // a fresh window: a batch of three takes three of four, so one write is left
    const other = await apiWith({ writeRate: { max: 4, windowMs: 59_000 } });
    const within = await api(other, keys.alice).post('/v1/streams/batch', { items: [0, 1, 2].map((i) => open(i, 'within')) });
    expect(within.status).toBe(200);
    expect(within.body.succeeded).toBe(3);
    expect((await api(other, keys.alice).post('/v1/parties/alice/heartbeat')).status).toBe(200);
    expect((await api(other, keys.alice).post('/v1/parties/alice/heartbeat')).status).toBe(429);
    const closing = await admin().post('/v1/streams/batch', { items: [0, 1, 2].map((i) => ({ op: 'cancel', ref: ref(`batch-within-${i}`) })) });
    expect(closing.body.succeeded).toBe(3);
  });
});

describe('one limit for every API process', () => {
  test('two API processes on one database count a caller together: the sixth write is 429 whichever process takes it', async () => {
    const env = { SLUICE_WRITE_RATE_MAX: '5', SLUICE_WRITE_RATE_WINDOW_MS: '60000' };
    const [one, two] = await Promise.all([startServiceProcess('api', stack.db.runtimeUrl, env), startServiceProcess('api', stack.db.runtimeUrl, env)]);
    try {
      await Promise.all([one.ready, two.ready]);
      const beat = (url: string) => fetch(`${url}/v1/parties/bob/heartbeat`, { method: 'POST', headers: { authorization: `Bearer ${keys.bob}` } });
      const statuses: number[] = [];
      for (let i = 0; i < 8; i++) statuses.push((await beat(i % 2 === 0 ? one.url : two.url)).status);
      // each process alone would have let all 8 through (4 each, under its 5)
      expect(statuses).toEqual([200, 200, 200, 200, 200, 429, 429, 429]);
      const refused = await beat(two.url);
      expect(refused.headers.get('retry-after')).toMatch(/^\d+$/);
      expect(((await refused.json()) as { error: unknown }).error).toMatchObject({ code: 'rate_limited', details: { limit: 5, windowMs: 60_000 } });
    } finally {
      await Promise.all([one.stop(), two.stop()]);
    }
  }, 120_000);

  test('windows of callers gone quiet are pruned; a window still running is kept', async () => {
    await countHits(stack.db.pool, 'writes/1/1000/ip:203.0.113.9', 1000, 1);
    await stack.db.pool.query(`update rate_windows set started_at = now() - interval '3 hours' where key = 'writes/1/1000/ip:203.0.113.9'`);
    await countHits(stack.db.pool, 'writes/1/1000/ip:203.0.113.10', 1000, 1);
    expect(await pruneRateWindows(stack.db.pool, 2 * 3_600_000)).toBe(1);
    expect((await q(`select key from rate_windows where key like 'writes/1/1000/ip:203.0.113.%'`)).map((r) => r.key)).toEqual(['writes/1/1000/ip:203.0.113.10']);
  });
});

describe('writes per caller', () => {
  const transfer = (app: Api, key: string | undefined, amount: number, idem: string) =>
    api(app, key).post('/v1/transfers', { fromAccountId: 'alice.w', toAccountId: 'bob.w', amount }, idem);

  test('the write past the limit is 429 rate_limited with Retry-After, changes nothing, and leaves its idempotency key and its ref unused', async () => {
    const limited = await apiWith({ writeRate: { max: 5, windowMs: 60_000 } });
    for (let i = 1; i <= 5; i++) expect((await transfer(limited, keys.alice, 1, `rl-${RUN}-${i}`)).status).toBe(201);
    const before = await snapshot();

    const res = await limited.inject({
      method: 'POST',
      url: '/v1/transfers',
      headers: { authorization: `Bearer ${keys.alice}`, 'idempotency-key': `rl-${RUN}-6` },
      payload: { fromAccountId: 'alice.w', toAccountId: 'bob.w', amount: 1 },
    });
    expect(res.statusCode).toBe(429);
    const body = res.json();
    expect(body).toEqual({
      error: expect.objectContaining({ code: 'rate_limited', message: expect.stringContaining('too many writes'), details: { limit: 5, windowMs: 60_000, retryAfterSeconds: expect.any(Number) } }),
    });
    expect(body.error.details.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect(body.error.details.retryAfterSeconds).toBeLessThanOrEqual(60);
    expect(res.headers['retry-after']).toBe(String(body.error.details.retryAfterSeconds));

    // a payment refused for the rate starts no workflow and records nothing
    const payRef = ref('limited-pay');
    const pay = await api(limited, keys.alice).post('/v1/payments', { ref: payRef, fromAccountId: 'alice.w', toAccountId: 'bob.w', amount: 7 });
    expect(pay.status).toBe(429);
    await expect(stack.client.workflow.getHandle(paymentWorkflowId(payRef)).describe()).rejects.toBeInstanceOf(WorkflowNotFoundError);
    expect(await snapshot()).toBe(before);

    // the key was not used: on an API that lets alice through, it takes a different request as new
    const again = await transfer(stack.app, keys.alice, 3, `rl-${RUN}-6`);
    expect(again.status).toBe(201);
    expect(again.body.amount).toBe(3);
  });

  test('the limit is per party: another party and the admin still write, and reads count in a bucket of their own', async () => {
    const limited = await apiWith({ writeRate: { max: 2, windowMs: 60_000 } });
    const alice = api(limited, keys.alice);
    for (let i = 0; i < 2; i++) expect((await alice.post('/v1/parties/alice/heartbeat')).status).toBe(200);
    expect((await alice.post('/v1/parties/alice/heartbeat')).status).toBe(429);
    expect((await api(limited, keys.bob).post('/v1/parties/bob/heartbeat')).status).toBe(200);
    expect((await api(limited, ADMIN_KEY).post('/v1/parties/alice/heartbeat')).status).toBe(200);
    for (let i = 0; i < 5; i++) expect((await alice.get('/v1/accounts/alice.w')).status).toBe(200);
    expect((await alice.post('/v1/parties/alice/heartbeat')).status).toBe(429);
  });

  test('requests without a valid key count against their IP address, also before their 401', async () => {
    const limited = await apiWith({ writeRate: { max: 3, windowMs: 60_000 } });
    const guess = api(limited, 'sk_alice_guessed-key');
    for (let i = 0; i < 3; i++) expect((await guess.post('/v1/transfers', { fromAccountId: 'alice.w', toAccountId: 'bob.w', amount: 1 }, `g-${i}`)).status).toBe(401);
    const refused = await guess.post('/v1/transfers', { fromAccountId: 'alice.w', toAccountId: 'bob.w', amount: 1 }, 'g-3');
    expect(refused.status).toBe(429);
    expect(refused.body.error.code).toBe('rate_limited');
    expect((await api(limited).post('/v1/parties/alice/heartbeat')).status).toBe(429);
    // a party calling from the same address has a bucket of its own
    expect((await api(limited, keys.alice).post('/v1/parties/alice/heartbeat')).status).toBe(200);
  });

  test('behind a proxy (SLUICE_TRUST_PROXY=1) callers without a key count against the address it forwards; without it, against the proxy', async () => {
    const beat = (app: Api, forwardedFor: string) => app.inject({ method: 'POST', url: '/v1/parties/nobody/heartbeat', headers: { 'x-forwarded-for': forwardedFor } });
    const proxied = await apiWith({ writeRate: { max: 1, windowMs: 60_000 }, trustProxy: 1 });
    expect((await beat(proxied, '198.51.100.1')).statusCode).toBe(401);
    expect((await beat(proxied, '198.51.100.1')).statusCode).toBe(429);
    expect((await beat(proxied, '198.51.100.2')).statusCode).toBe(401);
    const direct = await apiWith({ writeRate: { max: 1, windowMs: 59_000 } });
    expect((await beat(direct, '198.51.100.3')).statusCode).toBe(401);
    // the header is not believed: both come from the one address that connected
    expect((await beat(direct, '198.51.100.4')).statusCode).toBe(429);
  });

  test('after Retry-After seconds the caller writes again', async () => {
    const limited = await apiWith({ writeRate: { max: 1, windowMs: 1000 } });
    const bob = api(limited, keys.bob);
    expect((await bob.post('/v1/parties/bob/heartbeat')).status).toBe(200);
    const res = await limited.inject({ method: 'POST', url: '/v1/parties/bob/heartbeat', headers: { authorization: `Bearer ${keys.bob}` } });
    expect(res.statusCode).toBe(429);
    await sleep(Number(res.headers['retry-after']) * 1000 + 50);
    expect((await bob.post('/v1/parties/bob/heartbeat')).status).toBe(200);
  });

  test('the OpenAPI document gives every write its 429 and 413 answers, every read its 429 alone, every /v1 route its 408 and 503, and the routes outside /v1 none of 408, 413, 429', async () => {
    const doc = (await admin().get('/openapi.json')).body;
    const answers: Record<string, { 408: boolean; 429: boolean; 413: boolean }> = {};
    for (const [path, ops] of Object.entries<any>(doc.paths)) {
      for (const [method, op] of Object.entries<any>(ops)) {
        answers[`${method} ${path}`] = { 408: Boolean(op.responses['408']), 429: Boolean(op.responses['429']), 413: Boolean(op.responses['413']) };
        // an outage of PostgreSQL or Temporal can meet any /v1 request
        if (path.startsWith('/v1/')) expect({ route: `${method} ${path}`, has503: Boolean(op.responses['503']) }).toEqual({ route: `${method} ${path}`, has503: true });
      }
    }
    const writes = Object.keys(answers).filter((r) => r.startsWith('post /v1/'));
    expect(writes.length).toBeGreaterThan(30);
    for (const [route, has] of Object.entries(answers)) {
      const v1 = route.includes(' /v1/');
      expect({ route, has }).toEqual({ route, has: { 408: v1, 429: v1, 413: route.startsWith('post /v1/') } });
    }
    // the 429's sentence covers reads as well as writes
    expect(doc.paths['/v1/pool'].get.responses['429'].description).toMatch(/reads or writes/);
    expect(doc.paths['/v1/pool'].get.responses['503'].description).toMatch(/PostgreSQL or Temporal/);
  });

  test('the limit is configured by SLUICE_WRITE_RATE_MAX per SLUICE_WRITE_RATE_WINDOW_MS, with generous defaults', () => {
    expect(loadConfig({})).toMatchObject({ SLUICE_WRITE_RATE_MAX: WRITE_RATE_MAX_DEFAULT, SLUICE_WRITE_RATE_WINDOW_MS: WRITE_RATE_WINDOW_MS_DEFAULT, SLUICE_BODY_LIMIT_BYTES: BODY_LIMIT_BYTES_DEFAULT });
    expect(loadConfig({ SLUICE_WRITE_RATE_MAX: '50', SLUICE_WRITE_RATE_WINDOW_MS: '1000' })).toMatchObject({ SLUICE_WRITE_RATE_MAX: 50, SLUICE_WRITE_RATE_WINDOW_MS: 1000 });
    expect(() => loadConfig({ SLUICE_WRITE_RATE_MAX: '0' })).toThrow(/SLUICE_WRITE_RATE_MAX/);
    expect(() => loadConfig({ SLUICE_WRITE_RATE_WINDOW_MS: 'soon' })).toThrow(/SLUICE_WRITE_RATE_WINDOW_MS/);
  });
});

describe('body size', () => {
  const withMemo = (bytes: number) => {
    const base = JSON.stringify({ fromAccountId: 'alice.w', toAccountId: 'bob.w', amount: 1, memo: '' });
    return base.replace('"memo":""', `"memo":"${'m'.repeat(bytes - base.length)}"`);
  };
  const post = (payload: string) =>
    stack.app.inject({ method: 'POST', url: '/v1/transfers', payload, headers: { authorization: `Bearer ${keys.alice}`, 'idempotency-key': `big-${RUN}`, 'content-type': 'application/json' } });

  test(`a body over SLUICE_BODY_LIMIT_BYTES (${BODY_LIMIT_BYTES_DEFAULT}) is 413 payload_too_large and changes nothing; one at the limit is read`, async () => {
    const before = await snapshot();
    const over = await post(withMemo(BODY_LIMIT_BYTES_DEFAULT + 1));
    expect(over.statusCode).toBe(413);
    expect(over.json()).toEqual({ error: expect.objectContaining({ code: 'payload_too_large', message: expect.any(String), details: { limitBytes: BODY_LIMIT_BYTES_DEFAULT } }) });
    // at the limit the body is parsed, and refused for what it says (a memo too long), not for its size
    const at = await post(withMemo(BODY_LIMIT_BYTES_DEFAULT));
    expect(at.statusCode).toBe(400);
    expect(at.json().error.code).toBe('invalid_request');
    expect(await snapshot()).toBe(before);
  });

  test('the limit is configurable', async () => {
    const small = await apiWith({ bodyLimitBytes: 1024 });
    const res = await small.inject({ method: 'POST', url: '/v1/parties', payload: { id: 'big', name: 'n'.repeat(1100) }, headers: { authorization: `Bearer ${ADMIN_KEY}` } });
    expect(res.statusCode).toBe(413);
    expect(res.json().error.details).toEqual({ limitBytes: 1024 });
    expect(await q(`select id from parties where id = 'big'`)).toEqual([]);
  });
});

describe('page sizes', () => {
  /** A URL of each list route, readable by the admin, with `limit` to fill in. */
  const LIST_URLS: Record<keyof typeof PAGE_ROWS_MAX, string> = {
    'GET /v1/parties': '/v1/parties?limit=',
    'GET /v1/accounts': '/v1/accounts?ownerId=alice&limit=',
    'GET /v1/events': '/v1/events?limit=',
    'GET /v1/rates/events': '/v1/rates/events?limit=',
    'GET /v1/markets': '/v1/markets?limit=',
    'GET /v1/crown/timeline': '/v1/crown/timeline?limit=',
    'GET /v1/parties/:id/operators': '/v1/parties/alice/operators?limit=',
    'GET /v1/entities': '/v1/entities?limit=',
    'GET /v1/entities/:id/subaccounts': '/v1/entities/ent/subaccounts?limit=',
    'GET /v1/entities/:id/deliveries': '/v1/entities/ent/deliveries?limit=',
    'GET /v1/entities/:id/dashboard': '/v1/entities/ent/dashboard?limit=',
    'GET /v1/streams': '/v1/streams?limit=',
    'GET /v1/streams/:ref/ticks': `/v1/streams/${ref('ticks')}/ticks?limit=`,
    'GET /v1/grants': '/v1/grants?limit=',
    'GET /v1/keys': '/v1/keys?limit=',
    'GET /v1/parties/:id/keys': '/v1/parties/alice/keys?limit=',
  };

  beforeAll(async () => {
    const res = await admin().post('/v1/entities', { id: 'ent', name: 'Ent', collateral: 1, funding: 0 });
    expect(res.status).toBe(201);
    const stream = await as('alice').post('/v1/streams', { ref: ref('ticks'), fromAccountId: 'alice.w', toAccountId: 'bob.w', ratePerTick: 1, maxTotal: 5, tickIntervalMs: 3_600_000 });
    expect(stream.status).toBe(201);
  });

  test.each(Object.entries(LIST_URLS))('%s: limit up to its maximum is read; above it, or 0, is 400', async (route, url) => {
    const max = PAGE_ROWS_MAX[route as keyof typeof PAGE_ROWS_MAX];
    expect((await admin().get(`${url}${max}`)).status).toBe(200);
    for (const limit of [max + 1, 0]) {
      const res = await admin().get(`${url}${limit}`);
      expect(res.status).toBe(400);
      expect(res.body.error).toMatchObject({ code: 'invalid_request', details: { issues: [expect.objectContaining({ path: '/limit' })] } });
    }
  });

  test('every list route with a limit is in the table, and the OpenAPI document states each maximum', async () => {
    const doc = (await admin().get('/openapi.json')).body;
    const documented: Record<string, number> = {};
    for (const [path, ops] of Object.entries<any>(doc.paths)) {
      const limit = ops.get?.parameters?.find((p: any) => p.in === 'query' && p.name === 'limit');
      if (limit) documented[`GET ${path.replace(/\{(\w+)\}/g, ':$1')}`] = limit.schema.maximum;
    }
    expect(documented).toEqual(PAGE_ROWS_MAX);
  });

  test('accounts and operator grants page by cursor', async () => {
    for (const id of ['alice.a1', 'alice.a2']) expect((await as('alice').post('/v1/accounts', { id })).status).toBe(201);
    const first = (await as('alice').get('/v1/accounts?limit=2')).body;
    expect(first.accounts.map((a: any) => a.id)).toEqual(['alice.a1', 'alice.a2']);
    expect(first.next).toBe('alice.a2');
    const rest = (await as('alice').get(`/v1/accounts?limit=2&after=${first.next}`)).body;
    expect(rest).toEqual({ accounts: [expect.objectContaining({ id: 'alice.w' })] });

    for (const operator of ['bob', 'ent']) expect((await as('alice').post('/v1/parties/alice/operators', { operator, dailyLimit: 10 })).status).toBe(201);
    const grants = (await as('alice').get('/v1/parties/alice/operators?limit=1')).body;
    expect(grants.grants.map((g: any) => g.operator)).toEqual(['bob']);
    const more = (await as('alice').get(`/v1/parties/alice/operators?limit=1&after=${grants.next}`)).body;
    expect(more.grants.map((g: any) => g.operator)).toEqual(['ent']);
    expect((await as('bob').get('/v1/parties/bob/operators?as=operator')).body.grants.map((g: any) => g.payer)).toEqual(['alice']);
  });
});

describe('batch sizes', () => {
  test(`a batch of ${STREAM_BATCH_ITEMS_MAX} items is taken, item by item; ${STREAM_BATCH_ITEMS_MAX + 1} are refused as a whole`, async () => {
    const cancels = (n: number) => ({ items: Array.from({ length: n }, (_, i) => ({ op: 'cancel', ref: ref(`none-${i}`) })) });
    const full = await as('alice').post('/v1/streams/batch', cancels(STREAM_BATCH_ITEMS_MAX));
    expect(full.status).toBe(200);
    expect(full.body).toMatchObject({ succeeded: 0, failed: STREAM_BATCH_ITEMS_MAX });
    expect(new Set(full.body.results.map((r: any) => r.status))).toEqual(new Set([404]));
    const over = await as('alice').post('/v1/streams/batch', cancels(STREAM_BATCH_ITEMS_MAX + 1));
    expect(over.status).toBe(400);
    expect(over.body.error.details.issues[0].path).toBe('/items');
  });

  test(`a distribution stream takes at most ${STREAM_MEMBERS_MAX} members in a request; an entity at most ${WEBHOOK_URLS_MAX} webhook URLs`, async () => {
    const before = await snapshot();
    const members = Array.from({ length: STREAM_MEMBERS_MAX + 1 }, (_, i) => ({ accountId: `m${i}.w`, weight: 1 }));
    const open = await as('alice').post('/v1/streams', { ref: ref('many-members'), fromAccountId: 'alice.w', members, ratePerTick: 1, maxTotal: 10, tickIntervalMs: 60_000 });
    expect(open.status).toBe(400);
    expect(open.body.error.details.issues[0].path).toBe('/members');
    const join = await as('alice').post(`/v1/streams/${ref('many-members')}/members`, { members });
    expect(join.status).toBe(400);
    const urls = Array.from({ length: WEBHOOK_URLS_MAX + 1 }, (_, i) => `http://127.0.0.1:9/${i}`);
    const entity = await admin().post('/v1/entities', { id: 'ent-urls', name: 'E', collateral: 1, funding: 0, webhookUrls: urls });
    expect(entity.status).toBe(400);
    expect(entity.body.error.details.issues[0].path).toBe('/webhookUrls');
    expect(await snapshot()).toBe(before);

    const doc = (await admin().get('/openapi.json')).body;
    const bodyOf = (path: string) => doc.paths[path].post.requestBody.content['application/json'].schema;
    expect(bodyOf('/v1/streams/batch').properties.items.maxItems).toBe(STREAM_BATCH_ITEMS_MAX);
    expect(bodyOf('/v1/streams').properties.members.maxItems).toBe(STREAM_MEMBERS_MAX);
    expect(bodyOf('/v1/entities').properties.webhookUrls.maxItems).toBe(WEBHOOK_URLS_MAX);
  });
});

describe('Idempotency-Key', () => {
  /** A request each keyed route accepts. Fixture: a hold and a payment of alice's, an open stream of alice's. */
  const fixture: Record<string, string | number> = {};
  const KEYED: Record<string, { as: () => ReturnType<typeof api>; url: () => string; body?: () => unknown }> = {
    'POST /v1/deposits': { as: admin, url: () => '/v1/deposits', body: () => ({ accountId: 'alice.w', amount: 1 }) },
    'POST /v1/withdrawals': { as: admin, url: () => '/v1/withdrawals', body: () => ({ accountId: 'alice.w', amount: 1 }) },
    'POST /v1/transfers': { as: () => as('alice'), url: () => '/v1/transfers', body: () => ({ fromAccountId: 'alice.w', toAccountId: 'bob.w', amount: 1 }) },
    'POST /v1/holds': { as: () => as('alice'), url: () => '/v1/holds', body: () => ({ accountId: 'alice.w', amount: 1 }) },
    'POST /v1/holds/{id}/capture': { as: () => as('alice'), url: () => `/v1/holds/${fixture.hold}/capture`, body: () => ({ amount: 1, toAccountId: 'bob.w' }) },
    'POST /v1/holds/{id}/release': { as: () => as('alice'), url: () => `/v1/holds/${fixture.hold}/release` },
    'POST /v1/payments/{ref}/refunds': { as: () => as('bob'), url: () => `/v1/payments/${fixture.payment}/refunds`, body: () => ({ amount: 1 }) },
    'POST /v1/streams/{ref}/deposits': { as: () => as('alice'), url: () => `/v1/streams/${fixture.stream}/deposits`, body: () => ({ fromAccountId: 'alice.w', amount: 1 }) },
    // opens and starts take a key in place of a ref, a job id or a request id
    'POST /v1/streams': { as: () => as('alice'), url: () => '/v1/streams', body: () => ({ fromAccountId: 'alice.w', toAccountId: 'bob.w', ratePerTick: 1, maxTotal: 10, tickIntervalMs: 3_600_000 }) },
    'POST /v1/jobs': { as: () => as('alice'), url: () => '/v1/jobs', body: () => ({ accountId: 'alice.w', estimatedCost: 1, work: { description: 'keyed' } }) },
    'POST /v1/sessions': { as: () => as('alice'), url: () => '/v1/sessions', body: () => ({ accountId: 'alice.w', amount: 1 }) },
    'POST /v1/entities/{id}/subaccounts': { as: () => api(stack.app, String(fixture.entityKey)), url: () => `/v1/entities/${fixture.entity}/subaccounts`, body: () => ({}) },
  };

  beforeAll(async () => {
    fixture.hold = (await as('alice').post('/v1/holds', { accountId: 'alice.w', amount: 10 }, `fixture-hold-${RUN}`)).body.id;
    fixture.payment = ref('paid');
    expect((await as('alice').post('/v1/payments', { ref: fixture.payment, fromAccountId: 'alice.w', toAccountId: 'bob.w', amount: 10 })).status).toBe(200);
    fixture.entity = `keyent-${RUN}`;
    const entity = await admin().post('/v1/entities', { id: fixture.entity, name: 'keyed', collateral: 1, funding: 0 });
    expect(entity.status).toBe(201);
    fixture.entityKey = entity.body.apiKey;
    expect((await admin().post('/v1/deposits', { accountId: entity.body.mainAccountId, amount: 10 }, `fund-${fixture.entity}`)).status).toBeLessThan(300);
    fixture.stream = ref('stream');
    expect((await as('alice').post('/v1/streams', { ref: fixture.stream, fromAccountId: 'alice.w', toAccountId: 'bob.w', ratePerTick: 1, maxTotal: 100, tickIntervalMs: 3_600_000 })).status).toBe(201);
  });
  afterAll(async () => {
    await as('alice').post(`/v1/streams/${fixture.stream}/cancel`, {});
  });

  test('the table covers every route that takes an Idempotency-Key, and the OpenAPI document states its length', async () => {
    const doc = (await admin().get('/openapi.json')).body;
    const keyed: Record<string, number> = {};
    for (const [path, ops] of Object.entries<any>(doc.paths)) {
      for (const [method, op] of Object.entries<any>(ops)) {
        const header = op.parameters?.find((p: any) => p.in === 'header' && p.name === 'idempotency-key');
        if (header) keyed[`${method.toUpperCase()} ${path}`] = header.schema.maxLength;
      }
    }
    expect(Object.keys(keyed).sort()).toEqual(Object.keys(KEYED).sort());
    expect(new Set(Object.values(keyed))).toEqual(new Set([IDEMPOTENCY_KEY_CHARS_MAX]));
  });

  test.each(Object.keys(KEYED))(`%s: a key of ${IDEMPOTENCY_KEY_CHARS_MAX + 1} characters, or an empty one, is 400 and changes nothing; ${IDEMPOTENCY_KEY_CHARS_MAX} is taken`, async (route) => {
    const r = KEYED[route]!;
    const before = await snapshot();
    const long = await r.as().post(r.url(), r.body?.(), 'k'.repeat(IDEMPOTENCY_KEY_CHARS_MAX + 1));
    expect(long.status).toBe(400);
    expect(long.body.error).toMatchObject({ code: 'invalid_request', details: { issues: [expect.objectContaining({ path: '/idempotency-key' })] } });
    const empty = await r.as().post(r.url(), r.body?.(), undefined, { 'idempotency-key': '' });
    expect(empty.status).toBe(400);
    expect(await snapshot()).toBe(before);
    // the longest key is taken (a fresh one per route: keys are scoped per caller, not per route)
    const key = `${route.replace(/\W+/g, '-')}-${RUN}-`.padEnd(IDEMPOTENCY_KEY_CHARS_MAX, 'k');
    const ok = await r.as().post(r.url(), r.body?.(), key);
    expect(ok.status).toBeLessThan(300);
  });
});

test('the ledger is whole after all of it', async () => {
  const audit = await admin().get('/v1/audit');
  expect(audit.body.checks.filter((c: any) => !c.ok)).toEqual([]);
});
