import { get, type AuditReport, type Grant, type ConsoleConfig, type Crown, type Dashboard, type Delivery, type PoolState, type StreamItem, type Subaccount } from './api';
import { badge, card, dateTime, duration, h, stat, statusBadge, svg, table, time, units, when } from './dom';
import { payeeOf, streamLink, temporalLink, workflowsWhere } from './links';
import { searchStreams } from './streamSearch';
import { CROWN_TICK_MS } from '../../src/domain/crown';

export { streamPage } from './streamPage';

/** A page: what it shows (loaded again every `everyMs` while it is open, for the live ones). */
export interface Page {
  title: string;
  load(): Promise<Node>;
  everyMs?: number;
}

export interface Context {
  config: ConsoleConfig;
  /** Reads the page again now (after an action), without waiting for the next poll. */
  refresh(): void;
}

/**
 * Streams the key can see, newest first; paid so far moves as the poll reads it again.
 * With `q`, only those whose ref or party contains it (matched in the page: see streamSearch.ts).
 */
export function streamsPage(ctx: Context, params: URLSearchParams): Page {
  const status = params.get('status') ?? 'open';
  const after = params.get('after') ?? undefined;
  const q = params.get('q')?.trim() || undefined;
  const party = ctx.config.actor.party;
  const hash = (p: Record<string, string | undefined>) => `#/streams?${new URLSearchParams(Object.entries(p).filter((e): e is [string, string] => e[1] !== undefined))}`;
  // built once, so what the operator is typing survives the poll's redraw
  const input = h('input', { type: 'search', name: 'q', placeholder: 'ref or party', value: q ?? '', 'data-test': 'stream-search', 'aria-label': 'search streams' }) as HTMLInputElement;
  const search = h('form', { class: 'search', onsubmit: (e: Event) => { e.preventDefault(); location.hash = hash({ status, q: input.value.trim() || undefined }); } },
    input, h('button', { type: 'submit' }, 'Search'), q ? h('a', { href: hash({ status }), 'data-test': 'search-clear' }, 'clear') : null);
  return {
    title: 'Streams',
    // a search reads up to five pages: every 5 s, not every second
    everyMs: q ? 5000 : 1000,
    async load() {
      const query = new URLSearchParams({ limit: '25', ...(status !== 'all' && { status }), ...(after && { after }) });
      const page = q ? { streams: await searchStreams(q, status), next: undefined } : await get<{ streams: StreamItem[]; next?: string }>(`/v1/streams?${query}`);
      const filter = (value: string, label: string) => h('a', { href: hash({ status: value, q }), class: value === status ? 'chip active' : 'chip' }, label);
      const running = party ? `SluiceKind="stream" AND SluicePayer="${party}" AND ExecutionStatus="Running"` : `SluiceKind="stream" AND ExecutionStatus="Running"`;
      return card(
        'Streams',
        h('div', { class: 'toolbar' }, filter('open', 'Open'), filter('paused', 'Paused'), filter('closed', 'Closed'), filter('failed', 'Failed'), filter('all', 'All'), search,
          h('span', { class: 'spacer' }), temporalLink(ctx.config, party ? `${party}'s running streams in Temporal` : 'Running streams in Temporal', workflowsWhere(running))),
        table(
          ['Ref', 'Payer', 'Payee', 'Mode', 'Rate / tick', 'Ticks', 'Paid so far', 'Cap', 'Status', 'Opened'],
          page.streams.map((s) => [
            streamLink(s.ref), s.payer, payeeOf(s), s.mode, units(s.ratePerTick), s.ticks,
            h('span', { 'data-test': `paid-${s.ref}` }, units(s.totalPaid)), s.maxTotal === undefined ? 'open-ended' : units(s.maxTotal), statusBadge(s.status), when(s.openedAt),
          ]),
          { numeric: [4, 5, 6, 7], empty: q ? `No stream here whose ref or party contains "${q}".` : 'No streams here.', test: 'streams' },
        ),
        page.next ? h('p', {}, h('a', { href: hash({ status, after: page.next }) }, 'Older streams →')) : null,
        h('p', { class: 'hint' }, q
          ? 'A search looks through the newest 500 streams this key can list, and finds an older one by its full ref.'
          : 'Amounts are integer minor units. The list reads the API again every second.'),
      );
    },
  };
}

