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

/** How many causes of a logged error are written (Temporal wraps a server's answer a few levels deep). */
const CAUSES_MAX = 8;

/** The fields of an error (or one of its causes) worth a log line, each read defensively: a getter may throw. */
function errorFields(error: unknown): Record<string, string | number> {
  if (!(error instanceof Object)) return { message: String(error) };
  const e = error as Record<string, unknown>;
  const fields: Record<string, string | number> = {};
  const read = (name: string) => {
    try {
      const value = e[name];
      if (typeof value === 'string' || typeof value === 'number') fields[name] = value;
    } catch {
      // a getter that throws says nothing worth a log line
    }
  };
  fields.type = error.constructor?.name ?? 'Object';
  // code and details: a gRPC status and its text, a SQLSTATE; type: a Temporal failure's error code
  for (const name of ['name', 'message', 'code', 'details', 'type', 'stack']) read(name);
  return fields;
}

/**
 * An error as a log line has it: its own fields and its chain of causes, each as plain
 * strings and numbers. Pino's default copies every enumerable property, and the
 * errors of a Temporal client carry handles, connections and gRPC metadata: a graph
 * too tangled to stringify, so a line said only "[unable to serialize]".
 */
export function errorForLog(error: unknown): Record<string, unknown> {
  const causes: Record<string, string | number>[] = [];
  let cause: unknown;
  try {
    cause = (error as { cause?: unknown } | undefined)?.cause;
    for (; cause !== undefined && cause !== null && causes.length < CAUSES_MAX; cause = (cause as { cause?: unknown }).cause) {
      const { stack: _stack, ...fields } = errorFields(cause);
      causes.push(fields);
    }
  } catch {
    // a cause that cannot be read ends the chain
  }
  return { ...errorFields(error), ...(causes.length > 0 && { causes }) };
}

/**
 * Structured JSON logs. Credentials never reach a log line: a field named like one
 * is censored wherever it appears, up to SECRET_DEPTH_MAX levels deep (request
 * bodies and responses included, if anything logs them). Idempotency keys and refs
 * are not secrets and stay readable. An error logged as `err` is written by
 * errorForLog. `destination`: where lines go (default stdout; tests pass a buffer).
 */
export function createLogger(level: string, name = 'sluice', destination?: pino.DestinationStream): Logger {
  return pino({ name, level, redact: { paths: REDACT_PATHS, censor: '[redacted]' }, serializers: { err: errorForLog } }, destination);
}
