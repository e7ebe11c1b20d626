import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WorkflowNotFoundError } from '@temporalio/client';
import type { Pool } from '../../src/db/pool';
import { runAudit } from '../../src/audit';
import { parseFaults } from '../../src/domain/faults';
import { creationWorkflowId, SUBACCOUNT_CAP_DEFAULT, lifecycleWorkflowId, subaccountEventKey, webhookWorkflowId, type SubaccountEvent } from '../../src/domain/entities';
import { sluiceErrorFromDatabase } from '../../src/domain/errors';
import { beginElimination, settleElimination } from '../../src/ledger/entities';
import { openStream } from '../../src/ledger/streams';
import { deliverWebhook } from '../../src/webhooks/deliver';
import { DELIVERY_HEADER, deliveryIdOf, verifyWebhook } from '../../src/webhooks/signature';
import { subaccountEliminationWorkflow } from '../../workflows/entities';
import { ADMIN_KEY, api, sameAnswer, startTestStack, type TestStack } from '../support/stack';
import { until } from '../support/parties';

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
const received: Array<{ body: string; headers: IncomingHttpHeaders }> = [];
/** Deliveries to refuse (503) per entity, before accepting. */
const refuse: Record<string, number> = {};
const keys: Record<string, string> = {};
const secrets: Record<string, string> = {};
const as = (party: string) => api(stack.app, keys[party]);
const enc = (id: string) => encodeURIComponent(id);
const account = async (id: string) => (await admin.get(`/v1/accounts/${enc(id)}`)).body;
/** The webhooks received for one subaccount event. */
const hooksFor = (sub: string, type: string) => received.filter((h) => JSON.parse(h.body).subaccount.id === sub && JSON.parse(h.body).type === type);

async function entity(id: string, terms: Record<string, unknown> = {}, funds = 10_000) {
  const res = await admin.post('/v1/entities', { id, name: id, collateral: 100, funding: 50, webhookUrls: [hookUrl], ...terms });
  expect(res.status).toBe(201);
  keys[id] = res.body.apiKey;
  secrets[id] = res.body.webhookSecret;
  if (funds) await admin.post('/v1/deposits', { accountId: `${id}.main`, amount: funds }, `fund-${id}`);
}
const create = (id: string, body: Record<string, unknown> = {}) => as(id).post(`/v1/entities/${id}/subaccounts`, body);

/** Every run Temporal has had under a workflow id (visibility may lag a run that just closed: it waits for at least one). */
async function runsOf(workflowId: string): Promise<string[]> {
  return until(`the runs of ${workflowId}`, async () => {
    const runs: string[] = [];
    for await (const w of stack.client.workflow.list({ query: `WorkflowId = '${workflowId}'` })) runs.push(w.runId);
    return runs.length > 0 ? runs : undefined;
  });
}

/**
 * A subaccount event delivered exactly once, asserted when no more can come: every
 * workflow that could announce it (`announcers`: the saga, the eliminations) has
 * completed, so no delivery can be started any more; the event's delivery workflow has
 * completed, so none of its attempts is still to come, and it is the only run ever
 * started under the event's id. Then the receiver has it once, and the log has one
 * accepted delivery of it.
 */
async function expectDeliveredOnce(sub: string, type: SubaccountEvent['type'], announcers: string[]) {
  for (const id of announcers) await stack.client.workflow.getHandle(id).result();
  const key = subaccountEventKey(type, sub);
  const delivery = stack.client.workflow.getHandle(webhookWorkflowId(key));
  expect(await delivery.result()).toEqual({ delivered: [hookUrl], failed: [] });
  expect(await runsOf(webhookWorkflowId(key))).toHaveLength(1);
  expect(hooksFor(sub, type)).toHaveLength(1);
  const log = await stack.db.pool.query(`select count(*) filter (where ok)::int as accepted from webhook_deliveries where event_key = $1`, [key]);
  expect(log.rows[0].accepted).toBe(1);
}

/**
 * A stream on a subaccount that is not live is refused, as the typed error: by the
 * ledger, and through POST /v1/streams (the refusal fails the stream workflow's
 * first activity; the route answers with the run's own error, a 409).
 */
