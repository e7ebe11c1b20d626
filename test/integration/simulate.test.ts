import { runSimulation, type Caller } from '../../src/simulate';
import { ADMIN_KEY, startTestStack, type TestStack } from '../support/stack';

let stack: TestStack;
beforeAll(async () => {
  stack = await startTestStack();
});
afterAll(() => stack.stop());

/** The simulator's HTTP calls, served by the API under test without a port. */
const injectCaller = (): Caller => async (method, path, body, key, idempotencyKey) => {
  const res = await stack.app.inject({
    method,
    url: path,
    payload: body as never,
    headers: { ...(key ? { authorization: `Bearer ${key}` } : {}), ...(idempotencyKey ? { 'idempotency-key': idempotencyKey } : {}) },
  });
  return { status: res.statusCode, body: res.body ? res.json() : undefined };
};

const sumOfBalances = async () => (await stack.db.pool.query('select sum(balance)::bigint as s from accounts')).rows[0].s;

test.each([
  ['a market of buyers and sellers', false],
  ['a market where parties go silent and come back (--partition)', true],
])('%s ends with every stream closed and a green auditor', async (_name, partition) => {
  const result = await runSimulation({ buyers: 5, sellers: 5, rounds: 60, seed: 42, partition, roundMs: 50, call: injectCaller(), adminKey: ADMIN_KEY });
  expect(result.audit).toEqual({ ok: true, failing: [] });
  expect(result.streamsOpened).toBeGreaterThan(10);
  // every stream was closed by a reason the design names
  const reasons = Object.keys(result.closeReasons);
  expect(reasons.every((r) => ['cancelled', 'completed', 'insufficient_funds', 'partition'].includes(r))).toBe(true);
  const paid = result.parties.reduce((s, p) => s + p.paid, 0);
  const received = result.parties.reduce((s, p) => s + p.received, 0);
  expect(paid).toBe(received);
  expect(paid).toBeGreaterThan(0);
  const open = await stack.db.pool.query(`select count(*)::int as n from streams where status = 'open' and ref like $1`, [`${result.tag}%`]);
  expect(open.rows[0].n).toBe(0);
  expect(await sumOfBalances()).toBe(0);
  if (partition) {
    const skips = await stack.db.pool.query(`select count(*)::int as n from stream_skips where stream_ref like $1`, [`${result.tag}%`]);
    expect(skips.rows[0].n).toBeGreaterThan(0);
  }
});
