import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';
import { runAudit } from '../../src/audit';
import { createAccount } from '../../src/ledger/accounts';
import { billTick, closeStream, openStream } from '../../src/ledger/streams';
import { captureHold, placeHold } from '../../src/ledger/holds';
import { deposit } from '../../src/ledger/transfers';
import { openGrant, payForGrant, setTier, settleGrant } from '../../src/ledger/grants';
import { activateSubaccount, allocateSubaccount, fundSubaccount, holdCollateral, registerEntity } from '../../src/ledger/entities';
import { DEFAULT_TIER_BUDGETS, utcDay } from '../../src/domain/grants';
import { createTestDatabase, type TestDatabase } from '../support/db';

let db: TestDatabase;
const failing = async () => (await runAudit(db.pool)).checks.filter((c) => !c.ok).map((c) => c.name);

/** `sluice audit` against the test database: its exit code and output. */
function cliAudit(): { code: number; out: string } {
  try {
    const out = execFileSync(process.execPath, ['--import', 'tsx', resolve(__dirname, '../../src/cli.ts'), 'audit'], {
      env: { ...process.env, DATABASE_URL: db.url },
      encoding: 'utf8',
    });
    return { code: 0, out };
  } catch (e) {
    const err = e as { status: number; stdout: string };
    return { code: err.status, out: err.stdout };
  }
}

/** Corrupts the books the way only a bug or a hand edit could: triggers off, straight SQL. */
async function corrupt(sql: string, params: unknown[] = []) {
  const c = await db.pool.connect();
  try {
    await c.query(`set session_replication_role = replica`);
    await c.query(sql, params);
  } finally {
    await c.query(`set session_replication_role = origin`);
    c.release();
  }
}

beforeAll(async () => {
  db = await createTestDatabase();
  await db.pool.query(`insert into parties (id, name) values ('p', 'payer'), ('q', 'payee')`);
  await createAccount(db.pool, { id: 'p.w', ownerId: 'p', kind: 'user' });
  await createAccount(db.pool, { id: 'q.w', ownerId: 'q', kind: 'user' });
  await deposit(db.pool, { key: 'd', accountId: 'p.w', amount: 10_000 });
  const hold = await placeHold(db.pool, { key: 'h', accountId: 'p.w', amount: 100 });
  await captureHold(db.pool, { key: 'hc', holdId: hold.id, amount: 40, toAccountId: 'q.w' });
  const stream = { payer: 'p', payee: 'q', payerAccountId: 'p.w', payeeAccountId: 'q.w', ratePerTick: 10, maxTotal: 1000, tickIntervalMs: 1000 };
  await openStream(db.pool, { ...stream, ref: 's1', mode: 'escrow', livenessTimeoutMs: 60_000 });
  await billTick(db.pool, 's1', 2);
  await closeStream(db.pool, { ref: 's1', reason: 'cancelled', closedBy: 'p' });
  await openStream(db.pool, { ...stream, ref: 's2', mode: 'payg' });
  // a free job of 30 that cost 20, and a gate job paid 15 that cost 12
  await setTier(db.pool, 'p', 'trusted');
  const job = { payer: 'p', payerAccountId: 'p.w', requestHash: 'h', work: { description: 'audit' }, paymentTimeoutMs: 60_000 };
  const day = utcDay(Date.now());
  await openGrant(db.pool, { request: { ...job, jobId: 'g1', estimatedCost: 30 }, day, budgets: DEFAULT_TIER_BUDGETS });
  await settleGrant(db.pool, { jobId: 'g1', actualCost: 20 });
  await openGrant(db.pool, { request: { ...job, jobId: 'g2', estimatedCost: 15 }, day, budgets: { ...DEFAULT_TIER_BUDGETS, trusted: 0 } });
  await payForGrant(db.pool, { jobId: 'g2', day, budgets: { ...DEFAULT_TIER_BUDGETS, trusted: 0 } });
  await settleGrant(db.pool, { jobId: 'g2', actualCost: 12 });
  // an entity with one active subaccount (collateral 100 held, funded 50)
  await registerEntity(db.pool, { id: 'ent', name: 'ent', collateral: 100, funding: 50, webhookUrls: [] });
  await deposit(db.pool, { key: 'd-ent', accountId: 'ent.main', amount: 1000 });
  const { id: sub } = await allocateSubaccount(db.pool, { entityId: 'ent', requestId: 'r1', limits: { cap: 5, perHour: 5 } });
  await holdCollateral(db.pool, sub);
  await fundSubaccount(db.pool, sub);
  await activateSubaccount(db.pool, sub);
});
afterAll(() => db.drop());

