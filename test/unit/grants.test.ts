import fc from 'fast-check';
import { decide, poolCreditUnits, utcDay } from '../../src/domain/grants';

describe('decide', () => {
  test('free when budget and pool both cover the estimate, including a budget exactly equal to it', () => {
    expect(decide({ estimatedCostUnits: 50, budgetRemainingUnits: 50, poolAvailableUnits: 10_000 })).toEqual({ mode: 'free', absorbUnits: 50, chargeUnits: 0 });
  });
  test('partial absorbs what both allow and charges the rest', () => {
    expect(decide({ estimatedCostUnits: 80, budgetRemainingUnits: 50, poolAvailableUnits: 10_000 })).toEqual({ mode: 'partial', absorbUnits: 50, chargeUnits: 30 });
    expect(decide({ estimatedCostUnits: 80, budgetRemainingUnits: 200, poolAvailableUnits: 20 })).toEqual({ mode: 'partial', absorbUnits: 20, chargeUnits: 60 });
  });
  test('gate for tier new (no budget) and for an empty pool', () => {
    expect(decide({ estimatedCostUnits: 10, budgetRemainingUnits: 0, poolAvailableUnits: 10_000 })).toEqual({ mode: 'gate', absorbUnits: 0, chargeUnits: 10 });
    expect(decide({ estimatedCostUnits: 10, budgetRemainingUnits: 1000, poolAvailableUnits: 0 })).toEqual({ mode: 'gate', absorbUnits: 0, chargeUnits: 10 });
  });
  test('zero, negative and fractional estimates are refused', () => {
    for (const estimatedCostUnits of [0, -5, 1.5, Number.NaN]) {
      expect(() => decide({ estimatedCostUnits, budgetRemainingUnits: 10, poolAvailableUnits: 10 })).toThrow(/positive safe integer/);
    }
  });
  test('property: absorb + charge = estimate, absorb ≤ remaining budget, absorb ≤ pool, and the mode matches', () => {
    const units = fc.integer({ min: 0, max: 1_000_000 });
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1_000_000 }), units, units, (estimatedCostUnits, budgetRemainingUnits, poolAvailableUnits) => {
        const d = decide({ estimatedCostUnits, budgetRemainingUnits, poolAvailableUnits });
        expect(d.absorbUnits + d.chargeUnits).toBe(estimatedCostUnits);
        expect(d.absorbUnits).toBeLessThanOrEqual(budgetRemainingUnits);
        expect(d.absorbUnits).toBeLessThanOrEqual(poolAvailableUnits);
        expect(d.absorbUnits).toBeGreaterThanOrEqual(0);
        expect(d.mode).toBe(d.chargeUnits === 0 ? 'free' : d.absorbUnits > 0 ? 'partial' : 'gate');
      }),
      { numRuns: 2000 },
    );
  });
});

test('the pool is credited 10% of a paid amount, rounded down', () => {
  expect([0, 9, 10, 19, 25, 1000].map(poolCreditUnits)).toEqual([0, 0, 1, 1, 2, 100]);
  fc.assert(fc.property(fc.integer({ min: 0, max: 1e12 }), (paid) => poolCreditUnits(paid) * 10 <= paid && paid - poolCreditUnits(paid) * 10 < 10));
});

test('budgets reset at UTC midnight', () => {
  expect(utcDay(Date.UTC(2026, 10, 23, 23, 59, 59, 999))).toBe('2026-11-23');
  expect(utcDay(Date.UTC(2026, 10, 24, 0, 0, 0, 0))).toBe('2026-11-24');
});
