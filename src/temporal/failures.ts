import { isErrorCode, SluiceError, sluiceErrorFromDatabase } from '../domain/errors';

/**
 * A business error raised in an activity travels back as a chain
 * WorkflowFailedError → ActivityFailure → ApplicationFailure(type = error code).
 * This walks the cause chain and rebuilds the SluiceError, or returns undefined.
 */
export function sluiceErrorFromTemporal(error: unknown): SluiceError | undefined {
  for (let e: any = error, depth = 0; e && depth < 8; e = e.cause, depth++) {
    if (e.name === 'ApplicationFailure' && isErrorCode(e.type)) {
      const details = Array.isArray(e.details) && e.details[0] && typeof e.details[0] === 'object' ? e.details[0] : {};
      return new SluiceError(e.type, e.message, details);
    }
  }
  return undefined;
}

/** gRPC status UNAVAILABLE: the server cannot be reached or is shutting down. */
const GRPC_UNAVAILABLE = 14;

/**
 * Temporal could not be reached (restarting, the connection cut), after the
 * client's own retries gave up: an outage. The client's ServiceError carries the
 * gRPC status as its cause.
 */
export function isTemporalUnavailable(error: unknown): boolean {
  for (let e: any = error, depth = 0; e && depth < 8; e = e.cause, depth++) {
    if (e.code === GRPC_UNAVAILABLE && typeof e.details === 'string') return true;
  }
  return false;
}

/** The caller's error inside `error`, whichever layer raised it (a service, an activity across Temporal, a database guard). */
export const asSluiceError = (error: unknown): SluiceError | undefined =>
  error instanceof SluiceError ? error : (sluiceErrorFromTemporal(error) ?? sluiceErrorFromDatabase(error));
