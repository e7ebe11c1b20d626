import { planSimulation } from '../../src/domain/simulation';

const options = { buyers: 5, sellers: 5, rounds: 100, seed: 42, partition: true };

test('the same seed gives the same command sequence; another seed gives another', () => {
  const a = planSimulation(options);
  expect(planSimulation({ ...options })).toEqual(a);
  expect(planSimulation({ ...options, seed: 43 })).not.toEqual(a);
  expect(a).toHaveLength(100);
});

test('a plan opens, cancels, tops up and (with --partition) silences parties, within the market it was given', () => {
  const plan = planSimulation(options);
  const kinds = new Set(plan.map((c) => c.kind));
  expect(kinds).toEqual(new Set(['open', 'cancel', 'topup', 'silence']));
  const opened = plan.filter((c) => c.kind === 'open').length;
  for (const c of plan) {
    if (c.kind === 'open') expect([c.buyer < 5, c.seller < 5, c.ratePerTick >= 1, c.tickIntervalMs >= 200]).toEqual([true, true, true, true]);
    if (c.kind === 'cancel') expect(c.stream).toBeLessThan(opened);
  }
  expect(planSimulation({ ...options, partition: false }).some((c) => c.kind === 'silence')).toBe(false);
});
