/**
 * The crown, in two figures from one run on the same data:
 *
 *   1. replay   crownTime() over the window against an event-driven naive scan: at
 *               every tick where an event falls it applies that tick's events and
 *               recomputes the holders over all sellers, then credits each holder its
 *               share of the ticks up to the next event tick, seller by seller (tick by
 *               tick only where a tie of more than 16 leaves units to rotate). It skips
 *               the ticks where nothing changes, as anyone writing it plainly would; what
 *               it lacks is the generator's incremental holders and merged intervals.
 *   2. route    GET /v1/crown over the same window through the app (buildApp, inject),
 *               on a fresh database holding the events, against reading the window's
 *               event rows alone (one plain select of the columns the replay needs, in
 *               (tick, id) order, through pg on the same pool).
 *
 * Checks (a failure exits non-zero): the generator and the naive scan credit every
 * seller the same crown units, and so does the route; the route counts the same
 * intervals.
 *
 *   npm run bench:crown -- [--ticks 1000000] [--events 10000] [--history 10000] [--sellers 50]
 *     [--reads 21] [--seed 1] [--database-url URL] [--json]
 *
 * Progress goes to stderr, results to stdout (so `--json` output can be piped).
 */
import { performance } from 'node:perf_hooks';
import { Client } from '@temporalio/client';
import { buildApp } from '../src/api/app';
import { BODY_LIMIT_BYTES_DEFAULT } from '../src/api/limits';
import { migrateLedger } from '../src/ledger/setup';
import { createPool, type Pool } from '../src/db/pool';
import { apply, CROWN_UNITS_PER_TICK, crownIntervals, crownTime, holdersOf, NO_OFFER, tickAt, tickShares, type RateEvent, type SellerState, type StepCounter, type Window } from '../src/domain/crown';
import { prng } from '../src/domain/simulation';
import { createLogger } from '../src/logger';
import { checkpoint, withBenchDatabase } from './support/database';
import { percentile } from './support/measure';
import { benchCommand, integerAtLeast, parseBenchOptions, shownOptions, type BenchOptions } from './support/options';
import { printJson, printTable, type Row } from './support/report';
import { log, runBench } from './support/runner';

interface Options extends BenchOptions {
  ticks: number;
  events: number;
  history: number;
  sellers: number;
  reads: number;
  seed: number;
}

const parseOptions = () =>
  parseBenchOptions<Options>(
    benchCommand('bench:crown', 'the crown replay against an event-driven naive scan, and GET /v1/crown against reading its rows, same data, one run')
      .option('--ticks <n>', 'window length in ticks', integerAtLeast(1), 1_000_000)
      .option('--events <n>', 'rate and state events inside the window', integerAtLeast(0), 10_000)
      .option('--history <n>', 'events before the window (what the state as the window opens is read from)', integerAtLeast(0), 10_000)
      .option('--sellers <n>', 'sellers posting them', integerAtLeast(1), 50)
      .option('--reads <n>', 'timed reads of each kind (the median counts)', integerAtLeast(1), 21)
      .option('--seed <n>', 'PRNG seed (the same seed, the same data)', integerAtLeast(0), 1),
  );

interface Data {
  window: Window;
  /** Each seller's state as the window opens: `history` folded in (tick, id) order. */
  before: Map<string, SellerState>;
  /** Every event of the run in (tick, id) order: the history, then the window's. */
  all: RateEvent[];
  /** The window's events alone. */
  events: RateEvent[];
  sellers: string[];
}

/**
 * Sellers start live at mixed rates a history before the window; events change rates
 * and busy/active flags at random ticks. The window ends an hour after now, so the
 * route's "holders now" is one of its intervals however long the run takes.
 */
function makeData(o: Options): Data {
  const random = prng(o.seed);
  const int = (n: number) => Math.floor(random() * n);
  const to = tickAt(Date.now()) + 3600;
  const window = { from: to - o.ticks, to };
  const historyFrom = window.from - o.ticks;
  const sellers = Array.from({ length: o.sellers }, (_, i) => `seller-${String(i).padStart(4, '0')}`);
  let id = 1;
  const change = (from: number): RateEvent => {
    const kind = int(3);
    const seller = sellers[int(sellers.length)]!;
    const tick = from + int(o.ticks);
    return { id: id++, seller, tick, ...(kind === 0 ? { rate: 1 + int(40) } : kind === 1 ? { busy: random() < 0.3 } : { active: random() < 0.8 }) };
  };
  const start = sellers.map((seller): RateEvent => ({ id: id++, seller, tick: historyFrom, active: true, busy: false, rate: 10 + int(20) }));
  const byTickThenId = (a: RateEvent, b: RateEvent) => a.tick - b.tick || a.id - b.id;
  const history = [...start, ...Array.from({ length: o.history }, () => change(historyFrom))].sort(byTickThenId);
  const events = Array.from({ length: o.events }, () => change(window.from)).sort(byTickThenId);
  const before = new Map<string, SellerState>();
  for (const e of history) before.set(e.seller, apply(before.get(e.seller) ?? NO_OFFER, e));
  return { window, before, all: [...history, ...events], events, sellers };
}

