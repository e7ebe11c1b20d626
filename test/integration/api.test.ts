import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';
import { untilTailsCaughtUp } from '../support/tails';
import { METRICS_AUTH, scrapeText } from '../support/metrics';
import { buildFixture, CATALOG, closeLeftovers, databaseSnapshot, ERROR_SHAPE, openApiPath, registeredRoutes, type Fixture, type Req } from '../support/routeCatalog';

/**
 * The HTTP API against the real stack (a database of its own, a worker on the shared
 * Temporal dev server): bad input is a 4xx JSON error that changes nothing, cross-party
 * and admin-only refusals, idempotency keys scoped per caller, and the OpenAPI document
 * and metrics describe the routes that exist. Routes, their valid requests and the
 * fixture come from test/support/routeCatalog.ts; authMatrix.test.ts tries every
 * route with no key, a wrong key, another party's key and the admin key.
 */

let stack: TestStack;
let fx: Fixture;
let keys: Record<string, string>;
const ref = (name: string) => fx.ref(name);

interface Case extends Partial<Req> {
  what: string;
  status: number;
  code?: string;
}

// ---------------------------------------------------------------- the routes

/** The ledger and payment routes this file's bad-input table covers. */
const ALL_ROUTES = [
  'POST /v1/parties',
  'POST /v1/accounts',
  'GET /v1/accounts',
  'GET /v1/accounts/:id',
  'POST /v1/deposits',
  'POST /v1/withdrawals',
  'POST /v1/transfers',
  'POST /v1/holds',
  'GET /v1/holds/:id',
  'POST /v1/holds/:id/capture',
  'POST /v1/holds/:id/release',
  'POST /v1/payments',
  'GET /v1/payments/:ref',
  'POST /v1/payments/:ref/refunds',
  'GET /v1/events',
] as const;
type Route = (typeof ALL_ROUTES)[number];
const ROUTES = CATALOG as Record<Route, (typeof CATALOG)[string]>;
/** A request each route accepts, sent by its natural caller (the catalogue's). Bad-input cases break one thing in it. */
const VALID = Object.fromEntries(ALL_ROUTES.map((r) => [r, ROUTES[r].valid])) as Record<Route, Req>;

const send = (route: Route, req: Req) => fx.send(route, req);

/** Sends a request that must be refused: a 4xx (never a 5xx) in the error shape, and the database untouched. */
async function expectRefusedWithoutChange(route: Route, req: Req, status: number, code?: string) {
  const before = await databaseSnapshot(stack);
  const res = await send(route, req);
  expect(res.status).toBeLessThan(500);
  expect({ status: res.status, body: res.body }).toEqual({ status, body: ERROR_SHAPE });
  expect(res.contentType).toMatch(/^application\/json/);
  if (code) expect(res.body.error.code).toBe(code);
  expect(await databaseSnapshot(stack)).toBe(before);
  return res;
}

// ---------------------------------------------------------------- bad input, per route

const without = (o: Record<string, unknown>, field: string) => Object.fromEntries(Object.entries(o).filter(([k]) => k !== field));

/** Amounts that are not a positive integer count of minor units ≤ 10^15. */
function badAmounts(route: Route, { required = true } = {}): Case[] {
  const valid = VALID[route].body as Record<string, unknown>;
  const withAmount = (amount: unknown) => ({ body: { ...valid, amount } });
  return [
    ...(required ? [{ what: 'no amount', body: without(valid, 'amount') }] : []),
    { what: 'amount 0', ...withAmount(0) },
    { what: 'a negative amount', ...withAmount(-10) },
    { what: 'a fractional amount', ...withAmount(10.5) },
    { what: 'an amount above 10^15', ...withAmount(1e15 + 1) },
    { what: 'an amount beyond 2^53', ...withAmount(2 ** 53 + 2) },
    { what: 'the amount as a string', ...withAmount('10') },
    { what: 'the amount as null', ...withAmount(null) },
    { what: 'an amount that overflows to Infinity', raw: JSON.stringify({ ...valid, amount: 0 }).replace('"amount":0', '"amount":1e400') },
  ].map((c) => ({ ...c, status: 400, code: 'invalid_request' }));
}

/** Idempotency-Key headers the API refuses. */
const badKeys = (): Case[] =>
  [
    { what: 'no Idempotency-Key', key: null },
    { what: 'an empty Idempotency-Key', key: '' },
    { what: 'an Idempotency-Key of 129 characters', key: 'k'.repeat(129) },
    { what: 'an Idempotency-Key with a space', key: 'my key' },
    { what: 'an Idempotency-Key with a non-ASCII character', key: 'clé-1' },
  ].map((c) => ({ ...c, status: 400, code: 'invalid_request' }));

/** Bodies that are not a JSON object of acceptable size. */
/** `optional`: every field of the route's body is optional, so no body (empty, or JSON null) is `{}`, not bad input. */
const badBodies = (o: { optional?: boolean } = {}): Case[] => [
  { what: 'a malformed JSON body', raw: '{"amount": 1,', status: 400, code: 'invalid_request' },
  ...(o.optional ? [] : [{ what: 'an empty body declared as JSON', raw: '', status: 400, code: 'invalid_request' }]),
  { what: 'a JSON array as body', raw: '[]', status: 400, code: 'invalid_request' },
  ...(o.optional ? [] : [{ what: 'JSON null as body', raw: 'null', status: 400, code: 'invalid_request' }]),
  { what: 'an XML body', raw: '<transfer/>', type: 'application/xml', status: 415 },
  { what: 'a body over the size limit', raw: JSON.stringify({ memo: 'x'.repeat(70_000) }), status: 413 },
];

