import { SluiceError } from './errors';
import { TIERS, type Tier } from './grants';

/*
 * Per-party stream quotas by tier (issue 22): how many streams a payer may have open
 * at once, and how often its streams may tick at most. A party's tier is the one that
 * sets its free-tier budget (payer_tiers; `new` until the admin sets another).
 */

export interface StreamQuota {
  /** Streams the party may pay at once (open or paused). */
  openStreamsMax: number;
  /** The shortest tick interval its streams may have, in ms. */
  tickIntervalMsMin: number;
}

export type TierStreamQuotas = Record<Tier, StreamQuota>;

/** The defaults of SLUICE_TIER_STREAM_QUOTAS: a new party pays at most 100 streams, each at most 10 ticks a second, like every tier. */
export const DEFAULT_TIER_STREAM_QUOTAS: TierStreamQuotas = {
  new: { openStreamsMax: 100, tickIntervalMsMin: 100 },
  established: { openStreamsMax: 1_000, tickIntervalMsMin: 100 },
  trusted: { openStreamsMax: 5_000, tickIntervalMsMin: 100 },
  elite: { openStreamsMax: 10_000, tickIntervalMsMin: 100 },
};

/** The smallest tick interval any quota may allow: the API's own lower bound. */
const TICK_INTERVAL_MS_FLOOR = 100;

/**
 * Reads SLUICE_TIER_STREAM_QUOTAS: comma-separated `tier=openStreams/tickIntervalMsMin`,
 * e.g. `new=10/1000,elite=20000/100`; a tier left out keeps its default.
 */
export function parseTierStreamQuotas(text: string | undefined): TierStreamQuotas {
  const quotas = { ...DEFAULT_TIER_STREAM_QUOTAS };
  for (const part of (text ?? '').split(',').map((p) => p.trim()).filter(Boolean)) {
    const match = /^([a-z]+)=(\d+)\/(\d+)$/.exec(part.replace(/\s+/g, ''));
    if (!match) throw new Error(`"${part}": write tier=openStreams/tickIntervalMsMin, e.g. new=10/1000`);
    const [, name, open, interval] = match;
    if (!TIERS.includes(name as Tier)) throw new Error(`unknown tier "${name}" (tiers: ${TIERS.join(', ')})`);
    const quota = { openStreamsMax: Number(open), tickIntervalMsMin: Number(interval) };
    if (!Number.isSafeInteger(quota.openStreamsMax) || quota.openStreamsMax < 1) throw new Error(`tier ${name}: open streams must be at least 1, got ${open}`);
    if (!Number.isSafeInteger(quota.tickIntervalMsMin) || quota.tickIntervalMsMin < TICK_INTERVAL_MS_FLOOR) {
      throw new Error(`tier ${name}: the shortest tick interval must be at least ${TICK_INTERVAL_MS_FLOOR} ms, got ${interval}`);
    }
    quotas[name as Tier] = quota;
  }
  return quotas;
}

/**
 * Why a party of `tier` with `open` streams open may not open another ticking every
 * `tickIntervalMs`, or undefined when it may: one rule, checked by the API before a
 * workflow starts and by the ledger under the payer's lock (two opens at once).
 */
export function streamQuotaRefusal(quotas: TierStreamQuotas, opening: { payer: string; tier: Tier; open: number; tickIntervalMs: number }): SluiceError | undefined {
  const quota = quotas[opening.tier];
  if (opening.tickIntervalMs < quota.tickIntervalMsMin) {
    return new SluiceError(
      'limit_exceeded',
      `a ${opening.tier} party's streams tick at most every ${quota.tickIntervalMsMin} ms; tickIntervalMs ${opening.tickIntervalMs} is shorter`,
      { param: 'tickIntervalMs', tier: opening.tier, tickIntervalMsMin: quota.tickIntervalMsMin },
    );
  }
  if (opening.open >= quota.openStreamsMax) {
    return new SluiceError(
      'limit_exceeded',
      `${opening.payer} pays ${opening.open} open streams, the most a ${opening.tier} party may (${quota.openStreamsMax}): close one first`,
      { payer: opening.payer, tier: opening.tier, openStreams: opening.open, openStreamsMax: quota.openStreamsMax },
    );
  }
  return undefined;
}
