import type { Pool, Queryable } from '../../src/db/pool';
import { setTimeout as sleep } from 'node:timers/promises';

/** What the ledger says a (direct) stream billed, tick by tick, and what is wrong with it. */
export interface StreamTickLedger {
  ref: string;
  status: string;
  closeReason: string | null;
  closedAt: Date | null;
  /** Tick numbers billed (stream_ticks), in order. */
  billed: number[];
  /** Tick numbers that came due and were recorded as skipped (a partition). */
  skipped: number[];
  lastTick: number;
  paid: number;
  /** Tick numbers billed more than once (as a tick row or as a transfer). */
  duplicates: number;
  /** Tick numbers in 1..last_tick neither billed nor skipped. */
  missing: number[];
  /** Every departure from "each tick exactly once", in words; empty when the stream is right. */
  problems: string[];
}

/**
 * Reads a direct stream's ticks, tick transfers, skips and row, and checks that
 * every tick 1..last_tick was billed exactly once or recorded as skipped: no tick
 * number twice (neither in stream_ticks nor in transfers), each billed tick one
 * transfer keyed `stream:<ref>:tick:<n>`, none after the close, and the row's
 * totals equal to the sum of its ticks and of its transfers. Read in one snapshot:
 * the stream may still be billing.
 */
export async function streamTickLedger(pool: Pool, ref: string): Promise<StreamTickLedger> {
  const client = await pool.connect();
  try {
    await client.query('begin isolation level repeatable read read only');
    return await readTickLedger(client, ref);
  } finally {
    await client.query('rollback').catch(() => undefined);
    client.release();
  }
}

async function readTickLedger(db: Queryable, ref: string): Promise<StreamTickLedger> {
  const ticks = (await db.query(`select tick, amount, transfer_id from stream_ticks where stream_ref = $1 order by tick`, [ref])).rows;
  const transfers = (
    await db.query(`select id, tick::int as tick, amount, idempotency_key, created_at from transfers where stream_ref = $1 and kind = 'stream_tick' order by tick, id`, [ref])
  ).rows;
  const skipped: number[] = (await db.query(`select tick from stream_skips where stream_ref = $1 order by tick`, [ref])).rows.map((r) => r.tick);
  const row = (await db.query(`select status, close_reason, paid, ticks_billed, last_tick, closed_at from streams where ref = $1`, [ref])).rows[0];
  const problems: string[] = [];
  if (!row) return { ref, status: 'missing', closeReason: null, closedAt: null, billed: [], skipped, lastTick: 0, paid: 0, duplicates: 0, missing: [], problems: [`no stream row ${ref}`] };

  const billed: number[] = ticks.map((t) => t.tick);
  const transferTicks: number[] = transfers.map((t) => t.tick);
  const duplicates = billed.length - new Set(billed).size + (transferTicks.length - new Set(transferTicks).size);
  if (duplicates > 0) problems.push(`${duplicates} tick numbers billed twice`);
  if (transferTicks.join() !== billed.join()) problems.push(`tick transfers [${transferTicks}] are not the billed ticks [${billed}]`);
  if (transfers.map((t) => t.id).join() !== ticks.map((t) => t.transfer_id).join()) problems.push('a tick row does not name its transfer');
  const badKeys = transfers.filter((t) => t.idempotency_key !== `stream:${ref}:tick:${t.tick}`);
  if (badKeys.length > 0) problems.push(`transfers keyed otherwise than by tick: ${badKeys.map((t) => t.idempotency_key).join(', ')}`);

  const seen = new Set([...billed, ...skipped]);
  const last = Math.max(0, ...seen);
  const missing = Array.from({ length: last }, (_, n) => n + 1).filter((n) => !seen.has(n));
  if (missing.length > 0) problems.push(`ticks neither billed nor skipped: ${missing.join(', ')}`);
  if (row.last_tick !== last) problems.push(`last_tick ${row.last_tick}, ticks recorded up to ${last}`);

  const sumTicks = ticks.reduce((a, t) => a + t.amount, 0);
  const sumTransfers = transfers.reduce((a, t) => a + t.amount, 0);
  if (row.paid !== sumTicks || sumTransfers !== sumTicks) problems.push(`paid ${row.paid}, ticks sum ${sumTicks}, transfers sum ${sumTransfers}`);
  if (row.ticks_billed !== ticks.length) problems.push(`ticks_billed ${row.ticks_billed}, ${ticks.length} tick rows`);
  if (row.closed_at) {
    const late = transfers.filter((t) => t.created_at.getTime() > row.closed_at.getTime());
    if (late.length > 0) problems.push(`ticks ${late.map((t) => t.tick)} committed after the close`);
  }
  return { ref, status: row.status, closeReason: row.close_reason, closedAt: row.closed_at, billed, skipped, lastTick: row.last_tick, paid: row.paid, duplicates, missing, problems };
}

/** Each stream's last tick (billed or skipped), from the ledger. */
export async function lastTicks(db: Queryable, refs: string[]): Promise<Map<string, number>> {
  const { rows } = await db.query(`select ref, last_tick from streams where ref = any($1)`, [refs]);
  return new Map(rows.map((r) => [r.ref as string, r.last_tick as number]));
}

export interface UntilBilledOptions {
  /** Named in the timeout's message. */
  what: string;
  timeoutMs: number;
  everyMs: number;
  /** Appended to the timeout's message (a worker's recent output). */
  context: () => string;
  /** A read that fails is read again at the next poll (a test that terminates the database's connections). */
  retryFailedReads?: boolean;
}

/**
 * Polls the ledger until `enough(moved)` holds for the number of `refs` whose last
 * tick went past `since` (workers killed, billing resumed); returns the milliseconds it took.
 */
export async function untilBilled(db: Queryable, refs: string[], since: Map<string, number>, enough: (moved: number) => boolean, o: UntilBilledOptions): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    const now = await (o.retryFailedReads ? lastTicks(db, refs).catch(() => undefined) : lastTicks(db, refs));
    if (now && enough(refs.filter((r) => now.get(r)! > since.get(r)!).length)) return Date.now() - t0;
    if (Date.now() - t0 > o.timeoutMs) throw new Error(`${o.what}: no billing within ${o.timeoutMs} ms; ${o.context()}`);
    await sleep(o.everyMs);
  }
}
