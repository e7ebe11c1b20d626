/**
 * bench:streams' capacity phase: more streams than the machine can bill, opened
 * straight through the ledger (or through the API), and after a warm-up and a
 * checkpoint the ticks billed in a window, with where the time went.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { billingClockWorkflowId } from '../../src/domain/billing';
import { openStream } from '../../src/ledger/streams';
import { billingDueSignal } from '../../workflows/definitions';
import { mapConcurrently } from '../support/measure';
import { log } from '../support/runner';
import { openThroughApi } from './calls';
import { clockStats, type ClockStats } from './clock';
import type { CpuUse } from './cpu';
import type { SqlTime } from './sql';
import { streamRequest, type Pair, type Stack } from './stack';
import { measuredWindow, type Contention } from './window';

export interface CapacityResult {
  streams: number;
  intervalMs: number;
  offeredTicksPerSecond: number;
  openedVia: 'ledger' | 'api';
  openSeconds: number;
  warmupSeconds: number;
  windowSeconds: number;
  ticks: number;
  billedTicksPerSecond: number;
  /** Ticks due but not billed when the window closed, and as seconds of the offered load. */
  backlogTicks: number;
  backlogSeconds: number;
  saturated: boolean;
  /** Billing transactions that wrote ticks in the window (tick-batch-write statements), and ticks per transaction. */
  transactions: number;
  ticksPerTransaction: number;
  /** Deadlocks PostgreSQL reported to the worker's pool in the window (retried by withTransaction). */
  deadlocks: number;
  clock: ClockStats;
  cpu: CpuUse;
  contention: Contention;
  sql: SqlTime[];
}

export async function capacityPhase(s: Stack, pairs: Pair[], step: (text: string) => void): Promise<CapacityResult> {
  const { o } = s;
  const n = o.capacityStreams;
  const refs = Array.from({ length: n }, (_, i) => `cap-${s.runId}-${i}`);
  step(`capacity: opening ${n} streams at ${o.capacityIntervalMs} ms (${o.capacityOpen === 'ledger' ? 'ledger openStream' : 'startStreamWorkflow'})`);
  const t = performance.now();
  if (o.capacityOpen === 'api') {
    await openThroughApi(s, refs, pairs, o.capacityIntervalMs);
  } else {
    const opened = await mapConcurrently(refs, o.poolSize, (ref, i) => openStream(s.pool, streamRequest(pairs[i % pairs.length]!, ref, o.capacityIntervalMs)));
    const bad = opened.filter((r) => r.status !== 'STREAMING');
    if (bad.length) throw new Error(`${bad.length} stream(s) did not open: ${JSON.stringify(bad[0])}`);
    // no stream workflow signals the clocks: wake each shard as one would
    await Promise.all(
      Array.from({ length: o.shards }, (_, shard) => s.client.workflow.getHandle(billingClockWorkflowId(s.taskQueue, shard, o.shards)).signal(billingDueSignal, Date.now())),
    );
  }
  const openSeconds = (performance.now() - t) / 1000;
  const wokeAt = Date.now();
  log(`capacity: ${n} open after ${openSeconds.toFixed(1)} s; warming up ${o.capacityWarmupSeconds} s`);
  await sleep(o.capacityWarmupSeconds * 1000, undefined, { signal: s.signal });
  await s.monitor.query('checkpoint'); // as pgbench: the window does not pay for the setup's dirty pages

  step(`capacity: billed ticks over ${o.capacitySeconds} s`);
  const deadlocksBefore = s.sql.deadlocks;
  const w = await measuredWindow(s, o.capacitySeconds);
  const windowDeadlocks = s.sql.deadlocks - deadlocksBefore;
  const backlog = async () => {
    const { rows } = await s.monitor.query<{ ticks: string }>(
      `select coalesce(sum(greatest(0, (epoch_ms(now()) - next_due_ms) / tick_interval_ms + 1)), 0)::text as ticks
         from streams where next_due_ms is not null and ref like $1`,
      [`cap-${s.runId}-%`],
    );
    return Number(rows[0]!.ticks);
  };
  const backlogTicks = await backlog();
  // billing transactions that began in the window commit a moment later
  await sleep(2000, undefined, { signal: s.signal });
  const { rows } = await s.monitor.query<{ n: number }>(
    `select count(*)::int as n from stream_ticks where billed_at >= to_timestamp($1 / 1000.0) and billed_at < to_timestamp($2 / 1000.0) and stream_ref like $3`,
    [w.from, w.to, `cap-${s.runId}-%`],
  );
  const ticks = rows[0]!.n;
  const offered = (n * 1000) / o.capacityIntervalMs;
  // a billDue runs up to 20 transactions and may outlast the window (its history shows it once it ends): from the wake-up on
  const clock = await clockStats(s, wokeAt, Date.now());
  log(`capacity: ${(ticks / w.windowSeconds).toFixed(0)} billed ticks/s of ${offered.toFixed(0)} offered; backlog ${backlogTicks} ticks`);
  return {
    streams: n,
    intervalMs: o.capacityIntervalMs,
    offeredTicksPerSecond: offered,
    openedVia: o.capacityOpen,
    openSeconds,
    warmupSeconds: o.capacityWarmupSeconds,
    windowSeconds: w.windowSeconds,
    ticks,
    billedTicksPerSecond: ticks / w.windowSeconds,
    backlogTicks,
    backlogSeconds: backlogTicks / offered,
    // behind by more than a tick interval of the offered load: the clock could not keep up
    saturated: backlogTicks > n,
    deadlocks: windowDeadlocks,
    transactions: w.sql.find((q) => q.name === 'tick-batch-write')?.count ?? 0,
    ticksPerTransaction: ticks / Math.max(1, w.sql.find((q) => q.name === 'tick-batch-write')?.count ?? 0),
    clock,
    cpu: w.cpu,
    contention: w.contention,
    sql: w.sql,
  };
}
