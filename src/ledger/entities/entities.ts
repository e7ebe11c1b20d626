import type { Pool, PoolClient, Queryable } from '../../db/pool';
import { withTransaction } from '../../db/pool';
import { creationWorkflowId, LIVE_STATUSES, type Subaccount, type SubaccountStatus } from '../../domain/entities';
import { notFound, SluiceError } from '../../domain/errors';
import { ASSESS_EVERY_MS_DEFAULT, CHALLENGE_MIN_BPS_DEFAULT, type ChallengeRules, type RuleBreach } from '../../domain/challengeRules';
import { createAccount } from '../accounts';
import { appendEvent } from '../events';
import { createParty } from '../parties';
import { pageRows } from '../paging';
import { newWebhookSecret } from './webhookSecrets';

/**
 * Entities and their subaccounts (DESIGN §4): the rows, an entity's registration, the
 * reads of its subaccounts, and its creation limits (the cap and the hourly rate).
 * The creation saga's steps are saga.ts, the rules and elimination elimination.ts,
 * webhook deliveries webhooks.ts, the dashboard dashboard.ts. Creations for one entity
 * are serialised by the entity row's lock (allocateSubaccount, saga.ts), which is what
 * keeps the cap and the id sequence exact under load.
 */

/**
 * An entity's row without its webhook secrets: they are read by signing alone
 * (webhookSecrets.ts), so no other read of an entity carries them.
 */
export interface EntityRow {
  id: string;
  main_account_id: string;
  collateral: number;
  funding: number;
  webhook_urls: string[];
  /** While a rotation's overlap lasts: when the previous secret stops signing (null otherwise). */
  webhook_secret_overlap_until: Date | null;
  challenge_ms: number;
  challenge_min_bps: number;
  max_drawdown_bps: number | null;
  inactivity_ms: number | null;
  assess_every_ms: number;
  subaccount_cap: number | null;
  creations_per_hour: number | null;
  next_seq: number;
  created_at: Date;
}

/** The columns of EntityRow: every column of entities but the secrets (an overlap that has ended reads as none). */
export const ENTITY_COLUMNS = `id, main_account_id, collateral, funding, webhook_urls, challenge_ms, challenge_min_bps, max_drawdown_bps, inactivity_ms,
  assess_every_ms, subaccount_cap, creations_per_hour, next_seq, created_at,
  case when webhook_secret_previous_until > now() then webhook_secret_previous_until end as webhook_secret_overlap_until`;

export interface SubaccountRow {
  id: string;
  entity_id: string;
  seq: number;
  request_id: string;
  /** When its saga began to undo it (a pending slot on its way to `failed`). */
  rolling_back_at: Date | null;
  status: SubaccountStatus;
  account_id: string | null;
  hold_id: number | null;
  funding: number;
  failed_step: string | null;
  failure: string | null;
  created_at: Date;
  activated_at: Date | null;
  ended_at: Date | null;
  high_water_mark: number | null;
  assessed_at: Date | null;
  elimination_rule: RuleBreach | null;
}

export function toSubaccount(r: SubaccountRow): Subaccount {
  const s: Subaccount = { id: r.id, entityId: r.entity_id, seq: r.seq, status: r.status, funding: r.funding, createdAt: r.created_at.toISOString() };
  if (r.account_id) s.accountId = r.account_id;
  if (r.failed_step) s.failedStep = r.failed_step;
  if (r.failure) s.failure = r.failure;
  if (r.activated_at) s.activatedAt = r.activated_at.toISOString();
  if (r.ended_at) s.endedAt = r.ended_at.toISOString();
  if (r.high_water_mark !== null) s.highWaterMark = Number(r.high_water_mark);
  if (r.assessed_at) s.assessedAt = r.assessed_at.toISOString();
  if (r.elimination_rule) s.eliminationRule = r.elimination_rule;
  s.creationWorkflowId = creationWorkflowId(r.entity_id, r.request_id);
  return s;
}

