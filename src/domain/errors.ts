/**
 * Errors the caller caused. Each has a stable code; `api/errors.ts` maps each code to
 * exactly one HTTP status, and activities carry the code across Temporal as the
 * ApplicationFailure type, so a workflow failure reaches the client as the same error.
 */
export const ERROR_CODES = [
  'invalid_request',
  'unauthorized',
  'forbidden',
  'not_found',
  'idempotency_conflict',
  'insufficient_funds',
  'hold_closed',
  'hold_expired',
  'amount_exceeds_hold',
  'currency_mismatch',
  'refund_exceeds_payment',
  'payment_conflict',
  'ref_conflict',
  'job_conflict',
  'creation_failed',
  'already_exists',
  'rate_limited',
  'limit_exceeded',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export class SluiceError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'SluiceError';
  }
}

export const isErrorCode = (value: unknown): value is ErrorCode =>
  typeof value === 'string' && (ERROR_CODES as readonly string[]).includes(value);

export const notFound = (what: string, id: string) => new SluiceError('not_found', `${what} ${id} not found`, { [what]: id });
export const forbidden = (message: string) => new SluiceError('forbidden', message);
