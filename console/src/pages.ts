import { get, type AuditReport, type Grant, type ConsoleConfig, type Crown, type Dashboard, type Delivery, type PoolState, type StreamItem, type StreamView } from './api';
import { badge, card, dateTime, h, stat, statusBadge, svg, table, time, units } from './dom';

/** A page: what it shows (loaded again every `everyMs` while it is open, for the live ones). */
export interface Page {
  title: string;
  load(): Promise<Node>;
  everyMs?: number;
}

export interface Context {
  config: ConsoleConfig;
}

/** Links into the Temporal Web UI, when the API knows where it is. */
function temporalLink(config: ConsoleConfig, label: string, path: string) {
  if (!config.temporalUiUrl) return null;
  return h('a', { href: `${config.temporalUiUrl}/namespaces/${encodeURIComponent(config.namespace)}/${path}`, target: '_blank', rel: 'noopener', class: 'external' }, `${label} ↗`);
}
const workflowsWhere = (query: string) => `workflows?query=${encodeURIComponent(query)}`;

const streamLink = (ref: string) => h('a', { href: `#/streams/${encodeURIComponent(ref)}` }, ref);
const payeeOf = (s: StreamItem) => s.payee ?? (s.kind === 'distribution' ? 'distribution' : '—');

/** Streams the key can see, newest first; paid so far moves as the poll reads it again. */
export function streamsPage(ctx: Context, params: URLSearchParams): Page {
  const status = params.get('status') ?? 'open';
  const after = params.get('after') ?? undefined;
  const party = ctx.config.actor.party;
  return {
    title: 'Streams',
    everyMs: 1000,
    async load() {
      const q = new URLSearchParams({ limit: '25', ...(status !== 'all' && { status }), ...(after && { after }) });
      const page = await get<{ streams: StreamItem[]; next?: string }>(`/v1/streams?${q}`);
      const filter = (value: string, label: string) =>
        h('a', { href: `#/streams?status=${value}`, class: value === status ? 'chip active' : 'chip' }, label);
      const running = party ? `SluiceKind="stream" AND SluicePayer="${party}" AND ExecutionStatus="Running"` : `SluiceKind="stream" AND ExecutionStatus="Running"`;
      return card(
        'Streams',
        h('div', { class: 'toolbar' }, filter('open', 'Open'), filter('closed', 'Closed'), filter('failed', 'Failed'), filter('all', 'All'),
          h('span', { class: 'spacer' }), temporalLink(ctx.config, party ? `${party}'s running streams in Temporal` : 'Running streams in Temporal', workflowsWhere(running))),
        table(
          ['Ref', 'Payer', 'Payee', 'Mode', 'Rate / tick', 'Ticks', 'Paid so far', 'Cap', 'Status', 'Opened'],
          page.streams.map((s) => [
            streamLink(s.ref), s.payer, payeeOf(s), s.mode, units(s.ratePerTick), s.ticks,
            h('span', { 'data-test': `paid-${s.ref}` }, units(s.totalPaid)), s.maxTotal === undefined ? 'open-ended' : units(s.maxTotal), statusBadge(s.status), time(s.openedAt),
          ]),
          { numeric: [4, 5, 6, 7], empty: 'No streams here.', test: 'streams' },
        ),
        page.next ? h('p', {}, h('a', { href: `#/streams?status=${status}&after=${encodeURIComponent(page.next)}` }, 'Older streams →')) : null,
        h('p', { class: 'hint' }, 'Amounts are integer minor units. The list reads the API again every second.'),
      );
    },
  };
}

