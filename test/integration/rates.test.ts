import pg from 'pg';
import { apply, NO_OFFER, tickAt, tickShares, type SellerState } from '../../src/domain/crown';
import { statesBefore, toRateEvent } from '../../src/ledger/rates';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';
import { untilTailsCaughtUp } from '../support/tails';

/**
 * The rate board through the API on a real database: posting rates and states,
 * tailing events, the crown over a window of future ticks (so the wall clock cannot
 * move the answer), the read-only role, and streams routed to payee "best"; markets
 * (ask and bid), each with its own crown, and the crown's timeline, page by page.
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
    // each interval also as times: a board tick is a second since the epoch
    const at = (tick: number) => new Date(tick * 1000).toISOString();
    const iv = (start: number, end: number, holders: string[], bestRate: number) => ({ start, end, startAt: at(start), endAt: at(end), holders, bestRate });
    expect(res.body.intervals).toEqual([
      iv(base, base + 10, ['s1', 's2'], 5),
      iv(base + 10, base + 20, ['s1'], 5),
      iv(base + 20, base + 25, ['s1', 's2'], 5),
      iv(base + 25, base + 30, ['s3'], 4),
    ]);
    expect([res.body.fromAt, res.body.toAt]).toEqual([at(base), at(base + 30)]);
    expect(Date.parse(res.body.current.at)).toBe(res.body.current.tick * 1000);
    // 10 shared (5 + 5) + 10 alone + 5 shared (2.5 + 2.5) + 5 to s3; exact in crown units
    expect(res.body.crownTime).toEqual({ s1: 17.5, s2: 7.5, s3: 5 });
    const U = res.body.unitsPerTick;
    expect(res.body.crownUnits).toEqual({ s1: 17.5 * U, s2: 7.5 * U, s3: 5 * U });
    expect(res.body.intervalCount).toBe(4);
  });

  test('events are tailed by cursor; a seller posts only its own; the past is not rewritten; bad input is 400', async () => {
    await untilTailsCaughtUp(stack.db.pool);
    const all = (await admin.get('/v1/rates/events?after=0&limit=1000')).body.events;
    expect(all.length).toBeGreaterThanOrEqual(8);
    const tail = (await admin.get(`/v1/rates/events?after=${all[3].id}&limit=2`)).body.events;
    expect(tail.map((e: any) => e.id)).toEqual([all[4].id, all[5].id]);
    expect((await as('s1').post('/v1/sellers/s2/rates', { ratePerTick: 1 })).status).toBe(403);
    expect((await as('s1').post('/v1/sellers/s1/rates', { ratePerTick: 1, atTick: 5 })).status).toBe(400);
    expect((await as('s1').post('/v1/sellers/s1/rates', { ratePerTick: -1 })).status).toBe(400);
    expect((await as('s1').post('/v1/sellers/s1/state', {})).status).toBe(400);
    // another party's account is not found, as a missing one
    expect((await as('s1').post('/v1/sellers/s1/rates', { ratePerTick: 3, accountId: 's2.w' })).status).toBe(404);
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
    const none = await as('buyer').post('/v1/streams', { ref: 'best-none', fromAccountId: 'buyer.w', payee: 'best', ratePerTick: 2, maxTotal: 20, tickIntervalMs: 60_000 });
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
    // the route is part of the opening: written by the transaction that opened the stream (its xid), right after stream.opened
    const opening = await stack.db.pool.query<{ type: string; xid: string }>(
      `select type, xid::text from events where subject = 'to-best' and type in ('stream.opened', 'stream.routed') order by id`,
    );
    expect(opening.rows.map((r) => r.type)).toEqual(['stream.opened', 'stream.routed']);
    expect(opening.rows[0]!.xid).toBe(opening.rows[1]!.xid);
    expect((await as('buyer').post('/v1/streams', { ref: 'best-both', fromAccountId: 'buyer.w', toAccountId: 's1.w', payee: 'best', ratePerTick: 2, maxTotal: 20, tickIntervalMs: 60_000 })).status).toBe(400);
    // the same request again answers with the stream it opened (and its route), whatever the crown does meanwhile
    expect((await as('s1').post('/v1/sellers/s1/rates', { ratePerTick: 1 })).status).toBe(201);
    const again = await as('buyer').post('/v1/streams', { ref: 'to-best', fromAccountId: 'buyer.w', payee: 'best', ratePerTick: 2, maxTotal: 20, tickIntervalMs: 60_000 });
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ payee: 's3', ticks: 1, totalPaid: 2, route: { seller: 's3', bestRate: 2 } });
    expect((await as('buyer').post('/v1/streams', { ref: 'to-best', fromAccountId: 'buyer.w', payee: 'best', ratePerTick: 2, maxTotal: 30, tickIntervalMs: 60_000 })).status).toBe(409);
    await as('buyer').post('/v1/streams/to-best/cancel', {});
  });

  test('payee "best" pays the holder its own rate, refuses a limit below the best offer, and never routes a seller to itself', async () => {
    // s1 now holds alone at 1 (the previous test); a limit above pays 1 a tick, not the limit
    const cheap = await as('buyer').post('/v1/streams', { ref: 'best-limit', fromAccountId: 'buyer.w', payee: 'best', ratePerTick: 9, maxTotal: 30, tickIntervalMs: 60_000 });
    expect(cheap.status).toBe(201);
    expect(cheap.body).toMatchObject({ payee: 's1', ratePerTick: 1, totalPaid: 1, route: { seller: 's1', bestRate: 1 } });
    await as('buyer').post('/v1/streams/best-limit/cancel', {});
    // s3 leaves and s1's price rises above the buyer's limit
    expect((await as('s1').post('/v1/sellers/s1/rates', { ratePerTick: 50 })).status).toBe(201);
    expect((await as('s3').post('/v1/sellers/s3/state', { active: false })).status).toBe(201);
    const before = (await as('buyer').get('/v1/accounts/buyer.w')).body.balance;
    const pricey = await as('buyer').post('/v1/streams', { ref: 'best-pricey', fromAccountId: 'buyer.w', payee: 'best', ratePerTick: 10, maxTotal: 100, tickIntervalMs: 60_000 });
    expect(pricey.status).toBe(422);
    expect(pricey.body.error).toMatchObject({ code: 'limit_exceeded', details: { bestRate: 50, ratePerTick: 10 } });
    expect((await as('buyer').get('/v1/accounts/buyer.w')).body.balance).toBe(before);
    // the only holder asking for the best seller is not routed to itself
    await admin.post('/v1/deposits', { accountId: 's1.w', amount: 500 }, 'fund-s1-self');
    const self = await as('s1').post('/v1/streams', { ref: 'best-self', fromAccountId: 's1.w', payee: 'best', ratePerTick: 60, maxTotal: 100, tickIntervalMs: 60_000 });
    expect(self.status).toBe(400);
    expect(self.body.error.message).toMatch(/no seller holds the crown/);
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
    // an overlapping window would pay the same crown time again: refused, nothing moves
    const overlap = await admin.post('/v1/crown/rewards', { from: from + 5, to: from + 20, budget: 90 });
    expect(overlap.status).toBe(409);
    expect(overlap.body.error.details).toEqual({ rewarded: { from, to: from + 9 } });
    // and the database refuses it even past the application's check
    await expect(
      stack.db.pool.query(`insert into crown_rewards (window_from, window_to, budget, paid, shares) values ($1, $2, 1, 0, '{}')`, [from + 1, from + 2]),
    ).rejects.toThrow(/crown_rewards_windows_disjoint/);
    // an adjacent window is fine: s1 alone at 7 from from+9 (s2 repriced to 100)
    expect((await admin.post('/v1/crown/rewards', { from: from + 9, to: from + 12, budget: 5 })).body).toMatchObject({ paid: 5, shares: { s1: 5 }, alreadyPaid: false });
    expect((await admin.get('/v1/accounts/sluice.rewards')).body.balance).toBe(905);
    expect((await admin.post('/v1/crown/rewards', { from: now + 10, to: now + 20, budget: 5 })).status).toBe(400);
    expect((await as('s1').post('/v1/crown/rewards', { from, to: from + 9, budget: 5 })).status).toBe(403);
  });

  test("the state before a window is each seller's last value of each field, as folding every earlier event in (tick, id) order gives", async () => {
    // random events far in the future (nothing above reads there), several per tick, fields set independently
    const at = base + 100_000;
    let seed = 11;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const values: unknown[] = [];
    const rows: string[] = [];
    for (let i = 0; i < 300; i++) {
      const maybe = <T,>(v: T) => (random() < 0.5 ? v : null);
      const change: Array<number | boolean | null> = [maybe(Math.floor(random() * 5)), maybe(random() < 0.5), maybe(random() < 0.5)];
      if (!change.some((c) => c !== null)) change[0] = 1;
      values.push(['s1', 's2', 's3'][Math.floor(random() * 3)], at + Math.floor(random() * 40), ...change);
      rows.push(`($${values.length - 4}, $${values.length - 3}, $${values.length - 2}, $${values.length - 1}, $${values.length})`);
    }
    await stack.db.pool.query(`insert into rate_events (seller, tick, rate, active, busy) values ${rows.join(', ')}`, values);
    const all = (await stack.db.pool.query('select * from rate_events order by tick, id')).rows.map(toRateEvent);
    for (const from of [at, at + 7, at + 20, at + 39, at + 40]) {
      const folded = new Map<string, SellerState>();
      for (const e of all.filter((x) => x.tick < from)) folded.set(e.seller, apply(folded.get(e.seller) ?? NO_OFFER, e));
      expect(await statesBefore(stack.db.pool, 'default', from)).toEqual(folded);
    }
  });
});

describe('markets', () => {
  const base = tickAt(Date.now()) + 300_000; // future ticks no other test reads

  test('the admin creates a market with a direction; an id taken is 409, bad input 400, a party 403; any party lists them', async () => {
    const created = await admin.post('/v1/markets', { id: 'gpu-bids', direction: 'bid' });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ id: 'gpu-bids', direction: 'bid' });
    const taken = await admin.post('/v1/markets', { id: 'gpu-bids', direction: 'ask' });
    expect(taken.status).toBe(409);
    expect(taken.body.error).toMatchObject({ code: 'already_exists', details: { market: 'gpu-bids', direction: 'bid' } });
    expect((await admin.post('/v1/markets', { id: 'default', direction: 'bid' })).status).toBe(409);
    expect((await admin.post('/v1/markets', { id: 'x', direction: 'sideways' })).status).toBe(400);
    expect((await admin.post('/v1/markets', { id: 'Not An Id', direction: 'ask' })).status).toBe(400);
    expect((await as('s1').post('/v1/markets', { id: 'mine', direction: 'ask' })).status).toBe(403);
    const list = await as('buyer').get('/v1/markets');
    expect(list.body.markets.map((m: any) => [m.id, m.direction])).toEqual([['default', 'ask'], ['gpu-bids', 'bid']]);
    const page = await as('buyer').get('/v1/markets?limit=1');
    expect(page.body).toMatchObject({ markets: [{ id: 'default' }], next: 'default' });
    expect((await as('buyer').get('/v1/markets?limit=1&after=default')).body.markets.map((m: any) => m.id)).toEqual(['gpu-bids']);
    // a direction is for good: the database refuses to change it
    await expect(stack.db.pool.query(`update markets set direction = 'ask' where id = 'gpu-bids'`)).rejects.toThrow(/never change/);
  });

  test('an unknown market is a 404 wherever a market is named; market without payee "best" is a 400', async () => {
    const missing = await as('s1').post('/v1/sellers/s1/rates', { ratePerTick: 3, market: 'nope', atTick: base });
    expect(missing.status).toBe(404);
    expect(missing.body.error).toMatchObject({ code: 'not_found', details: { market: 'nope' } });
    expect((await as('s1').post('/v1/sellers/s1/state', { active: true, market: 'nope' })).status).toBe(404);
    expect((await as('buyer').get('/v1/crown?market=nope')).status).toBe(404);
    expect((await as('buyer').get('/v1/crown/timeline?market=nope')).status).toBe(404);
    const stream = { fromAccountId: 'buyer.w', ratePerTick: 5, maxTotal: 20, tickIntervalMs: 60_000 };
    expect((await as('buyer').post('/v1/streams', { ref: 'best-nope', payee: 'best', market: 'nope', ...stream })).status).toBe(404);
    const stray = await as('buyer').post('/v1/streams', { ref: 'to-s1-market', toAccountId: 's1.w', market: 'gpu-bids', ...stream });
    expect(stray.status).toBe(400);
    expect(stray.body.error.message).toMatch(/only with payee "best"/);
  });

  test("each market has its own crown in its own direction: the highest bid holds gpu-bids, the lowest ask holds default, over the same ticks", async () => {
    for (const market of ['default', 'gpu-bids']) {
      for (const [seller, rate] of [['s1', 4], ['s2', 6]] as const) {
        expect((await as(seller).post(`/v1/sellers/${seller}/rates`, { ratePerTick: rate, atTick: base, market })).status).toBe(201);
        expect((await as(seller).post(`/v1/sellers/${seller}/state`, { active: true, busy: false, atTick: base, market })).status).toBe(201);
      }      // s3 out of both (the random events of a test above may have left it priced in the default market)
      expect((await as('s3').post('/v1/sellers/s3/state', { active: false, atTick: base, market })).status).toBe(201);
    }
    // s2 raises its bid at base+10, in gpu-bids only
    const raised = await as('s2').post('/v1/sellers/s2/rates', { ratePerTick: 8, atTick: base + 10, market: 'gpu-bids' });
    expect(raised.body).toMatchObject({ market: 'gpu-bids', seller: 's2', rate: 8 });
    const crown = async (market: string) => (await as('buyer').get(`/v1/crown?market=${market}&from=${base}&to=${base + 20}`)).body;
    const bids = await crown('gpu-bids');
    expect(bids).toMatchObject({ market: 'gpu-bids', direction: 'bid', crownTime: { s2: 20 } });
    expect(bids.intervals.map((iv: any) => [iv.start - base, iv.end - base, iv.holders, iv.bestRate])).toEqual([[0, 10, ['s2'], 6], [10, 20, ['s2'], 8]]);
    const asks = await crown('default');
    expect(asks).toMatchObject({ market: 'default', direction: 'ask', crownTime: { s1: 20 } });
    // the tail says which market each event is for
    const tail = (await admin.get('/v1/rates/events?after=0&limit=1000')).body.events;
    expect(tail.find((e: any) => e.id === raised.body.id)).toMatchObject({ market: 'gpu-bids', rate: 8 });
  });

  test('the timeline, page by page, tiles the window with the aggregate\'s intervals, and its crown time per seller is GET /v1/crown\'s crownUnits, in each direction', async () => {
    const from = base + 1000;
    let seed = 19;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (const market of ['default', 'gpu-bids']) {
      for (let i = 0; i < 30; i++) {
        const seller = ['s1', 's2', 's3'][Math.floor(random() * 3)]!;
        const atTick = from + Math.floor(random() * 60);
        const res =
          random() < 0.6
            ? await as(seller).post(`/v1/sellers/${seller}/rates`, { ratePerTick: 1 + Math.floor(random() * 4), atTick, market })
            : await as(seller).post(`/v1/sellers/${seller}/state`, { active: random() < 0.8, busy: random() < 0.3, atTick, market });
        expect(res.status).toBe(201);
      }
    }
    const to = from + 64;
    for (const market of ['default', 'gpu-bids']) {
      const aggregate = (await as('buyer').get(`/v1/crown?market=${market}&from=${from}&to=${to}`)).body;
      const grid: any[] = [];
      let pages = 0;
      let after: number | undefined;
      do {
        const page = (await as('buyer').get(`/v1/crown/timeline?market=${market}&from=${from}&to=${to}&limit=3${after === undefined ? '' : `&after=${after}`}`)).body;
        expect(page).toMatchObject({ market, direction: market === 'default' ? 'ask' : 'bid', from, to });
        expect(page.intervals.length).toBeLessThanOrEqual(3);
        grid.push(...page.intervals);
        after = page.next;
        pages++;
      } while (after !== undefined);
      expect(pages).toBeGreaterThan(2);
      // the pages tile [from, to) with the aggregate's own intervals, with times to show
      expect(grid).toEqual(aggregate.intervals);
      expect(grid.map((iv) => iv.start)).toEqual([from, ...grid.slice(0, -1).map((iv) => iv.end)]);
      expect(grid.at(-1).end).toBe(to);
      for (const iv of grid) expect([Date.parse(iv.startAt), Date.parse(iv.endAt)]).toEqual([iv.start * 1000, iv.end * 1000]);
      // crown time from the grid, tick by tick (the sharing rule's per-tick form), is the aggregate's
      const fromGrid: Record<string, number> = {};
      for (const iv of grid) {
        for (let tick = iv.start; tick < iv.end; tick++) {
          if (iv.holders.length) for (const [seller, units] of tickShares(tick, iv.holders)) fromGrid[seller] = (fromGrid[seller] ?? 0) + units;
        }
      }
      expect(fromGrid).toEqual(aggregate.crownUnits);
    }
    // a cursor made up by hand (mid-interval) still gives the intervals that start after it
    const whole = (await as('buyer').get(`/v1/crown/timeline?market=gpu-bids&from=${from}&to=${to}&limit=1000`)).body.intervals;
    const mid = whole[1].start + 1;
    const rest = (await as('buyer').get(`/v1/crown/timeline?market=gpu-bids&from=${from}&to=${to}&limit=1000&after=${mid}`)).body;
    expect(rest.intervals).toEqual(whole.filter((iv: any) => iv.start > mid));
    expect(rest.next).toBeUndefined();
    expect((await as('buyer').get(`/v1/crown/timeline?from=${to}&to=${from}`)).status).toBe(400);
  });

  test('payee "best" follows the market named: the highest bid in a bid market, the lowest ask in the default market; the buyer\'s limit holds in both', async () => {
    for (const [seller, rate] of [['s2', 7], ['s3', 9]] as const) {
      expect((await as(seller).post(`/v1/sellers/${seller}/rates`, { ratePerTick: rate, market: 'gpu-bids' })).status).toBe(201);
      expect((await as(seller).post(`/v1/sellers/${seller}/state`, { active: true, busy: false, market: 'gpu-bids' })).status).toBe(201);
    }
    const open = (ref: string, body: object) => as('buyer').post('/v1/streams', { ref, fromAccountId: 'buyer.w', payee: 'best', maxTotal: 30, tickIntervalMs: 60_000, ...body });
    const bid = await open('best-bid', { market: 'gpu-bids', ratePerTick: 10 });
    expect(bid.status).toBe(201);
    expect(bid.body).toMatchObject({ payee: 's3', ratePerTick: 9, route: { market: 'gpu-bids', direction: 'bid', seller: 's3', holders: ['s3'], bestRate: 9 } });
    // the same ref again answers with its stream; the same ref for another market is another stream
    expect((await open('best-bid', { market: 'gpu-bids', ratePerTick: 10 })).status).toBe(200);
    expect((await open('best-bid', { ratePerTick: 10 })).status).toBe(409);
    await as('buyer').post('/v1/streams/best-bid/cancel', {});
    const pricey = await open('best-bid-low', { market: 'gpu-bids', ratePerTick: 8 });
    expect(pricey.status).toBe(422);
    expect(pricey.body.error).toMatchObject({ code: 'limit_exceeded', details: { market: 'gpu-bids', bestRate: 9, ratePerTick: 8 } });
    // the default market is unmoved by gpu-bids: s1 alone at 50 (the tests above), an ask market
    const ask = await open('best-ask', { ratePerTick: 60 });
    expect(ask.status).toBe(201);
    expect(ask.body).toMatchObject({ payee: 's1', ratePerTick: 50, route: { market: 'default', direction: 'ask', seller: 's1', bestRate: 50 } });
    await as('buyer').post('/v1/streams/best-ask/cancel', {});
  });
});
