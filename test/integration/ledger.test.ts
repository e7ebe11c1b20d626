import pg from 'pg';
import fc from 'fast-check';
import { createTestDatabase, type TestDatabase } from '../support/db';
import { untilTailsCaughtUp } from '../support/tails';
import { createAccount, getAccount } from '../../src/ledger/accounts';
import { deposit, transfer, withdraw } from '../../src/ledger/transfers';
import { captureHold, getHold, placeHold, releaseHold } from '../../src/ledger/holds';
import { listEvents } from '../../src/ledger/events';
import { SluiceError } from '../../src/domain/errors';

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
  await db.pool.query(`insert into parties (id, name) values ('alice', 'Alice'), ('bob', 'Bob')`);
});
afterAll(() => db.drop());

async function sumOfBalances(): Promise<number> {
  const { rows } = await db.pool.query('select coalesce(sum(balance), 0)::bigint as s from accounts');
  return rows[0].s;
}

const sumOfKind = async (kind: string): Promise<number> =>
  (await db.pool.query(`select coalesce(sum(balance), 0)::bigint as s from accounts where kind = $1`, [kind])).rows[0].s;
const worldBalance = () => sumOfKind('world');
const poolBalance = () => sumOfKind('pool');

const codeOf = (p: Promise<unknown>) =>
  p.then(
    () => 'ok',
    (e: unknown) => (e instanceof SluiceError ? e.code : `unexpected: ${(e as Error).message}`),
  );

