import { runAudit } from '../../src/audit';
import { createAccount } from '../../src/ledger/accounts';
import { createParty } from '../../src/ledger/parties';
import { billTick, openStream } from '../../src/ledger/streams';
import { deposit } from '../../src/ledger/transfers';
import { createTestDatabase, type TestDatabase } from '../support/db';

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