export interface EntityInput {
  id: string;
  name: string;
  collateral: number;
  funding: number;
  webhookUrls: string[];
  challengeMs?: number;
  challengeMinBps?: number;
  /** The other rules (issue 19): each off unless set. */
  maxDrawdownBps?: number;
  inactivityMs?: number;
  /** How often an active subaccount's rules are assessed; 0: only at the end of its challenge. */
  assessEveryMs?: number;
  /** Limits of this entity, overriding the configured defaults. */
  subaccountCap?: number;
  creationsPerHour?: number;
}

/** Registers an entity: its party (API key), its main account and its webhook secret, together. */
export function registerEntity(pool: Pool, input: EntityInput) {
  return withTransaction(pool, async (client) => {
    const party = await createParty(client, { id: input.id, name: input.name });
    const account = await createAccount(client, { id: `${input.id}.main`, ownerId: input.id, kind: 'entity' });
    const webhookSecret = newWebhookSecret();
    await client.query(
      `insert into entities (id, main_account_id, collateral, funding, webhook_urls, webhook_secret, challenge_ms, challenge_min_bps, subaccount_cap, creations_per_hour,
                             max_drawdown_bps, inactivity_ms, assess_every_ms)
       values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
      [input.id, account.id, input.collateral, input.funding, input.webhookUrls, webhookSecret, input.challengeMs ?? 0, input.challengeMinBps ?? CHALLENGE_MIN_BPS_DEFAULT,
       input.subaccountCap ?? null, input.creationsPerHour ?? null, input.maxDrawdownBps ?? null, input.inactivityMs ?? null, input.assessEveryMs ?? ASSESS_EVERY_MS_DEFAULT],
    );
    await appendEvent(client, { type: 'entity.registered', subject: input.id, payload: { entity: input.id, mainAccount: account.id }, parties: [input.id] });
    return { id: input.id, apiKey: party.apiKey, webhookSecret, mainAccountId: account.id };
  });
}

export async function getEntity(db: Queryable, id: string): Promise<EntityRow> {
  const { rows } = await db.query<EntityRow>(`select ${ENTITY_COLUMNS} from entities where id = $1`, [id]);
  if (!rows[0]) throw notFound('entity', id);
  return rows[0];
}

/** An entity's rules as the pure assessment reads them. */
export const rulesOf = (e: EntityRow): ChallengeRules => ({
  minBalanceBps: e.challenge_min_bps,
  ...(e.max_drawdown_bps !== null && { maxDrawdownBps: e.max_drawdown_bps }),
  ...(e.inactivity_ms !== null && { inactivityMs: e.inactivity_ms }),
});

export async function findSubaccount(db: Queryable, id: string, forUpdate = false): Promise<SubaccountRow | undefined> {
  const { rows } = await db.query<SubaccountRow>(`select * from subaccounts where id = $1 ${forUpdate ? 'for update' : ''}`, [id]);
  return rows[0];
}

export async function getSubaccount(db: Queryable, id: string): Promise<Subaccount> {
  const row = await findSubaccount(db, id);
  if (!row) throw notFound('subaccount', id);
  return toSubaccount(row);
}

/** Subaccounts in one page of the list at most. */
export const SUBACCOUNTS_PAGE_MAX = 500;

export async function listSubaccounts(db: Queryable, entityId: string, opts: { after?: number; limit?: number } = {}): Promise<Subaccount[]> {
  const { rows } = await db.query<SubaccountRow>('select * from subaccounts where entity_id = $1 and seq > $2 order by seq limit $3', [
    entityId,
    opts.after ?? 0,
    pageRows(opts.limit, SUBACCOUNTS_PAGE_MAX, 100),
  ]);
  return rows.map(toSubaccount);
}

export interface Limits {
  cap: number;
  perHour: number;
}

/** The refusal of a creation over the hourly limit, with when a slot frees (also the API's Retry-After). */
export const creationsRateLimited = (entityId: string, lastHour: number, perHour: number, retryAfterSeconds: number) =>
  new SluiceError('rate_limited', `entity ${entityId} created ${lastHour} subaccounts in the last hour (limit ${perHour}); the next slot frees in ${retryAfterSeconds} s`, {
    entity: entityId,
    limit: perHour,
    retryAfterSeconds,
  });

/** A slot of a rolled-back creation frees within this (its compensations are quick transactions, retried from 200 ms). */
export const ROLLBACK_RETRY_AFTER_S = 2;

/**
 * The refusal at the cap. Slots of failed creations still being rolled back count (they
 * hold collateral or funding until undone), and the refusal says how many there are
 * and when a retry should find their slots free.
 */
export function capReached(entityId: string, l: Pick<CreationLimits, 'cap' | 'live' | 'rollingBack'>): SluiceError {
  if (l.rollingBack === 0) {
    return new SluiceError('limit_exceeded', `entity ${entityId} has ${l.live} live subaccounts (cap ${l.cap}): eliminate one to free a slot`, { entity: entityId, cap: l.cap, live: l.live, rollingBack: 0 });
  }
  return new SluiceError(
    'limit_exceeded',
    `entity ${entityId} has ${l.live} live subaccounts (cap ${l.cap}), ${l.rollingBack} of them failed creations still being rolled back: retry in ${ROLLBACK_RETRY_AFTER_S} s`,
    { entity: entityId, cap: l.cap, live: l.live, rollingBack: l.rollingBack, retryAfterSeconds: ROLLBACK_RETRY_AFTER_S },
  );
}

/** Where an entity stands against its limits (its own, else the service's defaults). */
export interface CreationLimits {
  cap: number;
  perHour: number;
  live: number;
  lastHour: number;
  /** Seconds until the hourly limit lets one more creation through; 0 below the limit. */
  slotFreesInS: number;
  /** When the hourly limit lets one more creation through (exact, so every read of it agrees); null below the limit. */
  slotFreesAt: Date | null;
  /** Live (pending) slots of failed creations whose sagas are undoing them: each frees its slot within seconds. */
  rollingBack: number;
}

/**
 * An entity's live subaccounts, its creations of the last hour (successful and in
 * flight; failed ones do not count), and when the hourly limit next lets one more
 * through: once the creation that put it at the limit is an hour old. One statement,
 * read by the allocation (under the entity's lock), the entity's view and a refusal's
 * Retry-After alike.
 */
export async function creationLimits(db: Queryable, entity: Pick<EntityRow, 'id' | 'subaccount_cap' | 'creations_per_hour'>, defaults: Limits): Promise<CreationLimits> {
  const perHour = entity.creations_per_hour ?? defaults.perHour;
  const { rows } = await db.query<{ live: number; rolling_back: number; last_hour: number; slot_frees_in_s: number | null; slot_frees_at: Date | null }>(
    `with hour as (
       select created_at from subaccounts where entity_id = $1 and status <> 'failed' and created_at > now() - interval '1 hour')
     select (select count(*)::int from subaccounts where entity_id = $1 and status = any($2)) as live,
            (select count(*)::int from subaccounts where entity_id = $1 and status = 'pending' and rolling_back_at is not null) as rolling_back,
            (select count(*)::int from hour) as last_hour,
            frees.at as slot_frees_at,
            ceil(extract(epoch from frees.at - now()))::int as slot_frees_in_s
       from (select (select h.created_at + interval '1 hour' from hour h order by h.created_at desc offset $3 - 1 limit 1) as at) frees`,
    [entity.id, LIVE_STATUSES, perHour],
  );
  const r = rows[0]!;
  return {
    cap: entity.subaccount_cap ?? defaults.cap,
    perHour,
    live: r.live,
    lastHour: r.last_hour,
    slotFreesInS: r.last_hour >= perHour ? Math.max(1, r.slot_frees_in_s ?? 1) : 0,
    slotFreesAt: r.last_hour >= perHour ? r.slot_frees_at : null,
    rollingBack: r.rolling_back,
  };
}

/** Locks the subaccount and its entity's row data (not the entity lock: only allocation takes that). */
export async function lockSubaccount(client: PoolClient, id: string): Promise<{ sub: SubaccountRow; entity: EntityRow }> {
  const sub = await findSubaccount(client, id, true);
  if (!sub) throw notFound('subaccount', id);
  return { sub, entity: await getEntity(client, sub.entity_id) };
}