describe('ledger', () => {
  test('deposit, transfer and withdrawal keep the sum of all balances at zero', async () => {
    const a = await createAccount(db.pool, { id: 'alice.main', ownerId: 'alice', kind: 'user' });
    const b = await createAccount(db.pool, { id: 'bob.main', ownerId: 'bob', kind: 'user' });
    // the world (the sum of its stripes) already paid for the free-tier pool's seed (migrations)
    const worldBefore = await worldBalance();
    expect(worldBefore).toBe(-(await poolBalance()));
    await deposit(db.pool, { key: 'dep-1', accountId: a.id, amount: 1000 });
    await transfer(db.pool, { key: 't-1', kind: 'transfer', debitAccountId: a.id, creditAccountId: b.id, amount: 300 });
    await withdraw(db.pool, { key: 'w-1', accountId: b.id, amount: 100 });
    expect((await getAccount(db.pool, a.id)).balance).toBe(700);
    expect((await getAccount(db.pool, b.id)).balance).toBe(200);
    expect(await worldBalance()).toBe(worldBefore - 900);
    expect(await sumOfBalances()).toBe(0);
  });

  test('same key and same request returns the first transfer; a different request is a conflict', async () => {
    const req = { key: 'idem-1', kind: 'transfer', debitAccountId: 'alice.main', creditAccountId: 'bob.main', amount: 5 };
    const first = await transfer(db.pool, req);
    const again = await transfer(db.pool, { ...req });
    expect(again).toEqual(first);
    expect(await codeOf(transfer(db.pool, { ...req, amount: 6 }))).toBe('idempotency_conflict');
    const { rows } = await db.pool.query(`select count(*)::int as n from transfers where idempotency_key = 'idem-1'`);
    expect(rows[0].n).toBe(1);
    expect((await getAccount(db.pool, 'alice.main')).balance).toBe(695);
  });

  test('concurrent requests with one key move the money once', async () => {
    const req = { key: 'idem-race', kind: 'transfer', debitAccountId: 'alice.main', creditAccountId: 'bob.main', amount: 7 };
    const results = await Promise.all(Array.from({ length: 10 }, () => transfer(db.pool, req)));
    expect(new Set(results.map((r) => r.id)).size).toBe(1);
    expect((await getAccount(db.pool, 'alice.main')).balance).toBe(688);
  });

  test('an overdraft is refused and changes nothing', async () => {
    const before = await getAccount(db.pool, 'alice.main');
    expect(await codeOf(transfer(db.pool, { key: 'over', kind: 'transfer', debitAccountId: 'alice.main', creditAccountId: 'bob.main', amount: 10_000 }))).toBe(
      'insufficient_funds',
    );
    expect(await getAccount(db.pool, 'alice.main')).toEqual(before);
    // the refused key is not burned: the same key succeeds once the request fits
    await transfer(db.pool, { key: 'over', kind: 'transfer', debitAccountId: 'alice.main', creditAccountId: 'bob.main', amount: 1 });
    expect((await getAccount(db.pool, 'alice.main')).balance).toBe(before.balance - 1);
  });

  test('the database refuses an overdraft even when application code is bypassed', async () => {
    const c = await db.pool.connect();
    try {
      await expect(
        c.query(`insert into transfers (idempotency_key, kind, debit_account_id, credit_account_id, amount)
                 values ('raw-over', 'transfer', 'bob.main', 'alice.main', 1000000)`),
      ).rejects.toMatchObject({ constraint: 'available_not_negative' });
      await expect(c.query(`update accounts set balance = -1 where id = 'bob.main'`)).rejects.toMatchObject({
        constraint: 'available_not_negative',
      });
      await expect(c.query(`update transfers set amount = 1 where idempotency_key = 't-1'`)).rejects.toThrow(/append-only/);
      await expect(c.query(`delete from events`)).rejects.toThrow(/append-only/);
      await expect(
        c.query(`insert into transfers (idempotency_key, kind, debit_account_id, credit_account_id, amount)
                 values ('raw-zero', 'transfer', 'alice.main', 'bob.main', 0)`),
      ).rejects.toMatchObject({ code: '23514' });
    } finally {
      c.release();
    }
    expect(await sumOfBalances()).toBe(0);
  });

  test('a hold captured in part and then released leaves exactly the right balances', async () => {
    await createAccount(db.pool, { id: 'alice.hold', ownerId: 'alice', kind: 'user' });
    await createAccount(db.pool, { id: 'bob.hold', ownerId: 'bob', kind: 'user' });
    await deposit(db.pool, { key: 'dep-hold', accountId: 'alice.hold', amount: 500 });
    const hold = await placeHold(db.pool, { key: 'h-1', accountId: 'alice.hold', amount: 200 });
    expect(await getAccount(db.pool, 'alice.hold')).toMatchObject({ balance: 500, held: 200, available: 300 });
    // held funds cannot be spent
    expect(await codeOf(transfer(db.pool, { key: 'h-spend', kind: 'transfer', debitAccountId: 'alice.hold', creditAccountId: 'bob.hold', amount: 301 }))).toBe(
      'insufficient_funds',
    );
    const { hold: afterCapture, transfer: t } = await captureHold(db.pool, { key: 'h-1-cap', holdId: hold.id, amount: 120, toAccountId: 'bob.hold' });
    expect(t).toMatchObject({ kind: 'capture', amount: 120, holdId: hold.id });
    expect(afterCapture).toMatchObject({ captured: 120, remaining: 80, status: 'open' });
    expect(await getAccount(db.pool, 'alice.hold')).toMatchObject({ balance: 380, held: 80, available: 300 });
    const released = await releaseHold(db.pool, { key: 'h-1-rel', holdId: hold.id });
    expect(released).toMatchObject({ captured: 120, released: 80, remaining: 0, status: 'released' });
    expect(await getAccount(db.pool, 'alice.hold')).toMatchObject({ balance: 380, held: 0, available: 380 });
    expect(await getAccount(db.pool, 'bob.hold')).toMatchObject({ balance: 120, held: 0 });
    // capturing twice or releasing twice is refused (new keys: a replayed key returns the first result)
    expect(await codeOf(captureHold(db.pool, { key: 'h-1-cap-2', holdId: hold.id, amount: 1, toAccountId: 'bob.hold' }))).toBe('hold_closed');
    expect(await codeOf(releaseHold(db.pool, { key: 'h-1-rel-2', holdId: hold.id }))).toBe('hold_closed');
    expect(await releaseHold(db.pool, { key: 'h-1-rel', holdId: hold.id })).toEqual(released);
  });

  test('a single-capture hold refuses a second capture; a capture cannot exceed the hold', async () => {
    const hold = await placeHold(db.pool, { key: 'h-2', accountId: 'alice.hold', amount: 50 });
    expect(await codeOf(captureHold(db.pool, { key: 'h-2-big', holdId: hold.id, amount: 51, toAccountId: 'bob.hold' }))).toBe('amount_exceeds_hold');
    await captureHold(db.pool, { key: 'h-2-cap', holdId: hold.id, amount: 10, toAccountId: 'bob.hold' });
    expect(await codeOf(captureHold(db.pool, { key: 'h-2-cap-b', holdId: hold.id, amount: 10, toAccountId: 'bob.hold' }))).toBe('hold_closed');
    await releaseHold(db.pool, { key: 'h-2-rel', holdId: hold.id });
    expect(await getAccount(db.pool, 'alice.hold')).toMatchObject({ balance: 370, held: 0 });
  });

  test('a multi-capture hold captures per tick until fully captured, then closes itself', async () => {
    const hold = await placeHold(db.pool, { key: 'h-3', accountId: 'alice.hold', amount: 30, multiCapture: true });
    for (let i = 1; i <= 3; i++) await captureHold(db.pool, { key: `h-3-t${i}`, holdId: hold.id, amount: 10, toAccountId: 'bob.hold' });
    expect(await getHold(db.pool, hold.id)).toMatchObject({ captured: 30, remaining: 0, status: 'captured' });
    expect(await codeOf(releaseHold(db.pool, { key: 'h-3-rel', holdId: hold.id }))).toBe('hold_closed');
  });

  test('the database refuses capturing more than a hold has, even bypassing application code', async () => {
    const hold = await placeHold(db.pool, { key: 'h-raw', accountId: 'alice.hold', amount: 10, multiCapture: true });
    await expect(
      db.pool.query(`insert into transfers (idempotency_key, kind, debit_account_id, credit_account_id, amount, hold_id)
                     values ('raw-cap', 'capture', 'alice.hold', 'bob.hold', 11, $1)`, [hold.id]),
    ).rejects.toMatchObject({ code: '23514' });
    await expect(db.pool.query(`update holds set released = 11 where id = $1`, [hold.id])).rejects.toMatchObject({ code: '23514' });
    await releaseHold(db.pool, { key: 'h-raw-rel', holdId: hold.id });
    await expect(db.pool.query(`update holds set released = 0, status = 'open' where id = $1`, [hold.id])).rejects.toThrow(
      /may only be captured, released or \(a stream escrow\) topped up/,
    );
  });

  test('only an open stream escrow hold grows, never shrinks, and only from available funds', async () => {
    const start = await getAccount(db.pool, 'alice.hold');
    const single = await placeHold(db.pool, { key: 'h-grow-1', accountId: 'alice.hold', amount: 10 });
    await expect(db.pool.query(`update holds set amount = 20 where id = $1`, [single.id])).rejects.toMatchObject({ code: '23001' });
    const notStream = await placeHold(db.pool, { key: 'h-grow-3', accountId: 'alice.hold', amount: 10, multiCapture: true });
    await expect(db.pool.query(`update holds set amount = 20 where id = $1`, [notStream.id])).rejects.toMatchObject({ code: '23001' });
    await releaseHold(db.pool, { key: 'h-grow-3-rel', holdId: notStream.id });
    const escrow = await placeHold(db.pool, { key: 'h-grow-2', accountId: 'alice.hold', amount: 10, multiCapture: true, reference: { stream: 'grow-test' } });
    const before = await getAccount(db.pool, 'alice.hold');
    await db.pool.query(`update holds set amount = 15 where id = $1`, [escrow.id]);
    expect(await getAccount(db.pool, 'alice.hold')).toMatchObject({ balance: before.balance, held: before.held + 5 });
    await expect(db.pool.query(`update holds set amount = 12 where id = $1`, [escrow.id])).rejects.toMatchObject({ code: '23001' });
    // more than the account has available: the available >= 0 CHECK refuses it
    await expect(db.pool.query(`update holds set amount = amount + $2 where id = $1`, [escrow.id, before.available + 1])).rejects.toMatchObject({
      code: '23514',
      constraint: 'available_not_negative',
    });
    await releaseHold(db.pool, { key: 'h-grow-1-rel', holdId: single.id });
    // a stream's hold moves only with its stream through the API; here the ledger call itself
    await db.pool.query(`update holds set released = amount - captured, status = 'released', resolved_at = now() where id = $1`, [escrow.id]);
    expect(await getAccount(db.pool, 'alice.hold')).toMatchObject({ balance: start.balance, held: start.held });
  });

  test('an expired hold gives its funds back and cannot be captured', async () => {
    const hold = await placeHold(db.pool, { key: 'h-exp', accountId: 'alice.hold', amount: 40, expiresAt: new Date(Date.now() + 300).toISOString() });
    expect((await getAccount(db.pool, 'alice.hold')).held).toBe(40);
    await new Promise((r) => setTimeout(r, 400));
    expect(await codeOf(captureHold(db.pool, { key: 'h-exp-cap', holdId: hold.id, amount: 1, toAccountId: 'bob.hold' }))).toBe('hold_expired');
    // the next movement on the account expires it under the account lock
    await transfer(db.pool, { key: 'h-exp-t', kind: 'transfer', debitAccountId: 'alice.hold', creditAccountId: 'bob.hold', amount: 1 });
    expect(await getHold(db.pool, hold.id)).toMatchObject({ status: 'expired', released: 40 });
    expect((await getAccount(db.pool, 'alice.hold')).held).toBe(0);
  });

  test('transfers between currencies are refused', async () => {
    await db.pool.query(`insert into accounts (id, owner_id, kind, currency) values ('world.eur', 'sluice', 'world', 'EUR')`);
    await createAccount(db.pool, { id: 'alice.eur', ownerId: 'alice', kind: 'user', currency: 'EUR' });
    await deposit(db.pool, { key: 'dep-eur', accountId: 'alice.eur', amount: 10 });
    expect(await codeOf(transfer(db.pool, { key: 'fx', kind: 'transfer', debitAccountId: 'alice.eur', creditAccountId: 'bob.main', amount: 1 }))).toBe(
      'currency_mismatch',
    );
  });

  test('50 concurrent random transfers and holds among 10 accounts: sum zero, nothing negative, every transfer an event', async () => {
    const ids = Array.from({ length: 10 }, (_, i) => `acct${i}`);
    for (const id of ids) {
      await createAccount(db.pool, { id, ownerId: 'alice', kind: 'user' });
      await deposit(db.pool, { key: `seed-${id}`, accountId: id, amount: 100 });
    }
    const op = fc.record({
      kind: fc.constantFrom('transfer', 'hold'),
      from: fc.integer({ min: 0, max: 9 }),
      to: fc.integer({ min: 0, max: 9 }),
      amount: fc.integer({ min: 1, max: 80 }),
      capture: fc.integer({ min: 0, max: 80 }),
    });
    const ops = fc.sample(op, { numRuns: 50, seed: 42 });
    const outcomes = await Promise.all(
      ops.map((o, i) => {
        const from = ids[o.from]!;
        const to = ids[o.to === o.from ? (o.to + 1) % 10 : o.to]!;
        if (o.kind === 'transfer') {
          return codeOf(transfer(db.pool, { key: `r-${i}`, kind: 'transfer', debitAccountId: from, creditAccountId: to, amount: o.amount }));
        }
        return codeOf(
          (async () => {
            const h = await placeHold(db.pool, { key: `rh-${i}`, accountId: from, amount: o.amount });
            const cap = Math.min(o.capture, o.amount);
            const after = cap > 0 ? (await captureHold(db.pool, { key: `rh-${i}-c`, holdId: h.id, amount: cap, toAccountId: to })).hold : h;
            if (after.remaining > 0) await releaseHold(db.pool, { key: `rh-${i}-r`, holdId: h.id });
          })(),
        );
      }),
    );
    // every outcome is success or a clean refusal; nothing unexpected (no deadlock, no raw SQL error)
    expect(outcomes.filter((o) => o !== 'ok' && o !== 'insufficient_funds')).toEqual([]);
    expect(outcomes.filter((o) => o === 'ok').length).toBeGreaterThan(10);
    expect(await sumOfBalances()).toBe(0);
    const { rows: neg } = await db.pool.query(`select id from accounts where kind <> 'world' and (balance - held < 0 or held <> 0)`);
    expect(neg).toEqual([]);
    const total = ids.length * 100;
    const { rows } = await db.pool.query('select sum(balance)::bigint as s from accounts where id = any($1)', [ids]);
    expect(rows[0].s).toBe(total);
    const { rows: missing } = await db.pool.query(
      `select t.id from transfers t where not exists (select 1 from events e where e.type = 'transfer.posted' and e.subject = t.id::text)`,
    );
    expect(missing).toEqual([]);
  });

  test('every balance equals the sum of its transfers', async () => {
    const { rows } = await db.pool.query(`
      select a.id, a.balance,
             coalesce((select sum(amount) from transfers where credit_account_id = a.id), 0)
           - coalesce((select sum(amount) from transfers where debit_account_id = a.id), 0) as derived
        from accounts a`);
    for (const r of rows) expect(Number(r.derived)).toBe(r.balance);
  });

  test('events can be tailed by cursor, scoped to a party', async () => {
    await untilTailsCaughtUp(db.pool);
    const page1 = await listEvents(db.pool, { after: 0, limit: 3 });
    const page2 = await listEvents(db.pool, { after: page1[2]!.id, limit: 3 });
    // the second page follows on from the first: none twice, none skipped (in commit order, not id order)
    expect([...page1, ...page2].map((e) => e.id)).toEqual((await listEvents(db.pool, { after: 0, limit: 6 })).map((e) => e.id));
    const bobs = await listEvents(db.pool, { after: 0, limit: 1000, party: 'bob' });
    expect(bobs.length).toBeGreaterThan(0);
    expect(bobs.every((e) => JSON.stringify(e.payload).includes('bob'))).toBe(true);
  });

  test('the read-only role can read the ledger and cannot write to it or change its schema', async () => {
    const ro = new pg.Client({ connectionString: (() => { const u = new URL(db.url); u.username = 'sluice_readonly'; return u.toString(); })() });
    await ro.connect();
    try {
      const { rows } = await ro.query('select count(*)::int as n from transfers');
      expect(rows[0].n).toBeGreaterThan(0);
      await expect(ro.query(`insert into events (type, subject, payload) values ('x', 'y', '{}')`)).rejects.toMatchObject({ code: '42501' });
      await expect(ro.query(`update accounts set balance = 0`)).rejects.toMatchObject({ code: '42501' });
      await expect(ro.query(`delete from idempotency_keys`)).rejects.toMatchObject({ code: '42501' });
      await expect(ro.query(`create table evil (id int)`)).rejects.toMatchObject({ code: '42501' });
      await expect(ro.query(`drop table transfers`)).rejects.toMatchObject({ code: '42501' });
    } finally {
      await ro.end();
    }
  });
});

