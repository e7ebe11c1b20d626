import { isErrorCode, SluiceError, sluiceErrorFromDatabase } from '../domain/errors';

/**
 * A business error raised in an activity travels back as a chain
 * WorkflowFailedError → ActivityFailure → ApplicationFailure(type = error code).
 * This walks the cause chain and rebuilds the SluiceError, or returns undefined.
 */
export function sluiceErrorFromTemporal(error: unknown): SluiceError | undefined {
  for (const e of causes(error)) {
    if (e.name === 'ApplicationFailure' && isErrorCode(e.type)) {
      const details = Array.isArray(e.details) && e.details[0] && typeof e.details[0] === 'object' ? e.details[0] : {};
      return new SluiceError(e.type, e.message, details);
    }
  }
  return undefined;
}

/** gRPC status UNAVAILABLE: the server cannot be reached or is shutting down. */
const GRPC_UNAVAILABLE = 14;
/** gRPC status DEADLINE_EXCEEDED: the call's deadline passed before the server answered. */
const GRPC_DEADLINE_EXCEEDED = 4;

/**
 * Temporal could not be reached (restarting, the connection cut) or did not answer
 * within the call's deadline (a server overloaded), after the client's own retries
 * gave up: an outage, not a bug. Every call Sluice makes is keyed (a workflow id, a
 * ref, an idempotency key), so the same request may be sent again. The client's
 * ServiceError (or WorkflowUpdateRPCTimeoutOrCancelledError) carries the gRPC status
 * as its cause.
 */
export function isTemporalUnavailable(error: unknown): boolean {
  for (const e of causes(error)) if ((e.code === GRPC_UNAVAILABLE || e.code === GRPC_DEADLINE_EXCEEDED) && typeof e.details === 'string') return true;
  return false;
}

/** The caller's error inside `error`, whichever layer raised it (a service, an activity across Temporal, a database guard). */
export const asSluiceError = (error: unknown): SluiceError | undefined =>
  error instanceof SluiceError ? error : (sluiceErrorFromTemporal(error) ?? sluiceErrorFromDatabase(error));

/** gRPC status RESOURCE_EXHAUSTED: the server refused the call for a limit it keeps. */
const GRPC_RESOURCE_EXHAUSTED = 8;

/**
 * Temporal gave an update back without running it: refused at the workflow's limit on
 * updates in flight (RESOURCE_EXHAUSTED, 10 by default), or admitted and then aborted
 * before the workflow accepted it (UNAVAILABLE "update was aborted": a workflow task
 * that failed or timed out under load). Either way the workflow never saw it, so the
 * same update may be sent again.
 */
export function updateNotRun(error: unknown): 'limit' | 'aborted' | undefined {
  for (const e of causes(error)) {
    if (e.code === GRPC_RESOURCE_EXHAUSTED) return 'limit';
    if (e.code === GRPC_UNAVAILABLE && /update was aborted/i.test(String(e.details ?? e.message ?? ''))) return 'aborted';
  }
  return undefined;
}

/** An error and its causes, outermost first: the client wraps what the server or an activity said a few levels deep (at most 8 are read). */
function* causes(error: unknown): Generator<any> {
  for (let e: any = error, depth = 0; e && depth < 8; e = e.cause, depth++) yield e;
}
