import { get, post, type Dashboard } from './api';
import { confirmAction } from './confirm';
import { dateTime, errorNote, h, svg, time, units, when } from './dom';
import { niceCeil } from './paidChart';
// a point of GET /v1/entities/:id/ledger: the API's own type, imported as a type only (erased by the build)
import type { LedgerPoint } from '../../src/domain/checkpoints';

export type { LedgerPoint };


export interface Ledger {
  entity: string;
  subaccount?: string;
  step: number;
  points: LedgerPoint[];
}

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

/** The ranges the picker offers: a window ending now and the step between its points (the API gives at most 1000). */
export const LEDGER_RANGES = [
  { id: '24h', label: 'Last 24 h', spanMs: DAY_MS, stepS: 3_600, hint: 'hourly' },
  { id: '7d', label: '7 days', spanMs: 7 * DAY_MS, stepS: 86_400, hint: 'daily' },
  { id: '30d', label: '30 days', spanMs: 30 * DAY_MS, stepS: 86_400, hint: 'daily' },
] as const;
type Range = (typeof LEDGER_RANGES)[number];

export const LEDGER_SERIES = ['balance', 'held', 'paid', 'received'] as const;
type Series = (typeof LEDGER_SERIES)[number];
const LABELS: Record<Series, string> = { balance: 'Balance', held: 'Held', paid: 'Paid', received: 'Received' };

/**
 * The debt ledger on an entity's page: its subaccounts' balance, held, paid and received
 * over time (GET /v1/entities/:id/ledger), summed from the rounds of checkpoints taken at
 * UTC midnight and on demand. A range picker (24 h hourly, 7 or 30 days daily), a
 * subaccount selector (all of them, or one), and "Checkpoint now" (POST
 * /v1/entities/:id/checkpoints, behind a confirmation). Built once and kept across the
 * page's polls, so the selection and an open dropdown survive them; it reads the ledger
 * again with every poll and at once when a control changes.
 */
