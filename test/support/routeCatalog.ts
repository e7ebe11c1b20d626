import { randomBytes } from 'node:crypto';
import { ADMIN_KEY, api, METRICS_TOKEN, type TestStack } from './stack';

/**
 * Every HTTP route of the app, declared once: a request its natural caller may send,
 * and the status each kind of caller gets for it. The authorisation matrix, the API
 * fuzzer and api.test.ts read this table; a route the app registers with no entry
 * here fails the matrix, so a new route cannot ship without its authorisation rule.
 *
 * Fixture (`buildFixture`): parties alice, bob, carol (related to nothing), dave (an
 * operator of alice) and the entity acme-<run> (key 'acme'). alice.wallet has 1000 in, 200 paid to bob
 * ({paid}), 100 held ({open}), a released hold ({closed}): available 700. alice.eur
 * is in another currency. Streams, jobs and the hold to release are paid from
 * alice.spend, so alice.wallet keeps those figures for the bad-input table. alice's
 * sessions ({session} takes requests, {sessionToClose}/{sessionToClose2} are closed by
 * the matrix) are funded from alice.spend too.
 */

export type Method = 'GET' | 'POST';
export type Who = 'admin' | 'alice' | 'bob' | 'carol' | 'dave' | 'acme' | 'nobody' | 'wrong-key' | 'scraper';
/** The callers the matrix tries on every route (after the natural caller). */
export type CallerKind = 'none' | 'wrong' | 'other' | 'admin';
export const CALLER_KINDS: CallerKind[] = ['none', 'wrong', 'other', 'admin'];
/** Another party's key: carol owns nothing any route names. */
export const OTHER_PARTY: Who = 'carol';
export const WRONG_KEY = 'sk_alice_not-a-real-key';

/** One request. `{token}`s in url and body are filled from the fixture (see `Fixture.fill`). */
export interface Req {
  as: Who;
  url?: string;
  body?: unknown;
  /** A payload sent verbatim (malformed JSON, a wrong media type…). */
  raw?: string;
  type?: string;
  /** Idempotency-Key: omitted = a fresh one on routes that take it; null = none sent. */
  key?: string | null;
}

export interface RouteEntry {
  /** `METHOD /path` as the app registers it. */
  route: string;
  /** Takes an Idempotency-Key header (required). */
  keyed: boolean;
  /** Takes a JSON body. */
  body: boolean;
  /** Starts or drives a workflow: slower, and the fuzzer sends it fewer requests. */
  workflow?: boolean;
  /** The natural caller's request. */
  valid: Req;
  /** What the admin sends instead, where the natural request names nothing the admin can act on. */
  asAdmin?: Partial<Req>;
  /**
   * The status each kind of caller gets for `valid`. The natural caller itself gets
   * the admin's status (`asAdmin` names a second resource where the first call uses
   * one up: a hold released, a stream cancelled).
   */
  expect: Record<CallerKind, number>;
  /** The natural caller's status where it is not the admin's (GET /metrics: only the scrape token opens it). */
  natural?: number;
  /** POST /v1/streams/batch answers 200 and refuses per item: the items' statuses per caller kind. */
  items?: Partial<Record<CallerKind, number>>;
}

const PUBLIC = { none: 200, wrong: 200, other: 200, admin: 200 };
/**
 * A route on a resource the other party may not see (an account, a stream, a job…
 * addressed by id): it is not found, exactly as a missing one (notFound.test.ts).
 */
const OWN = (ok: number) => ({ none: 401, wrong: 401, other: 404, admin: ok });
/** A route on a resource the other party may see but not change (a seller's rates are public): refused. */
const SEEN = (ok: number) => ({ none: 401, wrong: 401, other: 403, admin: ok });
/** A route any party may call (it answers with the caller's own view). */
const ANY_PARTY = (ok: number) => ({ none: 401, wrong: 401, other: ok, admin: ok });
/** An admin-only route. */
const ADMIN_ONLY = (ok: number) => ({ none: 401, wrong: 401, other: 403, admin: ok });

// a stream that bills its first tick at open and no other while the tests run
const STREAM = { fromAccountId: 'alice.spend', toAccountId: 'bob.wallet', ratePerTick: 1, maxTotal: 10, tickIntervalMs: 3_600_000 };