const memoCases = (route: Route): Case[] => {
  const valid = VALID[route].body as Record<string, unknown>;
  return [
    { what: 'a memo of 501 characters', body: { ...valid, memo: 'm'.repeat(501) }, status: 400 },
    { what: 'a memo with a NUL character', body: { ...valid, memo: 'a\u0000b' }, status: 400 },
    { what: 'the memo as a number', body: { ...valid, memo: 7 }, status: 400 },
  ];
};

const BAD_INPUT: Record<Route, Case[]> = {
  'POST /v1/parties': [
    { what: 'no id', body: { name: 'Eve' }, status: 400 },
    { what: 'no name', body: { id: 'eve' }, status: 400 },
    { what: 'an id with capitals', body: { id: 'Eve', name: 'Eve' }, status: 400 },
    { what: 'an id with a space', body: { id: 'e ve', name: 'Eve' }, status: 400 },
    { what: 'an id of 64 characters', body: { id: 'e'.repeat(64), name: 'Eve' }, status: 400 },
    { what: 'the id as a number', body: { id: 42, name: 'Eve' }, status: 400 },
    { what: 'an empty name', body: { id: 'eve', name: '' }, status: 400 },
    { what: 'a name of 201 characters', body: { id: 'eve', name: 'n'.repeat(201) }, status: 400 },
    { what: 'a name with a NUL character', body: { id: 'eve', name: 'E\u0000ve' }, status: 400 },
    { what: 'an id already taken', body: { id: 'alice', name: 'Alice again' }, status: 409, code: 'already_exists' },
    ...badBodies(),
  ],
  'POST /v1/accounts': [
    { what: 'an id with a space', body: { id: 'alice wallet' }, status: 400 },
    { what: 'an id starting with a dash', body: { id: '-alice' }, status: 400 },
    { what: 'an id of 129 characters', body: { id: 'a'.repeat(129) }, status: 400 },
    { what: 'the id as a number', body: { id: 12 }, status: 400 },
    { what: 'a lowercase currency', body: { id: 'alice.x', currency: 'eur' }, status: 400 },
    { what: 'a kind that does not exist', body: { id: 'alice.x', kind: 'vault' }, status: 400 },
    { what: 'the world kind', as: 'admin', body: { id: 'alice.x', ownerId: 'alice', kind: 'world' }, status: 400 },
    { what: 'an id already taken in another currency', body: { id: 'alice.wallet', currency: 'EUR' }, status: 409, code: 'already_exists' },
    { what: "another party's id already taken", body: { id: 'bob.wallet' }, status: 409, code: 'already_exists' },
    { what: 'no owner (admin)', as: 'admin', body: { id: 'orphan' }, status: 400, code: 'invalid_request' },
    { what: 'an unknown owner (admin)', as: 'admin', body: { id: 'orphan', ownerId: 'nobody' }, status: 404, code: 'not_found' },
    { what: 'an owner id with bad characters (admin)', as: 'admin', body: { id: 'orphan', ownerId: 'No Body' }, status: 400 },
    ...badBodies(),
  ],
  'GET /v1/accounts': [
    { what: 'an ownerId with bad characters', as: 'admin', url: '/v1/accounts?ownerId=Bad%20Owner', status: 400 },
    { what: 'no ownerId (admin)', as: 'admin', url: '/v1/accounts', status: 400, code: 'invalid_request' },
  ],
  'GET /v1/accounts/:id': [
    { what: 'an unknown id', url: '/v1/accounts/no.such.account', as: 'admin', status: 404, code: 'not_found' },
    { what: 'an id with a space', url: '/v1/accounts/alice%20wallet', status: 400 },
    { what: 'an id with a NUL character', url: '/v1/accounts/alice%00', status: 400 },
    { what: 'an id of 129 characters', url: `/v1/accounts/${'a'.repeat(129)}`, status: 400 },
    { what: 'an id of 300 characters', url: `/v1/accounts/${'a'.repeat(300)}`, status: 414 },
    { what: 'a malformed %-escape', url: '/v1/accounts/%E0%A4%A', status: 400 },
  ],
  'POST /v1/deposits': [
    { what: 'no accountId', body: { amount: 10 }, status: 400 },
    { what: 'an unknown account', body: { accountId: 'no.such.account', amount: 10 }, status: 404, code: 'not_found' },
    { what: 'an account id with bad characters', body: { accountId: 'alice wallet', amount: 10 }, status: 400 },
    { what: 'the world account', body: { accountId: 'world', amount: 10 }, status: 400, code: 'invalid_request' },
    { what: 'a currency without a world account', body: { accountId: 'alice.eur', amount: 10 }, status: 400, code: 'invalid_request' },
    ...badAmounts('POST /v1/deposits'),
    ...memoCases('POST /v1/deposits'),
    ...badKeys(),
    ...badBodies(),
  ],
  'POST /v1/withdrawals': [
    { what: 'more than is available (held funds do not count)', body: { accountId: 'alice.wallet', amount: 701 }, status: 422, code: 'insufficient_funds' },
    { what: 'the largest amount accepted, far above the balance', body: { accountId: 'alice.wallet', amount: 1e15 }, status: 422, code: 'insufficient_funds' },
    { what: 'an unknown account', body: { accountId: 'no.such.account', amount: 10 }, status: 404, code: 'not_found' },
    ...badAmounts('POST /v1/withdrawals'),
    ...badKeys(),
    ...badBodies(),
  ],
  'POST /v1/transfers': [
    { what: 'no toAccountId', body: { fromAccountId: 'alice.wallet', amount: 10 }, status: 400 },
    { what: 'the fromAccountId as a number', body: { fromAccountId: 1, toAccountId: 'bob.wallet', amount: 10 }, status: 400 },
    { what: 'an unknown destination', body: { fromAccountId: 'alice.wallet', toAccountId: 'no.such.account', amount: 10 }, status: 404, code: 'not_found' },
    { what: 'an unknown source', body: { fromAccountId: 'no.such.account', toAccountId: 'bob.wallet', amount: 10 }, status: 404, code: 'not_found' },
    { what: 'a destination id of 129 characters', body: { fromAccountId: 'alice.wallet', toAccountId: 'b'.repeat(129), amount: 10 }, status: 400 },
    { what: 'the same account on both sides', body: { fromAccountId: 'alice.wallet', toAccountId: 'alice.wallet', amount: 10 }, status: 400 },
    { what: 'more than is available', body: { fromAccountId: 'alice.wallet', toAccountId: 'bob.wallet', amount: 701 }, status: 422, code: 'insufficient_funds' },
    { what: 'an account in another currency', body: { fromAccountId: 'alice.wallet', toAccountId: 'alice.eur', amount: 10 }, status: 422, code: 'currency_mismatch' },
    ...badAmounts('POST /v1/transfers'),
    ...memoCases('POST /v1/transfers'),
    ...badKeys(),
    ...badBodies(),
  ],
  'POST /v1/holds': [
    { what: 'no accountId', body: { amount: 10 }, status: 400 },
    { what: 'an unknown account', body: { accountId: 'no.such.account', amount: 10 }, status: 404, code: 'not_found' },
    { what: 'more than is available', body: { accountId: 'alice.wallet', amount: 701 }, status: 422, code: 'insufficient_funds' },
    { what: 'an expiry in the past', body: { accountId: 'alice.wallet', amount: 10, expiresAt: '2020-01-01T00:00:00Z' }, status: 400 },
    { what: 'an expiry that is not a date', body: { accountId: 'alice.wallet', amount: 10, expiresAt: 'tomorrow' }, status: 400 },
    { what: 'an expiry on February 30th', body: { accountId: 'alice.wallet', amount: 10, expiresAt: '2031-02-30T00:00:00Z' }, status: 400 },
    { what: 'an expiry without a time zone', body: { accountId: 'alice.wallet', amount: 10, expiresAt: '2031-01-01T00:00:00' }, status: 400 },
    { what: 'the expiry as a number', body: { accountId: 'alice.wallet', amount: 10, expiresAt: 1924992000000 }, status: 400 },
    { what: 'a hold on the world account (admin)', as: 'admin', body: { accountId: 'world', amount: 10 }, status: 400, code: 'invalid_request' },
    ...badAmounts('POST /v1/holds'),
    ...badKeys(),
    ...badBodies(),
  ],
  'GET /v1/holds/:id': [
    { what: 'an unknown hold', as: 'admin', url: '/v1/holds/999999', status: 404, code: 'not_found' },
    { what: 'a non-numeric id', url: '/v1/holds/abc', status: 400 },
    { what: 'id 0', url: '/v1/holds/0', status: 400 },
    { what: 'a negative id', url: '/v1/holds/-1', status: 400 },
    { what: 'a fractional id', url: '/v1/holds/1.5', status: 400 },
    { what: 'a hexadecimal id', url: '/v1/holds/0x1', status: 400 },
    { what: 'an id with an exponent', url: '/v1/holds/1e1', status: 400 },
    { what: 'an id padded with a space', url: '/v1/holds/%201', status: 400 },
    { what: 'an id beyond 2^53', url: '/v1/holds/9007199254740993', status: 400 },
    { what: 'an id of 40 digits', url: `/v1/holds/${'9'.repeat(40)}`, status: 400 },
  ],
  'POST /v1/holds/:id/capture': [
    { what: 'more than remains on the hold', body: { amount: 101, toAccountId: 'bob.wallet' }, status: 422, code: 'amount_exceeds_hold' },
    { what: 'an unknown destination', body: { amount: 10, toAccountId: 'no.such.account' }, status: 404, code: 'not_found' },
    { what: 'no destination', body: { amount: 10 }, status: 400 },
    { what: "the held account as destination", body: { amount: 10, toAccountId: 'alice.wallet' }, status: 400 },
    { what: 'a destination in another currency', body: { amount: 10, toAccountId: 'alice.eur' }, status: 422, code: 'currency_mismatch' },
    { what: 'a released hold', url: '/v1/holds/{closed}/capture', status: 409, code: 'hold_closed' },
    { what: 'an unknown hold', as: 'admin', url: '/v1/holds/999999/capture', status: 404, code: 'not_found' },
    { what: 'a non-numeric hold id', url: '/v1/holds/abc/capture', status: 400 },
    ...badAmounts('POST /v1/holds/:id/capture'),
    ...memoCases('POST /v1/holds/:id/capture'),
    ...badKeys(),
    ...badBodies(),
  ],
  'POST /v1/holds/:id/release': [
    { what: 'a released hold', url: '/v1/holds/{closed}/release', status: 409, code: 'hold_closed' },
    { what: 'an unknown hold', as: 'admin', url: '/v1/holds/999999/release', status: 404, code: 'not_found' },
    { what: 'a non-numeric hold id', url: '/v1/holds/abc/release', status: 400 },
    { what: 'a hexadecimal hold id', url: '/v1/holds/0x1/release', status: 400 },
    { what: 'a malformed JSON body', raw: '{', status: 400 },
    ...badKeys(),
  ],
  'POST /v1/payments': [
    { what: 'no ref', body: { fromAccountId: 'alice.wallet', toAccountId: 'bob.wallet', amount: 10 }, status: 400 },
    { what: 'a ref with a slash', body: { ref: '../etc', fromAccountId: 'alice.wallet', toAccountId: 'bob.wallet', amount: 10 }, status: 400 },
    { what: 'a ref of 129 characters', body: { ref: 'r'.repeat(129), fromAccountId: 'alice.wallet', toAccountId: 'bob.wallet', amount: 10 }, status: 400 },
    { what: 'an unknown payee account', body: { ref: '{newRef}', fromAccountId: 'alice.wallet', toAccountId: 'no.such.account', amount: 10 }, status: 404, code: 'not_found' },
    { what: 'an unknown payer account', body: { ref: '{newRef}', fromAccountId: 'no.such.account', toAccountId: 'bob.wallet', amount: 10 }, status: 404, code: 'not_found' },
    { what: 'more than is available', body: { ref: '{newRef}', fromAccountId: 'alice.wallet', toAccountId: 'bob.wallet', amount: 701 }, status: 422, code: 'insufficient_funds' },
    { what: 'a payee in another currency', body: { ref: '{newRef}', fromAccountId: 'alice.wallet', toAccountId: 'alice.eur', amount: 10 }, status: 422, code: 'currency_mismatch' },
    { what: 'the same account on both sides', body: { ref: '{newRef}', fromAccountId: 'alice.wallet', toAccountId: 'alice.wallet', amount: 10 }, status: 400 },
    { what: 'a ref already paid with another amount', body: { ref: '{paid}', fromAccountId: 'alice.wallet', toAccountId: 'bob.wallet', amount: 201 }, status: 409, code: 'payment_conflict' },
    ...badAmounts('POST /v1/payments'),
    ...memoCases('POST /v1/payments'),
    ...badBodies(),
  ],
  'GET /v1/payments/:ref': [
    { what: 'an unknown ref', url: '/v1/payments/no-such-ref', status: 404, code: 'not_found' },
    { what: 'a ref with an encoded slash', url: '/v1/payments/a%2Fb', status: 400 },
    { what: 'a ref with a space', url: '/v1/payments/a%20b', status: 400 },
    { what: 'a ref of 129 characters', url: `/v1/payments/${'r'.repeat(129)}`, status: 400 },
    { what: 'a malformed %-escape', url: '/v1/payments/%', status: 400 },
  ],
  'POST /v1/payments/:ref/refunds': [
    { what: 'more than is left to refund', body: { amount: 201 }, status: 422, code: 'refund_exceeds_payment' },
    { what: 'an unknown ref', as: 'admin', url: '/v1/payments/no-such-ref/refunds', status: 404, code: 'not_found' },
    { what: 'a ref with bad characters', url: '/v1/payments/a%20b/refunds', status: 400 },
    ...badAmounts('POST /v1/payments/:ref/refunds', { required: false }),
    ...badKeys(),
    ...badBodies({ optional: true }), // no body is a refund of all that is left, as {} is
  ],
  'GET /v1/events': [
    { what: 'limit=0', url: '/v1/events?limit=0', status: 400 },
    { what: 'limit=100000', url: '/v1/events?limit=100000', status: 400 },
    { what: 'a non-numeric limit', url: '/v1/events?limit=ten', status: 400 },
    { what: 'a hexadecimal limit', url: '/v1/events?limit=0x10', status: 400 },
    { what: 'a limit in exponent form', url: '/v1/events?limit=1e1', status: 400 },
    { what: 'a limit with a leading space', url: '/v1/events?limit=%201', status: 400 },
    { what: 'a limit with a leading zero', url: '/v1/events?limit=010', status: 400 },
    { what: 'limit given twice', url: '/v1/events?limit=1&limit=2', status: 400 },
    { what: 'after=-1', url: '/v1/events?after=-1', status: 400 },
    { what: 'a fractional after', url: '/v1/events?after=1.5', status: 400 },
    { what: 'an after beyond 2^53', url: '/v1/events?after=1e20', status: 400 },
    { what: 'a non-numeric after', url: '/v1/events?after=abc', status: 400 },
  ],
};

