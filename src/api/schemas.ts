import { z } from 'zod';
import { AMOUNT_UNITS_MAX } from '../domain/money';
import { IDEMPOTENCY_KEY_CHARS_MAX, PAGE_ROWS_DEFAULT, PAGE_ROWS_MAX } from './limits';
import { TIERS } from '../domain/grants';

/** Request and response shapes of the HTTP API; the OpenAPI document is generated from them. */
export const Units = z.number().int().positive().max(AMOUNT_UNITS_MAX).describe('integer minor units');
export const PartyId = z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,62}$/, '1 to 63 lowercase letters, digits and _ . - (starting with a letter or digit)');
export const AccountId = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$/, '1 to 128 letters, digits and _ . : / - (starting with a letter or digit)');
/** A rate board market's id, as migration 021's check has it. */
export const MarketId = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, '1 to 64 lowercase letters, digits and _ . - (starting with a letter or digit)');
export const Ref = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/, '1 to 128 letters, digits and _ . : - (starting with a letter or digit)');
export const Currency = z.string().regex(/^[A-Z]{3,8}$/, '3 to 8 capital letters, such as UNIT or USD');
/** Free text. PostgreSQL text cannot hold a NUL character, so it is refused here instead of failing the insert. */
const Text = z.string().regex(/^[^\u0000]*$/, 'text without NUL characters');
export const Memo = Text.max(500);
export const PartyName = Text.min(1).max(200);

export const IdempotencyHeaders = z.object({
  'idempotency-key': z
    .string()
    .min(1)
    .max(IDEMPOTENCY_KEY_CHARS_MAX)
    .regex(/^[\x21-\x7e]+$/, 'printable ASCII without spaces')
    .describe('the same key with the same request returns the first result'),
});

/**
 * A whole number in a query string, from `min` to `max`: decimal digits only, as path
 * ids are (Number() would also read '0x10', '1e1', ' 1' or '1.0').
 */
export const QueryInt = (min: number, max: number) =>
  z
    .string()
    .regex(/^(0|[1-9][0-9]*)$/, 'a whole number in decimal digits')
    .pipe(z.coerce.number<string>().int().min(min).max(max))
    // the OpenAPI document shows what the caller writes: an integer in this range
    .meta({ type: 'integer', minimum: min, maximum: max });

/**
 * The `limit` of a list route, from its maximum in limits.ts: a larger limit is a 400
 * (never clamped in silence, so a caller never mistakes a short page for the end).
 */
export const PageLimit = (route: keyof typeof PAGE_ROWS_MAX, byDefault: number = Math.min(PAGE_ROWS_DEFAULT, PAGE_ROWS_MAX[route])) =>
  QueryInt(1, PAGE_ROWS_MAX[route]).default(byDefault).describe(`rows in the page, at most ${PAGE_ROWS_MAX[route]} (default ${byDefault})`);
/** A numeric cursor: rows after this id or number. */
export const PageAfter = QueryInt(0, Number.MAX_SAFE_INTEGER).default(0);

export const IdParam = z.object({ id: AccountId });
// decimal digits only: Number() would also read '0x1', ' 1' or '1.0' as hold 1
/** A row's serial id in a path (a hold's, an API key's). */
export const SerialId = z
  .string()
  .regex(/^[1-9][0-9]{0,15}$/, 'a positive decimal integer')
  .pipe(z.coerce.number<string>().int().max(Number.MAX_SAFE_INTEGER));
export const HoldIdParam = z.object({ id: SerialId });
export const RefParam = z.object({ ref: Ref });

export const Account = z.object({
  id: z.string(),
  ownerId: z.string(),
  kind: z.string(),
  currency: z.string(),
  balance: z.number().int(),
  held: z.number().int(),
  available: z.number().int(),
  createdAt: z.string(),
});

export const Transfer = z.object({
  id: z.number().int(),
  key: z.string(),
  kind: z.string(),
  debitAccountId: z.string(),
  creditAccountId: z.string(),
  amount: z.number().int(),
  holdId: z.number().int().optional(),
  paymentRef: z.string().optional(),
  streamRef: z.string().optional(),
  tick: z.number().int().optional(),
  jobId: z.string().optional(),
  subaccountId: z.string().optional(),
  memo: z.string().optional(),
  createdAt: z.string(),
});

