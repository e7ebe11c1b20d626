/**
 * The scenario runner's plan: a seeded market of buyers and sellers, as a list of
 * commands computed up front from the scenario alone. Timing and outcomes (a stream
 * that completes by itself before its cancel arrives) never change the plan, so
 * the same scenario and seed always send the same commands.
 *
 * A scenario is what `sluice simulate --scenario FILE.yaml` reads (validated in
 * src/scenario.ts); the flags (--buyers --sellers --rounds --seed --partition) are
 * the built-in scenario `scenarioFromFlags` builds.
 */

/** An inclusive range of whole numbers, drawn uniformly. */
export interface Range {
  min: number;
  max: number;
}

export interface ScenarioMix {
  /** Commands drawn from the mix each round. */
  perRound: number;
  /** How likely each kind of command is (they sum to 1; idle: no command). */
  shares: { open: number; cancel: number; topup: number; silence: number; pause: number; idle: number };
  /** A random buyer opens a stream to a random seller on these terms. */
  open: { ratePerTick: Range; maxTotal: Range; tickIntervalMs: Range & { step: number }; escrowShare: number };
  /** A random stream already opened is cancelled, by its payer with this probability, else by its payee. */
  cancel: { payerShare: number };
  /** A random buyer is topped up. */
  topup: { amountUnits: Range };
  /** A random party (a buyer with this probability) sends no heartbeats for some rounds. */
  silence: { buyerShare: number; rounds: Range };
  /** A random stream already opened is paused by its payer, and resumed some rounds later. */
  pause: { rounds: Range };
}

export interface ScenarioParties {
  buyers: Array<{ name: string; fundsUnits: number }>;
  sellers: Array<{ name: string }>;
}

/** A command at a given round, on parties and streams named in the scenario. */
export type ScenarioEvent = { round: number } & (
  | { open: { name: string; buyer: string; seller: string; ratePerTick: number; maxTotal: number; tickIntervalMs: number; mode: 'escrow' | 'payg' } }
  | { cancel: { stream: string; by: 'payer' | 'payee' } }
  | { topup: { buyer: string; amountUnits: number } }
  | { pause: { stream: string; rounds: number } }
);

export interface Scenario {
  seed: number;
  /** Rounds count from 0. */
  rounds: number;
  /** Wall time of one round. */
  roundMs: number;
  parties: ScenarioParties;
  /** Streams are opened with these and every party not silenced heartbeats each round; needed for silences. */
  liveness?: { timeoutMs: number; graceMs: number };
  mix: ScenarioMix;
  /** These parties send no heartbeats from round `fromRound` through round `toRound`. */
  partitions: Array<{ parties: string[]; fromRound: number; toRound: number }>;
  events: ScenarioEvent[];
}

/** The flags' market: what `--buyers --sellers --rounds --seed --partition` always meant. */
export interface SimulationOptions {
  buyers: number;
  sellers: number;
  rounds: number;
  seed: number;
  partition: boolean;
  roundMs?: number;
}

export type Command =
  | { round: number; kind: 'open'; stream: number; buyer: number; seller: number; ratePerTick: number; maxTotal: number; tickIntervalMs: number; mode: 'escrow' | 'payg' }
  | { round: number; kind: 'cancel'; stream: number; by: 'payer' | 'payee' }
  | { round: number; kind: 'topup'; buyer: number; amount: number }
  | { round: number; kind: 'silence'; party: 'buyer' | 'seller'; index: number; rounds: number }
  | { round: number; kind: 'pause'; stream: number }
  | { round: number; kind: 'resume'; stream: number };

/** What each buyer of the flags' market is deposited before the first round (its top-ups come on top). */
export const BUYER_FUNDS = 5_000;
export const ROUND_MS_DEFAULT = 100;
/** The flags' --partition: how long a party may be silent before ticks stop, and before its streams close. */
export const PARTITION_LIVENESS = { timeoutMs: 700, graceMs: 2_000 } as const;

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

