import { ApiError, get, type AuditReport, type Grant, type ConsoleConfig, type Crown, type CrownInterval, type CrownTimeline, type Market, type Dashboard, type Delivery, type Entity, type EntityListing, type PoolState, type StreamItem, type Subaccount } from './api';
import { ago, badge, card, dateTime, duration, errorNote, h, stat, statusBadge, svg, table, time, units, when } from './dom';
import { payeeOf, streamLink, temporalLink, workflowsWhere } from './links';
import { ledgerPanel } from './ledgerChart';
import { openStreamForm } from './openStream';
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
 * A search is the API's own filters (GET /v1/streams?party=&refPrefix=, within what the
 * key may see), paged like the plain list, so it reaches the oldest stream as well.
 */
export function streamsPage(ctx: Context, params: URLSearchParams): Page {
  const status = params.get('status') ?? 'open';
  const after = params.get('after') ?? undefined;
  const partyQ = params.get('party')?.trim() || undefined;
  const refQ = params.get('ref')?.trim() || undefined;
  const searching = partyQ !== undefined || refQ !== undefined;
  const party = ctx.config.actor.party;
  const hash = (p: Record<string, string | undefined>) => `#/streams?${new URLSearchParams(Object.entries(p).filter((e): e is [string, string] => e[1] !== undefined))}`;
  // built once, so what the operator is typing survives the poll's redraw
  const partyInput = h('input', { type: 'search', name: 'party', placeholder: 'party id', value: partyQ ?? '', 'data-test': 'search-party', 'aria-label': 'streams of party', autocapitalize: 'none' }) as HTMLInputElement;
  const refInput = h('input', { type: 'search', name: 'ref', placeholder: 'ref starts with', value: refQ ?? '', 'data-test': 'search-ref', 'aria-label': 'streams whose ref starts with', autocapitalize: 'none' }) as HTMLInputElement;
  const search = h('form', { class: 'search', onsubmit: (e: Event) => { e.preventDefault(); location.hash = hash({ status, party: partyInput.value.trim() || undefined, ref: refInput.value.trim() || undefined }); } },
    partyInput, refInput, h('button', { type: 'submit' }, 'Search'), searching ? h('a', { href: hash({ status }), 'data-test': 'search-clear' }, 'clear') : null);
  // a party key may open a stream from its own accounts: the form is kept across the list's polls, with what is typed in it
  const opener = party ? openStreamForm() : null;
  const filter = (value: string, label: string) => h('a', { href: hash({ status: value, party: partyQ, ref: refQ }), class: value === status ? 'chip active' : 'chip' }, label);
  const running = party ? `SluiceKind="stream" AND SluicePayer="${party}" AND ExecutionStatus="Running"` : `SluiceKind="stream" AND ExecutionStatus="Running"`;
  const sought = [partyQ && `party ${partyQ}`, refQ && `a ref starting with "${refQ}"`].filter(Boolean).join(' and ');
  // the card and its toolbar are built once too: only the list under them is redrawn, so the
  // search box is never moved in the page and keeps the focus while the operator types
  const list = h('div');
  const root = h('div', {}, opener, card(
    'Streams',
    h('div', { class: 'toolbar' }, filter('open', 'Open'), filter('paused', 'Paused'), filter('closed', 'Closed'), filter('failed', 'Failed'), filter('all', 'All'), search,
      h('span', { class: 'spacer' }), temporalLink(ctx.config, party ? `${party}'s running streams in Temporal` : 'Running streams in Temporal', workflowsWhere(running))),
    list,
  ));
  return {
    title: 'Streams',
    everyMs: 1000,
    async load() {
      const query = new URLSearchParams({ limit: '25', ...(status !== 'all' && { status }), ...(partyQ && { party: partyQ }), ...(refQ && { refPrefix: refQ }), ...(after && { after }) });
      // a search the API refuses (a party id it cannot be) is said under the search box, which stays
      const page = await get<{ streams: StreamItem[]; next?: string }>(`/v1/streams?${query}`).catch((error: unknown) => {
        if (searching && error instanceof ApiError && error.status === 400) return error;
        throw error;
      });
      list.replaceChildren(
        page instanceof ApiError ? errorNote(page, 'search-error') : table(
          ['Ref', 'Payer', 'Payee', 'Mode', 'Rate / tick', 'Ticks', 'Paid so far', 'Cap', 'Status', 'Opened'],
          page.streams.map((s) => [
            streamLink(s.ref), s.payer, payeeOf(s), s.mode, units(s.ratePerTick), s.ticks,
            h('span', { 'data-test': `paid-${s.ref}` }, units(s.totalPaid)), s.maxTotal === undefined ? 'open-ended' : units(s.maxTotal), statusBadge(s.status), when(s.openedAt),
          ]),
          { numeric: [4, 5, 6, 7], empty: searching ? `No stream here with ${sought}.` : 'No streams here.', test: 'streams' },
        ),
        !(page instanceof ApiError) && page.next ? h('p', {}, h('a', { href: hash({ status, party: partyQ, ref: refQ, after: page.next }), 'data-test': 'streams-older' }, 'Older streams →')) : h('span'),
        h('p', { class: 'hint' }, searching
          ? 'A party\'s streams are those it pays, is paid by or is a member of; the API searches every stream this key may see.'
          : 'Amounts are integer minor units. The list reads the API again every second.'),
      );
      return root;
    },
  };
}

