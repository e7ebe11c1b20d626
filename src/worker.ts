import { readFileSync } from 'node:fs';
import { bundleWorkflowCode, NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import { createActivities } from '../activities';
import type { Pool } from './db/pool';
import type { WorkRunner } from './jobs/work';
import type { TierBudgets } from './ledger/grants';
import type { Limits } from './ledger/entities';
import type { Fault } from './domain/faults';
import type { TierStreamQuotas } from './domain/streamQuotas';
import { sweepExpiredHolds } from './ledger/holds';
import { foldCounterDeltas } from './ledger/metricCounters';
import type { Logger } from './logger';
import { BILLING_ROWS_MAX_DEFAULT, BILLING_SHARDS_DEFAULT } from './domain/billing';
import { ensureBillingClocks, type BillingClockSettings } from './temporal/billingClock';
import { connectClient } from './temporal/connection';
import { ensureCheckpoints, ensureReconciler, RECONCILE_INTERVAL_MS_DEFAULT } from './temporal/reconcilerWorkflow';
import type { Client } from '@temporalio/client';
import { promoteCommand, promoteOnStart, versionName, workflowBuildId, type WorkerVersion } from './temporal/deployments';
import { version as PACKAGE_VERSION } from '../package.json';

export interface WorkerDeps {
  pool: Pool;
  address: string;
  namespace: string;
  taskQueue: string;
  /** A pre-built bundle (tests build it once); otherwise the worker bundles workflows/. */
  workflowBundlePath?: string;
  /** Daily pool budgets per tier (config SLUICE_TIER_BUDGETS); default DEFAULT_TIER_BUDGETS. */
  budgets?: TierBudgets;
  /** The jobs' work; default: simulated. */
  work?: WorkRunner;
  /** Subaccount cap and hourly creations per entity. */
  limits?: Limits;
  /** Open streams and the shortest tick per payer tier (config SLUICE_TIER_STREAM_QUOTAS); default DEFAULT_TIER_STREAM_QUOTAS. */
  streamQuotas?: TierStreamQuotas;
  /** Injected saga faults (tests and demos). */
  faults?: Fault[];
  /** The billing clock (SLUICE_BILLING_SHARDS, SLUICE_BILLING_ROWS_MAX). */
  billing?: Partial<BillingClockSettings>;
  /** Between two rounds of the reconciler (SLUICE_RECONCILE_INTERVAL_MS). */
  reconcileIntervalMs?: number;
  /** Start the debt ledger's daily round (default true; a test stack leaves it out, so no round lands mid-test at midnight). */
  dailyCheckpoints?: boolean;
  /**
   * Worker versioning (SLUICE_WORKER_DEPLOYMENT, SLUICE_WORKER_BUILD_ID): the worker polls as this version of
   * the deployment; a build id left out is derived from the workflow bundle. Left out: a deployment named
   * after the task queue (the test stacks and the benches, each on a task queue of its own). Every worker is
   * versioned: the bundle declares each workflow type's versioning behavior (workflows/versioning.ts), and a
   * Temporal server refuses that from an unversioned worker (its workflow tasks time out, one after another).
   */
  version?: { deploymentName: string; buildId?: string };
  /** A development stack: the worker makes its version current as it starts (src/temporal/deployments.ts promoteOnStart). */
  devMode?: boolean;
}

export const billingSettings = (deps: Pick<WorkerDeps, 'billing'>): BillingClockSettings => ({
  shards: deps.billing?.shards ?? BILLING_SHARDS_DEFAULT,
  rowsMax: deps.billing?.rowsMax ?? BILLING_ROWS_MAX_DEFAULT,
});

/** How long a cached workflow's task waits for the worker that cached it (a killed worker: then any other). */
export const STICKY_QUEUE_TIMEOUT = '3 seconds';

export const WORKFLOWS_PATH = require.resolve('../workflows');

export interface CreatedWorker {
  worker: Worker;
  connection: { close(): Promise<void> };
  temporal: Client;
  /** The version it polls as (undefined: unversioned). */
  version?: WorkerVersion;
}

export async function createWorker(deps: WorkerDeps): Promise<CreatedWorker> {
  const native = await NativeConnection.connect({ address: deps.address });
  // the reconciler's activity and the standing workflows' starts talk to Temporal as a client
  const temporal = await connectClient(deps.address, deps.namespace);
  const { workflowSource, version } = await versionedWorkflows({ ...deps, version: deps.version ?? { deploymentName: deps.taskQueue } });
  const worker = await Worker.create({
    connection: native,
    namespace: deps.namespace,
    taskQueue: deps.taskQueue,
    activities: createActivities({ pool: deps.pool, budgets: deps.budgets, work: deps.work, limits: deps.limits, streamQuotas: deps.streamQuotas, faults: deps.faults, temporal, taskQueue: deps.taskQueue }),
    ...workflowSource,
    // a worker killed with workflows cached: their next tasks go to any worker after this, not after 10 s
    stickyQueueScheduleToStartTimeout: STICKY_QUEUE_TIMEOUT,
    // a workflow type's own behavior (workflows/versioning.ts) comes first; PINNED for one that has none
    ...(version && { workerDeploymentOptions: { version, useWorkerVersioning: true, defaultVersioningBehavior: 'PINNED' } }),
  });
  await ensureStandingWorkflows(temporal, deps);
  const connection = {
    async close() {
      await native.close();
      await temporal.connection.close();
    },
  };
  return { worker, connection, temporal, version };
}

/**
 * The workflow code a worker runs and the version it runs as. A derived build id hashes
 * the very code the worker loads, so the worker bundles it here (what Worker.create
 * would otherwise do from workflowsPath).
 */
async function versionedWorkflows(deps: Pick<WorkerDeps, 'workflowBundlePath'> & { version: NonNullable<WorkerDeps['version']> }): Promise<{ workflowSource: Pick<WorkerOptions, 'workflowBundle'>; version: WorkerVersion }> {
  const code = deps.workflowBundlePath ? readFileSync(deps.workflowBundlePath, 'utf8') : (await bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH })).code;
  const buildId = deps.version.buildId ?? workflowBuildId(PACKAGE_VERSION, code);
  return { workflowSource: { workflowBundle: { code } }, version: { deploymentName: deps.version.deploymentName, buildId } };
}

