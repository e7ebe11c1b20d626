import { get, type BilledTick, type StreamView } from './api';
import { svg, time, units } from './dom';

interface Point {
  at: number;
  paid: number;
}

/** Points kept for the chart: past this, every other old one goes (a long stream at 1 s ticks has tens of thousands). */
const POINTS_MAX = 2000;
/** Ticks asked for a page (GET /v1/streams/:ref/ticks gives at most 1000). */
const TICKS_PAGE = 1000;

/**
 * Paid over time for one stream, from its billed ticks (GET /v1/streams/:ref/ticks: each
 * with the stream's paid total once it was billed, readable by whoever may read the
 * stream). The first read takes the ticks so far, every later one only those after the
 * last tick read: ticks are billed in order, so the tick number is the cursor and no tick
 * is read twice or missed.
 */
export function paidHistory(ref: string) {
  let after = 0;
  let points: Point[] = [];

  async function read(): Promise<Point[]> {
    for (;;) {
      const q = new URLSearchParams({ after: String(after), limit: String(TICKS_PAGE) });
      const { ticks, next } = await get<{ ticks: BilledTick[]; next?: number }>(`/v1/streams/${encodeURIComponent(ref)}/ticks?${q}`);
      for (const t of ticks) points.push({ at: Date.parse(t.billedAt), paid: t.paid });
      after = ticks.at(-1)?.tick ?? after;
      if (next === undefined) break;
    }
    if (points.length > POINTS_MAX) points = points.filter((_, i) => i % 2 === 1 || i === points.length - 1);
    return points;
  }

  return { read };
}

/**
 * A step line of paid against time, from the opening to now (or to the close), with the
 * area under it: each step is a tick. Plain SVG; the y axis starts at 0 and ends at the
 * largest amount paid (rounded up to a readable figure).
 */
export function paidChart(s: StreamView, points: Point[]): Node {
  const W = 720, H = 220, left = 84, right = 12, top = 12, bottom = 28;
  const start = Date.parse(s.openedAt);
  const end = Math.max(s.closedAt ? Date.parse(s.closedAt) : Date.now(), points.at(-1)?.at ?? start, start + 1000);
  const yMax = niceCeil(Math.max(s.totalPaid, points.at(-1)?.paid ?? 0, 1));
  const x = (at: number) => left + ((at - start) / (end - start)) * (W - left - right);
  const y = (paid: number) => top + (1 - paid / yMax) * (H - top - bottom);
  const steps = points.map((p) => `H${x(p.at).toFixed(1)}V${y(p.paid).toFixed(1)}`).join('');
  const line = `M${x(start).toFixed(1)},${y(0).toFixed(1)}${steps}H${x(end).toFixed(1)}`;
  // amounts are whole units: no 0.5 line on a chart that tops out at 1
  const grid = [0, yMax / 2, yMax].filter(Number.isInteger);
  return svg(
    'svg',
    { viewBox: `0 0 ${W} ${H}`, class: 'chart paid-chart', 'data-test': 'paid-chart', 'data-points': points.length, 'data-last': points.at(-1)?.paid ?? 0, role: 'img', 'aria-label': `paid over time: ${units(s.totalPaid)} so far` },
    ...grid.flatMap((v) => [
      svg('line', { x1: left, x2: W - right, y1: y(v), y2: y(v), class: 'chart-grid' }),
      svg('text', { x: left - 8, y: y(v) + 4, 'text-anchor': 'end', class: 'chart-value' }, units(v)),
    ]),
    svg('path', { d: `${line}V${y(0).toFixed(1)}Z`, class: 'chart-area' }),
    svg('path', { d: line, class: 'chart-line' }),
    svg('text', { x: left, y: H - 8, class: 'chart-value' }, time(new Date(start))),
    svg('text', { x: W - right, y: H - 8, 'text-anchor': 'end', class: 'chart-value' }, s.closedAt ? time(s.closedAt) : 'now'),
  );
}

/** The next 1, 2 or 5 × 10ⁿ at or above n: a round top for the y axis. */
export function niceCeil(n: number): number {
  const p = 10 ** Math.floor(Math.log10(n));
  return [1, 2, 5, 10].map((m) => m * p).find((v) => v >= n)!;
}
