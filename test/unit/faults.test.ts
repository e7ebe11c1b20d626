import { FAULT_STEPS, faultFor, faultIsFinal, parseFaults } from '../../src/domain/faults';

describe('fault injection configuration', () => {
  test('names every step and compensation of the sagas, with a subject and a kind', () => {
    expect(FAULT_STEPS).toEqual(expect.arrayContaining(['allocate', 'unfund', 'mark_failed', 'open_grant', 'settle', 'refund_payment', 'close_grant', 'close_streams']));
    expect(parseFaults('fund=always, settle@j-7=after ,unfund@acme/3=2')).toEqual([
      { step: 'fund', times: 'always' },
      { step: 'settle', entity: 'j-7', times: 'after' },
      { step: 'unfund', entity: 'acme/3', times: 2 },
    ]);
    expect(parseFaults(undefined)).toEqual([]);
    expect(() => parseFaults('explode=always')).toThrow(/bad fault "explode=always"/);
    expect(() => parseFaults('fund=sometimes')).toThrow(/bad fault/);
  });

  test('`after` fails the first attempt only; `<n>` the first n; a subject matches itself or its entity', () => {
    const faults = parseFaults('settle@j-7=after,unfund@acme=2,activate@acme/3=always');
    expect(faultFor(faults, 'settle', 'j-7', 1)).toBeDefined();
    expect(faultFor(faults, 'settle', 'j-7', 2)).toBeUndefined();
    expect(faultFor(faults, 'unfund', 'acme/5', 2)).toBeDefined();
    expect(faultFor(faults, 'unfund', 'acme/5', 3)).toBeUndefined();
    expect(faultFor(faults, 'activate', 'acme/3', 9)).toBeDefined();
    expect(faultFor(faults, 'activate', 'acme/4', 1)).toBeUndefined();
    expect(faultFor(faults, 'unfund', 'acme-x/1', 1)).toBeUndefined();
  });

  test('only a refusal, or a creation step reported failed after committing, is final; everything else is retried', () => {
    const [always, creationAfter, settleAfter, compensationAfter, once] = parseFaults('settle=always,fund=after,settle=after,unfund=after,activate=1');
    expect([always, creationAfter, settleAfter, compensationAfter, once].map((f) => faultIsFinal(f!))).toEqual([true, true, false, false, false]);
  });
});
