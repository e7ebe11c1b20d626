import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import { createActivities } from '../activities';
import type { Pool } from './db/pool';
import type { WorkRunner } from './jobs/work';
import type { TierBudgets } from './ledger/grants';
import type { Limits } from './ledger/entities';
import type { Fault } from './jobs/faults';
import { sweepExpiredHolds } from './ledger/holds';
import type { Logger } from './logger';
import { BILLING_ROWS_MAX_DEFAULT, BILLING_SHARDS_DEFAULT } from './domain/billing';
import { ensureBillingClocksAt, type BillingClockSettings } from './temporal/billingClock';

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
  /** Injected saga faults (tests and demos). */
  faults?: Fault[];
  /** The billing clock (SLUICE_BILLING_SHARDS, SLUICE_BILLING_ROWS_MAX). */
  billing?: Partial<BillingClockSettings>;
}

export const billingSettings = (deps: Pick<WorkerDeps, 'billing'>): BillingClockSettings => ({
  shards: deps.billing?.shards ?? BILLING_SHARDS_DEFAULT,
  rowsMax: deps.billing?.rowsMax ?? BILLING_ROWS_MAX_DEFAULT,
});

export const WORKFLOWS_PATH = require.resolve('../workflows');

export async function createWorker(deps: WorkerDeps): Promise<{ worker: Worker; connection: NativeConnection }> {
  const connection = await NativeConnection.connect({ address: deps.address });
  const workflowSource: Pick<WorkerOptions, 'workflowBundle' | 'workflowsPath'> = deps.workflowBundlePath
    ? { workflowBundle: { codePath: deps.workflowBundlePath } }
    : { workflowsPath: WORKFLOWS_PATH };
  const worker = await Worker.create({
    connection,
    namespace: deps.namespace,
    taskQueue: deps.taskQueue,
    activities: createActivities({ pool: deps.pool, budgets: deps.budgets, work: deps.work, limits: deps.limits, faults: deps.faults }),
    ...workflowSource,
  });
  // the billing clock's shards run on this task queue: started once, found running after
  await ensureBillingClocksAt(deps.address, deps.namespace, deps.taskQueue, billingSettings(deps));
  return { worker, connection };
}

export const HOLD_SWEEP_INTERVAL_MS = 30_000;

/** Runs a worker until it is shut down (SIGINT/SIGTERM are handled by the SDK). */
export async function runWorker(deps: WorkerDeps, log: Logger): Promise<void> {
  const { worker, connection } = await createWorker(deps);
  // expired holds are released lazily on the next movement; the sweep frees the rest
  // and a billing clock terminated from outside is started again
  const sweep = setInterval(() => {
    sweepExpiredHolds(deps.pool).catch((error) => log.warn({ err: error }, 'hold sweep failed'));
    ensureBillingClocksAt(deps.address, deps.namespace, deps.taskQueue, billingSettings(deps)).catch((error) => log.warn({ err: error }, 'billing clock check failed'));
  }, HOLD_SWEEP_INTERVAL_MS);
  log.info({ taskQueue: deps.taskQueue, namespace: deps.namespace, address: deps.address }, 'worker started');
  try {
    await worker.run();
  } finally {
    clearInterval(sweep);
    await connection.close();
  }
}