export const Hold = z.object({
  id: z.number().int(),
  key: z.string(),
  accountId: z.string(),
  amount: z.number().int(),
  captured: z.number().int(),
  released: z.number().int(),
  remaining: z.number().int(),
  multiCapture: z.boolean(),
  status: z.enum(['open', 'captured', 'released', 'expired']),
  expiresAt: z.string().optional(),
  reference: z.record(z.string(), z.unknown()),
  createdAt: z.string(),
  resolvedAt: z.string().optional(),
});

export const PaymentReceipt = z.object({
  ref: z.string(),
  status: z.literal('CONFIRMED'),
  payer: z.string(),
  payee: z.string(),
  payerAccountId: z.string(),
  payeeAccountId: z.string(),
  amount: z.number().int(),
  refunded: z.number().int(),
  transferId: z.number().int(),
  memo: z.string().optional(),
  paidAt: z.string(),
});

export const RefundReceipt = z.object({
  ref: z.string(),
  refundKey: z.string(),
  amount: z.number().int(),
  refundedTotal: z.number().int(),
  paymentAmount: z.number().int(),
  transferId: z.number().int(),
  refundedAt: z.string(),
});

export const Event = z.object({
  id: z.number().int(),
  type: z.string(),
  subject: z.string(),
  payload: z.record(z.string(), z.unknown()),
  createdAt: z.string(),
});

export const ErrorBody = z.object({
  error: z.object({
    code: z.string().describe('stable, for programs: see doc_url'),
    message: z.string().describe('a sentence for people: what was wrong and what to send instead'),
    details: z.record(z.string(), z.unknown()),
    param: z.string().optional().describe('the field, query parameter, path parameter or header the error is about, where it is one'),
    request_id: z.string().optional().describe('this request, as in the X-Request-Id header and the logs'),
    doc_url: z.string().optional().describe("the code's entry in the error reference (GET /errors)"),
  }),
});

/**
 * The error statuses a route documents. A read is refused for its input (400), its key
 * (401, 403) or what it names (404); only a write can conflict (409) or be refused by
 * the ledger's rules (422). Write routes also get 413 and 429 from the app (app.ts).
 */
export const ReadErrors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody };
export const WriteErrors = { ...ReadErrors, 409: ErrorBody, 422: ErrorBody };

export const StreamReceipt = z.object({
  ref: z.string(),
  status: z.enum(['STREAMING', 'PAUSED', 'CONFIRMED', 'FAILED']).describe('STREAMING: open and billing; PAUSED: open, its clock stopped until a resume; CONFIRMED: closed and settled; FAILED: never opened'),
  kind: z.literal('distribution').optional().describe('left out for a stream to one payee'),
  payer: z.string(),
  payee: z.string().optional().describe("a direct stream's payee (a distribution lists members)"),
  fromAccountId: z.string().optional().describe("the payer's account the stream pays from"),
  toAccountId: z.string().optional().describe("a direct stream's payee account"),
  mode: z.enum(['escrow', 'payg']),
  ratePerTick: z.number().int(),
  maxTotal: z.number().int().optional().describe('left out for an open-ended payg stream'),
  ticks: z.number().int().describe('ticks billed'),
  totalPaid: z.number().int(),
  openedAt: z.string(),
  tickIntervalMs: z.number().int().optional(),
  ticksDue: z.number().int().optional().describe('a closed stream: ticks that came due by its close (pauses excluded); a close bills every one of them that liveness and the money allow'),
  ticksSkipped: z.number().int().optional().describe('ticks that came due but were not charged: a party had been silent for the liveness timeout at the due time'),
  closedAt: z.string().optional(),
  reason: z.string().optional(),
  closedBy: z.string().optional(),
  failure: z.string().optional(),
  openedBy: z.string().optional().describe('the operator that opened the stream for its payer'),
  deposited: z.number().int().optional().describe('added by top-ups (maxTotal grew by as much)'),
  escrowReturned: z.number().int().optional().describe('a closed escrow stream: what its escrow gave back to the payer at the close (maxTotal less what was paid)'),
  pauses: z.array(z.object({ pausedAt: z.string(), resumedAt: z.string().optional(), by: z.string() })).optional(),
  rates: z.array(z.object({ ratePerTick: z.number().int(), fromTick: z.number().int(), at: z.string(), by: z.string(), agreedBy: z.string().optional() })).optional().describe('the rate history, the opening rate first'),
  members: z
    .array(z.object({ accountId: z.string(), party: z.string(), weight: z.number().int(), received: z.number().int(), left: z.boolean().optional() }))
    .optional(),
  proposedRatePerTick: z.number().int().optional().describe('a rate change waiting for the payee'),
  /** Set when the stream was opened to payee "best": who held the crown and who was chosen. */
  route: z
    .object({
      market: z.string().describe('the market whose crown was followed'),
      direction: z.enum(['ask', 'bid']),
      seller: z.string(),
      tick: z.number().int(),
      holders: z.array(z.string()),
      bestRate: z.number().int(),
    })
    .optional(),
});

