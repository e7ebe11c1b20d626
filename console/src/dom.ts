import { ApiError } from './api';

/** A tiny element builder: enough for tables and cards, with text always set as text (never as HTML). */
type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, string | number | boolean | undefined | ((e: Event) => void)>;

export function h(tag: string, attrs: Attrs = {}, ...children: Child[]): HTMLElement {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    if (typeof value === 'function') el.addEventListener(name.replace(/^on/, ''), value);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const SVG = 'http://www.w3.org/2000/svg';
export function svg(tag: string, attrs: Record<string, string | number> = {}, ...children: Array<Node | string>): SVGElement {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  el.append(...children);
  return el;
}

/** Money is integer minor units everywhere in Sluice: shown as such, grouped for reading, never as a decimal (counts read the same way). */
export const units = (n: number | undefined) => (n === undefined ? '—' : n.toLocaleString('en-US'));

export const time = (at: string | Date | undefined) => (at ? new Date(at).toLocaleTimeString('en-GB', { hour12: false }) : '—');
export const dateTime = (iso: string | undefined) => (iso ? `${new Date(iso).toISOString().slice(0, 19).replace('T', ' ')} UTC` : '—');

/** A length of time in words, to the second: `45 s`, `3 min 5 s`, `2 h 10 min`. */
export function duration(ms: number): string {
  const s = Math.round(Math.abs(ms) / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min${s % 60 ? ` ${s % 60} s` : ''}`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h${Math.floor((s % 3600) / 60) ? ` ${Math.floor((s % 3600) / 60)} min` : ''}`;
  return `${Math.floor(s / 86_400)} d${Math.floor((s % 86_400) / 3600) ? ` ${Math.floor((s % 86_400) / 3600)} h` : ''}`;
}

/** How long ago (or how soon) a moment is, roughly: `just now`, `3 min ago`, `in 40 s`. */
export function ago(at: string | Date, now = Date.now()): string {
  const ms = now - new Date(at).getTime();
  if (Math.abs(ms) < 5000) return 'just now';
  const d = duration(ms).split(' ').slice(0, 2).join(' ');
  return ms > 0 ? `${d} ago` : `in ${d}`;
}

/** A moment as a clock time with how long ago it was; the full UTC date on hover. */
export const when = (at: string | Date | undefined, test?: string) =>
  at ? h('span', { title: dateTime(new Date(at).toISOString()), 'data-test': test }, `${time(at)} · ${ago(at)}`) : '—';

/** A labelled figure; `test` names it for the browser test. */
export const stat = (label: string, value: Child, test?: string, hint?: string) =>
  h('div', { class: 'stat' }, h('div', { class: 'stat-label' }, label), h('div', { class: 'stat-value', 'data-test': test }, value), hint ? h('div', { class: 'stat-hint' }, hint) : null);

export const badge = (text: string, tone: 'ok' | 'bad' | 'live' | 'muted') => h('span', { class: `badge ${tone}` }, text);

export const statusBadge = (status: string) =>
  badge(status, ['STREAMING', 'active', 'reserved'].includes(status) ? 'live' : ['CONFIRMED', 'settled'].includes(status) ? 'ok' : ['FAILED', 'failed', 'eliminated'].includes(status) ? 'bad' : 'muted'); // PAUSED, pending, challenge…

export function table(headers: string[], rows: Child[][], opts: { numeric?: number[]; empty?: string; test?: string } = {}) {
  const numeric = new Set(opts.numeric ?? []);
  if (rows.length === 0) return h('p', { class: 'empty', 'data-test': opts.test }, opts.empty ?? 'Nothing yet.');
  // a wide table scrolls inside its own box on a narrow screen; the page itself never scrolls sideways
  return h('div', { class: 'table-scroll' }, h(
    'table',
    { 'data-test': opts.test },
    h('thead', {}, h('tr', {}, ...headers.map((t, i) => h('th', { class: numeric.has(i) ? 'num' : undefined }, t)))),
    h('tbody', {}, ...rows.map((cells) => h('tr', {}, ...cells.map((c, i) => h('td', { class: numeric.has(i) ? 'num' : undefined }, c))))),
  ));
}

export const card = (title: string, ...children: Child[]) => h('section', { class: 'card' }, h('h2', {}, title), ...children);

/**
 * An error as the console shows it: the API's message, and under it in small text the
 * request id the API's logs know it by (with a link to the code's entry in the error
 * reference). `test` names the message; its request id is `<test>-request-id`.
 */
export function errorNote(error: unknown, test = 'error', tag = 'div'): HTMLElement {
  const api = error instanceof ApiError ? error : undefined;
  return h(tag, { class: 'error' },
    h('span', { 'data-test': test }, api ? api.message : String(error)),
    api?.requestId ? h('small', { class: 'request-id' },
      'request ', h('code', { 'data-test': `${test}-request-id` }, api.requestId),
      api.docUrl ? ' · ' : null, api.docUrl ? h('a', { href: api.docUrl, target: '_blank', rel: 'noopener' }, api.code) : null) : null);
}