// ---------------------------------------------------------------- fixture

beforeAll(async () => {
  stack = await startTestStack();
  fx = await buildFixture(stack);
  keys = fx.keys;
  expect((await api(stack.app, keys.alice).get('/v1/accounts/alice.wallet')).body).toMatchObject({ balance: 800, held: 100, available: 700 });
});
afterAll(async () => {
  if (stack) await closeLeftovers(stack);
  await stack?.stop();
});

// ---------------------------------------------------------------- 1. bad input

describe.each(ALL_ROUTES)('bad input to %s is a 4xx JSON error and changes nothing', (route) => {
  test.each(BAD_INPUT[route])('$what → $status', async ({ what: _what, status, code, ...broken }) => {
    await expectRefusedWithoutChange(route, { ...VALID[route], ...broken }, status, code);
  });
});

describe('unknown routes', () => {
  test('an unknown route is a 404 in the same error shape', async () => {
    const res = await api(stack.app, ADMIN_KEY).get('/v1/nothing-here');
    expect(res).toEqual({ status: 404, body: ERROR_SHAPE });
    expect(res.body.error.code).toBe('not_found');
  });
});

// ---------------------------------------------------------------- 2. authentication and authorization

describe('authentication and authorization', () => {
  test.each([
    ['a Basic scheme', { authorization: `Basic ${Buffer.from(`admin:${ADMIN_KEY}`).toString('base64')}` }],
    ['an empty bearer', { authorization: 'Bearer ' }],
    ['the admin key without the scheme', { authorization: ADMIN_KEY }],
    ['a key of 10 000 characters', { authorization: `Bearer ${'k'.repeat(10_000)}` }],
  ])('an Authorization header with %s is 401', async (_what, headers) => {
    const res = await stack.app.inject({ method: 'GET', url: '/v1/accounts/alice.wallet', headers });
    expect({ status: res.statusCode, body: res.json() }).toEqual({ status: 401, body: ERROR_SHAPE });
  });

  const ADMIN_ONLY: [string, Route, Partial<Req>][] = [
    ['register a party', 'POST /v1/parties', {}],
    ['deposit', 'POST /v1/deposits', {}],
    ['withdraw', 'POST /v1/withdrawals', {}],
    ['open an account for another party', 'POST /v1/accounts', { body: { id: 'bob.gift', ownerId: 'bob' } }],
    ['open a pool account', 'POST /v1/accounts', { body: { id: 'alice.pool', kind: 'pool' } }],
  ];
  test.each(ADMIN_ONLY)('a party key may not %s (403, nothing changes)', async (_what, route, change) => {
    await expectRefusedWithoutChange(route, { ...VALID[route], ...change, as: 'alice' }, 403, 'forbidden');
  });

  const CROSS_PARTY: [string, Route, Req][] = [
    ["read another party's account", 'GET /v1/accounts/:id', { as: 'carol', url: '/v1/accounts/alice.wallet' }],
    ["transfer out of another party's account", 'POST /v1/transfers', { as: 'carol', body: { fromAccountId: 'alice.wallet', toAccountId: 'carol.wallet', amount: 10 } }],
    ["hold funds on another party's account", 'POST /v1/holds', { as: 'carol', body: { accountId: 'alice.wallet', amount: 10 } }],
    ["read another party's hold", 'GET /v1/holds/:id', { as: 'carol', url: '/v1/holds/{open}' }],
    ["capture another party's hold", 'POST /v1/holds/:id/capture', { as: 'carol', url: '/v1/holds/{open}/capture', body: { amount: 10, toAccountId: 'carol.wallet' } }],
    ["capture another party's hold, even as its payee elsewhere", 'POST /v1/holds/:id/capture', { as: 'bob', url: '/v1/holds/{open}/capture', body: { amount: 10, toAccountId: 'bob.wallet' } }],
    ["release another party's hold", 'POST /v1/holds/:id/release', { as: 'carol', url: '/v1/holds/{open}/release' }],
    ["pay out of another party's account", 'POST /v1/payments', { as: 'carol', body: { ref: '{newRef}', fromAccountId: 'alice.wallet', toAccountId: 'carol.wallet', amount: 10 } }],
    ['read a payment it is not a party to', 'GET /v1/payments/:ref', { as: 'carol', url: '/v1/payments/{paid}' }],
    ['refund a payment it is not a party to', 'POST /v1/payments/:ref/refunds', { as: 'carol', url: '/v1/payments/{paid}/refunds', body: { amount: 1 } }],
  ];
  // what the caller may not see is not found, exactly as a missing one (notFound.test.ts compares the bodies)
  test.each(CROSS_PARTY)('a party may not %s (404: to it, the resource does not exist; nothing changes)', async (_what, route, req) => {
    await expectRefusedWithoutChange(route, req, 404, 'not_found');
  });
  test('a party may not refund a payment as its payer (403: it sees the payment, only its payee refunds; nothing changes)', async () => {
    await expectRefusedWithoutChange('POST /v1/payments/:ref/refunds', { as: 'alice', url: '/v1/payments/{paid}/refunds', body: { amount: 1 } }, 403, 'forbidden');
  });

  test("a party's event tail holds only events it is a party to", async () => {
    await untilTailsCaughtUp(stack.db.pool);
    const carol = await api(stack.app, keys.carol!).get('/v1/events?limit=1000');
    expect(carol.status).toBe(200);
    const subjects = carol.body.events.map((e: { subject: string }) => e.subject);
    expect(subjects).toEqual(expect.arrayContaining(['carol', 'carol.wallet']));
    expect(JSON.stringify(carol.body.events)).not.toMatch(/alice|bob/);
  });
});

