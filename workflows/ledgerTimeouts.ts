import { ActivityCancellationType } from '@temporalio/workflow';

/**
 * The options of a ledger step (one SQL transaction, idempotent by key). The step
 * heartbeats while it runs (activities/index.ts), so a worker killed mid-step is
 * noticed after the heartbeat timeout and the step retried elsewhere: recovery takes
 * seconds, not the start-to-close timeout, which only bounds a step stuck on a lock
 * while its worker is alive. A cancellation waits for a step in flight to end
 * (committed or not) before the workflow goes on to compensate, so a compensation
 * never runs ahead of the step it undoes.
 */
export const LEDGER_STEP_TIMEOUTS = {
  startToCloseTimeout: '60 seconds',
  heartbeatTimeout: '3 seconds',
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
} as const;
