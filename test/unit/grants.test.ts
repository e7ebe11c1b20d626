import fc from 'fast-check';
import { loadConfig } from '../../src/config';
import { costOfUnits, decide, DEFAULT_TIER_BUDGETS, parseTierBudgets, poolCreditUnits, regrant, settle, simulatedCost, utcDay } from '../../src/domain/grants';

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

describe('regrant (payment time)', () => {
  test('never more than the advisory grant, never more than what is left now', () => {
    // budget and pool refilled since the decision: still only the advisory 20
    expect(regrant({ estimatedCostUnits: 80, advisoryAbsorbUnits: 20, budgetRemainingUnits: 500, poolAvailableUnits: 500 })).toEqual({ mode: 'partial', absorbUnits: 20, chargeUnits: 60 });
    // the pool drained meanwhile: what is left
    expect(regrant({ estimatedCostUnits: 80, advisoryAbsorbUnits: 50, budgetRemainingUnits: 50, poolAvailableUnits: 7 })).toEqual({ mode: 'partial', absorbUnits: 7, chargeUnits: 73 });
    // a gate job stays gate
    expect(regrant({ estimatedCostUnits: 80, advisoryAbsorbUnits: 0, budgetRemainingUnits: 500, poolAvailableUnits: 500 })).toEqual({ mode: 'gate', absorbUnits: 0, chargeUnits: 80 });
  });
  test('property: absorb + charge = estimate and absorb ≤ advisory, budget and pool', () => {
    const units = fc.integer({ min: 0, max: 100_000 });
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 100_000 }), units, units, units, (estimatedCostUnits, advisory, budgetRemainingUnits, poolAvailableUnits) => {
        const advisoryAbsorbUnits = Math.min(advisory, estimatedCostUnits);
        const d = regrant({ estimatedCostUnits, advisoryAbsorbUnits, budgetRemainingUnits, poolAvailableUnits });
        expect(d.absorbUnits + d.chargeUnits).toBe(estimatedCostUnits);
        expect(d.absorbUnits).toBeLessThanOrEqual(Math.min(advisoryAbsorbUnits, budgetRemainingUnits, poolAvailableUnits));
        expect(d.absorbUnits).toBeGreaterThanOrEqual(0);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('settle (actual cost)', () => {
  test('the pool absorbs first, the payer pays the rest up to what it paid, an overrun is never charged', () => {
    expect(settle({ reservedUnits: 40, paidUnits: 0, actualCostUnits: 30 })).toEqual({ absorbed: 30, returned: 10, payerShare: 0, refund: 0, credited: 0, overrun: 0 });
    expect(settle({ reservedUnits: 50, paidUnits: 30, actualCostUnits: 60 })).toEqual({ absorbed: 50, returned: 0, payerShare: 10, refund: 20, credited: 1, overrun: 0 });
    expect(settle({ reservedUnits: 50, paidUnits: 30, actualCostUnits: 95 })).toEqual({ absorbed: 50, returned: 0, payerShare: 30, refund: 0, credited: 3, overrun: 15 });
    expect(settle({ reservedUnits: 0, paidUnits: 25, actualCostUnits: 21 })).toEqual({ absorbed: 0, returned: 0, payerShare: 21, refund: 4, credited: 2, overrun: 0 });
  });
  test('property: every unit is accounted for, exactly', () => {
    const units = fc.integer({ min: 0, max: 1_000_000 });
    fc.assert(
      fc.property(units, units, units, (reservedUnits, paidUnits, actualCostUnits) => {
        const s = settle({ reservedUnits, paidUnits, actualCostUnits });
        expect(s.absorbed + s.returned).toBe(reservedUnits);
        expect(s.payerShare + s.refund).toBe(paidUnits);
        expect(s.absorbed + s.payerShare + s.overrun).toBe(actualCostUnits);
        expect(s.credited).toBe(poolCreditUnits(s.payerShare));
        for (const v of Object.values(s)) expect(v).toBeGreaterThanOrEqual(0);
      }),
      { numRuns: 2000 },
    );
  });
});

test('tier budgets are configurable by name; bad values are refused with a message', () => {
  expect(parseTierBudgets(undefined)).toEqual(DEFAULT_TIER_BUDGETS);
  expect(parseTierBudgets('established=75, elite=5000')).toEqual({ ...DEFAULT_TIER_BUDGETS, established: 75, elite: 5000 });
  expect(() => parseTierBudgets('gold=10')).toThrow(/unknown tier "gold"/);
  expect(() => parseTierBudgets('trusted=-1')).toThrow(/non-negative integer/);
  expect(() => parseTierBudgets('trusted=1.5')).toThrow(/non-negative integer/);
});

test('the simulated cost moves the estimate by at most 20%, the same for the same request', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 1_000_000 }), fc.string({ minLength: 1, maxLength: 64 }), (estimate, hash) => {
      const cost = simulatedCost(estimate, hash);
      expect(cost).toBe(simulatedCost(estimate, hash));
      expect(cost).toBeGreaterThanOrEqual(Math.max(1, Math.floor(estimate * 0.8)));
      expect(cost).toBeLessThanOrEqual(Math.ceil(estimate * 1.2));
    }),
  );
});

test('an estimate is units × the price per unit, exact; past the largest amount it is the caller\'s error', () => {
  expect(costOfUnits(40, 7)).toBe(280);
  expect(costOfUnits(1, 1)).toBe(1);
  expect(() => costOfUnits(2e14, 7)).toThrow(expect.objectContaining({ code: 'invalid_request' }));
  expect(() => costOfUnits(2 ** 40, 2 ** 20)).toThrow(expect.objectContaining({ code: 'invalid_request' })); // beyond 2^53
  expect(() => costOfUnits(0, 7)).toThrow(/positive safe integer/);
});

test('SLUICE_PRICE_PER_UNIT: an integer of minor units, default 1', () => {
  expect(loadConfig({}).SLUICE_PRICE_PER_UNIT).toBe(1);
  expect(loadConfig({ SLUICE_PRICE_PER_UNIT: '25' }).SLUICE_PRICE_PER_UNIT).toBe(25);
  for (const bad of ['0', '1.5', '-3', 'ten']) expect(() => loadConfig({ SLUICE_PRICE_PER_UNIT: bad })).toThrow(/SLUICE_PRICE_PER_UNIT/);
});