// ---------------------------------------------------------------- 3. idempotency

describe('idempotency at the API', () => {
  const balanceOf = async (id: string) => (await api(stack.app, ADMIN_KEY).get(`/v1/accounts/${id}`)).body.balance as number;
  const transfersWithKey = async (key: string) =>
    (await stack.db.pool.query('select count(*)::int as n from transfers where idempotency_key = $1', [key])).rows[0].n as number;

  test('the same key and body returns the same transfer and moves the money once', async () => {
    const alice = api(stack.app, keys.alice!);
    const body = { fromAccountId: 'alice.wallet', toAccountId: 'carol.wallet', amount: 3, memo: 'once' };
    const [aliceBefore, carolBefore] = [await balanceOf('alice.wallet'), await balanceOf('carol.wallet')];
    const first = await alice.post('/v1/transfers', body, 'same-key');
    const again = await alice.post('/v1/transfers', body, 'same-key');
    expect(first.status).toBe(201);
    expect(again).toEqual(first);
    expect(await transfersWithKey(first.body.key)).toBe(1);
    expect(await balanceOf('alice.wallet')).toBe(aliceBefore - 3);
    expect(await balanceOf('carol.wallet')).toBe(carolBefore + 3);
  });

  test('concurrent requests with one key move the money once', async () => {
    const alice = api(stack.app, keys.alice!);
    const before = await balanceOf('alice.wallet');
    const body = { fromAccountId: 'alice.wallet', toAccountId: 'carol.wallet', amount: 2 };
    const results = await Promise.all(Array.from({ length: 6 }, () => alice.post('/v1/transfers', body, 'race-key')));
    expect(results.map((r) => r.status)).toEqual(Array(6).fill(201));
    expect(new Set(results.map((r) => r.body.id)).size).toBe(1);
    expect(await balanceOf('alice.wallet')).toBe(before - 2);
  });

  test('the same key with a different body is 409 idempotency_conflict and changes nothing', async () => {
    const body = { fromAccountId: 'alice.wallet', toAccountId: 'carol.wallet', amount: 4, memo: 'once' };
    const res = await expectRefusedWithoutChange('POST /v1/transfers', { as: 'alice', body, key: 'same-key' }, 409, 'idempotency_conflict');
    expect(res.body.error.details).toMatchObject({ operation: 'transfer:transfer' });
  });

  test('the same key on another operation is 409 idempotency_conflict and changes nothing', async () => {
    await expectRefusedWithoutChange('POST /v1/holds', { as: 'alice', body: { accountId: 'alice.wallet', amount: 3 }, key: 'same-key' }, 409, 'idempotency_conflict');
  });

  test('two parties using the same key string do not collide', async () => {
    const body = (from: string) => ({ fromAccountId: from, toAccountId: 'carol.wallet', amount: 5 });
    const [aliceBefore, bobBefore] = [await balanceOf('alice.wallet'), await balanceOf('bob.wallet')];
    const a = await api(stack.app, keys.alice!).post('/v1/transfers', body('alice.wallet'), 'shared-key');
    const b = await api(stack.app, keys.bob!).post('/v1/transfers', body('bob.wallet'), 'shared-key');
    expect([a.status, b.status]).toEqual([201, 201]);
    expect(a.body.id).not.toBe(b.body.id);
    expect(await balanceOf('alice.wallet')).toBe(aliceBefore - 5);
    expect(await balanceOf('bob.wallet')).toBe(bobBefore - 5);
  });

  test("a party whose id is 'admin' does not share the admin's keys", async () => {
    const admin = api(stack.app, ADMIN_KEY);
    const party = await admin.post('/v1/parties', { id: 'admin', name: 'A party called admin' });
    const impostor = api(stack.app, party.body.apiKey);
    expect((await impostor.post('/v1/accounts', { id: 'impostor.wallet' })).status).toBe(201);
    expect((await admin.post('/v1/deposits', { accountId: 'impostor.wallet', amount: 50 }, 'impostor-seed')).status).toBe(201);
    const byParty = await impostor.post('/v1/transfers', { fromAccountId: 'impostor.wallet', toAccountId: 'carol.wallet', amount: 5 }, 'admin-key-1');
    const byAdmin = await admin.post('/v1/deposits', { accountId: 'carol.wallet', amount: 7 }, 'admin-key-1');
    expect([byParty.status, byAdmin.status]).toEqual([201, 201]);
    expect(byAdmin.body).toMatchObject({ kind: 'deposit', amount: 7 });
  });

  test("a party's keys do not collide with the keys the payment workflows use", async () => {
    const admin = api(stack.app, ADMIN_KEY);
    const party = await admin.post('/v1/parties', { id: 'payment', name: 'A party called payment' });
    const payment = api(stack.app, party.body.apiKey);
    expect((await payment.post('/v1/accounts', { id: 'payment.wallet' })).status).toBe(201);
    expect((await admin.post('/v1/deposits', { accountId: 'payment.wallet', amount: 50 }, 'payment-seed')).status).toBe(201);
    const futureRef = ref('pre-empted');
    expect((await payment.post('/v1/transfers', { fromAccountId: 'payment.wallet', toAccountId: 'carol.wallet', amount: 5 }, futureRef)).status).toBe(201);
    const paid = await api(stack.app, keys.alice!).post('/v1/payments', { ref: futureRef, fromAccountId: 'alice.wallet', toAccountId: 'bob.wallet', amount: 5 });
    expect(paid.status).toBe(200);
    expect(paid.body).toMatchObject({ ref: futureRef, amount: 5, payer: 'alice' });
  });

  test('the longest key is accepted on every keyed route, for the longest party id and payment ref', async () => {
    const admin = api(stack.app, ADMIN_KEY);
    const party = await admin.post('/v1/parties', { id: 'l'.repeat(63), name: 'Longest id' });
    expect(party.status).toBe(201);
    const longest = api(stack.app, party.body.apiKey);
    const key = (c: string) => c.repeat(128);
    expect((await longest.post('/v1/accounts', { id: 'longest.wallet' })).status).toBe(201);
    expect((await admin.post('/v1/deposits', { accountId: 'longest.wallet', amount: 100 }, key('d'))).status).toBe(201);
    expect((await admin.post('/v1/withdrawals', { accountId: 'longest.wallet', amount: 1 }, key('w'))).status).toBe(201);
    expect((await longest.post('/v1/transfers', { fromAccountId: 'longest.wallet', toAccountId: 'bob.wallet', amount: 1 }, key('t'))).status).toBe(201);
    const hold = await longest.post('/v1/holds', { accountId: 'longest.wallet', amount: 10 }, key('h'));
    expect(hold.status).toBe(201);
    expect((await longest.post(`/v1/holds/${hold.body.id}/capture`, { amount: 4, toAccountId: 'bob.wallet' }, key('c'))).status).toBe(200);
    expect((await longest.post(`/v1/holds/${hold.body.id}/release`, undefined, key('r'))).status).toBe(200);
    const longRef = `${ref('long')}-`.padEnd(128, 'x');
    const pay = await longest.post('/v1/payments', { ref: longRef, fromAccountId: 'longest.wallet', toAccountId: 'bob.wallet', amount: 20 });
    expect(pay.status).toBe(200);
    expect((await longest.get(`/v1/payments/${longRef}`)).status).toBe(200);
    const refund = await api(stack.app, keys.bob!).post(`/v1/payments/${longRef}/refunds`, { amount: 5 }, key('f'));
    expect(refund.status).toBe(200);
    expect(refund.body).toMatchObject({ ref: longRef, amount: 5, refundedTotal: 5 });
    expect((await longest.get('/v1/accounts/longest.wallet')).body).toMatchObject({ balance: 100 - 1 - 1 - 4 - 20 + 5, held: 0 });
  });
});

