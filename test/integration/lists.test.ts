import { buildApp } from '../../src/api/app';
import { PAGE_ROWS_MAX } from '../../src/api/limits';

const STREAMS_PAGE_MAX = PAGE_ROWS_MAX['GET /v1/streams'];
const GRANTS_PAGE_MAX = PAGE_ROWS_MAX['GET /v1/grants'];
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';
import { testParties, until } from '../support/parties';

/**
 * The lists the console reads. GET /v1/streams, the one it polls. A party sees exactly the streams it
 * could open one by one (payer, payee, operator for the payer), newest first, in
 * pages a ref cursor walks without gaps or repeats; the admin sees all.
 */
let stack: TestStack;
let admin: ReturnType<typeof api>;
const { as, party } = testParties(() => stack);
const refs = (body: { streams: Array<{ ref: string }> }) => body.streams.map((s) => s.ref);

beforeAll(async () => {
  stack = await startTestStack();
  admin = api(stack.app, ADMIN_KEY);
  await party('alice', 100_000);
  await party('bob');
  await party('carol', 100_000);
  await party('dave');
  // one minute between ticks: only the opening tick is billed while the test reads
  const open = async (payer: string, payee: string, ref: string) => {
    const res = await as(payer).post('/v1/streams', { ref, fromAccountId: `${payer}.w`, toAccountId: `${payee}.w`, ratePerTick: 3, maxTotal: 300, tickIntervalMs: 60_000 });
    if (res.status !== 201) throw new Error(`open ${ref}: ${res.status} ${JSON.stringify(res.body)}`);
  };
  for (const ref of ['a-1', 'a-2', 'a-3', 'a-4', 'a-5']) await open('alice', 'bob', ref);
  await open('carol', 'dave', 'c-1');
  expect((await as('alice').post('/v1/streams/a-2/cancel', { reason: 'done' })).status).toBe(200);

  // free jobs the pool absorbs: two of alice's, one of carol's
  for (const payer of ['alice', 'carol']) expect((await admin.post(`/v1/parties/${payer}/tier`, { tier: 'established' })).status).toBe(200);
  for (const [payer, jobId] of [['alice', 'j-1'], ['carol', 'j-c'], ['alice', 'j-2']] as const) {
    const job = await as(payer).post('/v1/jobs', { jobId, accountId: `${payer}.w`, estimatedCost: 10, work: { description: jobId, simulate: { actualCost: 10 } } });
    expect(job.body).toMatchObject({ jobId, decision: 'free' });
    await until(`${jobId} to settle`, async () => ((await as(payer).get(`/v1/jobs/${jobId}`)).body.status === 'settled' ? true : undefined));
  }
});
afterAll(() => stack.stop());

