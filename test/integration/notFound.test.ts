import { startTestStack, type TestStack } from '../support/stack';
import { buildFixture, closeLeftovers, databaseSnapshot, type Fixture } from '../support/routeCatalog';

/**
 * Another party's resource answers exactly as a missing one (issue 22): for every kind
 * of resource addressed by id, reads and writes, carol (related to nothing) asking for
 * alice's (or bob's, or the entity's) gets the same 404 body as for an id that does not
 * exist, byte for byte once the id itself and the request id are set aside. So ids
 * (refs, job ids, account ids…) cannot be probed for existence. Nothing changes.
 */

let stack: TestStack;
let fx: Fixture;

beforeAll(async () => {
  stack = await startTestStack({ writeRate: { max: 1_000_000, windowMs: 1_000 } });
  fx = await buildFixture(stack);
});
afterAll(async () => {
  if (stack) await closeLeftovers(stack);
  await stack?.stop();
});

type Method = 'GET' | 'POST';
interface Case {
  kind: string;
  what: string;
  method: Method;
  /** The URL for an id (already URL-safe), and the body (which may name the id). */
  url: (id: string) => string;
  body?: (id: string) => unknown;
  key?: boolean;
  /** Another party's resource (a fixture token, or a literal), and an id of the same shape that names nothing. */
  hidden: string;
  missing: string;
}