/**
 * Which entity. The admin gets every entity, by id a page at a time (GET /v1/entities),
 * each with its live subaccounts and a link to its page, and may also open one by its id;
 * a party key opens its own (the API refuses any other, and lists entities to the admin only).
 */
export function entitiesPage(ctx: Context, params: URLSearchParams): Page {
  const admin = ctx.config.actor.kind === 'admin';
  const after = params.get('after') ?? undefined;
  const input = h('input', { name: 'entity', placeholder: 'entity id', value: ctx.config.actor.party ?? '', required: true, autocapitalize: 'none' }) as HTMLInputElement;
  const open = h('form', { class: 'inline', onsubmit: (e: Event) => { e.preventDefault(); location.hash = `#/entity/${encodeURIComponent(input.value.trim())}`; } },
    input, h('button', { type: 'submit' }, 'Open'));
  return {
    title: admin ? 'Entities' : 'Entity',
    async load() {
      if (!admin) return card('Entity dashboard', h('p', { class: 'hint' }, 'Your own dashboard.'), open);
      const { entities, next } = await get<{ entities: EntityListing[]; next?: string }>(`/v1/entities?${new URLSearchParams({ limit: '50', ...(after && { after }) })}`);
      return card(
        'Entities',
        table(['Id', 'Live subaccounts', 'Name', 'Main account', 'Registered'],
          entities.map((e) => [h('a', { href: `#/entity/${encodeURIComponent(e.id)}`, 'data-test': `entity-link-${e.id}` }, e.id),
            h('span', { 'data-test': `entity-live-${e.id}` }, units(e.liveSubaccounts)), e.name, h('code', {}, e.mainAccountId), when(e.createdAt)]),
          { numeric: [1], empty: after ? 'No more entities.' : 'No entities registered yet.', test: 'entities' }),
        next ? h('p', {}, h('a', { href: `#/entity?after=${encodeURIComponent(next)}` }, 'More entities →')) : null,
        h('p', { class: 'hint' }, 'Or open one by its id:'), open,
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
  // the debt ledger's chart keeps its controls across polls: it sits between the parts that are redrawn
  const ledger = ledgerPanel(id);
  const head = h('div');
  const rest = h('div');
  const root = h('div', {}, head, ledger.el, rest);
  return {
    title: `Entity ${id}`,
    everyMs: 5000,
    async load() {
      const [d, e] = await Promise.all([
        get<Dashboard>(`/v1/entities/${encodeURIComponent(id)}/dashboard`),
        get<Entity>(`/v1/entities/${encodeURIComponent(id)}`),
        readNewDeliveries(),
      ]);
      await Promise.all([readNewFailures(d), ledger.update(d.subaccounts)]);
      const failed = d.subaccounts.flatMap((s) => failures.get(s.id) ?? []);
      const t = d.totals;
      const recent = [...latest].reverse();
      head.replaceChildren(
        card(
          `Entity ${d.entity}`,
          h('div', { class: 'stats' },
            h('div', { class: 'stat' }, h('div', { class: 'stat-label' }, 'Subaccounts'),
              h('div', { class: 'stat-value' }, h('span', { 'data-test': 'entity-live' }, units(e.liveSubaccounts)), h('span', { class: 'of' }, ' of ', h('span', { 'data-test': 'entity-cap' }, units(e.subaccountCap)), ' live')),
              h('div', { class: 'stat-hint', 'data-test': 'entity-creations' }, `${units(e.creationsLastHour)} of ${units(e.creationsPerHour)} created this hour`,
                e.nextCreationAt ? h('span', { 'data-test': 'entity-next-creation' }, ` · next at ${time(e.nextCreationAt)} (${ago(e.nextCreationAt)})`) : null)),
            stat('Main balance', units(t.mainBalance), 'entity-main-balance', `${units(t.collateralHeld)} held as collateral`),
            stat('Subaccount balances', units(t.balance), 'entity-balance', `${units(t.held)} held`),
            stat('Open streams', t.openStreams, 'entity-open-streams'),
            stat('Paid by streams', units(t.paid)),
            stat('Received by streams', units(t.received)),
          ),
          h('div', { class: 'toolbar' }, ...Object.entries(d.statusCounts).map(([status, n]) => h('span', { class: 'chip', 'data-test': `status-${status}` }, `${status}: ${n}`)),
            h('span', { class: 'spacer' }), temporalLink(ctx.config, `${d.entity}'s workflows in Temporal`, workflowsWhere(`SluiceEntity="${d.entity}"`))),
        ),
      );
      rest.replaceChildren(
        card(
          'Subaccounts',
          table(['Id', 'Status', 'Balance', 'Held', 'Open streams', 'Paid', 'Received'],
            d.subaccounts.map((s) => [s.id, statusBadge(s.status), units(s.balance), units(s.held), s.openStreams, units(s.paid), units(s.received)]),
            { numeric: [2, 3, 4, 5, 6], empty: 'No subaccounts yet.', test: 'subaccounts' }),
          d.nextAfter !== undefined ? h('p', { class: 'hint' }, 'More subaccounts than one page shows.') : null,
        ),
        ...(failed.length ? [failedCard(ctx, failed)] : []),
        card(
          'Webhook deliveries (latest 20)',
          table(['When', 'Event', 'Subaccount', 'Attempt', 'Outcome', 'URL'],
            // an event's key is `<type>:<subaccount id>`
            recent.map((w) => [time(w.at), w.eventType, w.eventKey.slice(w.eventType.length + 1), w.attempt, w.ok ? badge(`${w.statusCode ?? ''} delivered`, 'ok') : badge(w.statusCode ? `${w.statusCode} refused` : (w.error ?? 'failed'), 'bad'), h('code', {}, w.url)]),
            { numeric: [3], empty: 'No deliveries yet.', test: 'deliveries' }),
        ),
      );
      return root;
    },
  };
}

/**
 * Failed subaccounts with the step their creation saga failed at and why, each with a
 * link to that saga in the Temporal UI (its workflow id, `subaccount-create-<entity>/<request id>`,
 * comes with the subaccount).
 */
function failedCard(ctx: Context, failed: Subaccount[]) {
  return card(
    'Failed subaccounts',
    table(['Subaccount', 'Failed at', 'Reason', 'When', 'Creation saga'],
      failed.map((s) => [s.id, s.failedStep ? h('code', {}, s.failedStep) : '—', h('span', { 'data-test': `failure-${s.id}` }, s.failure ?? '—'), when(s.endedAt ?? s.createdAt),
        s.creationWorkflowId ? temporalLink(ctx.config, 'in Temporal', `workflows/${encodeURIComponent(s.creationWorkflowId)}`, `saga-${s.id}`) ?? h('code', {}, s.creationWorkflowId) : '—']),
      { test: 'failed-subaccounts' }),
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

/** Pages of the timeline the Crown page reads at most (of TIMELINE_PAGE_ROWS intervals each); past them it says so. */
const TIMELINE_PAGES_MAX = 5;
const TIMELINE_PAGE_ROWS = 200;

/**
 * A market's crown: who holds it now, crown time per seller over the last hour as bars,
 * and the timeline of who held it when (GET /v1/crown/timeline, the grid the totals are
 * replayed from), with a picker of the markets (GET /v1/markets).
 */
export function crownPage(params: URLSearchParams): Page {
  const market = params.get('market') || 'default';
  return {
    title: 'Crown',
    everyMs: 5000,
    async load() {
      const [c, markets] = await Promise.all([
        get<Crown>(`/v1/crown?${new URLSearchParams({ market })}`),
        get<{ markets: Market[] }>('/v1/markets?limit=100').then((m) => m.markets),
      ]);
      // the timeline over the same window as the totals, page by page
      const grid: CrownInterval[] = [];
      let after: number | undefined;
      for (let pages = 0; pages < TIMELINE_PAGES_MAX; pages++) {
        const query = new URLSearchParams({ market, from: String(c.from), to: String(c.to), limit: String(TIMELINE_PAGE_ROWS), ...(after !== undefined && { after: String(after) }) });
        const page = await get<CrownTimeline>(`/v1/crown/timeline?${query}`);
        grid.push(...page.intervals);
        after = page.next;
        if (after === undefined) break;
      }
      const sellers = Object.entries(c.crownTime).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
      const best = c.direction === 'ask' ? 'lowest' : 'highest';
      const picker = h('div', { class: 'toolbar', 'data-test': 'crown-markets' },
        ...markets.map((m) => h('a', { href: `#/crown?${new URLSearchParams({ market: m.id })}`, class: m.id === market ? 'chip active' : 'chip', 'data-test': `crown-market-${m.id}` }, `${m.id} · ${m.direction}`)));
      return h(
        'div', {},
        picker,
        card(
          `Crown holders now, market ${c.market}`,
          h('div', { class: 'stats' },
            stat('Holders', c.current.holders.length ? c.current.holders.join(', ') : 'nobody', 'crown-holders'),
            stat('Best rate per tick', c.current.bestRate === null ? '—' : units(c.current.bestRate), 'crown-best-rate', `${c.direction === 'ask' ? 'an ask' : 'a bid'} market: the ${best} rate holds`),
            stat('As of', time(boardTime(c.current.tick)), 'crown-now', 'the board moves once a second'),
          ),
        ),
        card(`Crown time per seller, ${time(boardTime(c.from))} to ${time(boardTime(c.to))}`, crownChart(sellers),
          h('p', { class: 'hint' }, `The last ${duration((c.to - c.from) * CROWN_TICK_MS)}; a second shared by several holders is split evenly among them.`)),
        card('Who held the crown when',
          timelineStrip(grid, c.from, c.to),
          table(['From', 'Until', 'For', 'Holders', 'Best rate'],
            grid.map((iv) => [
              when(iv.startAt), iv.end >= c.to ? 'now' : time(iv.endAt), crownSpan(iv.end - iv.start),
              iv.holders.length ? iv.holders.join(', ') : 'nobody', iv.bestRate === null ? '—' : units(iv.bestRate),
            ]),
            { numeric: [4], empty: 'No change in this window.', test: 'crown-intervals' }),
          after !== undefined ? h('p', { class: 'hint', 'data-test': 'crown-timeline-more' }, `More than ${units(grid.length)} changes in the window: the first ${units(grid.length)} are shown.`) : null),
      );
    },
  };
}

/**
 * The timeline as a strip: one band per interval, as wide as it lasted, shaded by who
 * held it (nobody: blank), with clock times under it. Each band's title says who and when.
 */
function timelineStrip(grid: CrownInterval[], from: number, to: number): Node {
  const widthPx = 710, bandPx = 26, labelPx = 18;
  const x = (tick: number) => ((tick - from) / (to - from)) * widthPx;
  const shades = new Map<string, number>();
  const shade = (holders: string[]) => {
    const key = holders.join(', ');
    if (!shades.has(key)) shades.set(key, shades.size);
    return shades.get(key)!;
  };
  const marks = [from, from + Math.round((to - from) / 2), to];
  return svg(
    // the window as ticks in attributes, for the browser test to ask the API for the same grid; the labels are times
    'svg', { viewBox: `0 0 ${widthPx} ${bandPx + labelPx + 4}`, class: 'chart', 'data-test': 'crown-timeline', 'data-from': from, 'data-to': to, role: 'img' },
    ...grid.map((iv) => {
      const who = iv.holders.length ? iv.holders.join(', ') : 'nobody';
      return svg('rect', {
        x: x(iv.start).toFixed(1), y: 0, width: Math.max(1, x(iv.end) - x(iv.start)).toFixed(1), height: bandPx,
        class: iv.holders.length ? 'chart-bar' : 'chart-gap', 'fill-opacity': iv.holders.length ? (1 - (shade(iv.holders) % 4) * 0.2).toFixed(1) : 0.15,
        'data-holders': who,
      }, svg('title', {}, `${who}: ${time(iv.startAt)} to ${time(iv.endAt)}`));
    }),
    ...marks.map((tick, i) => svg('text', { x: x(tick), y: bandPx + labelPx, 'text-anchor': ['start', 'middle', 'end'][i]!, class: 'chart-label' }, time(boardTime(tick)))),
  );
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
