import fc from 'fast-check';
import { accruedUnbilled, moneyLeft, silenceMs, tickAmount, tickDueAtMs, ticksDueBy } from '../../src/domain/streams';
import { silentParties } from '../../src/ledger/streams/heartbeats';

const rate = fc.integer({ min: 1, max: 1_000 });

describe('tickAmount', () => {
  test('a tick bills the full rate while the cap leaves room, then the partial rest, then nothing', () => {
    expect(tickAmount(25, 60, 0)).toBe(25);
    expect(tickAmount(25, 60, 50)).toBe(10);
    expect(tickAmount(25, 60, 60)).toBe(0);
    expect(tickAmount(25, null, 1_000_000)).toBe(25);
  });

  test('billing tick after tick never passes the cap and reaches it exactly (the last tick partial)', () => {
    fc.assert(
      fc.property(rate, fc.integer({ min: 1, max: 10_000 }), (ratePerTick, maxTotal) => {
        let paid = 0;
        let ticks = 0;
        let largest = 0;
        for (let amount = tickAmount(ratePerTick, maxTotal, paid); amount > 0; amount = tickAmount(ratePerTick, maxTotal, paid)) {
          largest = Math.max(largest, amount);
          paid += amount;
          ticks += 1;
        }
        expect(largest).toBeLessThanOrEqual(ratePerTick);
        expect(paid).toBe(maxTotal);
        expect(ticks).toBe(Math.ceil(maxTotal / ratePerTick));
      }),
    );
  });
});

describe('tickDueAtMs and ticksDueBy', () => {
  test('tick 1 is due at the opening; time paused pushes every later tick back by as much', () => {
    expect(tickDueAtMs(1_000, 100, 1)).toBe(1_000);
    expect(tickDueAtMs(1_000, 100, 3)).toBe(1_200);
    expect(tickDueAtMs(1_000, 100, 3, 50)).toBe(1_250);
  });

  test('ticksDueBy counts exactly the ticks whose due time has come, pauses excluded', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 10_000 }), fc.integer({ min: 1, max: 1_000 }), fc.integer({ min: 0, max: 5_000 }), fc.integer({ min: 0, max: 50_000 }), (openedAtMs, intervalMs, pausedMs, atMs) => {
        const n = ticksDueBy(openedAtMs, intervalMs, pausedMs, atMs);
        if (n > 0) expect(tickDueAtMs(openedAtMs, intervalMs, n, pausedMs)).toBeLessThanOrEqual(atMs);
        expect(tickDueAtMs(openedAtMs, intervalMs, n + 1, pausedMs)).toBeGreaterThan(atMs);
      }),
    );
  });
});

describe('moneyLeft', () => {
  test('the cap left pays for a partial last tick; the payer balance only for whole ticks', () => {
    expect(moneyLeft({ mode: 'payg', ratePerTick: 25, maxTotal: 60, paid: 0 })).toMatchObject({ ticksLeft: 3, capLeft: 60, limitedBy: 'cap', funds: 60 });
    expect(moneyLeft({ mode: 'payg', ratePerTick: 25, maxTotal: null, paid: 0, available: 60 })).toMatchObject({ ticksLeft: 2, capLeft: null, limitedBy: 'balance', funds: 60 });
  });

  test('escrow is limited by the escrow; payg by whichever of cap and balance runs out first', () => {
    expect(moneyLeft({ mode: 'escrow', ratePerTick: 10, maxTotal: 100, paid: 40 })).toMatchObject({ ticksLeft: 6, limitedBy: 'escrow' });
    expect(moneyLeft({ mode: 'payg', ratePerTick: 10, maxTotal: 100, paid: 40, available: 1_000 }).limitedBy).toBe('cap');
    expect(moneyLeft({ mode: 'payg', ratePerTick: 10, maxTotal: 100, paid: 40, available: 30 })).toMatchObject({ ticksLeft: 3, limitedBy: 'balance', funds: 30 });
  });

  test('an open-ended stream with no balance given has money for ever; a spent cap for no tick', () => {
    expect(moneyLeft({ mode: 'payg', ratePerTick: 10, maxTotal: null, paid: 500 }).ticksLeft).toBe(Infinity);
    expect(moneyLeft({ mode: 'escrow', ratePerTick: 10, maxTotal: 100, paid: 100 }).ticksLeft).toBe(0);
  });

  test('the ticks the cap pays for are the ticks tickAmount bills before reaching it', () => {
    fc.assert(
      fc.property(rate, fc.integer({ min: 1, max: 10_000 }), fc.integer({ min: 0, max: 100 }), (ratePerTick, maxTotal, percent) => {
        const paid = Math.floor((maxTotal * percent) / 100);
        let billed = paid;
        let ticks = 0;
        while (tickAmount(ratePerTick, maxTotal, billed) > 0) {
          billed += tickAmount(ratePerTick, maxTotal, billed);
          ticks += 1;
        }
        expect(moneyLeft({ mode: 'escrow', ratePerTick, maxTotal, paid }).ticksLeft).toBe(ticks);
      }),
    );
  });
});