describe('ledger limits', () => {
  test('only deposits and withdrawals touch the world account, in code and in the database', async () => {
    expect(await codeOf(transfer(db.pool, { key: 'to-world', kind: 'transfer', debitAccountId: 'alice.main', creditAccountId: 'world', amount: 1 }))).toBe('forbidden');
    await expect(
      db.pool.query(`insert into transfers (idempotency_key, kind, debit_account_id, credit_account_id, amount)
                     values ('raw-world', 'transfer', 'world', 'alice.main', 5)`),
    ).rejects.toThrow(/cannot touch the world account/);
  });

  test('a balance can never leave the exact integer range', async () => {
    // a currency of its own, so its world account starts at zero
    await db.pool.query(`insert into accounts (id, owner_id, kind, currency) values ('world.big', 'sluice', 'world', 'BIG')`);
    await createAccount(db.pool, { id: 'whale', ownerId: 'alice', kind: 'user', currency: 'BIG' });
    await deposit(db.pool, { key: 'whale-1', accountId: 'whale', amount: Number.MAX_SAFE_INTEGER - 10 });
    expect(await codeOf(deposit(db.pool, { key: 'whale-2', accountId: 'whale', amount: 11 }))).toBe('limit_exceeded');
    expect((await getAccount(db.pool, 'whale')).balance).toBe(Number.MAX_SAFE_INTEGER - 10);
    await expect(db.pool.query(`update accounts set balance = 9007199254740992 where id = 'whale'`)).rejects.toMatchObject({
      constraint: 'balance_in_safe_range',
    });
    await withdraw(db.pool, { key: 'whale-out', accountId: 'whale', amount: Number.MAX_SAFE_INTEGER - 10 });
  });
});
