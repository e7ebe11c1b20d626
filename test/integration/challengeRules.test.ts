import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseFaults } from '../../src/domain/faults';
import { lifecycleWorkflowId } from '../../src/domain/entities';
import { ASSESS_EVERY_MS_DEFAULT } from '../../src/domain/challengeRules';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';
import { scrapeMetrics } from '../support/metrics';
import { until } from '../support/parties';

/**
 * The challenge and elimination rules through the API on the dev server (issue 19):
 * the rules an entity may set and the 4xx for those it may not, a subaccount
 * eliminated by a rule (its figures on the subaccount and in its webhook), and the
 * business counters of /metrics moving by exactly what happened. Their timers over
 * days run on the time-skipping server (timeskipping.test.ts).
 */
let stack: TestStack;
let receiver: Server;
let hookUrl: string;
const received: Array<{ type: string; body: any }> = [];
/** Event types to refuse (503) once, before accepting. */
const refuseOnce = new Set<string>();
const admin = () => api(stack.app, ADMIN_KEY);
const keys: Record<string, string> = {};
const as = (party: string) => api(stack.app, keys[party]);
const enc = (id: string) => encodeURIComponent(id);

beforeAll(async () => {
  receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const event = JSON.parse(body);
      if (refuseOnce.delete(event.type)) return void res.writeHead(503).end();
      received.push({ type: event.type, body: event });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`;
  stack = await startTestStack({ faults: parseFaults('activate@mx/3=always') });
});
afterAll(async () => {
  await stack?.stop();
  await new Promise((r) => receiver?.close(r));
});

const scrape = () => scrapeMetrics(stack.app);

const entityBody = (id: string, rules: Record<string, unknown>) => ({ id, name: id, collateral: 10, funding: 50, webhookUrls: [hookUrl], ...rules });

test('the rules an entity may set are stored and shown; the ones it may not are a 400 that names them', async () => {
  const refused: Array<[Record<string, unknown>, string]> = [
    [{ challengeMs: 1000, maxDrawdownBps: 0 }, 'maxDrawdownBps'],
    [{ challengeMs: 1000, maxDrawdownBps: 10_001 }, 'maxDrawdownBps'],
    [{ challengeMs: 1000, maxDrawdownBps: 12.5 }, 'maxDrawdownBps'],
    [{ challengeMs: 1000, inactivityMs: 10 }, 'inactivityMs'],
    [{ challengeMs: 1000, assessEveryMs: 500 }, 'assessEveryMs'],
    [{ challengeMs: 1000, assessEveryMs: -1 }, 'assessEveryMs'],
    [{ challengeMinBps: 10_001 }, 'challengeMinBps'],
    // the rules are assessed by the lifecycle, which begins with a challenge period
    [{ maxDrawdownBps: 2000 }, 'maxDrawdownBps needs a challenge period'],
    [{ challengeMs: 0, inactivityMs: 60_000 }, 'inactivityMs needs a challenge period'],
  ];
  for (const [rules, named] of refused) {
    const res = await admin().post('/v1/entities', entityBody('rv-bad', rules));
    expect([res.status, res.body.error.code]).toEqual([400, 'invalid_request']);
    expect(JSON.stringify(res.body.error)).toContain(named);
  }
  expect((await admin().get('/v1/entities/rv-bad')).status).toBe(404); // none of them registered it

  const ok = await admin().post('/v1/entities', entityBody('rv-ok', { challengeMs: 60_000, challengeMinBps: 4000, maxDrawdownBps: 2500, inactivityMs: 86_400_000, assessEveryMs: 3_600_000 }));
  expect(ok.status).toBe(201);
  expect((await admin().get('/v1/entities/rv-ok')).body).toMatchObject({ challengeMs: 60_000, challengeMinBps: 4000, maxDrawdownBps: 2500, inactivityMs: 86_400_000, assessEveryMs: 3_600_000 });
  // no rule named: the minimum balance at 5000 bps, assessed daily, the others off (as entities behaved before)
  expect((await admin().post('/v1/entities', entityBody('rv-plain', {}))).status).toBe(201);
  const plain = (await admin().get('/v1/entities/rv-plain')).body;
  expect(plain).toMatchObject({ challengeMs: 0, challengeMinBps: 5000, assessEveryMs: ASSESS_EVERY_MS_DEFAULT });
  expect(plain).not.toHaveProperty('maxDrawdownBps');
  expect(plain).not.toHaveProperty('inactivityMs');
});

test('an active subaccount is eliminated by drawdown at an assessment, with its figures; /metrics counts creations, eliminations and deliveries exactly', async () => {
  const before = await scrape();
  const reg = await admin().post('/v1/entities', entityBody('mx', { challengeMs: 1000, assessEveryMs: 1000, maxDrawdownBps: 2000 }));
  expect(reg.status).toBe(201);
  keys.mx = reg.body.apiKey;
  await admin().post('/v1/deposits', { accountId: 'mx.main', amount: 1000 }, 'fund-mx');
  await admin().post('/v1/parties', { id: 'mx-shop', name: 'shop' });
  await admin().post('/v1/accounts', { id: 'mx-shop.w', ownerId: 'mx-shop' });
  refuseOnce.add('subaccount.failed'); // one failed delivery attempt, retried to success

  const create = (requestId: string) => as('mx').post('/v1/entities/mx/subaccounts', { requestId });
  expect((await create('r1')).body.subaccount).toMatchObject({ id: 'mx/1', status: 'challenge' });
  expect((await create('r2')).body.subaccount).toMatchObject({ id: 'mx/2', status: 'challenge' });
  expect((await create('r3')).body.error).toMatchObject({ code: 'creation_failed', details: { failedStep: 'activate' } });

  // both pass their challenge (1 s) and are assessed every second from then on
  const sub = async (id: string) => (await as('mx').get(`/v1/subaccounts/${enc(id)}`)).body;
  await until('mx/1 and mx/2 promoted', async () => ((await sub('mx/1')).status === 'active' && (await sub('mx/2')).status === 'active') || undefined);
  expect(await sub('mx/1')).toMatchObject({ highWaterMark: 50 });
  // mx/1 spends 20 of its 50: 30 is 4000 bps below its mark, the limit 2000; mx/2 is eliminated on request
  expect((await as('mx').post('/v1/transfers', { fromAccountId: 'mx/1', toAccountId: 'mx-shop.w', amount: 20 }, 'mx-spend')).status).toBe(201);
  expect((await as('mx').post(`/v1/subaccounts/${enc('mx/2')}/eliminate`, { reason: 'retired' })).body.subaccount).toMatchObject({ status: 'eliminated', failure: 'retired' });

  const gone = await stack.client.workflow.getHandle(lifecycleWorkflowId('mx/1')).result();
  const figures = { rule: 'max_drawdown', highWaterMark: 50, balance: 30, drawdownBps: 4000, limitBps: 2000 };
  expect(gone).toMatchObject({ status: 'eliminated', failure: 'rule_breached', eliminationRule: figures });
  expect(await sub('mx/1')).toMatchObject({ status: 'eliminated', failure: 'rule_breached', eliminationRule: figures });
  // the one eliminated on request records no rule, and its lifecycle ends at its next assessment
  expect(await sub('mx/2')).not.toHaveProperty('eliminationRule');
  expect(await stack.client.workflow.getHandle(lifecycleWorkflowId('mx/2')).result()).toMatchObject({ status: 'eliminated' });

  // every event delivered: challenge ×2, failed (after one refusal), active ×2, eliminated ×2
  const byType = () => received.filter((h) => h.body.entityId === 'mx').map((h) => h.type);
  await until('the seven deliveries', async () => (byType().length === 7 ? true : undefined));
  expect(byType().sort()).toEqual(
    ['subaccount.active', 'subaccount.active', 'subaccount.challenge', 'subaccount.challenge', 'subaccount.eliminated', 'subaccount.eliminated', 'subaccount.failed'].sort(),
  );
  const eliminated = received.find((h) => h.type === 'subaccount.eliminated' && h.body.subaccount.id === 'mx/1')!;
  expect(eliminated.body.subaccount.eliminationRule).toEqual(figures);

  const after = await scrape();
  const moved = (series: string) => (after.get(series) ?? 0) - (before.get(series) ?? 0);
  expect({
    challenge: moved('sluice_subaccount_creations_total{outcome="challenge"}'),
    active: moved('sluice_subaccount_creations_total{outcome="active"}'),
    failed: moved('sluice_subaccount_creations_total{outcome="failed"}'),
    byDrawdown: moved('sluice_subaccount_eliminations_total{reason="rule",rule="max_drawdown"}'),
    byRequest: moved('sluice_subaccount_eliminations_total{reason="request",rule="none"}'),
    delivered: moved('sluice_webhook_deliveries_total{outcome="delivered"}'),
    deliveryFailed: moved('sluice_webhook_deliveries_total{outcome="failed"}'),
  }).toEqual({ challenge: 2, active: 0, failed: 1, byDrawdown: 1, byRequest: 1, delivered: 7, deliveryFailed: 1 });
  // the older attempt counters agree with the new ones
  expect(moved('sluice_webhook_delivery_attempts_total')).toBe(8);
}, 90_000);
