import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { devServerSearchAttributeFlags, waitForTemporal } from './connection';

export interface DevServer {
  address: string;
  uiUrl?: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

export interface DevServerOptions {
  cliPath: string;
  port: number;
  namespace?: string;
  /** SQLite file (state survives restarts); omitted: in memory. */
  dbFile?: string;
  /** Web UI port; omitted: headless. */
  uiPort?: number;
  logLevel?: 'debug' | 'info' | 'warn' | 'error';
  inheritOutput?: boolean;
  /** Server dynamic config (`--dynamic-config-value KEY=JSON`), e.g. `{ 'history.timerProcessorMaxTimeShift': '10ms' }`. */
  dynamicConfig?: Record<string, unknown>;
}

/**
 * Timers precise enough for sub-second ticks: the server may otherwise fire a timer
 * up to 1 s late, and the billing clock sleeps on timers (deploy/temporal/dynamicconfig.yaml
 * sets the same for the compose stack).
 */
export const PRECISE_TIMERS = {
  'history.timerProcessorMaxTimeShift': '10ms',
  // the timer and transfer queues are polled at most 20 times a second by default: timers
  // then fire ~60 ms late at p50 and signals wait as long (measured by bench:streams)
  'history.timerProcessorMaxPollRPS': 1000,
  'history.transferProcessorMaxPollRPS': 1000,
};

/**
 * A session takes its requests as updates of its one workflow, many at once. Temporal
 * admits 10 updates in flight per workflow by default and gives the rest back unrun
 * (the API sends them again for a while, then answers 429): 50 lets a session work
 * that many requests at once (deploy/temporal/dynamicconfig.yaml sets the same for the
 * compose stack).
 */
export const UPDATE_LIMITS = {
  'history.maxInFlightUpdates': 50,
};

/** Starts `temporal server start-dev` (with PRECISE_TIMERS and UPDATE_LIMITS unless overridden) and waits until its frontend answers. */
export async function startDevServer(opts: DevServerOptions): Promise<DevServer> {
  const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(opts.port), '--log-level', opts.logLevel ?? 'error'];
  args.push('--namespace', opts.namespace ?? 'default', ...devServerSearchAttributeFlags());
  if (opts.dbFile) {
    mkdirSync(dirname(opts.dbFile), { recursive: true });
    args.push('--db-filename', opts.dbFile);
  }
  for (const [key, value] of Object.entries({ ...PRECISE_TIMERS, ...UPDATE_LIMITS, ...opts.dynamicConfig })) args.push('--dynamic-config-value', `${key}=${JSON.stringify(value)}`);
  if (opts.uiPort) args.push('--ui-port', String(opts.uiPort));
  else args.push('--headless');
  const child = spawn(opts.cliPath, args, { stdio: ['ignore', opts.inheritOutput ? 'inherit' : 'ignore', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const address = `127.0.0.1:${opts.port}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
  };
  try {
    await Promise.race([
      waitForTemporal(address),
      exited.then(() => {
        throw new Error(`temporal server start-dev exited with code ${child.exitCode}`);
      }),
    ]);
  } catch (error) {
    await stop();
    throw error;
  }
  return { address, uiUrl: opts.uiPort ? `http://127.0.0.1:${opts.uiPort}` : undefined, process: child, stop };
}
