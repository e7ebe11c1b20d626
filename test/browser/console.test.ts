import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Browser, Page } from 'playwright-core';
import { tickAt } from '../../src/domain/crown';
import { parseFaults } from '../../src/domain/faults';
import { launchChromium, screenshot } from '../support/browser';
import { testParties, until } from '../support/parties';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';

/**
 * The operator console in headless Chromium against the real stack (API on a port,
 * worker, PostgreSQL, the Temporal dev server): signing in with a key, a stream's
 * paid amount rising on screen tick by tick, its chart drawn from the billed ticks, its
 * receipt once cancelled (with the escrow returned), searching streams through the API's
 * filters, the stream actions behind their confirmation (each checked through the API
 * too), a refused action in the API's words with its request id, a stream opened through
 * the form (refused, then opened with the terms entered, then cancelled), the admin's
 * entity list, the entity, pool, crown and audit pages showing the fixture's own numbers,
 * the same the API answers, the debt ledger's chart after "Checkpoint now" (the API's
 * last point, one subaccount's series, the ranges), a failed subaccount's reason and its
 * creation saga, and the pages at 375 px wide. Screenshots land in test-artifacts/console/
 * (and docs/console/ with UPDATE_SCREENSHOTS=1).
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
/** How the console writes a clock time (the browser and this process share the machine's time zone). */
const clock = (ms: number) => new Date(ms).toLocaleTimeString('en-GB', { hour12: false });

/**
 * The Crown page's timeline is the API's grid: the window the page drew (read with its
 * rows in one go, so a poll's redraw cannot fall between them), asked of
 * GET /v1/crown/timeline page by page, gives the same intervals, row for row, labelled
 * with times: from (its clock time), until (its clock time, or now for the last),
 * holders and best rate.
 */
async function expectTimelineIsTheGrid(market: string) {
  const drawn = await page.evaluate<{ from: number; to: number; rows: string[][]; bands: number }>(`(() => {
    const strip = document.querySelector('[data-test=crown-timeline]');
    const rows = [...document.querySelectorAll('[data-test=crown-intervals] tbody tr')].map((tr) => [...tr.querySelectorAll('td')].map((td) => td.innerText));
    return { from: Number(strip.getAttribute('data-from')), to: Number(strip.getAttribute('data-to')), rows, bands: strip.querySelectorAll('rect').length };
  })()`);
  const grid: Array<{ start: number; end: number; startAt: string; endAt: string; holders: string[]; bestRate: number | null }> = [];
  let after: number | undefined;
  let pages = 0;
  do {
    const res = await admin().get(`/v1/crown/timeline?market=${market}&from=${drawn.from}&to=${drawn.to}&limit=2${after === undefined ? '' : `&after=${after}`}`);
    expect(res.status).toBe(200);
    grid.push(...res.body.intervals);
    after = res.body.next;
    pages++;
  } while (after !== undefined);
  expect(grid.length).toBeGreaterThan(0);
  expect(drawn.bands).toBe(grid.length);
  expect(drawn.rows.map((r) => [r[0]!.split(' · ')[0], r[1], r[3], r[4]])).toEqual(
    grid.map((iv) => [clock(Date.parse(iv.startAt)), iv.end >= drawn.to ? 'now' : clock(Date.parse(iv.endAt)), iv.holders.length ? iv.holders.join(', ') : 'nobody', iv.bestRate === null ? '—' : String(iv.bestRate)]),
  );
  // no raw tick number anywhere on the page
  for (const iv of grid) expect(drawn.rows.flat().join(' ')).not.toContain(String(iv.start));
  return pages;
}
/** A stream as alice's key reads it from the API. */
const view = async (ref: string) => (await as('alice').get(`/v1/streams/${ref}`)).body;

/** Confirms (or dismisses) the dialog an action opens, and waits for it to close. */
async function answerConfirm(accept: boolean) {
  await page.locator('[data-test=confirm]').waitFor();
  await page.locator(accept ? '[data-test=confirm-accept]' : '[data-test=confirm-dismiss]').click();
  await page.locator('[data-test=confirm]').waitFor({ state: 'detached' });
}

/** The refs of a page of GET /v1/streams as `who` reads it: what a search with the same filters must show. */
async function listedRefs(who: ReturnType<typeof admin>, query: Record<string, string>): Promise<string[]> {
  const res = await who.get(`/v1/streams?${new URLSearchParams({ limit: '25', ...query })}`);
  expect(res.status).toBe(200);
  return res.body.streams.map((s: { ref: string }) => s.ref);
}
/** The refs the streams table shows, in order. */
const refsOnScreen = async () => (await page.locator('[data-test=streams] tbody tr td:first-child').allInnerTexts()).map((t) => t.trim());

/**
 * The X-Request-Id of every answer the page receives from an API path containing `part`
 * (a polled page asks again every second, each time with a new request id), by id: the
 * path asked.
 */
