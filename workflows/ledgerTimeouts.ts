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

/**
 * A ledger step retried until it commits (it is idempotent by key): quickly at first,
 * then every 10 s at most, never given up on. Used by every workflow's ledger steps.
 */
export const LEDGER_STEP_OPTIONS = {
  ...LEDGER_STEP_TIMEOUTS,
  retry: { initialInterval: '200 milliseconds', backoffCoefficient: 2, maximumInterval: '10 seconds' },
} as const;

/** Attempts of a grant's work (a job's or a session request's) before it fails and compensates. */
export const WORK_ATTEMPTS_MAX = 3;

/** The work of a grant: it heartbeats, so a worker that dies mid-work costs seconds (and one attempt), not the ten minutes. */
export const GRANT_WORK_OPTIONS = {
  startToCloseTimeout: '10 minutes',
  heartbeatTimeout: '5 seconds',
  retry: { initialInterval: '200 milliseconds', backoffCoefficient: 2, maximumAttempts: WORK_ATTEMPTS_MAX },
} as const;

