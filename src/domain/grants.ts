import { SluiceError } from './errors';
import { AMOUNT_UNITS_MAX, assertNonNegativeUnits, assertUnits } from './money';

/**
 * The free-tier pool's rules, pure: which tier gets how much per UTC day, what
 * part of a job the pool absorbs, and what a paid amount credits back to the pool.
 */
export const TIERS = ['new', 'established', 'trusted', 'elite'] as const;
export type Tier = (typeof TIERS)[number];

/** The grant job's steps (fault injection names them): the ledger ones retried until they commit, the work a few times. */
export const GRANT_STEPS = ['open_grant', 'pay', 'work', 'settle'] as const;
/** Its compensations, in the order they run when the work fails or the job is cancelled. */
export const GRANT_COMPENSATIONS = ['refund_payment', 'release_reservation', 'close_grant'] as const;

/** Units of cost the pool may absorb for one payer per UTC day. */
export const DEFAULT_TIER_BUDGETS: Record<Tier, number> = { new: 0, established: 50, trusted: 200, elite: 1000 };

/** The pool's seed when the database is first migrated (SLUICE_POOL_SEED_UNITS). */
export const POOL_SEED_UNITS_DEFAULT = 10_000;
/** Stripe accounts the pool is held as (SLUICE_POOL_STRIPES): about the reservations that run at once. */
export const POOL_STRIPES_DEFAULT = 8;

/** Minor units one unit of work costs (SLUICE_PRICE_PER_UNIT). */
export const PRICE_PER_UNIT_DEFAULT = 1;

/** A job's estimated cost from its units of work: exact, or refused (a caller's 400) past the largest amount. */
export function costOfUnits(units: number, pricePerUnit: number): number {
  assertUnits(units, 'units');
  assertUnits(pricePerUnit, 'pricePerUnit');
  const cost = units * pricePerUnit;
  if (!Number.isSafeInteger(cost) || cost > AMOUNT_UNITS_MAX) {
    throw new SluiceError('invalid_request', `${units} units at ${pricePerUnit} a unit exceed the largest amount (${AMOUNT_UNITS_MAX})`, { units, pricePerUnit });
  }
  return cost;
}

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
  return grantOf(input.estimatedCostUnits, Math.min(input.budgetRemainingUnits, input.poolAvailableUnits, input.estimatedCostUnits));
}

/** The decision that absorbs `absorbUnits` of an estimate: its mode follows from what is left to charge. */
function grantOf(estimatedCostUnits: number, absorbUnits: number): Decision {
  const chargeUnits = estimatedCostUnits - absorbUnits;
  return { mode: chargeUnits === 0 ? 'free' : absorbUnits > 0 ? 'partial' : 'gate', absorbUnits, chargeUnits };
}

/** 10% of every paid amount goes back to the pool, rounded down: the pool is never credited more than a tenth. */
export const poolCreditUnits = (paidUnits: number) => Math.floor(paidUnits / 10);

/** The UTC day an instant belongs to (`YYYY-MM-DD`): daily budgets reset at UTC midnight. */
export const utcDay = (ms: number) => new Date(ms).toISOString().slice(0, 10);

/**
 * The grant at payment time for a `partial` or `gate` job: what is left then, never
 * more than the advisory grant decided at creation (a payer cannot gain by waiting
 * for budget or pool to refill), never more than budget and pool allow now.
 */
export function regrant(input: {
  estimatedCostUnits: number;
  advisoryAbsorbUnits: number;
  budgetRemainingUnits: number;
  poolAvailableUnits: number;
}): Decision {
  assertNonNegativeUnits(input.advisoryAbsorbUnits, 'advisoryAbsorbUnits');
  return grantOf(input.estimatedCostUnits, Math.min(decide(input).absorbUnits, input.advisoryAbsorbUnits));
}

export interface Settlement {
  /** Captured from the pool reservation: the pool pays for the first units of cost. */
  absorbed: number;
  /** The rest of the reservation, released to the pool and back into the payer's budget. */
  returned: number;
  /** What the payer finally pays of what it paid upfront. */
  payerShare: number;
  /** Paid upfront but not needed (the work cost less): refunded to the payer. */
  refund: number;
  /** 10% of the payer's share, back to the pool (poolCreditUnits). */
  credited: number;
  /** Cost beyond reservation + payment (the work cost more than quoted): Sluice's, not charged. */
  overrun: number;
}

/**
 * Settles a job against its actual cost. The pool absorbs first, up to what it
 * reserved; the payer covers the rest, up to what it paid; the estimate is the
 * payer's quote, so an overrun is never charged. Exact integers throughout:
 * absorbed + returned = reserved, payerShare + refund = paid.
 */
export function settle(input: { reservedUnits: number; paidUnits: number; actualCostUnits: number }): Settlement {
  assertNonNegativeUnits(input.reservedUnits, 'reservedUnits');
  assertNonNegativeUnits(input.paidUnits, 'paidUnits');
  assertNonNegativeUnits(input.actualCostUnits, 'actualCostUnits');
  const absorbed = Math.min(input.reservedUnits, input.actualCostUnits);
  const payerShare = Math.min(input.paidUnits, input.actualCostUnits - absorbed);
  return {
    absorbed,
    returned: input.reservedUnits - absorbed,
    payerShare,
    refund: input.paidUnits - payerShare,
    credited: poolCreditUnits(payerShare),
    overrun: input.actualCostUnits - absorbed - payerShare,
  };
}

