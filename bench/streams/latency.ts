/**
 * bench:streams' latency phase: bare starts, then streams opened the way the API opens
 * them, the tick lag in a window once all are open, cancels at a steady rate while the
 * others bill on, and where each of those calls spent its time; the other streams are
 * closed after without measuring.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { streamWorkflowId, type StreamReceipt } from '../../src/domain/streams';
import { closeStream } from '../../src/ledger/streams';
import { mapConcurrently, quantiles, type Quantiles, type Rate } from '../support/measure';
import { log } from '../support/runner';
import { bareStarts, callRate, cancelThroughApi, openThroughApi, plainStarts } from './calls';
import { clockStats, type ClockStats } from './clock';
import type { CpuUse } from './cpu';
import { cancelBreakdown, openBreakdown, sample, type Breakdown, type Call } from './histories';
import type { SqlTime } from './sql';
import type { Pair, Stack } from './stack';
import { measuredWindow, type Contention } from './window';

export interface LatencyResult {
  streams: number;
  intervalMs: number;
  openConcurrency: number;
  /** Bare starts, and as many of the first stream opens (rate up to the K-th answer). */
  bare: Rate;
  opensFirst: Rate;
  ratioOpensBare: number;
  /** All the opens. */
  opens: Rate;
  plain?: Rate & { allTickedSeconds: number };
  /** Where an open and a bare start spend their time (a sample of their histories), ms. */
  openPath: Breakdown;
  barePath: Breakdown;
  /** The billing clock's workflow tasks and billingDue signals while the streams opened. */
  openClock: ClockStats;
  /** The worker pool's SQL (and waits for a connection) while the streams opened, connection-seconds per second. */
  openSql: SqlTime[];
  /** Deadlocks PostgreSQL reported to the worker's pool (retried by withTransaction) while the streams opened, and in the window. */
  openDeadlocks: number;
  windowDeadlocks: number;
  window: { seconds: number; ticksDue: number; ticksBilled: number; notBilledWhenRead: number };
  /** billed_at − due_at of the ticks due in the window, as a fraction of the interval (and in ms). */
  lag: Quantiles;
  lagMs: Quantiles;
  cancels: { count: number; ratePerSecond: number };
  /** Cancel signal sent to receipt returned, as a fraction of the interval (and in ms). */
  cancel: Quantiles;
  cancelMs: Quantiles;
  cancelPath: Breakdown;
  clock: ClockStats;
  cpu: CpuUse;
  contention: Contention;
  sql: SqlTime[];
}

/** Histories sampled for the open and bare-start breakdowns. */
const PATH_SAMPLE = 100;

/** The rate of the first k calls of a run that began at `startedAt`: k over the time to the k-th answer. */
function firstRate(calls: Call[], k: number, startedAt: number): Rate {
  const first = [...calls].sort((a, b) => a.doneAt - b.doneAt).slice(0, k);
  return callRate(first, (first[first.length - 1]!.doneAt - startedAt) / 1000);
}

