/**
 * bench:streams' report: everything it measured, as one JSON object or as `name: value`
 * lines (the figures first, then where the time went, the books and the targets).
 */
import type { PgbenchRun } from '../support/pgbench';
import type { Quantiles } from '../support/measure';
import { fixed, type Row } from '../support/report';
import type { CapacityResult } from './capacity';
import type { ClockStats } from './clock';
import type { CpuUse } from './cpu';
import type { Breakdown } from './histories';
import type { LatencyResult } from './latency';
import type { SqlTime } from './sql';
import type { Verification } from './verify';

export interface Report {
  temporalCli: string;
  postgresVersion: string;
  /** The dev server's dynamic config: startDevServer's, then the bench's options. */
  devServerConfig: Record<string, unknown>;
  shards: number;
  rowsMax: number;
  poolSize: number;
  streamsPerPair: number;
  /** Cores busy on the machine in the 2 s before the run (neighbours). */
  machineBusyBeforeCores: number | null;
  capacity?: CapacityResult;
  pgbench?: PgbenchRun;
  ratioTicksPgbench?: number;
  latency?: LatencyResult;
  verification: Verification;
  /** Calls made again after an RPC deadline (an overloaded server), by kind. */
  retriedCalls: Record<string, number>;
  targets: Record<string, { value: number; target: string; met: boolean }>;
}

const msq = (q: Quantiles) => `p50 ${fixed(q.p50, 0)} ms, p99 ${fixed(q.p99, 0)} ms, max ${fixed(q.max, 0)} ms (n=${q.count})`;
const cpuText = (c: CpuUse) =>
  `bench+worker ${fixed(c.worker, 2)}, temporal ${fixed(c.temporal, 2)}, postgres ${fixed(c.postgres, 2)}, others ${fixed(c.others, 2)}; machine ${fixed(c.machine, 2)} of ${c.cores ?? 'n/a'} cores`;
const sqlText = (sql: SqlTime[]) =>
  sql.slice(0, 8).map((q) => `${q.name} ${fixed(q.busy, 2)} (${q.count}x, ${fixed(q.ms / Math.max(1, q.count), 1)} ms)`).join(', ') || 'n/a';
const clockText = (c: ClockStats) =>
  `${c.activities} billDue activities (${c.runs} runs, ${c.timedOut} timed out), exec ${msq(c.execMs)}; ` +
  `shards busy in billDue ${fixed(c.execShare * 100, 0)}% of the window; schedule-to-start p50 ${fixed(c.scheduleToStartMs.p50, 0)} ms p99 ${fixed(c.scheduleToStartMs.p99, 0)} ms; ` +
  `back-to-back gap p50 ${fixed(c.backToBackGapMs.p50, 0)} ms p99 ${fixed(c.backToBackGapMs.p99, 0)} ms (n=${c.backToBackGapMs.count}); ` +
  `timer late p50 ${fixed(c.timerLateMs.p50, 0)} ms p99 ${fixed(c.timerLateMs.p99, 0)} ms (n=${c.timerLateMs.count}); ` +
  `timer/wake → billDue start p50 ${fixed(c.wakeToActivityMs.p50, 0)} ms p99 ${fixed(c.wakeToActivityMs.p99, 0)} ms; billingDue signals ${c.signals}`;
const pathText = (b: Breakdown) => Object.entries(b).map(([k, q]) => `${k} ${fixed(q.p50, 0)}/${fixed(q.p99, 0)}`).join('; ') + ' (ms unless a count, p50/p99)';