describe('GET /v1/streams', () => {
  test("each party sees only its own streams, payer and payee alike; another party sees none of alice's; the admin sees all", async () => {
    const alice = await as('alice').get('/v1/streams');
    expect(alice.status).toBe(200);
    expect(refs(alice.body)).toEqual(['a-5', 'a-4', 'a-3', 'a-2', 'a-1']);
    expect(alice.body.next).toBeUndefined();
    expect(alice.body.streams[0]).toMatchObject({ ref: 'a-5', payer: 'alice', payee: 'bob', status: 'STREAMING', ticks: 1, totalPaid: 3, tickIntervalMs: 60_000, workflowId: 'stream-a-5' });
    expect(refs((await as('bob').get('/v1/streams')).body)).toEqual(['a-5', 'a-4', 'a-3', 'a-2', 'a-1']);
    expect(refs((await as('carol').get('/v1/streams')).body)).toEqual(['c-1']);
    expect(refs((await as('dave').get('/v1/streams')).body)).toEqual(['c-1']);
    expect(refs((await admin.get('/v1/streams')).body)).toEqual(['c-1', 'a-5', 'a-4', 'a-3', 'a-2', 'a-1']);
    expect((await api(stack.app).get('/v1/streams')).status).toBe(401);
  });

  test("an operator granted by the payer sees the payer's streams, and stops seeing them when revoked", async () => {
    expect((await as('alice').post('/v1/parties/alice/operators', { operator: 'dave', scopes: ['cancel'], dailyLimit: 100 })).status).toBe(201);
    expect(refs((await as('dave').get('/v1/streams')).body)).toEqual(['c-1', 'a-5', 'a-4', 'a-3', 'a-2', 'a-1']);
    expect((await as('alice').post('/v1/parties/alice/operators/dave/revoke')).status).toBe(200);
    expect(refs((await as('dave').get('/v1/streams')).body)).toEqual(['c-1']);
  });

  test('party and ref-prefix filters narrow what the caller sees, never widen it', async () => {
    expect(refs((await admin.get('/v1/streams?party=dave')).body)).toEqual(['c-1']);
    expect(refs((await admin.get('/v1/streams?party=bob&refPrefix=a-')).body)).toEqual(['a-5', 'a-4', 'a-3', 'a-2', 'a-1']);
    expect(refs((await admin.get('/v1/streams?refPrefix=a-3')).body)).toEqual(['a-3']);
    // alice asking for carol's streams sees none of them: the filter is within her own
    expect(refs((await as('alice').get('/v1/streams?party=carol')).body)).toEqual([]);
    expect(refs((await as('alice').get('/v1/streams?refPrefix=c-')).body)).toEqual([]);
    // the listing names the accounts, so a client can top up or reconcile without another read
    expect((await as('alice').get('/v1/streams?refPrefix=a-5')).body.streams[0]).toMatchObject({ fromAccountId: 'alice.w', toAccountId: 'bob.w' });
  });

  test('status filters: open is STREAMING, closed is CONFIRMED', async () => {
    expect(refs((await as('alice').get('/v1/streams?status=open')).body)).toEqual(['a-5', 'a-4', 'a-3', 'a-1']);
    const closed = (await as('alice').get('/v1/streams?status=closed')).body;
    expect(closed.streams).toEqual([expect.objectContaining({ ref: 'a-2', status: 'CONFIRMED', reason: 'cancelled', closedBy: 'alice', totalPaid: 3 })]);
    expect(refs((await as('alice').get('/v1/streams?status=failed')).body)).toEqual([]);
  });

  test('pages of `limit` walk every stream once, newest first, and the last page has no next', async () => {
    const seen: string[] = [];
    let after: string | undefined;
    for (let pages = 0; pages < 10; pages++) {
      const res = await as('alice').get(`/v1/streams?limit=2${after ? `&after=${after}` : ''}`);
      expect(res.status).toBe(200);
      expect(res.body.streams.length).toBeLessThanOrEqual(2);
      seen.push(...refs(res.body));
      after = res.body.next;
      if (!after) break;
    }
    expect(seen).toEqual(['a-5', 'a-4', 'a-3', 'a-2', 'a-1']);
    // a filter and a cursor together
    const page = (await as('alice').get('/v1/streams?status=open&limit=2&after=a-4')).body;
    expect(refs(page)).toEqual(['a-3', 'a-1']);
    expect(page.next).toBe('a-1');
    expect(refs((await as('alice').get('/v1/streams?status=open&limit=2&after=a-1')).body)).toEqual([]);
    // a cursor that names no stream ends the walk: nothing about other refs leaks through it
    expect((await as('alice').get('/v1/streams?after=no-such-stream')).body).toEqual({ streams: [] });
  });

  test(`a bad limit, status or cursor is a 400 naming it; at most ${STREAMS_PAGE_MAX} a page`, async () => {
    for (const query of [`limit=${STREAMS_PAGE_MAX + 1}`, 'limit=0', 'limit=two', 'status=STREAMING', 'after=%20bad']) {
      const res = await as('alice').get(`/v1/streams?${query}`);
      expect(res.status).toBe(400);
      expect(res.body.error.code).toBe('invalid_request');
    }
    expect((await as('alice').get(`/v1/streams?limit=${STREAMS_PAGE_MAX}`)).status).toBe(200);
  });

  test('the list is in the OpenAPI document', async () => {
    const doc = (await api(stack.app).get('/openapi.json')).body;
    expect(doc.paths['/v1/streams'].get.parameters.map((p: { name: string }) => p.name).sort()).toEqual(['after', 'limit', 'party', 'refPrefix', 'status']);
  });

  test('the console config names the Temporal UI and who the key is; an unbuilt console answers 404 saying how to build it', async () => {
    const app = await buildApp({ ...stack.app.deps, temporalUiUrl: 'http://ui.test:8233', consoleDir: '/nonexistent' });
    try {
      expect((await api(app, ADMIN_KEY).get('/v1/console/config')).body).toEqual({ temporalUiUrl: 'http://ui.test:8233', namespace: 'default', actor: { kind: 'admin' } });
      const key = (await admin.post('/v1/parties', { id: 'erin', name: 'erin' })).body.apiKey;
      expect((await api(app, key).get('/v1/console/config')).body).toEqual({ temporalUiUrl: 'http://ui.test:8233', namespace: 'default', actor: { kind: 'party', party: 'erin' } });
      expect((await api(app).get('/v1/console/config')).status).toBe(401);
      const unbuilt = await api(app).get('/console/');
      expect(unbuilt).toEqual({ status: 404, body: { error: expect.objectContaining({ code: 'not_found', message: 'the console is not built: run `npm run build:console`', details: {}, request_id: expect.any(String) }) } });
    } finally {
      await app.close();
    }
  });
});

describe('GET /v1/grants', () => {
  const jobs = (body: { grants: Array<{ jobId: string }> }) => body.grants.map((g) => g.jobId);

  test("a payer sees its own grants, newest first, with what the pool absorbed; another payer's are not there; the admin sees all", async () => {
    const alice = await as('alice').get('/v1/grants');
    expect(alice.status).toBe(200);
    expect(jobs(alice.body)).toEqual(['j-2', 'j-1']);
    expect(alice.body.grants[0]).toMatchObject({ jobId: 'j-2', payer: 'alice', decision: 'free', status: 'settled', reserved: 10, absorbed: 10, paid: 0 });
    expect(jobs((await as('carol').get('/v1/grants')).body)).toEqual(['j-c']);
    expect(jobs((await as('bob').get('/v1/grants')).body)).toEqual([]);
    expect(jobs((await admin.get('/v1/grants')).body)).toEqual(['j-2', 'j-c', 'j-1']);
  });

  test('pages walk every grant once; a bad limit or cursor is a 400', async () => {
    const first = (await admin.get('/v1/grants?limit=2')).body;
    expect([jobs(first), first.next]).toEqual([['j-2', 'j-c'], 'j-c']);
    const second = (await admin.get('/v1/grants?limit=2&after=j-c')).body;
    expect([jobs(second), second.next]).toEqual([['j-1'], undefined]);
    for (const query of [`limit=${GRANTS_PAGE_MAX + 1}`, 'limit=0', 'after=%20bad']) {
      const res = await as('alice').get(`/v1/grants?${query}`);
      expect([res.status, res.body.error.code]).toEqual([400, 'invalid_request']);
    }
  });
});