/** The built-in scenario behind the flags: the same plan they always gave. */
export function scenarioFromFlags(o: SimulationOptions): Scenario {
  return {
    seed: o.seed,
    rounds: o.rounds,
    roundMs: o.roundMs ?? ROUND_MS_DEFAULT,
    parties: {
      buyers: Array.from({ length: o.buyers }, (_, i) => ({ name: `b${i}`, fundsUnits: BUYER_FUNDS })),
      sellers: Array.from({ length: o.sellers }, (_, i) => ({ name: `s${i}` })),
    },
    ...(o.partition ? { liveness: { ...PARTITION_LIVENESS } } : {}),
    mix: {
      perRound: 1,
      shares: o.partition ? { open: 0.45, cancel: 0.3, topup: 0.15, silence: 0.1, pause: 0, idle: 0 } : { open: 0.45, cancel: 0.3, topup: 0.25, silence: 0, pause: 0, idle: 0 },
      open: { ratePerTick: { min: 1, max: 20 }, maxTotal: { min: 40, max: 400 }, tickIntervalMs: { min: 200, max: 500, step: 100 }, escrowShare: 0.7 },
      cancel: { payerShare: 0.5 },
      topup: { amountUnits: { min: 100, max: 1000 } },
      silence: { buyerShare: 0.5, rounds: { min: 10, max: 30 } },
      pause: { rounds: { min: 5, max: 20 } },
    },
    partitions: [],
    events: [],
  };
}

export function planSimulation(o: SimulationOptions): Command[] {
  return planScenario(scenarioFromFlags(o));
}

/** In the order the roll is read: the flags' kinds first, so their plans never change. */
const MIX_KINDS = ['open', 'cancel', 'topup', 'silence', 'pause', 'idle'] as const;

/**
 * The plan of a scenario. Each round, in this order: the resumes of pauses that end
 * there, `perRound` commands drawn from the mix, the partitions that start there, and
 * the scenario's events for the round in file order. Streams are numbered in the
 * order they are opened (drawn or scripted). The random draws happen in a fixed order
 * (the roll, then each command's own draws), so one seed is one plan.
 */
export function planScenario(s: Scenario): Command[] {
  assertScenario(s);
  const random = prng(s.seed);
  const int = (r: Range) => r.min + Math.floor(random() * (r.max - r.min + 1));
  const { mix } = s;
  // cumulative thresholds; a roll past the last (rounding) falls to the last kind with a share
  const thresholds: number[] = [];
  MIX_KINDS.reduce((sum, kind) => (thresholds.push(sum + mix.shares[kind]), sum + mix.shares[kind]), 0);
  const lastKind = [...MIX_KINDS].reverse().find((kind) => mix.shares[kind] > 0)!;
  const buyerIndex = new Map(s.parties.buyers.map((p, i) => [p.name, i]));
  const sellerIndex = new Map(s.parties.sellers.map((p, i) => [p.name, i]));
  const namedStreams = new Map<string, number>();
  const eventsAt = new Map<number, ScenarioEvent[]>();
  for (const e of s.events) eventsAt.set(e.round, [...(eventsAt.get(e.round) ?? []), e]);

  const commands: Command[] = [];
  let streams = 0;
  /** The round each paused stream is resumed in (past the last round: never, the closing sweep cancels it paused). */
  const pausedUntil = new Map<number, number>();
  const pause = (round: number, stream: number, rounds: number) => {
    const until = pausedUntil.get(stream);
    // pausing a paused stream makes the pause last until the later end
    if (until === undefined) commands.push({ round, kind: 'pause', stream });
    pausedUntil.set(stream, Math.max(until ?? 0, round + rounds));
  };

  for (let round = 0; round < s.rounds; round++) {
    for (const [stream, until] of pausedUntil) {
      if (until !== round) continue;
      commands.push({ round, kind: 'resume', stream });
      pausedUntil.delete(stream);
    }

    for (let draw = 0; draw < mix.perRound; draw++) {
      const roll = random();
      let kind = MIX_KINDS.find((_, i) => roll < thresholds[i]!) ?? lastKind;
      // until a stream is open every draw opens one (nothing to cancel or pause before)
      if (streams === 0 && mix.shares.open > 0) kind = 'open';
      if (kind === 'idle') continue;
      if (kind === 'open') {
        const { open } = mix;
        commands.push({
          round,
          kind: 'open',
          stream: streams++,
          buyer: int({ min: 0, max: s.parties.buyers.length - 1 }),
          seller: int({ min: 0, max: s.parties.sellers.length - 1 }),
          ratePerTick: int(open.ratePerTick),
          maxTotal: int(open.maxTotal),
          tickIntervalMs: open.tickIntervalMs.min + int({ min: 0, max: Math.floor((open.tickIntervalMs.max - open.tickIntervalMs.min) / open.tickIntervalMs.step) }) * open.tickIntervalMs.step,
          mode: random() < open.escrowShare ? 'escrow' : 'payg',
        });
      } else if (streams === 0 && (kind === 'cancel' || kind === 'pause')) {
        continue; // no stream to act on, and no opens in the mix
      } else if (kind === 'cancel') {
        commands.push({ round, kind: 'cancel', stream: int({ min: 0, max: streams - 1 }), by: random() < mix.cancel.payerShare ? 'payer' : 'payee' });
      } else if (kind === 'topup') {
        commands.push({ round, kind: 'topup', buyer: int({ min: 0, max: s.parties.buyers.length - 1 }), amount: int(mix.topup.amountUnits) });
      } else if (kind === 'silence') {
        const party = random() < mix.silence.buyerShare ? 'buyer' : 'seller';
        commands.push({ round, kind: 'silence', party, index: int({ min: 0, max: (party === 'buyer' ? s.parties.buyers : s.parties.sellers).length - 1 }), rounds: int(mix.silence.rounds) });
      } else {
        const stream = int({ min: 0, max: streams - 1 });
        pause(round, stream, int(mix.pause.rounds));
      }
    }

    for (const p of s.partitions) {
      if (p.fromRound !== round) continue;
      for (const name of p.parties) {
        const buyer = buyerIndex.get(name);
        commands.push({ round, kind: 'silence', party: buyer !== undefined ? 'buyer' : 'seller', index: buyer ?? sellerIndex.get(name)!, rounds: p.toRound - p.fromRound });
      }
    }

    for (const e of eventsAt.get(round) ?? []) {
      if ('open' in e) {
        namedStreams.set(e.open.name, streams);
        const { name: _name, buyer, seller, ...terms } = e.open;
        commands.push({ round, kind: 'open', stream: streams++, buyer: buyerIndex.get(buyer)!, seller: sellerIndex.get(seller)!, ...terms });
      } else if ('cancel' in e) {
        commands.push({ round, kind: 'cancel', stream: namedStreams.get(e.cancel.stream)!, by: e.cancel.by });
      } else if ('topup' in e) {
        commands.push({ round, kind: 'topup', buyer: buyerIndex.get(e.topup.buyer)!, amount: e.topup.amountUnits });
      } else {
        pause(round, namedStreams.get(e.pause.stream)!, e.pause.rounds);
      }
    }
  }
  return commands;
}