/**
 * The workflows that run for as long as the task queue does: the billing clock's
 * shards, the reconciler and the debt ledger's daily round. Started once; found running after (a start of one
 * already running is a no-op), so one terminated from the UI comes back.
 */
export async function ensureStandingWorkflows(temporal: Client, deps: Pick<WorkerDeps, 'taskQueue' | 'billing' | 'reconcileIntervalMs' | 'dailyCheckpoints'>): Promise<void> {
  await ensureBillingClocks(temporal, deps.taskQueue, billingSettings(deps));
  await ensureReconciler(temporal, deps.taskQueue, deps.reconcileIntervalMs ?? RECONCILE_INTERVAL_MS_DEFAULT);
  if (deps.dailyCheckpoints !== false) await ensureCheckpoints(temporal, deps.taskQueue);
}

export const HOLD_SWEEP_INTERVAL_MS = 30_000;

/** Runs a worker until it is shut down (SIGINT/SIGTERM are handled by the SDK). */
export async function runWorker(deps: WorkerDeps, log: Logger): Promise<void> {
  const { worker, connection, temporal, version } = await createWorker(deps);
  // expired holds are released lazily on the next movement; the sweep frees the rest,
  // folds the metric counters' deltas (so they stay few when nothing scrapes /metrics)
  // and a billing clock or reconciler terminated from outside is started again
  const sweep = setInterval(() => {
    sweepExpiredHolds(deps.pool).catch((error) => log.warn({ err: error }, 'hold sweep failed'));
    foldCounterDeltas(deps.pool).catch((error) => log.warn({ err: error }, 'metric counter fold failed'));
    ensureStandingWorkflows(temporal, deps).catch((error) => log.warn({ err: error }, 'billing clock and reconciler check failed'));
  }, HOLD_SWEEP_INTERVAL_MS);
  log.info({ taskQueue: deps.taskQueue, namespace: deps.namespace, address: deps.address, version: version && versionName(version) }, 'worker started');
  const running = worker.run();
  if (version) announceVersion(temporal, version, deps, log).catch((error) => log.error({ err: error }, 'worker version: could not read or set the current version'));
  try {
    await running;
  } finally {
    clearInterval(sweep);
    await connection.close();
  }
}

/** Once polling: makes the version current where promoteOnStart does, or says how the operator promotes it. */
async function announceVersion(temporal: Client, version: WorkerVersion, deps: Pick<WorkerDeps, 'address' | 'devMode'>, log: Logger): Promise<void> {
  const outcome = await promoteOnStart(temporal, version, deps.devMode ?? false);
  if (typeof outcome === 'string') {
    log.info({ version: versionName(version) }, `worker version ${outcome}: new workflows start on it`);
    return;
  }
  log.warn(
    { version: versionName(version), current: `${version.deploymentName}:${outcome.current}` },
    `worker version is not current: new workflows start on the current version until this one is promoted: ${promoteCommand(version, deps.address)}`,
  );
}
