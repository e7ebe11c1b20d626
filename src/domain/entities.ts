/**
 * Entities and subaccounts: the pure rules (DESIGN §4). No I/O.
 */
import type { RuleBreach } from './challengeRules';

/** `<entity>/<n>`: entity ids are party ids, which cannot contain it, so a subaccount id parses one way. */
export const SUBACCOUNT_SEPARATOR = '/';

export const subaccountId = (entityId: string, seq: number) => `${entityId}${SUBACCOUNT_SEPARATOR}${seq}`;

export function parseSubaccountId(id: string): { entityId: string; seq: number } | undefined {
  const at = id.lastIndexOf(SUBACCOUNT_SEPARATOR);
  if (at <= 0) return undefined;
  const seq = Number(id.slice(at + 1));
  if (!Number.isSafeInteger(seq) || seq < 1 || String(seq) !== id.slice(at + 1)) return undefined;
  return { entityId: id.slice(0, at), seq };
}

export const SUBACCOUNT_CAP_DEFAULT = 500;
export const CREATIONS_PER_HOUR_DEFAULT = 10;

export type SubaccountStatus = 'pending' | 'challenge' | 'active' | 'eliminating' | 'failed' | 'eliminated';
export const SUBACCOUNT_STATUSES: readonly SubaccountStatus[] = ['pending', 'challenge', 'active', 'eliminating', 'failed', 'eliminated'];
/** Statuses that occupy one of the entity's slots (an `eliminating` one frees it when it is `eliminated`). */
export const LIVE_STATUSES: SubaccountStatus[] = ['pending', 'challenge', 'active', 'eliminating'];
/** Statuses a subaccount never leaves: it holds nothing, and its account takes no more money. */
export const ENDED_STATUSES: SubaccountStatus[] = ['failed', 'eliminated'];
export const isEnded = (status: SubaccountStatus) => ENDED_STATUSES.includes(status);

/** The steps of the creation saga, in order; fault injection names them. */
export const SAGA_STEPS = ['allocate', 'hold_collateral', 'fund', 'activate'] as const;
export type SagaStep = (typeof SAGA_STEPS)[number];
/** The creation saga's compensations, in the order they run (the reverse of their steps); the saga reports them by these names. */
export const CREATION_COMPENSATIONS = ['unfund', 'release_collateral', 'mark_failed'] as const;
/** The elimination's steps, each retried until it commits (no compensation: it only moves forward). */
export const ELIMINATION_STEPS = ['begin_elimination', 'close_streams', 'settle_elimination'] as const;

/** The challenge rule: a subaccount stays if its balance is at least `minBps`/10,000 of its funding (integer arithmetic). */
export const passesChallenge = (balance: number, funding: number, minBps: number) => balance * 10_000 >= funding * minBps;

export const collateralKey = (sub: string) => `sub:${sub}:collateral`;
export const collateralReleaseKey = (sub: string) => `sub:${sub}:collateral-release`;
export const fundKey = (sub: string) => `sub:${sub}:fund`;
export const unfundKey = (sub: string) => `sub:${sub}:unfund`;
export const sweepKey = (sub: string) => `sub:${sub}:sweep`;

/**
 * Workflow ids: a fixed prefix (none a prefix of another), then the entity id, the
 * separator (which entity ids cannot contain) and the rest, so each id reads back
 * one way: `-` would not do, entity ids may contain it (`a-b` + `c` = `a` + `b-c`).
 */
export const creationWorkflowId = (entityId: string, requestId: string) => `subaccount-create-${entityId}${SUBACCOUNT_SEPARATOR}${requestId}`;
export const lifecycleWorkflowId = (sub: string) => `subaccount-challenge-${sub}`;
export const eliminationWorkflowId = (sub: string) => `subaccount-eliminate-${sub}`;
/** One delivery workflow per event: an event announced twice (a retried step, a replayed run) is delivered once. */
export const webhookWorkflowId = (eventKey: string) => `webhook-${eventKey}`;
/** Each subaccount event happens at most once per subaccount, so its type and subaccount name it. */
export const subaccountEventKey = (type: SubaccountEvent['type'], sub: string) => `${type}:${sub}`;

export interface Subaccount {
  id: string;
  entityId: string;
  seq: number;
  status: SubaccountStatus;
  accountId?: string;
  funding: number;
  failedStep?: string;
  failure?: string;
  createdAt: string;
  activatedAt?: string;
  endedAt?: string;
  /** The creation saga's workflow id, to find it in the Temporal UI. */
  creationWorkflowId?: string;
  /** The high-water mark of its balance as last assessed (at least its funding), and when. */
  highWaterMark?: number;
  assessedAt?: string;
  /** The rule that fired, with its figures: why it was eliminated (or is being). */
  eliminationRule?: RuleBreach;
}

/** What a creation saga reports: the subaccount, or the failure and what was rolled back. */
export interface CreationResult {
  subaccount?: Subaccount;
  failedStep?: SagaStep;
  error?: { code: string; message: string };
  compensated: string[];
}

/** A subaccount event, as webhooks receive it. */
export interface SubaccountEvent {
  key: string;
  type: 'subaccount.active' | 'subaccount.challenge' | 'subaccount.failed' | 'subaccount.eliminated';
  entityId: string;
  subaccount: Subaccount;
  at: string;
}

/** An entity as the admin's list (GET /v1/entities) shows it. */
export interface EntityListing {
  id: string;
  name: string;
  mainAccountId: string;
  liveSubaccounts: number;
  createdAt: string;
}