export const StreamView = StreamReceipt.extend({
  tickIntervalMs: z.number().int(),
  lastTick: z.number().int(),
  nextTickAt: z.string().optional().describe('left out while paused or closed'),
  accruedUnbilled: z.number().int(),
  pausedAt: z.string().optional(),
  depletion: z
    .object({
      ticksLeft: z.number().int().describe('whole ticks the money still pays for at the current rate'),
      at: z.string().optional().describe('when the last of them is due (left out while paused)'),
      limitedBy: z.enum(['escrow', 'balance', 'cap']),
      funds: z.number().int(),
    })
    .optional()
    .describe('when the escrow or the payer\'s available balance runs out (open streams)'),
  workflowId: z.string(),
});

export const AuditReport = z.object({
  ok: z.boolean(),
  checkedAt: z.string(),
  checks: z.array(
    z.object({ name: z.string(), description: z.string(), ok: z.boolean(), violations: z.number().int(), rows: z.array(z.record(z.string(), z.unknown())) }),
  ),
});

export const Tier = z.enum(TIERS);

/** A job's (and a session request's) work. */
export const Work = z.object({
  description: z.string().min(1).max(500).regex(/^[^\u0000]*$/, 'no NUL characters'),
  simulate: z
    .object({
      actualCost: z.number().int().min(0).max(1e15).optional(),
      failTimes: z.union([z.number().int().min(0).max(100), z.literal('always')]).optional(),
      durationMs: z.number().int().min(0).max(60_000).optional(),
    })
    .optional()
    .describe('what the default (simulated) work does: its actual cost, failing attempts, duration'),
});

export const Grant = z.object({
  jobId: z.string(),
  payer: z.string(),
  payerAccountId: z.string(),
  requestHash: z.string(),
  estimatedCost: z.number().int(),
  decision: z.enum(['free', 'partial', 'gate']),
  tier: Tier,
  advisoryAbsorb: z.number().int(),
  status: z.enum(['awaiting_payment', 'reserved', 'settled', 'cancelled', 'failed']),
  day: z.string().optional(),
  reserved: z.number().int(),
  absorbed: z.number().int(),
  returned: z.number().int(),
  paid: z.number().int(),
  refunded: z.number().int(),
  credited: z.number().int(),
  actualCost: z.number().int().optional(),
  failure: z.string().optional(),
  closedBy: z.string().optional().describe('a cancelled or failed job: who ended it (the payer, admin, system, or operator: a Temporal cancellation or the reconciler)'),
  reason: z.string().optional().describe('why: cancelled, payment_timeout, work_failed, settlement_refused, workflow_cancelled, workflow_<status>'),
  sessionId: z.string().optional().describe("a session's request: its session (the grant's jobId is session:<session>:<request>)"),
  requestId: z.string().optional().describe("a session's request: its id within the session"),
  createdAt: z.string(),
  resolvedAt: z.string().optional(),
});

/** 202: accepted, still running past the API's wait (SLUICE_API_WAIT_MS). */
export const StillRunning = z
  .object({
    status: z.literal('PENDING'),
    statusUrl: z.string().describe('where to look; or send the same request again (same ref or key) to wait again'),
    message: z.string(),
  })
  .passthrough();

export const PoolState = z.object({
  accountId: z.string(),
  stripes: z.number().int(),
  balance: z.number().int(),
  held: z.number().int(),
  available: z.number().int(),
  day: z.string(),
  absorbedToday: z.number().int(),
  creditedToday: z.number().int(),
  reservedOpen: z.number().int(),
});
