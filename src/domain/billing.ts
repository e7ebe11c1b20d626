/**
 * The billing clock's rules: which shard bills a stream, and what a batch of due
 * ticks bills. Pure (no I/O, no clock): the ledger reads the locked state, this
 * decides every tick in due order, and the ledger writes the plan in one statement.
 * The result is by construction the same as billing each tick alone in due order:
 * the plan walks the ticks one by one in that order, over the state they would see.
 */
import { isLowBalance, moneyLeft, silenceMs, tickAmount, tickDueAtMs, type StreamMode, type TickOutcome } from './streams';

/** Billing shards unless configured (SLUICE_BILLING_SHARDS). */
export const BILLING_SHARDS_DEFAULT = 2;
/** Ticks one billing transaction writes at most (SLUICE_BILLING_ROWS_MAX); the clock loops until caught up. */
export const BILLING_ROWS_MAX_DEFAULT = 500;

/**
 * A stable 31-bit hash (FNV-1a over the characters; refs and account ids are ASCII,
 * their CHECKs say so); migration 011 computes the same in SQL. Workflows call it
 * too, so it uses nothing the workflow sandbox lacks.
 */
export function shardKeyOf(key: string): number {
  let h = 2166136261;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i) & 0xff;
    h = Math.imul(h, 16777619) >>> 0;
  }
  return h % 2147483648;
}

/**
 * A stream's shard: by its payer's account. Every stream of one payer is then billed
 * by one clock, in one due order, so "while its funds last" is decided in one place;
 * and two shards never wait on each other for a payer's account lock.
 */
export const shardOf = (payerAccountId: string, shards: number) => shardKeyOf(payerAccountId) % shards;

/** The billing workflow of one shard; the task queue keeps separate deployments (and test files) apart. */
export const billingClockWorkflowId = (taskQueue: string, shard: number, shards: number) => `billing-clock-${taskQueue}-${shard}-of-${shards}`;

/** Why the clock stopped billing a stream; its workflow then closes it with this reason. */
export type HaltReason = 'completed' | 'insufficient_funds' | 'partition' | 'tick_refused';

/**
 * Why billing stops after a tick billed alone (a distribution's tick, a close's
 * settlement): the halt reason; 'closed' when the stream closed or paused underneath;
 * undefined to go on with the next tick.
 */
export function haltAfter(outcome: TickOutcome, graceMs: number | undefined): HaltReason | 'closed' | undefined {
  if (outcome.kind === 'billed') return outcome.completed ? 'completed' : undefined;
  if (outcome.kind === 'insufficient_funds') return 'insufficient_funds';
  if (outcome.kind === 'skipped') return graceMs !== undefined && outcome.silentMs > graceMs ? 'partition' : undefined;
  return 'closed';
}

/** A locked, due stream as the planner needs it (a direct stream: one payer account, one payee account). */
export interface DueStream {
  ref: string;
  mode: StreamMode;
  payerAccountId: string;
  payeeAccountId: string;
  ratePerTick: number;
  maxTotal: number | null;
  paid: number;
  ticksBilled: number;
  lastTick: number;
  openedAtMs: number;
  tickIntervalMs: number;
  pausedMs: number;
  livenessTimeoutMs: number | null;
  graceMs: number | null;
  lowBalanceTicks: number;
  /** stream.low_balance already fired (since the last top-up). */
  lowBalanceWarned: boolean;
  /** A party's account can no longer take money (an ended subaccount): the tick is refused. */
  refused: boolean;
}

export interface PlannedTick {
  ref: string;
  tick: number;
  amount: number;
  /** The stream's paid total after this tick. */
  paid: number;
  dueAtMs: number;
  payerSeenMs: number | null;
  payeeSeenMs: number | null;
}

export interface PlannedSkip {
  ref: string;
  tick: number;
  silentMs: number;
}

export interface StreamOutcome {
  ref: string;
  billed: number;
  amount: number;
  /** The last tick whose number was used (billed or skipped). */
  lastTick: number;
  halted?: HaltReason;
  /** stream.low_balance, at the first tick that left the money for lowBalanceTicks or fewer (`atTick`). */
  lowBalance?: { atTick: number; payload: { ticksLeft: number; ratePerTick: number; capLeft?: number; available?: number } };
}

export interface BillingPlan {
  ticks: PlannedTick[];
  skips: PlannedSkip[];
  streams: StreamOutcome[];
}

/** When a stream's party was last seen at a tick's due time (the latest heartbeat then, or the opening or resume). */
export type SeenAt = (ref: string, tick: number) => { payerMs: number; payeeMs: number };

/**
 * The due ticks of each stream, in due order, at most `rowsMax` in all (the earliest
 * first). A clock far behind has thousands of due ticks per stream: rather than list
 * them all, it finds the latest instant by which at most `rowsMax` are due (a binary
 * search over the count, which is arithmetic per stream) and lists only those, plus
 * the ties of the next millisecond.
 */
export interface DueTick {
  ref: string;
  tick: number;
  dueAtMs: number;
}

