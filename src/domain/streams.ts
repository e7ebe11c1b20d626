/**
 * Streams: the pure rules shared by the workflow, the activities, the API and the
 * tests. No I/O, no clocks: callers pass the time in.
 */
export type StreamMode = 'escrow' | 'payg';
/** PAUSED: open, its clock stopped by a pause (no tick comes due until it resumes). */
export type StreamStatus = 'STREAMING' | 'PAUSED' | 'CONFIRMED' | 'FAILED';
/** `tick_refused`: the ledger refused a tick for good (a payee account that can no longer take money). */
/**
 * Why a stream closed. `workflow_cancelled`: its workflow was cancelled from outside
 * (the Temporal UI or CLI) and settled as it stopped. `workflow_<status>`: the
 * reconciler found it open in the ledger with its workflow ended that way (or lost) and
 * settled it there.
 */
export type CloseReason = 'completed' | 'cancelled' | 'insufficient_funds' | 'partition' | 'tick_refused' | 'workflow_cancelled' | WorkflowGoneReason;

/** How a workflow that holds money was found gone: it ended without settling, or Temporal no longer knows it. */
export type WorkflowGoneReason = 'workflow_terminated' | 'workflow_timed_out' | 'workflow_failed' | 'workflow_completed' | 'workflow_lost';

/** The close reason for a workflow found in this state (a Temporal status name; undefined: not found). */
export function goneReason(status: string | undefined): WorkflowGoneReason | 'workflow_cancelled' {
  switch (status) {
    case 'CANCELLED':
      return 'workflow_cancelled';
    case 'TERMINATED':
      return 'workflow_terminated';
    case 'TIMED_OUT':
      return 'workflow_timed_out';
    case 'FAILED':
      return 'workflow_failed';
    case 'COMPLETED':
    case 'CONTINUED_AS_NEW':
      return 'workflow_completed';
    default:
      return 'workflow_lost';
  }
}

/** Who settles what an outside cancel or the reconciler closes. */
export const OPERATOR = 'operator';
/** `direct`: one payee; `distribution`: a weighted group of members (src/domain/distribution.ts). */
export type StreamKind = 'direct' | 'distribution';

export interface DistributionMember {
  accountId: string;
  party: string;
  weight: number;
}

export interface StreamRequest {
  ref: string;
  payer: string;
  payerAccountId: string;
  /** A direct stream's payee; a distribution stream has `members` instead. */
  payee?: string;
  payeeAccountId?: string;
  members?: DistributionMember[];
  ratePerTick: number;
  /** The cap; left out, a payg stream is open-ended (it runs until closed, paused or out of funds). */
  maxTotal?: number;
  tickIntervalMs: number;
  mode: StreamMode;
  /** `payee`: a rate change by the payer applies only once the payee agrees. */
  rateConsent?: 'payer' | 'payee';
  /** stream.low_balance fires this many ticks before the money runs out (default 3). */
  lowBalanceTicks?: number;
  /** The operator that opened the stream for its payer. */
  openedBy?: string;
  /** Partition awareness: no tick is billed while a party has been silent longer than this. */
  livenessTimeoutMs?: number;
  /** Silent longer than this: the stream closes with reason `partition`. */
  graceMs?: number;
  /** Opened to payee "best": how it was routed, recorded (stream.routed) in the opening's own transaction. */
  route?: StreamRoute;
}

/** How a stream opened to payee "best" was routed: the market, its direction, the crown's holders at that tick, and the one paid at its rate. */
export interface StreamRoute {
  market: string;
  direction: 'ask' | 'bid';
  seller: string;
  tick: number;
  holders: string[];
  bestRate: number;
}

/** What the workflow carries across continue-as-new. */
export interface StreamProgress {
  lastTick: number;
  paid: number;
  ticksBilled: number;
  openedAtMs: number;
  /** Time spent paused before the current pause (pushes due times back). */
  pausedMs?: number;
  /** Set while paused. */
  pausedAtMs?: number;
  /** Pauses so far (each pause and its resume are keyed by their number). */
  pauses?: number;
}

export interface StreamPause {
  pausedAt: string;
  resumedAt?: string;
  by: string;
}

export interface StreamRate {
  ratePerTick: number;
  /** The first tick billed at this rate. */
  fromTick: number;
  at: string;
  by: string;
  /** The payee that agreed to the change (a stream opened with rateConsent `payee`). */
  agreedBy?: string;
}

export interface StreamReceipt {
  ref: string;
  status: StreamStatus;
  /** Set for a distribution stream only. */
  kind?: 'distribution';
  payer: string;
  payee?: string;
  mode: StreamMode;
  ratePerTick: number;
  maxTotal?: number;
  /** Ticks billed. */
  ticks: number;
  totalPaid: number;
  openedAt: string;
  tickIntervalMs?: number;
  /** Closed streams: ticks that came due by the close (by the schedule, pauses excluded). */
  ticksDue?: number;
  /** Ticks that came due but were not charged (a party was silent at the due time). */
  ticksSkipped?: number;
  closedAt?: string;
  reason?: CloseReason;
  closedBy?: string;
  failure?: string;
  openedBy?: string;
  /** Added by top-ups (maxTotal grew by as much). */
  deposited?: number;
  /** The accounts it pays from and (a direct stream) to. */
  fromAccountId?: string;
  toAccountId?: string;
  /** A closed escrow stream: what the escrow gave back to the payer at the close. */
  escrowReturned?: number;
  pauses?: StreamPause[];
  /** The rate history, the opening rate first. */
  rates?: StreamRate[];
  /** A distribution stream's members and what each received. */
  members?: { accountId: string; party: string; weight: number; received: number; left?: boolean }[];
}

