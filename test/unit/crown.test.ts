import fc from 'fast-check';
import {
  CROWN_UNITS_PER_TICK as U,
  crownIntervals,
  crownPerTick,
  crownTime,
  DIRECTIONS,
  holdersOf,
  NO_OFFER,
  routeChoice,
  splitReward,
  tickShares,
  type Direction,
  type RateEvent,
  type SellerState,
  type StepCounter,
} from '../../src/domain/crown';

const live = (rate: number): SellerState => ({ active: true, busy: false, rate });
const none = new Map<string, SellerState>();
let nextId = 1;
const ev = (tick: number, seller: string, change: Omit<RateEvent, 'id' | 'tick' | 'seller'>): RateEvent => ({ id: nextId++, tick, seller, ...change });
const intervals = (from: number, to: number, before: Map<string, SellerState>, events: RateEvent[], direction: Direction = 'ask') => [...crownIntervals({ from, to }, before, events, { direction })];

describe('crown: hand-made cases', () => {
  test('a single seller holds the whole window', () => {
    const before = new Map([['a', live(5)]]);
    expect(intervals(0, 10, before, [])).toEqual([{ start: 0, end: 10, holders: ['a'], bestRate: 5 }]);
    expect(crownTime({ from: 0, to: 10 }, before, [])).toEqual({ a: 10 * U });
  });

  test('ties share evenly: 10 ticks between two holders, 5 each; 7 ticks between three, 7/3 each, to the unit', () => {
    const two = new Map([['a', live(5)], ['b', live(5)]]);
    expect(crownTime({ from: 0, to: 10 }, two, [])).toEqual({ a: 5 * U, b: 5 * U });
    const three = new Map([['c', live(5)], ['a', live(5)], ['b', live(5)]]);
    expect(crownTime({ from: 0, to: 7 }, three, [])).toEqual({ a: (7 * U) / 3, b: (7 * U) / 3, c: (7 * U) / 3 });
    expect(holdersOf(three)).toEqual({ holders: ['a', 'b', 'c'], bestRate: 5 });
  });

  test('ties stay even whatever splits the intervals: a third seller undercutting on every other tick favours neither tied seller', () => {
    // a and b tie at 5; c (rate 4) holds alone on even ticks, so a and b share only the odd ticks
    const before = new Map([['a', live(5)], ['b', live(5)], ['c', live(4)]]);
    const events: RateEvent[] = [];
    for (let t = 0; t < 1000; t++) events.push(ev(t, 'c', { busy: t % 2 === 1 }));
    expect(crownTime({ from: 0, to: 1000 }, before, events)).toEqual({ a: 250 * U, b: 250 * U, c: 500 * U });
  });

  test('past 16 tied holders the leftover units rotate tick by tick: 17 holders each within one unit a tick of 1/17', () => {
    const sellers = Array.from({ length: 17 }, (_, i) => `s${String(i).padStart(2, '0')}`);
    const before = new Map(sellers.map((s) => [s, live(5)] as const));
    const total = crownTime({ from: 3, to: 3 + 170 }, before, []);
    expect(Object.values(total).reduce((a, b) => a + b, 0)).toBe(170 * U);
    for (const s of sellers) expect(Math.abs(total[s]! - (170 * U) / 17)).toBeLessThanOrEqual(170);
    // 170 ticks is 10 full rotations: exactly even
    expect(new Set(Object.values(total)).size).toBe(1);
  });

  test('a seller going busy mid-window hands the crown over and takes it back', () => {
    const before = new Map([['a', live(3)], ['b', live(4)]]);
    const events = [ev(4, 'a', { busy: true }), ev(7, 'a', { busy: false })];
    expect(intervals(0, 10, before, events)).toEqual([
      { start: 0, end: 4, holders: ['a'], bestRate: 3 },
      { start: 4, end: 7, holders: ['b'], bestRate: 4 },
      { start: 7, end: 10, holders: ['a'], bestRate: 3 },
    ]);
    expect(crownTime({ from: 0, to: 10 }, before, events)).toEqual({ a: 7 * U, b: 3 * U });
  });

  test('rate changes at the window edges: an event at `from` applies from the first tick, one at `to` not at all', () => {
    const before = new Map([['a', live(3)], ['b', live(4)]]);
    // b undercuts at `from`: b holds from the first tick; b going busy at `to` would hand the crown back, but `to` is outside
    const events = [ev(10, 'b', { rate: 1 }), ev(20, 'b', { busy: true })];
    expect(intervals(10, 20, before, events)).toEqual([{ start: 10, end: 20, holders: ['b'], bestRate: 1 }]);
    expect(crownTime({ from: 10, to: 20 }, before, events)).toEqual({ b: 10 * U });
    // one tick further, the event at 20 is inside and takes effect at its tick
    expect(intervals(10, 21, before, events)).toEqual([
      { start: 10, end: 20, holders: ['b'], bestRate: 1 },
      { start: 20, end: 21, holders: ['a'], bestRate: 3 },
    ]);
    // events before the window are the caller's `before`; events outside are ignored
    expect(intervals(12, 15, before, [ev(5, 'b', { rate: 1 }), ev(30, 'b', { rate: 1 })])).toEqual([{ start: 12, end: 15, holders: ['a'], bestRate: 3 }]);
  });

  test('events at the same tick apply in id order, and only the final state of the tick counts', () => {
    const before = new Map([['a', live(3)], ['b', live(4)]]);
    // a goes inactive and comes back within tick 5: no handover at all
    const events = [ev(5, 'a', { active: false }), ev(5, 'a', { active: true })];
    expect(intervals(0, 10, before, events)).toEqual([{ start: 0, end: 10, holders: ['a'], bestRate: 3 }]);
    // given out of order, id order still rules: the later id (rate 2) wins
    const later = ev(5, 'b', { rate: 2 });
    const earlier = { ...later, id: later.id - 1000, rate: 9 };
    expect(intervals(0, 10, before, [later, earlier])).toEqual([
      { start: 0, end: 5, holders: ['a'], bestRate: 3 },
      { start: 5, end: 10, holders: ['b'], bestRate: 2 },
    ]);
  });

  test('empty windows yield nothing; all sellers inactive, busy or unpriced yield one interval with no holder and no crown time', () => {
    expect(intervals(5, 5, new Map([['a', live(1)]]), [])).toEqual([]);
    expect(crownTime({ from: 5, to: 5 }, new Map([['a', live(1)]]), [])).toEqual({});
    const nobody = new Map([['a', { ...live(1), active: false }], ['b', NO_OFFER], ['c', { ...live(2), busy: true }], ['d', live(0)]]);
    expect(intervals(0, 8, nobody, [])).toEqual([{ start: 0, end: 8, holders: [], bestRate: null }]);
    expect(crownTime({ from: 0, to: 8 }, nobody, [])).toEqual({});
    expect(crownTime({ from: 0, to: 8 }, none, [])).toEqual({});
  });

  test('a seller active and idle at rate 0 makes no offer: the priced seller holds', () => {
    const before = new Map([['a', live(0)], ['b', live(9)]]);
    expect(intervals(0, 4, before, [])).toEqual([{ start: 0, end: 4, holders: ['b'], bestRate: 9 }]);
    expect(intervals(0, 4, before, [ev(2, 'b', { rate: 0 })])).toEqual([
      { start: 0, end: 2, holders: ['b'], bestRate: 9 },
      { start: 2, end: 4, holders: [], bestRate: null },
    ]);
  });

  test('a change that leaves the holders as they were does not split the interval (maximal intervals)', () => {
    const before = new Map([['a', live(3)], ['b', live(4)]]);
    expect(intervals(0, 10, before, [ev(3, 'b', { rate: 6 }), ev(6, 'c', { active: true })])).toEqual([{ start: 0, end: 10, holders: ['a'], bestRate: 3 }]);
  });
});

