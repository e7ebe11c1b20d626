import type { Pool } from '../db/pool';
import { withTransaction } from '../db/pool';
import { haltAfter, type HaltReason } from '../domain/billing';
import { SluiceError, sluiceErrorFromDatabase } from '../domain/errors';
import { effectiveGraceMs } from '../domain/streams';
import { billTick } from './streams/ticks';
import { billDueIn, type BatchResult, type LockedStream } from './tickBatch';

export interface BillDueOptions {
  shard: number;
  shards: number;
  /** Ticks one transaction writes at most. */
  rowsMax: number;
  /** Transactions one call runs at most before it hands back (the clock calls again at once). */
  roundsMax?: number;
  /**
   * How long one call may keep billing as ticks come due (sleeping in between, at most
   * BILLING_POLL_MS at a time) before it hands back to the workflow; 0: one pass. A busy
   * shard then waits on no Temporal timer between its batches.
   */
  sessionMs?: number;
}

/** The longest in-process sleep of a billing session: a stream opened meanwhile waits at most this long. */
export const BILLING_POLL_MS = 50;
/** A session hands back once the next due tick is further than this: the workflow's durable timer takes over. */
export const BILLING_SESSION_IDLE_MS = 1_000;

export interface BillDueHooks {
  /** After each committed transaction (the activity heartbeats). */
  onRound?: () => void;
}

export interface BillDueResult extends BatchResult {
  /** When the shard's next tick comes due (epoch ms), null when no stream is due later. */
  nextDueMs: number | null;
  /** The database's clock when nextDueMs was read (epoch ms). */
  nowMs: number;
  /** Every tick due when the call began is billed (or waits on a row another transaction holds). */
  caughtUp: boolean;
}

export const BILLING_ROUNDS_MAX_DEFAULT = 20;

function addUp(total: BatchResult, r: BatchResult): void {
  total.billed += r.billed;
  total.skipped += r.skipped;
  total.halted.push(...r.halted);
}

/**
 * Bills every tick due by now in one shard of the billing clock. Direct streams go
 * in set-based batches (src/ledger/tickBatch.ts), each its own transaction of at
 * most `rowsMax` ticks, looping until caught up; a stream row another transaction
 * holds (a control, a close) is skipped, not waited for, and billed on the next
 * round. A distribution stream's tick is one transfer per member with carried
 * residuals, so its due ticks are billed one tick per transaction (billTick).
 * Returns the streams the batch halted: their workflows close them.
 */
export async function billDueTicks(pool: Pool, o: BillDueOptions, hooks: BillDueHooks = {}): Promise<BillDueResult> {
  const total: BatchResult = { billed: 0, skipped: 0, halted: [] };
  let caughtUp = false;
  for (let round = 0; round < (o.roundsMax ?? BILLING_ROUNDS_MAX_DEFAULT) && !caughtUp; round++) {
    const { result, locked } = await withTransaction(pool, async (client) => {
      const { rows } = await client.query<LockedStream & { now_ms: string }>({
        name: 'billing-lock-due',
        text: `/* sluice:billing-lock */ select s.*, epoch_ms(s.opened_at)::text as opened_ms, epoch_ms(now())::text as now_ms
                 from streams s
                where s.next_due_ms <= epoch_ms(now()) and s.shard_key % $2 = $1 and s.kind = 'direct'
                order by s.next_due_ms limit $3
                  for update of s skip locked`,
        values: [o.shard, o.shards, o.rowsMax],
      });
      if (rows.length === 0) return { result: { billed: 0, skipped: 0, halted: [] }, locked: 0 };
      return { result: await billDueIn(client, rows, Number(rows[0]!.now_ms), o.rowsMax), locked: rows.length };
    });
    addUp(total, result);
    hooks.onRound?.();
    caughtUp = locked < o.rowsMax && result.billed + result.skipped < o.rowsMax;
  }
  for (const h of await billDueDistributions(pool, o)) total.halted.push(h);
  const { rows } = await pool.query<{ next_due_ms: string | null; now_ms: string }>({
    name: 'billing-next-due',
    text: 'select min(next_due_ms)::text as next_due_ms, epoch_ms(clock_timestamp())::text as now_ms from streams where next_due_ms is not null and shard_key % $2 = $1',
    values: [o.shard, o.shards],
  });
  return { ...total, caughtUp, nowMs: Number(rows[0]!.now_ms), nextDueMs: rows[0]?.next_due_ms == null ? null : Number(rows[0].next_due_ms) };
}

