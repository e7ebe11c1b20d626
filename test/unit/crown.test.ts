import fc from 'fast-check';
import { crownIntervals, crownPerTick, crownTime, holdersOf, NO_OFFER, splitReward, tickOwner, type RateEvent, type SellerState, type StepCounter } from '../../src/domain/crown';

const live = (rate: number): SellerState => ({ active: true, busy: false, rate });
const none = new Map<string, SellerState>();
let nextId = 1;
const ev = (tick: number, seller: string, change: Omit<RateEvent, 'id' | 'tick' | 'seller'>): RateEvent => ({ id: nextId++, tick, seller, ...change });
const intervals = (from: number, to: number, before: Map<string, SellerState>, events: RateEvent[]) => [...crownIntervals({ from, to }, before, events)];

describe('crown: hand-made cases', () => {
  test('a single seller holds the whole window', () => {
    const before = new Map([['a', live(5)]]);
    expect(intervals(0, 10, before, [])).toEqual([{ start: 0, end: 10, holders: ['a'], bestRate: 5 }]);
    expect(crownTime({ from: 0, to: 10 }, before, [])).toEqual({ a: 10 });
  });

  test('ties share: 10 ticks between two holders, 5 each; 7 ticks between three, 3/2/2 by position', () => {
    const two = new Map([['a', live(5)], ['b', live(5)]]);
    expect(crownTime({ from: 0, to: 10 }, two, [])).toEqual({ a: 5, b: 5 });
    const three = new Map([['c', live(5)], ['a', live(5)], ['b', live(5)]]);
    expect(crownTime({ from: 0, to: 7 }, three, [])).toEqual({ a: 3, b: 2, c: 2 }); // ticks 0,3,6 → a; 1,4 → b; 2,5 → c
    expect(holdersOf(three)).toEqual({ holders: ['a', 'b', 'c'], bestRate: 5 });
  });

  test('a seller going busy mid-window hands the crown over and takes it back', () => {
    const before = new Map([['a', live(3)], ['b', live(4)]]);
    const events = [ev(4, 'a', { busy: true }), ev(7, 'a', { busy: false })];
    expect(intervals(0, 10, before, events)).toEqual([
      { start: 0, end: 4, holders: ['a'], bestRate: 3 },
      { start: 4, end: 7, holders: ['b'], bestRate: 4 },
      { start: 7, end: 10, holders: ['a'], bestRate: 3 },
    ]);
    expect(crownTime({ from: 0, to: 10 }, before, events)).toEqual({ a: 7, b: 3 });
  });

  test('rate changes at the window edges: an event at `from` applies from the first tick, one at `to` not at all', () => {
    const before = new Map([['a', live(3)], ['b', live(4)]]);
    const events = [ev(10, 'b', { rate: 1 }), ev(20, 'a', { rate: 0 })];
    expect(intervals(10, 20, before, events)).toEqual([{ start: 10, end: 20, holders: ['b'], bestRate: 1 }]);
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

  test('empty windows yield nothing; all sellers inactive yield one interval with no holder', () => {
    expect(intervals(5, 5, new Map([['a', live(1)]]), [])).toEqual([]);
    expect(intervals(0, 8, new Map([['a', { ...live(1), active: false }], ['b', NO_OFFER]]), [])).toEqual([{ start: 0, end: 8, holders: [], bestRate: null }]);
    expect(crownTime({ from: 0, to: 8 }, none, [])).toEqual({});
  });

  test('a change that leaves the holders as they were does not split the interval (maximal intervals)', () => {
    const before = new Map([['a', live(3)], ['b', live(4)]]);
    expect(intervals(0, 10, before, [ev(3, 'b', { rate: 6 }), ev(6, 'c', { active: true })])).toEqual([{ start: 0, end: 10, holders: ['a'], bestRate: 3 }]);
  });
});

/** Random sellers, events and windows for the properties. */
const arbitraryCase = fc
  .record({
    sellers: fc.integer({ min: 1, max: 5 }),
    before: fc.array(fc.record({ active: fc.boolean(), busy: fc.boolean(), rate: fc.integer({ min: 0, max: 4 }) }), { minLength: 5, maxLength: 5 }),
    events: fc.array(
      fc.record({
        seller: fc.integer({ min: 0, max: 4 }),
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

describe('crown: properties (fast-check)', () => {
  test('the per-tick credits add up to the aggregate for every seller; credited time = ticks with a holder', () => {
    fc.assert(
      fc.property(arbitraryCase, ({ before, events, window }) => {
        const perTick: Record<string, number> = {};
        let held = 0;
        for (const { tick, holders } of crownPerTick(window, before, events)) {
          if (holders.length === 0) continue;
          held++;
          const owner = tickOwner(tick, holders);
          perTick[owner] = (perTick[owner] ?? 0) + 1;
        }
        const aggregate = crownTime(window, before, events);
        expect(aggregate).toEqual(perTick);
        expect(Object.values(aggregate).reduce((a, b) => a + b, 0)).toBe(held);
      }),
      { numRuns: 1000 },
    );
  });

  test('the intervals tile the window exactly and are maximal, and agree with a tick-by-tick replay of the rules', () => {
    fc.assert(
      fc.property(arbitraryCase, ({ before, events, window }) => {
        const ivs = [...crownIntervals(window, before, events)];
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
          expect(iv.holders).toEqual(holdersOf(states).holders);
        }
      }),
      { numRuns: 500 },
    );
  });
});

test('the replay grows with events, not ticks: 10^6 ticks with 10^4 events take fewer than 3 steps per event', () => {
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
  const total = crownTime({ from: 0, to: 1_000_000 }, before, events, counter);
  expect(counter.steps).toBeLessThan(3 * events.length);
  expect(counter.steps).toBeGreaterThanOrEqual(events.length);
  expect(Object.values(total).reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(1_000_000);
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
