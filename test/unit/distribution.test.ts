import fc from 'fast-check';
import { distributeTick, type Member } from '../../src/domain/distribution';

const weights = fc.array(fc.integer({ min: 1, max: 1000 }), { minLength: 1, maxLength: 12 });
const small = fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 12 });

/** Runs `amounts` ticks over fixed members; returns what each received and the final credits. */
function run(ws: number[], amounts: number[], onTick?: (amount: number, parts: number[]) => void) {
  let members: Member[] = ws.map((weight, i) => ({ key: `m${i}`, weight, credit: 0 }));
  const received = ws.map(() => 0);
  amounts.forEach((amount, t) => {
    const parts = distributeTick(amount, members, t + 1);
    parts.forEach((p, i) => (received[i]! += p.part));
    onTick?.(amount, parts.map((p) => p.part));
    members = members.map((m, i) => ({ ...m, credit: parts[i]!.credit }));
  });
  return { received, members };
}

describe('distribution split (property)', () => {
  test('each tick: the parts sum to the amount, none is negative, each is its exact share rounded down, or one unit more', () => {
    fc.assert(
      fc.property(fc.oneof(weights, small), fc.array(fc.integer({ min: 1, max: 1_000_000 }), { minLength: 1, maxLength: 60 }), (ws, amounts) => {
        const total = ws.reduce((s, w) => s + w, 0);
        run(ws, amounts, (amount, parts) => {
          expect(parts.reduce((s, p) => s + p, 0)).toBe(amount);
          parts.forEach((p, i) => {
            const floor = Number((BigInt(amount) * BigInt(ws[i]!)) / BigInt(total));
            expect([floor, floor + 1]).toContain(p);
          });
        });
      }),
      { numRuns: 300 },
    );
  });

  test('over many ticks each member stays within two units of its exact weighted share (no drift), and the credits sum to zero', () => {
    fc.assert(
      fc.property(fc.oneof(weights, small), fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 50, maxLength: 400 }), (ws, amounts) => {
        const total = ws.reduce((s, w) => s + w, 0);
        const { received, members } = run(ws, amounts);
        const paid = amounts.reduce((s, a) => s + a, 0);
        received.forEach((r, i) => expect(Math.abs(r - (paid * ws[i]!) / total)).toBeLessThan(2));
        expect(members.reduce((s, m) => s + m.credit, 0)).toBe(0);
      }),
      { numRuns: 300 },
    );
  });

  test('equal members take turns with the leftover unit: no one is favoured', () => {
    // 3 equal members, 1 unit a tick: each gets one unit in every 3 ticks, in rotation
    const seen: number[][] = [];
    run([5, 5, 5], Array(9).fill(1), (_a, parts) => seen.push(parts));
    expect(seen.map((p) => p.indexOf(1))).toEqual([1, 2, 0, 1, 2, 0, 1, 2, 0]);
  });

  test('hand-made: 10 units over weights 1, 2, 7 split exactly; 1 unit over weights 1 and 2 alternates 1:2', () => {
    expect(distributeTick(10, [{ key: 'a', weight: 1, credit: 0 }, { key: 'b', weight: 2, credit: 0 }, { key: 'c', weight: 7, credit: 0 }], 1).map((p) => p.part)).toEqual([1, 2, 7]);
    const { received } = run([1, 2], Array(30).fill(1));
    expect(received).toEqual([10, 20]);
  });

  test('amounts at the exact-integer limit split without losing a unit', () => {
    const parts = distributeTick(Number.MAX_SAFE_INTEGER, [{ key: 'a', weight: 999_999, credit: 0 }, { key: 'b', weight: 3, credit: 0 }], 7);
    expect(parts.reduce((s, p) => s + p.part, 0)).toBe(Number.MAX_SAFE_INTEGER);
  });
});
