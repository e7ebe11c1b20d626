import type { z } from 'zod';
import type * as S from '../../src/api/schemas';
// the API's own types where the ledger's answers are typed in src/domain (type-only: erased by the build)
export type { EntityListing } from '../../src/domain/entities';
export type { BilledTick } from '../../src/domain/streams';

/**
 * The API as the console calls it: same origin, every request with the key the
 * operator pasted (kept in sessionStorage, so it goes when the tab closes). The
 * API decides what the key may see; the console only shows what it is given.
 */
const KEY = 'sluice.apiKey';

export const apiKey = () => sessionStorage.getItem(KEY) ?? undefined;
export const setApiKey = (key: string) => sessionStorage.setItem(KEY, key);
export const forgetApiKey = () => sessionStorage.removeItem(KEY);

/**
 * An API error as the API words it ({error: {code, message, request_id, doc_url}}): the
 * request id (also the X-Request-Id header) is what the API's logs know the request by.
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly requestId?: string,
    readonly docUrl?: string,
  ) {
    super(message);
  }
}

export async function get<T>(path: string, key = apiKey()): Promise<T> {
  return (await request<T>('GET', path, key)).body;
}

/** A read with its status: a 202 (an open still on its way) is not yet the thing asked for. */
export function read<T>(path: string): Promise<{ status: number; body: T }> {
  return request<T>('GET', path, apiKey());
}

/**
 * A write (a stream control), with the pasted key. The status comes back with the body:
 * a 202 means the API accepted it but answered before it finished (a pause still on its
 * way to the workflow, a rate change waiting for the payee).
 */
export function post<T>(path: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: T }> {
  return request<T>('POST', path, apiKey(), body, headers);
}

async function request<T>(method: 'GET' | 'POST', path: string, key: string | undefined, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(path, {
    method,
    headers: { ...(key && { authorization: `Bearer ${key}` }), ...(body !== undefined && { 'content-type': 'application/json' }), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = await res.json().catch(() => undefined);
  if (!res.ok) {
    const e = answer?.error;
    throw new ApiError(res.status, e?.code ?? 'http_error', e?.message ?? `HTTP ${res.status}`, e?.request_id ?? res.headers.get('x-request-id') ?? undefined, e?.doc_url);
  }
  return { status: res.status, body: answer as T };
}

/**
 * A fresh Idempotency-Key for one confirmed write: a retried request with it is the same
 * write, a second confirmation is a new one. From getRandomValues, not randomUUID, which
 * only exists on https or localhost and the console may be served over plain http.
 */
export function newIdempotencyKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `console-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

// The shapes the console reads: the API's own zod schemas where they are exported
// (type-only imports, erased by the build: no server code reaches the bundle).
export interface ConsoleConfig {
  temporalUiUrl?: string;
  namespace: string;
  actor: { kind: 'admin' | 'party'; party?: string };
}

export type StreamView = z.infer<typeof S.StreamView>;
/** Open: billing (STREAMING) or its clock stopped until a resume (PAUSED); either may still be acted on. */
export const isOpen = (s: Pick<StreamView, 'status'>) => s.status === 'STREAMING' || s.status === 'PAUSED';
export type StreamItem = z.infer<typeof S.StreamReceipt> & Pick<StreamView, 'tickIntervalMs' | 'workflowId'>;
export type PoolState = z.infer<typeof S.PoolState>;
export type Grant = z.infer<typeof S.Grant>;
export type AuditReport = z.infer<typeof S.AuditReport>;
export type Account = z.infer<typeof S.Account>;

export interface Dashboard {
  entity: string;
  statusCounts: Record<string, number>;
  totals: { balance: number; held: number; openStreams: number; paid: number; received: number; mainBalance: number; mainHeld: number; collateralHeld: number };
  subaccounts: Array<{ id: string; seq: number; status: string; accountId?: string; balance: number; held: number; openStreams: number; paid: number; received: number }>;
  nextAfter?: number;
}

export interface Delivery {
  id: number;
  eventKey: string;
  eventType: string;
  url: string;
  attempt: number;
  statusCode?: number;
  ok: boolean;
  error?: string;
  at: string;
}

/** GET /v1/subaccounts/:id: a failed one says at which saga step and why. */
export interface Subaccount {
  id: string;
  entityId: string;
  seq: number;
  status: string;
  failedStep?: string;
  failure?: string;
  createdAt: string;
  endedAt?: string;
  /** Its creation saga's workflow id (`subaccount-create-<entity>/<request id>`). */
  creationWorkflowId?: string;
}


/** GET /v1/entities/:id: its terms and where it stands against its limits. */
export interface Entity {
  id: string;
  mainAccountId: string;
  collateral: number;
  funding: number;
  subaccountCap: number;
  creationsPerHour: number;
  liveSubaccounts: number;
  creationsLastHour: number;
  /** At the hourly limit: when one more creation is let through. */
  nextCreationAt?: string;
}


/** Ticks here are the rate board's (one a second, src/domain/crown.ts), not a stream's. */
export interface Crown {
  market: string;
  direction: 'ask' | 'bid';
  from: number;
  to: number;
  crownTime: Record<string, number>;
  intervalCount: number;
  intervals: CrownInterval[];
  current: { tick: number; holders: string[]; bestRate: number | null };
}

/** An interval of the crown's grid: ticks [start, end) and the times they begin. */
export interface CrownInterval {
  start: number;
  end: number;
  startAt: string;
  endAt: string;
  holders: string[];
  bestRate: number | null;
}

/** GET /v1/crown/timeline: one page of a market's grid. */
export interface CrownTimeline {
  market: string;
  direction: 'ask' | 'bid';
  from: number;
  to: number;
  intervals: CrownInterval[];
  next?: number;
}

/** GET /v1/markets */
export interface Market {
  id: string;
  direction: 'ask' | 'bid';
}
