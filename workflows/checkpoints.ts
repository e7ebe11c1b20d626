import { continueAsNew, proxyActivities, sleep } from '@temporalio/workflow';
import type { Activities } from '../activities';
import { nextUtcMidnight } from '../src/domain/checkpoints';

// a round is one idempotent statement: retried until it commits
const { takeCheckpoints } = proxyActivities<Activities>({
  startToCloseTimeout: '5 minutes',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute' },
});

/** Days before the history is handed to a fresh run. */
export const CHECKPOINT_DAYS_PER_RUN = 30;

/**
 * The debt ledger's daily round (workflow id `checkpoints-<task queue>`, started by
 * the worker): at each UTC midnight, on a durable timer, every entity's live
 * subaccounts are checkpointed at that midnight. The round's time is the timer's, not
 * the activity's, so a retried or late round lands on the same `at` and adds nothing.
 */
export async function checkpointWorkflow(): Promise<never> {
  for (let day = 0; day < CHECKPOINT_DAYS_PER_RUN; day++) {
    const midnight = nextUtcMidnight(Date.now());
    await sleep(midnight - Date.now());
    await takeCheckpoints(new Date(midnight).toISOString());
  }
  return continueAsNew<typeof checkpointWorkflow>();
}