/** An entity's fleet: totals, statuses, each subaccount's money, and its webhook deliveries. */
export function entityPage(ctx: Context, id: string): Page {
  // The deliveries route pages oldest first (after an id, at most 500 a page): the page
  // keeps the latest 20 and a cursor, so each poll reads only the deliveries since the last
  // (a fixed first page of 500 read 500 rows every 5 s, and past 500 showed old ones as latest).
  const PAGE = 500;
  let after = 0;
  let latest: Delivery[] = [];
  async function readNewDeliveries() {
    for (;;) {
      const { deliveries } = await get<{ deliveries: Delivery[] }>(`/v1/entities/${encodeURIComponent(id)}/deliveries?after=${after}&limit=${PAGE}`);
      latest = [...latest, ...deliveries].slice(-20);
      after = deliveries.at(-1)?.id ?? after;
      if (deliveries.length < PAGE) return;
    }
  }
  // why a subaccount failed (the dashboard says only that it did): `failed` is final, so each is read once
  const failures = new Map<string, Subaccount>();
  async function readNewFailures(d: Dashboard) {
    const unread = d.subaccounts.filter((s) => s.status === 'failed' && !failures.has(s.id));
    for (const sub of await Promise.all(unread.map((s) => get<Subaccount>(`/v1/subaccounts/${encodeURIComponent(s.id)}`)))) failures.set(sub.id, sub);
  }
  return {
    title: `Entity ${id}`,
    everyMs: 5000,
    async load() {
      const [d] = await Promise.all([get<Dashboard>(`/v1/entities/${encodeURIComponent(id)}/dashboard`), readNewDeliveries()]);
      await readNewFailures(d);
      const failed = d.subaccounts.flatMap((s) => failures.get(s.id) ?? []);
      const t = d.totals;
      const recent = [...latest].reverse();
      return h(
        'div', {},
        card(
          `Entity ${d.entity}`,
          h('div', { class: 'stats' },
            stat('Main balance', units(t.mainBalance), 'entity-main-balance', `${units(t.collateralHeld)} held as collateral`),
            stat('Subaccount balances', units(t.balance), 'entity-balance', `${units(t.held)} held`),
            stat('Open streams', t.openStreams, 'entity-open-streams'),
            stat('Paid by streams', units(t.paid)),
            stat('Received by streams', units(t.received)),
          ),
          h('div', { class: 'toolbar' }, ...Object.entries(d.statusCounts).map(([status, n]) => h('span', { class: 'chip', 'data-test': `status-${status}` }, `${status}: ${n}`)),
            h('span', { class: 'spacer' }), temporalLink(ctx.config, `${d.entity}'s workflows in Temporal`, workflowsWhere(`SluiceEntity="${d.entity}"`))),
        ),
        card(
          'Subaccounts',
          table(['Id', 'Status', 'Balance', 'Held', 'Open streams', 'Paid', 'Received'],
            d.subaccounts.map((s) => [s.id, statusBadge(s.status), units(s.balance), units(s.held), s.openStreams, units(s.paid), units(s.received)]),
            { numeric: [2, 3, 4, 5, 6], empty: 'No subaccounts yet.', test: 'subaccounts' }),
          d.nextAfter !== undefined ? h('p', { class: 'hint' }, 'More subaccounts than one page shows.') : null,
        ),
        failed.length ? failedCard(ctx, d.entity, failed) : null,
        card(
          'Webhook deliveries (latest 20)',
          table(['When', 'Event', 'Subaccount', 'Attempt', 'Outcome', 'URL'],
            // an event's key is `<type>:<subaccount id>`
            recent.map((w) => [time(w.at), w.eventType, w.eventKey.slice(w.eventType.length + 1), w.attempt, w.ok ? badge(`${w.statusCode ?? ''} delivered`, 'ok') : badge(w.statusCode ? `${w.statusCode} refused` : (w.error ?? 'failed'), 'bad'), h('code', {}, w.url)]),
            { numeric: [3], empty: 'No deliveries yet.', test: 'deliveries' }),
        ),
      );
    },
  };
}