export async function latencyPhase(s: Stack, pairs: Pair[], receipts: Map<string, StreamReceipt>, step: (text: string) => void): Promise<LatencyResult> {
  const { o } = s;
  const n = o.latencyStreams;
  const k = Math.min(o.bareStarts, n);
  const intervalMs = o.latencyIntervalMs;

  step(`bare starts: ${k} update-with-start, ${o.openConcurrency} in flight`);
  await s.monitor.query('checkpoint');
  const bare = await bareStarts(s, k, 'bare');
  log(`bare: ${bare.rate.perSecond.toFixed(1)} starts/s (${k} in ${bare.rate.seconds.toFixed(1)} s)`);
  let plain: (Rate & { allTickedSeconds: number }) | undefined;
  if (o.plainStarts > 0) {
    plain = await plainStarts(s, o.plainStarts);
    log(`plain workflow.start: ${plain.perSecond.toFixed(1)}/s; all ticked after ${plain.allTickedSeconds.toFixed(1)} s`);
  }

  step(`latency: opening ${n} streams at ${intervalMs} ms (startStreamWorkflow, ${o.openConcurrency} in flight)`);
  await s.monitor.query('checkpoint');
  const refs = Array.from({ length: n }, (_, i) => `lat-${s.runId}-${i}`);
  const payerOf = new Map(refs.map((ref, i) => [ref, pairs[i % pairs.length]!.payer]));
  s.sql.start();
  const deadlocksBefore = s.sql.deadlocks;
  const openStartedAt = Date.now();
  const opened = await openThroughApi(s, refs, pairs, intervalMs).finally(() => s.sql.stop());
  const openSql = s.sql.take(opened.rate.seconds);
  const openDeadlocks = s.sql.deadlocks - deadlocksBefore;
  const openClock = await clockStats(s, openStartedAt, Date.now());
  const opensFirst = firstRate(opened.calls, k, openStartedAt);
  log(`opens: ${opened.rate.perSecond.toFixed(1)}/s (${n} in ${opened.rate.seconds.toFixed(1)} s; the first ${k}: ${opensFirst.perSecond.toFixed(1)}/s); settling ${2 * intervalMs} ms`);
  await sleep(2 * intervalMs, undefined, { signal: s.signal });

  step(`latency: tick lag over ${o.latencySeconds} s`);
  const windowDeadlocksBefore = s.sql.deadlocks;
  const w = await measuredWindow(s, o.latencySeconds);
  // the ticks due in the window, read once they should all be billed
  await sleep(Math.max(1000, intervalMs), undefined, { signal: s.signal });
  const windowDeadlocks = s.sql.deadlocks - windowDeadlocksBefore;
  const { rows: lagRows } = await s.monitor.query<{ lag_ms: number }>(
    `select (extract(epoch from billed_at - due_at) * 1000)::float8 as lag_ms from stream_ticks
      where stream_ref = any($1) and tick > 1 and due_at >= to_timestamp($2 / 1000.0) and due_at < to_timestamp($3 / 1000.0)`,
    [refs, w.from, w.to],
  );
  const { rows: openedRows } = await s.monitor.query<{ opened_ms: string; read_ms: number }>(
    `select epoch_ms(opened_at)::text as opened_ms, (extract(epoch from clock_timestamp()) * 1000)::float8 as read_ms from streams where ref = any($1)`,
    [refs],
  );
  // tick k is due at opened + (k − 1) × interval (epoch_ms, as the clock computes it)
  const ticksDue = openedRows.reduce((a, r) => {
    const at = Number(r.opened_ms);
    return a + Math.max(0, Math.ceil((w.to - at) / intervalMs) - Math.max(1, Math.ceil((w.from - at) / intervalMs)));
  }, 0);
  const lagsMs = lagRows.map((r) => r.lag_ms);
  const missing = Math.max(0, ticksDue - lagsMs.length);
  // a tick not billed when read is at least as late as the read
  const readMs = openedRows[0]?.read_ms ?? w.to;
  for (let i = 0; i < missing; i++) lagsMs.push(readMs - w.to);
  const clock = await clockStats(s, w.from, w.to);
  const lagMs = quantiles(lagsMs);
  log(`tick lag p50 ${lagMs.p50.toFixed(0)} ms, p99 ${lagMs.p99.toFixed(0)} ms (${lagRows.length} ticks, ${missing} not billed when read)`);

  step(`latency: cancelling ${o.cancels} streams, ${o.cancelRate}/s`);
  const measured = sample(refs, o.cancels);
  const t0 = performance.now();
  const cancelled = await Promise.all(
    measured.map(async (ref, i) => {
      await sleep(Math.max(0, t0 + (i * 1000) / o.cancelRate - performance.now()));
      return cancelThroughApi(s, ref, payerOf.get(ref)!);
    }),
  );
  for (const [i, c] of cancelled.entries()) receipts.set(measured[i]!, c.receipt);
  const cancelMs = quantiles(cancelled.map((c) => c.call.doneAt - c.call.sentAt));
  log(`cancel p50 ${cancelMs.p50.toFixed(0)} ms, p99 ${cancelMs.p99.toFixed(0)} ms`);

  log('reading histories: where opens, bare starts and cancels spend their time');
  const [openPath, barePath, cancelPath] = await Promise.all([
    openBreakdown(s.client, sample(opened.calls, PATH_SAMPLE), 'openStream'),
    openBreakdown(s.client, sample(bare.calls, PATH_SAMPLE), 'noopTick'),
    cancelBreakdown(s.client, cancelled.map((c) => c.call)),
  ]);

  // cleanup, not measured: the other workflows terminated, their streams closed straight in the ledger
  const rest = refs.filter((r) => !receipts.has(r));
  log(`closing the other ${rest.length} (terminate, then the ledger's closeStream; not measured)`);
  // a termination lost to an RPC deadline leaves a workflow waiting; its stream is closed all the same
  await mapConcurrently(rest, o.openConcurrency, (ref) => s.client.workflow.getHandle(streamWorkflowId(ref)).terminate('bench: cleanup').catch(() => undefined));
  await mapConcurrently(rest, o.poolSize, (ref) => closeStream(s.pool, { ref, reason: 'cancelled', closedBy: payerOf.get(ref)! }));

  const frac = (q: Quantiles): Quantiles => ({ ...q, p50: q.p50 / intervalMs, p99: q.p99 / intervalMs, max: q.max / intervalMs });
  return {
    streams: n,
    intervalMs,
    openConcurrency: o.openConcurrency,
    bare: bare.rate,
    opensFirst,
    ratioOpensBare: opensFirst.perSecond / bare.rate.perSecond,
    opens: opened.rate,
    plain,
    openPath,
    barePath,
    openClock,
    openSql,
    openDeadlocks,
    windowDeadlocks,
    window: { seconds: w.windowSeconds, ticksDue, ticksBilled: lagRows.length, notBilledWhenRead: missing },
    lag: frac(lagMs),
    lagMs,
    cancels: { count: measured.length, ratePerSecond: o.cancelRate },
    cancel: frac(cancelMs),
    cancelMs,
    cancelPath,
    clock,
    cpu: w.cpu,
    contention: w.contention,
    sql: w.sql,
  };
}
