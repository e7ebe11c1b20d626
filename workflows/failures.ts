import { ActivityFailure, ApplicationFailure } from '@temporalio/workflow';

/** An activity failure the activity itself marked final: a caller's error, not an outage (activities/index.ts). */
export const isFinalRefusal = (error: unknown) => error instanceof ActivityFailure && error.cause instanceof ApplicationFailure && error.cause.nonRetryable;