describe('crown: a bid market (the highest rate holds)', () => {
  test('the highest qualifying rate holds; ties share; busy, inactive and unpriced sellers make no bid', () => {
    const before = new Map([['a', live(3)], ['b', live(9)], ['c', live(9)], ['d', { ...live(20), busy: true }], ['e', live(0)]]);
    expect(holdersOf(before, 'bid')).toEqual({ holders: ['b', 'c'], bestRate: 9 });
    expect(holdersOf(before, 'ask')).toEqual({ holders: ['a'], bestRate: 3 });
    expect(crownTime({ from: 0, to: 10 }, before, [], { direction: 'bid' })).toEqual({ b: 5 * U, c: 5 * U });
  });

  test('a holder lowering its bid hands the crown to the next highest; raising above the best takes it alone', () => {
    const before = new Map([['a', live(5)], ['b', live(4)]]);
    const events = [ev(3, 'a', { rate: 2 }), ev(6, 'b', { rate: 1 }), ev(8, 'a', { rate: 7 })];
    expect(intervals(0, 10, before, events, 'bid')).toEqual([
      { start: 0, end: 3, holders: ['a'], bestRate: 5 },
      { start: 3, end: 6, holders: ['b'], bestRate: 4 },
      { start: 6, end: 8, holders: ['a'], bestRate: 2 },
      { start: 8, end: 10, holders: ['a'], bestRate: 7 },
    ]);
    // the same events in an ask market: the other seller at every change, and b alone at 1 from tick 6 on
    expect(intervals(0, 10, before, events, 'ask')).toEqual([
      { start: 0, end: 3, holders: ['b'], bestRate: 4 },
      { start: 3, end: 6, holders: ['a'], bestRate: 2 },
      { start: 6, end: 10, holders: ['b'], bestRate: 1 },
    ]);
  });
});

