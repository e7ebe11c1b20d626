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
  'payload_too_large',
  'headers_too_large',
  'request_timeout',
  'limit_exceeded',
  'subaccount_not_live',
  'holds_open',
  'invalid_state',
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

/**
 * Database guards that refuse what a caller asked for (a named constraint raised by
 * a trigger or a CHECK), as the typed error they mean. Anything else stays what it
 * is: a database error is a bug or an outage, not the caller's doing.
 */
const CALLER_CONSTRAINTS: Record<string, ErrorCode> = {
  // migration 006: money, holds or streams on a subaccount that is not live
  subaccount_not_live: 'subaccount_not_live',
  // migration 022: a session account moved outside a session's steps; a request to, or a close of, a session that cannot take it
  session_account_moves: 'forbidden',
  session_closed: 'invalid_state',
};

export function sluiceErrorFromDatabase(error: unknown): SluiceError | undefined {
  const e = error as { code?: string; constraint?: string; message?: string; detail?: string } | undefined;
  if (e?.code === '23505' && e.constraint === 'transfer_claims_pkey') return keyClaimedBefore(e);
  const code = e?.code === '23514' && e.constraint ? CALLER_CONSTRAINTS[e.constraint] : undefined;
  return code && new SluiceError(code, e!.message ?? code, { constraint: e!.constraint });
}

/**
 * A transfer's idempotency key is claimed for as long as its transfer is live
 * (migration 031), longer than the request key that answers a replay (which expires,
 * docs/operations.md): a request whose key expired but whose transfer is still live
 * is refused, not posted twice.
 */
function keyClaimedBefore(e: { message?: string; detail?: string }): SluiceError {
  const key = /\(claim\)=\((.*)\) already exists/.exec(e.detail ?? '')?.[1];
  return new SluiceError(
    'idempotency_conflict',
    key ? `idempotency key ${key} was used by an earlier transfer, whose stored answer has expired` : (e.message ?? 'idempotency key used before'),
    { constraint: 'transfer_claims_pkey' },
  );
}
