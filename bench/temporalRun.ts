/**
 * What the benches that run their own Temporal stack (bench:streams,
 * bench:subaccounts) share: how a run is interrupted, how a dying worker or a
 * Ctrl-C ends it, and how everything is stopped again whatever happened.
 */
import type { Connection } from '@temporalio/client';
import { DefaultLogger, Runtime, type Worker } from '@temporalio/worker';
import type { DevServer } from '../src/temporal/devServer';
import { log } from './support';

/**
 * Ctrl-C, a kill or an error outside the run's own awaits aborts the run; cleanup
 * still runs. The SDK's own signal handling is off (shutdownSignals: []) so the order
 * of the shutdown is ours. Calls still in flight after a failure fail as their
 * connection closes, some from timers outside any await: once `stopping()` is
 * called such errors are noted, not fatal, so the database is still dropped.
 */
export function interruptibleRun(): { signal: AbortSignal; stopping(): void } {
  const abort = new AbortController();
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => abort.abort(new Error(`interrupted (${sig})`)));
  Runtime.install({
    logger: new DefaultLogger('WARN'),
    telemetryOptions: { logging: { filter: { core: 'WARN', other: 'WARN' }, forward: {} } },
    shutdownSignals: [],
  });
  let closing = false;
  const duringCleanup = (error: unknown) => {
    if (closing) {
      log(`ignored while stopping: ${error instanceof Error ? error.message : String(error)}`);
      return;
    }
    // not ours to ignore: end the run the way an interrupt does (it still cleans up)
    abort.abort(error instanceof Error ? error : new Error(String(error)));
  };
  process.on('uncaughtException', duringCleanup);
  process.on('unhandledRejection', duringCleanup);
  return {
    signal: abort.signal,
    stopping: () => {
      closing = true;
    },
  };
}

/** If this process dies anyway, the dev server goes with it. */
export function killWithThisProcess(devServer: DevServer): void {
  const serverProcess = devServer.process;
  process.once('exit', () => serverProcess.exitCode === null && serverProcess.signalCode === null && serverProcess.kill('SIGKILL'));
}

/** Rejects as soon as the worker stops (a worker that dies mid-run ends the run) or the run is aborted; race the run's body against it. */
export function endOfRun(running: Promise<void>, signal: AbortSignal): Promise<never> {
  const workerDown = running.then(
    () => {
      throw new Error('the worker stopped');
    },
    (error: unknown) => {
      throw error;
    },
  );
  const aborted = new Promise<never>((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
  const ended = Promise.race([workerDown, aborted]);
  ended.catch(() => undefined);
  return ended;
}

/** Stops what was started, in reverse order, each step tolerating what failed before it. */
export async function stopTemporal(parts: {
  worker?: Worker;
  running?: Promise<void>;
  workerConnection?: { close(): Promise<void> };
  clientConnection?: Connection;
  devServer?: DevServer;
}): Promise<void> {
  if (parts.worker && parts.running) {
    if (parts.worker.getState() === 'RUNNING') parts.worker.shutdown();
    await parts.running.catch(() => undefined);
  }
  await parts.workerConnection?.close().catch(() => undefined);
  await parts.clientConnection?.close().catch(() => undefined);
  await parts.devServer?.stop();
}
