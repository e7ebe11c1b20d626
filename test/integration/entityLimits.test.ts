import { randomBytes } from 'node:crypto';
import { SUBACCOUNT_CAP_DEFAULT } from '../../src/domain/entities';
import { ROLLBACK_RETRY_AFTER_S } from '../../src/ledger/entities';
import { parseFaults } from '../../src/domain/faults';
import { until } from '../support/parties';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';

/**
 * The limits of an entity as the reviewers of the systems Sluice replaces asked to see
 * them proven, on the real stack (API, worker, Temporal, PostgreSQL):
 * - the default cap of 500 is reached exactly under concurrent creations, and an
 *   elimination frees a slot;
 * - an entity whose main account cannot cover the collateral (no fault injected) is
 *   refused clearly, and nothing is held or numbered;
 * - while a failed creation is still being rolled back its slot counts against the
 *   cap: concurrent requests are refused with 422, saying how many slots are rolling
 *   back and when to retry, and succeed when sent again.
 */
let stack: TestStack;
const admin = () => api(stack.app, ADMIN_KEY);
const keys: Record<string, string> = {};
const as = (id: string) => api(stack.app, keys[id]);
const run = randomBytes(3).toString('hex');
// the rollback entity: creations 3 and 4 fail at fund, and each slot's collateral release
// fails five times first (retried from 200 ms, doubling: about six seconds of rollback)
const RB = `rb-${run}`;

beforeAll(async () => {
  stack = await startTestStack({
    writeRate: { max: 1_000_000, windowMs: 1_000 },
    faults: parseFaults(`fund@${RB}/3=always,fund@${RB}/4=always,release_collateral@${RB}/3=5,release_collateral@${RB}/4=5`),
  });
});
afterAll(() => stack?.stop());

async function entity(id: string, terms: Record<string, unknown>, funds: number) {
  const res = await admin().post('/v1/entities', { id, name: id, webhookUrls: [], ...terms });
  expect(res.status).toBe(201);
  keys[id] = res.body.apiKey;
  if (funds > 0) expect((await admin().post('/v1/deposits', { accountId: `${id}.main`, amount: funds }, `fund-${id}`)).status).toBe(201);
}
/**
 * A creation as a client makes it: a 202 (still running past the API's wait, as 520 at
 * once on two cores can be) is sent again under the same request id until it has its answer.
 */
async function create(id: string, requestId: string) {
  for (;;) {
    const res = await as(id).post(`/v1/entities/${id}/subaccounts`, { requestId });
    if (res.status !== 202) return res;
  }
}
const q = async (sql: string, params: unknown[] = []) => (await stack.db.pool.query(sql, params)).rows;
const mainOf = async (id: string) => (await q(`select balance, held from accounts where id = $1`, [`${id}.main`]))[0];

test(`the default cap of ${SUBACCOUNT_CAP_DEFAULT} is reached exactly by ${SUBACCOUNT_CAP_DEFAULT + 20} concurrent creations, and an elimination frees a slot`, async () => {
  const id = `cap-${run}`;
  // the default cap (no subaccountCap of its own); the hourly limit raised out of the way
  await entity(id, { collateral: 1, funding: 0, creationsPerHour: 100_000 }, 10_000);
  const results = await Promise.all(Array.from({ length: SUBACCOUNT_CAP_DEFAULT + 20 }, (_, i) => create(id, `c${i}`)));
  const statuses = results.map((r) => r.status);
  expect(statuses.filter((s) => s === 201)).toHaveLength(SUBACCOUNT_CAP_DEFAULT);
  expect(statuses.filter((s) => s !== 201)).toEqual(Array(20).fill(422));
  expect(new Set(results.filter((r) => r.status === 422).map((r) => r.body.error.code))).toEqual(new Set(['limit_exceeded']));
  // numbers 1..500, each once; collateral held for 500
  const seqs = (await q(`select seq from subaccounts where entity_id = $1 and status = 'active' order by seq`, [id])).map((r) => r.seq);
  expect(seqs).toEqual(Array.from({ length: SUBACCOUNT_CAP_DEFAULT }, (_, i) => i + 1));
  expect(await mainOf(id)).toMatchObject({ held: SUBACCOUNT_CAP_DEFAULT });
  expect((await as(id).get(`/v1/entities/${id}`)).body).toMatchObject({ liveSubaccounts: SUBACCOUNT_CAP_DEFAULT, subaccountCap: SUBACCOUNT_CAP_DEFAULT });
  // the debt ledger over all 500: one round, and its point sums every one of them (one collateral of 1 each, held on the main account, not on theirs)
  const round = await as(id).post(`/v1/entities/${id}/checkpoints`);
  expect(round.body).toMatchObject({ subaccounts: SUBACCOUNT_CAP_DEFAULT });
  const ledger = await as(id).get(`/v1/entities/${id}/ledger?from=${new Date(Date.parse(round.body.at) - 60_000).toISOString()}&to=${round.body.at}&step=60`);
  expect(ledger.body.points.at(-1)).toMatchObject({ checkpointAt: round.body.at, subaccounts: SUBACCOUNT_CAP_DEFAULT, balance: 0, held: 0 });
  // at the cap, a new request is refused and says why
  const over = await create(id, 'one-more');
  expect(over.status).toBe(422);
  expect(over.body.error).toMatchObject({ code: 'limit_exceeded', details: { cap: SUBACCOUNT_CAP_DEFAULT, live: SUBACCOUNT_CAP_DEFAULT, rollingBack: 0 } });
  expect(over.body.error.message).toMatch(/eliminate one to free a slot/);
  // an elimination frees exactly one slot: the same request now succeeds, with the next number (refusals burned none)
  expect((await as(id).post(`/v1/subaccounts/${encodeURIComponent(`${id}/7`)}/eliminate`, { reason: 'frees a slot' })).status).toBe(200);
  const again = await create(id, 'one-more');
  expect(again.status).toBe(201);
  expect(again.body.subaccount).toMatchObject({ id: `${id}/${SUBACCOUNT_CAP_DEFAULT + 1}`, status: 'active' });
  expect((await create(id, 'and-another')).status).toBe(422);
}, 300_000);