/**
 * A billing session (the clock's activity): bills what is due, and while the next
 * tick is near (BILLING_SESSION_IDLE_MS) sleeps until it in-process and bills again,
 * for up to `sessionMs`. It hands back early when a batch halted a stream (its
 * workflow must close it now) or when the shard goes quiet. The durable timer of the
 * workflow covers the long sleeps; a busy shard does not pay a timer and two
 * workflow tasks between batches, nor wait on a server whose timers run late.
 */
export async function billDueSession(pool: Pool, o: BillDueOptions, hooks: BillDueHooks = {}): Promise<BillDueResult> {
  const endMs = Date.now() + (o.sessionMs ?? 0);
  const total: BatchResult = { billed: 0, skipped: 0, halted: [] };
  for (;;) {
    const r = await billDueTicks(pool, o, hooks);
    addUp(total, r);
    const waitMs = r.nextDueMs === null ? Infinity : r.nextDueMs - r.nowMs;
    if (total.halted.length > 0 || Date.now() >= endMs || waitMs > BILLING_SESSION_IDLE_MS) return { ...r, ...total };
    if (r.caughtUp) await new Promise((resolve) => setTimeout(resolve, Math.min(Math.max(waitMs, 1), BILLING_POLL_MS)));
    hooks.onRound?.();
  }
}

/** The shard's due distribution streams, each tick billed alone in due order; the streams that halted. */
async function billDueDistributions(pool: Pool, o: BillDueOptions): Promise<{ ref: string; reason: HaltReason }[]> {
  const { rows } = await pool.query<{ ref: string; last_tick: number; due_ticks: number; liveness_timeout_ms: number | null; grace_ms: number | null }>({
    name: 'billing-due-distributions',
    text: `select ref, last_tick, liveness_timeout_ms, grace_ms,
                  least($3::bigint, (epoch_ms(now()) - next_due_ms) / tick_interval_ms + 1)::int as due_ticks
             from streams
            where next_due_ms <= epoch_ms(now()) and shard_key % $2 = $1 and kind = 'distribution'
            order by next_due_ms limit $3`,
    values: [o.shard, o.shards, o.rowsMax],
  });
  const halted: { ref: string; reason: HaltReason }[] = [];
  for (const s of rows) {
    const graceMs = effectiveGraceMs({ livenessTimeoutMs: s.liveness_timeout_ms ?? undefined, graceMs: s.grace_ms ?? undefined });
    for (let tick = s.last_tick + 1; tick <= s.last_tick + s.due_ticks; tick++) {
      const reason = await billOneTick(pool, s.ref, tick, graceMs);
      if (reason === 'closed') break;
      if (reason) {
        if (await haltStream(pool, s.ref, reason)) halted.push({ ref: s.ref, reason });
        break;
      }
    }
  }
  return halted;
}

/** One tick billed alone: why the stream must stop after it, 'closed' when it stopped underneath, undefined to go on. */
async function billOneTick(pool: Pool, ref: string, tick: number, graceMs: number | undefined): Promise<HaltReason | 'closed' | undefined> {
  try {
    return haltAfter(await billTick(pool, ref, tick), graceMs);
  } catch (error) {
    // a tick the ledger refuses for good (a member's account that can no longer take money)
    const known = error instanceof SluiceError ? error : sluiceErrorFromDatabase(error);
    if (known && known.code !== 'not_found') return 'tick_refused';
    throw error;
  }
}

/** Marks an open stream halted (no more ticks; its workflow closes it). False when it was closed or halted already. */
export async function haltStream(pool: Pool, ref: string, reason: HaltReason): Promise<boolean> {
  const { rowCount } = await pool.query("update streams set halted_reason = $2 where ref = $1 and status = 'open' and halted_reason is null", [ref, reason]);
  return rowCount === 1;
}
