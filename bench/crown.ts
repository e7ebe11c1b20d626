/**
 * The crown's replay against a naive per-tick scan of the same data, in one run:
 *
 *   generator  crownTime() over the window: cost grows with the events (one step
 *              per event, per interval and per seller a full pass visits), whatever
 *              the number of ticks
 *   naive      every tick in turn: apply that tick's events, recompute the holders
 *              over all sellers, credit the tick (the same sharing rule)
 *
 * Both must agree seller by seller (the run fails otherwise). Prints both times and
 * the speed-up (target >= 100x).
 *
 *   npm run bench:crown -- [--ticks 1000000] [--events 10000] [--sellers 50] [--seed 1] [--json]
 */
import { performance } from 'node:perf_hooks';
import { Command } from 'commander';
import { apply, crownTime, holdersOf, NO_OFFER, tickShares, type RateEvent, type SellerState, type StepCounter } from '../src/domain/crown';
import { prng } from '../src/domain/simulation';
import { integerAtLeast, log } from './support';

interface Options {
  ticks: number;
  events: number;
  sellers: number;
  seed: number;
  json: boolean;
}

function parseOptions(): Options {
  return new Command()
    .name('bench:crown')
    .description('crown replay generator against a naive per-tick scan, same data, one run')
    .option('--ticks <n>', 'window length in ticks', integerAtLeast(1), 1_000_000)
    .option('--events <n>', 'rate and state events inside the window', integerAtLeast(0), 10_000)
    .option('--sellers <n>', 'sellers posting them', integerAtLeast(1), 50)
    .option('--seed <n>', 'PRNG seed (the same seed, the same data)', integerAtLeast(0), 1)
    .option('--json', 'print one JSON object', false)
    .parse()
    .opts<Options>();
}

/** Sellers start live at mixed rates; events change rates and busy/active flags at random ticks. */
function makeData(o: Options): { before: Map<string, SellerState>; events: RateEvent[] } {
  const random = prng(o.seed);
  const int = (n: number) => Math.floor(random() * n);
  const sellers = Array.from({ length: o.sellers }, (_, i) => `seller-${String(i).padStart(4, '0')}`);
  const before = new Map(sellers.map((s) => [s, { active: true, busy: false, rate: 10 + int(20) }] as const));
  const events: RateEvent[] = Array.from({ length: o.events }, (_, id) => {
    const kind = int(3);
    return {
      id,
      seller: sellers[int(sellers.length)]!,
      tick: int(o.ticks),
      ...(kind === 0 ? { rate: 1 + int(40) } : kind === 1 ? { busy: random() < 0.3 } : { active: random() < 0.8 }),
    };
  });
  // in (tick, id) order, as the database hands them to the replay
  return { before, events: events.sort((a, b) => a.tick - b.tick || a.id - b.id) };
}

/** The naive scan: every tick, every seller. */
function naive(ticks: number, before: Map<string, SellerState>, events: RateEvent[]): Record<string, number> {
  const sorted = events; // already in (tick, id) order
  const states = new Map(before);
  const total: Record<string, number> = {};
  for (let tick = 0, i = 0; tick < ticks; tick++) {
    for (; i < sorted.length && sorted[i]!.tick === tick; i++) {
      const e = sorted[i]!;
      states.set(e.seller, apply(states.get(e.seller) ?? NO_OFFER, e));
    }
    const { holders } = holdersOf(states);
    if (holders.length === 0) continue;
    for (const [seller, units] of tickShares(tick, holders)) total[seller] = (total[seller] ?? 0) + units;
  }
  return total;
}

function medianMs(runs: number, fn: () => unknown): number {
  const times = Array.from({ length: runs }, () => {
    const t0 = performance.now();
    fn();
    return performance.now() - t0;
  }).sort((a, b) => a - b);
  return times[Math.floor(runs / 2)]!;
}

function main(): void {
  const o = parseOptions();
  const { before, events } = makeData(o);
  log(`${o.ticks} ticks, ${o.events} events, ${o.sellers} sellers`);
  // warm both code paths on the same data first, so neither is timed while the JIT compiles it
  crownTime({ from: 0, to: o.ticks }, before, events);
  naive(Math.min(o.ticks, 100_000), before, events);
  // the median of several runs each: one run of a few milliseconds is at the mercy of a GC pause
  const counter: StepCounter = { steps: 0 };
  const fast = crownTime({ from: 0, to: o.ticks }, before, events, counter);
  const generatorMs = medianMs(21, () => crownTime({ from: 0, to: o.ticks }, before, events));
  log('naive per-tick scan');
  const slow = naive(o.ticks, before, events);
  const naiveMs = medianMs(3, () => naive(o.ticks, before, events));
  const sellersDiffering = [...new Set([...Object.keys(fast), ...Object.keys(slow)])].filter((s) => fast[s] !== slow[s]).length;
  const report = { ticks: o.ticks, events: o.events, sellers: o.sellers, generatorMs, generatorSteps: counter.steps, naiveMs, speedup: naiveMs / generatorMs, sellersDiffering };
  if (o.json) console.log(JSON.stringify(report, null, 2));
  else {
    const rows: Array<[string, string]> = [
      ['ticks / events / sellers', `${o.ticks} / ${o.events} / ${o.sellers}`],
      ['generator', `${generatorMs.toFixed(2)} ms (median of 21; ${counter.steps} steps)`],
      ['naive per-tick scan', `${naiveMs.toFixed(1)} ms (median of 3)`],
      ['speed-up', `${report.speedup.toFixed(0)}x (target >= 100x)`],
      ['agreement', sellersDiffering === 0 ? `ok (${Object.keys(fast).length} sellers credited, same crown units each)` : `FAIL: ${sellersDiffering} sellers differ`],
    ];
    for (const [k, v] of rows) console.log(`${k.padEnd(26)} ${v}`);
  }
  if (sellersDiffering > 0) process.exitCode = 1;
  console.log(`speed-up: ${report.speedup.toFixed(0)}x ${report.speedup >= 100 ? 'meets' : 'BELOW'} the 100x target`);
}

main();
