import { assertNonNegativeUnits, assertUnits } from './money';

/**
 * The free-tier pool's rules, pure: which tier gets how much per UTC day, what
 * part of a job the pool absorbs, and what a paid amount credits back to the pool.
 */
export const TIERS = ['new', 'established', 'trusted', 'elite'] as const;
export type Tier = (typeof TIERS)[number];

/** Units of cost the pool may absorb for one payer per UTC day. */
export const DEFAULT_TIER_BUDGETS: Record<Tier, number> = { new: 0, established: 50, trusted: 200, elite: 1000 };

export type GrantMode = 'free' | 'partial' | 'gate';

export interface Decision {
  mode: GrantMode;
  /** What the pool absorbs. */
  absorbUnits: number;
  /** What the payer pays. absorb + charge = the estimate, always. */
  chargeUnits: number;
}

/**
 * `free` when both the payer's remaining daily budget and the pool cover the whole
 * estimate; `partial` when they cover some of it (absorb what both allow, charge
 * the rest); `gate` when they cover nothing (charge all).
 */
export function decide(input: { estimatedCostUnits: number; budgetRemainingUnits: number; poolAvailableUnits: number }): Decision {
  assertUnits(input.estimatedCostUnits, 'estimatedCostUnits');
  assertNonNegativeUnits(input.budgetRemainingUnits, 'budgetRemainingUnits');
  assertNonNegativeUnits(input.poolAvailableUnits, 'poolAvailableUnits');
  const absorbable = Math.min(input.budgetRemainingUnits, input.poolAvailableUnits, input.estimatedCostUnits);
  const mode: GrantMode = absorbable === input.estimatedCostUnits ? 'free' : absorbable > 0 ? 'partial' : 'gate';
  return { mode, absorbUnits: absorbable, chargeUnits: input.estimatedCostUnits - absorbable };
}

/** 10% of every paid amount goes back to the pool, rounded down: the pool is never credited more than a tenth. */
export const poolCreditUnits = (paidUnits: number) => Math.floor(paidUnits / 10);

/** The UTC day an instant belongs to (`YYYY-MM-DD`): daily budgets reset at UTC midnight. */
export const utcDay = (ms: number) => new Date(ms).toISOString().slice(0, 10);
