import { runAudit } from '../../src/audit';
import { streamWorkflowId } from '../../src/domain/streams';
import { closeStream as closeLedgerStream, openStream as openLedgerStream } from '../../src/ledger/streams';
import { streamViewQuery } from '../../workflows/definitions';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';
import { sleep, testParties } from '../support/parties';

let stack: TestStack;
let admin: ReturnType<typeof api>;
const parties = testParties(() => stack);
const { as, party, account } = parties;
const view = async (ref: string) => (await admin.get(`/v1/streams/${ref}`)).body;
const ticksOf = async (ref: string): Promise<{ tick: number; amount: number }[]> =>
  (await stack.db.pool.query(`select tick, amount from stream_ticks where stream_ref = $1 order by tick`, [ref])).rows;
const tickTransfersOf = async (ref: string): Promise<{ tick: number; amount: number }[]> =>
  (await stack.db.pool.query(`select tick, amount from transfers where stream_ref = $1 and kind = 'stream_tick' order by tick`, [ref])).rows;
const eventsOf = async (ref: string, type: string): Promise<any[]> =>
  (await stack.db.pool.query(`select payload from events where subject = $1 and type = $2 order by id`, [ref, type])).rows.map((r: any) => r.payload);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const result = (ref: string) => stack.client.workflow.getHandle(streamWorkflowId(ref)).result();

const untilTicks = (ref: string, ticks: number) => parties.untilTicks(ref, ticks, undefined, 50);