/**
 * The event-driven naive scan: at each tick where events fall, apply them and
 * recompute the holders over every seller; credit each holder its share of the ticks
 * until the next event tick (the sharing rule of src/domain/crown.ts: whole units
 * each, and where a tie leaves units over, tick by tick as they rotate).
 */
function naive(w: Window, before: ReadonlyMap<string, SellerState>, events: readonly RateEvent[]): Record<string, number> {
  const states = new Map(before);
  const total: Record<string, number> = {};
  const credit = (seller: string, units: number) => (total[seller] = (total[seller] ?? 0) + units);
  let i = 0;
  while (i < events.length && events[i]!.tick < w.from) i++;
  for (let tick = w.from; tick < w.to; ) {
    for (; i < events.length && events[i]!.tick === tick; i++) states.set(events[i]!.seller, apply(states.get(events[i]!.seller) ?? NO_OFFER, events[i]!));
    const next = Math.min(w.to, events[i]?.tick ?? w.to);
    const { holders } = holdersOf(states);
    const k = holders.length;
    if (k > 0 && CROWN_UNITS_PER_TICK % k === 0) for (const seller of holders) credit(seller, (CROWN_UNITS_PER_TICK / k) * (next - tick));
    else if (k > 0) for (let t = tick; t < next; t++) for (const [seller, units] of tickShares(t, holders)) credit(seller, units);
    tick = next;
  }
  return total;
}

function medianMs(runs: number, fn: () => unknown): number {
  const times = Array.from({ length: runs }, () => {
    const t0 = performance.now();
    fn();
    return performance.now() - t0;
  });
  return percentile(times, 50);
}