// ---------------------------------------------------------------- 4. OpenAPI

describe('OpenAPI document', () => {
  let spec: any;
  beforeAll(async () => {
    spec = (await stack.app.inject({ method: 'GET', url: '/openapi.json' })).json();
  });
  const operation = (route: Route) => {
    const [method, path] = route.split(' ') as [string, string];
    return spec.paths[openApiPath(path)]?.[method.toLowerCase()];
  };

  test('documents exactly the /v1 routes the app registered, and all of those this file exercises', () => {
    const documented = Object.entries(spec.paths).flatMap(([path, ops]) => Object.keys(ops as object).map((m) => `${m.toUpperCase()} ${path}`));
    const registered = registeredRoutes(stack.app)
      .filter((r) => r.split(' ')[1]!.startsWith('/v1/'))
      .map(openApiPath);
    expect(registered.length).toBeGreaterThanOrEqual(ALL_ROUTES.length);
    expect(documented.sort()).toEqual(registered.sort());
    expect(documented).toEqual(expect.arrayContaining(ALL_ROUTES.map(openApiPath)));
  });

  test.each(ALL_ROUTES.filter((r) => ROUTES[r].body))('%s documents its JSON request body schema', (route) => {
    const schema = operation(route).requestBody?.content?.['application/json']?.schema;
    expect(schema).toMatchObject({ type: 'object' });
    expect(Object.keys(schema.properties ?? {}).length).toBeGreaterThan(0);
  });

  test('money amounts are documented as integers from 1 to 10^15', () => {
    const amount = operation('POST /v1/transfers').requestBody.content['application/json'].schema.properties.amount;
    // OpenAPI 3.0 spells "> 0" as minimum 0 with a boolean exclusiveMinimum
    expect(spec.openapi).toMatch(/^3\.0\./);
    expect(amount).toMatchObject({ type: 'integer', minimum: 0, exclusiveMinimum: true, maximum: 1e15 });
  });

  test.each(ALL_ROUTES.filter((r) => ROUTES[r].keyed))('%s documents the Idempotency-Key header as required', (route) => {
    const header = operation(route).parameters?.find((p: any) => p.in === 'header' && p.name === 'idempotency-key');
    expect(header).toMatchObject({ required: true, schema: { maxLength: 128 } });
  });

  test.each(ALL_ROUTES)('%s documents the error body for 400', (route) => {
    const schema = operation(route).responses?.['400']?.content?.['application/json']?.schema;
    expect(schema?.properties?.error?.required).toEqual(expect.arrayContaining(['code', 'message', 'details']));
  });
});

