import { runAudit } from '../../src/audit';
import { createAccount } from '../../src/ledger/accounts';
import { createParty } from '../../src/ledger/parties';
import { billDueTicks } from '../../src/ledger/billingClock';
import { billTick, openStream, recordHeartbeat } from '../../src/ledger/streams';
import { deposit } from '../../src/ledger/transfers';
import { createTestDatabase, type TestDatabase } from '../support/db';
import { sleep } from '../support/parties';

/**
 * No overbill on partition, at the boundary: a party last seen almost exactly the
 * liveness timeout before the tick came due. The ledger decides on times in whole
 * milliseconds while PostgreSQL keeps microseconds, so a heartbeat a hair more than
 * the timeout before the due time must not be billed, and the auditor (which judges
 * at the due time too) must agree with every decision.
 */
const TIMEOUT_MS = 50;
const ATTEMPTS = 300;
let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
  await createParty(db.pool, { id: 'payer', name: 'payer' });
  await createParty(db.pool, { id: 'payee', name: 'payee' });
  await createAccount(db.pool, { id: 'payer.w', ownerId: 'payer', kind: 'user' });
  await createAccount(db.pool, { id: 'payee.w', ownerId: 'payee', kind: 'user' });
  await deposit(db.pool, { key: 'fund', accountId: 'payer.w', amount: 1_000_000 });
});
afterAll(() => db?.drop());

test('ticks billed right at the liveness timeout pass the auditor: none was billed after a silence longer than the timeout', async () => {
  await openStream(db.pool, {
    ref: 'edge', payer: 'payer', payee: 'payee', payerAccountId: 'payer.w', payeeAccountId: 'payee.w',
    ratePerTick: 1, maxTotal: 1_000_000, tickIntervalMs: 1_000, mode: 'payg', livenessTimeoutMs: TIMEOUT_MS,
  });
  const outcomes: Record<string, number> = {};
  for (let tick = 2; tick < 2 + ATTEMPTS; tick++) {
    // the payer at the tick's due time, the payee about the timeout before it (a hair under or over)
    await db.pool.query(
      `with due as (select to_timestamp((epoch_ms(opened_at) + ($2::int - 1) * tick_interval_ms) / 1000.0) as at from streams where ref = 'edge')
       insert into party_heartbeat_log (party_id, seen_at) select 'payer', at from due union all select 'payee', at - $1 * interval '1 millisecond' from due`,
      // 48.5–50.5 ms: whole milliseconds of silence 49 (billed) or 50–51 (skipped)
      [TIMEOUT_MS - 1.5 + Math.random() * 2, tick],
    );
    const outcome = await billTick(db.pool, 'edge', tick);
    outcomes[outcome.kind] = (outcomes[outcome.kind] ?? 0) + 1;
  }
  // both sides of the boundary were exercised
  expect(outcomes.billed).toBeGreaterThan(0);
  expect(outcomes.skipped).toBeGreaterThan(0);
  const overbill = (await runAudit(db.pool)).checks.find((c) => c.name === 'streams.no_overbill_on_partition')!;
  expect(overbill).toMatchObject({ ok: true, violations: 0 });
});

/**
 * A heartbeat stamped before a tick's due time may still be committing when the tick
 * is decided (a loaded server). Deciding on what was committed would skip a tick the
 * history later shows both parties were seen for: the tick must wait for it instead.
 */