export function lines(r: Report): Row[] {
  const out: Row[] = [
    ['temporal cli', r.temporalCli],
    ['postgresql', r.postgresVersion],
    ['dev server dynamic config', JSON.stringify(r.devServerConfig)],
    ['billing clock', `${r.shards} shards, rowsMax ${r.rowsMax}, worker pool ${r.poolSize}, ${r.streamsPerPair} streams per payer/payee pair`],
    ['machine busy before the run', `${fixed(r.machineBusyBeforeCores, 2)} cores (neighbours)`],
  ];
  const c = r.capacity;
  if (c) {
    out.push(
      ['capacity streams', `${c.streams} at ${c.intervalMs} ms (offered ${fixed(c.offeredTicksPerSecond, 0)} ticks/s)`],
      [
        'capacity opened via',
        c.openedVia === 'ledger'
          ? `ledger (src/ledger/streams.ts openStream, ${fixed(c.openSeconds, 1)} s), billing clock workflows only (no stream workflows)`
          : `api (startStreamWorkflow, real stream workflows, ${fixed(c.openSeconds, 1)} s)`,
      ],
      ['capacity window', `${fixed(c.windowSeconds, 1)} s after ${c.warmupSeconds} s of warm-up and a checkpoint; ${c.ticks} ticks billed`],
      ['billed ticks/s', fixed(c.billedTicksPerSecond, 0)],
      ['capacity backlog at window end', `${c.backlogTicks} ticks (${fixed(c.backlogSeconds, 1)} s of offered load): ${c.saturated ? 'saturated (the figure is the capacity)' : 'NOT saturated (the figure is a lower bound: offer more)'}`],
      ['capacity transactions', `${c.transactions} billing transactions wrote ticks, ${fixed(c.ticksPerTransaction, 0)} ticks each; deadlocks ${c.deadlocks}`],
      [
        'capacity clock (wake-up to read)',
        c.clock.activities > 0
          ? clockText(c.clock)
          : 'no billDue ended since the wake-up: each runs up to 20 transactions (BILLING_ROUNDS_MAX_DEFAULT) back to back, longer than this; see the sql line',
      ],
      ['capacity sql (connection-s/s)', sqlText(c.sql)],
      ['capacity contention', `backends waiting on a lock mean ${fixed(c.contention.lockWaitingMean, 2)} max ${c.contention.lockWaitingMax}, active backends mean ${fixed(c.contention.activeBackendsMean, 2)}, pool waiters mean ${fixed(c.contention.poolWaitingMean, 2)}`],
      ['capacity cpu (cores)', cpuText(c.cpu)],
    );
  }
  if (r.pgbench) {
    out.push(['pgbench', `tpcb-like -c ${r.pgbench.clients} -j ${r.pgbench.threads} -T ${r.pgbench.seconds} -s ${r.pgbench.scale}, scratch database, same server`]);
    out.push(['pgbench clients', String(r.pgbench.clients)]);
    out.push(['pgbench tps', fixed(r.pgbench.tps, 0)]);
  }
  if (r.ratioTicksPgbench !== undefined) out.push(['ratio ticks/pgbench', fixed(r.ratioTicksPgbench, 2)]);
  const l = r.latency;
  if (l) {
    out.push(
      ['latency streams', `${l.streams} at ${l.intervalMs} ms, opened through startStreamWorkflow, ${l.openConcurrency} calls in flight`],
      ['stream opens/s', `${fixed(l.opensFirst.perSecond, 1)} (the first ${l.opensFirst.count}; all ${l.opens.count}: ${fixed(l.opens.perSecond, 1)}/s in ${fixed(l.opens.seconds, 1)} s)`],
      ['stream open latency', msq(l.opens.latencyMs)],
      ['bare starts/s', `${fixed(l.bare.perSecond, 1)} (${l.bare.count}: bench/streams/bareTickWorkflow.ts by update-with-start until its no-op tick 1 answered, ${l.openConcurrency} in flight)`],
      ['bare start latency', msq(l.bare.latencyMs)],
      ...(l.plain ? ([['plain workflow.start/s', `${fixed(l.plain.perSecond, 1)} (context: returns before any worker ran; all ${l.plain.count} ticked after ${fixed(l.plain.allTickedSeconds, 1)} s)`]] as Row[]) : []),
      ['ratio opens/bare starts', fixed(l.ratioOpensBare, 2)],
      ['open path', pathText(l.openPath)],
      ['bare start path', pathText(l.barePath)],
      ['clock while opening', `${l.openClock.workflowTasks} workflow tasks, ${l.openClock.signals} billingDue signals (${fixed(l.openClock.workflowTasks / l.opens.count, 2)} tasks per open); ${clockText(l.openClock)}`],
      ['open sql (connection-s/s)', sqlText(l.openSql)],
      ['deadlocks while opening', `${l.openDeadlocks} (retried by withTransaction; a billDue failing 5 times is retried by Temporal)`],
      ['tick lag window', `${fixed(l.window.seconds, 1)} s, ${l.window.ticksDue} ticks due, ${l.window.ticksBilled} billed, ${l.window.notBilledWhenRead} not billed when read`],
      ['tick lag p50', `${fixed(l.lag.p50, 3)} interval`],
      ['tick lag p99', `${fixed(l.lag.p99, 3)} interval`],
      ['tick lag (ms)', msq(l.lagMs)],
      ['cancels', `${l.cancels.count} at ${l.cancels.ratePerSecond}/s (signal, then the result), the other streams billing`],
      ['cancel p50', `${fixed(l.cancel.p50, 3)} interval`],
      ['cancel p99', `${fixed(l.cancel.p99, 3)} interval`],
      ['cancel (ms)', msq(l.cancelMs)],
      ['cancel path', pathText(l.cancelPath)],
      ['latency clock', clockText(l.clock)],
      ['deadlocks in the lag window', String(l.windowDeadlocks)],
      ['latency sql (connection-s/s)', sqlText(l.sql)],
      ['latency cpu (cores)', cpuText(l.cpu)],
    );
  }
  const v = r.verification;
  out.push([
    'books',
    `${v.streams} streams, ${v.streamTicks} ticks; duplicate (stream, tick) ${v.duplicateTicks}; tick transfers ${v.tickTransfers}; billed before due ${v.billedBeforeDue}; due after close ${v.dueAfterClose}; ` +
      `streams disagreeing with their ticks ${v.streamMismatches}; holds disagreeing ${v.holdMismatches}; latency streams left open ${v.openLatencyStreams}; ` +
      `receipts disagreeing ${v.receiptMismatches}; sum of balances ${v.balanceSum}`,
  ]);
  out.push(['calls made again after an RPC deadline', Object.entries(r.retriedCalls).map(([k, n]) => `${k} ${n}`).join(', ') || 'none']);
  out.push(['verified', v.ok ? 'yes' : 'no']);
  for (const [name, t] of Object.entries(r.targets)) out.push([`target ${name}`, `${t.met ? 'met' : 'MISSED'} (${fixed(t.value, 3)}, target ${t.target})`]);
  return out;
}