/** Sellers whose crown units differ between two answers. */
const differing = (a: Record<string, number>, b: Record<string, number>) => [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((s) => a[s] !== b[s]);

interface ReplayResult {
  generatorMs: number;
  generatorSteps: number;
  naiveMs: number;
  ratio: number;
  sellersCredited: number;
  sellersDiffering: string[];
}

function replayPhase(o: Options, d: Data): ReplayResult {
  const { window, before, events } = d;
  // warm both code paths on the same data first, so neither is timed while the JIT compiles it
  crownTime(window, before, events);
  naive(window, before, events);
  const counter: StepCounter = { steps: 0 };
  const fast = crownTime(window, before, events, { counter });
  const slow = naive(window, before, events);
  // the median of several runs each: one run of a few milliseconds is at the mercy of a GC pause
  const generatorMs = medianMs(o.reads, () => crownTime(window, before, events));
  const naiveMs = medianMs(o.reads, () => naive(window, before, events));
  return { generatorMs, generatorSteps: counter.steps, naiveMs, ratio: naiveMs / generatorMs, sellersCredited: Object.keys(fast).length, sellersDiffering: differing(fast, slow) };
}

const ADMIN_KEY = 'bench-admin-key-0123456789';
const INSERT_ROWS_MAX = 5000;

async function load(pool: Pool, d: Data): Promise<void> {
  await pool.query(`insert into parties (id, name) select s, s from unnest($1::text[]) s`, [d.sellers]);
  await pool.query(`insert into sellers (id) select s from unnest($1::text[]) s`, [d.sellers]);
  // in id order, as they would have been posted (ids are the events' own)
  for (let i = 0; i < d.all.length; i += INSERT_ROWS_MAX) {
    const batch = d.all.slice(i, i + INSERT_ROWS_MAX);
    await pool.query(
      `insert into rate_events (id, seller, tick, rate, active, busy)
       select * from unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::boolean[], $6::boolean[]) order by 1`,
      [batch.map((e) => e.id), batch.map((e) => e.seller), batch.map((e) => e.tick), batch.map((e) => e.rate ?? null), batch.map((e) => e.active ?? null), batch.map((e) => e.busy ?? null)],
    );
  }
  await pool.query(`select setval('rate_events_id_seq', (select max(id) from rate_events))`);
  await pool.query('analyze');
}

interface RouteResult {
  routeMs: number;
  selectMs: number;
  ratio: number;
  rowsRead: number;
  intervalCount: number;
  sellersDiffering: string[];
  intervalsAgree: boolean;
}

async function routePhase(o: Options, d: Data, url: string): Promise<RouteResult> {
  const pool = createPool(url, 4);
  const temporal = new Client(); // a lazy connection: GET /v1/crown never calls Temporal
  const app = await buildApp({ pool, temporal, taskQueue: 'bench-crown', adminKey: ADMIN_KEY, bodyLimitBytes: BODY_LIMIT_BYTES_DEFAULT, logger: createLogger('silent') });
  try {
    log(`loading ${d.all.length} events from ${d.sellers.length} sellers`);
    await load(pool, d);
    const { from, to } = d.window;
    const route = async () => {
      const res = await app.inject({ method: 'GET', url: `/v1/crown?from=${from}&to=${to}`, headers: { authorization: `Bearer ${ADMIN_KEY}` } });
      if (res.statusCode !== 200) throw new Error(`GET /v1/crown answered ${res.statusCode}: ${res.body}`);
      return res.json<{ crownUnits: Record<string, number>; intervalCount: number }>();
    };
    const select = async () => (await pool.query('select id, seller, tick, rate, active, busy from rate_events where tick >= $1 and tick < $2 order by tick, id', [from, to])).rows;
    // warm both paths (the JIT, the plans, the pages in shared buffers), then alternate them
    for (let i = 0; i < 3; i++) {
      await route();
      await select();
    }
    await checkpoint(url);
    const routeTimes: number[] = [];
    const selectTimes: number[] = [];
    const timed = async (into: number[], fn: () => Promise<unknown>) => {
      const t0 = performance.now();
      await fn();
      into.push(performance.now() - t0);
    };
    log(`${o.reads} reads each of GET /v1/crown and the plain select, alternating`);
    for (let i = 0; i < o.reads; i++) {
      await timed(routeTimes, route);
      await timed(selectTimes, select);
    }
    const answer = await route();
    const expected = crownTime(d.window, d.before, d.events);
    const routeMs = percentile(routeTimes, 50);
    const selectMs = percentile(selectTimes, 50);
    return {
      routeMs,
      selectMs,
      ratio: routeMs / selectMs,
      rowsRead: (await select()).length,
      intervalCount: answer.intervalCount,
      sellersDiffering: differing(answer.crownUnits, expected),
      intervalsAgree: answer.intervalCount === [...crownIntervals(d.window, d.before, d.events)].length,
    };
  } finally {
    await app.close();
    await temporal.connection.close();
    await pool.end();
  }
}

type Report = Omit<Options, keyof BenchOptions> & {
  replay: ReplayResult;
  route: RouteResult;
  ok: boolean;
};

const ROUTE_RATIO_TARGET = 1.5;

function printResults(r: Report): void {
  const { replay: p, route: q } = r;
  const agreement = (diff: string[], credited: string) => (diff.length === 0 ? `ok (${credited}, same crown units each)` : `FAIL: ${diff.length} sellers differ (${diff.slice(0, 5).join(', ')})`);
  const rows: Row[] = [
    ['ticks / events / sellers', `${r.ticks} / ${r.events} in the window, ${r.history} before / ${r.sellers}`],
    ['generator', `${p.generatorMs.toFixed(2)} ms (median of ${r.reads}; ${p.generatorSteps} steps)`],
    ['event-driven naive scan', `${p.naiveMs.toFixed(2)} ms (median of ${r.reads})`],
    ['replay agreement', agreement(p.sellersDiffering, `${p.sellersCredited} sellers credited`)],
    ['GET /v1/crown', `${q.routeMs.toFixed(2)} ms (median of ${r.reads}; ${q.intervalCount} intervals)`],
    ['select of the rows', `${q.selectMs.toFixed(2)} ms (median of ${r.reads}; ${q.rowsRead} rows)`],
    ['route agreement', q.intervalsAgree ? agreement(q.sellersDiffering, 'as the generator') : 'FAIL: the route counts other intervals'],
  ];
  printTable(rows);
  console.log(`ratio naive/generator: ${p.ratio.toFixed(1)}`);
  console.log(`ratio GET /v1/crown/select: ${q.ratio.toFixed(2)} (target <= ${ROUTE_RATIO_TARGET})`);
}

async function main(): Promise<void> {
  const o = parseOptions();
  const d = makeData(o);
  log(`${o.ticks} ticks, ${o.events} events in the window and ${o.history} before, ${o.sellers} sellers`);
  log('generator and event-driven naive scan');
  const replay = replayPhase(o, d);
  const route = await withBenchDatabase(o.databaseUrl, async (url) => {
    await migrateLedger(url);
    return routePhase(o, d, url);
  });
  const ok = replay.sellersDiffering.length === 0 && route.sellersDiffering.length === 0 && route.intervalsAgree;
  const report: Report = { ...shownOptions(o), replay, route, ok };
  if (o.json) printJson(report);
  else printResults(report);
  if (!ok) process.exitCode = 1;
}

runBench(main);