test('an entity whose main account cannot cover collateral and funding is refused clearly; nothing is held, no number taken', async () => {
  const id = `poor-${run}`;
  await entity(id, { collateral: 100, funding: 500 }, 550);
  const res = await create(id, 'r1');
  expect(res.status).toBe(422);
  expect(res.body.error).toMatchObject({ code: 'insufficient_funds', details: { failedStep: 'allocate', subaccount: null } });
  expect(res.body.error.message).toBe(`entity ${id}'s main account ${id}.main has 550 available; a subaccount needs 100 collateral + 500 funding = 600: deposit 50 more`);
  expect(await mainOf(id)).toEqual({ balance: 550, held: 0 });
  expect(await q(`select id from subaccounts where entity_id = $1`, [id])).toEqual([]);
  expect((await q(`select next_seq from entities where id = $1`, [id]))[0].next_seq).toBe(1);
  // funded, the same request runs and takes number 1
  expect((await admin().post('/v1/deposits', { accountId: `${id}.main`, amount: 50 }, `top-${id}`)).status).toBe(201);
  const later = await create(id, 'r1');
  expect(later.status).toBe(201);
  expect(later.body.subaccount).toMatchObject({ id: `${id}/1`, status: 'active' });
});

test('slots of failed creations still rolling back count against the cap: concurrent requests are refused (422, how many, when to retry) and succeed when sent again', async () => {
  await entity(RB, { collateral: 10, funding: 5, subaccountCap: 4, creationsPerHour: 100 }, 1_000);
  for (const r of ['ok-1', 'ok-2']) expect((await create(RB, r)).status).toBe(201);
  // creations 3 and 4 fail at fund; their rollbacks are slow (the collateral release fails five times first)
  const failing = [create(RB, 'fails-3'), create(RB, 'fails-4')];
  await until('both failed creations to be rolling back', async () => {
    const rows = await q(`select count(*)::int as n from subaccounts where entity_id = $1 and status = 'pending' and rolling_back_at is not null`, [RB]);
    return rows[0].n === 2 ? true : undefined;
  });
  // at the cap (2 active + 2 rolling back): two concurrent requests are refused, saying so
  const refused = await Promise.all([create(RB, 'wait-a'), create(RB, 'wait-b')]);
  // proven inside the window: both slots were still pending, rolling back, after the refusals
  const during = await q(`select seq, status, rolling_back_at is not null as rolling from subaccounts where entity_id = $1 and seq > 2 order by seq`, [RB]);
  expect(during).toEqual([
    { seq: 3, status: 'pending', rolling: true },
    { seq: 4, status: 'pending', rolling: true },
  ]);
  for (const res of refused) {
    expect(res.status).toBe(422);
    expect(res.body.error).toMatchObject({ code: 'limit_exceeded', details: { cap: 4, live: 4, rollingBack: 2, retryAfterSeconds: ROLLBACK_RETRY_AFTER_S } });
    expect(res.body.error.message).toBe(`entity ${RB} has 4 live subaccounts (cap 4), 2 of them failed creations still being rolled back: retry in ${ROLLBACK_RETRY_AFTER_S} s`);
    expect(res.headers['retry-after']).toBe(String(ROLLBACK_RETRY_AFTER_S));
  }
  // the view says the same
  expect((await as(RB).get(`/v1/entities/${RB}`)).body).toMatchObject({ liveSubaccounts: 4, rollingBack: 2 });
  // the failed creations end failed, their collateral released and nothing funded
  for (const res of await Promise.all(failing)) {
    expect(res.status).toBe(422);
    expect(res.body.error.details).toMatchObject({ failedStep: 'fund', compensated: ['release_collateral', 'mark_failed'] });
  }
  expect(await mainOf(RB)).toEqual({ balance: 1_000 - 2 * 5, held: 2 * 10 });
  // sent again, both refused requests succeed, numbered after the burned 3 and 4
  const resent = await Promise.all([create(RB, 'wait-a'), create(RB, 'wait-b')]);
  expect(resent.map((r) => r.status)).toEqual([201, 201]);
  expect(resent.map((r) => r.body.subaccount.id).sort()).toEqual([`${RB}/5`, `${RB}/6`]);
}, 120_000);
