import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Browser, Page } from 'playwright-core';
import { tickAt } from '../../src/domain/crown';
import { launchChromium, screenshot } from '../support/browser';
import { testParties, until } from '../support/parties';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';

/**
 * The operator console in headless Chromium against the real stack (API on a port,
 * worker, PostgreSQL, the Temporal dev server): signing in with a key, a stream's
 * paid amount rising on screen tick by tick, its receipt once cancelled, and the
 * entity, pool, crown and audit pages showing the fixture's own numbers, the same
 * the API answers. Screenshots land in test-artifacts/console/ (and docs/console/
 * with UPDATE_SCREENSHOTS=1).
 */
const TEMPORAL_UI = 'http://temporal-ui.test:8233';
let stack: TestStack;
let browser: Browser;
let page: Page;
let base: string;
let hooks: Server;
/** Uncaught errors in the page: the last test asserts there were none. */
const pageErrors: Error[] = [];
const admin = () => api(stack.app, ADMIN_KEY);
const { as, party, keys } = testParties(() => stack);
const text = (test: string) => page.locator(`[data-test="${test}"]`).innerText();
const figure = async (test: string) => Number((await text(test)).replace(/,/g, ''));
/** How the console writes minor units. */
const units = (n: number) => n.toLocaleString('en-US');

/** Reads a figure on screen until it has grown past `before` (the page polls the API every second). */
const untilAbove = (test: string, before: number) => until(`${test} to rise above ${before}`, async () => ((await figure(test)) > before ? true : undefined));

/**
 * The rows a live (polled) page shows once it has settled on `n`, or what it shows after
 * the bounded wait: a filter's click re-renders the list, so the count right after it may
 * still be the previous filter's, or the page between the two.
 */
async function rowsOnceSettled(selector: string, n: number): Promise<number> {
  return until(`${n} rows in ${selector}`, async () => ((await page.locator(selector).count()) === n ? n : undefined)).catch(() => page.locator(selector).count());
}

async function signIn(key: string) {
  await page.goto(`${base}/console/`);
  await page.locator('input[name=key]').fill(key);
  await page.locator('button[type=submit]').click();
  await page.locator('[data-test=who]').waitFor();
}

beforeAll(async () => {
  browser = await launchChromium();
  stack = await startTestStack({ temporalUiUrl: TEMPORAL_UI });
  await stack.app.listen({ host: '127.0.0.1', port: 0 });
  base = `http://127.0.0.1:${(stack.app.server.address() as AddressInfo).port}`;
  hooks = createServer((req, res) => req.resume().on('end', () => res.writeHead(204).end()));
  await new Promise<void>((r) => hooks.listen(0, '127.0.0.1', r));

  await party('alice', 100_000);
  await party('bob');
  await party('carol', 10_000);
  // someone else's stream: alice's console must not list it
  expect((await as('carol').post('/v1/streams', { ref: 'carol-hidden', fromAccountId: 'carol.w', toAccountId: 'bob.w', ratePerTick: 2, maxTotal: 100, tickIntervalMs: 60_000 })).status).toBe(201);

  // an entity with two subaccounts, each announced to a webhook receiver
  const entity = await admin().post('/v1/entities', { id: 'nimbus', name: 'Nimbus agents', collateral: 100, funding: 50, webhookUrls: [`http://127.0.0.1:${(hooks.address() as AddressInfo).port}/hooks`] });
  expect(entity.status).toBe(201);
  keys.nimbus = entity.body.apiKey;
  expect((await admin().post('/v1/deposits', { accountId: 'nimbus.main', amount: 5_000 }, 'fund-nimbus')).status).toBe(201);
  for (let i = 0; i < 2; i++) expect((await as('nimbus').post('/v1/entities/nimbus/subaccounts', {})).status).toBe(201);

  // a free job the pool absorbs: 30 units
  await admin().post('/v1/parties/alice/tier', { tier: 'established' });
  const job = await as('alice').post('/v1/jobs', { jobId: 'console-job', accountId: 'alice.w', estimatedCost: 30, work: { description: 'console fixture', simulate: { actualCost: 30 } } });
  expect(job.body).toMatchObject({ decision: 'free' });
  await until('the job to settle', async () => ((await as('alice').get('/v1/jobs/console-job')).body.status === 'settled' ? true : undefined));

  // the rate board: aster alone for 2 ticks, then birch cheaper, then cedar ties with birch
  const t0 = tickAt(Date.now());
  for (const [seller, rate, at] of [['aster', 5, t0 + 1], ['birch', 4, t0 + 3], ['cedar', 4, t0 + 5]] as const) {
    await party(seller);
    expect((await as(seller).post(`/v1/sellers/${seller}/state`, { active: true, busy: false, atTick: at })).status).toBe(201);
    expect((await as(seller).post(`/v1/sellers/${seller}/rates`, { ratePerTick: rate, atTick: at })).status).toBe(201);
  }

  page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on('pageerror', (e) => pageErrors.push(e));
});