export function dueTicks(streams: DueStream[], asOfMs: number, rowsMax: number): DueTick[] {
  const firstDue = (s: DueStream) => tickDueAtMs(s.openedAtMs, s.tickIntervalMs, s.lastTick + 1, s.pausedMs);
  const dueBy = (s: DueStream, t: number) => (t < firstDue(s) ? 0 : Math.floor((t - firstDue(s)) / s.tickIntervalMs) + 1);
  const countBy = (t: number) => streams.reduce((n, s) => n + dueBy(s, t), 0);
  let cutoff = asOfMs;
  if (countBy(asOfMs) > rowsMax) {
    // the latest t with countBy(t) <= rowsMax; the ticks due at t + 1 fill up to rowsMax
    let lo = Math.min(...streams.map(firstDue)) - 1;
    let hi = asOfMs;
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      if (countBy(mid) <= rowsMax) lo = mid;
      else hi = mid;
    }
    cutoff = lo + 1;
  }
  const all: DueTick[] = [];
  for (const s of streams) {
    const n = dueBy(s, cutoff);
    for (let i = 0; i < n; i++) {
      const tick = s.lastTick + 1 + i;
      all.push({ ref: s.ref, tick, dueAtMs: tickDueAtMs(s.openedAtMs, s.tickIntervalMs, tick, s.pausedMs) });
    }
  }
  all.sort((a, b) => a.dueAtMs - b.dueAtMs || (a.ref < b.ref ? -1 : a.ref > b.ref ? 1 : 0) || a.tick - b.tick);
  return all.slice(0, rowsMax);
}

/**
 * Decides a batch: every due tick in due order, as if each were billed alone then.
 * A tick is skipped (recorded, not charged) when a party had been silent for the
 * liveness timeout at its due time, and the stream halts `partition` once a silence
 * passes the grace period. A tick bills min(rate, cap − paid); reaching the cap
 * halts `completed`. A payg tick needs the payer's available funds, which the
 * batch's earlier ticks have already moved (debits and credits alike); one it
 * cannot cover halts `insufficient_funds` and spends nothing, so the payer's other
 * streams go on while its funds last.
 */
export function planBilling(input: {
  streams: DueStream[];
  /** The ticks to decide, in due order (dueTicks). */
  due: DueTick[];
  /** Available funds (balance − held) of every account the streams touch. */
  available: Map<string, number>;
  seenAt: SeenAt;
}): BillingPlan {
  const plan: BillingPlan = { ticks: [], skips: [], streams: [] };
  const available = new Map(input.available);
  const state = new Map<string, { s: DueStream; out: StreamOutcome; paid: number; warned: boolean }>();
  for (const s of input.streams) {
    const out: StreamOutcome = { ref: s.ref, billed: 0, amount: 0, lastTick: s.lastTick };
    plan.streams.push(out);
    state.set(s.ref, { s, out, paid: s.paid, warned: s.lowBalanceWarned });
  }
  for (const due of input.due) {
    const st = state.get(due.ref)!;
    const { s, out } = st;
    if (out.halted) continue;
    if (s.refused) {
      out.halted = 'tick_refused';
      continue;
    }
    let seen: { payerMs: number; payeeMs: number } | undefined;
    if (s.livenessTimeoutMs !== null) {
      seen = input.seenAt(s.ref, due.tick);
      const silentMs = silenceMs(due.dueAtMs, seen.payerMs, seen.payeeMs);
      if (silentMs >= s.livenessTimeoutMs) {
        plan.skips.push({ ref: s.ref, tick: due.tick, silentMs });
        out.lastTick = due.tick;
        if (s.graceMs !== null && silentMs > s.graceMs) out.halted = 'partition';
        continue;
      }
    }
    const amount = tickAmount(s.ratePerTick, s.maxTotal, st.paid);
    if (amount === 0) {
      out.halted = 'completed';
      continue;
    }
    if (s.mode === 'payg' && (available.get(s.payerAccountId) ?? 0) < amount) {
      out.halted = 'insufficient_funds';
      continue;
    }
    if (s.mode === 'payg') available.set(s.payerAccountId, available.get(s.payerAccountId)! - amount);
    available.set(s.payeeAccountId, (available.get(s.payeeAccountId) ?? 0) + amount);
    st.paid += amount;
    out.billed += 1;
    out.amount += amount;
    out.lastTick = due.tick;
    plan.ticks.push({ ref: s.ref, tick: due.tick, amount, paid: st.paid, dueAtMs: due.dueAtMs, payerSeenMs: seen?.payerMs ?? null, payeeSeenMs: seen?.payeeMs ?? null });
    if (!st.warned) {
      const fundsLeft = s.mode === 'payg' ? available.get(s.payerAccountId)! : undefined;
      const left = moneyLeft({ mode: s.mode, ratePerTick: s.ratePerTick, maxTotal: s.maxTotal, paid: st.paid, available: fundsLeft });
      if (isLowBalance(left.ticksLeft, s.lowBalanceTicks)) {
        st.warned = true;
        out.lowBalance = {
          atTick: due.tick,
          payload: { ticksLeft: left.ticksLeft, ratePerTick: s.ratePerTick, ...(left.capLeft !== null && { capLeft: left.capLeft }), ...(fundsLeft !== undefined && { available: fundsLeft }) },
        };
      }
    }
    if (s.maxTotal !== null && st.paid >= s.maxTotal) out.halted = 'completed';
  }
  return plan;
}