// ---------------------------------------------------------------- 5. metrics

describe('metrics', () => {
  const scrape = () => scrapeText(stack.app);
  const requests = (text: string, labels: Record<string, string>) => {
    const line = text
      .split('\n')
      .find((l) => l.startsWith('sluice_http_requests_total{') && Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`)));
    return line ? Number(line.split(' ').pop()) : 0;
  };

  test('/metrics counts requests by route pattern and status', async () => {
    const ok = { method: 'GET', route: '/v1/accounts/:id', status: '200' };
    const bad = { method: 'GET', route: '/v1/accounts/:id', status: '400' };
    const before = await scrape();
    const alice = api(stack.app, keys.alice!);
    await alice.get('/v1/accounts/alice.wallet');
    await alice.get('/v1/accounts/alice.wallet');
    await alice.get('/v1/accounts/bad%20id');
    const after = await scrape();
    expect(after).toContain('# TYPE sluice_http_requests_total counter');
    expect(requests(after, ok)).toBe(requests(before, ok) + 2);
    expect(requests(after, bad)).toBe(requests(before, bad) + 1);
    // labels carry the route pattern, never the ids in the URL
    expect(after).not.toMatch(/sluice_http_requests_total\{[^}]*alice\.wallet/);
  });
});

test('the server root sends a browser to the console, and answers a program without a key with where everything is; each place it names answers', async () => {
  const browser = await stack.app.inject({ method: 'GET', url: '/', headers: { accept: 'text/html,application/xhtml+xml,*/*;q=0.8' } });
  expect([browser.statusCode, browser.headers.location]).toEqual([302, '/console/']);
  const root = await stack.app.inject({ method: 'GET', url: '/' });
  expect(root.statusCode).toBe(200);
  const index = root.json();
  expect(index).toMatchObject({ name: 'sluice', docs: '/docs', openapi: '/openapi.json', console: '/console/', health: '/healthz', metrics: '/metrics' });
  for (const path of [index.docs, index.openapi, index.health, index.metrics, index.errors]) {
    // /metrics with the scrape token it takes (metricsCost.test.ts: without it, 401)
    const res = await stack.app.inject({ method: 'GET', url: path, headers: path === index.metrics ? METRICS_AUTH : {} });
    expect({ path, status: res.statusCode < 400 }).toEqual({ path, status: true });
  }
});

test('a body left out where every field is optional is taken as {}: a cancel with no body, or an empty JSON body, closes the stream; a route that needs fields still answers 400 and changes nothing', async () => {
  const alice = api(stack.app, keys.alice!);
  const open = (r: string) =>
    alice.post('/v1/streams', { ref: r, fromAccountId: 'alice.spend', toAccountId: 'bob.wallet', ratePerTick: 1, maxTotal: 5, tickIntervalMs: 3_600_000 });
  const send = (url: string, headers: Record<string, string>, payload?: string) =>
    stack.app.inject({ method: 'POST', url, headers: { authorization: `Bearer ${keys.alice}`, ...headers }, payload });
  for (const [name, headers, payload] of [
    ['no body', {}, undefined],
    ['an empty JSON body', { 'content-type': 'application/json' }, ''],
  ] as const) {
    const r = ref(`nobody-${name.length}`);
    expect((await open(r)).status).toBe(201);
    const res = await send(`/v1/streams/${r}/cancel`, headers, payload);
    expect({ name, status: res.statusCode }).toEqual({ name, status: 200 });
    expect(res.json()).toMatchObject({ ref: r, status: 'CONFIRMED', closedBy: 'alice' });
  }
  // a route with required fields still refuses no body, and changes nothing
  const before = await databaseSnapshot(stack);
  for (const payload of [undefined, '', 'null']) {
    const transfer = await send('/v1/transfers', { 'idempotency-key': ref('nobody-transfer'), ...(payload !== undefined && { 'content-type': 'application/json' }) }, payload);
    expect({ payload, status: transfer.statusCode, code: transfer.json().error?.code }).toEqual({ payload, status: 400, code: 'invalid_request' });
  }
  expect(await databaseSnapshot(stack)).toEqual(before);
});

test("a request Node's HTTP parser refuses (a control byte in a header, a space in the path) is answered in the error shape, not Fastify's default", async () => {
  const { connect } = await import('node:net');
  const address = await stack.app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = new URL(address);
  const raw = (request: string) =>
    new Promise<string>((resolve, reject) => {
      const socket = connect(Number(port), '127.0.0.1', () => socket.write(request));
      let answer = '';
      socket.on('data', (chunk) => (answer += chunk.toString('utf8')));
      socket.on('end', () => resolve(answer));
      socket.on('error', reject);
    });
  for (const request of [
    'GET /v1/accounts HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n',
    'GET /v1/acc ounts HTTP/1.1\r\nHost: x\r\n\r\n',
  ]) {
    const answer = await raw(request);
    const [head, payload] = answer.split('\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 400 /);
    expect(head).toMatch(/content-type: application\/json/i);
    const parsed = JSON.parse(payload!);
    expect(parsed).toEqual({ error: { code: 'invalid_request', message: expect.stringMatching(/^malformed HTTP request/), details: {}, request_id: expect.stringMatching(/^req_/), doc_url: '/errors#invalid_request' } });
    expect(head).toMatch(new RegExp(`x-request-id: ${parsed.error.request_id}`, 'i'));
  }
});

describe('errors in plain words', () => {
  const send = (method: 'GET' | 'POST', url: string, opts: { key?: string; idem?: string | null; payload?: string } = {}) =>
    stack.app.inject({
      method,
      url,
      headers: {
        authorization: `Bearer ${opts.key ?? ADMIN_KEY}`,
        ...(opts.payload !== undefined && { 'content-type': 'application/json' }),
        ...(opts.idem !== null && method === 'POST' && { 'idempotency-key': opts.idem ?? ref('plain') }),
      },
      payload: opts.payload,
    });
  test.each([
    ['a fractional amount', 'POST', '/v1/deposits', { payload: JSON.stringify({ accountId: 'alice.wallet', amount: 12.5 }) }, 'amount', 'amount must be a whole number of minor units, got 12.5'],
    ['an amount sent as a string', 'POST', '/v1/deposits', { payload: JSON.stringify({ accountId: 'alice.wallet', amount: '5' }) }, 'amount', 'amount must be a whole number of minor units, got "5"'],
    ['a missing field', 'POST', '/v1/deposits', { payload: JSON.stringify({ amount: 5 }) }, 'accountId', 'accountId is required'],
    ['no Idempotency-Key', 'POST', '/v1/deposits', { idem: null, payload: JSON.stringify({ accountId: 'alice.wallet', amount: 5 }) }, 'idempotency-key', 'the idempotency-key header is required'],
    ['a JSON null body where fields are required', 'POST', '/v1/transfers', { payload: 'null' }, undefined, 'the request needs a JSON object body'],
    ['a query integer out of range', 'GET', '/v1/events?limit=0', {}, 'limit', 'query parameter limit must be'],
    ['an id against its pattern', 'POST', '/v1/parties', { payload: JSON.stringify({ id: 'Has Space', name: 'x' }) }, 'id', 'id must be 1 to 63 lowercase letters, digits and _ . - (starting with a letter or digit), got "Has Space"'],
  ] as const)('%s: the message names the field and the rule, `param` names the field', async (_what, method, url, opts, param, message) => {
    const before = await databaseSnapshot(stack);
    const res = await send(method, url, opts);
    expect(res.statusCode).toBe(400);
    const { error } = res.json();
    expect(error.message.slice(0, message.length)).toBe(message);
    expect(error.message).not.toMatch(/expected|received|Invalid input/);
    expect(error.param).toBe(param);
    expect(await databaseSnapshot(stack)).toEqual(before);
  });

  test("every error carries the request's id (as in its X-Request-Id header) and a link to its code's entry in the error reference, which the API serves", async () => {
    const res = await send('POST', '/v1/transfers', { key: keys.alice, payload: JSON.stringify({ fromAccountId: 'alice.wallet', toAccountId: 'bob.wallet', amount: 10 ** 12 }) });
    expect(res.statusCode).toBe(422);
    const { error } = res.json();
    expect(error).toMatchObject({ code: 'insufficient_funds', request_id: res.headers['x-request-id'] });
    const link = new URL(error.doc_url);
    expect(link.hash).toBe('#insufficient_funds');
    const reference = await stack.app.inject({ method: 'GET', url: link.pathname });
    expect(reference.statusCode).toBe(200);
    expect(reference.headers['content-type']).toMatch(/text\/html/);
    expect(reference.body).toContain('id="insufficient_funds"');
    // a caller's own request id (a plain token) is kept, so its logs and ours join up; anything else is replaced
    const mine = await stack.app.inject({ method: 'GET', url: '/v1/nothing', headers: { 'x-request-id': 'client-trace-0001' } });
    expect([mine.headers['x-request-id'], mine.json().error.request_id]).toEqual(['client-trace-0001', 'client-trace-0001']);
    const odd = await stack.app.inject({ method: 'GET', url: '/v1/nothing', headers: { 'x-request-id': 'a b' } });
    expect(odd.headers['x-request-id']).toMatch(/^req_[0-9a-f]{16}$/);
    // a success carries the header too
    expect((await stack.app.inject({ method: 'GET', url: '/healthz' })).headers['x-request-id']).toMatch(/^req_/);
  });
});