/** Random sellers, events and windows for the properties. */
const arbitraryCase = fc
  .record({
    sellers: fc.integer({ min: 1, max: 20 }),
    before: fc.array(fc.record({ active: fc.boolean(), busy: fc.boolean(), rate: fc.integer({ min: 0, max: 4 }) }), { minLength: 20, maxLength: 20 }),
    events: fc.array(
      fc.record({
        seller: fc.integer({ min: 0, max: 19 }),
        tick: fc.integer({ min: 0, max: 60 }),
        rate: fc.option(fc.integer({ min: 0, max: 4 }), { nil: undefined }),
        active: fc.option(fc.boolean(), { nil: undefined }),
        busy: fc.option(fc.boolean(), { nil: undefined }),
      }),
      { maxLength: 40 },
    ),
    from: fc.integer({ min: 0, max: 60 }),
    length: fc.integer({ min: 0, max: 60 }),
  })
  .map((c) => {
    const name = (i: number) => `s${i % c.sellers}`;
    const before = new Map(c.before.slice(0, c.sellers).map((s, i) => [name(i), s] as const));
    const events: RateEvent[] = c.events.map((e, id) => ({ id, seller: name(e.seller), tick: e.tick, rate: e.rate, active: e.active, busy: e.busy }));
    return { before, events, window: { from: c.from, to: c.from + c.length } };
  });

describe.each(DIRECTIONS)('crown: properties in a market of direction %s (fast-check)', (direction) => {
  const best = (rates: number[]) => (direction === 'ask' ? Math.min(...rates) : Math.max(...rates));

  test('the per-tick credits add up to the aggregate for every seller; credited time = ticks with a holder', () => {
    fc.assert(
      fc.property(arbitraryCase, ({ before, events, window }) => {
        const perTick: Record<string, number> = {};
        let held = 0;
        for (const { tick, holders } of crownPerTick(window, before, events, { direction })) {
          if (holders.length === 0) continue;
          held++;
          for (const [seller, units] of tickShares(tick, holders)) perTick[seller] = (perTick[seller] ?? 0) + units;
        }
        const aggregate = crownTime(window, before, events, { direction });
        expect(aggregate).toEqual(perTick);
        expect(Object.values(aggregate).reduce((a, b) => a + b, 0)).toBe(held * U);
      }),
      { numRuns: 1000 },
    );
  });

  test('the intervals tile the window exactly and are maximal, and agree with a tick-by-tick replay of the rules', () => {
    fc.assert(
      fc.property(arbitraryCase, ({ before, events, window }) => {
        const ivs = [...crownIntervals(window, before, events, { direction })];
        let at = window.from;
        for (const [i, iv] of ivs.entries()) {
          expect(iv.start).toBe(at);
          expect(iv.end).toBeGreaterThan(iv.start);
          if (i > 0) expect(iv.holders.join() !== ivs[i - 1]!.holders.join() || iv.bestRate !== ivs[i - 1]!.bestRate).toBe(true);
          at = iv.end;
        }
        expect(at).toBe(Math.max(window.from, window.to));
        // the naive replay: apply each tick's events in id order, then read the holders
        const states = new Map(before);
        const sorted = [...events].sort((a, b) => a.tick - b.tick || a.id - b.id);
        for (let tick = window.from; tick < window.to; tick++) {
          for (const e of sorted.filter((x) => x.tick === tick)) {
            const s = states.get(e.seller) ?? NO_OFFER;
            states.set(e.seller, { active: e.active ?? s.active, busy: e.busy ?? s.busy, rate: e.rate ?? s.rate });
          }
          const iv = ivs.find((x) => x.start <= tick && tick < x.end)!;
          // the naive rule, spelled out: the qualifying sellers at the direction's best rate
          const offers = [...states].filter(([, s]) => s.active && !s.busy && s.rate > 0);
          const bestRate = offers.length ? best(offers.map(([, s]) => s.rate)) : null;
          expect(iv.holders).toEqual(offers.filter(([, s]) => s.rate === bestRate).map(([seller]) => seller).sort());
          expect(iv.bestRate).toBe(bestRate);
        }
      }),
      { numRuns: 500 },
    );
  });

  test('payee "best" routes to a holder of the right direction: a qualifying, payable seller at the best rate among all offers, never the payer', () => {
    fc.assert(
      fc.property(arbitraryCase, fc.integer({ min: 0, max: 19 }), fc.array(fc.boolean(), { minLength: 20, maxLength: 20 }), ({ before, events, window }, payerIndex, hasAccount) => {
        // the route reads a one-tick window at the tick the stream opens (holdersAt)
        const tick = window.from;
        const states = new Map(before);
        for (const e of [...events].sort((a, b) => a.tick - b.tick || a.id - b.id).filter((x) => x.tick <= tick)) {
          const s = states.get(e.seller) ?? NO_OFFER;
          states.set(e.seller, { active: e.active ?? s.active, busy: e.busy ?? s.busy, rate: e.rate ?? s.rate });
        }
        const pastBefore = new Map(states);
        const [now] = [...crownIntervals({ from: tick, to: tick + 1 }, pastBefore, [], { direction })];
        const payer = `s${payerIndex}`;
        const payable = (seller: string) => hasAccount[Number(seller.slice(1))]! && seller !== payer;
        const chosen = routeChoice(tick, now!.holders, payable);
        const offers = [...states].filter(([, s]) => s.active && !s.busy && s.rate > 0);
        const payableAtBest = offers.filter(([seller, s]) => payable(seller) && s.rate === best(offers.map(([, o]) => o.rate)));
        if (chosen === null) {
          expect(payableAtBest).toEqual([]);
          return;
        }
        const s = states.get(chosen)!;
        expect(s.active && !s.busy && s.rate > 0).toBe(true);
        expect(s.rate).toBe(best(offers.map(([, o]) => o.rate)));
        expect(s.rate).toBe(now!.bestRate);
        expect(payable(chosen)).toBe(true);
        // the same moment always picks the same seller
        expect(routeChoice(tick, now!.holders, payable)).toBe(chosen);
      }),
      { numRuns: 1000 },
    );
  });
});

