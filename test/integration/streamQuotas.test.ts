import { randomBytes } from 'node:crypto';
import { WorkflowNotFoundError } from '@temporalio/client';
import { streamWorkflowId } from '../../src/domain/streams';
import { DEFAULT_TIER_STREAM_QUOTAS, parseTierStreamQuotas } from '../../src/domain/streamQuotas';
import { loadConfig } from '../../src/config';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';
import { testParties } from '../support/parties';

/**
 * Per-party stream quotas by tier (SLUICE_TIER_STREAM_QUOTAS): how many streams a payer
 * may pay at once and how often they may tick. The API refuses an opening over them
 * before a workflow starts; the ledger refuses again under the payer's party row, so
 * two opens racing past the API's check still count each other.
 */
let stack: TestStack;
const { as, party } = testParties(() => stack);
const admin = () => api(stack.app, ADMIN_KEY);
const RUN = randomBytes(4).toString('hex');
const ref = (name: string) => `quota-${RUN}-${name}`;
const QUOTAS = parseTierStreamQuotas('new=2/500');

beforeAll(async () => {
  stack = await startTestStack({ streamQuotas: QUOTAS });
  for (const p of ['qa', 'qb', 'qc']) await party(p, 100_000);
  await party('qpayee');
}, 60_000);
afterAll(() => stack?.stop());

const open = (payer: string, name: string, tickIntervalMs = 3_600_000) =>
  as(payer).post('/v1/streams', { ref: ref(name), fromAccountId: `${payer}.w`, toAccountId: 'qpayee.w', ratePerTick: 1, maxTotal: 100, tickIntervalMs });
const openCount = async (payer: string) => (await stack.db.pool.query(`select count(*)::int as n from streams where payer = $1 and status = 'open'`, [payer])).rows[0].n;
const balance = async (account: string) => (await stack.db.pool.query(`select balance, held from accounts where id = $1`, [account])).rows[0];

test("a new party pays at most its tier's open streams: the one past them is 422 limit_exceeded, starts nothing and moves nothing; a close frees a place", async () => {
  expect((await open('qa', 'a1')).status).toBe(201);
  expect((await open('qa', 'a2')).status).toBe(201);
  const before = await balance('qa.w');
  const refused = await open('qa', 'a3');
  expect(refused.status).toBe(422);
  expect(refused.body.error).toMatchObject({
    code: 'limit_exceeded',
    message: 'qa pays 2 open streams, the most a new party may (2): close one first',
    details: { payer: 'qa', tier: 'new', openStreams: 2, openStreamsMax: 2 },
  });
  await expect(stack.client.workflow.getHandle(streamWorkflowId(ref('a3'))).describe()).rejects.toBeInstanceOf(WorkflowNotFoundError);
  expect(await balance('qa.w')).toEqual(before);
  expect(await openCount('qa')).toBe(2);
  // a paused stream is still open: it counts
  expect((await as('qa').post(`/v1/streams/${ref('a1')}/pause`)).status).toBe(200);
  expect((await open('qa', 'a3')).status).toBe(422);
  expect((await as('qa').post(`/v1/streams/${ref('a1')}/cancel`, {})).status).toBe(200);
  expect((await open('qa', 'a3')).status).toBe(201);
  // a repeat of a stream already open is its answer, not a new opening
  expect((await open('qa', 'a2')).status).toBe(200);
});

test("a new party's streams tick at most every 500 ms: a shorter interval is 422 naming tickIntervalMs; the same stream opens once the admin makes the party elite", async () => {
  const fast = await open('qb', 'fast', 200);
  expect(fast.status).toBe(422);
  expect(fast.body.error).toMatchObject({ code: 'limit_exceeded', param: 'tickIntervalMs', details: { tier: 'new', tickIntervalMsMin: 500 } });
  expect(await openCount('qb')).toBe(0);
  expect((await admin().post('/v1/parties/qb/tier', { tier: 'elite' })).status).toBe(200);
  const elite = await open('qb', 'fast', 200);
  expect(elite.status).toBe(201);
  expect(elite.body).toMatchObject({ tickIntervalMs: 200, status: 'STREAMING' });
});

test('two opens at once for the last place: both pass the API, the ledger lets one open and refuses the other under the payer lock', async () => {
  expect((await open('qc', 'c1')).status).toBe(201);
  // the race the API's check cannot see: both count 1 open stream of 2 before either opens
  const [x, y] = await Promise.all([open('qc', 'c2'), open('qc', 'c3')]);
  expect([x.status, y.status].sort()).toEqual([201, 422]);
  const loser = x.status === 422 ? x : y;
  expect(loser.body.error).toMatchObject({ code: 'limit_exceeded', details: { payer: 'qc', openStreams: 2, openStreamsMax: 2 } });
  expect(await openCount('qc')).toBe(2);
  // the refusal was the ledger's: the losing stream's workflow ran (so it passed the API's check) and failed on the quota
  const loserRef = x.status === 422 ? ref('c2') : ref('c3');
  const described = await stack.client.workflow.getHandle(streamWorkflowId(loserRef)).describe();
  expect(described.status.name).toBe('FAILED');
});

test('SLUICE_TIER_STREAM_QUOTAS: tier=openStreams/tickIntervalMsMin; a tier left out keeps its default; a bad entry is refused with the format', () => {
  expect(loadConfig({}).SLUICE_TIER_STREAM_QUOTAS).toEqual(DEFAULT_TIER_STREAM_QUOTAS);
  expect(loadConfig({ SLUICE_TIER_STREAM_QUOTAS: 'new=10/1000, elite=20000/100' }).SLUICE_TIER_STREAM_QUOTAS).toEqual({
    ...DEFAULT_TIER_STREAM_QUOTAS,
    new: { openStreamsMax: 10, tickIntervalMsMin: 1000 },
    elite: { openStreamsMax: 20_000, tickIntervalMsMin: 100 },
  });
  expect(() => loadConfig({ SLUICE_TIER_STREAM_QUOTAS: 'new=10' })).toThrow(/tier=openStreams\/tickIntervalMsMin/);
  expect(() => loadConfig({ SLUICE_TIER_STREAM_QUOTAS: 'gold=10/1000' })).toThrow(/unknown tier "gold"/);
  expect(() => loadConfig({ SLUICE_TIER_STREAM_QUOTAS: 'new=10/50' })).toThrow(/at least 100 ms/);
  expect(() => loadConfig({ SLUICE_TIER_STREAM_QUOTAS: 'new=0/1000' })).toThrow(/at least 1/);
});
