import { billTick } from '../../src/ledger/streams';
import { streamWorkflowId } from '../../src/domain/streams';
import { streamViewQuery } from '../../workflows/definitions';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';
import { sleep, testParties } from '../support/parties';

let stack: TestStack;
let admin: ReturnType<typeof api>;
const { as, party, account, untilTicks } = testParties(() => stack);
const transfersOf = async (ref: string) =>
  (await stack.db.pool.query(`select tick, amount from transfers where stream_ref = $1 and kind = 'stream_tick' order by tick`, [ref])).rows;

beforeAll(async () => {
  stack = await startTestStack();
  admin = api(stack.app, ADMIN_KEY);
  await party('buyer', 100_000);
  await party('seller');
  await party('poor', 15);
  await party('mallory', 1000);
});
afterAll(() => stack.stop());

const open = (by: string, body: Record<string, unknown>) =>
  as(by).post('/v1/streams', { fromAccountId: `${by}.w`, toAccountId: 'seller.w', tickIntervalMs: 300, ...body });

describe('streams on a real Temporal dev server', () => {
  test('the first tick is billed before open returns; ticks follow; the payer cancels; the receipt and balances match to the unit', async () => {
    const before = await account('buyer.w');
    const opened = await open('buyer', { ref: 'st-payer', ratePerTick: 7, maxTotal: 1000 });
    expect(opened.status).toBe(201);
    expect(opened.body).toMatchObject({ ref: 'st-payer', status: 'STREAMING', ticks: 1, totalPaid: 7 });
    // escrow: maxTotal held at open, every tick captured from it. Read in one statement (one
    // snapshot) with the ticks billed so far: on a loaded machine tick 2 may already have come.
    const { rows: [now] } = await stack.db.pool.query(
      `select a.balance, a.held, (select count(*) from transfers t where t.stream_ref = 'st-payer' and t.kind = 'stream_tick')::int as ticks
         from accounts a where a.id = 'buyer.w'`,
    );
    expect(now.ticks).toBeGreaterThanOrEqual(1);
    expect(now).toMatchObject({ balance: before.balance - 7 * now.ticks, held: 1000 - 7 * now.ticks });
    await untilTicks('st-payer', 3);
    const cancel = await as('buyer').post('/v1/streams/st-payer/cancel', { reason: 'done' });
    expect(cancel.status).toBe(200);
    const r = cancel.body;
    expect(r).toMatchObject({ ref: 'st-payer', status: 'CONFIRMED', payer: 'buyer', payee: 'seller', reason: 'cancelled', closedBy: 'buyer' });
    expect(r.ticks).toBeGreaterThanOrEqual(3);
    expect(r.totalPaid).toBe(7 * r.ticks);
    // the receipt says what the escrow gave back, and the tick interval it billed on
    expect(r).toMatchObject({ escrowReturned: 1000 - r.totalPaid, tickIntervalMs: expect.any(Number) });
    const ticks = await transfersOf('st-payer');
    expect(ticks.map((t: any) => t.tick)).toEqual(Array.from({ length: r.ticks }, (_, i) => i + 1));
    expect(ticks.every((t: any) => t.amount === 7)).toBe(true);
    // the unused escrow is released: nothing stays held, the payer lost exactly what was billed
    expect(await account('buyer.w')).toMatchObject({ balance: before.balance - r.totalPaid, held: 0 });
    expect((await account('seller.w')).balance).toBe(r.totalPaid);
    const events = (await stack.db.pool.query(`select type from events where subject = 'st-payer' order by id`)).rows.map((e: any) => e.type);
    expect(events[0]).toBe('stream.opened');
    expect(events.filter((t: string) => t === 'stream.tick')).toHaveLength(r.ticks);
    expect(events.at(-1)).toBe('stream.closed');
    // the tick list, paged two at a time by tick number, is the ledger's ticks with the running total
    const listed: any[] = [];
    for (let after = 0; ; ) {
      const page = await as('seller').get(`/v1/streams/st-payer/ticks?after=${after}&limit=2`);
      expect(page.status).toBe(200);
      listed.push(...page.body.ticks);
      if (page.body.next === undefined) break;
      after = page.body.next;
    }
    expect(listed.map((t) => [t.tick, t.amount, t.paid])).toEqual(ticks.map((t: any, i: number) => [t.tick, 7, 7 * (i + 1)]));
    expect(listed.at(-1).paid).toBe(r.totalPaid);
    expect((await as('mallory').get('/v1/streams/st-payer/ticks')).status).toBe(404);
    // cancelling twice returns the same receipt and moves nothing
    const again = await as('seller').post('/v1/streams/st-payer/cancel', {});
    expect(again.body).toEqual(r);
    // a tick that comes late (a retried activity, a stale timer) commits nothing after close
    expect(await billTick(stack.db.pool, 'st-payer', r.ticks + 1)).toEqual({ kind: 'closed', tick: r.ticks + 1 });
    expect(await transfersOf('st-payer')).toHaveLength(r.ticks);
  });

  test('the payee can close the stream too, and the cancel wakes the workflow at once, not at the next tick', async () => {
    await open('buyer', { ref: 'st-payee', ratePerTick: 5, maxTotal: 500, tickIntervalMs: 60_000 });
    const t0 = Date.now();
    const cancel = await as('seller').post('/v1/streams/st-payee/cancel', {});
    // the next tick is a minute away; the receipt comes long before it
    expect(Date.now() - t0).toBeLessThan(30_000);
    expect(cancel.body).toMatchObject({ status: 'CONFIRMED', reason: 'cancelled', closedBy: 'seller', ticks: 1, totalPaid: 5 });
  });

  test('the payer cannot release or capture its stream’s escrow through the holds API; the stream still settles it', async () => {
    await open('buyer', { ref: 'st-escrow', ratePerTick: 4, maxTotal: 400, tickIntervalMs: 60_000 });
    const { rows } = await stack.db.pool.query(`select hold_id from streams where ref = 'st-escrow'`);
    const holdId = rows[0].hold_id;
    const held = (await as('buyer').get(`/v1/holds/${holdId}`)).body;
    expect(held).toMatchObject({ amount: 400, captured: 4, status: 'open' });
    const release = await as('buyer').post(`/v1/holds/${holdId}/release`, {}, 'grab-escrow');
    expect(release.status).toBe(403);
    expect(release.body.error).toMatchObject({ code: 'forbidden', details: { stream: 'st-escrow' } });
    const capture = await as('buyer').post(`/v1/holds/${holdId}/capture`, { amount: 10, toAccountId: 'buyer.w' }, 'grab-escrow-2');
    expect(capture.status).toBe(403);
    expect((await as('buyer').get(`/v1/holds/${holdId}`)).body).toEqual(held);
    const receipt = (await as('buyer').post('/v1/streams/st-escrow/cancel', {})).body;
    expect(receipt).toMatchObject({ status: 'CONFIRMED', ticks: 1, totalPaid: 4 });
    expect((await as('buyer').get(`/v1/holds/${holdId}`)).body).toMatchObject({ captured: 4, released: 396, status: 'released' });
  });

  test('the last tick is partial and the stream completes exactly at maxTotal', async () => {
    await open('buyer', { ref: 'st-cap', ratePerTick: 30, maxTotal: 100, tickIntervalMs: 200 });
    const result = await stack.client.workflow.getHandle(streamWorkflowId('st-cap')).result();
    expect(result).toMatchObject({ status: 'CONFIRMED', reason: 'completed', ticks: 4, totalPaid: 100, escrowReturned: 0 });
    expect((await transfersOf('st-cap')).map((t: any) => t.amount)).toEqual([30, 30, 30, 10]);
    expect((await stack.db.pool.query(`select held from accounts where id = 'buyer.w'`)).rows[0].held).toBe(0);
  });

  test('in payg mode a tick the payer cannot cover closes the stream with insufficient_funds', async () => {
    await open('poor', { ref: 'st-payg', ratePerTick: 6, maxTotal: 1000, tickIntervalMs: 200, mode: 'payg' });
    const result = await stack.client.workflow.getHandle(streamWorkflowId('st-payg')).result();
    expect(result).toMatchObject({ status: 'CONFIRMED', reason: 'insufficient_funds', ticks: 2, totalPaid: 12 });
    expect(result.escrowReturned).toBeUndefined();
    expect(await account('poor.w')).toMatchObject({ balance: 3, held: 0 });
  });

  test("a heartbeat is a party's own; the admin's for a party that does not exist is a 404 and records nothing", async () => {
    const own = await as('buyer').post('/v1/parties/buyer/heartbeat');
    expect(own.status).toBe(200);
    expect(own.body).toMatchObject({ party: 'buyer', lastSeenAt: expect.any(String) });
    // another party's heartbeat is not found, as a missing party's
    expect((await as('buyer').post('/v1/parties/seller/heartbeat')).status).toBe(404);
    const ghost = await admin.post('/v1/parties/ghost/heartbeat');
    expect(ghost.status).toBe(404);
    expect(ghost.body.error).toMatchObject({ code: 'not_found', message: 'party ghost not found' });
    const rows = await stack.db.pool.query(`select 1 from party_heartbeats where party_id = 'ghost' union all select 1 from party_heartbeat_log where party_id = 'ghost'`);
    expect(rows.rowCount).toBe(0);
  });

  test('a stream the payer cannot pay at open fails at once and charges nothing', async () => {
    const before = await account('poor.w');
    const res = await open('poor', { ref: 'st-fail', ratePerTick: 1, maxTotal: 50 });
    expect(res.status).toBe(422);
    expect(res.body.error).toMatchObject({ code: 'insufficient_funds', details: { stream: { status: 'FAILED' } } });
    expect(await account('poor.w')).toEqual(before);
    expect((await admin.get('/v1/streams/st-fail')).body).toMatchObject({ status: 'FAILED', totalPaid: 0, ticks: 0 });
    // asking again answers the same: 422, the failed stream, still nothing charged
    const again = await open('poor', { ref: 'st-fail', ratePerTick: 1, maxTotal: 50 });
    expect(again).toMatchObject({ status: 422, body: { error: { code: 'insufficient_funds', details: { stream: { ref: 'st-fail', status: 'FAILED' } } } } });
    expect(await account('poor.w')).toEqual(before);
  });

  test('opening the same ref again returns the stream; other terms under that ref are a conflict', async () => {
    const first = await open('buyer', { ref: 'st-same', ratePerTick: 2, maxTotal: 4, tickIntervalMs: 200 });
    expect(first.status).toBe(201);
    await stack.client.workflow.getHandle(streamWorkflowId('st-same')).result();
    const again = await open('buyer', { ref: 'st-same', ratePerTick: 2, maxTotal: 4, tickIntervalMs: 200 });
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ ref: 'st-same', totalPaid: 4, status: 'CONFIRMED' });
    expect((await open('buyer', { ref: 'st-same', ratePerTick: 3, maxTotal: 4, tickIntervalMs: 200 })).status).toBe(409);
    expect(await transfersOf('st-same')).toHaveLength(2);
  });

  test('the live view shows paid so far, the next tick time and the accrued but unbilled amount', async () => {
    expect((await open('buyer', { ref: 'st-view', ratePerTick: 1000, maxTotal: 50_000, tickIntervalMs: 10_000 })).status).toBe(201);
    await sleep(1_000);
    const view = (await as('seller').get('/v1/streams/st-view')).body;
    expect(view).toMatchObject({ status: 'STREAMING', ticks: 1, totalPaid: 1000, lastTick: 1, tickIntervalMs: 10_000 });
    expect(Date.parse(view.nextTickAt) - Date.parse(view.openedAt)).toBe(10_000);
    // about a tenth of the interval has passed: ~100 of the next 1000 accrued
    expect(view.accruedUnbilled).toBeGreaterThanOrEqual(90);
    expect(view.accruedUnbilled).toBeLessThan(1000);
    // the workflow's own status query agrees, and turns CONFIRMED once closed
    const handle = stack.client.workflow.getHandle(streamWorkflowId('st-view'));
    expect(await handle.query(streamViewQuery)).toMatchObject({ status: 'STREAMING', paid: 1000, ticks: 1, nextTickAtMs: Date.parse(view.nextTickAt) });
    await as('buyer').post('/v1/streams/st-view/cancel', {});
    expect(await handle.query(streamViewQuery)).toMatchObject({ status: 'CONFIRMED', paid: 1000 });
  });

  test('only the payer and payee see or close a stream: to anyone else it, its payer account and its parties are not found (404)', async () => {
    await open('buyer', { ref: 'st-private', ratePerTick: 1, maxTotal: 100, tickIntervalMs: 60_000 });
    expect((await as('mallory').get('/v1/streams/st-private')).status).toBe(404);
    expect((await as('mallory').post('/v1/streams/st-private/cancel', {})).status).toBe(404);
    expect((await as('mallory').post('/v1/streams', { ref: 'st-mallory', fromAccountId: 'buyer.w', toAccountId: 'mallory.w', ratePerTick: 1, maxTotal: 9, tickIntervalMs: 300 })).status).toBe(404);
    expect((await as('mallory').post('/v1/parties/buyer/heartbeat')).status).toBe(404);
    await as('buyer').post('/v1/streams/st-private/cancel', {});
  });

  test('no tick is billed while a party is silent; past the grace period the stream closes with partition', async () => {
    await party('pbuyer', 10_000);
    await party('pseller');
    const beat = (p: string) => as(p).post(`/v1/parties/${p}/heartbeat`);
    await beat('pbuyer');
    await beat('pseller');
    const res = await as('pbuyer').post('/v1/streams', {
      ref: 'st-part', fromAccountId: 'pbuyer.w', toAccountId: 'pseller.w', ratePerTick: 10, maxTotal: 10_000,
      tickIntervalMs: 200, livenessTimeoutMs: 500, graceMs: 1500,
    });
    expect(res.status).toBe(201);
    // both alive for a while: ticks are billed
    for (let i = 0; i < 4; i++) {
      await Promise.all([beat('pbuyer'), beat('pseller')]);
      await sleep(200);
    }
    // the seller goes silent; the buyer keeps beating
    const silentFrom = Date.now();
    let receipt: any;
    for (let i = 0; i < 60 && !receipt; i++) {
      await beat('pbuyer');
      await sleep(100);
      const view = (await admin.get('/v1/streams/st-part')).body;
      if (view.status !== 'STREAMING') receipt = view;
    }
    expect(receipt).toMatchObject({ status: 'CONFIRMED', reason: 'partition' });
    const billed = (await stack.db.pool.query(`select tick, due_at, payee_seen_at from stream_ticks where stream_ref = 'st-part' order by tick`)).rows;
    // nothing was billed that came due once the seller had been silent for the liveness timeout
    for (const t of billed) expect(t.due_at.getTime() - t.payee_seen_at.getTime()).toBeLessThan(500);
    expect(billed.filter((t: any) => t.due_at.getTime() > silentFrom + 500 + 100)).toEqual([]);
    const skipped = (await stack.db.pool.query(`select count(*)::int as n from stream_skips where stream_ref = 'st-part'`)).rows[0].n;
    expect(skipped).toBeGreaterThan(0);
    expect(await account('pbuyer.w')).toMatchObject({ held: 0, balance: 10_000 - receipt.totalPaid });
  });

  test('a payer’s open streams can be listed from Temporal by search attribute', async () => {
    await open('buyer', { ref: 'st-search', ratePerTick: 1, maxTotal: 100, tickIntervalMs: 60_000 });
    const query = `SluicePayer = "buyer" AND SluiceKind = "stream" AND SluiceStatus = "STREAMING"`;
    let ids: string[] = [];
    for (let i = 0; i < 50 && !ids.includes(streamWorkflowId('st-search')); i++) {
      ids = [];
      for await (const wf of stack.client.workflow.list({ query })) ids.push(wf.workflowId);
      await sleep(200);
    }
    expect(ids).toContain(streamWorkflowId('st-search'));
    expect(ids).not.toContain(streamWorkflowId('st-payer')); // closed: status CONFIRMED
    // the UI shows who pays whom at what rate on the workflow itself, not only in its memo
    const described = await stack.client.workflow.getHandle(streamWorkflowId('st-search')).describe();
    expect(await described.staticSummary()).toBe('stream st-search: buyer → seller, 1/tick every 60000 ms, max 100 (escrow)');
    expect(await described.staticDetails()).toContain('**ratePerTick**: 1');
    await as('buyer').post('/v1/streams/st-search/cancel', {});
  });
});