export const ROUTE_CATALOG: RouteEntry[] = [
  // ---- public
  { route: 'GET /', keyed: false, body: false, valid: { as: 'nobody' }, expect: PUBLIC },
  { route: 'GET /healthz', keyed: false, body: false, valid: { as: 'nobody' }, expect: PUBLIC },
  // the scrape token (SLUICE_METRICS_TOKEN) and nothing else: no API key, not even the admin's
  { route: 'GET /metrics', keyed: false, body: false, valid: { as: 'scraper' }, natural: 200, expect: { none: 401, wrong: 401, other: 401, admin: 401 } },
  { route: 'GET /openapi.json', keyed: false, body: false, valid: { as: 'nobody' }, expect: PUBLIC },
  { route: 'GET /errors', keyed: false, body: false, valid: { as: 'nobody' }, expect: PUBLIC },
  { route: 'GET /docs', keyed: false, body: false, valid: { as: 'nobody' }, expect: PUBLIC },
  { route: 'GET /docs/', keyed: false, body: false, valid: { as: 'nobody' }, expect: PUBLIC },
  { route: 'GET /docs/json', keyed: false, body: false, valid: { as: 'nobody' }, expect: PUBLIC },
  { route: 'GET /docs/yaml', keyed: false, body: false, valid: { as: 'nobody' }, expect: PUBLIC },
  // the UI's page lives at /docs/: its old address redirects there
  { route: 'GET /docs/static/index.html', keyed: false, body: false, valid: { as: 'nobody' }, expect: { none: 302, wrong: 302, other: 302, admin: 302 } },
  { route: 'GET /docs/static/swagger-initializer.js', keyed: false, body: false, valid: { as: 'nobody' }, expect: PUBLIC },
  { route: 'GET /docs/*', keyed: false, body: false, valid: { as: 'nobody', url: '/docs/static/swagger-ui.css' }, expect: PUBLIC },
  // the console's static files (built by the jest global setup): public, they hold no data; /console redirects to /console/
  { route: 'GET /console', keyed: false, body: false, valid: { as: 'nobody' }, expect: { none: 301, wrong: 301, other: 301, admin: 301 } },
  { route: 'GET /console*', keyed: false, body: false, valid: { as: 'nobody', url: '/console/' }, expect: PUBLIC },
  { route: 'GET /v1/console/config', keyed: false, body: false, valid: { as: 'alice' }, expect: ANY_PARTY(200) },

  // ---- parties, accounts, money, holds, audit, events
  { route: 'POST /v1/parties', keyed: false, body: true, valid: { as: 'admin', body: { id: '{newParty}', name: 'Dave' } }, expect: ADMIN_ONLY(201) },
  { route: 'GET /v1/parties', keyed: false, body: false, valid: { as: 'admin', url: '/v1/parties?limit=10' }, expect: ADMIN_ONLY(200) },

  // ---- API keys: a party's own under /v1/keys (another party's key is not found), any party's for the admin
  // alice's second key; carol's second; the admin names a party of its own ({keyParty}), so no one passes 2 active keys
  { route: 'POST /v1/keys', keyed: false, body: true, valid: { as: 'alice', body: {} }, asAdmin: { body: { party: '{keyParty}' } }, expect: ANY_PARTY(201) },
  { route: 'GET /v1/keys', keyed: false, body: false, valid: { as: 'alice', url: '/v1/keys?limit=10' }, expect: ANY_PARTY(200) },
  // bob's second key, revoked by bob (he still calls with his first); revoking again is the same answer
  { route: 'POST /v1/keys/:id/revoke', keyed: false, body: false, valid: { as: 'bob', url: '/v1/keys/{bobKey}/revoke' }, expect: OWN(200) },
  { route: 'POST /v1/parties/:id/keys', keyed: false, body: false, valid: { as: 'admin', url: '/v1/parties/{keyParty2}/keys' }, expect: ADMIN_ONLY(201) },
  { route: 'GET /v1/parties/:id/keys', keyed: false, body: false, valid: { as: 'admin', url: '/v1/parties/alice/keys?limit=10' }, expect: ADMIN_ONLY(200) },
  { route: 'POST /v1/parties/:id/keys/:keyId/revoke', keyed: false, body: false, valid: { as: 'admin', url: '/v1/parties/bob/keys/{bobKey}/revoke' }, expect: ADMIN_ONLY(200) },
  // a party opens accounts for itself: carol naming alice as the owner is refused
  { route: 'POST /v1/accounts', keyed: false, body: true, valid: { as: 'alice', body: { id: '{newAccount}', ownerId: 'alice' } }, expect: SEEN(201) },
  // a party lists its own accounts: ownerId may name itself, another party is refused (403), never ignored
  { route: 'GET /v1/accounts', keyed: false, body: false, valid: { as: 'alice', url: '/v1/accounts?ownerId=alice' }, expect: SEEN(200) },
  { route: 'GET /v1/accounts/:id', keyed: false, body: false, valid: { as: 'alice', url: '/v1/accounts/alice.wallet' }, expect: OWN(200) },
  { route: 'POST /v1/deposits', keyed: true, body: true, valid: { as: 'admin', body: { accountId: 'alice.wallet', amount: 10 } }, expect: ADMIN_ONLY(201) },
  { route: 'POST /v1/withdrawals', keyed: true, body: true, valid: { as: 'admin', body: { accountId: 'alice.wallet', amount: 10 } }, expect: ADMIN_ONLY(201) },
  { route: 'POST /v1/transfers', keyed: true, body: true, valid: { as: 'alice', body: { fromAccountId: 'alice.wallet', toAccountId: 'bob.wallet', amount: 10 } }, expect: OWN(201) },
  { route: 'POST /v1/holds', keyed: true, body: true, valid: { as: 'alice', body: { accountId: 'alice.wallet', amount: 10 } }, expect: OWN(201) },
  { route: 'GET /v1/holds/:id', keyed: false, body: false, valid: { as: 'alice', url: '/v1/holds/{open}' }, expect: OWN(200) },
  {
    route: 'POST /v1/holds/:id/capture',
    keyed: true,
    body: true,
    valid: { as: 'alice', url: '/v1/holds/{open}/capture', body: { amount: 10, toAccountId: 'bob.wallet' } },
    // a hold captures once (a multi-capture hold is a stream's)
    asAdmin: { url: '/v1/holds/{open2}/capture' },
    expect: OWN(200),
  },
  { route: 'POST /v1/holds/:id/release', keyed: true, body: false, valid: { as: 'alice', url: '/v1/holds/{toRelease}/release' }, asAdmin: { url: '/v1/holds/{toRelease2}/release' }, expect: OWN(200) },
  { route: 'GET /v1/audit', keyed: false, body: false, valid: { as: 'admin' }, expect: ADMIN_ONLY(200) },
  // settles what no running workflow holds: the admin's alone
  { route: 'POST /v1/reconcile', keyed: false, body: true, workflow: true, valid: { as: 'admin', body: {} }, expect: ADMIN_ONLY(200) },
  // a party's tail holds its own events only
  { route: 'GET /v1/events', keyed: false, body: false, valid: { as: 'alice', url: '/v1/events?after=0&limit=10' }, expect: ANY_PARTY(200) },

  // ---- payments
  {
    route: 'POST /v1/payments',
    keyed: false,
    body: true,
    workflow: true,
    valid: { as: 'alice', body: { ref: '{newRef}', fromAccountId: 'alice.wallet', toAccountId: 'bob.wallet', amount: 10 } },
    expect: OWN(200),
  },
  { route: 'GET /v1/payments/:ref', keyed: false, body: false, valid: { as: 'alice', url: '/v1/payments/{paid}' }, expect: OWN(200) },
  {
    route: 'POST /v1/payments/:ref/refunds',
    keyed: true,
    body: true,
    workflow: true,
    valid: { as: 'bob', url: '/v1/payments/{paid}/refunds', body: { amount: 1 } },
    expect: OWN(200),
  },

  // ---- streams
  { route: 'POST /v1/streams', keyed: false, body: true, workflow: true, valid: { as: 'alice', body: { ref: '{newRef}', ...STREAM } }, expect: OWN(201) },
  {
    route: 'POST /v1/streams/batch',
    keyed: false,
    body: true,
    workflow: true,
    valid: { as: 'alice', body: { items: [{ op: 'open', ref: '{newRef}', ...STREAM }] } },
    // the batch answers 200; each item is refused or done on its own
    expect: { none: 401, wrong: 401, other: 200, admin: 200 },
    // carol opens from alice.spend: an account it may not see, not found
    items: { other: 404, admin: 201 },
  },
  // a party lists the streams it is a party to (carol's list is empty, not refused)
  { route: 'GET /v1/streams', keyed: false, body: false, valid: { as: 'alice', url: '/v1/streams?limit=10' }, expect: ANY_PARTY(200) },
  { route: 'GET /v1/streams/:ref', keyed: false, body: false, valid: { as: 'alice', url: '/v1/streams/{stream}' }, expect: OWN(200) },
  { route: 'GET /v1/streams/:ref/ticks', keyed: false, body: false, valid: { as: 'alice', url: '/v1/streams/{stream}/ticks?after=0&limit=10' }, expect: OWN(200) },
  { route: 'POST /v1/streams/:ref/cancel', keyed: false, body: true, workflow: true, valid: { as: 'alice', url: '/v1/streams/{cancelMe}/cancel', body: { reason: 'done' } }, asAdmin: { url: '/v1/streams/{cancelMe2}/cancel' }, expect: OWN(200) },
  { route: 'POST /v1/parties/:id/heartbeat', keyed: false, body: false, valid: { as: 'alice', url: '/v1/parties/alice/heartbeat' }, expect: OWN(200) },

  // ---- stream controls
  {
    route: 'POST /v1/streams/:ref/deposits',
    keyed: true,
    body: true,
    valid: { as: 'alice', url: '/v1/streams/{stream}/deposits', body: { fromAccountId: 'alice.spend', amount: 5 } },
    expect: OWN(201),
  },
  { route: 'POST /v1/streams/:ref/pause', keyed: false, body: false, workflow: true, valid: { as: 'alice', url: '/v1/streams/{toPause}/pause' }, asAdmin: { url: '/v1/streams/{toPause2}/pause' }, expect: OWN(200) },
  { route: 'POST /v1/streams/:ref/resume', keyed: false, body: false, workflow: true, valid: { as: 'alice', url: '/v1/streams/{paused}/resume' }, asAdmin: { url: '/v1/streams/{paused2}/resume' }, expect: OWN(200) },
  { route: 'POST /v1/streams/:ref/rate', keyed: false, body: true, valid: { as: 'alice', url: '/v1/streams/{stream}/rate', body: { ratePerTick: 2 } }, expect: OWN(200) },
  { route: 'POST /v1/streams/:ref/rate/accept', keyed: false, body: true, valid: { as: 'bob', url: '/v1/streams/{consent}/rate/accept', body: { ratePerTick: 3 } }, asAdmin: { url: '/v1/streams/{consent2}/rate/accept' }, expect: OWN(200) },
  {
    route: 'POST /v1/streams/:ref/members',
    keyed: false,
    body: true,
    valid: { as: 'alice', url: '/v1/streams/{dist}/members', body: { members: [{ accountId: 'bob.wallet', weight: 2 }] } },
    expect: OWN(200),
  },
  { route: 'POST /v1/streams/:ref/members/:accountId/leave', keyed: false, body: false, valid: { as: 'bob', url: '/v1/streams/{dist}/members/bob.extra/leave' }, asAdmin: { url: '/v1/streams/{dist}/members/dave.wallet/leave' }, expect: OWN(200) },

  // ---- operators
  {
    route: 'POST /v1/parties/:id/operators',
    keyed: false,
    body: true,
    valid: { as: 'alice', url: '/v1/parties/alice/operators', body: { operator: 'dave', scopes: ['open', 'pause', 'cancel'], dailyLimit: 100 } },
    expect: OWN(201),
  },
  { route: 'POST /v1/parties/:id/operators/:operator/revoke', keyed: false, body: false, valid: { as: 'alice', url: '/v1/parties/alice/operators/dave/revoke' }, expect: OWN(200) },
  { route: 'GET /v1/parties/:id/operators', keyed: false, body: false, valid: { as: 'alice', url: '/v1/parties/alice/operators' }, expect: OWN(200) },

  // ---- pool and jobs
  { route: 'GET /v1/grants', keyed: false, body: false, valid: { as: 'alice', url: '/v1/grants?limit=10' }, expect: ANY_PARTY(200) },
  { route: 'GET /v1/pool', keyed: false, body: false, valid: { as: 'alice' }, expect: ANY_PARTY(200) },
  // a party estimates for itself; the admin names the payer
  { route: 'GET /v1/estimate', keyed: false, body: false, valid: { as: 'alice', url: '/v1/estimate?units=10' }, asAdmin: { url: '/v1/estimate?units=10&payer=alice' }, expect: ANY_PARTY(200) },
  { route: 'POST /v1/parties/:id/tier', keyed: false, body: true, valid: { as: 'admin', url: '/v1/parties/alice/tier', body: { tier: 'new' } }, expect: ADMIN_ONLY(200) },
  {
    route: 'POST /v1/jobs',
    keyed: false,
    body: true,
    workflow: true,
    valid: { as: 'alice', body: { jobId: '{newRef}', accountId: 'alice.spend', estimatedCost: 10, work: { description: 'resize images' } } },
    expect: OWN(201),
  },
  { route: 'GET /v1/jobs/:id', keyed: false, body: false, valid: { as: 'alice', url: '/v1/jobs/{job}' }, expect: OWN(200) },
  { route: 'POST /v1/jobs/:id/payment', keyed: false, body: false, workflow: true, valid: { as: 'alice', url: '/v1/jobs/{job}/payment' }, asAdmin: { url: '/v1/jobs/{job2}/payment' }, expect: OWN(200) },
  { route: 'POST /v1/jobs/:id/cancel', keyed: false, body: true, workflow: true, valid: { as: 'alice', url: '/v1/jobs/{jobToCancel}/cancel', body: { reason: 'changed my mind' } }, asAdmin: { url: '/v1/jobs/{jobToCancel2}/cancel' }, expect: OWN(200) },

  // ---- sessions (alice's, funded from alice.spend; tier new: every request is gated and paid from the balance)
  { route: 'POST /v1/sessions', keyed: false, body: true, workflow: true, valid: { as: 'alice', body: { sessionId: '{newRef}', accountId: 'alice.spend', amount: 50 } }, expect: OWN(201) },
  { route: 'GET /v1/sessions/:id', keyed: false, body: false, valid: { as: 'alice', url: '/v1/sessions/{session}' }, expect: OWN(200) },
  {
    route: 'POST /v1/sessions/:id/requests',
    keyed: false,
    body: true,
    workflow: true,
    valid: { as: 'alice', url: '/v1/sessions/{session}/requests', body: { requestId: '{newRef}', estimatedCost: 5, work: { description: 'summarise a page', simulate: { actualCost: 4 } } } },
    expect: OWN(201),
  },
  { route: 'POST /v1/sessions/:id/close', keyed: false, body: false, workflow: true, valid: { as: 'alice', url: '/v1/sessions/{sessionToClose}/close' }, asAdmin: { url: '/v1/sessions/{sessionToClose2}/close' }, expect: OWN(200) },

  // ---- entities and subaccounts
  {
    route: 'POST /v1/entities',
    keyed: false,
    body: true,
    valid: { as: 'admin', body: { id: '{newParty}', name: 'Another entity', collateral: 1, funding: 0, challengeMs: 60_000, maxDrawdownBps: 2500, inactivityMs: 86_400_000, assessEveryMs: 3_600_000 } },
    expect: ADMIN_ONLY(201),
  },
  { route: 'GET /v1/entities', keyed: false, body: false, valid: { as: 'admin', url: '/v1/entities?limit=10' }, expect: ADMIN_ONLY(200) },
  { route: 'GET /v1/entities/:id', keyed: false, body: false, valid: { as: 'acme', url: '/v1/entities/{entity}' }, expect: OWN(200) },
  { route: 'POST /v1/entities/:id/subaccounts', keyed: false, body: true, workflow: true, valid: { as: 'acme', url: '/v1/entities/{entity}/subaccounts', body: {} }, expect: OWN(201) },
  { route: 'GET /v1/entities/:id/subaccounts', keyed: false, body: false, valid: { as: 'acme', url: '/v1/entities/{entity}/subaccounts' }, expect: OWN(200) },
  { route: 'GET /v1/subaccounts/:id', keyed: false, body: false, valid: { as: 'acme', url: '/v1/subaccounts/{sub}' }, expect: OWN(200) },
  { route: 'POST /v1/subaccounts/:id/eliminate', keyed: false, body: true, workflow: true, valid: { as: 'acme', url: '/v1/subaccounts/{subToEliminate}/eliminate', body: {} }, asAdmin: { url: '/v1/subaccounts/{subToEliminate2}/eliminate' }, expect: OWN(200) },
  { route: 'GET /v1/entities/:id/dashboard', keyed: false, body: false, valid: { as: 'acme', url: '/v1/entities/{entity}/dashboard' }, expect: OWN(200) },
  { route: 'GET /v1/entities/:id/deliveries', keyed: false, body: false, valid: { as: 'acme', url: '/v1/entities/{entity}/deliveries' }, expect: OWN(200) },
  { route: 'GET /v1/entities/:id/ledger', keyed: false, body: false, valid: { as: 'acme', url: '/v1/entities/{entity}/ledger?step=604800' }, expect: OWN(200) },
  // not money: a round of checkpoints taken twice is two rounds of figures, so it takes no key
  { route: 'POST /v1/entities/:id/checkpoints', keyed: false, body: false, valid: { as: 'acme', url: '/v1/entities/{entity}/checkpoints' }, expect: OWN(201) },
  // an entity's webhook secret. No Idempotency-Key: a
  // replayed answer would have to keep the secret to repeat it, and a second rotation loses nothing (it keeps
  // the previous secret and replaces the new one); a retire is a no-op the second time
  { route: 'POST /v1/entities/:id/webhook-secret/rotate', keyed: false, body: true, valid: { as: 'acme', url: '/v1/entities/{entity}/webhook-secret/rotate', body: { overlapS: 3600 } }, expect: OWN(201) },
  { route: 'POST /v1/entities/:id/webhook-secret/retire', keyed: false, body: false, valid: { as: 'acme', url: '/v1/entities/{entity}/webhook-secret/retire' }, expect: OWN(200) },

  // ---- rate board and the crown
  // a seller's rates are public (GET /v1/rates/events): another party sees the seller, and is refused its rates
  { route: 'POST /v1/sellers/:id/rates', keyed: false, body: true, valid: { as: 'bob', url: '/v1/sellers/bob/rates', body: { ratePerTick: 5, accountId: 'bob.wallet' } }, expect: SEEN(201) },
  { route: 'POST /v1/sellers/:id/state', keyed: false, body: true, valid: { as: 'bob', url: '/v1/sellers/bob/state', body: { active: true } }, expect: SEEN(201) },
  { route: 'GET /v1/rates/events', keyed: false, body: false, valid: { as: 'alice' }, expect: ANY_PARTY(200) },
  { route: 'POST /v1/crown/rewards', keyed: false, body: true, valid: { as: 'admin', body: { from: 0, to: 1, budget: 1 } }, expect: ADMIN_ONLY(200) },
  { route: 'GET /v1/crown', keyed: false, body: false, valid: { as: 'alice' }, expect: ANY_PARTY(200) },
  // the crown's grid, a page at a time: any party reads it, as it reads GET /v1/crown
  { route: 'GET /v1/crown/timeline', keyed: false, body: false, valid: { as: 'alice', url: '/v1/crown/timeline?market=default&limit=10' }, expect: ANY_PARTY(200) },
  // markets are the admin's to create (a direction never changes); any party lists them to post to one
  { route: 'POST /v1/markets', keyed: false, body: true, valid: { as: 'admin', body: { id: '{newParty}', direction: 'bid' } }, expect: ADMIN_ONLY(201) },
  { route: 'GET /v1/markets', keyed: false, body: false, valid: { as: 'alice', url: '/v1/markets?limit=10' }, expect: ANY_PARTY(200) },
];