const token = (name: string) => () => String(fx.tokens[name]);
const CASES: (Omit<Case, 'hidden'> & { hidden: string | (() => string) })[] = [
  { kind: 'account', what: 'read', method: 'GET', url: (id) => `/v1/accounts/${id}`, hidden: 'alice.wallet', missing: 'nobody.wallet' },
  { kind: 'account', what: 'transfer from', method: 'POST', url: () => '/v1/transfers', key: true, body: (id) => ({ fromAccountId: id, toAccountId: 'carol.wallet', amount: 1 }), hidden: 'alice.wallet', missing: 'nobody.wallet' },
  { kind: 'account', what: 'hold on', method: 'POST', url: () => '/v1/holds', key: true, body: (id) => ({ accountId: id, amount: 1 }), hidden: 'alice.wallet', missing: 'nobody.wallet' },
  { kind: 'account', what: 'pay from', method: 'POST', url: () => '/v1/payments', body: (id) => ({ ref: fx.ref(`nf-pay-${id}`), fromAccountId: id, toAccountId: 'carol.wallet', amount: 1 }), hidden: 'alice.wallet', missing: 'nobody.wallet' },
  { kind: 'account', what: 'open a stream from', method: 'POST', url: () => '/v1/streams', body: (id) => ({ ref: fx.ref(`nf-open-${id}`), fromAccountId: id, toAccountId: 'carol.wallet', ratePerTick: 1, maxTotal: 5, tickIntervalMs: 3_600_000 }), hidden: 'alice.spend', missing: 'nobody.spend' },
  { kind: 'account', what: 'start a job from', method: 'POST', url: () => '/v1/jobs', body: (id) => ({ jobId: fx.ref(`nf-job-${id}`), accountId: id, estimatedCost: 1, work: { description: 'x' } }), hidden: 'alice.spend', missing: 'nobody.spend' },
  { kind: 'account', what: 'open a session from', method: 'POST', url: () => '/v1/sessions', body: (id) => ({ sessionId: fx.ref(`nf-session-${id}`), accountId: id, amount: 1 }), hidden: 'alice.spend', missing: 'nobody.spend' },
  { kind: 'account', what: 'post a rate paid to', method: 'POST', url: () => '/v1/sellers/carol/rates', body: (id) => ({ ratePerTick: 1, accountId: id }), hidden: 'bob.wallet', missing: 'nobody.wallet' },
  { kind: 'hold', what: 'read', method: 'GET', url: (id) => `/v1/holds/${id}`, hidden: token('open'), missing: '999999999' },
  { kind: 'hold', what: 'capture', method: 'POST', url: (id) => `/v1/holds/${id}/capture`, key: true, body: () => ({ amount: 1, toAccountId: 'carol.wallet' }), hidden: token('open'), missing: '999999999' },
  { kind: 'hold', what: 'release', method: 'POST', url: (id) => `/v1/holds/${id}/release`, key: true, hidden: token('open'), missing: '999999999' },
  { kind: 'payment', what: 'read', method: 'GET', url: (id) => `/v1/payments/${id}`, hidden: token('paid'), missing: 'nf-no-payment' },
  { kind: 'payment', what: 'refund', method: 'POST', url: (id) => `/v1/payments/${id}/refunds`, key: true, body: () => ({ amount: 1 }), hidden: token('paid'), missing: 'nf-no-payment' },
  { kind: 'stream', what: 'read', method: 'GET', url: (id) => `/v1/streams/${id}`, hidden: token('stream'), missing: 'nf-no-stream' },
  { kind: 'stream', what: 'read the ticks of', method: 'GET', url: (id) => `/v1/streams/${id}/ticks`, hidden: token('stream'), missing: 'nf-no-stream' },
  { kind: 'stream', what: 'cancel', method: 'POST', url: (id) => `/v1/streams/${id}/cancel`, body: () => ({}), hidden: token('stream'), missing: 'nf-no-stream' },
  { kind: 'stream', what: 'pause', method: 'POST', url: (id) => `/v1/streams/${id}/pause`, hidden: token('stream'), missing: 'nf-no-stream' },
  { kind: 'stream', what: 'resume', method: 'POST', url: (id) => `/v1/streams/${id}/resume`, hidden: token('paused'), missing: 'nf-no-stream' },
  { kind: 'stream', what: 'change the rate of', method: 'POST', url: (id) => `/v1/streams/${id}/rate`, body: () => ({ ratePerTick: 2 }), hidden: token('stream'), missing: 'nf-no-stream' },
  { kind: 'stream', what: 'accept the rate of', method: 'POST', url: (id) => `/v1/streams/${id}/rate/accept`, body: () => ({ ratePerTick: 3 }), hidden: token('consent'), missing: 'nf-no-stream' },
  { kind: 'stream', what: 'join', method: 'POST', url: (id) => `/v1/streams/${id}/members`, body: () => ({ members: [{ accountId: 'carol.wallet', weight: 1 }] }), hidden: token('dist'), missing: 'nf-no-stream' },
  { kind: 'stream', what: 'take a member out of', method: 'POST', url: (id) => `/v1/streams/${id}/members/bob.extra/leave`, hidden: token('dist'), missing: 'nf-no-stream' },
  { kind: 'job', what: 'read', method: 'GET', url: (id) => `/v1/jobs/${id}`, hidden: token('job'), missing: 'nf-no-job' },
  { kind: 'job', what: 'pay', method: 'POST', url: (id) => `/v1/jobs/${id}/payment`, hidden: token('job'), missing: 'nf-no-job' },
  { kind: 'job', what: 'cancel', method: 'POST', url: (id) => `/v1/jobs/${id}/cancel`, body: () => ({}), hidden: token('job'), missing: 'nf-no-job' },
  { kind: 'session', what: 'read', method: 'GET', url: (id) => `/v1/sessions/${id}`, hidden: token('session'), missing: 'nf-no-session' },
  { kind: 'session', what: 'send a request to', method: 'POST', url: (id) => `/v1/sessions/${id}/requests`, body: () => ({ requestId: 'nf-r', estimatedCost: 1, work: { description: 'x' } }), hidden: token('session'), missing: 'nf-no-session' },
  { kind: 'session', what: 'close', method: 'POST', url: (id) => `/v1/sessions/${id}/close`, hidden: token('session'), missing: 'nf-no-session' },
  { kind: 'entity', what: 'read', method: 'GET', url: (id) => `/v1/entities/${id}`, hidden: token('entity'), missing: 'nf-no-entity' },
  { kind: 'entity', what: 'list the subaccounts of', method: 'GET', url: (id) => `/v1/entities/${id}/subaccounts`, hidden: token('entity'), missing: 'nf-no-entity' },
  { kind: 'entity', what: 'read the dashboard of', method: 'GET', url: (id) => `/v1/entities/${id}/dashboard`, hidden: token('entity'), missing: 'nf-no-entity' },
  { kind: 'entity', what: 'read the deliveries of', method: 'GET', url: (id) => `/v1/entities/${id}/deliveries`, hidden: token('entity'), missing: 'nf-no-entity' },
  { kind: 'entity', what: 'read the debt ledger of', method: 'GET', url: (id) => `/v1/entities/${id}/ledger?step=604800`, hidden: token('entity'), missing: 'nf-no-entity' },
  { kind: 'entity', what: 'create a subaccount of', method: 'POST', url: (id) => `/v1/entities/${id}/subaccounts`, body: () => ({}), hidden: token('entity'), missing: 'nf-no-entity' },
  { kind: 'entity', what: 'checkpoint', method: 'POST', url: (id) => `/v1/entities/${id}/checkpoints`, hidden: token('entity'), missing: 'nf-no-entity' },
  { kind: 'subaccount', what: 'read', method: 'GET', url: (id) => `/v1/subaccounts/${encodeURIComponent(id)}`, hidden: () => decodeURIComponent(String(fx.tokens.sub)), missing: 'nf-no-entity/1' },
  { kind: 'subaccount', what: 'eliminate', method: 'POST', url: (id) => `/v1/subaccounts/${encodeURIComponent(id)}/eliminate`, body: () => ({}), hidden: () => decodeURIComponent(String(fx.tokens.sub)), missing: 'nf-no-entity/1' },
  { kind: 'party', what: "list the operators of", method: 'GET', url: (id) => `/v1/parties/${id}/operators`, hidden: 'alice', missing: 'nf-nobody' },
  { kind: 'party', what: 'grant an operator of', method: 'POST', url: (id) => `/v1/parties/${id}/operators`, body: () => ({ operator: 'carol', dailyLimit: 1 }), hidden: 'alice', missing: 'nf-nobody' },
  { kind: 'party', what: 'revoke an operator of', method: 'POST', url: (id) => `/v1/parties/${id}/operators/dave/revoke`, hidden: 'alice', missing: 'nf-nobody' },
  { kind: 'party', what: 'send the heartbeat of', method: 'POST', url: (id) => `/v1/parties/${id}/heartbeat`, hidden: 'alice', missing: 'nf-nobody' },
  { kind: 'key', what: 'revoke', method: 'POST', url: (id) => `/v1/keys/${id}/revoke`, hidden: token('bobKey'), missing: '999999999' },
];

