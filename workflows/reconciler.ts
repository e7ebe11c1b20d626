import { continueAsNew, proxyActivities, sleep } from '@temporalio/workflow';
import type { Activities } from '../activities';

// A round describes workflows and settles in the ledger: it heartbeats while it runs.
const { reconcileHeldOpen } = proxyActivities<Activities>({
  startToCloseTimeout: '10 minutes',
  heartbeatTimeout: '10 seconds',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds' },
});

export interface ReconcilerInput {
  /** Between two rounds. */
  intervalMs: number;
}

/** Rounds before the history is handed to a fresh run. */
export const RECONCILER_ROUNDS_PER_RUN = 200;

/**
 * The reconciler (workflow id `reconciler-<task queue>`, started by the worker): every
 * `intervalMs` it settles what the ledger holds open for a workflow that is no longer
 * running (src/temporal/reconciler.ts), exactly as that workflow's cancel would.
 */
export async function reconcilerWorkflow(input: ReconcilerInput): Promise<never> {
  for (let round = 0; round < RECONCILER_ROUNDS_PER_RUN; round++) {
    await reconcileHeldOpen();
    await sleep(input.intervalMs);
  }
  return continueAsNew<typeof reconcilerWorkflow>(input);
}
