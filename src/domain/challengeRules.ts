/**
 * The challenge and elimination rules (DESIGN §4, issue 19): pure, no I/O. The ledger
 * reads the figures under the subaccount's lock and asks `assessRules`; the lifecycle
 * workflow eliminates on the breach it answers.
 */

export const BPS = 10_000;
/** The minimum balance ratio of an entity that names none (half its funding). */
export const CHALLENGE_MIN_BPS_DEFAULT = 5000;
/** How often an active subaccount's rules are assessed by default: once a day. */
export const ASSESS_EVERY_MS_DEFAULT = 86_400_000;
/** Assessments per lifecycle run before it continues as new (bounds its history: a timer and an activity each). */
export const ASSESSMENTS_PER_RUN_MAX = 100;

export const RULE_NAMES = ['min_balance', 'max_drawdown', 'inactivity'] as const;
export type RuleName = (typeof RULE_NAMES)[number];

/** An entity's rules: the minimum balance ratio always; the others when set. */
export interface ChallengeRules {
  minBalanceBps: number;
  maxDrawdownBps?: number;
  inactivityMs?: number;
}

/** What the rules read, all integers: units, and epoch milliseconds. */
export interface RuleFigures {
  fundingUnits: number;
  balanceUnits: number;
  /** The high-water mark including this assessment (`nextHighWaterMark`). */
  highWaterMarkUnits: number;
  /** The last stream tick paid or received, or the subaccount's creation if none. */
  lastActivityAtMs: number;
  /** When the assessment is made (the workflow's clock). */
  atMs: number;
}

/** The rule that fired, with the figures it fired on (stored on the subaccount, sent with `subaccount.eliminated`). */
export type RuleBreach =
  | { rule: 'min_balance'; balance: number; funding: number; ratioBps: number; limitBps: number }
  | { rule: 'max_drawdown'; highWaterMark: number; balance: number; drawdownBps: number; limitBps: number }
  | { rule: 'inactivity'; lastActivityAt: string; idleMs: number; limitMs: number };

const assertUnits = (name: string, n: number) => {
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${name} must be a non-negative safe integer, got ${n}`);
};

/** The high-water mark after seeing `balanceUnits`: never below the funding, never down. */
export function nextHighWaterMark(previousUnits: number | null, balanceUnits: number, fundingUnits: number): number {
  return Math.max(previousUnits ?? 0, balanceUnits, fundingUnits);
}

/** `part`/`whole` in basis points, rounded down, in BigInt so units up to 1e15 do not lose precision. */
const bpsOf = (part: number, whole: number) => Number((BigInt(part) * BigInt(BPS)) / BigInt(whole));

/**
 * The rules in a fixed order (minimum balance, drawdown, inactivity); the first to fire
 * is the breach, undefined when all hold. A balance exactly at a limit holds.
 */
export function assessRules(rules: ChallengeRules, f: RuleFigures): RuleBreach | undefined {
  assertUnits('fundingUnits', f.fundingUnits);
  assertUnits('highWaterMarkUnits', f.highWaterMarkUnits);
  if (!Number.isSafeInteger(f.balanceUnits)) throw new Error(`balanceUnits must be a safe integer, got ${f.balanceUnits}`);
  if (f.highWaterMarkUnits < Math.max(f.balanceUnits, f.fundingUnits)) throw new Error('the high-water mark must cover the balance and the funding');
  const balance = f.balanceUnits;
  if (BigInt(balance) * BigInt(BPS) < BigInt(f.fundingUnits) * BigInt(rules.minBalanceBps)) {
    return { rule: 'min_balance', balance, funding: f.fundingUnits, ratioBps: f.fundingUnits === 0 ? BPS : bpsOf(Math.max(0, balance), f.fundingUnits), limitBps: rules.minBalanceBps };
  }
  if (rules.maxDrawdownBps !== undefined && f.highWaterMarkUnits > 0) {
    const fall = f.highWaterMarkUnits - balance;
    if (BigInt(fall) * BigInt(BPS) > BigInt(f.highWaterMarkUnits) * BigInt(rules.maxDrawdownBps)) {
      return { rule: 'max_drawdown', highWaterMark: f.highWaterMarkUnits, balance, drawdownBps: bpsOf(fall, f.highWaterMarkUnits), limitBps: rules.maxDrawdownBps };
    }
  }
  if (rules.inactivityMs !== undefined) {
    const idleMs = f.atMs - f.lastActivityAtMs;
    if (idleMs > rules.inactivityMs) return { rule: 'inactivity', lastActivityAt: new Date(f.lastActivityAtMs).toISOString(), idleMs, limitMs: rules.inactivityMs };
  }
  return undefined;
}
