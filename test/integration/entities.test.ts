import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { runAudit } from '../../src/audit';
import { parseFaults } from '../../src/jobs/faults';
import { lifecycleWorkflowId } from '../../src/domain/entities';
import { SIGNATURE_HEADER, signWebhook, verifyWebhook } from '../../src/webhooks/signature';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';

/**
 * Entities and subaccounts end to end on the dev server and a real database: the
 * creation saga and each of its compensation paths (faults injected per
 * subaccount), the cap under concurrency, the hourly rate limit, elimination with a
 * live stream, signed webhooks to a real local receiver, and authorisation.
 */
let stack: TestStack;
let admin: ReturnType<typeof api>;
let receiver: Server;
let hookUrl: string;
const received: Array<{ body: string; signature: string }> = [];
/** Deliveries to refuse (503) per entity, before accepting. */
const refuse: Record<string, number> = {};
const keys: Record<string, string> = {};
const secrets: Record<string, string> = {};
const as = (party: string) => api(stack.app, keys[party]);
const enc = (id: string) => encodeURIComponent(id);
const account = async (id: string) => (await admin.get(`/v1/accounts/${enc(id)}`)).body;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function entity(id: string, terms: Record<string, unknown> = {}, funds = 10_000) {
  const res = await admin.post('/v1/entities', { id, name: id, collateral: 100, funding: 50, webhookUrls: [hookUrl], ...terms });
  expect(res.status).toBe(201);
  keys[id] = res.body.apiKey;
  secrets[id] = res.body.webhookSecret;
  if (funds) await admin.post('/v1/deposits', { accountId: `${id}.main`, amount: funds }, `fund-${id}`);
}
const create = (id: string, body: Record<string, unknown> = {}) => as(id).post(`/v1/entities/${id}/subaccounts`, body);