/**
 * What the plan relies on. The file's schema says all of it to the user with the
 * path of each mistake; reaching here with a broken scenario is a bug.
 */
function assertScenario(s: Scenario): void {
  const fail = (what: string) => {
    throw new Error(`scenario: ${what}`);
  };
  if (!Number.isSafeInteger(s.rounds) || s.rounds < 1) fail('rounds must be a positive integer');
  if (s.parties.buyers.length < 1 || s.parties.sellers.length < 1) fail('a market needs a buyer and a seller');
  const sum = Object.values(s.mix.shares).reduce((a, b) => a + b, 0);
  if (s.mix.perRound > 0 && Math.abs(sum - 1) > 1e-9) fail(`mix shares sum to ${sum}, not 1`);
  if (s.mix.open.tickIntervalMs.step < 1) fail('tick interval step must be positive');
  const buyers = new Set(s.parties.buyers.map((p) => p.name));
  const sellers = new Set(s.parties.sellers.map((p) => p.name));
  for (const p of s.partitions) for (const name of p.parties) if (!buyers.has(name) && !sellers.has(name)) fail(`no party ${name}`);
  const opened = new Set<string>();
  for (const e of [...s.events].sort((a, b) => a.round - b.round)) {
    if ('open' in e) {
      if (!buyers.has(e.open.buyer) || !sellers.has(e.open.seller)) fail(`stream ${e.open.name}: no buyer ${e.open.buyer} or no seller ${e.open.seller}`);
      opened.add(e.open.name);
    }
    const stream = 'cancel' in e ? e.cancel.stream : 'pause' in e ? e.pause.stream : undefined;
    if (stream !== undefined && !opened.has(stream)) fail(`stream ${stream} is used before it is opened`);
    if ('topup' in e && !buyers.has(e.topup.buyer)) fail(`no buyer ${e.topup.buyer}`);
  }
}
