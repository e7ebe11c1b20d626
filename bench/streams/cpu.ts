/**
 * CPU accounting from Linux's /proc, best effort (elsewhere the figures are n/a): this
 * process (the bench and its worker), the Temporal dev server, the bench database's
 * backends and the whole machine, and from two snapshots the cores each used.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';

const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

function processCpuSeconds(pid: number): number | undefined {
  try {
    // the command name (field 2) may hold spaces: count fields after its closing parenthesis
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS; // utime, stime
  } catch {
    return undefined;
  }
}

function machineCpuSeconds(): { busy: number; total: number } | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const total = line.slice(0, 8).reduce((a, b) => a + b, 0);
    const idle = line[3]! + (line[4] ?? 0); // idle + iowait
    return { busy: (total - idle) / CLOCK_TICKS, total: total / CLOCK_TICKS };
  } catch {
    return undefined;
  }
}

export interface CpuSnapshot {
  worker: number;
  server?: number;
  backends: Map<number, number>;
  machine?: { busy: number; total: number };
}

export async function cpuSnapshot(monitor: pg.Client, database: string, serverPid: number | undefined): Promise<CpuSnapshot> {
  const { rows } = await monitor.query<{ pid: number }>('select pid from pg_stat_activity where datname = $1', [database]);
  const backends = new Map<number, number>();
  for (const { pid } of rows) {
    const sec = processCpuSeconds(pid);
    if (sec !== undefined) backends.set(pid, sec);
  }
  const u = process.cpuUsage();
  return { worker: (u.user + u.system) / 1e6, server: serverPid === undefined ? undefined : processCpuSeconds(serverPid), backends, machine: machineCpuSeconds() };
}

/** Cores used during a window: this process (worker + bench), the dev server, the bench database's backends, the machine, the rest. */
export interface CpuUse {
  worker: number;
  temporal: number | null;
  postgres: number | null;
  machine: number | null;
  others: number | null;
  cores: number | null;
}

export function cpuUse(a: CpuSnapshot, b: CpuSnapshot, seconds: number): CpuUse {
  let pgSeconds = 0;
  for (const [pid, end] of b.backends) pgSeconds += end - (a.backends.get(pid) ?? 0);
  const worker = (b.worker - a.worker) / seconds;
  const temporal = a.server !== undefined && b.server !== undefined ? (b.server - a.server) / seconds : null;
  const postgres = b.backends.size ? pgSeconds / seconds : null;
  const machine = a.machine && b.machine ? (b.machine.busy - a.machine.busy) / seconds : null;
  const cores = a.machine && b.machine ? Math.round((b.machine.total - a.machine.total) / seconds) : null;
  const others = machine !== null ? machine - worker - (temporal ?? 0) - (postgres ?? 0) : null;
  return { worker, temporal, postgres, machine, others, cores };
}

/** Cores the machine kept busy over the next `seconds` (before a run: the neighbours); null where /proc/stat cannot be read. */
export async function machineBusyCores(seconds: number): Promise<number | null> {
  const before = machineCpuSeconds();
  await sleep(seconds * 1000);
  const after = machineCpuSeconds();
  return before && after ? (after.busy - before.busy) / seconds : null;
}