/** An error body with the id it names, and its request id, set aside. */
const shape = (body: unknown, id: string) => JSON.stringify({ ...(body as { error: object }).error, request_id: '<request>' }).replaceAll(id, '<id>');

test('the table names every kind of resource a party addresses by id', () => {
  expect([...new Set(CASES.map((c) => c.kind))].sort()).toEqual(['account', 'entity', 'hold', 'job', 'key', 'party', 'payment', 'session', 'stream', 'subaccount']);
});

describe.each(CASES)('$kind: $what', (c) => {
  test("another party's answers exactly as a missing one (404, the same body but for the id), and changes nothing", async () => {
    const hidden = typeof c.hidden === 'function' ? c.hidden() : c.hidden;
    const before = await databaseSnapshot(stack);
    const ask = (id: string) =>
      stack.app.inject({
        method: c.method,
        url: c.url(id),
        headers: { authorization: `Bearer ${fx.keys.carol}`, ...(c.key && { 'idempotency-key': fx.fresh('nf') }), ...(c.body && { 'content-type': 'application/json' }) },
        payload: c.body ? JSON.stringify(c.body(id)) : undefined,
      });
    const [theirs, none] = [await ask(hidden), await ask(c.missing)];
    expect({ status: theirs.statusCode, body: shape(theirs.json(), hidden) }).toEqual({ status: none.statusCode, body: shape(none.json(), c.missing) });
    expect(theirs.statusCode).toBe(404);
    expect(theirs.json().error.code).toBe('not_found');
    expect(await databaseSnapshot(stack)).toBe(before);
  });
});

test('what a party may see but not change stays 403: the payee pauses or re-rates the stream it is paid by, the payer refunds', async () => {
  const bob = (method: Method, url: string, body?: unknown) =>
    stack.app.inject({ method, url, headers: { authorization: `Bearer ${fx.keys.bob}`, ...(body !== undefined && { 'content-type': 'application/json' }) }, payload: body === undefined ? undefined : JSON.stringify(body) });
  const stream = String(fx.tokens.stream);
  expect((await bob('GET', `/v1/streams/${stream}`)).statusCode).toBe(200);
  for (const [url, body] of [[`/v1/streams/${stream}/pause`], [`/v1/streams/${stream}/rate`, { ratePerTick: 9 }]] as const) {
    const res = await bob('POST', url, body);
    expect({ url, status: res.statusCode, code: res.json().error.code }).toEqual({ url, status: 403, code: 'forbidden' });
  }
  const refund = await stack.app.inject({
    method: 'POST',
    url: `/v1/payments/${fx.tokens.paid}/refunds`,
    headers: { authorization: `Bearer ${fx.keys.alice}`, 'idempotency-key': fx.fresh('nf'), 'content-type': 'application/json' },
    payload: JSON.stringify({ amount: 1 }),
  });
  expect({ status: refund.statusCode, code: refund.json().error.code }).toEqual({ status: 403, code: 'forbidden' });
});

test('a filter naming another party is refused (403, naming the parameter), never ignored; the caller’s own id is read', async () => {
  const carol = (url: string) => stack.app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${fx.keys.carol}` } });
  for (const [url, param] of [
    ['/v1/accounts?ownerId=alice', 'ownerId'],
    ['/v1/estimate?units=5&payer=alice', 'payer'],
    ['/v1/keys?party=alice', 'party'],
  ] as const) {
    const res = await carol(url);
    expect({ url, status: res.statusCode, code: res.json().error.code, param: res.json().error.param }).toEqual({ url, status: 403, code: 'forbidden', param });
    expect(res.json().error.message).toContain(`query parameter ${param} names alice`);
  }
  const own = await carol('/v1/accounts?ownerId=carol');
  expect(own.statusCode).toBe(200);
  expect(own.json().accounts.map((a: { id: string }) => a.id)).toEqual(['carol.wallet']);
  expect((await carol('/v1/estimate?units=5&payer=carol')).statusCode).toBe(200);
  expect((await carol('/v1/keys?party=carol')).json().keys.every((k: { party: string }) => k.party === 'carol')).toBe(true);
});
