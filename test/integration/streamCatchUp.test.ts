import { streamWorkflowId } from '../../src/domain/streams';
import { BILLING_CLOCK_PATCH } from '../../workflows/stream';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';

/**
 * A stream that falls behind (its worker was down, a billing transaction was held
 * up) bills the ticks that came due at once: the billing clock skips a row another
 * transaction holds and, once it is free, bills every tick due by then in one batch.
 * The stream's own workflow waits on no timer at all.
 */
let stack: TestStack;
let admin: ReturnType<typeof api>;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const TICK_INTERVAL_MS = 200;
const HELD_MS = 3_000;
/** Generous for a loaded machine (~1-4 s here); with a timer per overdue tick the stream only falls further behind. */
const CATCH_UP_WITHIN_MS = 10_000;

beforeAll(async () => {
  stack = await startTestStack();
  admin = api(stack.app, ADMIN_KEY);
  const buyer = await admin.post('/v1/parties', { id: 'buyer', name: 'buyer' });
  await api(stack.app, buyer.body.apiKey).post('/v1/accounts', { id: 'buyer.w' });
  const seller = await admin.post('/v1/parties', { id: 'seller', name: 'seller' });
  await api(stack.app, seller.body.apiKey).post('/v1/accounts', { id: 'seller.w' });
  await admin.post('/v1/deposits', { accountId: 'buyer.w', amount: 100_000 }, 'fund-buyer');
});
afterAll(() => stack.stop());

/** Ticks due by now (tick 1 at open) minus the last tick billed. */
async function behind(ref: string): Promise<number> {
  const { rows } = await stack.db.pool.query(
    `select floor(extract(epoch from clock_timestamp() - opened_at) * 1000 / tick_interval_ms)::int + 1 - last_tick as n from streams where ref = $1`,
    [ref],
  );
  return rows[0].n;
}

test('a stream held up for 3 s bills the ticks that came due at once and is level with the clock again within a moment', async () => {
  const opened = await admin.post('/v1/streams', { ref: 'st-late', fromAccountId: 'buyer.w', toAccountId: 'seller.w', ratePerTick: 1, maxTotal: 100_000, tickIntervalMs: TICK_INTERVAL_MS });
  expect(opened.status).toBe(201);

  // the next billing transaction waits on the stream row for HELD_MS: ~15 ticks come due meanwhile
  const blocker = await stack.db.pool.connect();
  try {
    await blocker.query('begin');
    await blocker.query(`select 1 from streams where ref = 'st-late' for update`);
    await sleep(HELD_MS);
    expect(await behind('st-late')).toBeGreaterThanOrEqual(HELD_MS / TICK_INTERVAL_MS - 2);
    await blocker.query('commit');
  } finally {
    blocker.release();
  }

  // level again (at most the tick in flight behind)
  const released = Date.now();
  let lag = await behind('st-late');
  while (lag > 1 && Date.now() - released < CATCH_UP_WITHIN_MS) {
    await sleep(20);
    lag = await behind('st-late');
  }
  const caughtUpMs = Date.now() - released;
  expect(lag).toBeLessThanOrEqual(1);

  const handle = stack.client.workflow.getHandle(streamWorkflowId('st-late'));
  const receipt = (await api(stack.app, ADMIN_KEY).post('/v1/streams/st-late/cancel', {})).body;
  expect(receipt).toMatchObject({ status: 'CONFIRMED', reason: 'cancelled' });
  const ticks = (await stack.db.pool.query(`select tick from stream_ticks where stream_ref = 'st-late' order by tick`)).rows.map((r) => r.tick);
  expect(ticks).toEqual(Array.from({ length: receipt.ticks }, (_, i) => i + 1));
  expect(receipt.totalPaid).toBe(receipt.ticks);

  // billed by the clock: the stream's workflow took the clocked path and started no timer
  const events = (await handle.fetchHistory()).events ?? [];
  const patches = events.flatMap((e) => {
    const data = e.markerRecordedEventAttributes?.details?.['patch-data']?.payloads?.[0]?.data;
    return data ? [JSON.parse(Buffer.from(data).toString('utf8')).id] : [];
  });
  expect(patches).toContain(BILLING_CLOCK_PATCH);
  const timers = events.filter((e) => e.timerStartedEventAttributes).length;
  expect(timers).toBe(0);
  console.log(`catch-up: ${HELD_MS / TICK_INTERVAL_MS} ticks came due while billing was held up; level with the clock ${caughtUpMs} ms after; ${receipt.ticks} ticks on ${timers} timers`);
});
