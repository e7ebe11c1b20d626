import pg from 'pg';
import { tickAt } from '../../src/domain/crown';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';

/**
 * The rate board through the API on a real database: posting rates and states,
 * tailing events, the crown over a window of future ticks (so the wall clock cannot
 * move the answer), the read-only role, and streams routed to payee "best".
 */
let stack: TestStack;
let admin: ReturnType<typeof api>;
const keys: Record<string, string> = {};
const as = (party: string) => api(stack.app, keys[party]);

async function party(id: string, funds = 0) {
  const res = await admin.post('/v1/parties', { id, name: id });
  keys[id] = res.body.apiKey;
  await as(id).post('/v1/accounts', { id: `${id}.w` });
  if (funds) await admin.post('/v1/deposits', { accountId: `${id}.w`, amount: funds }, `fund-${id}`);
}

beforeAll(async () => {
  stack = await startTestStack();
  admin = api(stack.app, ADMIN_KEY);
  for (const id of ['s1', 's2', 's3']) await party(id);
  await party('buyer', 10_000);
});
afterAll(() => stack.stop());

describe('the rate board', () => {
  const base = tickAt(Date.now()) + 1000; // a window in the future: deterministic whatever the clock does

  test('rates and states posted at ticks give crown time per seller over a window, ties split exactly', async () => {
    expect((await as('s1').post('/v1/sellers/s1/rates', { ratePerTick: 5, atTick: base, accountId: 's1.w' })).status).toBe(201);
    expect((await as('s1').post('/v1/sellers/s1/state', { active: true, atTick: base })).status).toBe(201);
    await as('s2').post('/v1/sellers/s2/rates', { ratePerTick: 5, atTick: base, accountId: 's2.w' });
    await as('s2').post('/v1/sellers/s2/state', { active: true, atTick: base });
    // s2 goes busy for 10 ticks; s3 undercuts for the last 5
    await as('s2').post('/v1/sellers/s2/state', { busy: true, atTick: base + 10 });
    await as('s2').post('/v1/sellers/s2/state', { busy: false, atTick: base + 20 });
    await as('s3').post('/v1/sellers/s3/rates', { ratePerTick: 4, atTick: base + 25, accountId: 's3.w' });
    await as('s3').post('/v1/sellers/s3/state', { active: true, atTick: base + 25 });
    const res = await as('buyer').get(`/v1/crown?from=${base}&to=${base + 30}`);
    expect(res.status).toBe(200);
    expect(res.body.intervals).toEqual([
      { start: base, end: base + 10, holders: ['s1', 's2'], bestRate: 5 },
      { start: base + 10, end: base + 20, holders: ['s1'], bestRate: 5 },
      { start: base + 20, end: base + 25, holders: ['s1', 's2'], bestRate: 5 },
      { start: base + 25, end: base + 30, holders: ['s3'], bestRate: 4 },
    ]);
    // 10 shared (5 + 5) + 10 alone + 5 shared (3 + 2 or 2 + 3 by tick parity) + 5 to s3
    const t = res.body.crownTime;
    expect(t.s1 + t.s2).toBe(25);
    expect(t.s1).toBe(5 + 10 + (base % 2 === 0 ? 3 : 2));
    expect(t.s3).toBe(5);
  });

  test('events are tailed by cursor; a seller posts only its own; the past is not rewritten; bad input is 400', async () => {
    const all = (await admin.get('/v1/rates/events?after=0&limit=1000')).body.events;
    expect(all.length).toBeGreaterThanOrEqual(8);
    const tail = (await admin.get(`/v1/rates/events?after=${all[3].id}&limit=2`)).body.events;
    expect(tail.map((e: any) => e.id)).toEqual([all[4].id, all[5].id]);
    expect((await as('s1').post('/v1/sellers/s2/rates', { ratePerTick: 1 })).status).toBe(403);
    expect((await as('s1').post('/v1/sellers/s1/rates', { ratePerTick: 1, atTick: 5 })).status).toBe(400);
    expect((await as('s1').post('/v1/sellers/s1/rates', { ratePerTick: -1 })).status).toBe(400);
    expect((await as('s1').post('/v1/sellers/s1/state', {})).status).toBe(400);
    expect((await as('s1').post('/v1/sellers/s1/rates', { ratePerTick: 3, accountId: 's2.w' })).status).toBe(403);
    expect((await admin.get(`/v1/crown?from=${base + 5}&to=${base}`)).status).toBe(400);
  });

  test('the read-only role reads rate events and cannot write them', async () => {
    const u = new URL(stack.db.url);
    u.username = 'sluice_readonly';
    const ro = new pg.Client({ connectionString: u.toString() });
    await ro.connect();
    try {
      expect((await ro.query('select count(*)::int as n from rate_events')).rows[0].n).toBeGreaterThanOrEqual(8);
      await expect(ro.query(`insert into rate_events (seller, tick, rate) values ('s1', 1, 1)`)).rejects.toMatchObject({ code: '42501' });
    } finally {
      await ro.end();
    }
    // and nobody rewrites history, not even the owner
    await expect(stack.db.pool.query(`update rate_events set rate = 1`)).rejects.toThrow(/append-only/);
  });

  test('payee "best" opens the stream to the crown holder now and records it; nobody qualifying is a clear 4xx', async () => {
    // nobody is active now (all the posted events are in the future)
    const none = await as('buyer').post('/v1/streams', { fromAccountId: 'buyer.w', payee: 'best', ratePerTick: 2, maxTotal: 20, tickIntervalMs: 60_000 });
    expect(none.status).toBe(400);
    expect(none.body.error.message).toMatch(/no seller holds the crown/);
    // effective now (the server's tick: a tick computed here could be in the past by the time it arrives)
    for (const [seller, path, body] of [
      ['s3', 'state', { active: true }],
      ['s3', 'rates', { ratePerTick: 2 }],
      ['s1', 'state', { active: true }],
      ['s1', 'rates', { ratePerTick: 3 }],
    ] as const) {
      expect((await as(seller).post(`/v1/sellers/${seller}/${path}`, body)).status).toBe(201);
    }
    const res = await as('buyer').post('/v1/streams', { ref: 'to-best', fromAccountId: 'buyer.w', payee: 'best', ratePerTick: 2, maxTotal: 20, tickIntervalMs: 60_000 });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ payee: 's3', route: { seller: 's3', holders: ['s3'], bestRate: 2 } });
    expect((await admin.get('/v1/accounts/s3.w')).body.balance).toBe(2);
    const routed = await stack.db.pool.query(`select payload from events where type = 'stream.routed' and subject = 'to-best'`);
    expect(routed.rows[0].payload).toMatchObject({ ref: 'to-best', seller: 's3' });
    expect((await as('buyer').post('/v1/streams', { fromAccountId: 'buyer.w', toAccountId: 's1.w', payee: 'best', ratePerTick: 2, maxTotal: 20, tickIntervalMs: 60_000 })).status).toBe(400);
    await as('buyer').post('/v1/streams/to-best/cancel', {});
  });

  test('crown rewards pay a budget by crown time over a finished window, once', async () => {
    await admin.post('/v1/deposits', { accountId: 'sluice.rewards', amount: 1000 }, 'fund-rewards');
    const now = tickAt(Date.now());
    // a window that is over: s1 and s2 alone at 7 for 6 ticks, then s1 alone for 3
    const from = now - 200;
    await stack.db.pool.query(
      `insert into rate_events (seller, tick, rate, active, busy) values ('s1', $1, 7, true, false), ('s2', $1, 7, true, false), ('s2', $2, null, null, true), ('s2', $3, null, null, false), ('s2', $3, 100, null, null)`,
      [from, from + 6, from + 9],
    );
    // (past ticks through SQL: the API refuses to rewrite the past; s3 also held the crown from `now` on, outside this window)
    const before = (await admin.get('/v1/accounts/s1.w')).body.balance;
    const paid = await admin.post('/v1/crown/rewards', { from, to: from + 9, budget: 90 });
    expect(paid.status).toBe(200);
    expect(paid.body).toMatchObject({ budget: 90, paid: 90, shares: { s1: 60, s2: 30 }, alreadyPaid: false });
    expect((await admin.get('/v1/accounts/s1.w')).body.balance).toBe(before + 60);
    expect((await admin.post('/v1/crown/rewards', { from, to: from + 9, budget: 90 })).body).toMatchObject({ paid: 90, alreadyPaid: true });
    expect((await admin.post('/v1/crown/rewards', { from, to: from + 9, budget: 50 })).status).toBe(409);
    expect((await admin.get('/v1/accounts/sluice.rewards')).body.balance).toBe(910);
    expect((await admin.post('/v1/crown/rewards', { from: now + 10, to: now + 20, budget: 5 })).status).toBe(400);
    expect((await as('s1').post('/v1/crown/rewards', { from, to: from + 9, budget: 5 })).status).toBe(403);
  });
});
