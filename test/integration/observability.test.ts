import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseFaults } from '../../src/domain/faults';
import { TICK_LAG_BUCKETS_SECONDS } from '../../src/api/ledgerMetrics';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';
import { figuresBesideTruth, scrapeMetrics } from '../support/metrics';
import { sleep, testParties } from '../support/parties';

/**
 * What an operator sees: workflows found in Temporal's visibility store by their
 * search attributes (a payer's open streams, an entity's failed creations), each
 * with a human memo, and /metrics counters that move by exactly what happened
 * (ticks, lag, open streams, compensations, webhook attempts, grant decisions).
 * Party and entity ids carry a random suffix: the dev server is shared by every
 * test file of the run, and visibility queries see all of them.
 */
let stack: TestStack;
let receiver: Server;
let hookUrl: string;
const suffix = randomBytes(3).toString('hex');
const id = (name: string) => `${name}-${suffix}`;
const { party, as, keys } = testParties(() => stack);
/** Webhook requests received per event key, and how many were refused (each event's first attempt). */
const hooks: Record<string, number> = {};

beforeAll(async () => {
  receiver = createServer((req, res) => {
    const key = String(req.headers['sluice-event']);
    req.resume();
    req.on('end', () => {
      hooks[key] = (hooks[key] ?? 0) + 1;
      // the first attempt of every event fails: Temporal retries it with backoff
      res.writeHead(hooks[key] === 1 ? 503 : 204).end();
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`;
  // the second subaccount of each entity fails at `fund` after the step committed:
  // every compensation has something to undo
  stack = await startTestStack({ faults: parseFaults(`fund@${id('ent')}/2=after,fund@${id('other')}/1=after,fund@${id('ment')}/2=after`) });
  for (const p of ['payer', 'payee', 'rival']) await party(id(p), 100_000);
}, 60_000);
afterAll(async () => {
  await stack?.stop();
  await new Promise((r) => receiver.close(r));
});

/** Visibility is eventually consistent: poll the query until it lists `expected` (bounded), then compare exactly. */
async function listIds(query: string, expected: string[]): Promise<string[]> {
  let ids: string[] = [];
  for (let i = 0; i < 100; i++) {
    ids = [];
    for await (const w of stack.client.workflow.list({ query })) ids.push(w.workflowId);
    ids.sort();
    if (JSON.stringify(ids) === JSON.stringify([...expected].sort())) break;
    await sleep(100);
  }
  return ids;
}

const admin = () => api(stack.app, ADMIN_KEY);

/** Waits until each event was refused once and then accepted (two requests each; retries back off from 1 s). */
async function delivered(events: string[]): Promise<void> {
  for (let i = 0; i < 150 && !events.every((e) => hooks[e] === 2); i++) await sleep(100);
  expect(events.map((e) => hooks[e] ?? 0)).toEqual(events.map(() => 2));
}
const openStream = (ref: string, payer: string, maxTotal = 10_000) =>
  as(payer).post('/v1/streams', { ref, fromAccountId: `${payer}.w`, toAccountId: `${id('payee')}.w`, ratePerTick: 10, maxTotal, tickIntervalMs: 200 });

async function registerEntity(entity: string): Promise<void> {
  const res = await admin().post('/v1/entities', { id: entity, name: entity, collateral: 100, funding: 50, webhookUrls: [hookUrl] });
  expect(res.status).toBe(201);
  keys[entity] = res.body.apiKey;
  await admin().post('/v1/deposits', { accountId: `${entity}.main`, amount: 10_000 }, `fund-${entity}`);
}
const createSubaccount = (entity: string, requestId: string) => as(entity).post(`/v1/entities/${entity}/subaccounts`, { requestId });

const scrape = () => scrapeMetrics(stack.app);
const value = (s: Map<string, number>, series: string) => s.get(series) ?? 0;

test('search attributes list a payer’s open streams and an entity’s failed creations; each workflow carries a memo', async () => {
  const [payer, rival] = [id('payer'), id('rival')];
  for (const ref of [id('s1'), id('s2'), id('s-done')]) expect((await openStream(ref, payer)).status).toBe(201);
  expect((await openStream(id('s-rival'), rival)).status).toBe(201);
  expect((await as(payer).post(`/v1/streams/${id('s-done')}/cancel`, {})).body.status).toBe('CONFIRMED');

  const open = await listIds(`SluiceKind = "stream" AND SluicePayer = "${payer}" AND SluiceStatus = "STREAMING"`, [`stream-${id('s1')}`, `stream-${id('s2')}`]);
  expect(open).toEqual([`stream-${id('s1')}`, `stream-${id('s2')}`]);

  const [ent, other] = [id('ent'), id('other')];
  await registerEntity(ent);
  await registerEntity(other);
  expect((await createSubaccount(ent, 'r1')).status).toBe(201);
  const failed = await createSubaccount(ent, 'r2');
  expect(failed.body.error).toMatchObject({ code: 'creation_failed', details: { failedStep: 'fund' } });
  expect((await createSubaccount(other, 'r1')).body.error.code).toBe('creation_failed'); // another entity's failure
  const failedSagas = await listIds(`SluiceKind = "subaccount" AND SluiceEntity = "${ent}" AND SluiceStatus = "FAILED"`, [`subaccount-create-${ent}/r2`]);
  expect(failedSagas).toEqual([`subaccount-create-${ent}/r2`]);
  expect(await listIds(`SluiceKind = "subaccount" AND SluiceEntity = "${ent}" AND SluiceStatus = "ACTIVE"`, [`subaccount-create-${ent}/r1`])).toEqual([`subaccount-create-${ent}/r1`]);
  // the announcements are children started with the entity's attributes
  expect(await listIds(`SluiceKind = "webhook" AND SluiceEntity = "${ent}"`, [`webhook-subaccount.active:${ent}/1`, `webhook-subaccount.failed:${ent}/2`])).toEqual([
    `webhook-subaccount.active:${ent}/1`,
    `webhook-subaccount.failed:${ent}/2`,
  ]);

  const stream = await stack.client.workflow.getHandle(`stream-${id('s1')}`).describe();
  expect(stream.memo).toMatchObject({ summary: `stream ${id('s1')}: ${payer} → ${id('payee')}, 10/tick every 200 ms, max 10000 (escrow)`, payer, ratePerTick: 10, maxTotal: 10_000 });
  const saga = await stack.client.workflow.getHandle(`subaccount-create-${ent}/r2`).describe();
  expect(saga.memo).toMatchObject({ summary: `subaccount creation for ${ent} (request r2)`, entity: ent });

  // this test's announcements delivered (each after one refusal) before the next test counts
  await delivered([`subaccount.active:${ent}/1`, `subaccount.failed:${ent}/2`, `subaccount.failed:${other}/1`]);
  for (const ref of [id('s1'), id('s2')]) await as(payer).post(`/v1/streams/${ref}/cancel`, {});
  await as(rival).post(`/v1/streams/${id('s-rival')}/cancel`, {});
  expect(await listIds(`SluiceKind = "stream" AND SluicePayer = "${payer}" AND SluiceStatus = "STREAMING"`, [])).toEqual([]);
}, 90_000);

test('/metrics counters move by what happened: ticks and their lag, open streams, compensations, webhook attempts, grant decisions', async () => {
  const before = await scrape();
  const payer = id('payer');

  // a short stream: 5 ticks of 10 up to maxTotal 50, then it completes by itself
  const ref = id('m-stream');
  expect((await openStream(ref, payer, 50)).status).toBe(201);
  const during = await scrape();
  expect(value(during, 'sluice_open_streams{mode="escrow",kind="direct"}')).toBe(value(before, 'sluice_open_streams{mode="escrow",kind="direct"}') + 1);
  let receipt: any;
  for (let i = 0; i < 100 && receipt?.status !== 'CONFIRMED'; i++) {
    await sleep(100);
    receipt = (await as(payer).get(`/v1/streams/${ref}`)).body;
  }
  expect(receipt).toMatchObject({ status: 'CONFIRMED', ticks: 5, totalPaid: 50 });

  // a subaccount creation that succeeds and one that fails after `fund` committed: three compensations
  const entity = id('ment');
  await registerEntity(entity);
  expect((await createSubaccount(entity, 'ok')).body.subaccount.status).toBe('active');
  const failed = await createSubaccount(entity, 'bad');
  expect(failed.body.error.details).toMatchObject({ failedStep: 'fund', compensated: ['unfund', 'release_collateral', 'mark_failed'] });

  // two jobs: a gate job (tier new: budget 0), cancelled, and a free one (tier trusted)
  const gate = await as(payer).post('/v1/jobs', { jobId: id('j-gate'), accountId: `${payer}.w`, estimatedCost: 40, work: { description: 'gate' } });
  expect(gate.body.decision).toBe('gate');
  await as(payer).post(`/v1/jobs/${id('j-gate')}/cancel`, {});
  await admin().post(`/v1/parties/${id('payee')}/tier`, { tier: 'trusted' });
  const free = await as(id('payee')).post('/v1/jobs', { jobId: id('j-free'), accountId: `${id('payee')}.w`, estimatedCost: 5, work: { description: 'free' } });
  expect(free.body.decision).toBe('free');

  // every webhook event of this test is delivered: its first attempt refused, the second accepted
  await delivered([`subaccount.active:${entity}/1`, `subaccount.failed:${entity}/2`]);
  // and each attempt recorded: the receiver sees a request before its delivery row commits
  for (let i = 0; i < 150 && (await as(entity).get(`/v1/entities/${entity}/deliveries`)).body.deliveries.length < 4; i++) await sleep(100);
  expect((await as(entity).get(`/v1/entities/${entity}/deliveries`)).body.deliveries).toHaveLength(4);

  const after = await scrape();
  const moved = (series: string) => value(after, series) - value(before, series);
  expect(moved('sluice_ticks_billed_total')).toBe(5);
  expect(moved('sluice_tick_lag_seconds_count')).toBe(5);
  expect(moved('sluice_tick_lag_seconds_bucket{le="+Inf"}')).toBe(5);
  // cumulative buckets never decrease with le, and the sum is a real, non-negative number of seconds
  const buckets = TICK_LAG_BUCKETS_SECONDS.map((le) => value(after, `sluice_tick_lag_seconds_bucket{le="${le}"}`));
  expect(buckets).toEqual([...buckets].sort((a, b) => a - b));
  expect(value(after, 'sluice_tick_lag_seconds_sum')).toBeGreaterThanOrEqual(0);
  expect(value(after, 'sluice_open_streams{mode="escrow",kind="direct"}')).toBe(value(before, 'sluice_open_streams{mode="escrow",kind="direct"}'));
  expect(moved('sluice_webhook_delivery_attempts_total')).toBe(4);
  expect(moved('sluice_webhook_delivery_failures_total')).toBe(2);
  expect(moved('sluice_grant_decisions_total{mode="gate"}')).toBe(1);
  expect(moved('sluice_grant_decisions_total{mode="free"}')).toBe(1);
  expect(moved('sluice_grant_decisions_total{mode="partial"}')).toBe(0);
  for (const c of ['unfund', 'release_collateral', 'mark_failed']) expect(moved(`sluice_saga_compensations_total{compensation="${c}",failed_step="fund"}`)).toBe(1);
}, 90_000);

test('after the workload, every business figure /metrics serves equals the count of the rows it stands for (counters kept as things happen, not counted at scrape)', async () => {
  const { served, truth } = await figuresBesideTruth(stack.app, stack.db.pool);
  expect(served).toEqual(truth);
  // the workload above reached every figure: a comparison of zeros would prove nothing
  for (const series of ['sluice_ticks_billed_total', 'sluice_tick_lag_seconds_count', 'sluice_webhook_delivery_failures_total', 'sluice_grant_decisions_total{mode="gate"}', 'sluice_saga_compensations_total{compensation="unfund",failed_step="fund"}']) {
    expect({ series, counted: truth[series]! > 0 }).toEqual({ series, counted: true });
  }
}, 30_000);