/** Waits for a delivery log entry to satisfy `fn`. */
async function until<T>(what: string, fn: () => Promise<T | undefined>): Promise<T> {
  for (let i = 0; i < 150; i++) {
    const v = await fn();
    if (v !== undefined) return v;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

beforeAll(async () => {
  receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const entityId = JSON.parse(body).entityId as string;
      if ((refuse[entityId] ?? 0) > 0) {
        refuse[entityId]!--;
        res.writeHead(503).end();
        return;
      }
      received.push({ body, signature: String(req.headers[SIGNATURE_HEADER]) });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`;
  stack = await startTestStack({
    faults: parseFaults('hold_collateral@f-hold/1=always,fund@f-fund/1=always,activate@f-act/1=always,fund@f-flaky=2,allocate@f-alloc=always'),
  });
  admin = api(stack.app, ADMIN_KEY);
});
afterAll(async () => {
  await stack.stop();
  await new Promise((r) => receiver.close(r));
});

describe('entities and subaccounts', () => {
  test('happy path: the saga holds collateral, funds the account, activates it and announces it, signed', async () => {
    await entity('acme');
    const res = await create('acme', { requestId: 'r1' });
    expect(res.status).toBe(201);
    expect(res.body.subaccount).toMatchObject({ id: 'acme/1', entityId: 'acme', seq: 1, status: 'active', accountId: 'acme/1', funding: 50 });
    expect(await account('acme.main')).toMatchObject({ balance: 10_000 - 50, held: 100 });
    expect(await account('acme/1')).toMatchObject({ kind: 'subaccount', ownerId: 'acme', balance: 50 });
    // the same request id is the same creation
    expect((await create('acme', { requestId: 'r1' })).body.subaccount.id).toBe('acme/1');
    const events = (await stack.db.pool.query(`select type from events where subject = 'acme/1' order by id`)).rows.map((r: any) => r.type);
    expect(events).toEqual(['subaccount.allocated', 'account.created', 'subaccount.active']);
    const hold = await stack.db.pool.query(`select account_id, amount, status, reference from holds where idempotency_key = 'sub:acme/1:collateral'`);
    expect(hold.rows).toEqual([{ account_id: 'acme.main', amount: 100, status: 'open', reference: { subaccount: 'acme/1' } }]);
    const hook = await until('the webhook', async () => received.find((h) => JSON.parse(h.body).subaccount.id === 'acme/1'));
    expect(JSON.parse(hook.body)).toMatchObject({ type: 'subaccount.active', entityId: 'acme' });
    expect(verifyWebhook(secrets.acme!, hook.signature, hook.body)).toMatchObject({ ok: true });
    expect(verifyWebhook('whsec_wrong', hook.signature, hook.body)).toEqual({ ok: false, reason: 'bad_signature' });
    expect((await as('acme').get('/v1/subaccounts/acme%2F1')).body.status).toBe('active');
  });

  test.each([
    ['hold_collateral', 'f-hold', [], { balance: 10_000, held: 0 }],
    ['fund', 'f-fund', ['release_collateral'], { balance: 10_000, held: 0 }],
    ['activate', 'f-act', ['unfund', 'release_collateral'], { balance: 10_000, held: 0 }],
  ] as const)('a failed %s step compensates exactly the earlier steps; the slot is failed; the next creation gets number 2', async (step, id, undone, main) => {
    await entity(id);
    const res = await create(id);
    expect(res.status).toBe(422);
    expect(res.body.error).toMatchObject({ code: 'creation_failed', details: { failedStep: step, compensated: [...undone, 'mark_failed'] } });
    expect(res.body.error.details.subaccount).toMatchObject({ id: `${id}/1`, status: 'failed', failedStep: step });
    // nothing leaked: the main account is whole, nothing held, the subaccount (if created) empty
    expect(await account(`${id}.main`)).toMatchObject(main);
    const sub = await stack.db.pool.query(`select balance, held from accounts where id = $1`, [`${id}/1`]);
    if (sub.rows[0]) expect(sub.rows[0]).toEqual({ balance: 0, held: 0 });
    const next = await create(id);
    expect(next.status).toBe(201);
    expect(next.body.subaccount).toMatchObject({ id: `${id}/2`, seq: 2, status: 'active' });
    expect(await account(`${id}.main`)).toMatchObject({ balance: 10_000 - 50, held: 100 });
  });

  test('a step that fails twice then succeeds is retried to success; a refused allocation burns no number', async () => {
    await entity('f-flaky');
    expect((await create('f-flaky')).body.subaccount).toMatchObject({ id: 'f-flaky/1', status: 'active' });
    await entity('f-alloc');
    const res = await create('f-alloc');
    expect(res.status).toBe(422);
    expect(res.body.error.details).toMatchObject({ failedStep: 'allocate', compensated: [], subaccount: null });
    expect((await as('f-alloc').get('/v1/entities/f-alloc')).body.nextSeq).toBe(1);
  });

  test('50 concurrent creations against a cap of 20: exactly 20 live, numbers 1..20, collateral held for 20', async () => {
    await entity('busy', { subaccountCap: 20, creationsPerHour: 1000 });
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => create('busy', { requestId: `c${i}` })));
    const ok = results.filter((r) => r.status === 201);
    expect(ok).toHaveLength(20);
    expect(results.filter((r) => r.status === 422).every((r) => r.body.error.code === 'limit_exceeded')).toBe(true);
    expect(ok.map((r) => r.body.subaccount.seq).sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    expect(await account('busy.main')).toMatchObject({ balance: 10_000 - 20 * 50, held: 20 * 100 });
    expect((await as('busy').get('/v1/entities/busy/dashboard')).body).toMatchObject({ subaccounts: { active: 20, failed: 0 }, balance: 20 * 50, held: 0 });
  });

  test('the 11th creation within the hour is refused with 429; a failed creation does not count', async () => {
    await entity('rl', { creationsPerHour: 10 }, 100_000);
    for (let i = 0; i < 10; i++) expect((await create('rl')).status).toBe(201);
    const eleventh = await create('rl');
    expect(eleventh.status).toBe(429);
    expect(eleventh.body.error.code).toBe('rate_limited');
    // f-hold's failed slot 1 did not count against it: two creations, one failed, one live, both allowed
    const { rows } = await stack.db.pool.query(`select status from subaccounts where entity_id = 'f-hold' order by seq`);
    expect(rows.map((r: any) => r.status)).toEqual(['failed', 'active']);
  });

  test('elimination closes the subaccount’s streams with receipts, sweeps its balance, releases its collateral', async () => {
    await entity('elim');
    await create('elim');
    await admin.post('/v1/parties', { id: 'shop', name: 'shop' });
    await admin.post('/v1/accounts', { id: 'shop.w', ownerId: 'shop' });
    // the subaccount pays a stream (opened by the admin on its behalf)
    const opened = await admin.post('/v1/streams', { ref: 'elim-s', fromAccountId: 'elim/1', toAccountId: 'shop.w', ratePerTick: 3, maxTotal: 30, tickIntervalMs: 60_000 });
    expect(opened.status).toBe(201);
    const res = await as('elim').post('/v1/subaccounts/elim%2F1/eliminate', { reason: 'misbehaved' });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ subaccount: { id: 'elim/1', status: 'eliminated' }, swept: 47, collateralReleased: true });
    expect(res.body.streams).toEqual([expect.objectContaining({ ref: 'elim-s', status: 'CONFIRMED', totalPaid: 3, closedBy: 'elim' })]);
    expect(await account('elim/1')).toMatchObject({ balance: 0, held: 0 });
    expect(await account('elim.main')).toMatchObject({ balance: 10_000 - 3, held: 0 });
    expect(await stack.client.workflow.getHandle('stream-elim-s').result()).toMatchObject({ status: 'CONFIRMED', totalPaid: 3 });
    // eliminating again changes nothing; the slot is free again
    expect((await as('elim').post('/v1/subaccounts/elim%2F1/eliminate', {})).body).toMatchObject({ swept: 0, subaccount: { status: 'eliminated' } });
    expect((await as('elim').get('/v1/entities/elim/dashboard')).body.subaccounts).toMatchObject({ active: 0, eliminated: 1 });
  });

  test('the challenge period: at its end the balance rule keeps one subaccount (active) and eliminates the other', async () => {
    await entity('chal', { challengeMs: 1500, challengeMinBps: 5000 });
    const keep = (await create('chal')).body.subaccount;
    const spend = (await create('chal')).body.subaccount;
    expect([keep.status, spend.status]).toEqual(['challenge', 'challenge']);
    await admin.post('/v1/parties', { id: 'chal-shop', name: 'shop' });
    await admin.post('/v1/accounts', { id: 'chal-shop.w', ownerId: 'chal-shop' });
    // spend 30 of 50 from the second: below half its funding when the period ends
    expect((await as('chal').post('/v1/transfers', { fromAccountId: spend.accountId, toAccountId: 'chal-shop.w', amount: 30 }, 'chal-spend')).status).toBe(201);
    const kept = await stack.client.workflow.getHandle(lifecycleWorkflowId(keep.id)).result();
    const gone = await stack.client.workflow.getHandle(lifecycleWorkflowId(spend.id)).result();
    expect(kept).toMatchObject({ id: keep.id, status: 'active' });
    expect(gone).toMatchObject({ id: spend.id, status: 'eliminated' });
    // the eliminated one's 20 went back to the entity and its collateral was released; the kept one holds 100
    expect(await account(spend.accountId)).toMatchObject({ balance: 0, held: 0 });
    expect(await account('chal.main')).toMatchObject({ balance: 10_000 - 100 + 20, held: 100 });
  });

  test('a receiver that fails twice then succeeds gets the event once accepted; every attempt is logged', async () => {
    await entity('hooky');
    refuse.hooky = 2;
    await create('hooky');
    const accepted = await until('the third attempt', async () => received.find((h) => JSON.parse(h.body).subaccount.id === 'hooky/1'));
    expect(received.filter((h) => JSON.parse(h.body).subaccount.id === 'hooky/1')).toHaveLength(1);
    expect(verifyWebhook(secrets.hooky!, accepted.signature, accepted.body).ok).toBe(true);
    const log = (await as('hooky').get('/v1/entities/hooky/deliveries')).body.deliveries;
    expect(log.map((d: any) => [d.attempt, d.ok, d.statusCode ?? null])).toEqual([
      [1, false, 503],
      [2, false, 503],
      [3, true, 204],
    ]);
  }, 30_000);

  test('the verification function rejects a tampered body, a stale timestamp and a malformed header', () => {
    const body = JSON.stringify({ type: 'subaccount.active', n: 1 });
    const now = Date.now();
    const sig = signWebhook('whsec_secret_for_the_test_0123456789', body, now);
    expect(verifyWebhook('whsec_secret_for_the_test_0123456789', sig, body, { nowMs: now })).toMatchObject({ ok: true });
    expect(verifyWebhook('whsec_secret_for_the_test_0123456789', sig, body.replace('1', '2'), { nowMs: now })).toEqual({ ok: false, reason: 'bad_signature' });
    expect(verifyWebhook('whsec_secret_for_the_test_0123456789', sig, body, { nowMs: now + 301_000 })).toEqual({ ok: false, reason: 'stale' });
    expect(verifyWebhook('whsec_secret_for_the_test_0123456789', 'v1=abc', body, { nowMs: now })).toEqual({ ok: false, reason: 'malformed' });
    expect(verifyWebhook('whsec_secret_for_the_test_0123456789', undefined, body, { nowMs: now })).toEqual({ ok: false, reason: 'malformed' });
  });

  test('an entity cannot create, read or eliminate another entity’s subaccounts; bad ids are clear 4xx', async () => {
    expect((await as('busy').post('/v1/entities/acme/subaccounts', {})).status).toBe(403);
    expect((await as('busy').get('/v1/subaccounts/acme%2F1')).status).toBe(403);
    expect((await as('busy').post('/v1/subaccounts/acme%2F1/eliminate', {})).status).toBe(403);
    expect((await as('busy').get('/v1/entities/acme/dashboard')).status).toBe(403);
    expect((await as('busy').get('/v1/entities/acme/deliveries')).status).toBe(403);
    expect((await admin.post('/v1/entities', { id: 'a/b', name: 'x', collateral: 1, funding: 1 })).status).toBe(400);
    expect((await as('busy').post('/v1/accounts', { id: 'busy/99' })).status).toBe(400);
    expect((await admin.get('/v1/subaccounts/acme%2F999')).status).toBe(404);
    expect((await admin.get('/v1/subaccounts/acme')).status).toBe(400);
    expect((await as('acme').get('/v1/entities/acme')).body).not.toHaveProperty('webhookSecret');
  });

  test('the auditor is green after all of it', async () => {
    const report = await runAudit(stack.db.pool);
    expect(report.checks.filter((c) => !c.ok)).toEqual([]);
  });
});