export const CATALOG: Record<string, RouteEntry> = Object.fromEntries(ROUTE_CATALOG.map((e) => [e.route, e]));

/** `METHOD /path` of every route the app registered (HEAD excepted), from `printRoutes`' tree. */
export function registeredRoutes(app: TestStack['app']): string[] {
  const out: string[] = [];
  const prefixes: string[] = [];
  for (const line of app.printRoutes({ commonPrefix: false }).split('\n')) {
    const m = /^([│ ]*)[├└]── (.+?)(?: \(([^)]+)\))?$/.exec(line);
    if (!m) continue;
    const depth = m[1]!.length / 4;
    prefixes.length = depth;
    prefixes.push(m[2]!);
    for (const method of m[3]?.split(', ') ?? []) if (method !== 'HEAD') out.push(`${method} ${prefixes.join('')}`);
  }
  return out;
}

/** A route as the app registers it (`/v1/streams/:ref`) as the OpenAPI document writes it (`/v1/streams/{ref}`). */
export const openApiPath = (route: string) => route.replace(/:(\w+)/g, '{$1}');

export const ERROR_SHAPE = { error: expect.objectContaining({ code: expect.any(String), message: expect.any(String), details: expect.any(Object), request_id: expect.stringMatching(/^req_[0-9a-f]{16}$/), doc_url: expect.stringMatching(/\/errors#[a-z_]+$/) }) };

export interface Response {
  status: number;
  contentType: string;
  body: any;
  /** What was sent, its tokens filled in: the url and the JSON body (undefined: none or raw). */
  sent: { url: string; body?: unknown };
}

export type Fixture = Awaited<ReturnType<typeof buildFixture>>;

/**
 * The fixture every route's `valid` request refers to, built through the API as
 * each caller would. Refs carry this file's run id: workflow ids are shared by every
 * test file on the dev server.
 */
export async function buildFixture(stack: TestStack) {
  const run = randomBytes(4).toString('hex');
  let uniq = 0;
  const fresh = (prefix: string) => `${prefix}-${run}-${++uniq}`;
  const ref = (name: string) => `cat-${run}-${name}`;
  const keys: Record<string, string> = {};
  const tokens: Record<string, string | number> = {};

  const authHeader = (as: Who): Record<string, string> => {
    if (as === 'nobody') return {};
    if (as === 'wrong-key') return { authorization: `Bearer ${WRONG_KEY}` };
    if (as === 'scraper') return { authorization: `Bearer ${METRICS_TOKEN}` };
    return { authorization: `Bearer ${as === 'admin' ? ADMIN_KEY : keys[as]}` };
  };

  /** Replaces `{name}` tokens in strings (deeply): fixture values, or fresh ids for {newRef}, {newParty}, {newAccount}. */
  function fill<T>(value: T): T {
    if (typeof value === 'string') {
      return value.replace(/\{(\w+)\}/g, (_, name: string) => {
        if (name === 'newRef') return ref(`new-${++uniq}`);
        if (name === 'newParty') return `p${run}-${++uniq}`;
        if (name === 'newAccount') return `alice.n-${run}-${++uniq}`;
        if (!(name in tokens)) throw new Error(`no fixture token {${name}}`);
        return String(tokens[name]);
      }) as T;
    }
    if (Array.isArray(value)) return value.map(fill) as T;
    if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, fill(v)])) as T;
    return value;
  }

  /** Sends `req` to `route` (its url and body filled in; a fresh Idempotency-Key on a keyed route unless `key` says otherwise). */
  async function send(route: string, req: Req): Promise<Response> {
    const [method, path] = route.split(' ') as [Method, string];
    const entry = CATALOG[route];
    const headers: Record<string, string> = { ...authHeader(req.as) };
    if (entry?.keyed && req.key !== null) headers['idempotency-key'] = req.key ?? fresh('key');
    let payload: string | undefined;
    let sentBody: unknown;
    if (req.raw !== undefined) {
      payload = req.raw;
      headers['content-type'] = req.type ?? 'application/json';
    } else if (req.body !== undefined) {
      sentBody = fill(req.body);
      payload = JSON.stringify(sentBody);
      headers['content-type'] = 'application/json';
    }
    const url = fill(req.url ?? path);
    const res = await stack.app.inject({ method, url, payload, headers });
    let body: any;
    try {
      body = res.json();
    } catch {
      body = res.body;
    }
    return { status: res.statusCode, contentType: String(res.headers['content-type']), body, sent: { url, body: sentBody } };
  }

  /** The request a kind of caller sends on a route: the natural one, under another key. */
  function requestFor(entry: RouteEntry, kind: CallerKind): Req {
    const as: Who = { none: 'nobody', wrong: 'wrong-key', other: OTHER_PARTY, admin: 'admin' }[kind] as Who;
    return { ...entry.valid, ...(kind === 'admin' ? entry.asAdmin : {}), as };
  }

  const admin = api(stack.app, ADMIN_KEY);
  const as = (who: string) => api(stack.app, keys[who]);
  const ok = (what: string, res: { status: number; body: unknown }) => {
    if (res.status >= 300) throw new Error(`fixture: ${what}: ${res.status} ${JSON.stringify(res.body)}`);
    return res.body as any;
  };

  for (const id of ['alice', 'bob', 'carol', 'dave']) {
    keys[id] = ok(`party ${id}`, await admin.post('/v1/parties', { id, name: id })).apiKey;
    ok(`${id}.wallet`, await as(id).post('/v1/accounts', { id: `${id}.wallet` }));
  }
  ok('alice.eur', await as('alice').post('/v1/accounts', { id: 'alice.eur', currency: 'EUR' }));
  ok('alice.spend', await as('alice').post('/v1/accounts', { id: 'alice.spend' }));
  ok('bob.extra', await as('bob').post('/v1/accounts', { id: 'bob.extra' }));
  ok('seed alice', await admin.post('/v1/deposits', { accountId: 'alice.wallet', amount: 1000 }, 'seed-alice'));
  ok('seed bob', await admin.post('/v1/deposits', { accountId: 'bob.wallet', amount: 500 }, 'seed-bob'));
  ok('seed alice.spend', await admin.post('/v1/deposits', { accountId: 'alice.spend', amount: 1_000_000 }, 'seed-alice-spend'));

  // ledger: a paid payment, an open hold, a released one, a hold to release
  tokens.paid = ref('paid');
  ok('paid', await as('alice').post('/v1/payments', { ref: tokens.paid, fromAccountId: 'alice.wallet', toAccountId: 'bob.wallet', amount: 200 }));
  tokens.open = ok('open hold', await as('alice').post('/v1/holds', { accountId: 'alice.wallet', amount: 100 }, 'seed-open')).id;
  tokens.closed = ok('closed hold', await as('alice').post('/v1/holds', { accountId: 'alice.wallet', amount: 50 }, 'seed-closed')).id;
  ok('release', await as('alice').post(`/v1/holds/${tokens.closed}/release`, undefined, 'seed-release'));
  tokens.toRelease = ok('hold to release', await as('alice').post('/v1/holds', { accountId: 'alice.spend', amount: 30 }, 'seed-to-release')).id;
  tokens.open2 = ok('second open hold', await as('alice').post('/v1/holds', { accountId: 'alice.spend', amount: 100 }, 'seed-open-2')).id;
  tokens.toRelease2 = ok('hold to release', await as('alice').post('/v1/holds', { accountId: 'alice.spend', amount: 30 }, 'seed-to-release-2')).id;

  // streams: running, to pause, paused, to cancel, with a rate proposal waiting for bob (two of each
  // that a call uses up: the natural caller's and the admin's), a distribution
  const open = async (name: string, body: Record<string, unknown>) => {
    tokens[name] = ref(name);
    ok(`stream ${name}`, await as('alice').post('/v1/streams', { ...STREAM, maxTotal: 1000, ref: tokens[name], ...body }));
  };
  await open('stream', {});
  for (const two of ['', '2']) {
    await open(`toPause${two}`, {});
    await open(`paused${two}`, {});
    ok('pause', await as('alice').post(`/v1/streams/${tokens[`paused${two}`]}/pause`));
    await open(`cancelMe${two}`, {});
    await open(`consent${two}`, { rateConsent: 'payee' });
    ok('proposal', await as('alice').post(`/v1/streams/${tokens[`consent${two}`]}/rate`, { ratePerTick: 3 }));
  }
  const members = ['bob.wallet', 'bob.extra', 'dave.wallet'].map((accountId) => ({ accountId, weight: 1 }));
  await open('dist', { toAccountId: undefined, members });

  // keys: bob's second (to revoke), and two parties of the admin's key routes
  tokens.bobKey = ok('bob key', await as('bob').post('/v1/keys', {})).id;
  for (const name of ['keyParty', 'keyParty2']) {
    tokens[name] = `k${run}-${name.toLowerCase()}`;
    ok(name, await admin.post('/v1/parties', { id: tokens[name], name }));
  }

  // operators: dave may act for alice
  ok('grant', await as('alice').post('/v1/parties/alice/operators', { operator: 'dave', scopes: ['open', 'pause', 'cancel'], dailyLimit: 100 }));

  // jobs (tier new: gated, they wait for their payment)
  for (const name of ['job', 'job2', 'jobToCancel', 'jobToCancel2']) {
    tokens[name] = ref(name);
    ok(name, await as('alice').post('/v1/jobs', { jobId: tokens[name], accountId: 'alice.spend', estimatedCost: 10, work: { description: 'resize images' } }));
  }

  // sessions: one that takes requests, two to close (the natural caller's and the admin's)
  for (const name of ['session', 'sessionToClose', 'sessionToClose2']) {
    tokens[name] = ref(name);
    ok(name, await as('alice').post('/v1/sessions', { sessionId: tokens[name], accountId: 'alice.spend', amount: 100_000 }));
  }

  // an entity with two subaccounts (active at once, no webhooks)
  // the entity's id carries the run: workflow ids (creation, elimination, webhook delivery) are unique per
  // Temporal namespace, which every test file shares, while each file has a database of its own
  tokens.entity = `acme-${run}`;
  const acme = ok('acme', await admin.post('/v1/entities', { id: tokens.entity, name: 'Acme', collateral: 10, funding: 5, challengeMs: 0, creationsPerHour: 100_000, subaccountCap: 100_000 }));
  keys.acme = acme.apiKey;
  ok('fund acme', await admin.post('/v1/deposits', { accountId: acme.mainAccountId, amount: 1_000_000 }, 'seed-acme'));
  tokens.sub = encodeURIComponent(ok('sub', await as('acme').post(`/v1/entities/${tokens.entity}/subaccounts`, { requestId: 'sub-1' })).subaccount.id);
  tokens.subToEliminate = encodeURIComponent(ok('sub to eliminate', await as('acme').post(`/v1/entities/${tokens.entity}/subaccounts`, { requestId: 'sub-2' })).subaccount.id);
  tokens.subToEliminate2 = encodeURIComponent(ok('sub to eliminate', await as('acme').post(`/v1/entities/${tokens.entity}/subaccounts`, { requestId: 'sub-3' })).subaccount.id);

  // the rate board: bob sells
  ok('rate', await as('bob').post('/v1/sellers/bob/rates', { ratePerTick: 5, accountId: 'bob.wallet' }));
  ok('state', await as('bob').post('/v1/sellers/bob/state', { active: true }));

  /** The fixture's streams and jobs, left open between tests (see closeLeftovers). */
  const keep = ['stream', 'toPause', 'paused', 'cancelMe', 'consent', 'dist', 'job', 'jobToCancel'].flatMap((t) => [String(tokens[t]), String(tokens[`${t}2`])]).filter((r) => r !== 'undefined');
  return { keys, tokens, keep, fresh, ref, fill, send, requestFor, authHeader };
}

/**
 * Everything the API could change, as one string: the content of every table in
 * the database (row order aside). Byte-identical before and after means a request
 * changed nothing.
 */
export async function databaseSnapshot(stack: TestStack): Promise<string> {
  const { rows: tables } = await stack.db.pool.query<{ name: string }>(
    `select table_name as name from information_schema.tables where table_schema = 'public' and table_type = 'BASE TABLE' order by table_name`,
  );
  // a counter's totals and its pending deltas are one figure (a /metrics read folds the
  // deltas into the totals and changes nothing it counts): the snapshot sums them
  const COUNTERS = ['metric_counters', 'metric_counter_deltas'];
  const { rows: counted } = await stack.db.pool.query<{ digest: string | null }>(
    `select md5(string_agg(c::text, E'\\n' order by c::text)) as digest
       from (select metric, labels, sum(value) as value
               from (select metric, labels, value from metric_counters union all select metric, labels, value from metric_counter_deltas) u
              group by metric, labels) c`,
  );
  // a key's last use is when a request came with it (refused or not), kept to the minute: not something a request changed
  const ROWS: Record<string, string> = { api_keys: '(select id, party_id, key_hash, prefix, created_at, revoked_at from api_keys)' };
  const parts = await Promise.all(
    // the rate limiter's windows count every request, refused or not: the limiter's state, not something a request changed
    tables.filter(({ name }) => !COUNTERS.includes(name) && name !== 'rate_windows').map(async ({ name }) => {
      const { rows } = await stack.db.pool.query<{ n: number; digest: string | null }>(
        `select count(*)::int as n, md5(string_agg(t::text, E'\\n' order by t::text)) as digest from ${ROWS[name] ?? `"${name}"`} t`,
      );
      return `${name}:${rows[0]!.n}:${rows[0]!.digest}`;
    }),
  );
  return [...parts, `counters:${counted[0]!.digest}`].join('\n');
}

/**
 * Ends what requests left running, so ledger snapshots stay still and the worker can
 * shut down: every open stream and every job waiting for its payment is cancelled,
 * except the fixture's own (`keep`), and every reserved job (its work runs and settles
 * on its own) is cancelled too; as the admin, each call waiting for its workflow.
 */
export async function closeLeftovers(stack: TestStack, keep: string[] = []): Promise<{ streams: number; jobs: number }> {
  const admin = api(stack.app, ADMIN_KEY);
  const streams = (await stack.db.pool.query<{ ref: string }>(`select ref from streams where status = 'open' and not (ref = any($1))`, [keep])).rows;
  const jobs = (await stack.db.pool.query<{ job_id: string }>(`select job_id from grants where status = 'reserved' or (status = 'awaiting_payment' and not (job_id = any($1)))`, [keep])).rows;
  await Promise.all([
    ...streams.map(async ({ ref }) => {
      const res = await admin.post(`/v1/streams/${encodeURIComponent(ref)}/cancel`, { reason: 'test cleanup' });
      if (res.status !== 200) throw new Error(`cancelling stream ${ref}: ${res.status} ${JSON.stringify(res.body)}`);
    }),
    ...jobs.map(async ({ job_id }) => {
      const res = await admin.post(`/v1/jobs/${encodeURIComponent(job_id)}/cancel`, { reason: 'test cleanup' });
      // a job that settled meanwhile can no longer be cancelled
      if (res.status !== 200 && res.body?.error?.code !== 'job_conflict') throw new Error(`cancelling job ${job_id}: ${res.status} ${JSON.stringify(res.body)}`);
    }),
  ]);
  return { streams: streams.length, jobs: jobs.length };
}
