import { startTestStack, type TestStack } from '../support/stack';
import {
  buildFixture,
  CALLER_KINDS,
  CATALOG,
  closeLeftovers,
  databaseSnapshot,
  ERROR_SHAPE,
  openApiPath,
  registeredRoutes,
  ROUTE_CATALOG,
  type CallerKind,
  type Fixture,
} from '../support/routeCatalog';

/**
 * The authorisation matrix: every route the app registers, called with no key, an
 * unknown key, another party's key (carol, related to nothing the route names) and
 * the admin key, gets the status its catalogue entry declares; every refusal leaves
 * every table of the database byte-identical. The natural caller's own request
 * succeeds first, so each entry's `valid` request is proven valid.
 */

let stack: TestStack;
let fx: Fixture;

beforeAll(async () => {
  // every route is called by the same few callers in a few seconds: the write limit (429) must not answer in the handlers' place
  stack = await startTestStack({ writeRate: { max: 1_000_000, windowMs: 1_000 } });
  fx = await buildFixture(stack);
});
afterAll(async () => {
  if (stack) await closeLeftovers(stack);
  await stack?.stop();
});

test('every route the app registers or documents has a catalogue entry, and every entry is a registered route', async () => {
  const registered = registeredRoutes(stack.app);
  const spec = (await stack.app.inject({ method: 'GET', url: '/openapi.json' })).json();
  const documented = Object.entries(spec.paths as Record<string, object>).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`));
  const byOpenApiPath = new Map(ROUTE_CATALOG.map((e) => [openApiPath(e.route), e.route]));
  const undeclared = [...registered.filter((r) => !CATALOG[r]), ...documented.filter((r) => !byOpenApiPath.has(r))];
  if (undeclared.length) throw new Error(`routes with no entry in test/support/routeCatalog.ts (declare who may call them): ${[...new Set(undeclared)].join(', ')}`);
  const stale = ROUTE_CATALOG.map((e) => e.route).filter((r) => !registered.includes(r));
  if (stale.length) throw new Error(`catalogue entries for routes the app does not register: ${stale.join(', ')}`);
  expect(registered.filter((r) => r.includes(' /v1/')).length).toBeGreaterThanOrEqual(50);
});

describe.each(ROUTE_CATALOG)('$route', (entry) => {
  // the admin's own routes and the public ones: the admin column is the natural caller's
  const natural = entry.valid.as !== 'admin' && entry.valid.as !== 'nobody';
  if (natural) {
    test(`the natural caller (${entry.valid.as}) → ${entry.natural ?? entry.expect.admin}`, async () => {
      const res = await fx.send(entry.route, entry.valid);
      expect({ status: res.status, body: res.body }).toMatchObject({ status: entry.natural ?? entry.expect.admin });
      if (entry.items?.admin !== undefined) expect(res.body.results.map((r: { status: number }) => r.status)).toEqual([entry.items.admin]);
      await closeLeftovers(stack, fx.keep);
    });
  }

  test(`no key → ${entry.expect.none}, wrong key → ${entry.expect.wrong}, another party → ${entry.expect.other}, admin → ${entry.expect.admin}; refusals change nothing`, async () => {
    const statuses = {} as Record<CallerKind, number>;
    const items = {} as Partial<Record<CallerKind, number[]>>;
    for (const kind of CALLER_KINDS) {
      const before = await databaseSnapshot(stack);
      const res = await fx.send(entry.route, fx.requestFor(entry, kind));
      statuses[kind] = res.status;
      if (res.status >= 400) {
        expect({ kind, status: res.status, body: res.body }).toEqual({ kind, status: res.status, body: ERROR_SHAPE });
        expect(res.contentType).toMatch(/^application\/json/);
      }
      if (entry.items?.[kind] !== undefined) items[kind] = res.body.results.map((r: { status: number }) => r.status);
      const refused = res.status >= 400 || (items[kind]?.every((s) => s >= 400) ?? false);
      if (refused || entry.route.startsWith('GET ')) {
        expect({ kind, changed: (await databaseSnapshot(stack)) !== before }).toEqual({ kind, changed: false });
      } else if (entry.workflow) {
        await closeLeftovers(stack, fx.keep);
      }
    }
    expect(statuses).toEqual(entry.expect);
    for (const [kind, status] of Object.entries(entry.items ?? {})) expect({ kind, items: items[kind as CallerKind] }).toEqual({ kind, items: [status] });
  });
});

test('the other party is refused on every route that names a resource of its own kind (none is public by mistake)', () => {
  // a route open to any party answers with the caller's own view: these are the only ones
  const openToAnyParty = ROUTE_CATALOG.filter((e) => e.route.includes(' /v1/') && e.expect.other < 400).map((e) => e.route);
  expect(openToAnyParty.sort()).toEqual(
    ['GET /v1/console/config', 'GET /v1/grants', 'GET /v1/streams', 'GET /v1/crown', 'GET /v1/crown/timeline', 'GET /v1/markets', 'GET /v1/estimate', 'GET /v1/events', 'GET /v1/pool', 'GET /v1/rates/events', 'POST /v1/streams/batch', 'GET /v1/keys', 'POST /v1/keys'].sort(),
  );
  // every /v1 route needs a key
  expect(ROUTE_CATALOG.filter((e) => e.route.includes(' /v1/') && (e.expect.none !== 401 || e.expect.wrong !== 401))).toEqual([]);
});

test('the auth scheme is matched without regard to case, and spaces or tabs may follow it; any other form is no key (401)', async () => {
  const get = (authorization: string) => stack.app.inject({ method: 'GET', url: '/v1/accounts', headers: { authorization } });
  const key = fx.keys.alice!;
  for (const header of [`Bearer ${key}`, `bearer ${key}`, `BEARER ${key}`, `Bearer\t${key}`, `bearer  ${key} `]) {
    const res = await get(header);
    expect({ header, status: res.statusCode }).toEqual({ header, status: 200 });
    expect(res.json().accounts.map((a: { ownerId: string }) => a.ownerId)).toContain('alice');
  }
  for (const header of [`Basic ${key}`, 'Bearer', 'Bearer ', `Bearer${key}`, `Bearer ${key} extra`]) {
    const res = await get(header);
    expect({ header, status: res.statusCode, code: res.json().error?.code }).toEqual({ header, status: 401, code: 'unauthorized' });
  }
});