describe('the auditor', () => {
  test('a ledger moved only by Sluice passes every check, through the function and through `sluice audit`', async () => {
    const report = await runAudit(db.pool);
    expect(report.checks.length).toBeGreaterThanOrEqual(12);
    expect(report.checks.filter((c) => !c.ok)).toEqual([]);
    const cli = cliAudit();
    expect(cli.code).toBe(0);
    expect(cli.out).toContain('audit: PASS');
  });

  test('a balance changed behind the ledger’s back breaks conservation, and `sluice audit` exits 1 naming the rows', async () => {
    await corrupt(`update accounts set balance = balance + 5 where id = 'q.w'`);
    expect(await failing()).toEqual(['conservation.sum_zero', 'conservation.balance_is_sum_of_transfers']);
    const cli = cliAudit();
    expect(cli.code).toBe(1);
    expect(cli.out).toMatch(/FAIL conservation\.sum_zero/);
    expect(cli.out).toContain('"id":"q.w"');
    await corrupt(`update accounts set balance = balance - 5 where id = 'q.w'`);
    expect(await failing()).toEqual([]);
  });

  test('a tick debited after its stream closed is reported as a drain after close (and as paid ≠ ticks)', async () => {
    await corrupt(
      `insert into transfers (idempotency_key, kind, debit_account_id, credit_account_id, amount, stream_ref, tick, created_at)
       values ('late', 'stream_tick', 'p.w', 'q.w', 10, 's1', 99, now() + interval '1 hour')`,
    );
    expect(await failing()).toEqual(
      expect.arrayContaining(['streams.no_drain_after_close', 'streams.paid_is_sum_of_ticks', 'conservation.balance_is_sum_of_transfers']),
    );
    const drain = (await runAudit(db.pool)).checks.find((c) => c.name === 'streams.no_drain_after_close')!;
    expect(drain.rows[0]).toMatchObject({ stream_ref: 's1', tick: 99 });
  });

  test("an escrow hold that disagrees with its stream's maxTotal (a top-up half done) is reported", async () => {
    const already = await failing(); // earlier tests leave their corruptions
    await corrupt(`update streams set max_total = max_total + 7 where ref = 's1'`);
    expect((await failing()).filter((c) => !already.includes(c))).toEqual(['streams.escrow_matches_cap']);
    const row = (await runAudit(db.pool)).checks.find((c) => c.name === 'streams.escrow_matches_cap')!.rows[0];
    expect(row).toMatchObject({ ref: 's1' });
    await corrupt(`update streams set max_total = max_total - 7 where ref = 's1'`);
    expect(await failing()).toEqual(already);
  });

  test('a tick billed while a party was silent past the liveness timeout is reported as an overbill on partition', async () => {
    await corrupt(
      `insert into stream_ticks (stream_ref, tick, amount, transfer_id, billed_at, payer_seen_at, payee_seen_at)
       select 's1', 50, 10, id, now(), now(), now() - interval '2 minutes' from transfers where idempotency_key = 'late'`,
    );
    expect(await failing()).toContain('streams.no_overbill_on_partition');
  });

  test('an account whose held disagrees with its open holds is reported; an over-captured hold cannot even be written', async () => {
    await corrupt(`update accounts set held = held + 1 where id = 'p.w'`);
    expect(await failing()).toContain('holds.held_matches_open_holds');
    // CHECK constraints still apply with triggers off: the database itself refuses it
    await expect(corrupt(`update holds set captured = amount + 1 where idempotency_key = 'h'`)).rejects.toMatchObject({ code: '23514' });
  });

  test('grants: a day over budget, a grant that disagrees with its hold and transfers, a pool that absorbed more than it got', async () => {
    expect((await db.pool.query(`select status, absorbed, paid, refunded, credited from grants order by job_id`)).rows).toEqual([
      { status: 'settled', absorbed: 20, paid: 0, refunded: 0, credited: 0 },
      { status: 'settled', absorbed: 0, paid: 15, refunded: 3, credited: 1 },
    ]);
    await corrupt(`update grants set budget = 10 where job_id = 'g1'`);
    expect(await failing()).toContain('grants.within_daily_budget');
    await corrupt(`update grants set absorbed = absorbed - 1, returned = returned + 1 where job_id = 'g1'`);
    expect(await failing()).toEqual(expect.arrayContaining(['grants.reservation_matches_hold', 'grants.money_matches_transfers']));
    await corrupt(`update accounts set balance = balance - 25 where id = 'sluice.pool'`);
    expect(await failing()).toContain('grants.pool_conservation');
    // the CHECKs hold even with triggers off: a credit that is not a tenth of what was kept cannot be written
    await expect(corrupt(`update grants set credited = 5 where job_id = 'g2'`)).rejects.toMatchObject({ code: '23514' });
  });

  test('subaccounts: a live one whose collateral is gone, an ended one that still holds money', async () => {
    expect(await failing()).not.toEqual(expect.arrayContaining(['subaccounts.collateral_held_while_live']));
    await corrupt(`update holds set released = amount, status = 'released' where idempotency_key = 'sub:ent/1:collateral'`);
    expect(await failing()).toContain('subaccounts.collateral_held_while_live');
    await corrupt(`update subaccounts set status = 'eliminated', ended_at = now() where id = 'ent/1'`);
    expect(await failing()).toContain('subaccounts.ended_empty');
    await corrupt(`update entities set next_seq = 1 where id = 'ent'`);
    expect(await failing()).toContain('subaccounts.within_cap_and_sequence');
  });
});
