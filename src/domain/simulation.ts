/**
 * The scenario runner's plan: a seeded market of buyers and sellers, as a list of
 * commands computed up front from the seed alone. Timing and outcomes (a stream
 * that completes by itself before its cancel arrives) never change the plan, so
 * the same seed always sends the same commands.
 */
export interface SimulationOptions {
  buyers: number;
  sellers: number;
  rounds: number;
  seed: number;
  partition: boolean;
}

export type Command =
  | { round: number; kind: 'open'; stream: number; buyer: number; seller: number; ratePerTick: number; maxTotal: number; tickIntervalMs: number; mode: 'escrow' | 'payg' }
  | { round: number; kind: 'cancel'; stream: number; by: 'payer' | 'payee' }
  | { round: number; kind: 'topup'; buyer: number; amount: number }
  | { round: number; kind: 'silence'; party: 'buyer' | 'seller'; index: number; rounds: number };

/** mulberry32: a small, well-distributed 32-bit PRNG; deterministic for a seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function planSimulation(o: SimulationOptions): Command[] {
  const random = prng(o.seed);
  const int = (min: number, max: number) => min + Math.floor(random() * (max - min + 1));
  const commands: Command[] = [];
  let streams = 0;
  for (let round = 0; round < o.rounds; round++) {
    const roll = random();
    if (roll < 0.45 || streams === 0) {
      commands.push({
        round,
        kind: 'open',
        stream: streams++,
        buyer: int(0, o.buyers - 1),
        seller: int(0, o.sellers - 1),
        ratePerTick: int(1, 20),
        maxTotal: int(40, 400),
        tickIntervalMs: int(2, 5) * 100,
        mode: random() < 0.7 ? 'escrow' : 'payg',
      });
    } else if (roll < 0.75) {
      commands.push({ round, kind: 'cancel', stream: int(0, streams - 1), by: random() < 0.5 ? 'payer' : 'payee' });
    } else if (roll < 0.9 || !o.partition) {
      commands.push({ round, kind: 'topup', buyer: int(0, o.buyers - 1), amount: int(100, 1000) });
    } else {
      const party = random() < 0.5 ? 'buyer' : 'seller';
      commands.push({ round, kind: 'silence', party, index: int(0, (party === 'buyer' ? o.buyers : o.sellers) - 1), rounds: int(10, 30) });
    }
  }
  return commands;
}