export function ledgerPanel(entityId: string) {
  const path = `/v1/entities/${encodeURIComponent(entityId)}`;
  let range: Range = LEDGER_RANGES[0];
  let drawn = 0;
  let busy = false;

  const chips = h('div', { class: 'toolbar ledger-ranges' });
  const paintChips = () =>
    chips.replaceChildren(...LEDGER_RANGES.map((r) =>
      h('button', { type: 'button', class: r.id === range.id ? 'chip active' : 'chip', 'data-test': `ledger-range-${r.id}`, 'aria-pressed': String(r.id === range.id),
        onclick: () => { range = r; paintChips(); void draw(); } }, r.label)));
  paintChips();

  const select = h('select', { 'data-test': 'ledger-subaccount', 'aria-label': 'subaccount', onchange: () => void draw() }, h('option', { value: '' }, 'All subaccounts')) as HTMLSelectElement;
  let listed = '';
  /** The selector's options: every subaccount the dashboard lists (an eliminated one keeps its history); the choice stays. */
  const listSubaccounts = (subs: Dashboard['subaccounts']) => {
    const ids = subs.map((s) => `${s.id} (${s.status})`).join('|');
    if (ids === listed) return;
    listed = ids;
    const chosen = select.value;
    select.replaceChildren(h('option', { value: '' }, 'All subaccounts'), ...subs.map((s) => h('option', { value: s.id, selected: s.id === chosen }, `${s.id} · ${s.status}`)));
    select.value = subs.some((s) => s.id === chosen) ? chosen : '';
  };

  const outcome = h('p', { class: 'outcome', hidden: true });
  const checkpoint = h('button', { type: 'button', class: 'secondary', 'data-test': 'ledger-checkpoint', onclick: () => void checkpointNow() }, 'Checkpoint now');
  const box = h('div', { class: 'ledger-box' }, h('p', { class: 'hint' }, 'Loading…'));
  const el = h('section', { class: 'card', 'data-test': 'ledger' },
    h('h2', {}, 'Debt ledger'),
    h('div', { class: 'toolbar' }, chips, h('span', { class: 'spacer' }), select, checkpoint),
    box,
    outcome,
    h('p', { class: 'hint' }, 'Summed from rounds of checkpoints of every live subaccount, taken daily at UTC midnight and with "Checkpoint now"; each point shows the latest round at or before it.'),
  );

  /** Reads the ledger for the current range and subaccount and draws it; a later draw wins over an earlier one still on its way. */
  async function draw(): Promise<void> {
    const mine = ++drawn;
    const to = new Date();
    const from = new Date(to.getTime() - range.spanMs);
    const q = new URLSearchParams({ from: from.toISOString(), to: to.toISOString(), step: String(range.stepS), ...(select.value && { subaccount: select.value }) });
    try {
      const ledger = await get<Ledger>(`${path}/ledger?${q}`);
      if (mine === drawn) box.replaceChildren(...ledgerView(ledger, range));
    } catch (error) {
      if (mine === drawn) box.replaceChildren(errorNote(error, 'ledger-read-error'));
    }
  }

  async function checkpointNow() {
    if (busy) return;
    const ok = await confirmAction({
      title: `Checkpoint ${entityId} now?`,
      body: "One round of the debt ledger is taken now: each live subaccount's balance, held, paid and received as they stand, beside the daily round at UTC midnight. It moves no money.",
      confirm: 'Checkpoint now',
      dismiss: 'Back',
    });
    if (!ok) return;
    busy = true;
    outcome.hidden = true;
    try {
      const { body } = await post<{ at: string; subaccounts: number }>(`${path}/checkpoints`, {});
      outcome.className = 'outcome ok';
      outcome.replaceChildren(h('span', { 'data-test': 'ledger-checkpoint-done' }, `Checkpointed ${units(body.subaccounts)} subaccount${body.subaccounts === 1 ? '' : 's'} at ${time(body.at)}.`));
    } catch (error) {
      outcome.className = 'outcome bad';
      outcome.replaceChildren(...Array.from(errorNote(error, 'ledger-error').childNodes));
    } finally {
      outcome.hidden = false;
      busy = false;
      await draw();
    }
  }

  return {
    el,
    /** With each poll of the page: the subaccounts for the selector, then the ledger again. */
    async update(subs: Dashboard['subaccounts']) {
      listSubaccounts(subs);
      await draw();
      return el;
    },
  };
}

/** The chart and, under it, the last point's figures (the legend), or why there is nothing to draw. */
function ledgerView(ledger: Ledger, range: Range): Node[] {
  const rounds = ledger.points.filter((p) => p.checkpointAt !== undefined);
  const last = ledger.points.at(-1);
  const who = ledger.subaccount ?? 'all subaccounts';
  if (!last || rounds.length === 0) {
    return [h('p', { class: 'empty', 'data-test': 'ledger-empty' }, `No checkpoint of ${who} in the ${range.label.toLowerCase()} yet: the next round is taken at UTC midnight, or now with "Checkpoint now".`)];
  }
  return [
    ledgerChart(ledger, range),
    h('div', { class: 'ledger-legend', 'data-test': 'ledger-legend' },
      ...LEDGER_SERIES.map((s) => h('div', { class: 'ledger-key' },
        h('span', { class: `swatch series-${s}` }), h('span', { class: 'ledger-key-label' }, LABELS[s]),
        h('span', { class: 'ledger-key-value', 'data-test': `ledger-${s}` }, units(last[s]))))),
    h('p', { class: 'hint', 'data-test': 'ledger-as-of' },
      `${who === 'all subaccounts' ? `${units(last.subaccounts)} subaccount${last.subaccounts === 1 ? '' : 's'}` : who} at `, when(last.at),
      last.checkpointAt ? h('span', {}, ', from the round of ', h('span', { 'data-test': 'ledger-round', title: dateTime(last.checkpointAt) }, `${day(last.checkpointAt)} ${time(last.checkpointAt)}`)) : ' (no round yet at that point)',
      ` · ${range.hint}, ${units(ledger.points.length)} points`),
  ];
}

