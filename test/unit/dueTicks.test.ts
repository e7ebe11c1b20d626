import fc from 'fast-check';
import { dueTicks, shardKeyOf, type DueStream } from '../../src/domain/billing';
import { tickDueAtMs } from '../../src/domain/streams';

/** Every due tick of every stream, listed one by one and sorted: what dueTicks must equal, cut at rowsMax. */
function naive(streams: DueStream[], asOfMs: number, rowsMax: number) {
  const all: { ref: string; tick: number; dueAtMs: number }[] = [];
  for (const s of streams) {
    for (let tick = s.lastTick + 1; ; tick++) {
      const dueAtMs = tickDueAtMs(s.openedAtMs, s.tickIntervalMs, tick, s.pausedMs);
      if (dueAtMs > asOfMs) break;
      all.push({ ref: s.ref, tick, dueAtMs });
    }
  }
  all.sort((a, b) => a.dueAtMs - b.dueAtMs || (a.ref < b.ref ? -1 : a.ref > b.ref ? 1 : 0) || a.tick - b.tick);
  return all.slice(0, rowsMax);
}

const stream = (ref: string, o: { lastTick: number; openedAtMs: number; tickIntervalMs: number; pausedMs: number }): DueStream => ({
  ref, mode: 'escrow', payerAccountId: 'a', payeeAccountId: 'b', ratePerTick: 1, maxTotal: null, paid: 0, ticksBilled: 0,
  livenessTimeoutMs: null, graceMs: null, lowBalanceTicks: 0, lowBalanceWarned: false, refused: false, ...o,
});

test('dueTicks (a binary search for the cut-off instant) lists exactly the earliest rowsMax due ticks, ties by ref then tick', () => {
  fc.assert(
    fc.property(
      fc.array(fc.record({ lastTick: fc.integer({ min: 1, max: 50 }), openedAtMs: fc.integer({ min: 0, max: 5_000 }), tickIntervalMs: fc.constantFrom(100, 150, 250, 1000), pausedMs: fc.integer({ min: 0, max: 2_000 }) }), { maxLength: 8 }),
      fc.integer({ min: 0, max: 20_000 }),
      fc.integer({ min: 1, max: 60 }),
      (specs, asOfMs, rowsMax) => {
        const streams = specs.map((o, i) => stream(`s${i}`, o));
        expect(dueTicks(streams, asOfMs, rowsMax)).toEqual(naive(streams, asOfMs, rowsMax));
      },
    ),
    { numRuns: 500 },
  );
});

test('the shard key is FNV-1a of the ref, as migration 011 computes it in SQL', () => {
  // fnv1a31('abc') from PostgreSQL: select fnv1a31('abc')
  expect(shardKeyOf('abc')).toBe(0x1a47e90b % 2147483648);
  expect(shardKeyOf('')).toBe(2166136261 % 2147483648);
});
