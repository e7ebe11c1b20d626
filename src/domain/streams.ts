/**
 * Streams: the pure rules shared by the workflow, the activities, the API and the
 * tests. No I/O, no clocks: callers pass the time in.
 */
export type StreamMode = 'escrow' | 'payg';
export type StreamStatus = 'STREAMING' | 'CONFIRMED' | 'FAILED';
export type CloseReason = 'completed' | 'cancelled' | 'insufficient_funds' | 'partition';

export interface StreamRequest {
  ref: string;
  payer: string;
  payee: string;
  payerAccountId: string;
  payeeAccountId: string;
  ratePerTick: number;
  maxTotal: number;
  tickIntervalMs: number;
  mode: StreamMode;
  /** Partition awareness: no tick is billed while a party has been silent longer than this. */
  livenessTimeoutMs?: number;
  /** Silent longer than this: the stream closes with reason `partition`. */
  graceMs?: number;
}

/** What the workflow carries across continue-as-new. */
export interface StreamProgress {
  lastTick: number;
  paid: number;
  ticksBilled: number;
  openedAtMs: number;
}

export interface StreamReceipt {
  ref: string;
  status: StreamStatus;
  payer: string;
  payee: string;
  mode: StreamMode;
  ratePerTick: number;
  maxTotal: number;
  ticks: number;
  totalPaid: number;
  openedAt: string;
  closedAt?: string;
  reason?: CloseReason;
  closedBy?: string;
  failure?: string;
}

export type TickOutcome =
  | { kind: 'billed'; tick: number; amount: number; paid: number; ticksBilled: number; completed: boolean }
  | { kind: 'skipped'; tick: number; silentMs: number }
  | { kind: 'insufficient_funds'; tick: number }
  | { kind: 'closed'; tick: number };

export const streamWorkflowId = (ref: string) => `stream-${ref}`;
export const tickKey = (ref: string, tick: number) => `stream:${ref}:tick:${tick}`;
export const escrowKey = (ref: string) => `stream:${ref}:escrow`;
export const releaseKey = (ref: string) => `stream:${ref}:release`;

/** Tick n bills the rate, or what is left under the cap, whichever is smaller. */
export function tickAmount(ratePerTick: number, maxTotal: number, paid: number): number {
  return Math.max(0, Math.min(ratePerTick, maxTotal - paid));
}

/** When tick n (1-based; tick 1 is billed at open) comes due. */
export const tickDueAtMs = (openedAtMs: number, tickIntervalMs: number, tick: number) => openedAtMs + (tick - 1) * tickIntervalMs;

/** How long the quieter party has been silent, given when each was last seen. */
export function silenceMs(nowMs: number, payerSeenMs: number, payeeSeenMs: number): number {
  return Math.max(0, nowMs - Math.min(payerSeenMs, payeeSeenMs));
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
