import pino from 'pino';

export type Logger = pino.Logger;

/**
 * Fields that hold a credential, under the names they have anywhere in Sluice: API
 * keys, the admin key (also as its config variable), entities' webhook secrets (as
 * the API answers them and as the database row has them), the Authorization header.
 */
export const SECRET_FIELDS = ['apiKey', 'adminKey', 'SLUICE_ADMIN_KEY', 'secret', 'webhookSecret', 'webhook_secret', 'password', 'authorization'] as const;
/** How deep in a logged object a secret field is still found (a request's headers are at depth 2). */
const SECRET_DEPTH_MAX = 4;

/** `f`, `*.f`, `*.*.f`… for every secret field: pino's redaction takes explicit paths, not a recursive glob. */
export const REDACT_PATHS = SECRET_FIELDS.flatMap((field) => Array.from({ length: SECRET_DEPTH_MAX + 1 }, (_, depth) => [...Array(depth).fill('*'), field].join('.')));

/**
 * Structured JSON logs. Credentials never reach a log line: a field named like one
 * is censored wherever it appears, up to SECRET_DEPTH_MAX levels deep (request
 * bodies and responses included, if anything logs them). Idempotency keys and refs
 * are not secrets and stay readable. `destination`: where lines go (default stdout;
 * tests pass a buffer).
 */
export function createLogger(level: string, name = 'sluice', destination?: pino.DestinationStream): Logger {
  return pino({ name, level, redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, destination);
}
