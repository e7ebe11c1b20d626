/**
 * The Temporal stack of the benches that run their own (bench:streams,
 * bench:subaccounts): the CLI, an in-memory dev server, the workers and a client on
 * it; how a run is interrupted, how a dying worker or a Ctrl-C ends it, and how
 * everything is stopped again whatever happened.
 */
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, Runtime, type Worker } from '@temporalio/worker';
import { freePort } from '../../src/dev/ports';
import { startDevServer, type DevServer } from '../../src/temporal/devServer';
import { resolveTool, TEMPORAL_CLI } from '../../src/temporal/tools';
import { abortOnInterrupt, log } from './runner';

/**
 * Ctrl-C, a kill or an error outside the run's own awaits aborts the run; cleanup
 * still runs. The SDK's own signal handling is off (shutdownSignals: []) so the order
 * of the shutdown is ours. Calls still in flight after a failure fail as their
 * connection closes, some from timers outside any await: once `stopping()` is
 * called such errors are noted, not fatal, so the database is still dropped.
 */
export function interruptibleRun(): { signal: AbortSignal; stopping(): void } {
  const abort = abortOnInterrupt();
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

/** The Temporal CLI (its path and version), found or installed as `npm run tools` does; the bench cannot run without it. */
export function temporalCli(): { path: string; version: string } {
  const cli = resolveTool(TEMPORAL_CLI);
  if (!cli.path) throw new Error('the Temporal CLI could not be found or installed (try `npm run tools`)');
  return { path: cli.path, version: cli.version };
}

/** If this process dies anyway, the dev server goes with it. */
function killWithThisProcess(devServer: DevServer): void {
  const serverProcess = devServer.process;
  process.once('exit', () => serverProcess.exitCode === null && serverProcess.signalCode === null && serverProcess.kill('SIGKILL'));
}

/** Rejects as soon as the worker stops (a worker that dies mid-run ends the run) or the run is aborted; race the run's body against it. */
function endOfRun(running: Promise<void>, signal: AbortSignal): Promise<never> {
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

interface RunningWorker {
  worker: Worker;
  running: Promise<void>;
  connection: { close(): Promise<void> };
}

/**
 * A bench's own Temporal stack, started piece by piece and stopped in reverse order
 * (workers, the client's connection, the dev server), each step tolerating what
 * failed before it.
 */
export class TemporalStack {
  private devServer?: DevServer;
  private workers: RunningWorker[] = [];
  private ends: Promise<never>[] = [];
  private clientConnection?: Connection;

  constructor(private readonly signal: AbortSignal) {}

  /** An in-memory dev server of our own (startDevServer's dynamic config, then `dynamicConfig`), killed with this process. */
  async startDevServer(cli: { path: string; version: string }, dynamicConfig?: Record<string, unknown>): Promise<DevServer> {
    log(`starting an in-memory Temporal dev server (${cli.version})`);
    this.devServer = await startDevServer({ cliPath: cli.path, port: await freePort(), dynamicConfig });
    killWithThisProcess(this.devServer);
    this.signal.throwIfAborted();
    return this.devServer;
  }

  /** Runs `worker` until the stack stops; if it stops before, the run ends (see `untilEnded`). */
  run(worker: Worker, connection: { close(): Promise<void> }): void {
    const running = worker.run();
    this.workers.push({ worker, running, connection });
    this.ends.push(endOfRun(running, this.signal));
  }

  /** A client of the dev server. */
  async connectClient(namespace: string): Promise<Client> {
    this.clientConnection = await Connection.connect({ address: this.devServer!.address });
    return new Client({ connection: this.clientConnection, namespace });
  }

  /** The run's body, ended early if a worker stops or the run is aborted (then everything is to be stopped). */
  untilEnded<T>(body: Promise<T>): Promise<T> {
    return Promise.race([body, ...this.ends]).catch((error: unknown) => {
      log(`failed: ${error instanceof Error ? error.message : String(error)}; stopping everything`);
      throw error;
    });
  }

  /** Stops the workers, in the order they started; the dev server stays (its histories can still be read). */
  async stopWorkers(): Promise<void> {
    for (const { worker, running, connection } of this.workers.splice(0)) {
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await running.catch(() => undefined);
      await connection.close().catch(() => undefined);
    }
  }

  /** Stops whatever is still running. */
  async stop(): Promise<void> {
    await this.stopWorkers();
    await this.clientConnection?.close().catch(() => undefined);
    await this.devServer?.stop();
  }
}