/** Waits until `check` holds (polling), returning its last value. */
async function until<T>(what: string, read: () => Promise<T>, check: (v: T) => boolean, tries = 300): Promise<T> {
  for (let i = 0; i < tries; i++) {
    const v = await read();
    if (check(v)) return v;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

beforeAll(async () => {
  stack = await startTestStack();
  admin = api(stack.app, ADMIN_KEY);
  await party('buyer', 100_000);
  await party('seller');
  await party('friend', 10_000);
  await party('mallory', 1000);
});
afterEach(async () => {
  const report = await runAudit(stack.db.pool);
  expect(report.checks.filter((c) => !c.ok).map((c) => ({ name: c.name, rows: c.rows }))).toEqual([]);
  expect(report.ok).toBe(true);
});
afterAll(() => stack.stop());

const open = (by: string, body: Record<string, unknown>) =>
  as(by).post('/v1/streams', { fromAccountId: `${by}.w`, toAccountId: 'seller.w', tickIntervalMs: 250, ...body });

describe('top-ups: POST /v1/streams/:ref/deposits', () => {
  test('the payer tops up: maxTotal and the escrow hold grow by the amount; a repeat with the same key moves nothing; another body under the key is a conflict', async () => {
    const before = await account('buyer.w');
    expect((await open('buyer', { ref: 'sc-dep', ratePerTick: 10, maxTotal: 100, tickIntervalMs: 60_000 })).status).toBe(201);
    expect(await account('buyer.w')).toMatchObject({ balance: before.balance - 10, held: before.held + 90 });

    const dep = await as('buyer').post('/v1/streams/sc-dep/deposits', { fromAccountId: 'buyer.w', amount: 50 }, 'dep-1');
    expect(dep.status).toBe(201);
    expect(dep.body).toEqual({ ref: 'sc-dep', status: 'STREAMING', amount: 50, fromAccountId: 'buyer.w', maxTotal: 150, deposited: 50 });
    expect(await account('buyer.w')).toMatchObject({ balance: before.balance - 10, held: before.held + 140 });
    const { rows: hold } = await stack.db.pool.query(`select h.amount, h.captured from holds h join streams s on s.hold_id = h.id where s.ref = 'sc-dep'`);
    expect(hold[0]).toMatchObject({ amount: 150, captured: 10 });

    // same key, same body: the same receipt, no second top-up
    const again = await as('buyer').post('/v1/streams/sc-dep/deposits', { fromAccountId: 'buyer.w', amount: 50 }, 'dep-1');
    expect(again.status).toBe(201);
    expect(again.body).toEqual(dep.body);
    expect(await account('buyer.w')).toMatchObject({ balance: before.balance - 10, held: before.held + 140 });
    // same key, another body
    const conflict = await as('buyer').post('/v1/streams/sc-dep/deposits', { fromAccountId: 'buyer.w', amount: 51 }, 'dep-1');
    expect(conflict.status).toBe(409);
    expect(conflict.body.error.code).toBe('idempotency_conflict');
    expect((await view('sc-dep')).maxTotal).toBe(150);

    // the depletion view follows the new cap: (150 - 10) / 10
    expect((await view('sc-dep')).depletion).toMatchObject({ ticksLeft: 14, limitedBy: 'escrow', funds: 140 });
    const controls = (await stack.db.pool.query(`select count(*)::int as n from stream_controls where stream_ref = 'sc-dep' and action = 'deposit'`)).rows[0].n;
    expect(controls).toBe(1);
    // opening the ref again with its opening terms returns the stream (the top-up came later); the grown cap is other terms
    const reopen = await open('buyer', { ref: 'sc-dep', ratePerTick: 10, maxTotal: 100, tickIntervalMs: 60_000 });
    expect(reopen.status).toBe(200);
    expect(reopen.body).toMatchObject({ maxTotal: 150, deposited: 50 });
    expect((await open('buyer', { ref: 'sc-dep', ratePerTick: 10, maxTotal: 150, tickIntervalMs: 60_000 })).status).toBe(409);
    // two top-ups racing under one key: one movement
    const racing = await Promise.all([1, 2, 3].map(() => as('buyer').post('/v1/streams/sc-dep/deposits', { fromAccountId: 'buyer.w', amount: 25 }, 'dep-race')));
    expect(racing.map((x) => x.status)).toEqual([201, 201, 201]);
    expect(racing.map((x) => x.body.maxTotal)).toEqual([175, 175, 175]);
    expect(await account('buyer.w')).toMatchObject({ balance: before.balance - 10, held: before.held + 165 });
    await as('buyer').post('/v1/streams/sc-dep/cancel', {});
  });

  test('a third party tops up from its own account: the money moves to the payer, then into the hold; from an account not its own is 404 (not found, as a missing one); bad amounts are 400', async () => {
    const buyer0 = await account('buyer.w');
    const friend0 = await account('friend.w');
    await open('buyer', { ref: 'sc-dep3', ratePerTick: 10, maxTotal: 100, tickIntervalMs: 60_000 });
    const dep = await as('friend').post('/v1/streams/sc-dep3/deposits', { fromAccountId: 'friend.w', amount: 30 }, 'gift');
    expect(dep.status).toBe(201);
    expect(dep.body).toMatchObject({ maxTotal: 130, deposited: 30 });
    expect(await account('friend.w')).toMatchObject({ balance: friend0.balance - 30, held: 0 });
    // +30 from the friend, -10 for tick 1; the hold has 120 left of 130
    expect(await account('buyer.w')).toMatchObject({ balance: buyer0.balance + 30 - 10, held: buyer0.held + 120 });
    const moved = (await stack.db.pool.query(`select debit_account_id, credit_account_id, amount from transfers where stream_ref = 'sc-dep3' and kind = 'stream_deposit'`)).rows;
    expect(moved).toEqual([{ debit_account_id: 'friend.w', credit_account_id: 'buyer.w', amount: 30 }]);
    // the same key from the friend again: nothing moves twice
    expect((await as('friend').post('/v1/streams/sc-dep3/deposits', { fromAccountId: 'friend.w', amount: 30 }, 'gift')).body).toEqual(dep.body);
    expect((await account('friend.w')).balance).toBe(friend0.balance - 30);

    // someone else's account
    const stolen = await as('mallory').post('/v1/streams/sc-dep3/deposits', { fromAccountId: 'buyer.w', amount: 5 }, 'steal');
    expect(stolen.status).toBe(404);
    expect((await as('mallory').post('/v1/streams/sc-dep3/deposits', { fromAccountId: 'friend.w', amount: 5 }, 'steal-2')).status).toBe(404);
    for (const amount of [0, -5, 1.5, '5']) {
      const bad = await as('buyer').post('/v1/streams/sc-dep3/deposits', { fromAccountId: 'buyer.w', amount }, `bad-${amount}`);
      expect(bad.status).toBe(400);
      expect(bad.body.error.code).toBe('invalid_request');
    }
    // no idempotency key
    expect((await as('buyer').post('/v1/streams/sc-dep3/deposits', { fromAccountId: 'buyer.w', amount: 5 })).status).toBe(400);
    expect((await view('sc-dep3')).maxTotal).toBe(130);

    const receipt = (await as('buyer').post('/v1/streams/sc-dep3/cancel', {})).body;
    expect(receipt).toMatchObject({ status: 'CONFIRMED', ticks: 1, totalPaid: 10, maxTotal: 130, deposited: 30 });
    // the unused escrow (the friend's money too) goes back to the payer
    expect(await account('buyer.w')).toMatchObject({ balance: buyer0.balance + 30 - 10, held: buyer0.held });
  });

  test('topping up a closed stream is 409 invalid_state and moves nothing; a top-up the payer cannot cover is refused', async () => {
    await open('buyer', { ref: 'sc-depclosed', ratePerTick: 5, maxTotal: 50, tickIntervalMs: 60_000 });
    await as('buyer').post('/v1/streams/sc-depclosed/cancel', {});
    const friend0 = await account('friend.w');
    const buyer0 = await account('buyer.w');
    for (const [by, from] of [['buyer', 'buyer.w'], ['friend', 'friend.w']] as const) {
      const res = await as(by).post('/v1/streams/sc-depclosed/deposits', { fromAccountId: from, amount: 20 }, 'late');
      expect(res.status).toBe(409);
      expect(res.body.error.code).toBe('invalid_state');
    }
    expect(await account('friend.w')).toEqual(friend0);
    expect(await account('buyer.w')).toEqual(buyer0);
    expect((await stack.db.pool.query(`select count(*)::int as n from transfers where stream_ref = 'sc-depclosed' and kind = 'stream_deposit'`)).rows[0].n).toBe(0);

    // mallory has 1000: a top-up of 5000 from its own stream does not fit
    await open('mallory', { ref: 'sc-depbig', ratePerTick: 1, maxTotal: 100, tickIntervalMs: 60_000 });
    const m0 = await account('mallory.w');
    const big = await as('mallory').post('/v1/streams/sc-depbig/deposits', { fromAccountId: 'mallory.w', amount: 5000 }, 'big');
    expect(big.status).toBe(422);
    expect(big.body.error.code).toBe('insufficient_funds');
    expect(await account('mallory.w')).toEqual(m0);
    expect((await view('sc-depbig')).maxTotal).toBe(100);
    await as('mallory').post('/v1/streams/sc-depbig/cancel', {});
  });
});

describe('top-ups at the edges', () => {
  test('a stream at its maxTotal (completing) takes no top-up; a cap past 10^15 is refused; the longest ref, key and party id fit', async () => {
    // at the cap and still open: the moment between the last tick and the close (the ledger call, no workflow)
    await openLedgerStream(stack.db.pool, { ref: 'sc-atcap', payer: 'buyer', payee: 'seller', payerAccountId: 'buyer.w', payeeAccountId: 'seller.w', ratePerTick: 10, maxTotal: 10, tickIntervalMs: 60_000, mode: 'escrow' });
    const b0 = await account('buyer.w');
    const atCap = await as('buyer').post('/v1/streams/sc-atcap/deposits', { fromAccountId: 'buyer.w', amount: 5 }, 'atcap');
    expect(atCap).toMatchObject({ status: 409, body: { error: { code: 'invalid_state' } } });
    expect(await account('buyer.w')).toEqual(b0);
    await closeLedgerStream(stack.db.pool, { ref: 'sc-atcap', reason: 'completed', closedBy: 'system' });

    await party('p'.repeat(63), 100);
    const longParty = 'p'.repeat(63);
    const ref = 'r'.repeat(128);
    await open('buyer', { ref, ratePerTick: 1, mode: 'payg', maxTotal: 900_000_000_000_000, tickIntervalMs: 60_000 });
    const long = await as(longParty).post(`/v1/streams/${ref}/deposits`, { fromAccountId: `${longParty}.w`, amount: 40 }, 'k'.repeat(128));
    expect(long).toMatchObject({ status: 201, body: { deposited: 40, maxTotal: 900_000_000_000_040 } });
    const over = await as('buyer').post(`/v1/streams/${ref}/deposits`, { fromAccountId: 'buyer.w', amount: 200_000_000_000_000 }, 'over');
    expect(over).toMatchObject({ status: 422, body: { error: { code: 'limit_exceeded' } } });
    await as('buyer').post(`/v1/streams/${ref}/cancel`, {});
  });

  test('a depletion time past what a date can hold leaves `at` out instead of failing', async () => {
    // 10^9 ticks of a day: past year 275760
    await party('whale', 1_000_000_000);
    expect((await open('whale', { ref: 'sc-far', ratePerTick: 1, maxTotal: 1_000_000_000, tickIntervalMs: 86_400_000 })).status).toBe(201);
    const v = await as('whale').get('/v1/streams/sc-far');
    expect(v.status).toBe(200);
    expect(v.body.depletion).toMatchObject({ ticksLeft: 999_999_999, limitedBy: 'escrow', funds: 999_999_999 });
    expect(v.body.depletion.at).toBeUndefined();
    await as('whale').post('/v1/streams/sc-far/cancel', {});
  });
});

describe('pause and resume', () => {
  test('no tick is billed while paused; resuming goes on with the next tick number; double pause/resume is 409; only the payer may; cancel while paused releases the escrow', async () => {
    const before = await account('buyer.w');
    expect((await open('buyer', { ref: 'sc-pause', ratePerTick: 5, maxTotal: 10_000, tickIntervalMs: 200 })).status).toBe(201);
    await untilTicks('sc-pause', 3);

    // the payee and a stranger may not pause
    expect((await as('seller').post('/v1/streams/sc-pause/pause')).status).toBe(403);
    // the payee sees the stream and is refused; a stranger does not see it at all
    expect((await as('mallory').post('/v1/streams/sc-pause/pause')).status).toBe(404);
    // a running stream cannot be resumed
    const notPaused = await as('buyer').post('/v1/streams/sc-pause/resume');
    expect(notPaused.status).toBe(409);
    expect(notPaused.body.error.code).toBe('invalid_state');

    // two pauses at once: one pauses, the other is refused
    const both = await Promise.all([as('buyer').post('/v1/streams/sc-pause/pause'), as('buyer').post('/v1/streams/sc-pause/pause')]);
    expect(both.map((b) => b.status).sort()).toEqual([200, 409]);
    const paused = both.find((b) => b.status === 200)!;
    expect(both.find((b) => b.status === 409)!.body.error.code).toBe('invalid_state');
    expect(paused.body).toMatchObject({ ref: 'sc-pause', status: 'PAUSED', pauses: [{ by: 'buyer' }] });
    expect(paused.body.pauses[0].resumedAt).toBeUndefined();
    const atPause = await ticksOf('sc-pause');
    const n = atPause.length;
    expect(n).toBeGreaterThanOrEqual(3);
    expect(paused.body.ticks).toBe(n);

    const again = await as('buyer').post('/v1/streams/sc-pause/pause');
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe('invalid_state');
    expect((await as('seller').post('/v1/streams/sc-pause/resume')).status).toBe(403);

    // the live view while paused: pausedAt, no next tick, nothing accrues, no depletion time
    const v = await as('seller').get('/v1/streams/sc-pause');
    expect(v.status).toBe(200);
    expect(v.body.status).toBe('PAUSED');
    expect(v.body.pausedAt).toEqual(expect.any(String));
    // and the list says so, and finds it under status=paused
    const listed = (await as('seller').get('/v1/streams?status=paused')).body.streams;
    expect(listed.map((x: any) => [x.ref, x.status])).toContainEqual(['sc-pause', 'PAUSED']);
    expect(listed.every((x: any) => x.status === 'PAUSED')).toBe(true);
    expect(v.body.nextTickAt).toBeUndefined();
    expect(v.body.accruedUnbilled).toBe(0);
    expect(v.body.depletion).toMatchObject({ limitedBy: 'escrow', ticksLeft: Math.ceil((10_000 - 5 * n) / 5) });
    expect(v.body.depletion.at).toBeUndefined();

    const q = await stack.client.workflow.getHandle(streamWorkflowId('sc-pause')).query(streamViewQuery);
    expect(q).toMatchObject({ status: 'PAUSED', paused: true, ticks: n });
    expect(q.nextTickAtMs).toBeUndefined();

    // several intervals pass: nothing is billed
    await sleep(1500);
    expect(await ticksOf('sc-pause')).toEqual(atPause);
    expect(await tickTransfersOf('sc-pause')).toHaveLength(n);
    expect((await view('sc-pause')).ticks).toBe(n);
    expect((await stack.db.pool.query(`select count(*)::int as n from stream_skips where stream_ref = 'sc-pause'`)).rows[0].n).toBe(0);

    const resumed = await as('buyer').post('/v1/streams/sc-pause/resume');
    expect(resumed.status).toBe(200);
    expect(resumed.body.pauses).toEqual([{ pausedAt: paused.body.pauses[0].pausedAt, resumedAt: expect.any(String), by: 'buyer' }]);
    expect((await view('sc-pause')).pausedAt).toBeUndefined();
    expect((await view('sc-pause')).nextTickAt).toEqual(expect.any(String));
    // the time paused pushes every later tick back: the next one is due that much later
    const row = (await stack.db.pool.query(`select paused_ms, opened_at, last_tick from streams where ref = 'sc-pause'`)).rows[0];
    const ctl = (await stack.db.pool.query(`select action, at from stream_controls where stream_ref = 'sc-pause' and action in ('pause', 'resume') order by id`)).rows;
    const pausedFor = ctl[1].at.getTime() - ctl[0].at.getTime();
    expect(Number(row.paused_ms)).toBeGreaterThanOrEqual(pausedFor - 50);
    expect(Number(row.paused_ms)).toBeLessThanOrEqual(pausedFor + 50);
    const live = await view('sc-pause');
    if (live.lastTick === row.last_tick) {
      expect(Date.parse(live.nextTickAt)).toBe(row.opened_at.getTime() + row.last_tick * 200 + Number(row.paused_ms));
    }
    const resumeAgain = await as('buyer').post('/v1/streams/sc-pause/resume');
    expect(resumeAgain.status).toBe(409);
    expect(resumeAgain.body.error.code).toBe('invalid_state');

    await untilTicks('sc-pause', n + 3);
    // the numbering goes on: no gap for the time paused
    const after = await ticksOf('sc-pause');
    expect(after.map((t) => t.tick)).toEqual(range(1, after.length));

    // pause again, and cancel while paused
    const second = await as('buyer').post('/v1/streams/sc-pause/pause');
    expect(second.status).toBe(200);
    const m = (await ticksOf('sc-pause')).length;
    await sleep(600);
    expect(await ticksOf('sc-pause')).toHaveLength(m);
    const cancel = await as('buyer').post('/v1/streams/sc-pause/cancel', {});
    expect(cancel.status).toBe(200);
    const r = cancel.body;
    expect(r).toMatchObject({ status: 'CONFIRMED', reason: 'cancelled', closedBy: 'buyer', ticks: m, totalPaid: 5 * m });
    expect(r.pauses).toEqual([
      { pausedAt: expect.any(String), resumedAt: expect.any(String), by: 'buyer' },
      { pausedAt: expect.any(String), by: 'buyer' },
    ]);
    const final = await ticksOf('sc-pause');
    expect(final.map((t) => t.tick)).toEqual(range(1, m));
    expect(final.every((t) => t.amount === 5)).toBe(true);
    expect(await account('buyer.w')).toMatchObject({ balance: before.balance - 5 * m, held: before.held });
    const { rows } = await stack.db.pool.query(`select h.status, h.captured, h.released from holds h join streams s on s.hold_id = h.id where s.ref = 'sc-pause'`);
    expect(rows[0]).toMatchObject({ status: 'released', captured: 5 * m, released: 10_000 - 5 * m });
    expect((await stack.db.pool.query(`select paused_at from streams where ref = 'sc-pause'`)).rows[0].paused_at).toBeNull();

    // a closed stream can be neither paused nor resumed
    for (const action of ['pause', 'resume']) {
      const res = await as('buyer').post(`/v1/streams/sc-pause/${action}`);
      expect(res.status).toBe(409);
      expect(res.body.error.code).toBe('invalid_state');
    }
    const events = (await stack.db.pool.query(`select type from events where subject = 'sc-pause' and type in ('stream.pause', 'stream.resume') order by id`)).rows.map((e: any) => e.type);
    expect(events).toEqual(['stream.pause', 'stream.resume', 'stream.pause']);
  });
});

describe('pause and liveness', () => {
  test('a pause longer than the grace period is no partition: the liveness clock restarts at the resume, and runs on after it', async () => {
    for (const p of ['buyer', 'seller']) await as(p).post(`/v1/parties/${p}/heartbeat`);
    expect((await open('buyer', { ref: 'sc-live', ratePerTick: 1, maxTotal: 1000, tickIntervalMs: 200, livenessTimeoutMs: 2_000, graceMs: 3_000 })).status).toBe(201);
    await as('buyer').post('/v1/streams/sc-live/pause');
    // no heartbeats, longer than the grace period (the timeout is well above the dev server's ~1 s timer latency)
    await sleep(4_000);
    const atResume = (await as('buyer').post('/v1/streams/sc-live/resume')).body.ticks;
    // billed after the resume, not closed as a partition
    const after = await untilTicks('sc-live', atResume + 1);
    expect(after).toMatchObject({ status: 'STREAMING' });
    expect(after.ticks).toBeGreaterThan(atResume);
    // still no heartbeats: past the timeout ticks are skipped, past the grace the stream closes
    const receipt = await result('sc-live');
    expect(receipt).toMatchObject({ reason: 'partition', closedBy: 'system' });
    const skips = (await stack.db.pool.query(`select count(*)::int as n from stream_skips where stream_ref = 'sc-live'`)).rows[0].n;
    expect(skips).toBeGreaterThan(0);
  });
});

describe('rate changes', () => {
  test('the payer changes the rate from the next tick on; the receipt keeps the rate history; the payee may not', async () => {
    await open('buyer', { ref: 'sc-rate', ratePerTick: 4, maxTotal: 10_000, tickIntervalMs: 200 });
    await untilTicks('sc-rate', 2);
    const byPayee = await as('seller').post('/v1/streams/sc-rate/rate', { ratePerTick: 100 });
    expect(byPayee.status).toBe(403);
    expect((await as('mallory').post('/v1/streams/sc-rate/rate', { ratePerTick: 100 })).status).toBe(404);
    for (const ratePerTick of [0, -1, 2.5]) expect((await as('buyer').post('/v1/streams/sc-rate/rate', { ratePerTick })).status).toBe(400);

    const changed = await as('buyer').post('/v1/streams/sc-rate/rate', { ratePerTick: 9 });
    expect(changed.status).toBe(200);
    expect(changed.body.ratePerTick).toBe(9);
    expect(changed.body.proposedRatePerTick).toBeUndefined();
    const rates = changed.body.rates;
    expect(rates).toHaveLength(2);
    expect(rates[0]).toEqual({ ratePerTick: 4, fromTick: 1, at: changed.body.openedAt, by: 'buyer' });
    expect(rates[1]).toMatchObject({ ratePerTick: 9, by: 'buyer', at: expect.any(String) });
    const from = rates[1].fromTick;
    expect(from).toBeGreaterThanOrEqual(3);
    const v = await view('sc-rate');
    expect(v.depletion.ticksLeft).toBe(Math.ceil((10_000 - v.totalPaid) / 9));
    expect((await open('buyer', { ref: 'sc-rate', ratePerTick: 4, maxTotal: 10_000, tickIntervalMs: 200 })).status).toBe(200);
    expect((await open('buyer', { ref: 'sc-rate', ratePerTick: 9, maxTotal: 10_000, tickIntervalMs: 200 })).status).toBe(409);

    await untilTicks('sc-rate', from + 2);
    const r = (await as('seller').post('/v1/streams/sc-rate/cancel', {})).body;
    expect(r.rates).toEqual(rates);
    const ticks = await tickTransfersOf('sc-rate');
    expect(ticks.map((t) => t.tick)).toEqual(range(1, r.ticks));
    for (const t of ticks) expect(t.amount).toBe(t.tick < from ? 4 : 9);
    expect(r.totalPaid).toBe(4 * (from - 1) + 9 * (r.ticks - from + 1));
    expect((await account('seller.w')).balance).toBeGreaterThanOrEqual(r.totalPaid);
  });

  test("rateConsent 'payee': the payer's change is a proposal (202) until the payee accepts the same rate; the payer cannot accept", async () => {
    const res = await open('buyer', { ref: 'sc-consent', ratePerTick: 3, maxTotal: 10_000, tickIntervalMs: 200, rateConsent: 'payee' });
    expect(res.status).toBe(201);
    await untilTicks('sc-consent', 2);
    const proposed = await as('buyer').post('/v1/streams/sc-consent/rate', { ratePerTick: 8 });
    expect(proposed.status).toBe(202);
    expect(proposed.body).toMatchObject({ ratePerTick: 3, proposedRatePerTick: 8 });
    expect(proposed.body.rates).toEqual([{ ratePerTick: 3, fromTick: 1, at: proposed.body.openedAt, by: 'buyer' }]);
    expect((await view('sc-consent')).proposedRatePerTick).toBe(8);
    const atProposal = (await view('sc-consent')).ticks;

    // ticks go on at the old rate
    await untilTicks('sc-consent', atProposal + 2);
    expect((await tickTransfersOf('sc-consent')).every((t) => t.amount === 3)).toBe(true);

    expect((await as('buyer').post('/v1/streams/sc-consent/rate/accept', { ratePerTick: 8 })).status).toBe(403);
    expect((await as('mallory').post('/v1/streams/sc-consent/rate/accept', { ratePerTick: 8 })).status).toBe(404);
    expect((await as('seller').post('/v1/streams/sc-consent/rate', { ratePerTick: 1 })).status).toBe(403);
    const wrong = await as('seller').post('/v1/streams/sc-consent/rate/accept', { ratePerTick: 7 });
    expect(wrong.status).toBe(409);
    expect(wrong.body.error.code).toBe('invalid_state');
    expect((await view('sc-consent')).ratePerTick).toBe(3);

    const accepted = await as('seller').post('/v1/streams/sc-consent/rate/accept', { ratePerTick: 8 });
    expect(accepted.status).toBe(200);
    expect(accepted.body.ratePerTick).toBe(8);
    expect(accepted.body.proposedRatePerTick).toBeUndefined();
    expect(accepted.body.rates).toHaveLength(2);
    expect(accepted.body.rates[1]).toMatchObject({ ratePerTick: 8, by: 'buyer', agreedBy: 'seller' });
    const from = accepted.body.rates[1].fromTick;
    expect((await view('sc-consent')).proposedRatePerTick).toBeUndefined();
    // accepting again: no proposal left
    expect((await as('seller').post('/v1/streams/sc-consent/rate/accept', { ratePerTick: 8 })).status).toBe(409);

    await untilTicks('sc-consent', from + 2);
    const r = (await as('buyer').post('/v1/streams/sc-consent/cancel', {})).body;
    const ticks = await tickTransfersOf('sc-consent');
    expect(ticks.map((t) => t.tick)).toEqual(range(1, r.ticks));
    for (const t of ticks) expect(t.amount).toBe(t.tick < from ? 3 : 8);
    expect(r.totalPaid).toBe(3 * (from - 1) + 8 * (r.ticks - from + 1));
    expect(r.rates).toEqual(accepted.body.rates);
  });
});

describe('open-ended payg streams', () => {
  test('a payg stream without maxTotal runs until the payer runs out; escrow without maxTotal is 400', async () => {
    await party('payg1', 50);
    const res = await open('payg1', { ref: 'sc-open', ratePerTick: 7, mode: 'payg', tickIntervalMs: 200 });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ ref: 'sc-open', mode: 'payg', status: 'STREAMING', ticks: 1, totalPaid: 7 });
    expect('maxTotal' in res.body).toBe(false);
    const r = await result('sc-open');
    expect(r).toMatchObject({ status: 'CONFIRMED', reason: 'insufficient_funds', ticks: 7, totalPaid: 49 });
    expect('maxTotal' in r).toBe(false);
    expect(await account('payg1.w')).toMatchObject({ balance: 1, held: 0 });
    expect((await tickTransfersOf('sc-open')).map((t) => t.tick)).toEqual(range(1, 7));

    const escrow = await open('buyer', { ref: 'sc-open-escrow', ratePerTick: 7, tickIntervalMs: 200 });
    expect(escrow.status).toBe(400);
    expect(escrow.body.error.code).toBe('invalid_request');
    const escrow2 = await open('buyer', { ref: 'sc-open-escrow', ratePerTick: 7, mode: 'escrow', tickIntervalMs: 200 });
    expect(escrow2.status).toBe(400);
    expect((await admin.get('/v1/streams/sc-open-escrow')).status).toBe(404);
  });

  test('an open-ended payg stream runs until cancelled; a third party can top up its payer; the payer cannot top it up from its own account', async () => {
    await party('payg2', 1000);
    await open('payg2', { ref: 'sc-open2', ratePerTick: 10, mode: 'payg', tickIntervalMs: 200 });
    const v = await untilTicks('sc-open2', 3);
    expect(v.maxTotal).toBeUndefined();
    expect(v.depletion.limitedBy).toBe('balance');
    const self = await as('payg2').post('/v1/streams/sc-open2/deposits', { fromAccountId: 'payg2.w', amount: 10 }, 'self');
    expect(self.status).toBe(400);
    const friend0 = await account('friend.w');
    const gift = await as('friend').post('/v1/streams/sc-open2/deposits', { fromAccountId: 'friend.w', amount: 100 }, 'gift-open');
    expect(gift.status).toBe(201);
    expect(gift.body.maxTotal).toBeUndefined();
    expect(gift.body.deposited).toBe(100);
    expect((await account('friend.w')).balance).toBe(friend0.balance - 100);
    const r = (await as('payg2').post('/v1/streams/sc-open2/cancel', {})).body;
    expect(r).toMatchObject({ status: 'CONFIRMED', reason: 'cancelled', closedBy: 'payg2', totalPaid: 10 * r.ticks });
    expect(await account('payg2.w')).toMatchObject({ balance: 1000 + 100 - 10 * r.ticks, held: 0 });
    expect((await tickTransfersOf('sc-open2')).map((t) => t.tick)).toEqual(range(1, r.ticks));
  });
});