describe('a heartbeat still committing when its tick is decided', () => {
  const LIVENESS_MS = 1_000;
  const INTERVAL_MS = 2_000;
  // parties of their own: the boundary test above logged heartbeats at due times minutes ahead
  beforeAll(async () => {
    for (const id of ['buyer', 'seller']) {
      await createParty(db.pool, { id, name: id });
      await createAccount(db.pool, { id: `${id}.w`, ownerId: id, kind: 'user' });
    }
    await deposit(db.pool, { key: 'fund-buyer', accountId: 'buyer.w', amount: 1_000_000 });
  });
  const terms = { payer: 'buyer', payee: 'seller', payerAccountId: 'buyer.w', payeeAccountId: 'seller.w', ratePerTick: 7, maxTotal: 1_000_000, mode: 'payg' as const, livenessTimeoutMs: LIVENESS_MS };

  /** Opens `ref` (tick 1 billed at the opening), and when tick 2 is 500 ms from due, both parties heartbeat in a transaction left open. */
  async function heartbeatInFlight(ref: string) {
    await openStream(db.pool, { ref, ...terms, tickIntervalMs: INTERVAL_MS });
    const [{ due_ms }] = (await db.pool.query(`select epoch_ms(opened_at) + $2::int as due_ms from streams where ref = $1`, [ref, INTERVAL_MS])).rows;
    await sleep(Number(due_ms) - 500 - Date.now());
    const beating = await db.pool.connect();
    await beating.query('begin');
    await recordHeartbeat(beating, 'buyer');
    await recordHeartbeat(beating, 'seller');
    await sleep(Number(due_ms) + 100 - Date.now());
    return { beating, dueMs: Number(due_ms) };
  }

  /** The billing waits on the heartbeats' lock: the failure (a decision with the heartbeat uncommitted) was about to happen. */
  const untilBillingWaits = async () => {
    for (let i = 0; i < 100; i++) {
      const { rows } = await db.pool.query(`select count(*)::int as n from pg_locks where locktype = 'advisory' and not granted and database = (select oid from pg_database where datname = current_database())`);
      if (rows[0].n > 0) return;
      await sleep(50);
    }
    throw new Error('the billing never waited for the heartbeat in flight');
  };

  async function expectBilledOnTheHeartbeat(ref: string, dueMs: number) {
    const tick = (await db.pool.query(`select tick, amount, epoch_ms(payee_seen_at) as payee_seen_ms from stream_ticks where stream_ref = $1 and tick = 2`, [ref])).rows[0];
    expect(tick).toMatchObject({ tick: 2, amount: 7 });
    // the decision rests on the heartbeat that was still committing: stamped ~500 ms before the due time
    expect(dueMs - Number(tick.payee_seen_ms)).toBeGreaterThan(0);
    expect(dueMs - Number(tick.payee_seen_ms)).toBeLessThan(LIVENESS_MS);
    expect((await db.pool.query(`select count(*)::int as n from stream_skips where stream_ref = $1`, [ref])).rows[0].n).toBe(0);
  }

  test('one tick at a time (billTick): it waits for the heartbeat, then bills the tick', async () => {
    const { beating, dueMs } = await heartbeatInFlight('inflight-one');
    try {
      const billing = billTick(db.pool, 'inflight-one', 2);
      await untilBillingWaits();
      await beating.query('commit');
      expect(await billing).toMatchObject({ kind: 'billed', tick: 2, amount: 7 });
    } finally {
      await beating.query('rollback').catch(() => undefined);
      beating.release();
    }
    await expectBilledOnTheHeartbeat('inflight-one', dueMs);
  });

  test("in the billing clock's batch: it waits for the heartbeat, then bills the tick", async () => {
    const { beating, dueMs } = await heartbeatInFlight('inflight-batch');
    try {
      const billing = billDueTicks(db.pool, { shard: 0, shards: 1, rowsMax: 100, roundsMax: 1 });
      await untilBillingWaits();
      await beating.query('commit');
      // (the first test's stream has a tick due by now too, and its parties are seen as well)
      expect(await billing).toMatchObject({ skipped: 0, halted: [] });
    } finally {
      await beating.query('rollback').catch(() => undefined);
      beating.release();
    }
    await expectBilledOnTheHeartbeat('inflight-batch', dueMs);
    const overbill = (await runAudit(db.pool)).checks.find((c) => c.name === 'streams.no_overbill_on_partition')!;
    expect(overbill).toMatchObject({ ok: true, violations: 0 });
  });

  test('a party truly silent is still skipped, without waiting on anyone', async () => {
    await openStream(db.pool, { ref: 'truly-silent', ...terms, tickIntervalMs: 1_200 });
    await sleep(1_300);
    expect(await billTick(db.pool, 'truly-silent', 2)).toMatchObject({ kind: 'skipped', tick: 2 });
  });
});