afterAll(async () => {
  await browser?.close();
  await new Promise((r) => hooks?.close(r));
  await stack?.stop();
});

describe('the operator console in headless Chromium', () => {
  test('a missing Chromium fails the run with how to install it, rather than skipping', async () => {
    await expect(launchChromium('/nonexistent/chromium')).rejects.toThrow('no Chromium at /nonexistent/chromium: run `npm run install:chromium`');
  });

  test('a wrong key is refused on the sign-in page; the static console needs no key', async () => {
    const res = await fetch(`${base}/console/`);
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('<div id="app">');
    const bare = await fetch(`${base}/console`, { redirect: 'manual' });
    expect([bare.status, bare.headers.get('location')]).toEqual([301, '/console/']);
    expect((await fetch(`${base}/console/assets/nothing-here.js`)).status).toBe(404);
    await page.goto(`${base}/console/`);
    await screenshot(page, 'login');
    await page.locator('input[name=key]').fill('not-a-key');
    await page.locator('button[type=submit]').click();
    await page.locator('[data-test=login-error]').waitFor({ state: 'visible' });
    expect(await text('login-error')).toBe('unknown API key');
    expect(await page.evaluate('sessionStorage.length')).toBe(0);
  });

  test("alice's streams list shows her stream's paid amount rising, and no one else's stream", async () => {
    await signIn(keys.alice!);
    expect(await text('who')).toBe('alice');
    const opened = await as('alice').post('/v1/streams', { ref: 'console-live', fromAccountId: 'alice.w', toAccountId: 'bob.w', ratePerTick: 25, maxTotal: 10_000, tickIntervalMs: 1_000 });
    expect(opened.body).toMatchObject({ status: 'STREAMING', ticks: 1, totalPaid: 25 });
    const paid = page.locator('[data-test="paid-console-live"]');
    await paid.waitFor();
    const first = await figure('paid-console-live');
    expect(first % 25).toBe(0);
    await untilAbove('paid-console-live', first);
    expect(await figure('paid-console-live')).toBeGreaterThan(first);
    expect(await rowsOnceSettled('[data-test=streams] tbody tr', 1)).toBe(1);
    expect(await page.locator('[data-test=streams]').innerText()).not.toContain('carol-hidden');
    const filtered = await page.locator('a.external').getAttribute('href');
    expect(decodeURIComponent(filtered!.split('query=')[1]!)).toBe('SluiceKind="stream" AND SluicePayer="alice" AND ExecutionStatus="Running"');
    await screenshot(page, 'streams');
  });

  test("the stream's page shows paid rising across ticks, links to its workflow, and shows the receipt once cancelled", async () => {
    await page.locator('a', { hasText: 'console-live' }).click();
    await page.locator('[data-test=stream-paid]').waitFor();
    const first = await figure('stream-paid');
    await untilAbove('stream-paid', first);
    const second = await figure('stream-paid');
    expect(second).toBeGreaterThan(first);
    expect(second % 25).toBe(0);
    expect(await page.locator('a.external').getAttribute('href')).toBe(`${TEMPORAL_UI}/namespaces/default/workflows/stream-console-live`);
    await screenshot(page, 'stream-live');

    const receipt = (await as('bob').post('/v1/streams/console-live/cancel', { reason: 'enough' })).body;
    expect(receipt).toMatchObject({ status: 'CONFIRMED', reason: 'cancelled', closedBy: 'bob' });
    await page.locator('[data-test=receipt]').waitFor({ timeout: 10_000 });
    expect(await text('receipt-total-paid')).toBe(units(receipt.totalPaid));
    expect(await text('receipt-ticks')).toBe(String(receipt.ticks));
    expect(await text('receipt-closed-by')).toBe('bob');
    expect(await text('receipt-reason')).toBe('cancelled');
    expect(await text('receipt-status')).toBe('CONFIRMED');
    expect(receipt.totalPaid).toBe(25 * receipt.ticks);
    await screenshot(page, 'stream-receipt');
  });

  test("a party key sees the auditor is the admin's", async () => {
    await page.locator('nav a', { hasText: 'Audit' }).click();
    expect(await text('audit-admin-only')).toContain('admin key');
    expect((await as('alice').get('/v1/audit')).status).toBe(403);
  });

  test("the entity dashboard shows nimbus's subaccounts, balances and webhook deliveries as the API has them", async () => {
    // (an entity id no other test file uses: webhook workflow ids are global to the namespace the test files share)
    await until('both webhook deliveries', async () => ((await as('nimbus').get('/v1/entities/nimbus/deliveries')).body.deliveries.filter((d: { ok: boolean }) => d.ok).length >= 2 ? true : undefined));
    await page.locator('button', { hasText: 'Sign out' }).click();
    await signIn(keys.nimbus!);
    await page.locator('nav a', { hasText: 'Entity' }).click();
    await page.locator('button', { hasText: 'Open' }).click(); // a party key: its own id is filled in
    await page.locator('[data-test=subaccounts]').waitFor();
    const d = (await as('nimbus').get('/v1/entities/nimbus/dashboard')).body;
    expect(d.subaccounts).toHaveLength(2);
    expect(await figure('entity-main-balance')).toBe(d.totals.mainBalance);
    expect(await figure('entity-balance')).toBe(d.totals.balance);
    expect(d.totals.balance).toBe(100); // two subaccounts funded with 50 each
    const workflows = await page.locator('a.external').getAttribute('href');
    expect(decodeURIComponent(workflows!.split('query=')[1]!)).toBe('SluiceEntity="nimbus"');
    expect(await page.locator('[data-test=subaccounts] tbody tr').count()).toBe(2);
    for (const s of d.subaccounts) expect(await page.locator('[data-test=subaccounts]').innerText()).toContain(s.id);
    const deliveries = await page.locator('[data-test=deliveries] tbody tr').count();
    expect(deliveries).toBeGreaterThanOrEqual(2);
    const deliveryRows = await page.locator('[data-test=deliveries] tbody tr').allInnerTexts();
    expect(deliveryRows.map((r) => r.split('\t').slice(1, 5)).sort()).toEqual([
      ['subaccount.active', 'nimbus/1', '1', '204 delivered'],
      ['subaccount.active', 'nimbus/2', '1', '204 delivered'],
    ]);
    await screenshot(page, 'entity');
  });

  test('as the admin: the pool with the absorbed job, the crown holders with a bar per seller, and a green auditor', async () => {
    await page.locator('button', { hasText: 'Sign out' }).click();
    await signIn(ADMIN_KEY);
    expect(await text('who')).toBe('admin');

    await page.locator('nav a', { hasText: 'Pool' }).click();
    await page.locator('[data-test=pool-balance]').waitFor();
    const pool = (await admin().get('/v1/pool')).body;
    expect(pool.absorbedToday).toBe(30);
    expect(await figure('pool-absorbed')).toBe(30);
    expect(await figure('pool-balance')).toBe(pool.balance);
    expect(await figure('pool-available')).toBe(pool.available);
    const grantRows = await page.locator('[data-test=grants] tbody tr').allInnerTexts();
    expect(grantRows.map((r) => r.split('\t').slice(0, 9))).toEqual([['console-job', 'alice', 'established', 'free', 'settled', '30', '30', '30', '0']]);
    await screenshot(page, 'pool');

    await until('cedar to share the crown', async () => (tickAt(Date.now()) > (await admin().get('/v1/crown')).body.current.tick ? undefined : true));
    await page.locator('nav a', { hasText: 'Crown' }).click();
    await page.locator('[data-test=crown-chart]').waitFor();
    const crown = (await admin().get('/v1/crown')).body;
    expect(crown.current).toMatchObject({ holders: ['birch', 'cedar'], bestRate: 4 });
    expect(await text('crown-holders')).toBe('birch, cedar');
    expect(await text('crown-best-rate')).toBe('4');
    expect(await page.locator('[data-test=crown-chart] rect').count()).toBe(3);
    // aster held the crown alone for exactly ticks t0+1 and t0+2
    expect(crown.crownTime.aster).toBe(2);
    expect(await page.locator('[data-seller=aster]').textContent()).toBe('2 ticks');
    await screenshot(page, 'crown');

    await page.locator('nav a', { hasText: 'Audit' }).click();
    await page.locator('[data-test=audit-verdict]').waitFor();
    const audit = (await admin().get('/v1/audit')).body;
    expect(audit.ok).toBe(true);
    expect(await text('audit-verdict')).toBe('Every invariant holds');
    expect(await page.locator('[data-test=audit-checks] tbody tr').count()).toBe(audit.checks.length);
    await screenshot(page, 'audit');

    // the admin's streams list holds everyone's, carol's too
    await page.locator('nav a', { hasText: 'Streams' }).click();
    await page.locator('a.chip', { hasText: 'All' }).click();
    await page.locator('[data-test="paid-carol-hidden"]').waitFor();
    expect(await rowsOnceSettled('[data-test=streams] tbody tr', 2)).toBe(2);
    expect(pageErrors).toEqual([]);
  });
});