/** Tier budgets from `SLUICE_TIER_BUDGETS` (`established=50,trusted=200`): unnamed tiers keep their default. */
export function parseTierBudgets(text: string | undefined): Record<Tier, number> {
  const budgets = { ...DEFAULT_TIER_BUDGETS };
  for (const part of (text ?? '').split(',').map((p) => p.trim()).filter(Boolean)) {
    const [name, value] = part.split('=').map((s) => s.trim());
    if (!TIERS.includes(name as Tier)) throw new Error(`unknown tier "${name}" (tiers: ${TIERS.join(', ')})`);
    const units = Number(value);
    if (!Number.isSafeInteger(units) || units < 0) throw new Error(`tier ${name}: budget must be a non-negative integer of units, got "${value}"`);
    budgets[name as Tier] = units;
  }
  return budgets;
}

// ------------------------------------------------------------------ jobs

export const jobWorkflowId = (jobId: string) => `job-${jobId}`;
export const reserveKey = (jobId: string) => `job:${jobId}:reserve`;
export const paymentKey = (jobId: string) => `job:${jobId}:payment`;
export const absorbKey = (jobId: string) => `job:${jobId}:absorb`;
export const jobRefundKey = (jobId: string) => `job:${jobId}:refund`;
export const creditKey = (jobId: string) => `job:${jobId}:credit`;
export const releaseReservationKey = (jobId: string) => `job:${jobId}:release`;

/** What the work may be told to do (the default implementation simulates it). */
export interface WorkSimulation {
  /** The cost the work reports; default: the estimate moved by up to ±20%, derived from the request hash. */
  actualCost?: number;
  /** Fail this many attempts before succeeding; `always` never succeeds. */
  failTimes?: number | 'always';
  durationMs?: number;
}

export interface JobWork {
  description: string;
  simulate?: WorkSimulation;
}

export interface JobRequest {
  jobId: string;
  payer: string;
  payerAccountId: string;
  estimatedCost: number;
  requestHash: string;
  work: JobWork;
  /** How long a `partial` or `gate` job waits for its payment before it cancels itself. */
  paymentTimeoutMs: number;
}

/**
 * The terms that make a job the same job: its payer, the account it pays from, its
 * estimate and its work (hashed). The service checks them before and after the
 * workflow starts (a second caller may attach to a run started with other terms); the
 * ledger again under the payer's lock as it records the grant.
 */
export const sameJobTerms = (g: Pick<GrantView, 'payer' | 'payerAccountId' | 'estimatedCost' | 'requestHash'>, r: JobRequest) =>
  g.payer === r.payer && g.payerAccountId === r.payerAccountId && g.estimatedCost === r.estimatedCost && g.requestHash === r.requestHash;

/** The same job id sent with other terms. */
export const jobIdTaken = (jobId: string) => new SluiceError('ref_conflict', `job id ${jobId} is already used by another job`, { jobId });

export type GrantStatus = 'awaiting_payment' | 'reserved' | 'settled' | 'cancelled' | 'failed';

/** A job's grant as the API and the workflow see it. */
export interface GrantView {
  jobId: string;
  payer: string;
  payerAccountId: string;
  requestHash: string;
  estimatedCost: number;
  decision: GrantMode;
  tier: Tier;
  /** What the decision offered (free: the estimate; partial: the advisory absorb; gate: 0). */
  advisoryAbsorb: number;
  status: GrantStatus;
  day?: string;
  reserved: number;
  absorbed: number;
  returned: number;
  paid: number;
  refunded: number;
  credited: number;
  actualCost?: number;
  failure?: string;
  /** A cancelled or failed job: who ended it (payer, admin, system, operator) and why. */
  closedBy?: string;
  reason?: string;
  /** A session's request (its grant's job id is `session:<session>:<request>`). */
  sessionId?: string;
  requestId?: string;
  createdAt: string;
  resolvedAt?: string;
}

/**
 * What a payment request meets: a job waiting for its payment (`due`), a job paid
 * already (`paid`: answered with the same grant, nothing moves), or a job that takes
 * none (`refused`: free, or cancelled before it was paid). A partial or gate payment
 * is never 0 (the grant is capped below the estimate), so `paid > 0` tells them apart.
 */
export function paymentState(g: Pick<GrantView, 'status' | 'paid'>): 'due' | 'paid' | 'refused' {
  if (g.status === 'awaiting_payment') return 'due';
  return g.paid > 0 ? 'paid' : 'refused';
}

/**
 * The simulated cost of a job: the estimate moved by −20%…+20%, a deterministic
 * function of the request hash (the same request costs the same), at least 1 unit.
 */
export function simulatedCost(estimatedCost: number, requestHash: string): number {
  let h = 0;
  for (const c of requestHash) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return Math.max(1, Math.round((estimatedCost * (80 + (h % 41))) / 100));
}
