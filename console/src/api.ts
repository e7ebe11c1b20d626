/**
 * The API as the console calls it: same origin, every request with the key the
 * operator pasted (kept in sessionStorage, so it goes when the tab closes). The
 * API decides what the key may see; the console only shows what it is given.
 */
const KEY = 'sluice.apiKey';

export const apiKey = () => sessionStorage.getItem(KEY) ?? undefined;
export const setApiKey = (key: string) => sessionStorage.setItem(KEY, key);
export const forgetApiKey = () => sessionStorage.removeItem(KEY);

/** An API error as the API words it ({error: {code, message}}). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export async function get<T>(path: string, key = apiKey()): Promise<T> {
  const res = await fetch(path, { headers: key ? { authorization: `Bearer ${key}` } : {} });
  const body = await res.json().catch(() => undefined);
  if (!res.ok) throw new ApiError(res.status, body?.error?.code ?? 'http_error', body?.error?.message ?? `HTTP ${res.status}`);
  return body as T;
}

// The shapes the console reads (the API's OpenAPI document at /docs has them all).
export interface ConsoleConfig {
  temporalUiUrl?: string;
  namespace: string;
  actor: { kind: 'admin' | 'party'; party?: string };
}

export interface StreamItem {
  ref: string;
  status: 'STREAMING' | 'CONFIRMED' | 'FAILED';
  kind?: 'distribution';
  payer: string;
  payee?: string;
  mode: 'escrow' | 'payg';
  ratePerTick: number;
  maxTotal?: number;
  ticks: number;
  totalPaid: number;
  openedAt: string;
  closedAt?: string;
  reason?: string;
  closedBy?: string;
  failure?: string;
  tickIntervalMs: number;
  workflowId: string;
}

export interface StreamView extends StreamItem {
  lastTick: number;
  nextTickAt?: string;
  accruedUnbilled: number;
  pausedAt?: string;
  depletion?: { ticksLeft: number; at?: string; limitedBy: string; funds: number };
  members?: Array<{ accountId: string; party: string; weight: number; received: number; left?: boolean }>;
}

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

export interface PoolState {
  accountId: string;
  balance: number;
  held: number;
  available: number;
  day: string;
  absorbedToday: number;
  creditedToday: number;
  reservedOpen: number;
}

export interface Crown {
  from: number;
  to: number;
  crownTime: Record<string, number>;
  intervalCount: number;
  current: { tick: number; holders: string[]; bestRate: number | null };
}

export interface AuditReport {
  ok: boolean;
  checkedAt: string;
  checks: Array<{ name: string; description: string; ok: boolean; violations: number }>;
}