/** A day as the browser's calendar has it: `3 Mar`. */
const day = (at: string | number) => new Date(at).toLocaleDateString('en-GB', { day: 'numeric', month: 'short' });
/** An hour on the axis: `14:00`. */
const hour = (at: string | number) => new Date(at).toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit', hour12: false });

/**
 * The four series as step lines over time (a round's figures hold until the next), from
 * the first point with a round to the last point; each point a dot whose title gives its
 * time and figure. Plain SVG, y from 0 to a readable top; x from the first point to the
 * last, labelled with clock times (hourly) or days (daily).
 */
export function ledgerChart(ledger: Ledger, range: Range): SVGElement {
  const points = ledger.points;
  const plotted = points.filter((p) => p.checkpointAt !== undefined);
  const last = points.at(-1)!;
  const yMax = niceCeil(Math.max(1, ...plotted.flatMap((p) => LEDGER_SERIES.map((s) => p[s]))));
  const grid = [0, yMax / 2, yMax].filter(Number.isInteger);
  // room on the left for the longest amount at the phone's larger type
  const W = 720, H = 240, right = 14, top = 12, bottom = 30;
  const left = Math.max(56, Math.max(...grid.map((v) => units(v).length)) * 14 + 14);
  const start = Date.parse(points[0]!.at);
  const end = Math.max(Date.parse(last.at), start + 1000);
  const x = (at: string) => left + ((Date.parse(at) - start) / (end - start)) * (W - left - right);
  const y = (v: number) => top + (1 - v / yMax) * (H - top - bottom);
  const f = (n: number) => n.toFixed(1);
  const label = range.stepS < 86_400 ? hour : day;
  const lines = LEDGER_SERIES.map((s) => {
    const d = plotted.map((p, i) => (i === 0 ? `M${f(x(p.at))},${f(y(p[s]))}` : `H${f(x(p.at))}V${f(y(p[s]))}`)).join('');
    return svg('path', { d, class: `ledger-line series-${s}`, 'data-series': s });
  });
  const dots = LEDGER_SERIES.flatMap((s) => plotted.map((p) =>
    svg('circle', { cx: f(x(p.at)), cy: f(y(p[s])), r: 3, class: `ledger-dot series-${s}` }, svg('title', {}, `${LABELS[s]} ${units(p[s])} · ${day(p.at)} ${time(p.at)}`))));
  const mid = points[Math.floor((points.length - 1) / 2)]!;
  return svg(
    'svg',
    {
      viewBox: `0 0 ${W} ${H}`, class: 'chart ledger-chart', role: 'img', 'data-test': 'ledger-chart',
      'data-subaccount': ledger.subaccount ?? '', 'data-points': points.length, 'data-plotted': plotted.length, 'data-last-at': last.at,
      ...Object.fromEntries(LEDGER_SERIES.map((s) => [`data-last-${s}`, last[s]])),
      'aria-label': `debt ledger of ${ledger.subaccount ?? ledger.entity}: ${LEDGER_SERIES.map((s) => `${s} ${units(last[s])}`).join(', ')} at ${time(last.at)}`,
    },
    ...grid.flatMap((v) => [
      svg('line', { x1: left, x2: W - right, y1: y(v), y2: y(v), class: 'chart-grid' }),
      svg('text', { x: left - 8, y: y(v) + 4, 'text-anchor': 'end', class: 'chart-value' }, units(v)),
    ]),
    ...lines,
    ...dots,
    svg('text', { x: left, y: H - 8, class: 'chart-value' }, label(points[0]!.at)),
    points.length > 2 ? svg('text', { x: x(mid.at), y: H - 8, 'text-anchor': 'middle', class: 'chart-value' }, label(mid.at)) : svg('g'),
    svg('text', { x: W - right, y: H - 8, 'text-anchor': 'end', class: 'chart-value' }, 'now'),
  );
}