test('the replay grows with events, not ticks: 10^6 ticks with 10^4 events, and the same events over 10^9 ticks, cost the same steps', () => {
  const sellers = Array.from({ length: 20 }, (_, i) => `s${String(i).padStart(2, '0')}`);
  const before = new Map(sellers.map((s, i) => [s, live(10 + (i % 7))] as const));
  let seed = 7;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const events: RateEvent[] = Array.from({ length: 10_000 }, (_, id) => ({
    id,
    seller: sellers[Math.floor(random() * sellers.length)]!,
    tick: Math.floor(random() * 1_000_000),
    ...(random() < 0.5 ? { rate: 1 + Math.floor(random() * 20) } : { busy: random() < 0.3 }),
  }));
  const counter: StepCounter = { steps: 0 };
  const total = crownTime({ from: 0, to: 1_000_000 }, before, events, { counter });
  // every event, every interval and every seller a full pass visits is a step
  expect(counter.steps).toBeGreaterThanOrEqual(events.length);
  expect(counter.steps).toBeLessThan(5 * events.length);
  const longer: StepCounter = { steps: 0 };
  crownTime({ from: 0, to: 1_000_000_000 }, before, events, { counter: longer });
  expect(longer.steps).toBe(counter.steps);
  expect(Object.values(total).reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(1_000_000 * U);
});

describe('crown rewards split', () => {
  test('in proportion to crown time, whole units, the remainder to the largest remainders (ties by id)', () => {
    expect(splitReward(100, { a: 1, b: 1, c: 1 })).toEqual({ a: 34, b: 33, c: 33 });
    expect(splitReward(10, { a: 10, b: 5 })).toEqual({ a: 7, b: 3 }); // 6.67 and 3.33
    expect(splitReward(1000, {})).toEqual({});
    expect(splitReward(5, { a: 0, b: 3 })).toEqual({ b: 5 });
  });
  test('property: shares add up to the budget exactly and each is within one unit of its exact share', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1e12 }), fc.dictionary(fc.constantFrom('a', 'b', 'c', 'd', 'e'), fc.integer({ min: 0, max: 1e6 })), (budget, ticks) => {
        const shares = splitReward(budget, ticks);
        const total = Object.values(ticks).reduce((a, b) => a + b, 0);
        const sum = Object.values(shares).reduce((a, b) => a + b, 0);
        expect(sum).toBe(total === 0 ? 0 : budget);
        for (const [s, units] of Object.entries(shares)) expect(Math.abs(units - (budget * ticks[s]!) / total)).toBeLessThan(1);
      }),
    );
  });
});