/**
 * Failed subaccounts with the step their creation saga failed at and why, and a link to
 * the entity's failed creation sagas in the Temporal UI. (The saga's workflow id is
 * `subaccount-create-<entity>/<request id>`; the API does not give the request id, so
 * the link lists the entity's failed creations rather than opening the one.)
 */
function failedCard(ctx: Context, entity: string, failed: Subaccount[]) {
  const sagas = temporalLink(ctx.config, 'failed creation sagas in Temporal', workflowsWhere(`SluiceKind="subaccount" AND SluiceEntity="${entity}" AND SluiceStatus="FAILED"`), 'failed-sagas');
  return card(
    'Failed subaccounts',
    table(['Subaccount', 'Failed at', 'Reason', 'When'],
      failed.map((s) => [s.id, s.failedStep ? h('code', {}, s.failedStep) : '—', h('span', { 'data-test': `failure-${s.id}` }, s.failure ?? '—'), when(s.endedAt ?? s.createdAt)]),
      { test: 'failed-subaccounts' }),
    sagas ? h('p', {}, sagas) : null,
  );
}

/** The free-tier pool today. */
export function poolPage(): Page {
  return {
    title: 'Pool',
    everyMs: 5000,
    async load() {
      const [p, { grants }] = await Promise.all([get<PoolState>('/v1/pool'), get<{ grants: Grant[] }>('/v1/grants?limit=20')]);
      const decision = (d: Grant['decision']) => badge(d, d === 'free' ? 'ok' : d === 'partial' ? 'live' : 'muted');
      return h('div', {}, card(
        `Free-tier pool (${p.accountId})`,
        h('div', { class: 'stats' },
          stat('Balance', units(p.balance), 'pool-balance'),
          stat('Available', units(p.available), 'pool-available', `${units(p.held)} held by open reservations`),
          stat('Absorbed today', units(p.absorbedToday), 'pool-absorbed', `${p.day} (UTC)`),
          stat('Credited back today', units(p.creditedToday), 'pool-credited', '10% of every paid amount'),
          stat('Reserved, open', units(p.reservedOpen)),
        ),
        h('p', { class: 'hint' }, 'A grant is reserved on the pool when a job is decided (free) or paid (partial), then captured or released when it settles.'),
      ), card(
        'Grants (latest 20)',
        table(['Job', 'Payer', 'Tier', 'Decision', 'Status', 'Estimated', 'Reserved', 'Absorbed', 'Paid', 'Credited', 'Created'],
          grants.map((g) => [h('code', {}, g.jobId), g.payer, g.tier, decision(g.decision), statusBadge(g.status), units(g.estimatedCost), units(g.reserved), units(g.absorbed), units(g.paid), units(g.credited), time(g.createdAt)]),
          { numeric: [5, 6, 7, 8, 9], empty: 'No grants yet.', test: 'grants' }),
      ));
    },
  };
}

/**
 * The rate board counts in ticks of CROWN_TICK_MS (one a second) from the epoch: tick n
 * starts at n × CROWN_TICK_MS. The crown answer is in ticks; the page shows clock times.
 */
const boardTime = (tick: number) => new Date(tick * CROWN_TICK_MS);
/** Crown time (in ticks, possibly a fraction: a shared tick is split) as a length of time. */
const crownSpan = (ticks: number) => {
  const s = (ticks * CROWN_TICK_MS) / 1000;
  return s < 60 ? `${s.toLocaleString('en-US', { maximumFractionDigits: 2 })} s` : duration(s * 1000);
};

