import { runAudit, WORKFLOWS_CHECK } from '../../src/audit';
import { createAccount } from '../../src/ledger/accounts';
import { deposit, withdraw } from '../../src/ledger/transfers';
import { createTestDatabase, type TestDatabase } from '../support/db';

let db: TestDatabase;

const PARTIES = 40;
const DEPOSITS = 200;

beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(() => db.drop());

const ids = Array.from({ length: PARTIES }, (_, i) => `p${String(i).padStart(2, '0')}`);

test('the migrator holds the world as 8 stripe accounts per currency, stripe 0 the first world account', async () => {
  const { rows } = await db.pool.query<{ id: string }>(`select id from accounts where kind = 'world' and currency = 'UNIT' order by id`);
  expect(rows.map((r) => r.id)).toEqual(['world', ...Array.from({ length: 7 }, (_, i) => `world.${i + 1}`)]);
});

test('200 concurrent deposits and withdrawals from 40 parties all commit over several world stripes, and every currency still sums to zero', async () => {
  await db.pool.query(`insert into parties (id, name) select id, id from unnest($1::text[]) as id`, [ids]);
  for (const id of ids) await createAccount(db.pool, { id, ownerId: id, kind: 'user' });
  const { rows: before } = await db.pool.query<{ sum: number }>(`select sum(balance)::bigint as sum from accounts where kind = 'world'`);

  // deposit i pays party i mod 40 an amount of i + 1; every fifth also withdraws 1
  const moves = Array.from({ length: DEPOSITS }, (_, i) => ({ accountId: ids[i % PARTIES]!, amount: i + 1 }));
  const deposits = await Promise.all(moves.map((m, i) => deposit(db.pool, { key: `dep-${i}`, ...m })));
  const withdrawals = await Promise.all(
    moves.filter((_, i) => i % 5 === 0).map((m, i) => withdraw(db.pool, { key: `wd-${i}`, accountId: m.accountId, amount: 1 })),
  );

  expect(deposits).toHaveLength(DEPOSITS);
  const expected = new Map<string, number>();
  for (const m of moves) expected.set(m.accountId, (expected.get(m.accountId) ?? 0) + m.amount);
  for (const [i, m] of moves.entries()) if (i % 5 === 0) expected.set(m.accountId, expected.get(m.accountId)! - 1);
  const { rows: balances } = await db.pool.query<{ id: string; balance: number }>(`select id, balance from accounts where id = any($1)`, [ids]);
  expect(new Map(balances.map((r) => [r.id, r.balance]))).toEqual(expected);

  // the world side is several stripes, and the world's balance is their sum
  const worldSides = new Set([...deposits.map((t) => t.debitAccountId), ...withdrawals.map((t) => t.creditAccountId)]);
  expect(worldSides.size).toBeGreaterThan(1);
  const { rows: world } = await db.pool.query<{ sum: number }>(`select sum(balance)::bigint as sum from accounts where kind = 'world'`);
  const moved = [...expected.values()].reduce((a, b) => a + b, 0);
  expect(world[0]!.sum).toBe(before[0]!.sum - moved);
  const { rows: unbalanced } = await db.pool.query(`select currency from accounts group by currency having sum(balance) <> 0`);
  expect(unbalanced).toEqual([]);

  const report = await runAudit(db.pool);
  expect(report.checks.filter((c) => !c.ok && c.name !== WORKFLOWS_CHECK)).toEqual([]);
});

test('a replayed deposit returns its first transfer, whichever stripe that took', async () => {
  const first = await deposit(db.pool, { key: 'replay-me', accountId: ids[0]!, amount: 7 });
  const again = await deposit(db.pool, { key: 'replay-me', accountId: ids[0]!, amount: 7 });
  expect(again).toEqual(first);
  await expect(deposit(db.pool, { key: 'replay-me', accountId: ids[0]!, amount: 8 })).rejects.toMatchObject({ code: 'idempotency_conflict' });
});

test('a deposit into a world stripe is refused', async () => {
  await expect(deposit(db.pool, { key: 'into-world', accountId: 'world.3', amount: 5 })).rejects.toMatchObject({ code: 'invalid_request' });
});