function requestIds(part: string): Map<string, string> {
  const ids = new Map<string, string>();
  page.on('response', (r) => {
    const id = r.headers()['x-request-id'];
    if (id && r.url().includes(part)) ids.set(id, new URL(r.url()).pathname + new URL(r.url()).search);
  });
  return ids;
}

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
  stack = await startTestStack({ temporalUiUrl: TEMPORAL_UI, faults: parseFaults('fund@crumbly/1=always') });
  await stack.app.listen({ host: '127.0.0.1', port: 0 });
  base = `http://127.0.0.1:${(stack.app.server.address() as AddressInfo).port}`;
  hooks = createServer((req, res) => req.resume().on('end', () => res.writeHead(204).end()));
  await new Promise<void>((r) => hooks.listen(0, '127.0.0.1', r));

  await party('alice', 100_000);
  await party('bob');
  await party('carol', 10_000);
  // a second account of alice's that lists before alice.w: a top-up still preselects the stream's own
  expect((await as('alice').post('/v1/accounts', { id: 'alice.a' })).status).toBe(201);
  // otto operates alice's streams: it may read them, ticks and all
  await party('otto');
  expect((await as('alice').post('/v1/parties/alice/operators', { operator: 'otto', dailyLimit: 1_000 })).status).toBe(201);
  // someone else's stream: alice's console must not list it
  expect((await as('carol').post('/v1/streams', { ref: 'carol-hidden', fromAccountId: 'carol.w', toAccountId: 'bob.w', ratePerTick: 2, maxTotal: 100, tickIntervalMs: 60_000 })).status).toBe(201);
  // alice's other streams: one to carol (found by searching for carol), one to drive the actions on
  expect((await as('alice').post('/v1/streams', { ref: 'console-gift', fromAccountId: 'alice.w', toAccountId: 'carol.w', ratePerTick: 1, maxTotal: 50, tickIntervalMs: 60_000 })).status).toBe(201);
  // 30 newer streams of dave's (opened and closed in one batch): carol's two are past the admin's newest page of 25
  await party('dave', 1_000);
  const fillers = Array.from({ length: 30 }, (_, i) => `filler-${String(i).padStart(2, '0')}`);
  const batch = await as('dave').post('/v1/streams/batch', {
    items: fillers.flatMap((ref) => [
      { op: 'open', ref, fromAccountId: 'dave.w', toAccountId: 'bob.w', ratePerTick: 1, maxTotal: 10, tickIntervalMs: 60_000 },
      { op: 'cancel', ref },
    ]),
  });
  expect(batch.body).toMatchObject({ succeeded: 60, failed: 0 });
  expect((await as('alice').post('/v1/streams', { ref: 'console-actions', fromAccountId: 'alice.w', toAccountId: 'bob.w', ratePerTick: 10, maxTotal: 5_000, tickIntervalMs: 1_000 })).status).toBe(201);

  // an entity with two subaccounts, each announced to a webhook receiver
  // at most 5 live and 2 created an hour: its two creations reach the hourly limit
  const entity = await admin().post('/v1/entities', { id: 'nimbus', name: 'Nimbus agents', collateral: 100, funding: 50, subaccountCap: 5, creationsPerHour: 2, webhookUrls: [`http://127.0.0.1:${(hooks.address() as AddressInfo).port}/hooks`] });
  expect(entity.status).toBe(201);
  keys.nimbus = entity.body.apiKey;
  expect((await admin().post('/v1/deposits', { accountId: 'nimbus.main', amount: 5_000 }, 'fund-nimbus')).status).toBe(201);
  for (let i = 0; i < 2; i++) expect((await as('nimbus').post('/v1/entities/nimbus/subaccounts', {})).status).toBe(201);

  // an entity whose first subaccount's creation saga fails at its funding step (an injected fault, the
  // stack's own: a main account short of money is refused before any saga step, leaving no failed slot)
  expect((await admin().post('/v1/entities', { id: 'crumbly', name: 'Crumbly agents', collateral: 100, funding: 50 })).status).toBe(201);
  expect((await admin().post('/v1/deposits', { accountId: 'crumbly.main', amount: 1_000 }, 'fund-crumbly')).status).toBe(201);
  const failed = await admin().post('/v1/entities/crumbly/subaccounts', { requestId: 'first' });
  expect(failed.body.error).toMatchObject({ code: 'creation_failed', details: { subaccount: { id: 'crumbly/1', status: 'failed' } } });

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
  // a bid market: the highest bid holds (aster), birch bids less
  expect((await admin().post('/v1/markets', { id: 'spot-bids', direction: 'bid' })).status).toBe(201);
  for (const [seller, rate] of [['aster', 7], ['birch', 3]] as const) {
    expect((await as(seller).post(`/v1/sellers/${seller}/state`, { active: true, busy: false, atTick: t0 + 1, market: 'spot-bids' })).status).toBe(201);
    expect((await as(seller).post(`/v1/sellers/${seller}/rates`, { ratePerTick: rate, atTick: t0 + 1, market: 'spot-bids' })).status).toBe(201);
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
    const refused = page.waitForResponse((r) => r.url().endsWith('/v1/console/config'));
    await page.locator('button[type=submit]').click();
    await page.locator('[data-test=login-error]').waitFor({ state: 'visible' });
    expect(await text('login-error')).toBe('unknown API key');
    // the API's request id, in small text under the message: the one its answer carried
    const answer = await refused;
    expect(await text('login-error-request-id')).toBe(answer.headers()['x-request-id']);
    expect(((await answer.json()) as { error: { request_id: string } }).error.request_id).toBe(answer.headers()['x-request-id']);
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
    const listed = (await as('alice').get('/v1/streams?status=open')).body.streams;
    expect(listed.map((s: { ref: string }) => s.ref).sort()).toEqual(['console-actions', 'console-gift', 'console-live']);
    expect(await rowsOnceSettled('[data-test=streams] tbody tr', listed.length)).toBe(listed.length);
    expect(await page.locator('[data-test=streams]').innerText()).not.toContain('carol-hidden');
    const filtered = await page.locator('a.external').getAttribute('href');
    expect(decodeURIComponent(filtered!.split('query=')[1]!)).toBe('SluiceKind="stream" AND SluicePayer="alice" AND ExecutionStatus="Running"');
    await screenshot(page, 'streams');
  });

  test("searching by party or by ref prefix lists what the API's filters list, within what the key may see", async () => {
    const search = async (party: string, ref: string, query: Record<string, string>) => {
      await page.locator('[data-test=search-party]').fill(party);
      await page.locator('[data-test=search-ref]').fill(ref);
      await page.locator('form.search button').click();
      const expected = await listedRefs(as('alice'), { status: 'open', ...query });
      await until(`the rows for ${JSON.stringify(query)}`, async () => (JSON.stringify(await refsOnScreen()) === JSON.stringify(expected) ? true : undefined));
      return expected;
    };
    // carol's own stream has carol in it too, but it is not alice's to see
    expect(await search('carol', '', { party: 'carol' })).toEqual(['console-gift']);
    expect(await page.locator('[data-test=streams]').innerText()).not.toContain('carol-hidden');
    expect(page.url()).toContain('party=carol');
    await screenshot(page, 'streams-search');
    expect(await search('', 'console-a', { refPrefix: 'console-a' })).toEqual(['console-actions']);
    expect(await search('bob', 'console-', { party: 'bob', refPrefix: 'console-' })).toEqual(['console-live', 'console-actions']);
    expect(await search('nobody-here', '', { party: 'nobody-here' })).toEqual([]);
    expect(await text('streams')).toBe('No stream here with party nobody-here.');
    // a party id the API refuses: its message and request id under the search box, which stays
    const ids = requestIds('party=Not');
    await page.locator('[data-test=search-party]').fill('Not a party');
    await page.locator('form.search button').click();
    await page.locator('[data-test=search-error]').waitFor();
    const refused = await as('alice').get('/v1/streams?limit=25&status=open&party=Not+a+party');
    expect(refused.status).toBe(400);
    expect(await text('search-error')).toBe(refused.body.error.message);
    const shown = await text('search-error-request-id');
    expect(ids.has(shown)).toBe(true);
    expect(await page.locator('[data-test=search-party]').inputValue()).toBe('Not a party');
    await page.locator('[data-test=search-clear]').click();
    expect(await rowsOnceSettled('[data-test=streams] tbody tr', 3)).toBe(3);
    // typing survives the list's polls: the box keeps the focus and what was typed across two redraws
    await page.locator('[data-test=search-party]').click();
    await page.keyboard.type('bo');
    const polled = requestIds('/v1/streams?');
    await until('two polls of the list', async () => (polled.size >= 2 ? true : undefined));
    await page.keyboard.type('b');
    expect(await page.evaluate(() => (globalThis as any).document.activeElement?.getAttribute('data-test'))).toBe('search-party');
    expect(await page.locator('[data-test=search-party]').inputValue()).toBe('bob');
  });

  test("the stream's page: paid flowing between ticks, paid over time as a chart, its workflow link, and the receipt once cancelled", async () => {
    await page.locator('a', { hasText: 'console-live' }).click();
    await page.locator('[data-test=stream-paid]').waitFor();
    const first = await figure('stream-paid');
    await untilAbove('stream-paid', first);
    const second = await figure('stream-paid');
    expect(second).toBeGreaterThan(first);
    expect(second % 25).toBe(0);
    // the counter flows between ticks: never below what is billed, never past what the next tick pays
    // (both figures read in one turn of the page, so no poll lands between them)
    const flowing = new Set<number>();
    for (let i = 0; i < 25; i++) {
      const [billed, live] = await page.evaluate<number[]>(`['stream-paid', 'stream-paid-live'].map((t) => Number(document.querySelector('[data-test="' + t + '"]').textContent.replace(/,/g, '')))`);
      expect(live).toBeGreaterThanOrEqual(billed!);
      expect(live).toBeLessThanOrEqual(billed! + 25);
      flowing.add(live! % 25);
      await new Promise((r) => setTimeout(r, 80));
    }
    expect(flowing.size).toBeGreaterThan(2); // values between two ticks' amounts, not only multiples of 25
    // the chart's last step is the last billed tick's running total, as GET /v1/streams/:ref/ticks has it, one step a tick
    const chart = await until('the chart to reach the last billed tick', async () => {
      const onChart = await page.locator('[data-test=paid-chart]').evaluate((el) => ({ last: Number(el.getAttribute('data-last')), points: Number(el.getAttribute('data-points')) }));
      const { ticks } = (await as('alice').get('/v1/streams/console-live/ticks?limit=1000')).body as { ticks: Array<{ tick: number; paid: number }> };
      return onChart.last === ticks.at(-1)!.paid && onChart.points === ticks.length ? { ...onChart, ticks } : undefined;
    });
    expect(chart.points).toBe(chart.last / 25);
    expect(chart.ticks.map((t) => t.tick)).toEqual(Array.from({ length: chart.ticks.length }, (_, i) => i + 1));
    expect(await page.locator('.lede').innerText()).toContain('alice (alice.w) → bob (bob.w)');
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
    // the escrow gave back what the stream did not pay, to the account it paid from
    expect(receipt).toMatchObject({ fromAccountId: 'alice.w', toAccountId: 'bob.w', escrowReturned: 10_000 - receipt.totalPaid });
    expect(await text('receipt-escrow-returned')).toBe(`${units(receipt.escrowReturned)} to alice.w`);
    // a closed stream offers no actions
    expect(await page.locator('[data-test=action-cancel]').count()).toBe(0);
    await screenshot(page, 'stream-receipt');
  });

  test('cancel asks first: dismissing the confirmation leaves the stream running', async () => {
    await page.goto(`${base}/console/#/streams/console-actions`);
    await page.locator('[data-test=action-cancel]').click();
    await page.locator('[data-test=confirm]').waitFor();
    expect(await text('confirm')).toContain('Cancel stream console-actions?');
    await screenshot(page, 'stream-confirm');
    await answerConfirm(false);
    const ticks = (await view('console-actions')).ticks;
    await until('another tick', async () => ((await view('console-actions')).ticks > ticks ? true : undefined));
    expect(await view('console-actions')).toMatchObject({ status: 'STREAMING' });
    expect(await page.locator('[data-test=receipt]').count()).toBe(0);
  });

  test('pause, then resume: no ticks while paused, ticking again after', async () => {
    await page.locator('[data-test=action-pause]').click();
    await answerConfirm(true);
    await page.locator('[data-test=action-resume]').waitFor();
    const paused = await view('console-actions');
    expect(paused.pausedAt).toBeDefined();
    expect(paused.pauses.at(-1)).toMatchObject({ by: 'alice' });
    expect(await text('action-done')).toBe('Paused: no ticks until it is resumed.');
    expect(paused.status).toBe('PAUSED');
    await until('the page to show it paused', async () => ((await text('stream-next')) === 'paused' ? true : undefined));
    expect(await page.locator('.lede .badge').innerText()).toBe('PAUSED');
    await new Promise((r) => setTimeout(r, 1_500));
    expect((await view('console-actions')).ticks).toBe(paused.ticks);

    await page.locator('[data-test=action-resume]').click();
    await answerConfirm(true);
    await page.locator('[data-test=action-pause]').waitFor();
    const resumed = await view('console-actions');
    expect(resumed.pausedAt).toBeUndefined();
    expect(resumed.pauses.at(-1)).toMatchObject({ by: 'alice', resumedAt: expect.any(String) });
    await until('a tick after the resume', async () => ((await view('console-actions')).ticks > paused.ticks ? true : undefined));
  });

  test("a top-up raises the cap and the money left by the amount, as the API reports", async () => {
    const before = await view('console-actions');
    expect(before).toMatchObject({ maxTotal: 5_000 });
    await page.locator('[data-test=topup-from] option').first().waitFor({ state: 'attached' });
    // alice.a lists first; the account the stream pays from is the one preselected
    expect(await page.locator('[data-test=topup-from] option').allInnerTexts()).toEqual([expect.stringMatching(/^alice\.a /), expect.stringMatching(/^alice\.w /)]);
    expect(before.fromAccountId).toBe('alice.w');
    expect(await page.locator('[data-test=topup-from]').inputValue()).toBe(before.fromAccountId);
    await page.locator('[data-test=topup-amount]').fill('500');
    await page.locator('[data-test=action-topup]').click();
    expect(await text('confirm')).toContain('500 moves from alice.w');
    await answerConfirm(true);
    await page.locator('[data-test=action-done]').waitFor();
    expect(await text('action-done')).toBe('Topped up by 500 from alice.w: the cap is now 5,500.');
    const after = await view('console-actions');
    expect(after).toMatchObject({ maxTotal: 5_500, deposited: 500 });
    // the escrow grew by 500, less what the ticks since paid
    expect(after.depletion.funds).toBe(5_500 - after.totalPaid);
    expect(after.depletion.funds).toBeGreaterThan(before.depletion.funds + 400);
    await until('the cap on screen', async () => ((await text('stream-cap')) === '5,500' ? true : undefined));
    expect(await figure('stream-funds')).toBeGreaterThan(before.depletion.funds + 400);
  });

  test('an action still on its way holds only its own button: a top-up goes through while the pause waits for its answer', async () => {
    // the pause's request is held in the browser until released: an API that is slow to answer it
    let reached = false;
    let release = () => {};
    const held = new Promise<void>((r) => (release = r));
    await page.route('**/v1/streams/console-actions/pause', async (route) => {
      reached = true;
      await held;
      await route.continue();
    });
    try {
      await page.locator('[data-test=action-pause]').click();
      await answerConfirm(true);
      await until('the pause held on its way', async () => (reached ? true : undefined));
      expect(await page.locator('[data-test=action-pause]').isDisabled()).toBe(true);

      await page.locator('[data-test=topup-amount]').fill('100');
      await page.locator('[data-test=action-topup]').click();
      expect(await text('confirm')).toContain('100 moves from alice.w');
      await answerConfirm(true);
      await page.locator('[data-test=action-done]', { hasText: 'Topped up by 100' }).waitFor();
      expect(await view('console-actions')).toMatchObject({ status: 'STREAMING', maxTotal: 5_600, deposited: 600 });
      // the top-up's new cap rebuilt the panel: the pause, still unanswered, stays held
      await until('the new cap on screen', async () => ((await text('stream-cap')) === '5,600' ? true : undefined));
      expect(await page.locator('[data-test=action-pause]').isDisabled()).toBe(true);
    } finally {
      release();
    }
    await page.locator('[data-test=action-resume]').waitFor();
    expect(await text('action-done')).toBe('Paused: no ticks until it is resumed.');
    expect(await view('console-actions')).toMatchObject({ status: 'PAUSED', maxTotal: 5_600 });
    await page.unroute('**/v1/streams/console-actions/pause');

    await page.locator('[data-test=action-resume]').click();
    await answerConfirm(true);
    await page.locator('[data-test=action-pause]').waitFor();
    expect(await page.locator('[data-test=action-pause]').isDisabled()).toBe(false);
    expect(await view('console-actions')).toMatchObject({ status: 'STREAMING' });
  });

  test('a rate change applies from the next tick, as the API reports', async () => {
    await page.locator('[data-test=rate-input]').fill('20');
    await page.locator('[data-test=action-rate]').click();
    expect(await text('confirm')).toContain('From 10 to 20 per tick');
    await answerConfirm(true);
    await page.locator('[data-test=action-done]', { hasText: 'rate' }).waitFor();
    expect(await text('action-done')).toBe('The rate is now 20 per tick, from the next tick.');
    const changed = await view('console-actions');
    expect(changed.ratePerTick).toBe(20);
    expect(changed.rates.at(-1)).toMatchObject({ ratePerTick: 20, by: 'alice' });
    await until('the new rate on screen', async () => ((await text('stream-rate')) === '20' ? true : undefined));
    await screenshot(page, 'stream-actions');
  });

  test('cancel, confirmed: the receipt, closed by alice, as the API has it', async () => {
    await page.locator('[data-test=action-cancel]').click();
    await answerConfirm(true);
    await page.locator('[data-test=receipt]').waitFor();
    const receipt = await view('console-actions');
    expect(receipt).toMatchObject({ status: 'CONFIRMED', reason: 'cancelled', closedBy: 'alice' });
    expect(await text('action-done')).toBe(`Cancelled: ${units(receipt.totalPaid)} paid over ${units(receipt.ticks)} ticks.`);
    expect(await text('receipt-total-paid')).toBe(units(receipt.totalPaid));
    expect(await text('receipt-closed-by')).toBe('alice');
    expect(receipt.escrowReturned).toBe(receipt.maxTotal - receipt.totalPaid);
    expect(await text('receipt-escrow-returned')).toBe(`${units(receipt.escrowReturned)} to alice.w`);
    expect(await page.locator('[data-test=action-pause]').count()).toBe(0);
  });

  test('opening a stream from the Streams page: refused in the API\'s words, then confirmed, sent with the form\'s ref, on its own page with the terms entered; cancelled through its action', async () => {
    await page.locator('nav a', { hasText: 'Streams' }).click();
    await page.locator('[data-test=open-stream-toggle]').click();
    await page.locator('[data-test=open-from] option[value="alice.w"]').waitFor({ state: 'attached' });
    // from: the key's own accounts, as GET /v1/accounts lists them
    const accounts = (await as('alice').get('/v1/accounts')).body.accounts.map((a: { id: string }) => a.id);
    expect(await page.locator('[data-test=open-from] option').evaluateAll((os) => os.map((o) => (o as unknown as { value: string }).value))).toEqual(accounts);
    const ref = await text('open-ref');
    expect(ref).toMatch(/^console-[0-9a-f]{16}$/);
    await page.locator('[data-test=open-from]').selectOption('alice.w');
    await page.locator('[data-test=open-to]').fill('nobody.w');
    await page.locator('[data-test=open-rate]').fill('7');
    await page.locator('[data-test=open-max]').fill('1400');
    await page.locator('[data-test=open-interval]').fill('2');
    await page.locator('[data-test=open-mode]').selectOption('escrow');
    await screenshot(page, 'stream-open');

    // to an account that does not exist: the API's message and the request id its answer carried
    const answer = page.waitForResponse((r) => r.url().endsWith('/v1/streams') && r.request().method() === 'POST');
    await page.locator('[data-test=open-submit]').click();
    await answerConfirm(true);
    await page.locator('[data-test=open-error]').waitFor();
    const sent = (await answer).request().postDataJSON();
    expect(sent).toEqual({ ref, fromAccountId: 'alice.w', toAccountId: 'nobody.w', ratePerTick: 7, maxTotal: 1_400, tickIntervalMs: 2_000, mode: 'escrow' });
    const refused = await as('alice').post('/v1/streams', sent);
    expect(refused.status).toBeGreaterThanOrEqual(400);
    expect(await text('open-error')).toBe(refused.body.error.message);
    expect(await text('open-error-request-id')).toBe((await answer).headers()['x-request-id']);
    expect((await as('alice').get(`/v1/streams/${ref}`)).status).toBe(404);
    // nothing opened under the ref: the next try goes with the same one
    expect(await text('open-ref')).toBe(ref);
    await screenshot(page, 'stream-open-refused');

    await page.locator('[data-test=open-to]').fill('bob.w');
    await page.locator('[data-test=open-submit]').click();
    await page.locator('[data-test=confirm]').waitFor();
    expect(await text('confirm')).toContain(`Open stream ${ref}?`);
    expect(await text('confirm')).toContain('alice.w pays bob.w 7 every 2 s, the first tick at once. 1,400 is held on alice.w now');
    await screenshot(page, 'stream-open-confirm');
    await answerConfirm(true);
    await page.waitForURL(`**/console/#/streams/${ref}`);
    await page.locator('[data-test=stream-rate]').waitFor();
    const opened = await view(ref);
    expect(opened).toMatchObject({ ref, payer: 'alice', payee: 'bob', fromAccountId: 'alice.w', toAccountId: 'bob.w', ratePerTick: 7, maxTotal: 1_400, tickIntervalMs: 2_000, mode: 'escrow', status: 'STREAMING' });
    expect(await text('stream-rate')).toBe('7');
    expect(await text('stream-cap')).toBe('1,400');
    // a retry of the same open (the same ref and terms) is that stream, not a second one
    const again = await as('alice').post('/v1/streams', { ...sent, toAccountId: 'bob.w' });
    expect(again.status).toBe(200);
    expect(again.body.ref).toBe(ref);
    expect(await listedRefs(as('alice'), { refPrefix: ref })).toEqual([ref]);

    await page.locator('[data-test=action-cancel]').click();
    await answerConfirm(true);
    await page.locator('[data-test=receipt]').waitFor();
    const receipt = await view(ref);
    expect(receipt).toMatchObject({ status: 'CONFIRMED', reason: 'cancelled', closedBy: 'alice', escrowReturned: 1_400 - receipt.totalPaid });
    expect(await text('receipt-total-paid')).toBe(units(receipt.totalPaid));
  });

  test("an action the key may not take is refused in the API's words, and changes nothing", async () => {
    await page.locator('button', { hasText: 'Sign out' }).click();
    await signIn(keys.carol!);
    await page.goto(`${base}/console/#/streams/console-gift`);
    await page.locator('[data-test=rate-input]').fill('5');
    await page.locator('[data-test=action-rate]').click();
    const answer = page.waitForResponse((r) => r.url().endsWith('/v1/streams/console-gift/rate'));
    await answerConfirm(true);
    await page.locator('[data-test=action-error]').waitFor();
    // the same request as the API answers it to carol
    const refused = await as('carol').post('/v1/streams/console-gift/rate', { ratePerTick: 5 });
    expect(refused.status).toBe(403);
    expect(await text('action-error')).toBe(refused.body.error.message);
    // and in small text, the request id the browser's own request was answered with
    expect(await text('action-error-request-id')).toBe((await answer).headers()['x-request-id']);
    expect(await view('console-gift')).toMatchObject({ status: 'STREAMING', ratePerTick: 1 });
    await screenshot(page, 'stream-refused');
  });

  test("the payer's operator sees the paid-over-time chart, from the ticks it may read", async () => {
    await page.locator('button', { hasText: 'Sign out' }).click();
    await signIn(keys.otto!);
    await page.goto(`${base}/console/#/streams/console-actions`);
    await page.locator('[data-test=receipt]').waitFor();
    const ticks = await as('otto').get('/v1/streams/console-actions/ticks?limit=1000');
    expect(ticks.status).toBe(200);
    const last = ticks.body.ticks.at(-1);
    expect(last.paid).toBe((await view('console-actions')).totalPaid);
    await until('the chart at the last tick', async () => (Number(await page.locator('[data-test=paid-chart]').getAttribute('data-last')) === last.paid ? true : undefined));
    expect(Number(await page.locator('[data-test=paid-chart]').getAttribute('data-points'))).toBe(ticks.body.ticks.length);
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
    // where it stands against its limits, as GET /v1/entities/:id has it: at the hourly limit, with when the next may be created
    const e = (await as('nimbus').get('/v1/entities/nimbus')).body;
    expect(e).toMatchObject({ subaccountCap: 5, creationsPerHour: 2, liveSubaccounts: 2, creationsLastHour: 2, nextCreationAt: expect.any(String) });
    expect(await figure('entity-live')).toBe(e.liveSubaccounts);
    expect(await figure('entity-cap')).toBe(e.subaccountCap);
    expect(await text('entity-creations')).toMatch(new RegExp(`^${e.creationsLastHour} of ${e.creationsPerHour} created this hour · next at ${clock(Date.parse(e.nextCreationAt))} \\(in `));
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

  test("the debt ledger: after Checkpoint now, the chart's last point is the API's; the subaccount selector draws that subaccount's series; the ranges", async () => {
    const chart = page.locator('[data-test=ledger-chart]');
    const ledgerOf = async (query: Record<string, string>) => {
      const res = await as('nimbus').get(`/v1/entities/nimbus/ledger?${new URLSearchParams(query)}`);
      expect(res.status).toBe(200);
      return res.body.points as Array<Record<string, number | string>>;
    };
    const lastDay = () => ({ from: new Date(Date.now() - 86_400_000).toISOString(), step: '3600' });
    /** The figures the chart plots at its last point and the legend shows, against the API's last point. */
    const expectShown = async (last: Record<string, number | string>, subaccount = '') => {
      await until(`the chart of ${subaccount || 'all subaccounts'} at the API's last point`, async () =>
        (await chart.getAttribute('data-subaccount').catch(() => null)) === subaccount && Number(await chart.getAttribute('data-last-balance')) === last.balance ? true : undefined);
      for (const s of ['balance', 'held', 'paid', 'received']) {
        expect(Number(await chart.getAttribute(`data-last-${s}`))).toBe(last[s]);
        expect(await text(`ledger-${s}`)).toBe(units(last[s] as number));
        // the last dot of the series is that figure
        expect(await chart.locator(`circle.series-${s} title`).last().textContent()).toMatch(new RegExp(`^${s[0]!.toUpperCase()}${s.slice(1)} ${units(last[s] as number)} · `));
      }
      expect(await text('ledger-round')).toMatch(new RegExp(`${clock(Date.parse(last.checkpointAt as string))}$`));
    };

    // no round yet: the chart says so
    await page.locator('[data-test=ledger-empty]').waitFor();
    expect((await ledgerOf(lastDay())).every((p) => p.checkpointAt === undefined)).toBe(true);
    await page.locator('[data-test=ledger-checkpoint]').click();
    expect(await text('confirm')).toContain('Checkpoint nimbus now?');
    await answerConfirm(true);
    await page.locator('[data-test=ledger-checkpoint-done]').waitFor();
    expect(await text('ledger-checkpoint-done')).toMatch(/^Checkpointed 2 subaccounts at \d\d:\d\d:\d\d\.$/);
    const last = (await ledgerOf(lastDay())).at(-1)!;
    expect(last).toMatchObject({ subaccounts: 2, balance: 100, checkpointAt: expect.any(String) });
    // the round holds what the dashboard holds
    const totals = (await as('nimbus').get('/v1/entities/nimbus/dashboard')).body.totals;
    expect([last.balance, last.held, last.paid, last.received]).toEqual([totals.balance, totals.held, totals.paid, totals.received]);
    await expectShown(last);
    expect(await text('ledger-as-of')).toMatch(/^2 subaccounts at /);

    // one subaccount's own series
    expect(await page.locator('[data-test=ledger-subaccount] option').evaluateAll((os) => os.map((o) => (o as unknown as { value: string }).value))).toEqual(['', 'nimbus/1', 'nimbus/2']);
    await page.locator('[data-test=ledger-subaccount]').selectOption('nimbus/1');
    const own = (await ledgerOf({ ...lastDay(), subaccount: 'nimbus/1' })).at(-1)!;
    expect(own).toMatchObject({ subaccounts: 1, balance: 50, checkpointAt: last.checkpointAt });
    await expectShown(own, 'nimbus/1');
    expect(await text('ledger-as-of')).toMatch(/^nimbus\/1 at /);
    // the selection survives the page's next poll (every 5 s)
    await new Promise((r) => setTimeout(r, 5_500));
    expect(await chart.getAttribute('data-subaccount')).toBe('nimbus/1');
    expect(await page.locator('[data-test=ledger-subaccount]').inputValue()).toBe('nimbus/1');

    // the ranges: as many points as the API gives for the same window and step
    for (const [range, days] of [['7d', 7], ['30d', 30]] as const) {
      await page.locator(`[data-test=ledger-range-${range}]`).click();
      const points = await ledgerOf({ from: new Date(Date.now() - days * 86_400_000).toISOString(), step: '86400', subaccount: 'nimbus/1' });
      expect(points).toHaveLength(days + 1);
      await until(`${range} on the chart`, async () => (Number(await chart.getAttribute('data-points').catch(() => 0)) === points.length ? true : undefined));
      await expectShown(points.at(-1)!, 'nimbus/1');
    }
    await page.locator('[data-test=ledger-subaccount]').selectOption('');
    await page.locator('[data-test=ledger-range-24h]').click();
    await expectShown(last);
    await page.locator('[data-test=ledger]').scrollIntoViewIfNeeded();
    await screenshot(page, 'entity-ledger');
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
    expect(await page.locator('[data-seller=aster]').textContent()).toBe('2 s');
    // times, not tick numbers: the board's tick n starts at n seconds after the epoch
    const now = await text('crown-now');
    expect(now).toMatch(/^\d\d:\d\d:\d\d$/);
    expect(Math.abs(Date.parse(`${new Date().toISOString().slice(0, 10)}T${now}`) - Date.parse(`${new Date().toISOString().slice(0, 10)}T${clock(crown.current.tick * 1000)}`))).toBeLessThanOrEqual(10_000);
    const asterAlone = crown.intervals.find((iv: { holders: string[] }) => iv.holders.join() === 'aster');
    expect(asterAlone).toMatchObject({ end: asterAlone.start + 2 });
    const rows = await page.locator('[data-test=crown-intervals] tbody tr').allInnerTexts();
    const asterRow = rows.find((r) => r.split('\t')[3] === 'aster')!.split('\t');
    expect(asterRow[0]).toMatch(new RegExp(`^${clock(asterAlone.start * 1000)} · `));
    expect([asterRow[1], asterRow[2], asterRow[4]]).toEqual([clock(asterAlone.end * 1000), '2 s', '5']);
    expect(await page.locator('main').innerText()).not.toContain(String(crown.current.tick));
    await expectTimelineIsTheGrid('default');
    await screenshot(page, 'crown');

    // the market picker: the bid market's crown, its highest bid holding, and its own timeline
    await page.locator('[data-test=crown-market-spot-bids]').click();
    await until('the bid market on screen', async () => ((await text('crown-holders').catch(() => '')) === 'aster' ? true : undefined));
    expect(await text('crown-best-rate')).toBe('7');
    expect(await page.locator('[data-test=crown-market-spot-bids]').getAttribute('class')).toBe('chip active');
    await expectTimelineIsTheGrid('spot-bids');
    expect(await page.locator('main').innerText()).not.toContain(String(crown.current.tick));
    await screenshot(page, 'crown-bids');

    await page.locator('nav a', { hasText: 'Audit' }).click();
    await page.locator('[data-test=audit-verdict]').waitFor();
    const audit = (await admin().get('/v1/audit')).body;
    expect(audit.ok).toBe(true);
    expect(await text('audit-verdict')).toBe('Every invariant holds');
    expect(await page.locator('[data-test=audit-checks] tbody tr').count()).toBe(audit.checks.length);
    await screenshot(page, 'audit');

    // the admin's streams list holds everyone's, newest first, a page at a time
    await page.locator('nav a', { hasText: 'Streams' }).click();
    await page.locator('a.chip', { hasText: 'All' }).click();
    const newest = await listedRefs(admin(), {});
    expect(newest).toHaveLength(25);
    await until('the newest page of everyone\'s streams', async () => (JSON.stringify(await refsOnScreen()) === JSON.stringify(newest) ? true : undefined));
    await page.locator('[data-test=streams-older]').waitFor();
    // carol's streams are older than that page: the API's party filter still finds them
    expect(newest).not.toContain('console-gift');
    expect(newest).not.toContain('carol-hidden');
    await page.locator('[data-test=search-party]').fill('carol');
    await page.locator('form.search button').click();
    const carols = await listedRefs(admin(), { party: 'carol' });
    expect(carols).toEqual(['console-gift', 'carol-hidden']);
    await until("carol's streams on screen", async () => (JSON.stringify(await refsOnScreen()) === JSON.stringify(carols) ? true : undefined));
  });

  test('the admin lists the entities, each with its live subaccounts as the API counts them', async () => {
    await page.locator('nav a', { hasText: 'Entities' }).click();
    await page.locator('[data-test=entities]').waitFor();
    const { entities } = (await admin().get('/v1/entities')).body as { entities: Array<{ id: string; liveSubaccounts: number }> };
    expect(entities.map((e) => [e.id, e.liveSubaccounts])).toEqual([['crumbly', 0], ['nimbus', 2]]);
    expect(await page.locator('[data-test=entities] tbody tr').count()).toBe(entities.length);
    for (const e of entities) expect(await figure(`entity-live-${e.id}`)).toBe(e.liveSubaccounts);
    expect(await page.locator('[data-test=entity-link-nimbus]').getAttribute('href')).toBe('#/entity/nimbus');
    await screenshot(page, 'entities');
    // a party key gets no list: the API lists entities to the admin only
    expect((await as('nimbus').get('/v1/entities')).status).toBe(403);
  });

  test("an entity the API does not know: its message, and the request id in small text", async () => {
    const ids = requestIds('/v1/entities/nobody');
    await page.goto(`${base}/console/#/entity/nobody`);
    await page.locator('[data-test=error]').waitFor();
    const shown = await text('error-request-id');
    expect(ids.has(shown)).toBe(true);
    const again = await admin().get(ids.get(shown)!);
    expect(again.status).toBe(404);
    expect(await text('error')).toBe(again.body.error.message);
  });

  test("a failed subaccount shows why, with a link to its own creation saga in Temporal", async () => {
    await page.goto(`${base}/console/#/entity`);
    await page.locator('[data-test=entity-link-crumbly]').click();
    await page.locator('[data-test=failed-subaccounts]').waitFor();
    const sub = (await admin().get('/v1/subaccounts/crumbly%2F1')).body;
    expect(sub).toMatchObject({ status: 'failed', failedStep: expect.any(String), failure: expect.any(String), creationWorkflowId: 'subaccount-create-crumbly/first' });
    expect(await text('failure-crumbly/1')).toBe(sub.failure);
    expect((await page.locator('[data-test=failed-subaccounts] tbody tr').innerText()).split('\t').slice(0, 2)).toEqual(['crumbly/1', sub.failedStep]);
    expect(await text('entity-live')).toBe('0');
    const href = (await page.locator('[data-test="saga-crumbly/1"]').getAttribute('href'))!;
    expect(href).toBe(`${TEMPORAL_UI}/namespaces/default/workflows/${encodeURIComponent(sub.creationWorkflowId)}`);
    expect(decodeURIComponent(href).endsWith(`/workflows/${sub.creationWorkflowId}`)).toBe(true);
    // the workflow the link opens is the saga that failed
    const saga = await stack.client.workflow.getHandle(sub.creationWorkflowId).describe();
    expect(saga.workflowId).toBe(sub.creationWorkflowId);
    expect(saga.type).toBe('subaccountCreationWorkflow');
    await screenshot(page, 'entity-failed');
  });

  test('at 375 px wide nothing scrolls sideways: the nav wraps, tables scroll in their own box', async () => {
    await page.setViewportSize({ width: 375, height: 740 });
    try {
      for (const [hash, ready] of [
        ['streams?status=all', '[data-test=streams]'],
        ['entity', '[data-test=entities]'],
        ['streams/console-actions', '[data-test=receipt]'],
        ['entity/nimbus', '[data-test=ledger-chart]'],
        ['entity/crumbly', '[data-test=failed-subaccounts]'],
        ['pool', '[data-test=grants]'],
        ['crown', '[data-test=crown-chart]'],
        ['audit', '[data-test=audit-checks]'],
      ] as const) {
        await page.goto(`${base}/console/#/${hash}`);
        await page.locator(ready).waitFor();
        const width = await page.evaluate<number>('Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)');
        expect(`${hash}: ${width <= 375 ? 'fits' : `${width} px wide`}`).toBe(`${hash}: fits`);
        if (hash === 'streams?status=all') {
          // the same rows as the API lists, in a box that scrolls on its own
          expect(await page.locator('[data-test=streams] tbody tr').count()).toBe((await admin().get('/v1/streams?limit=25')).body.streams.length);
          expect(await page.locator('.table-scroll').first().evaluate((el) => el.scrollWidth > el.clientWidth)).toBe(true);
          await screenshot(page, 'mobile-streams');
        }
        if (hash === 'entity') {
          expect(await page.locator('[data-test=entities] tbody tr').count()).toBe((await admin().get('/v1/entities')).body.entities.length);
          await screenshot(page, 'mobile-entities');
        }
        if (hash === 'entity/nimbus') {
          // the ledger's chart scales into the screen, its last point the API's
          const chart = await page.locator('[data-test=ledger-chart]').boundingBox();
          expect(chart!.x).toBeGreaterThanOrEqual(0);
          expect(chart!.x + chart!.width).toBeLessThanOrEqual(375);
          const last = (await admin().get(`/v1/entities/nimbus/ledger?from=${new Date(Date.now() - 86_400_000).toISOString()}&step=3600`)).body.points.at(-1);
          expect(await text('ledger-balance')).toBe(units(last.balance));
          for (const control of ['ledger-range-30d', 'ledger-subaccount', 'ledger-checkpoint']) {
            const box = await page.locator(`[data-test=${control}]`).boundingBox();
            expect(box!.x + box!.width).toBeLessThanOrEqual(375);
          }
          await screenshot(page, 'mobile-entity');
        }
        if (hash === 'streams/console-actions') {
          expect(await text('receipt-total-paid')).toBe(units((await view('console-actions')).totalPaid));
          await screenshot(page, 'mobile-stream');
        }
      }
      // the nav wrapped onto its own line rather than running off the screen
      const nav = await page.locator('header nav').boundingBox();
      expect(nav!.x + nav!.width).toBeLessThanOrEqual(375);
    } finally {
      await page.setViewportSize({ width: 1280, height: 800 });
    }
  });

  test('no uncaught error in the page all along', () => {
    expect(pageErrors).toEqual([]);
  });
});
