import type { GrantView, JobWork } from './grants';

/**
 * Sessions (DESIGN §5), the free-tier pool's second path beside jobs: a payer
 * prepays a session balance and sends requests to it. Each request is a grant like a
 * job's (decide(), the tier budgets, the pool's striped reservation), decided on its
 * estimated cost and paid from the session balance at once, then settled on its
 * actual cost (settle()). Ids, keys, limits and shapes live here, pure.
 */

/** Requests one session takes at most: bounds its workflow's history (about a dozen events a request) and its view. */
export const SESSION_REQUESTS_MAX = 500;

/** A session id: a Ref without ':' (it is joined into its requests' job ids), at most 64 characters. */
export const SESSION_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
/** A request id within its session: at most 55 characters, so `session:<session>:<request>` fits a job id (128). */
export const SESSION_REQUEST_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,54}$/;

export const sessionWorkflowId = (sessionId: string) => `session-${sessionId}`;
/** The account that holds a session's balance (owned by Sluice, kind `session`: it moves only through the steps below). */
export const sessionAccountId = (sessionId: string) => `session:${sessionId}`;
/** The grant (job id) of a request: unambiguous, since neither id holds a ':'. */
export const sessionJobId = (sessionId: string, requestId: string) => `session:${sessionId}:${requestId}`;
export const sessionFundKey = (sessionId: string) => `session:${sessionId}:fund`;
export const sessionRefundKey = (sessionId: string) => `session:${sessionId}:refund`;

/** What opens a session: `amount` moves from the payer's account into the session's balance. */
export interface SessionOpening {
  sessionId: string;
  payer: string;
  payerAccountId: string;
  amountUnits: number;
}

/** One request to a session, as the API sends it to the session's workflow. */
export interface SessionRequestTerms {
  requestId: string;
  estimatedCost: number;
  /** Identifies the request's work (the API's default: sha256 of the work). */
  requestHash: string;
  work: JobWork;
}

export const sameRequestTerms = (a: Pick<SessionRequestTerms, 'estimatedCost' | 'requestHash'>, b: Pick<SessionRequestTerms, 'estimatedCost' | 'requestHash'>) =>
  a.estimatedCost === b.estimatedCost && a.requestHash === b.requestHash;

export type SessionStatus = 'open' | 'closed';

export interface SessionTotals {
  /** Requests taken, and how they stand. */
  requests: number;
  running: number;
  settled: number;
  failed: number;
  /** Sum of the requests' estimates. */
  estimated: number;
  /** What the pool absorbed (captured from its reservations). */
  absorbed: number;
  /** What the session balance paid for its requests, net of what settlement gave back. */
  debited: number;
  /** 10% of what was paid, back to the pool. */
  credited: number;
  /** Sum of the settled requests' actual costs. */
  actualCost: number;
}

/** A session as the API and its workflow see it. balance = funded − debited − refunded, always (the auditor checks it). */
export interface SessionView {
  sessionId: string;
  payer: string;
  payerAccountId: string;
  /** The session's balance account (`session:<id>`). */
  accountId: string;
  status: SessionStatus;
  funded: number;
  balance: number;
  debited: number;
  /** Given back to the payer's account at the close. */
  refunded: number;
  totals: SessionTotals;
  createdAt: string;
  closedAt?: string;
  /** Its requests oldest first (the GET's; the workflow's receipt leaves them out). */
  requests?: GrantView[];
}
