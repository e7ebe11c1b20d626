/**
 * A measured window of bench:streams: the database's clock at both ends (opened_at,
 * due_at and billed_at are on it), the cores each part used, the lock and pool
 * waits sampled through it, and the worker's SQL time.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import type { Pool } from '../../src/db/pool';
import { cpuSnapshot, cpuUse } from './cpu';
import type { Stack } from './stack';

/** Samples the pool's wait queue and the database's lock waits while a window is open. */
function startSampler(pool: Pool, monitor: pg.Client, database: string, everyMs = 250) {
  const poolWaiting: number[] = [];
  const lockWaiting: number[] = [];
  const active: number[] = [];
  let stopped = false;
  const done = (async () => {
    while (!stopped) {
      poolWaiting.push(pool.waitingCount);
      const { rows } = await monitor.query<{ lock: number; active: number }>(
        `select count(*) filter (where wait_event_type = 'Lock')::int as lock,
                count(*) filter (where state = 'active')::int as active
           from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()`,
        [database],
      );
      lockWaiting.push(rows[0]!.lock);
      active.push(rows[0]!.active);
      await sleep(everyMs);
    }
  })().catch(() => undefined); // diagnostics only: a failed sample ends the sampling, not the run
  const mean = (v: number[]) => (v.length ? v.reduce((a, b) => a + b, 0) / v.length : Number.NaN);
  return async () => {
    stopped = true;
    await done;
    return {
      poolWaitingMean: mean(poolWaiting),
      lockWaitingMean: mean(lockWaiting),
      lockWaitingMax: Math.max(0, ...lockWaiting),
      activeBackendsMean: mean(active),
    };
  };
}
export type Contention = Awaited<ReturnType<ReturnType<typeof startSampler>>>;

/** The database's clock (opened_at, due_at and billed_at are on it), in ms. */
export async function dbNowMs(monitor: pg.Client): Promise<number> {
  const { rows } = await monitor.query<{ ms: number }>('select (extract(epoch from clock_timestamp()) * 1000)::float8 as ms');
  return rows[0]!.ms;
}

/** A measured window: clocks (database) at both ends, CPU, contention and SQL time. */
export async function measuredWindow(s: Stack, seconds: number) {
  const cpuFrom = await cpuSnapshot(s.monitor, s.database, s.serverPid);
  const stopSampler = startSampler(s.pool, s.monitor, s.database);
  const from = await dbNowMs(s.monitor);
  s.sql.start();
  let contention: Contention;
  try {
    await sleep(seconds * 1000, undefined, { signal: s.signal });
  } finally {
    s.sql.stop();
    contention = await stopSampler();
  }
  const to = await dbNowMs(s.monitor);
  const windowSeconds = (to - from) / 1000;
  const cpu = cpuUse(cpuFrom, await cpuSnapshot(s.monitor, s.database, s.serverPid), windowSeconds);
  return { from, to, windowSeconds, cpu, contention, sql: s.sql.take(windowSeconds) };
}
