/**
 * The rate board's crown (DESIGN §6), pure: no I/O, no clock. Time is in ticks.
 *
 * A seller qualifies when it is active, not busy and its rate is above 0. The
 * crown holders at a tick are the qualifying sellers at the best rate; ties share.
 * A market has a direction: in an `ask` market the lowest rate is best, in a `bid`
 * market the highest. Each market is replayed on its own (its sellers' states and
 * events only); the direction is the one thing the rules take from the market.
 * `crownIntervals` is the one replay of the rules: given each seller's state when a
 * window opens and the events inside it, it yields the maximal runs of ticks over
 * which the holders do not change. `crownTime` and `crownPerTick` are thin wrappers
 * over it; neither knows the rules.
 *
 * Sharing rule (exact integers): crown time is counted in crown units,
 * CROWN_UNITS_PER_TICK to a tick. 720720 = lcm(1..16), so a tick held by k ≤ 16
 * sellers gives each exactly 1/k of it, whatever else happens in the window: ties
 * split evenly, tick by tick, and no holder is favoured by where intervals happen to
 * start or end. Past 16 holders each gets ⌊U/k⌋ and the U mod k units left go one
 * each to the holders from position `tick mod k` on (in id order, wrapping), a
 * rotation that moves every tick. Totals are exact, and the per-tick shares add up
 * to the aggregate by construction.
 */
export interface SellerState {
  active: boolean;
  busy: boolean;
  /** Price per tick in minor units; 0 means no offer. */
  rate: number;
}

export const NO_OFFER: SellerState = { active: false, busy: false, rate: 0 };

/** A change to one seller, effective from `tick` on. Events at the same tick apply in id order. */
export interface RateEvent {
  id: number;
  seller: string;
  tick: number;
  rate?: number;
  active?: boolean;
  busy?: boolean;
}

/** Ticks [start, end) over which the holders stay the same (none: `holders` empty, `bestRate` null). */
export interface CrownInterval {
  start: number;
  end: number;
  holders: string[];
  bestRate: number | null;
}

export interface Window {
  /** First tick of the window (inclusive). */
  from: number;
  /** End of the window (exclusive). */
  to: number;
}

/**
 * Counts the generator's work, so a test can prove it grows with events, not ticks:
 * one step per event applied, per interval yielded, and per seller visited by a full
 * pass over the sellers.
 */
export interface StepCounter {
  steps: number;
}

/** Which rate wins a market: `ask`, the lowest (sellers compete on price); `bid`, the highest. */
export type Direction = 'ask' | 'bid';
export const DIRECTIONS: readonly Direction[] = ['ask', 'bid'];

/** What a replay takes besides the data: the market's direction (default `ask`, the `default` market's) and a step counter. */
export interface ReplayOptions {
  direction?: Direction;
  counter?: StepCounter;
}

const qualifies = (s: SellerState) => s.active && !s.busy && s.rate > 0;

/** Whether `rate` beats the best rate so far in a market of this direction (nothing to beat: it does). */
export const beats = (direction: Direction, rate: number, best: number | null) => best === null || (direction === 'ask' ? rate < best : rate > best);

/** The holders of a set of states: the qualifying sellers at the best rate for the direction, in id order. */
export function holdersOf(states: ReadonlyMap<string, SellerState>, direction: Direction = 'ask'): { holders: string[]; bestRate: number | null } {
  let bestRate: number | null = null;
  let holders: string[] = [];
  for (const [seller, s] of states) {
    if (!qualifies(s)) continue;
    if (beats(direction, s.rate, bestRate)) {
      bestRate = s.rate;
      holders = [seller];
    } else if (s.rate === bestRate) holders.push(seller);
  }
  return { holders: holders.sort(), bestRate };
}

/** Applies one event to a seller's state. */
export function apply(state: SellerState, e: RateEvent): SellerState {
  return { active: e.active ?? state.active, busy: e.busy ?? state.busy, rate: e.rate ?? state.rate };
}

const before_ = (a: RateEvent, b: RateEvent) => a.tick - b.tick || a.id - b.id;

