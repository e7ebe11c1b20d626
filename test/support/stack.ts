import type { TierStreamQuotas } from '../../src/domain/streamQuotas';
import { randomBytes } from 'node:crypto';
import type { Client } from '@temporalio/client';
import type { Worker } from '@temporalio/worker';
import { buildApp, type Api } from '../../src/api/app';
import { createLogger, type Logger } from '../../src/logger';
import { BODY_LIMIT_BYTES_DEFAULT } from '../../src/api/limits';
import { connectClient } from '../../src/temporal/connection';
import { setCurrentVersion, type WorkerVersion } from '../../src/temporal/deployments';
import { createWorker } from '../../src/worker';
import type { TierBudgets } from '../../src/ledger/grants';
import type { Fault } from '../../src/domain/faults';
import { createTestDatabase, type TestDatabase, type TestDatabaseOptions } from './db';
import { quietTemporalRuntime } from './temporalRuntime';

/**
 * An answer as a re-sent request must repeat it: its status and body, less what is the
 * request's own (its request id; the headers, with their rate-limit counters).
 */
/**
 * The API's wait on a workflow in tests: long, so a test asserts what a call did, not
 * that it did it within the product's 15 s (two heavy suites side by side on a
 * 2-core machine, 500 streams and 520 creation sagas, took longer and were answered
 * 202). A test of the 202 itself sets its own short wait.
 */
const TEST_API_WAIT_MS = 90_000;

export function sameAnswer(res: { status: number; body: any }): { status: number; body: any } {
  const error = res.body?.error;
  if (!error?.request_id) return { status: res.status, body: res.body };
  const { request_id: _id, ...rest } = error;
  return { status: res.status, body: { ...res.body, error: rest } };
}

export const ADMIN_KEY = 'test-admin-key-0123456789';
/** The token the test API's /metrics takes (SLUICE_METRICS_TOKEN). */
export const METRICS_TOKEN = 'test-metrics-token-0123456789';

export interface TestStack {
  db: TestDatabase;
  client: Client;
  worker: Worker;
  taskQueue: string;
  /** The worker's version (the workerDeployment option), else undefined. */
  workerVersion?: WorkerVersion;
  app: Api;
  stop(): Promise<void>;
}

/**
 * A fresh database, a worker on a task queue of its own on the shared dev server,
 * and the API (driven with `app.inject`, no port). One per test file.
 */
export interface TestStackOptions extends TestDatabaseOptions {
  /** Daily pool budgets per tier for the worker and the API. */
  budgets?: TierBudgets;
  /** Injected saga faults for the worker. */
  faults?: Fault[];
  /** Open streams and the shortest tick per payer tier, for the worker and the API. */
  streamQuotas?: TierStreamQuotas;
  /** Minor units one unit of work costs, for the API. */
  pricePerUnit?: number;
  /** Writes per caller per window (default: the product's, SLUICE_WRITE_RATE_*). */
  writeRate?: { max: number; windowMs: number };
  /** The API's body limit (default: the product's, SLUICE_BODY_LIMIT_BYTES). */
  bodyLimitBytes?: number;
  /** The API's logger (default: errors only, so a 500 in any test says why in the run's output; or TEST_LOG_LEVEL). */
  logger?: Logger;
  /** The Temporal UI base URL the API gives the console. */
  temporalUiUrl?: string;
  /** The worker's reconciler: between two rounds (default: the product's, 10 s). */
  reconcileIntervalMs?: number;
  /** How long the API waits on a workflow before answering 202 (default TEST_API_WAIT_MS). */
  waitMs?: number;
  /** A versioned worker (worker versioning) of this deployment, made current once it polls; default: unversioned. */
  workerDeployment?: string;
}

export async function startTestStack(options: TestStackOptions = {}): Promise<TestStack> {
  const address = process.env.SLUICE_TEST_TEMPORAL_ADDRESS;
  const bundle = process.env.SLUICE_TEST_WORKFLOW_BUNDLE;
  if (!address || !bundle) throw new Error('the jest globalSetup did not start Temporal');
  quietTemporalRuntime();
  const db = await createTestDatabase(options);
  const taskQueue = `test-${randomBytes(4).toString('hex')}`;
  const client = await connectClient(address, 'default');
  const { worker, connection, version } = await createWorker({
    pool: db.runtimePool, address, namespace: 'default', taskQueue, workflowBundlePath: bundle, budgets: options.budgets, faults: options.faults, streamQuotas: options.streamQuotas, reconcileIntervalMs: options.reconcileIntervalMs,
    // no daily debt-ledger round lands in a test's snapshots at midnight (checkpoints.test.ts runs the workflow on a skipped clock)
    dailyCheckpoints: false,
    version: options.workerDeployment ? { deploymentName: options.workerDeployment } : undefined,
  });
  const running = worker.run();
  if (version) await setCurrentVersion(client, version);
  const app = await buildApp({
    pool: db.runtimePool,
    temporal: client,
    taskQueue,
    adminKey: ADMIN_KEY,
    metricsToken: METRICS_TOKEN,
    bodyLimitBytes: options.bodyLimitBytes ?? BODY_LIMIT_BYTES_DEFAULT,
    logger: options.logger ?? createLogger(process.env.TEST_LOG_LEVEL ?? 'error'),
    budgets: options.budgets,
    streamQuotas: options.streamQuotas,
    pricePerUnit: options.pricePerUnit,
    writeRate: options.writeRate,
    temporalUiUrl: options.temporalUiUrl,
    waitMs: options.waitMs ?? TEST_API_WAIT_MS,
  });
  return {
    db,
    client,
    worker,
    taskQueue,
    workerVersion: version,
    app,
    async stop() {
      await app.close();
      // a test may have stopped the worker itself (an outage)
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await running;
      await connection.close();
      await client.connection.close();
      await db.drop();
    },
  };
}

/** A tiny client for the API under test: every call returns status and JSON body. */
export function api(app: Api, key?: string) {
  const call = async (method: 'GET' | 'POST', url: string, payload?: unknown, headers: Record<string, string> = {}) => {
    const res = await app.inject({
      method,
      url,
      payload: payload as never,
      headers: { ...(key ? { authorization: `Bearer ${key}` } : {}), ...headers },
    });
    let body: any;
    try {
      body = res.json();
    } catch {
      body = res.body;
    }
    // the headers ride along unlisted, so a test comparing an answer with toEqual compares status and body
    return Object.defineProperty({ status: res.statusCode, body }, 'headers', { value: res.headers, enumerable: false }) as { status: number; body: any; headers: typeof res.headers };
  };
  return {
    get: (url: string, headers?: Record<string, string>) => call('GET', url, undefined, headers),
    post: (url: string, payload?: unknown, idempotencyKey?: string, headers: Record<string, string> = {}) =>
      call('POST', url, payload, idempotencyKey ? { ...headers, 'idempotency-key': idempotencyKey } : headers),
  };
}