export type TickOutcome =
  | { kind: 'billed'; tick: number; amount: number; paid: number; ticksBilled: number; completed: boolean }
  | { kind: 'skipped'; tick: number; silentMs: number }
  | { kind: 'insufficient_funds'; tick: number }
  | { kind: 'closed'; tick: number }
  /** The stream is paused: the tick waits, its number unused, until the stream resumes. */
  | { kind: 'paused'; tick: number };

export const streamWorkflowId = (ref: string) => `stream-${ref}`;
/** A tick's key, the only one the database lets it have (migration 031, transfers_keyed_by_tick): claiming it claims the tick. */
export const tickKey = (ref: string, tick: number) => `stream:${ref}:tick:${tick}`;
export const escrowKey = (ref: string) => `stream:${ref}:escrow`;
export const releaseKey = (ref: string) => `stream:${ref}:release`;

/** Members of one distribution stream at most (each tick is one transfer per member). */
export const DISTRIBUTION_MEMBERS_MAX = 100;

/** stream.low_balance warns this many ticks ahead unless the stream says otherwise. */
export const LOW_BALANCE_TICKS_DEFAULT = 3;

export const depositKey = (ref: string, key: string) => `stream:${ref}:deposit:${key}`;
/** A distribution member's tick's key, likewise the only one it may have (transfers_keyed_by_tick). */
export const splitKey = (ref: string, tick: number, accountId: string) => `stream:${ref}:tick:${tick}:${accountId}`;

/** Tick n bills the rate, or what is left under the cap (if any), whichever is smaller. */
export function tickAmount(ratePerTick: number, maxTotal: number | null | undefined, paid: number): number {
  return Math.max(0, maxTotal == null ? ratePerTick : Math.min(ratePerTick, maxTotal - paid));
}

/**
 * When tick n (1-based; tick 1 is billed at open) comes due. Time spent paused
 * stops the clock: it pushes every later tick back by as much.
 */
export const tickDueAtMs = (openedAtMs: number, tickIntervalMs: number, tick: number, pausedMs = 0) =>
  openedAtMs + (tick - 1) * tickIntervalMs + pausedMs;

/** How many ticks had come due by `atMs` (tick 1 at the opening), time paused excluded. */
export const ticksDueBy = (openedAtMs: number, tickIntervalMs: number, pausedMs: number, atMs: number) =>
  Math.max(0, Math.floor((atMs - openedAtMs - pausedMs) / tickIntervalMs) + 1);

/**
 * What a stream's money still pays for at the current rate, the one rule behind the
 * depletion view and the low-balance warning. The cap left pays for a partial last
 * tick too; the payer's available balance (payg: `available`) only for whole ticks
 * (a tick it cannot cover closes the stream). `limitedBy` says which runs out first:
 * the escrow, the cap (payg) or the payer's balance.
 */
export function moneyLeft(o: { mode: StreamMode; ratePerTick: number; maxTotal: number | null; paid: number; available?: number }) {
  const capLeft = o.maxTotal === null ? null : o.maxTotal - o.paid;
  const byCap = capLeft === null ? Infinity : Math.ceil(Math.max(0, capLeft) / o.ratePerTick);
  const byBalance = o.available === undefined ? Infinity : Math.floor(Math.max(0, o.available) / o.ratePerTick);
  const limitedBy: 'escrow' | 'cap' | 'balance' = o.mode === 'escrow' ? 'escrow' : byCap <= byBalance ? 'cap' : 'balance';
  return { ticksLeft: Math.min(byCap, byBalance), capLeft, limitedBy, funds: Math.min(capLeft ?? Infinity, o.available ?? Infinity) };
}

/** stream.low_balance is due once a tick leaves the money for `lowBalanceTicks` ticks or fewer. */
export const isLowBalance = (ticksLeft: number, lowBalanceTicks: number) => ticksLeft <= lowBalanceTicks;

/** How long one party last seen at `seenMs` has been silent at `nowMs` (0 for a party seen since). */
export const unseenMs = (nowMs: number, seenMs: number) => Math.max(0, nowMs - seenMs);

/** How long the quieter party has been silent, given when each was last seen: a tick is skipped when this reaches the liveness timeout. */
export function silenceMs(nowMs: number, payerSeenMs: number, payeeSeenMs: number): number {
  return Math.max(unseenMs(nowMs, payerSeenMs), unseenMs(nowMs, payeeSeenMs));
}

/**
 * Money accrued since the last billed tick but not billed yet, for a live view:
 * the elapsed fraction of the interval times the rate, never past the cap.
 */
export function accruedUnbilled(opts: { nowMs: number; lastTickDueMs: number; tickIntervalMs: number; ratePerTick: number; remaining: number }): number {
  const elapsed = Math.max(0, Math.min(opts.nowMs - opts.lastTickDueMs, opts.tickIntervalMs));
  return Math.min(opts.remaining, Math.floor((opts.ratePerTick * elapsed) / opts.tickIntervalMs));
}

/** Grace defaults to three liveness timeouts: a blip skips ticks, a real partition closes. */
export const effectiveGraceMs = (r: Pick<StreamRequest, 'livenessTimeoutMs' | 'graceMs'>) =>
  r.graceMs ?? (r.livenessTimeoutMs !== undefined ? 3 * r.livenessTimeoutMs : undefined);

/** A billed tick as GET /v1/streams/:ref/ticks lists it. */
export interface BilledTick {
  tick: number;
  amount: number;
  /** The stream's paid total once this tick was billed. */
  paid: number;
  billedAt: string;
  transferId: number;
}