/** Events in (tick, id) order; the database hands them over sorted, so usually this is one check. */
function inOrder(events: RateEvent[]): RateEvent[] {
  for (let i = 1; i < events.length; i++) if (before_(events[i - 1]!, events[i]!) > 0) return events.sort(before_);
  return events;
}

const sameHolders = (a: string[], b: string[]) => a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * The replay generator. `before`: each seller's state as the window opens (the
 * effect of every event before `from`); `events`: the events with from ≤ tick < to
 * (others are ignored), in any order. Yields maximal intervals covering [from, to).
 */
export function* crownIntervals(window: Window, before: ReadonlyMap<string, SellerState>, events: readonly RateEvent[], options: ReplayOptions = {}): Generator<CrownInterval> {
  const { direction = 'ask', counter } = options;
  if (window.to <= window.from) return;
  const states = new Map(before);
  const inside = inOrder(events.filter((e) => e.tick >= window.from && e.tick < window.to));
  let { holders, bestRate } = holdersOf(states, direction);
  if (counter) counter.steps += states.size;
  let start = window.from;
  for (let i = 0; i < inside.length; ) {
    const tick = inside[i]!.tick;
    const was = { holders, bestRate };
    // every event of this tick, in id order, before the holders are looked at again;
    // most events leave the crown alone and cost O(1); only a holder leaving the best
    // rate with nobody left at it makes a full pass over the sellers
    let rescan = false;
    for (; i < inside.length && inside[i]!.tick === tick; i++) {
      const e = inside[i]!;
      const next = apply(states.get(e.seller) ?? NO_OFFER, e);
      states.set(e.seller, next);
      if (counter) counter.steps++;
      if (rescan) continue;
      const offer = qualifies(next) ? next.rate : null;
      const holding = holders.includes(e.seller);
      if (offer !== null && beats(direction, offer, bestRate)) {
        holders = [e.seller];
        bestRate = offer;
      } else if (offer !== null && offer === bestRate) {
        if (!holding) holders = [...holders, e.seller].sort();
      } else if (holding) {
        holders = holders.filter((h) => h !== e.seller);
        if (holders.length === 0) rescan = true;
      }
    }
    if (rescan) {
      ({ holders, bestRate } = holdersOf(states, direction));
      if (counter) counter.steps += states.size; // the full pass visits every seller
    }
    if (sameHolders(was.holders, holders) && was.bestRate === bestRate) continue;
    if (tick > start) {
      if (counter) counter.steps++;
      yield { start, end: tick, holders: was.holders, bestRate: was.bestRate };
    }
    start = tick;
  }
  if (counter) counter.steps++;
  yield { start, end: window.to, holders, bestRate };
}

/** Crown units in one tick (lcm of 1..16: ties of up to 16 holders split exactly). */
export const CROWN_UNITS_PER_TICK = 720_720;

/** How many ticks t in [start, end) have t mod k = j. */
function ticksAt(start: number, end: number, k: number, j: number): number {
  const upTo = (n: number) => Math.floor((n - j + k - 1) / k); // t in [0, n) with t ≡ j (mod k), for n ≥ 0
  return upTo(end) - upTo(start);
}

/** A tick split k ways: each holder's whole units, and the units left over (none up to 16 holders). */
const splitTick = (k: number) => ({ each: Math.floor(CROWN_UNITS_PER_TICK / k), left: CROWN_UNITS_PER_TICK % k });

/**
 * One tick's crown units per holder (holders in id order; the sharing rule above).
 * The per-tick form of what crownTime sums in closed form.
 */
export function tickShares(tick: number, holders: readonly string[]): Array<[string, number]> {
  const k = holders.length;
  const { each, left } = splitTick(k);
  // holder j gets a leftover unit when it is among the `left` positions from tick mod k on
  return holders.map((seller, j): [string, number] => [seller, each + ((((j - (tick % k)) % k) + k) % k < left ? 1 : 0)]);
}

/** The holder that tick-by-tick rotation puts first among tied holders: a deterministic tie-break (routing). */
export const tickOwner = (tick: number, holders: readonly string[]) => holders[tick % holders.length]!;

/**
 * payee "best": the holder a stream opened at `tick` is routed to, among the holders
 * it may pay (`payable`: a payout account, not the payer itself), by the tick's
 * rotation, so the same moment always picks the same seller; null when none.
 */