describe('depletion and stream.low_balance', () => {
  test('the view says when the money runs out: escrow by what is left of the cap, payg by the payer’s available balance', async () => {
    const e = await open('buyer', { ref: 'sc-depl-e', ratePerTick: 10, maxTotal: 100, tickIntervalMs: 60_000 });
    const ev = await view('sc-depl-e');
    expect(ev.depletion).toEqual({ ticksLeft: 9, limitedBy: 'escrow', funds: 90, at: new Date(Date.parse(e.body.openedAt) + 9 * 60_000).toISOString() });
    // a partial last tick counts: 93 left at 7 per tick is 14 ticks (13 of 7 and one of 2)
    await open('buyer', { ref: 'sc-depl-e2', ratePerTick: 7, maxTotal: 100, tickIntervalMs: 60_000 });
    expect((await view('sc-depl-e2')).depletion).toMatchObject({ ticksLeft: 14, limitedBy: 'escrow', funds: 93 });

    await party('dpayer', 100);
    const p = await open('dpayer', { ref: 'sc-depl-p', ratePerTick: 10, maxTotal: 1000, mode: 'payg', tickIntervalMs: 60_000 });
    expect(p.status).toBe(201);
    // the cap leaves 990 but the payer has 90: 9 ticks
    expect((await view('sc-depl-p')).depletion).toEqual({ ticksLeft: 9, limitedBy: 'balance', funds: 90, at: new Date(Date.parse(p.body.openedAt) + 9 * 60_000).toISOString() });
    // an open-ended one: the balance alone
    await party('dpayer2', 55);
    await open('dpayer2', { ref: 'sc-depl-p2', ratePerTick: 10, mode: 'payg', tickIntervalMs: 60_000 });
    expect((await view('sc-depl-p2')).depletion).toMatchObject({ ticksLeft: 4, limitedBy: 'balance', funds: 45 });
    // a payg stream whose cap is nearer than the balance: limited by the cap
    await party('dpayer3', 10_000);
    await open('dpayer3', { ref: 'sc-depl-p3', ratePerTick: 10, maxTotal: 50, mode: 'payg', tickIntervalMs: 60_000 });
    expect((await view('sc-depl-p3')).depletion).toMatchObject({ ticksLeft: 4, limitedBy: 'cap', funds: 40 });

    for (const [ref, by] of [['sc-depl-e', 'buyer'], ['sc-depl-e2', 'buyer'], ['sc-depl-p', 'dpayer'], ['sc-depl-p2', 'dpayer2'], ['sc-depl-p3', 'dpayer3']] as const) {
      await as(by).post(`/v1/streams/${ref}/cancel`, {});
    }
    expect((await view('sc-depl-e')).depletion).toBeUndefined();
    for (const ref of ['sc-depl-e', 'sc-depl-e2', 'sc-depl-p', 'sc-depl-p2', 'sc-depl-p3']) expect(await eventsOf(ref, 'stream.low_balance')).toEqual([]);
  });

  test('stream.low_balance fires exactly once when 3 ticks (the default) or fewer are left', async () => {
    await open('buyer', { ref: 'sc-low', ratePerTick: 10, maxTotal: 100, tickIntervalMs: 200 });
    const r = await result('sc-low');
    expect(r).toMatchObject({ status: 'CONFIRMED', reason: 'completed', ticks: 10, totalPaid: 100 });
    // tick 7 leaves 30: three ticks
    expect(await eventsOf('sc-low', 'stream.low_balance')).toEqual([{ ref: 'sc-low', ticksLeft: 3, ratePerTick: 10, capLeft: 30 }]);
  });

  test('stream.low_balance fires at the lowBalanceTicks given at open, and again once a top-up has run low again', async () => {
    await open('buyer', { ref: 'sc-low2', ratePerTick: 10, maxTotal: 100, tickIntervalMs: 250, lowBalanceTicks: 5 });
    await until('the first low_balance', () => eventsOf('sc-low2', 'stream.low_balance'), (e) => e.length === 1);
    const dep = await as('buyer').post('/v1/streams/sc-low2/deposits', { fromAccountId: 'buyer.w', amount: 100 }, 'refill');
    expect(dep.status).toBe(201);
    expect(dep.body.maxTotal).toBe(200);
    const r = await result('sc-low2');
    expect(r).toMatchObject({ status: 'CONFIRMED', reason: 'completed', ticks: 20, totalPaid: 200 });
    const warned = await eventsOf('sc-low2', 'stream.low_balance');
    expect(warned).toEqual([
      { ref: 'sc-low2', ticksLeft: 5, ratePerTick: 10, capLeft: 50 },
      { ref: 'sc-low2', ticksLeft: 5, ratePerTick: 10, capLeft: 50 },
    ]);
    // the first at tick 5 (paid 50 of 100), the second at tick 15 (paid 150 of 200)
    const ticksAt = (await stack.db.pool.query(
      `select (select max((t.payload->>'tick')::int) from events t where t.subject = e.subject and t.type = 'stream.tick' and t.id < e.id) as tick
         from events e where e.subject = 'sc-low2' and e.type = 'stream.low_balance' order by e.id`,
    )).rows.map((x: any) => x.tick);
    expect(ticksAt).toEqual([5, 15]);
  });

  test('a payg stream warns by the payer’s balance', async () => {
    await party('lowpayg', 100);
    await open('lowpayg', { ref: 'sc-lowp', ratePerTick: 10, mode: 'payg', tickIntervalMs: 200 });
    const r = await result('sc-lowp');
    expect(r).toMatchObject({ status: 'CONFIRMED', reason: 'insufficient_funds', ticks: 10, totalPaid: 100 });
    // tick 7 leaves 30 available: three ticks
    expect(await eventsOf('sc-lowp', 'stream.low_balance')).toEqual([{ ref: 'sc-lowp', ticksLeft: 3, ratePerTick: 10, available: 30 }]);
    expect(await account('lowpayg.w')).toMatchObject({ balance: 0, held: 0 });
  });
});