/** Who holds the crown now, crown time per seller over the last hour as bars, and the latest changes of holder. */
export function crownPage(): Page {
  return {
    title: 'Crown',
    everyMs: 5000,
    async load() {
      const c = await get<Crown>('/v1/crown');
      const sellers = Object.entries(c.crownTime).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
      // the window ends with the current tick: its last interval is still running
      const latest = c.intervals.slice(-10).reverse();
      return h(
        'div', {},
        card(
          'Crown holders now',
          h('div', { class: 'stats' },
            stat('Holders', c.current.holders.length ? c.current.holders.join(', ') : 'nobody', 'crown-holders'),
            stat('Best rate per tick', c.current.bestRate === null ? '—' : units(c.current.bestRate), 'crown-best-rate'),
            stat('As of', time(boardTime(c.current.tick)), 'crown-now', 'the board moves once a second'),
          ),
        ),
        card(`Crown time per seller, ${time(boardTime(c.from))} to ${time(boardTime(c.to))}`, crownChart(sellers),
          h('p', { class: 'hint' }, `The last ${duration((c.to - c.from) * CROWN_TICK_MS)}; a second shared by several holders is split evenly among them.`)),
        card('Latest changes of holder',
          table(['From', 'Until', 'For', 'Holders', 'Best rate'],
            latest.map((iv) => [
              when(boardTime(iv.start)), iv.end >= c.to ? 'now' : time(boardTime(iv.end)), crownSpan(iv.end - iv.start),
              iv.holders.length ? iv.holders.join(', ') : 'nobody', iv.bestRate === null ? '—' : units(iv.bestRate),
            ]),
            { numeric: [4], empty: 'No change in this window.', test: 'crown-intervals' }),
          c.intervalCount > c.intervals.length ? h('p', { class: 'hint' }, `${units(c.intervalCount)} changes in the window; the API lists the first ${units(c.intervals.length)}, the latest of those are shown.`) : null),
      );
    },
  };
}

/** Horizontal SVG bars: one per seller, its crown time written at the end. */
function crownChart(sellers: Array<[string, number]>): Node {
  if (sellers.length === 0) return h('p', { class: 'empty' }, 'No seller held the crown in this window.');
  const rowPx = 30, labelPx = 140, barPx = 460, valuePx = 110;
  const max = Math.max(...sellers.map(([, t]) => t));
  return svg(
    'svg', { viewBox: `0 0 ${labelPx + barPx + valuePx} ${rowPx * sellers.length}`, class: 'chart', 'data-test': 'crown-chart', role: 'img' },
    ...sellers.flatMap(([seller, ticks], i) => {
      const y = i * rowPx;
      const w = max > 0 ? Math.max(2, (ticks / max) * barPx) : 2;
      return [
        svg('text', { x: labelPx - 10, y: y + rowPx / 2 + 5, 'text-anchor': 'end', class: 'chart-label' }, seller),
        svg('rect', { x: labelPx, y: y + 5, width: w.toFixed(1), height: rowPx - 10, rx: 3, class: 'chart-bar' }),
        svg('text', { x: labelPx + w + 8, y: y + rowPx / 2 + 5, class: 'chart-value', 'data-seller': seller }, crownSpan(ticks)),
      ];
    }),
  );
}

/** The auditor's verdict (admin key only; the API refuses a party key, and the page says so). */
export function auditPage(ctx: Context): Page {
  return {
    title: 'Audit',
    async load() {
      if (ctx.config.actor.kind !== 'admin') return card('Audit', h('p', { class: 'empty', 'data-test': 'audit-admin-only' }, 'The auditor runs over the whole ledger: it needs the admin key.'));
      const a = await get<AuditReport>('/v1/audit');
      return card(
        'Auditor',
        h('p', { class: `verdict ${a.ok ? 'ok' : 'bad'}`, 'data-test': 'audit-verdict' }, a.ok ? 'Every invariant holds' : 'Violations found'),
        h('p', { class: 'hint' }, `Checked ${dateTime(a.checkedAt)}. `, h('a', { href: '#/audit', onclick: () => window.dispatchEvent(new HashChangeEvent('hashchange')) }, 'Run again')),
        table(['Check', 'What it proves', 'Violations', ''], a.checks.map((c) => [h('code', {}, c.name), c.description, c.violations, c.ok ? badge('ok', 'ok') : badge('violated', 'bad')]), { numeric: [2], test: 'audit-checks' }),
      );
    },
  };
}