describe('silenceMs', () => {
  test('the quieter party sets the silence; a party seen after now means no silence', () => {
    expect(silenceMs(10_000, 9_000, 4_000)).toBe(6_000);
    expect(silenceMs(10_000, 4_000, 9_000)).toBe(6_000);
    expect(silenceMs(10_000, 12_000, 11_000)).toBe(0);
  });

  test('silence is never negative and never less than either party’s own', () => {
    fc.assert(
      fc.property(fc.nat(1e9), fc.nat(1e9), fc.nat(1e9), (nowMs, payerSeenMs, payeeSeenMs) => {
        const s = silenceMs(nowMs, payerSeenMs, payeeSeenMs);
        expect(s).toBeGreaterThanOrEqual(0);
        expect(s).toBeGreaterThanOrEqual(nowMs - payerSeenMs);
        expect(s).toBeGreaterThanOrEqual(nowMs - payeeSeenMs);
      }),
    );
  });

  test('a tick waits for heartbeats in flight exactly when the skip rule would skip it: silentParties lists a party iff silenceMs reaches the timeout', () => {
    fc.assert(
      fc.property(fc.nat(1e9), fc.nat(1e9), fc.nat(1e9), fc.integer({ min: 1, max: 1e6 }), (dueAtMs, payerSeenMs, payeeSeenMs, timeoutMs) => {
        const listed = silentParties({ payer: 'a', payee: 'b', liveness_timeout_ms: timeoutMs }, dueAtMs, payerSeenMs, payeeSeenMs);
        expect(listed.length > 0).toBe(silenceMs(dueAtMs, payerSeenMs, payeeSeenMs) >= timeoutMs);
      }),
    );
  });
});

describe('accruedUnbilled', () => {
  test('accrues the elapsed fraction of the interval, rounded down, never past one tick or the cap left', () => {
    const base = { lastTickDueMs: 1_000, tickIntervalMs: 1_000, ratePerTick: 30, remaining: 1_000 };
    expect(accruedUnbilled({ ...base, nowMs: 1_000 })).toBe(0);
    expect(accruedUnbilled({ ...base, nowMs: 1_500 })).toBe(15);
    expect(accruedUnbilled({ ...base, nowMs: 1_333 })).toBe(9);
    expect(accruedUnbilled({ ...base, nowMs: 9_000 })).toBe(30);
    expect(accruedUnbilled({ ...base, nowMs: 1_900, remaining: 5 })).toBe(5);
    expect(accruedUnbilled({ ...base, nowMs: 500 })).toBe(0);
  });

  test('grows with time and stays within [0, min(rate, remaining)]', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 10_000 }), rate, fc.nat(5_000), fc.integer({ min: -2_000, max: 20_000 }), fc.nat(5_000), (tickIntervalMs, ratePerTick, remaining, elapsed, more) => {
        const at = (nowMs: number) => accruedUnbilled({ nowMs, lastTickDueMs: 0, tickIntervalMs, ratePerTick, remaining });
        const a = at(elapsed);
        expect(Number.isSafeInteger(a)).toBe(true);
        expect(a).toBeGreaterThanOrEqual(0);
        expect(a).toBeLessThanOrEqual(Math.min(ratePerTick, remaining));
        expect(at(elapsed + more)).toBeGreaterThanOrEqual(a);
      }),
    );
  });
});
