import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { Client } from '@temporalio/client';
import { temporal } from '@temporalio/proto';

const ROOT = join(__dirname, '..', '..');
/** A worker start bundles workflows/ (several seconds on this machine kind, more when loaded). */
export const WORKER_START_TIMEOUT_MS = 60_000;

export interface WorkerProcessOptions {
  databaseUrl: string;
  temporalAddress: string;
  taskQueue: string;
  /** Extra environment (SLUICE_SUBACCOUNT_CREATIONS_PER_HOUR…). */
  env?: Record<string, string>;
}

/**
 * `sluice worker` as a separate process, exactly as deployed
 * (`node --import tsx src/cli.ts worker`), so a test can SIGKILL it. Its last output
 * is kept for error messages.
 */
export class WorkerProcess {
  child: ChildProcess | undefined;
  private log = '';
  /** Workers started so far (the first one included). */
  starts = 0;

  constructor(private readonly options: WorkerProcessOptions) {}

  get output(): string {
    return this.log;
  }

  start(): ChildProcess {
    const { databaseUrl, temporalAddress, taskQueue, env } = this.options;
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'worker'], {
      cwd: ROOT,
      env: {
        ...process.env,
        DATABASE_URL: databaseUrl,
        TEMPORAL_ADDRESS: temporalAddress,
        TEMPORAL_NAMESPACE: 'default',
        SLUICE_TASK_QUEUE: taskQueue,
        LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'warn',
        // no daily debt-ledger round lands in a test's snapshots at midnight
        SLUICE_DAILY_CHECKPOINTS: 'false',
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const keep = (chunk: Buffer) => {
      this.log = (this.log + chunk.toString()).slice(-20_000);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    this.child = child;
    this.starts++;
    return child;
  }

  /** SIGKILL: nothing is drained, whatever was in flight is lost with the process. */
  async kill(): Promise<void> {
    const dying = this.child;
    if (!dying) return;
    dying.kill('SIGKILL');
    await exited(dying);
    if (dying.signalCode !== 'SIGKILL') throw new Error(`the worker ended with ${dying.exitCode ?? dying.signalCode} before the SIGKILL:\n${this.log}`);
  }

  /** A graceful stop (the SDK drains on SIGTERM); a worker that hangs is killed. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const force = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exited(child);
    clearTimeout(force);
  }

  /** Until the server has seen this process poll both the workflow and the activity task queue. */
  async untilPolling(client: Client, timeoutMs = WORKER_START_TIMEOUT_MS): Promise<void> {
    const child = this.child!;
    const deadline = Date.now() + timeoutMs;
    const identity = `${child.pid}@`;
    const polling = async (taskQueueType: temporal.api.enums.v1.TaskQueueType) => {
      const res = await client.workflowService.describeTaskQueue({ namespace: 'default', taskQueue: { name: this.options.taskQueue }, taskQueueType });
      return (res.pollers ?? []).some((p) => p.identity?.startsWith(identity));
    };
    const { TASK_QUEUE_TYPE_WORKFLOW, TASK_QUEUE_TYPE_ACTIVITY } = temporal.api.enums.v1.TaskQueueType;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`the worker exited with ${child.exitCode}:\n${this.log}`);
      if ((await polling(TASK_QUEUE_TYPE_WORKFLOW)) && (await polling(TASK_QUEUE_TYPE_ACTIVITY))) return;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`the worker (pid ${child.pid}) did not poll ${this.options.taskQueue} within ${timeoutMs} ms:\n${this.log}`);
  }
}

export function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** Resolves with `promise`, or rejects after `ms` with `context()` (a worker's recent output) in the message. */
export function within<T>(ms: number, promise: Promise<T>, what: string, context: () => string = () => ''): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms\n${context()}`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}