async function expectStreamRefused(ref: string, party: string, payerAccountId: string, payeeAccountId: string) {
  const payee = (await stack.db.pool.query(`select owner_id from accounts where id = $1`, [payeeAccountId])).rows[0].owner_id;
  const error = await openStream(stack.db.pool, { ref, payer: party, payee, payerAccountId, payeeAccountId, ratePerTick: 1, maxTotal: 10, tickIntervalMs: 60_000, mode: 'escrow' }).catch((e) => e);
  expect(sluiceErrorFromDatabase(error)).toMatchObject({ code: 'subaccount_not_live' });
  const res = await as(party).post('/v1/streams', { ref: `${ref}-api`, fromAccountId: payerAccountId, toAccountId: payeeAccountId, ratePerTick: 1, maxTotal: 10, tickIntervalMs: 60_000 });
  expect(res.status).toBe(409);
  expect(res.body.error.code).toBe('subaccount_not_live');
  expect((await stack.db.pool.query(`select 1 from streams where ref = any($1)`, [[ref, `${ref}-api`]])).rows).toEqual([]);
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
      received.push({ body, headers: req.headers });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`;
  stack = await startTestStack({
    faults: parseFaults(
      'hold_collateral@f-hold/1=always,fund@f-fund/1=always,activate@f-act/1=always,fund@f-flaky=2,allocate@f-alloc=always,' +
        'activate@f-late/1=after,fund@rl-f/1=always,fund@again/1=always',
    ),
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
    const again = await create('acme', { requestId: 'r1' });
    expect(again.status).toBe(201);
    expect(again.body.subaccount.id).toBe('acme/1');
    const events = (await stack.db.pool.query(`select type from events where subject = 'acme/1' order by id`)).rows.map((r: any) => r.type);
    expect(events).toEqual(['subaccount.allocated', 'account.created', 'subaccount.active']);
    const hold = await stack.db.pool.query(`select account_id, amount, status, reference from holds where idempotency_key = 'sub:acme/1:collateral'`);
    expect(hold.rows).toEqual([{ account_id: 'acme.main', amount: 100, status: 'open', reference: { subaccount: 'acme/1' } }]);
    const hook = await until('the webhook', async () => received.find((h) => JSON.parse(h.body).subaccount.id === 'acme/1'));
    expect(JSON.parse(hook.body)).toMatchObject({ type: 'subaccount.active', entityId: 'acme' });
    expect(verifyWebhook({ secrets: secrets.acme!, headers: hook.headers, body: hook.body })).toEqual({ ok: true, deliveryId: deliveryIdOf('subaccount.active:acme/1', hookUrl), timestampS: expect.any(Number) });
    expect(verifyWebhook({ secrets: 'whsec_wrong', headers: hook.headers, body: hook.body })).toEqual({ ok: false, reason: 'bad_signature' });
    expect((await as('acme').get('/v1/subaccounts/acme%2F1')).body.status).toBe('active');
    // created twice (the same request): announced by one saga, delivered once
    await expectDeliveredOnce('acme/1', 'subaccount.active', [creationWorkflowId('acme', 'r1')]);
  });

  test('two entities using the same request id each get their own subaccount, also when their ids differ only around a dash', async () => {
    for (const id of ['tw-a', 'tw-b', 'amb', 'amb-x']) await entity(id);
    const a = await create('tw-a', { requestId: 'same' });
    const b = await create('tw-b', { requestId: 'same' });
    expect([a.status, b.status]).toEqual([201, 201]);
    expect(a.body.subaccount).toMatchObject({ id: 'tw-a/1', entityId: 'tw-a' });
    expect(b.body.subaccount).toMatchObject({ id: 'tw-b/1', entityId: 'tw-b' });
    // "amb" + "x-r" and "amb-x" + "r": two creations, not one seen twice
    const [c, d] = await Promise.all([create('amb', { requestId: 'x-r' }), create('amb-x', { requestId: 'r' })]);
    expect(c.body.subaccount).toMatchObject({ id: 'amb/1', entityId: 'amb' });
    expect(d.body.subaccount).toMatchObject({ id: 'amb-x/1', entityId: 'amb-x' });
    expect(await account('tw-b/1')).toMatchObject({ ownerId: 'tw-b', balance: 50 });
    // each names its saga, which Temporal knows by that id
    expect(a.body.subaccount.creationWorkflowId).toBe(creationWorkflowId('tw-a', 'same'));
    await expect(stack.client.workflow.getHandle(a.body.subaccount.creationWorkflowId).describe()).resolves.toMatchObject({ status: { name: 'COMPLETED' } });
    expect((await as('tw-a').get('/v1/subaccounts/tw-a%2F1')).body.creationWorkflowId).toBe(a.body.subaccount.creationWorkflowId);
  });

  test('the admin lists entities by id, a page at a time, each with its live subaccounts; a party may not', async () => {
    for (const id of ['ls-a', 'ls-b', 'ls-c']) await entity(id);
    expect((await create('ls-b')).status).toBe(201);
    expect((await create('ls-b')).status).toBe(201);
    const listed: any[] = [];
    for (let after = 'ls-'; ; ) {
      const page = await admin.get(`/v1/entities?after=${after}&limit=2`);
      expect(page.status).toBe(200);
      listed.push(...page.body.entities.filter((e: any) => e.id.startsWith('ls-')));
      if (!page.body.next || !page.body.next.startsWith('ls-')) break;
      after = page.body.next;
    }
    expect(listed.map((e) => [e.id, e.liveSubaccounts, e.mainAccountId])).toEqual([['ls-a', 0, 'ls-a.main'], ['ls-b', 2, 'ls-b.main'], ['ls-c', 0, 'ls-c.main']]);
    expect(JSON.stringify(listed)).not.toMatch(/secret/i);
    expect((await as('ls-a').get('/v1/entities')).status).toBe(403);
  });

  test('a failed creation re-sent answers the same failure again: no second saga, no second webhook', async () => {
    await entity('again');
    const first = await create('again', { requestId: 'r' });
    expect(first.status).toBe(422);
    expect(first.body.error).toMatchObject({ code: 'creation_failed', details: { failedStep: 'fund', subaccount: { id: 'again/1', status: 'failed' } } });
    const second = await create('again', { requestId: 'r' });
    expect(sameAnswer(second)).toEqual(sameAnswer(first));
    expect((await as('again').get('/v1/entities/again')).body.nextSeq).toBe(2);
    await expectDeliveredOnce('again/1', 'subaccount.failed', [creationWorkflowId('again', 'r')]);
    // the saga is over: nothing announced it active, ever
    await expect(stack.client.workflow.getHandle(webhookWorkflowId(subaccountEventKey('subaccount.active', 'again/1'))).describe()).rejects.toBeInstanceOf(WorkflowNotFoundError);
    expect(hooksFor('again/1', 'subaccount.active')).toHaveLength(0);
    const events = await stack.db.pool.query(`select type from events where subject = 'again/1' and type like 'subaccount.%' order by id`);
    expect(events.rows.map((r: any) => r.type)).toEqual(['subaccount.allocated', 'subaccount.failed']);
  });

  test('a challenge creation re-sent answers the same subaccount (not a clash with its lifecycle)', async () => {
    await entity('chal-again', { challengeMs: 600_000 });
    const first = await create('chal-again', { requestId: 'r' });
    expect(first.status).toBe(201);
    expect(first.body.subaccount).toMatchObject({ id: 'chal-again/1', status: 'challenge' });
    const second = await create('chal-again', { requestId: 'r' });
    expect(sameAnswer(second)).toEqual(sameAnswer(first));
    await stack.client.workflow.getHandle(lifecycleWorkflowId('chal-again/1')).terminate('test over');
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

  test('an activation that committed but was reported failed is undone all the same: unfunded, collateral released, failed, empty', async () => {
    await entity('f-late');
    const res = await create('f-late');
    expect(res.status).toBe(422);
    expect(res.body.error.details).toMatchObject({ failedStep: 'activate', compensated: ['unfund', 'release_collateral', 'mark_failed'], subaccount: { status: 'failed' } });
    expect(await account('f-late/1')).toMatchObject({ balance: 0, held: 0 });
    expect(await account('f-late.main')).toMatchObject({ balance: 10_000, held: 0 });
    // and the database refuses to end a subaccount that still holds money
    await expect(stack.db.pool.query(`update subaccounts set status = 'failed', ended_at = now() where id = 'acme/1'`)).rejects.toMatchObject({
      constraint: 'subaccount_ends_empty',
    });
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
    // every other answer is the cap, nothing else
    expect(results.filter((r) => r.status === 422 && r.body.error.code === 'limit_exceeded')).toHaveLength(results.length - 20);
    expect(ok.map((r) => r.body.subaccount.seq).sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    expect(await account('busy.main')).toMatchObject({ balance: 10_000 - 20 * 50, held: 20 * 100 });
    const dash = (await as('busy').get('/v1/entities/busy/dashboard')).body;
    expect(dash).toMatchObject({ statusCounts: { active: 20, failed: 0 }, totals: { balance: 20 * 50, held: 0, collateralHeld: 20 * 100 } });
    expect(dash.subaccounts).toHaveLength(20);
  });

  test('the 11th creation within the hour is refused with 429, and may be sent again under the same request id later', async () => {
    await entity('rl', { creationsPerHour: 10 }, 100_000);
    for (let i = 0; i < 10; i++) expect((await create('rl')).status).toBe(201);
    // the oldest of the ten was made 59 minutes ago: one more is let through in about a minute
    await stack.db.pool.query(`update subaccounts set created_at = now() - interval '59 minutes' where id = 'rl/1'`);
    const eleventh = await create('rl', { requestId: 'late' });
    expect(eleventh.status).toBe(429);
    expect(eleventh.body.error).toMatchObject({ code: 'rate_limited', details: { failedStep: 'allocate', subaccount: null, limit: 10 } });
    const retryAfter = Number(eleventh.headers['retry-after']);
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(eleventh.body.error.details.retryAfterSeconds).toBe(retryAfter);
    expect(eleventh.body.error.message).toMatch(/next slot frees in \d+ s/);
    // the entity's view says the same: its limits, its live count, and when the next creation is let through
    const view = (await as('rl').get('/v1/entities/rl')).body;
    expect(view).toMatchObject({ creationsPerHour: 10, creationsLastHour: 10, liveSubaccounts: 10, subaccountCap: SUBACCOUNT_CAP_DEFAULT });
    const wait = Date.parse(view.nextCreationAt) - Date.now();
    expect(wait).toBeGreaterThan(0);
    expect(wait).toBeLessThanOrEqual(61_000);
    // a refusal allocated nothing: once allowed, the same request runs
    await stack.db.pool.query(`update entities set creations_per_hour = 11 where id = 'rl'`);
    const later = await create('rl', { requestId: 'late' });
    expect(later.status).toBe(201);
    expect(later.body.subaccount).toMatchObject({ id: 'rl/11' });
  });

  test('a failed creation does not count against the hourly limit: one failed, then N under a limit of N all succeed', async () => {
    await entity('rl-f', { creationsPerHour: 3 });
    expect((await create('rl-f')).status).toBe(422); // rl-f/1 fails at fund
    for (let i = 0; i < 3; i++) expect((await create('rl-f')).status).toBe(201);
    expect((await create('rl-f')).status).toBe(429);
    const { rows } = await stack.db.pool.query(`select status from subaccounts where entity_id = 'rl-f' order by seq`);
    expect(rows.map((r: any) => r.status)).toEqual(['failed', 'active', 'active', 'active']);
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
    expect((await as('elim').get('/v1/entities/elim/dashboard')).body.statusCounts).toMatchObject({ active: 0, eliminated: 1 });
    await until('the eliminated webhook', async () => hooksFor('elim/1', 'subaccount.eliminated')[0]);
  });

  test('an ended subaccount’s account takes no more money and no new stream: 409 subaccount_not_live', async () => {
    const refused = (res: { status: number; body: any }) => {
      expect(res.status).toBe(409);
      expect(res.body.error.code).toBe('subaccount_not_live');
    };
    refused(await admin.post('/v1/deposits', { accountId: 'elim/1', amount: 5 }, 'dep-ended'));
    refused(await as('elim').post('/v1/transfers', { fromAccountId: 'elim.main', toAccountId: 'elim/1', amount: 5 }, 'tr-ended'));
    refused(await as('f-act').post('/v1/transfers', { fromAccountId: 'f-act.main', toAccountId: 'f-act/1', amount: 5 }, 'tr-failed'));
    await expectStreamRefused('to-ended', 'elim', 'elim.main', 'elim/1');
    expect(await account('elim/1')).toMatchObject({ balance: 0, held: 0 });
    expect(await account('f-act/1')).toMatchObject({ balance: 0, held: 0 });
  });

  test('once elimination begins no stream or hold opens on it, and it does not settle while a stream is open', async () => {
    await entity('elim2');
    expect((await create('elim2')).status).toBe(201);
    const stream = { fromAccountId: 'elim2/1', toAccountId: 'shop.w', ratePerTick: 2, maxTotal: 20, tickIntervalMs: 60_000 };
    expect((await as('elim2').post('/v1/streams', { ...stream, ref: 'elim2-a' })).status).toBe(201);
    await beginElimination(stack.db.pool, 'elim2/1');
    await expectStreamRefused('elim2-late', 'elim2', 'elim2/1', 'shop.w');
    expect((await as('elim2').post('/v1/holds', { accountId: 'elim2/1', amount: 5 }, 'elim2-hold')).body.error.code).toBe('subaccount_not_live');
    // a stream still open (as one opened while elimination began would be): the settlement waits for it
    expect(await settleElimination(stack.db.pool, { id: 'elim2/1', reason: 'early' })).toMatchObject({ openStreams: ['elim2-a'], subaccount: { status: 'eliminating' } });
    const res = await as('elim2').post('/v1/subaccounts/elim2%2F1/eliminate', {});
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ subaccount: { status: 'eliminated' }, swept: 50 - 2, collateralReleased: true });
    expect(res.body.streams).toEqual([expect.objectContaining({ ref: 'elim2-a', status: 'CONFIRMED', totalPaid: 2 })]);
    expect(await account('elim2/1')).toMatchObject({ balance: 0, held: 0 });
  });

  test('an elimination whose settlement committed before it was retried still answers what it settled and announces it once', async () => {
    await entity('elim3');
    expect((await create('elim3')).status).toBe(201);
    // the first attempt committed; its answer was lost
    await beginElimination(stack.db.pool, 'elim3/1');
    const first = await settleElimination(stack.db.pool, { id: 'elim3/1', reason: 'retired' });
    expect(first).toMatchObject({ swept: 50, collateralReleased: true, openStreams: [] });
    expect(await settleElimination(stack.db.pool, { id: 'elim3/1', reason: 'retired' })).toEqual(first);
    const runs = ['elim3-a', 'elim3-b'];
    const run = (workflowId: string) =>
      stack.client.workflow.execute(subaccountEliminationWorkflow, { workflowId, taskQueue: stack.taskQueue, args: [{ id: 'elim3/1', reason: 'retired', by: 'elim3' }] });
    expect(await run(runs[0]!)).toMatchObject({ swept: 50, collateralReleased: true, subaccount: { status: 'eliminated' } });
    await run(runs[1]!);
    // both eliminations announced it: one delivery
    await expectDeliveredOnce('elim3/1', 'subaccount.eliminated', runs);
  });

  test('elimination is refused while the subaccount holds anything but its streams’ escrow; released, it ends empty', async () => {
    await entity('elim4');
    expect((await create('elim4')).status).toBe(201);
    const hold = await as('elim4').post('/v1/holds', { accountId: 'elim4/1', amount: 10 }, 'elim4-hold');
    expect(hold.status).toBe(201);
    const refused = await as('elim4').post('/v1/subaccounts/elim4%2F1/eliminate', {});
    expect(refused.status).toBe(409);
    expect(refused.body.error).toMatchObject({ code: 'holds_open', details: { holds: [hold.body.id] } });
    expect((await as('elim4').get('/v1/subaccounts/elim4%2F1')).body.status).toBe('active');
    expect((await as('elim4').post(`/v1/holds/${hold.body.id}/release`, {}, 'elim4-release')).status).toBe(200);
    const res = await as('elim4').post('/v1/subaccounts/elim4%2F1/eliminate', {});
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ swept: 50, collateralReleased: true });
    expect(await account('elim4/1')).toMatchObject({ balance: 0, held: 0 });
  });

  test('the dashboard: a row per subaccount with its streams paid and received, status counts, totals with the main account and its collateral', async () => {
    await entity('dash', { webhookUrls: [] });
    for (let i = 0; i < 3; i++) expect((await create('dash')).status).toBe(201);
    // dash/1 pays dash/2 (escrow 30, 3 a tick); dash/2 pays the shop (pay as you go, 4 a tick); dash/3 is eliminated
    expect((await as('dash').post('/v1/streams', { ref: 'dash-12', fromAccountId: 'dash/1', toAccountId: 'dash/2', ratePerTick: 3, maxTotal: 30, tickIntervalMs: 60_000 })).status).toBe(201);
    expect((await as('dash').post('/v1/streams', { ref: 'dash-2s', fromAccountId: 'dash/2', toAccountId: 'shop.w', ratePerTick: 4, maxTotal: 40, tickIntervalMs: 60_000, mode: 'payg' })).status).toBe(201);
    expect((await as('dash').post('/v1/subaccounts/dash%2F3/eliminate', {})).status).toBe(200);
    const res = await as('dash').get('/v1/entities/dash/dashboard');
    expect(res.status).toBe(200);
    expect(res.body).toEqual({
      entity: 'dash',
      statusCounts: { pending: 0, challenge: 0, active: 2, eliminating: 0, failed: 0, eliminated: 1 },
      totals: { balance: 47 + 49, held: 27, openStreams: 3, paid: 3 + 4, received: 3, mainBalance: 10_000 - 100, mainHeld: 200, collateralHeld: 200 },
      subaccounts: [
        { id: 'dash/1', seq: 1, status: 'active', accountId: 'dash/1', balance: 47, held: 27, openStreams: 1, paid: 3, received: 0 },
        { id: 'dash/2', seq: 2, status: 'active', accountId: 'dash/2', balance: 49, held: 0, openStreams: 2, paid: 4, received: 3 },
        { id: 'dash/3', seq: 3, status: 'eliminated', accountId: 'dash/3', balance: 0, held: 0, openStreams: 0, paid: 0, received: 0 },
      ],
    });
    // a page at a time
    const page = (await as('dash').get('/v1/entities/dash/dashboard?limit=2')).body;
    expect(page.subaccounts.map((r: any) => r.id)).toEqual(['dash/1', 'dash/2']);
    expect(page.nextAfter).toBe(2);
    expect((await as('dash').get('/v1/entities/dash/dashboard?after=2')).body.subaccounts.map((r: any) => r.id)).toEqual(['dash/3']);
    expect((await as('dash').get('/v1/entities/dash/dashboard?limit=501')).status).toBe(400);
    for (const ref of ['dash-12', 'dash-2s']) expect((await as('dash').post(`/v1/streams/${ref}/cancel`, {})).status).toBe(200);
  });

  test('the challenge period: at its end the balance rule keeps one subaccount (active) and eliminates the other', async () => {
    // assessEveryMs 0: the rules only at the end of the challenge, so the kept one's lifecycle ends there
    await entity('chal', { challengeMs: 1500, challengeMinBps: 5000, assessEveryMs: 0 });
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
    const res = await create('hooky', { requestId: 'r1' });
    expect(res.status).toBe(201);
    expect(res.body.subaccount).toMatchObject({ id: 'hooky/1', status: 'active' });
    await expectDeliveredOnce('hooky/1', 'subaccount.active', [creationWorkflowId('hooky', 'r1')]);
    const accepted = hooksFor('hooky/1', 'subaccount.active')[0]!;
    expect(verifyWebhook({ secrets: secrets.hooky!, headers: accepted.headers, body: accepted.body }).ok).toBe(true);
    const log = (await as('hooky').get('/v1/entities/hooky/deliveries')).body.deliveries;
    // the three attempts are one delivery: one id, the one the accepted attempt carried
    expect(log.map((d: any) => d.deliveryId)).toEqual(Array(3).fill(accepted.headers[DELIVERY_HEADER]));
    expect(log.map((d: any) => [d.attempt, d.ok, d.statusCode ?? null])).toEqual([
      [1, false, 503],
      [2, false, 503],
      [3, true, 204],
    ]);
  }, 30_000);

  test('a receiver that is down or always fails neither blocks nor fails the saga; its failed attempts are logged', async () => {
    const down = createServer();
    await new Promise<void>((r) => down.listen(0, '127.0.0.1', r));
    const downUrl = `http://127.0.0.1:${(down.address() as AddressInfo).port}/hooks`;
    await new Promise((r) => down.close(r)); // nothing listens there now
    await entity('deaf', { webhookUrls: [downUrl, hookUrl] });
    refuse.deaf = Infinity;
    const started = Date.now();
    const res = await create('deaf');
    expect(res.status).toBe(201);
    expect(res.body.subaccount).toMatchObject({ id: 'deaf/1', status: 'active' });
    expect(Date.now() - started).toBeLessThan(5_000);
    const log = await until('two failed attempts at each URL', async () => {
      const d = (await as('deaf').get('/v1/entities/deaf/deliveries')).body.deliveries;
      return [downUrl, hookUrl].every((u) => d.filter((x: any) => x.url === u).length >= 2) ? d : undefined;
    });
    expect(log.every((d: any) => !d.ok)).toBe(true);
    expect(log.filter((d: any) => d.url === hookUrl).every((d: any) => d.statusCode === 503)).toBe(true);
    expect(log.filter((d: any) => d.url === downUrl).every((d: any) => d.statusCode === undefined && d.error)).toBe(true);
  }, 30_000);

  test('an accepted delivery whose record fails is logged, not retried: the receiver gets it once', async () => {
    await entity('rec', { webhookUrls: [] });
    const event: SubaccountEvent = { key: 'subaccount.active:rec/9', type: 'subaccount.active', entityId: 'rec', subaccount: { id: 'rec/9', entityId: 'rec', seq: 9, status: 'active', funding: 50, createdAt: new Date().toISOString() }, at: new Date().toISOString() };
    // the database answers the entity lookup, then refuses to record the attempt
    const pool = stack.db.pool;
    const failingRecord = {
      query: (text: string, values?: unknown[]) => (text.includes('insert into webhook_deliveries') ? Promise.reject(new Error('connection lost')) : pool.query(text, values)),
    } as unknown as Pool;
    const logged: string[] = [];
    await expect(deliverWebhook(failingRecord, event, hookUrl, 1, { error: (m) => logged.push(m) })).resolves.toEqual({ statusCode: 204 });
    expect(received.filter((h) => JSON.parse(h.body).key === event.key)).toHaveLength(1);
    expect(logged).toEqual(['webhook delivery attempt not recorded']);
  });

  test('an entity cannot create, read or eliminate another entity’s subaccounts; bad ids are clear 4xx', async () => {
    expect((await as('busy').post('/v1/entities/acme/subaccounts', {})).status).toBe(404);
    expect((await as('busy').get('/v1/subaccounts/acme%2F1')).status).toBe(404);
    expect((await as('busy').post('/v1/subaccounts/acme%2F1/eliminate', {})).status).toBe(404);
    expect((await as('busy').get('/v1/entities/acme/dashboard')).status).toBe(404);
    expect((await as('busy').get('/v1/entities/acme/deliveries')).status).toBe(404);
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
