import type { z } from 'zod';
import type * as S from '../../src/api/schemas';

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

// The shapes the console reads: the API's own zod schemas where they are exported
// (type-only imports, erased by the build: no server code reaches the bundle).
export interface ConsoleConfig {
  temporalUiUrl?: string;
  namespace: string;
  actor: { kind: 'admin' | 'party'; party?: string };
}

export type StreamView = z.infer<typeof S.StreamView>;
export type StreamItem = z.infer<typeof S.StreamReceipt> & Pick<StreamView, 'tickIntervalMs' | 'workflowId'>;
export type PoolState = z.infer<typeof S.PoolState>;
export type Grant = z.infer<typeof S.Grant>;
export type AuditReport = z.infer<typeof S.AuditReport>;

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

export interface Crown {
  from: number;
  to: number;
  crownTime: Record<string, number>;
  intervalCount: number;
  current: { tick: number; holders: string[]; bestRate: number | null };
}
