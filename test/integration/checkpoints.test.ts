import { DAY_MS, LEDGER_POINTS_MAX } from '../../src/domain/checkpoints';
import { takeCheckpoints } from '../../src/ledger/checkpoints';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';

/**
 * The debt ledger through the API on the real stack: rounds of checkpoints (on demand
 * here; the daily round is timeskipping.test.ts's), an entity's series summed from its
 * latest round at each step, one subaccount's series, an eliminated subaccount dropping
 * out of later rounds, and the refusals.
 */
let stack: TestStack;
const admin = () => api(stack.app, ADMIN_KEY);
const keys: Record<string, string> = {};
const as = (id: string) => api(stack.app, keys[id]);
const q = async (sql: string, params: unknown[] = []) => (await stack.db.pool.query(sql, params)).rows;

beforeAll(async () => {
  stack = await startTestStack();
  for (const id of ['dl', 'other']) {
    const res = await admin().post('/v1/entities', { id, name: id, collateral: 10, funding: 100, webhookUrls: [] });
    expect(res.status).toBe(201);
    keys[id] = res.body.apiKey;
    expect((await admin().post('/v1/deposits', { accountId: `${id}.main`, amount: 5_000 }, `fund-${id}`)).status).toBe(201);
  }
  for (let i = 0; i < 3; i++) expect((await as('dl').post('/v1/entities/dl/subaccounts', {})).status).toBe(201);
  expect((await as('other').post('/v1/entities/other/subaccounts', {})).status).toBe(201);
  // dl/1 pays a stream to the shop: its first tick (7) billed at open
  expect((await admin().post('/v1/parties', { id: 'shop', name: 'shop' })).status).toBe(201);
  expect((await admin().post('/v1/accounts', { id: 'shop.w', ownerId: 'shop' })).status).toBe(201);
  expect((await admin().post('/v1/streams', { ref: 'dl-s', fromAccountId: 'dl/1', toAccountId: 'shop.w', ratePerTick: 7, maxTotal: 70, tickIntervalMs: 3_600_000 })).status).toBe(201);
});
afterAll(() => stack?.stop());

test("an entity's series sums its latest round at each step; a subaccount's is its own; an eliminated one drops out of later rounds", async () => {
  const now = Date.now();
  // an earlier round, two days back (its figures are today's: the ledger reads what is there)
  const earlier = new Date(now - 2 * DAY_MS);
  expect(await takeCheckpoints(stack.db.pool, { entityId: 'dl', at: earlier })).toEqual({ at: earlier.toISOString(), subaccounts: 3 });
  // then dl/3 is eliminated, and a round is taken on demand through the API
  expect((await as('dl').post(`/v1/subaccounts/${encodeURIComponent('dl/3')}/eliminate`, { reason: 'retired' })).status).toBe(200);
  const round = await as('dl').post('/v1/entities/dl/checkpoints');
  expect(round.status).toBe(201);
  expect(round.body).toMatchObject({ entity: 'dl', subaccounts: 2 });
  // the same round again (same `at`) adds nothing; another entity's subaccounts were not taken
  expect(await takeCheckpoints(stack.db.pool, { entityId: 'dl', at: new Date(round.body.at) })).toMatchObject({ subaccounts: 0 });
  expect(await q(`select count(*)::int as n from subaccount_checkpoints where entity_id = 'other'`)).toEqual([{ n: 0 }]);

  // four daily points, the last just after the API's round
  const toMs = Date.parse(round.body.at) + 1000;
  const [from, to] = [new Date(toMs - 3 * DAY_MS).toISOString(), new Date(toMs).toISOString()];
  const series = await as('dl').get(`/v1/entities/dl/ledger?from=${from}&to=${to}&step=86400`);
  expect(series.status).toBe(200);
  const points = series.body.points;
  expect(points).toHaveLength(4);
  // before the first round: nothing; then the earlier round (3 subaccounts) carried forward; then the API's (2)
  expect(points[0]).toMatchObject({ subaccounts: 0, balance: 0 });
  expect(points[0].checkpointAt).toBeUndefined();
  expect(points.slice(1).map((p: any) => [p.checkpointAt, p.subaccounts])).toEqual([
    [earlier.toISOString(), 3],
    [earlier.toISOString(), 3],
    [round.body.at, 2],
  ]);
  // the earlier round: 100 funded into each; dl/1 paid 7 of it and holds the other 63 of its stream's escrow
  expect(points[1]).toMatchObject({ balance: 293, held: 63, paid: 7, received: 0 });
  // the latest point is the dashboard's totals over the live subaccounts, to the unit
  const dashboard = (await as('dl').get('/v1/entities/dl/dashboard')).body;
  expect(points[3]).toMatchObject({ balance: dashboard.totals.balance, held: dashboard.totals.held, paid: dashboard.totals.paid, received: dashboard.totals.received });

  // one subaccount's series: its own figures from the same rounds
  const one = await as('dl').get(`/v1/entities/dl/ledger?from=${from}&to=${to}&step=86400&subaccount=${encodeURIComponent('dl/1')}`);
  expect(one.body).toMatchObject({ subaccount: 'dl/1' });
  expect(one.body.points.slice(1).map((p: any) => [p.subaccounts, p.balance, p.paid])).toEqual([
    [1, 93, 7],
    [1, 93, 7],
    [1, 93, 7],
  ]);
  // dl/3 is in the earlier round only
  const gone = await as('dl').get(`/v1/entities/dl/ledger?from=${from}&to=${to}&step=86400&subaccount=${encodeURIComponent('dl/3')}`);
  expect(gone.body.points.map((p: any) => p.subaccounts)).toEqual([0, 1, 1, 0]);
});

test('the refusals: another entity, a window backwards, too many points, an unknown subaccount', async () => {
  expect((await as('other').get('/v1/entities/dl/ledger')).status).toBe(404);
  expect((await as('other').post('/v1/entities/dl/checkpoints')).status).toBe(404);
  const backwards = await as('dl').get('/v1/entities/dl/ledger?from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z');
  expect(backwards.status).toBe(400);
  expect(backwards.body.error).toMatchObject({ code: 'invalid_request', param: 'from' });
  const dense = await as('dl').get('/v1/entities/dl/ledger?from=2026-01-01T00:00:00Z&to=2026-12-01T00:00:00Z&step=60');
  expect(dense.status).toBe(400);
  expect(dense.body.error).toMatchObject({ param: 'step', details: { max: LEDGER_POINTS_MAX } });
  expect((await as('dl').get(`/v1/entities/dl/ledger?subaccount=${encodeURIComponent('other/1')}`)).status).toBe(404);
  expect((await as('dl').get('/v1/entities/dl/ledger?from=yesterday')).status).toBe(400);
  // the admin may read any entity's
  expect((await admin().get('/v1/entities/dl/ledger')).status).toBe(200);
});