export function routeChoice(tick: number, holders: readonly string[], payable: (seller: string) => boolean): string | null {
  const eligible = holders.filter(payable);
  return eligible.length === 0 ? null : tickOwner(tick, eligible);
}

/**
 * Crown time per seller over a window, in crown units (CROWN_UNITS_PER_TICK a tick;
 * the sharing rule above). Sellers that held nothing are absent.
 */
export function crownTime(window: Window, before: ReadonlyMap<string, SellerState>, events: readonly RateEvent[], options: ReplayOptions = {}): Record<string, number> {
  return crownTimeOf(crownIntervals(window, before, events, options));
}

/** Crown time per seller over intervals the generator yielded (for a caller that also keeps the intervals: one replay, not two). */
export function crownTimeOf(intervals: Iterable<CrownInterval>): Record<string, number> {
  const total: Record<string, number> = {};
  for (const iv of intervals) {
    const k = iv.holders.length;
    if (k === 0) continue;
    const { each, left } = splitTick(k);
    iv.holders.forEach((seller, j) => {
      // a leftover unit at tick t when (j − t) mod k < left, i.e. t ≡ j − i (mod k) for some i < left
      let extra = 0;
      for (let i = 0; i < left; i++) extra += ticksAt(iv.start, iv.end, k, (((j - i) % k) + k) % k);
      total[seller] = (total[seller] ?? 0) + each * (iv.end - iv.start) + extra;
    });
  }
  return total;
}

/** Crown units as (fractional) ticks, for people; money is always split on the units. */
export const crownTicks = (units: number) => units / CROWN_UNITS_PER_TICK;

/** Every tick of a window with its holders (expanded from the intervals; for per-tick consumers). */
export function* crownPerTick(window: Window, before: ReadonlyMap<string, SellerState>, events: readonly RateEvent[], options: ReplayOptions = {}): Generator<{ tick: number; holders: string[]; bestRate: number | null }> {
  for (const iv of crownIntervals(window, before, events, options)) {
    for (let tick = iv.start; tick < iv.end; tick++) yield { tick, holders: iv.holders, bestRate: iv.bestRate };
  }
}

/** The rate board's clock: one tick per second of wall time (the API reads it; the rules never do). */
export const CROWN_TICK_MS = 1000;
export const tickAt = (ms: number) => Math.floor(ms / CROWN_TICK_MS);
/** The last board tick a time can be given for (JavaScript's dates end in the year 275760). */
export const CROWN_TICK_MAX = 8_640_000_000_000_000 / CROWN_TICK_MS;
/** When a board tick begins, as an ISO time (what a person reads instead of the tick number). */
export const timeOfTick = (tick: number) => new Date(tick * CROWN_TICK_MS).toISOString();

/**
 * Splits a budget in proportion to crown time, in whole units: each seller gets
 * ⌊budget·t/T⌋, and the units left over go one each to the largest remainders (ties
 * by seller id). The shares add up to the budget exactly (nothing when nobody held
 * the crown).
 */
export function splitReward(budget: number, crownTicks: Readonly<Record<string, number>>): Record<string, number> {
  const sellers = Object.keys(crownTicks).filter((s) => crownTicks[s]! > 0).sort();
  const total = sellers.reduce((sum, s) => sum + crownTicks[s]!, 0);
  if (total === 0) return {};
  // BigInt: budget × ticks can pass 2^53 for large budgets and long windows
  const parts = sellers.map((s) => {
    const scaled = BigInt(budget) * BigInt(crownTicks[s]!);
    return { s, units: Number(scaled / BigInt(total)), rest: scaled % BigInt(total) };
  });
  let left = budget - parts.reduce((sum, p) => sum + p.units, 0);
  for (const p of [...parts].sort((a, b) => (a.rest === b.rest ? (a.s < b.s ? -1 : 1) : a.rest > b.rest ? -1 : 1))) {
    if (left-- <= 0) break;
    p.units++;
  }
  return Object.fromEntries(parts.filter((p) => p.units > 0).map((p) => [p.s, p.units]));
}