/** One stream: the money moving while it runs, the receipt once it has closed. */
export function streamPage(ctx: Context, ref: string): Page {
  const page: Page = {
    title: `Stream ${ref}`,
    everyMs: 1000,
    async load() {
      const s = await get<StreamView>(`/v1/streams/${encodeURIComponent(ref)}`);
      const open = s.status === 'STREAMING';
      // a closed stream's receipt is final: no need to read it again
      if (!open) page.everyMs = undefined;
      const progress = s.maxTotal ? Math.min(1, s.totalPaid / s.maxTotal) : undefined;
      const figures = h(
        'div', { class: 'stats' },
        stat('Paid so far', units(s.totalPaid), 'stream-paid', s.maxTotal ? `of ${units(s.maxTotal)} cap` : 'open-ended'),
        stat('Ticks billed', s.ticks, 'stream-ticks', `every ${(s.tickIntervalMs / 1000).toLocaleString('en-US')} s`),
        stat('Rate per tick', units(s.ratePerTick)),
        stat('Next tick', open ? (s.pausedAt ? 'paused' : time(s.nextTickAt)) : '—', 'stream-next'),
        stat('Accrued, not billed', units(s.accruedUnbilled)),
        s.depletion ? stat('Money left for', `${units(s.depletion.ticksLeft)} ticks`, undefined, `limited by ${s.depletion.limitedBy}`) : null,
      );
      const receipt =
        !open &&
        card(
          'Receipt',
          h('dl', { class: 'receipt', 'data-test': 'receipt' },
            ...([
              ['Status', statusBadge(s.status)],
              ['Total paid', units(s.totalPaid)],
              ['Ticks', String(s.ticks)],
              ['Reason', s.reason ?? s.failure ?? '—'],
              ['Closed by', s.closedBy ?? '—'],
              ['Opened', dateTime(s.openedAt)],
              ['Closed', dateTime(s.closedAt)],
            ] as const).flatMap(([k, v]) => [h('dt', {}, k), h('dd', { 'data-test': `receipt-${k.toLowerCase().replace(/ /g, '-')}` }, v)]),
          ),
        );
      return h(
        'div', {},
        card(
          `Stream ${s.ref}`,
          h('p', { class: 'lede' }, `${s.payer} → ${payeeOf(s)} · ${s.mode} · `, statusBadge(s.status), ' ', temporalLink(ctx.config, 'workflow in Temporal', `workflows/${encodeURIComponent(s.workflowId)}`)),
          figures,
          progress === undefined ? null : h('div', { class: 'bar', title: `${Math.round(progress * 100)}% of the cap` }, h('div', { class: 'bar-fill', style: `width:${(progress * 100).toFixed(1)}%` })),
          s.members ? table(['Member', 'Party', 'Weight', 'Received'], s.members.map((m) => [m.accountId, m.party, m.weight, units(m.received)]), { numeric: [2, 3] }) : null,
        ),
        receipt,
      );
    },
  };
  return page;
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
  return {
    title: `Entity ${id}`,
    everyMs: 5000,
    async load() {
      const [d] = await Promise.all([get<Dashboard>(`/v1/entities/${encodeURIComponent(id)}/dashboard`), readNewDeliveries()]);
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

/** Who holds the crown now, and crown time per seller over the last hour, as bars. */
export function crownPage(): Page {
  return {
    title: 'Crown',
    everyMs: 5000,
    async load() {
      const c = await get<Crown>('/v1/crown');
      const sellers = Object.entries(c.crownTime).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
      return h(
        'div', {},
        card(
          'Crown holders now',
          h('div', { class: 'stats' },
            stat('Holders', c.current.holders.length ? c.current.holders.join(', ') : 'nobody', 'crown-holders'),
            stat('Best rate per tick', c.current.bestRate === null ? '—' : units(c.current.bestRate), 'crown-best-rate'),
            stat('Tick', String(c.current.tick), undefined, 'rate board ticks'),
          ),
        ),
        card(`Crown time per seller over the last ${units(c.to - c.from)} ticks`, crownChart(sellers),
          h('p', { class: 'hint' }, `Ticks ${c.from} to ${c.to}, ${c.intervalCount} intervals of uniform state; a shared tick is split evenly among its holders.`)),
      );
    },
  };
}

/** Horizontal SVG bars: one per seller, its ticks written at the end. */
function crownChart(sellers: Array<[string, number]>): Node {
  if (sellers.length === 0) return h('p', { class: 'empty' }, 'No seller held the crown in this window.');
  const rowPx = 30, labelPx = 140, barPx = 460, valuePx = 110;
  const max = Math.max(...sellers.map(([, t]) => t));
  const label = (t: number) => `${t.toLocaleString('en-US', { maximumFractionDigits: 2 })} ticks`;
  return svg(
    'svg', { viewBox: `0 0 ${labelPx + barPx + valuePx} ${rowPx * sellers.length}`, class: 'chart', 'data-test': 'crown-chart', role: 'img' },
    ...sellers.flatMap(([seller, ticks], i) => {
      const y = i * rowPx;
      const w = max > 0 ? Math.max(2, (ticks / max) * barPx) : 2;
      return [
        svg('text', { x: labelPx - 10, y: y + rowPx / 2 + 5, 'text-anchor': 'end', class: 'chart-label' }, seller),
        svg('rect', { x: labelPx, y: y + 5, width: w.toFixed(1), height: rowPx - 10, rx: 3, class: 'chart-bar' }),
        svg('text', { x: labelPx + w + 8, y: y + rowPx / 2 + 5, class: 'chart-value', 'data-seller': seller }, label(ticks)),
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
