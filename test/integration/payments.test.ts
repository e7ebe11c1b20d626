import { paymentWorkflowId } from '../../src/domain/payments';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';

let stack: TestStack;
let admin: ReturnType<typeof api>;
let alice: ReturnType<typeof api>;
let bob: ReturnType<typeof api>;

const balance = async (id: string) => (await admin.get(`/v1/accounts/${id}`)).body;

beforeAll(async () => {
  stack = await startTestStack();
  admin = api(stack.app, ADMIN_KEY);
  const a = await admin.post('/v1/parties', { id: 'alice', name: 'Alice' });
  const b = await admin.post('/v1/parties', { id: 'bob', name: 'Bob' });
  alice = api(stack.app, a.body.apiKey);
  bob = api(stack.app, b.body.apiKey);
  expect((await alice.post('/v1/accounts', { id: 'alice.wallet' })).status).toBe(201);
  expect((await bob.post('/v1/accounts', { id: 'bob.wallet' })).status).toBe(201);
  expect((await admin.post('/v1/deposits', { accountId: 'alice.wallet', amount: 1000 }, 'seed-alice')).status).toBe(201);
});
afterAll(() => stack.stop());

describe('payments through a real Temporal dev server', () => {
  test('a payment moves the money once and returns a receipt; repeating the ref returns the same receipt', async () => {
    const req = { ref: 'order-1', fromAccountId: 'alice.wallet', toAccountId: 'bob.wallet', amount: 250, memo: 'gpu minutes' };
    const first = await alice.post('/v1/payments', req);
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ ref: 'order-1', status: 'CONFIRMED', payer: 'alice', payee: 'bob', amount: 250, refunded: 0 });
    const again = await alice.post('/v1/payments', req);
    expect(again.body).toEqual(first.body);
    expect(await balance('alice.wallet')).toMatchObject({ balance: 750, available: 750 });
    expect(await balance('bob.wallet')).toMatchObject({ balance: 250 });
    // the workflow ran under the ref's id and completed with the same receipt
    const handle = stack.client.workflow.getHandle(paymentWorkflowId('order-1'));
    expect(await handle.result()).toEqual(first.body);
    const { rows } = await stack.db.pool.query(`select count(*)::int as n from transfers where payment_ref = 'order-1'`);
    expect(rows[0].n).toBe(1);
  });

  test('the same ref with a different amount is a 409 and moves nothing', async () => {
    const res = await alice.post('/v1/payments', { ref: 'order-1', fromAccountId: 'alice.wallet', toAccountId: 'bob.wallet', amount: 1 });
    expect(res.status).toBe(409);
    expect(res.body.error.code).toBe('payment_conflict');
    expect(await balance('alice.wallet')).toMatchObject({ balance: 750 });
  });

  test('concurrent requests with one ref pay once', async () => {
    const req = { ref: 'order-race', fromAccountId: 'alice.wallet', toAccountId: 'bob.wallet', amount: 10 };
    const results = await Promise.all(Array.from({ length: 5 }, () => alice.post('/v1/payments', req)));
    for (const r of results) expect(r.status).toBe(200);
    expect(new Set(results.map((r) => r.body.transferId)).size).toBe(1);
    expect(await balance('alice.wallet')).toMatchObject({ balance: 740 });
  });

  test('a payment the payer cannot cover fails with 422, charges nothing, and the ref can be retried after a top-up', async () => {
    const req = { ref: 'order-big', fromAccountId: 'alice.wallet', toAccountId: 'bob.wallet', amount: 5000 };
    const res = await alice.post('/v1/payments', req);
    expect(res.status).toBe(422);
    expect(res.body.error).toMatchObject({ code: 'insufficient_funds', details: { available: 740, required: 5000 } });
    expect(await balance('alice.wallet')).toMatchObject({ balance: 740 });
    await admin.post('/v1/deposits', { accountId: 'alice.wallet', amount: 5000 }, 'top-up');
    const retry = await alice.post('/v1/payments', req);
    expect(retry.status).toBe(200);
    expect(await balance('alice.wallet')).toMatchObject({ balance: 740 });
    expect(await balance('bob.wallet')).toMatchObject({ balance: 5260 });
  });

  test('refunds return at most what was paid, idempotently, and only the payee may refund', async () => {
    expect((await alice.post('/v1/payments/order-1/refunds', { amount: 10 }, 'r-alice')).status).toBe(403);
    const part = await bob.post('/v1/payments/order-1/refunds', { amount: 100 }, 'r1');
    expect(part.status).toBe(200);
    expect(part.body).toMatchObject({ ref: 'order-1', amount: 100, refundedTotal: 100, paymentAmount: 250 });
    const replay = await bob.post('/v1/payments/order-1/refunds', { amount: 100 }, 'r1');
    expect(replay.body).toEqual(part.body);
    const tooMuch = await bob.post('/v1/payments/order-1/refunds', { amount: 151 }, 'r2');
    expect(tooMuch.status).toBe(422);
    expect(tooMuch.body.error).toMatchObject({ code: 'refund_exceeds_payment', details: { refundable: 150 } });
    const rest = await bob.post('/v1/payments/order-1/refunds', {}, 'r3');
    expect(rest.body).toMatchObject({ amount: 150, refundedTotal: 250 });
    const none = await bob.post('/v1/payments/order-1/refunds', {}, 'r4');
    expect(none.status).toBe(422);
    expect(await balance('alice.wallet')).toMatchObject({ balance: 990 });
    expect(await balance('bob.wallet')).toMatchObject({ balance: 5010 });
    const receipt = await alice.get('/v1/payments/order-1');
    expect(receipt.body).toMatchObject({ amount: 250, refunded: 250 });
  });

  test('a payment is visible to its payer and payee only', async () => {
    const carol = await admin.post('/v1/parties', { id: 'carol', name: 'Carol' });
    expect((await api(stack.app, carol.body.apiKey).get('/v1/payments/order-1')).status).toBe(404);
    expect((await bob.get('/v1/payments/order-1')).status).toBe(200);
    expect((await admin.get('/v1/payments/nope')).status).toBe(404);
  });

  test('payment workflows carry search attributes so the Temporal UI can find them', async () => {
    const handle = stack.client.workflow.getHandle(paymentWorkflowId('order-1'));
    const description = await handle.describe();
    expect(description.typedSearchAttributes.get({ name: 'SluicePayer', type: 'KEYWORD' } as never)).toBe('alice');
    expect(description.typedSearchAttributes.get({ name: 'SluiceStatus', type: 'KEYWORD' } as never)).toBe('CONFIRMED');
  });
});
