import { randomBytes } from 'node:crypto';
import type { Pool, PoolClient, Queryable } from '../../db/pool';
import { withTransaction } from '../../db/pool';
import {
  collateralKey,
  collateralReleaseKey,
  creationWorkflowId,
  fundKey,
  LIVE_STATUSES,
  passesChallenge,
  subaccountId,
  SUBACCOUNT_STATUSES,
  sweepKey,
  unfundKey,
  type SagaStep,
  type Subaccount,
  type SubaccountStatus,
} from '../../domain/entities';
import { notFound, SluiceError } from '../../domain/errors';
import {
  ASSESS_EVERY_MS_DEFAULT,
  assessRules,
  CHALLENGE_MIN_BPS_DEFAULT,
  nextHighWaterMark,
  type ChallengeRules,
  type RuleBreach,
} from '../../domain/challengeRules';
import { BUMP_COUNTER_SQL, bumpCounter } from '../metricCounters';
import { createAccount, getAccount, lockAccounts } from '../accounts';
import { appendEvent } from '../events';
import { subaccountFigures } from '../subaccountFigures';
import { placeHoldIn, releaseHoldIfOpen } from '../holds';
import { createParty } from '../parties';
import { postTransfer } from '../transfers';
import { pageRows } from '../paging';
import { readTail } from '../tails';

/**
 * Entities and their subaccounts (DESIGN §4): each function is one transaction,
 * idempotent by the subaccount id, so a retried saga step finds its work done.
 * Creations for one entity are serialised by the entity row's lock (allocate),
 * which is what keeps the cap and the id sequence exact under load.
 */
export interface EntityRow {
  id: string;
  main_account_id: string;
  collateral: number;
  funding: number;
  webhook_urls: string[];
  webhook_secret: string;
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

interface SubaccountRow {
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
    const webhookSecret = `whsec_${randomBytes(24).toString('base64url')}`;
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
  const { rows } = await db.query<EntityRow>('select * from entities where id = $1', [id]);
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

/** Where an entity stands against its limits (its own, else the service's defaults). */
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

/**
 * Saga step 1: under the entity's row lock, checks the hourly rate (successful
 * and in-flight creations of the last hour; failed ones do not count) and the cap
 * (live subaccounts), then takes the next number. The same request gets its slot back.
 */
export function allocateSubaccount(pool: Pool, input: { entityId: string; requestId: string; limits: Limits }): Promise<Subaccount> {
  return withTransaction(pool, async (client) => {
    const { rows: er } = await client.query<EntityRow>('select * from entities where id = $1 for no key update', [input.entityId]);
    const entity = er[0];
    if (!entity) throw notFound('entity', input.entityId);
    // the request id is the entity's own: another entity's request of the same id is another request
    const { rows: mine } = await client.query<SubaccountRow>('select * from subaccounts where entity_id = $1 and request_id = $2', [
      input.entityId,
      input.requestId,
    ]);
    if (mine[0]) return toSubaccount(mine[0]);
    const limits = await creationLimits(client, entity, input.limits);
    const { perHour, lastHour, slotFreesInS } = limits;
    if (lastHour >= perHour) throw creationsRateLimited(input.entityId, lastHour, perHour, slotFreesInS);
    if (limits.live >= limits.cap) throw capReached(input.entityId, limits);
    // a main account that cannot cover the collateral and the funding is refused here,
    // before a number is taken or anything held (the hold and the funding still check
    // it under their own locks: this read is not a reservation)
    const { rows: main } = await client.query<{ available: string }>('select balance - held as available from accounts where id = $1', [entity.main_account_id]);
    const needed = Number(entity.collateral) + Number(entity.funding);
    const available = Number(main[0]!.available);
    if (available < needed) {
      throw new SluiceError(
        'insufficient_funds',
        `entity ${entity.id}'s main account ${entity.main_account_id} has ${available} available; a subaccount needs ${entity.collateral} collateral + ${entity.funding} funding = ${needed}: deposit ${needed - available} more`,
        { entity: entity.id, account: entity.main_account_id, available, required: needed },
      );
    }
    const seq = entity.next_seq;
    await client.query('update entities set next_seq = next_seq + 1 where id = $1', [entity.id]);
    const { rows } = await client.query<SubaccountRow>(
      `insert into subaccounts (id, entity_id, seq, request_id, status, funding) values ($1, $2, $3, $4, 'pending', $5) returning *`,
      [subaccountId(entity.id, seq), entity.id, seq, input.requestId, entity.funding],
    );
    await appendEvent(client, { type: 'subaccount.allocated', subject: rows[0]!.id, payload: { subaccount: rows[0]!.id, seq }, parties: [entity.id] });
    return toSubaccount(rows[0]!);
  });
}

/** Locks the subaccount and its entity's row data (not the entity lock: only allocation takes that). */
async function lockSubaccount(client: PoolClient, id: string): Promise<{ sub: SubaccountRow; entity: EntityRow }> {
  const sub = await findSubaccount(client, id, true);
  if (!sub) throw notFound('subaccount', id);
  return { sub, entity: await getEntity(client, sub.entity_id) };
}

/**
 * The slot is the creation saga's to undo: pending, or `challenge`/`active` when the
 * activation committed but was reported failed (its reply lost, its retries
 * refused). An `eliminating` slot belongs to its elimination; an ended one is done.
 * Every compensation asks this same question, so they agree on what to undo.
 */
const sagaOwns = (sub: SubaccountRow) => sub.status === 'pending' || sub.status === 'challenge' || sub.status === 'active';

/** Saga step 2: holds the entity's collateral for the subaccount. */
export function holdCollateral(pool: Pool, id: string): Promise<Subaccount> {
  return withTransaction(pool, async (client) => {
    const { sub, entity } = await lockSubaccount(client, id);
    if (sub.hold_id !== null || sub.status !== 'pending') return toSubaccount(sub);
    const hold = await placeHoldIn(client, { key: collateralKey(id), accountId: entity.main_account_id, amount: entity.collateral, reference: { subaccount: id } });
    const { rows } = await client.query<SubaccountRow>('update subaccounts set hold_id = $2 where id = $1 returning *', [id, hold.id]);
    return toSubaccount(rows[0]!);
  });
}

/**
 * A pending slot whose saga has begun to undo it (the first compensation to run, under
 * the slot's lock): from now on a refusal at the cap counts it as rolling back.
 */
async function markRollingBack(client: PoolClient, sub: SubaccountRow): Promise<void> {
  if (sub.status === 'pending' && sub.rolling_back_at === null) await client.query('update subaccounts set rolling_back_at = now() where id = $1', [sub.id]);
}

/** Releases the collateral hold if it is still open (the caller holds the subaccount's lock). */
async function releaseCollateralIn(client: PoolClient, sub: SubaccountRow): Promise<boolean> {
  return sub.hold_id !== null && releaseHoldIfOpen(client, { key: collateralReleaseKey(sub.id), holdId: sub.hold_id });
}

/**
 * Compensation of step 2: releases the collateral of a slot the saga still owns
 * (idempotent). True when the collateral was released for the saga, now or by an
 * earlier attempt whose reply was lost (only the saga releases a slot it owns), so
 * the saga reports what it undid whatever was retried.
 */
export function releaseCollateral(pool: Pool, id: string): Promise<boolean> {
  return withTransaction(pool, async (client) => {
    const { sub } = await lockSubaccount(client, id);
    if (!sagaOwns(sub)) return false;
    await markRollingBack(client, sub);
    if (sub.hold_id === null) return false;
    if (await releaseCollateralIn(client, sub)) return true;
    const { rows } = await client.query<{ status: string }>('select status from holds where id = $1', [sub.hold_id]);
    return rows[0]?.status === 'released';
  });
}

/** Saga step 3: creates the subaccount's ledger account and funds it from the entity's main account. */
export function fundSubaccount(pool: Pool, id: string): Promise<Subaccount> {
  return withTransaction(pool, async (client) => {
    const { sub, entity } = await lockSubaccount(client, id);
    if (sub.account_id !== null || sub.status !== 'pending') return toSubaccount(sub);
    await createAccount(client, { id, ownerId: entity.id, kind: 'subaccount' });
    if (sub.funding > 0) {
      await postTransfer(client, { key: fundKey(id), kind: 'subaccount_funding', debitAccountId: entity.main_account_id, creditAccountId: id, amount: sub.funding, subaccountId: id });
    }
    const { rows } = await client.query<SubaccountRow>('update subaccounts set account_id = $1 where id = $1 returning *', [id]);
    return toSubaccount(rows[0]!);
  });
}

/**
 * Compensation of step 3: moves the funding back to the entity (the account stays,
 * empty, for the record), whether or not the activation committed: a slot the saga
 * owns is emptied before it is marked failed. True when it was unfunded, now or by
 * an earlier attempt.
 */
export function unfundSubaccount(pool: Pool, id: string): Promise<boolean> {
  return withTransaction(pool, async (client) => {
    const { sub, entity } = await lockSubaccount(client, id);
    if (!sagaOwns(sub)) return false;
    await markRollingBack(client, sub);
    return unfundIn(client, sub, entity);
  });
}

/** Moves a slot's funding back to its entity (false: no account yet, or nothing to move). */
async function unfundIn(client: PoolClient, sub: SubaccountRow, entity: EntityRow): Promise<boolean> {
  if (sub.account_id === null) return false;
  // unfunded by an earlier attempt whose reply was lost: done, and reported as done
  const { rows } = await client.query('select 1 from transfers where idempotency_key = $1', [unfundKey(sub.id)]);
  if (rows[0]) return true;
  const accounts = await lockAccounts(client, [sub.account_id, entity.main_account_id]);
  // what is free to move: a hold on it (none is expected) stays, and the ended-empty guard says so
  const available = accounts.get(sub.account_id)!.available;
  if (available <= 0) return false;
  await postTransfer(
    client,
    { key: unfundKey(sub.id), kind: 'subaccount_unfunding', debitAccountId: sub.account_id, creditAccountId: entity.main_account_id, amount: available, subaccountId: sub.id },
    accounts,
  );
  return true;
}

/**
 * The reconciler's compensation of a creation whose workflow is no longer running, in
 * one transaction and only while the slot is still `pending`: its funding back, its
 * collateral released, `failed` at the step it had reached. A slot its saga activated
 * (after the reconciler listed it, before its workflow ended) is the saga's result and
 * is left alone: undefined.
 */
export function failStrandedCreation(pool: Pool, input: { id: string; failure: string }): Promise<Subaccount | undefined> {
  return withTransaction(pool, async (client) => {
    const { sub, entity } = await lockSubaccount(client, input.id);
    if (sub.status !== 'pending') return undefined;
    // the step the saga had reached: no collateral yet, no account yet, or about to activate
    const step: SagaStep = sub.account_id !== null ? 'activate' : sub.hold_id !== null ? 'fund' : 'hold_collateral';
    await unfundIn(client, sub, entity);
    await releaseCollateralIn(client, sub);
    return failSlotIn(client, sub, entity, { step, failure: input.failure });
  });
}

/** Saga step 4: `active`, or `challenge` when the entity has a challenge period. */
export function activateSubaccount(pool: Pool, id: string): Promise<Subaccount> {
  return withTransaction(pool, async (client) => {
    const { sub, entity } = await lockSubaccount(client, id);
    if (sub.status !== 'pending') return toSubaccount(sub);
    const status: SubaccountStatus = entity.challenge_ms > 0 ? 'challenge' : 'active';
    const { rows } = await client.query<SubaccountRow>(
      `update subaccounts set status = $2, activated_at = case when $2 = 'active' then now() end where id = $1 returning *`,
      [id, status],
    );
    const s = toSubaccount(rows[0]!);
    await appendEvent(client, { type: `subaccount.${status}`, subject: id, payload: { ...s }, parties: [entity.id] });
    await bumpCounter(client, 'subaccount_creations', { outcome: status });
    return s;
  });
}

/**
 * The saga's last compensation: the slot is `failed`; its number stays burned. Only
 * a slot the saga owns, and (the database refuses otherwise) only once it is empty:
 * the account lock makes the status change the line after which no transfer can
 * reach it.
 */
export function markSubaccountFailed(pool: Pool, input: { id: string; step: string; failure: string }): Promise<Subaccount> {
  return withTransaction(pool, async (client) => {
    const { sub, entity } = await lockSubaccount(client, input.id);
    if (!sagaOwns(sub)) return toSubaccount(sub);
    return failSlotIn(client, sub, entity, input);
  });
}

async function failSlotIn(client: PoolClient, sub: SubaccountRow, entity: EntityRow, input: { step: string; failure: string }): Promise<Subaccount> {
  if (sub.account_id !== null) await lockAccounts(client, [sub.account_id]);
  const { rows } = await client.query<SubaccountRow>(
    `update subaccounts set status = 'failed', failed_step = $2, failure = $3, ended_at = now() where id = $1 returning *`,
    [sub.id, input.step, input.failure],
  );
  const s = toSubaccount(rows[0]!);
  await appendEvent(client, { type: 'subaccount.failed', subject: sub.id, payload: { ...s }, parties: [entity.id] });
  await bumpCounter(client, 'subaccount_creations', { outcome: 'failed' });
  return s;
}

/**
 * The compensation of an allocation that may have committed but was reported failed
 * (its reply lost, its retries spent): the request's slot, if it is a bare allocation
 * (pending, nothing held, no account), is marked `failed` like any other the saga
 * gives up (its number stays burned), so no `pending` slot is left occupying the
 * entity's cap. A slot that got further belongs to the run that took it there (a
 * terminated one's, say): left alone. Undefined when nothing was allocated, or the
 * slot is not this compensation's; the same failed slot again when it was (a retry).
 */
export function markAllocationFailed(pool: Pool, input: { entityId: string; requestId: string; failure: string }): Promise<Subaccount | undefined> {
  return withTransaction(pool, async (client) => {
    const { rows } = await client.query<SubaccountRow>('select * from subaccounts where entity_id = $1 and request_id = $2 for update', [input.entityId, input.requestId]);
    const sub = rows[0];
    if (!sub) return undefined;
    if (sub.status === 'failed' && sub.failed_step === 'allocate') return toSubaccount(sub);
    if (sub.status !== 'pending' || sub.hold_id !== null || sub.account_id !== null) return undefined;
    return failSlotIn(client, sub, await getEntity(client, sub.entity_id), { step: 'allocate', failure: input.failure });
  });
}

/**
 * The streams an elimination closes: those open on the subaccount's account now, and
 * those closed since its elimination began (by an earlier attempt whose reply was
 * lost), so a retried close still reports, and wakes, every stream it closed.
 */
export async function streamsToCloseOf(db: Queryable, sub: { id: string; entityId: string; accountId: string }): Promise<string[]> {
  // when it began: its `subaccount.eliminating` event, found through the entity's events (indexed by party)
  const { rows } = await db.query<{ ref: string }>(
    `with began as (select min(created_at) as at from events where parties @> array[$3]::text[] and type = 'subaccount.eliminating' and subject = $1)
     select ref from streams, began
      where (payer_account_id = $2 or payee_account_id = $2) and (status = 'open' or closed_at >= began.at)
      order by ref`,
    [sub.id, sub.accountId, sub.entityId],
  );
  return rows.map((r) => r.ref);
}

/** The challenge rule at the end of the period: `active` if the balance held up, otherwise eliminate (the caller does). */
export function concludeChallenge(pool: Pool, id: string): Promise<{ subaccount: Subaccount; passed: boolean }> {
  return withTransaction(pool, async (client) => {
    const { sub, entity } = await lockSubaccount(client, id);
    if (sub.status !== 'challenge') return { subaccount: toSubaccount(sub), passed: sub.status === 'active' };
    const balance = (await getAccount(client, sub.account_id!)).balance;
    const passed = passesChallenge(balance, sub.funding, entity.challenge_min_bps);
    if (!passed) return { subaccount: toSubaccount(sub), passed };
    const { rows } = await client.query<SubaccountRow>(`update subaccounts set status = 'active', activated_at = now() where id = $1 returning *`, [id]);
    const s = toSubaccount(rows[0]!);
    await appendEvent(client, { type: 'subaccount.active', subject: id, payload: { ...s, challenge: { balance, funding: sub.funding } }, parties: [entity.id] });
    return { subaccount: s, passed };
  });
}

export interface Assessment {
  subaccount: Subaccount;
  /**
   * `promoted`: its challenge passed, now `active`; `kept`: active and within the rules;
   * `breached`: a rule fired (recorded on it, the caller eliminates it); `ended`: no
   * longer assessed (eliminated or being eliminated, by request or by an earlier breach).
   */
  verdict: 'promoted' | 'kept' | 'breached' | 'ended';
  breach?: RuleBreach;
  /** The entity's assessment period, for the next timer (0: none). */
  assessEveryMs: number;
}

/** The last stream tick paid or received by the account (as payer, payee or distribution member), through the account indexes. */
async function lastActivityOf(client: PoolClient, accountId: string): Promise<Date | null> {
  const { rows } = await client.query<{ at: Date | null }>(
    `select max(at) as at from (
       select max(last_billed_at) as at from streams where payer_account_id = $1
       union all select max(last_billed_at) from streams where payee_account_id = $1
       union all select max(s.last_billed_at) from stream_members m join streams s on s.ref = m.stream_ref where m.account_id = $1) t`,
    [accountId],
  );
  return rows[0]?.at ?? null;
}

/**
 * The rules (src/domain/challengeRules.ts) on a live subaccount, under its lock: at
 * the end of its challenge (`challenge`: promoted when they hold) and then on each
 * periodic assessment (`active`). The high-water mark takes in the balance seen now
 * (at least the funding); a rule that fires is recorded on it with its figures, for
 * its elimination to report (a later assessment that passes clears it). `atMs` is the
 * workflow's clock, so a timer that fires late still measures idleness from its time.
 */
export function assessSubaccount(pool: Pool, id: string, atMs: number): Promise<Assessment> {
  return withTransaction(pool, async (client) => {
    const { sub, entity } = await lockSubaccount(client, id);
    const assessEveryMs = entity.assess_every_ms;
    if (sub.status !== 'challenge' && sub.status !== 'active') return { subaccount: toSubaccount(sub), verdict: 'ended', assessEveryMs };
    const balance = (await getAccount(client, sub.account_id!)).balance;
    const highWaterMark = nextHighWaterMark(sub.high_water_mark, balance, sub.funding);
    const lastActivity = await lastActivityOf(client, sub.account_id!);
    const lastActivityAtMs = Math.max(sub.created_at.getTime(), lastActivity?.getTime() ?? 0);
    const breach = assessRules(rulesOf(entity), { fundingUnits: sub.funding, balanceUnits: balance, highWaterMarkUnits: highWaterMark, lastActivityAtMs, atMs });
    const promote = !breach && sub.status === 'challenge';
    const { rows } = await client.query<SubaccountRow>(
      `update subaccounts set high_water_mark = $2, assessed_at = now(), elimination_rule = $3,
              status = case when $4 then 'active' else status end, activated_at = case when $4 then now() else activated_at end
        where id = $1 returning *`,
      [id, highWaterMark, breach ?? null, promote],
    );
    const s = toSubaccount(rows[0]!);
    if (promote) await appendEvent(client, { type: 'subaccount.active', subject: id, payload: { ...s, challenge: { balance, funding: sub.funding } }, parties: [entity.id] });
    if (breach) await appendEvent(client, { type: 'subaccount.rule_breached', subject: id, payload: { subaccount: id, ...breach }, parties: [entity.id] });
    return { subaccount: s, verdict: breach ? 'breached' : promote ? 'promoted' : 'kept', ...(breach && { breach }), assessEveryMs };
  });
}

/**
 * Elimination begins: under the subaccount's lock and its account's, it becomes
 * `eliminating`, after which the database refuses any new stream or hold on it, so
 * the streams closed next are all there will be. Refused while it holds anything
 * but its streams' escrow (a job's reservation, a hold of its own): those resolve
 * or are released first, so the subaccount can end empty.
 */
export function beginElimination(pool: Pool, id: string): Promise<Subaccount> {
  return withTransaction(pool, async (client) => {
    const { sub, entity } = await lockSubaccount(client, id);
    if (sub.status === 'eliminating' || sub.status === 'eliminated') return toSubaccount(sub);
    if (sub.status !== 'active' && sub.status !== 'challenge') {
      throw new SluiceError('invalid_request', `subaccount ${id} is ${sub.status}; only a live subaccount can be eliminated`, { status: sub.status });
    }
    await lockAccounts(client, [sub.account_id!]);
    const { rows: holds } = await client.query<{ id: number }>(
      `select id from holds where account_id = $1 and status = 'open' and not reference ? 'stream' order by id`,
      [sub.account_id],
    );
    if (holds.length > 0) {
      throw new SluiceError('holds_open', `subaccount ${id} has open holds (${holds.map((h) => h.id).join(', ')}); release them or let them resolve before eliminating it`, {
        holds: holds.map((h) => h.id),
      });
    }
    const { rows } = await client.query<SubaccountRow>(`update subaccounts set status = 'eliminating' where id = $1 returning *`, [id]);
    const s = toSubaccount(rows[0]!);
    await appendEvent(client, { type: 'subaccount.eliminating', subject: id, payload: { ...s }, parties: [entity.id] });
    return s;
  });
}

export interface Settlement {
  subaccount: Subaccount;
  swept: number;
  collateralReleased: boolean;
  /** Streams still open on it (opened while elimination began): close them and settle again. */
  openStreams: string[];
}

/** What an elimination settled, read back from the books (a retry after it committed answers the same). */
async function settledBefore(client: PoolClient, sub: SubaccountRow): Promise<Settlement> {
  const { rows } = await client.query<{ swept: number | null; released: boolean }>(
    `select (select amount from transfers where idempotency_key = $1) as swept,
            coalesce((select status = 'released' from holds where id = $2), false) as released`,
    [sweepKey(sub.id), sub.hold_id],
  );
  return { subaccount: toSubaccount(sub), swept: rows[0]!.swept ?? 0, collateralReleased: rows[0]!.released, openStreams: [] };
}

/**
 * The money side of elimination, once its streams are closed: sweeps the whole
 * balance back to the entity, releases the collateral, marks it `eliminated` (a slot
 * freed, the history kept), under the subaccount's and the accounts' locks. A stream
 * that opened on it while elimination began is reported instead, to be closed first.
 */
export function settleElimination(pool: Pool, input: { id: string; reason: string }): Promise<Settlement> {
  return withTransaction(pool, async (client) => {
    const { sub, entity } = await lockSubaccount(client, input.id);
    if (sub.status === 'eliminated') return settledBefore(client, sub);
    if (sub.status !== 'eliminating') {
      throw new SluiceError('invalid_request', `subaccount ${input.id} is ${sub.status}; its elimination has not begun`, { status: sub.status });
    }
    const accounts = await lockAccounts(client, [sub.account_id!, entity.main_account_id]);
    const openStreams = await openStreamsOf(client, sub.account_id!);
    if (openStreams.length > 0) return { subaccount: toSubaccount(sub), swept: 0, collateralReleased: false, openStreams };
    const account = accounts.get(sub.account_id!)!;
    // beginElimination refused other holds and no new one can be placed since: with the
    // streams closed nothing is held, so the whole balance moves
    if (account.held !== 0) throw new Error(`subaccount ${input.id} still holds ${account.held} with its streams closed`);
    const swept = account.balance;
    if (swept > 0) {
      await postTransfer(
        client,
        { key: sweepKey(input.id), kind: 'subaccount_sweep', debitAccountId: sub.account_id!, creditAccountId: entity.main_account_id, amount: swept, subaccountId: input.id },
        accounts,
      );
    }
    const collateralReleased = await releaseCollateralIn(client, sub);
    const { rows } = await client.query<SubaccountRow>(`update subaccounts set status = 'eliminated', failure = $2, ended_at = now() where id = $1 returning *`, [input.id, input.reason]);
    const s = toSubaccount(rows[0]!);
    await appendEvent(client, { type: 'subaccount.eliminated', subject: input.id, payload: { ...s, swept, collateralReleased }, parties: [entity.id] });
    // by rule (the one the assessment recorded) or by request
    await bumpCounter(client, 'subaccount_eliminations', sub.elimination_rule ? { reason: 'rule', rule: sub.elimination_rule.rule } : { reason: 'request', rule: 'none' });
    return { subaccount: s, swept, collateralReleased, openStreams: [] };
  });
}

/** Open streams paid from or to the account (elimination closes them). */
export async function openStreamsOf(db: Queryable, accountId: string): Promise<string[]> {
  const { rows } = await db.query<{ ref: string }>(
    `select ref from streams where payer_account_id = $1 and status = 'open'
     union select ref from streams where payee_account_id = $1 and status = 'open' order by ref`,
    [accountId],
  );
  return rows.map((r) => r.ref);
}

export async function recordDelivery(
  db: Queryable,
  d: { entityId: string; eventKey: string; eventType: string; url: string; attempt: number; statusCode?: number; ok: boolean; error?: string },
): Promise<void> {
  // the attempt and its count in one statement: both or neither
  await db.query(
    `with logged as (insert into webhook_deliveries (entity_id, event_key, event_type, url, attempt, status_code, ok, error) values ($1, $2, $3, $4, $5, $6, $7, $8) returning 1)
     ${BUMP_COUNTER_SQL} select 'webhook_deliveries', jsonb_build_object('outcome', $9::text), 1 from logged`,
    [d.entityId, d.eventKey, d.eventType, d.url, d.attempt, d.statusCode ?? null, d.ok, d.error ?? null, d.ok ? 'delivered' : 'failed'],
  );
}

/** Delivery attempts in one page of the log at most. */
export const DELIVERIES_PAGE_MAX = 500;

/** An entity's delivery attempts after a cursor (0 or a delivery's id), in commit order (src/ledger/tails.ts). */
export async function listDeliveries(db: Queryable, entityId: string, opts: { after?: number; limit?: number } = {}) {
  const rows = await readTail<Record<string, unknown> & { id: number }>(db, {
    table: 'webhook_deliveries',
    columns: 't.id, t.event_key, t.event_type, t.url, t.attempt, t.status_code, t.ok, t.error, t.at',
    after: opts.after ?? 0,
    limit: pageRows(opts.limit, DELIVERIES_PAGE_MAX, 100),
    where: (param) => `t.entity_id = ${param(entityId)}`,
  });
  return rows.map((r) => ({
    id: r.id as number,
    eventKey: r.event_key as string,
    eventType: r.event_type as string,
    url: r.url as string,
    attempt: r.attempt as number,
    statusCode: (r.status_code as number | null) ?? undefined,
    ok: r.ok as boolean,
    error: (r.error as string | null) ?? undefined,
    at: (r.at as Date).toISOString(),
  }));
}

/** The most subaccount rows one dashboard read returns: the live cap's default. */
export const DASHBOARD_ROWS_MAX = 500;

export interface DashboardRow {
  id: string;
  seq: number;
  status: SubaccountStatus;
  accountId?: string;
  balance: number;
  held: number;
  openStreams: number;
  paid: number;
  received: number;
}

export interface Dashboard {
  entity: string;
  /** Subaccounts by status, all of them. */
  statusCounts: Record<SubaccountStatus, number>;
  /** Sums over all the entity's subaccounts, and its main account with the collateral held on it. */
  totals: { balance: number; held: number; openStreams: number; paid: number; received: number; mainBalance: number; mainHeld: number; collateralHeld: number };
  /** Per subaccount, by number, after `after`, at most `limit` (≤ DASHBOARD_ROWS_MAX). */
  subaccounts: DashboardRow[];
  /** The `after` of the next page, when there is one. */
  nextAfter?: number;
}

/**
 * The entity dashboard in one query: a row per subaccount (balance, held, open
 * streams, paid out and received by its streams), the status counts and the totals
 * over all of them, and the main account with the collateral it holds. Each
 * subaccount's streams are found through the (account, status) indexes, as payer
 * and as payee separately, each an index-only scan.
 */
export async function entityDashboard(db: Queryable, entityId: string, opts: { after?: number; limit?: number } = {}): Promise<Dashboard> {
  const limit = pageRows(opts.limit, DASHBOARD_ROWS_MAX);
  const { rows } = await db.query(
    `with subs as (${subaccountFigures('s.entity_id = $1')}),
     page as (select * from subs where seq > $2 order by seq limit $3 + 1)
     select (select jsonb_agg(jsonb_build_object('id', id, 'seq', seq, 'status', status, 'accountId', account_id, 'balance', balance,
                                                 'held', held, 'openStreams', open_streams, 'paid', paid, 'received', received) order by seq)
               from page) as rows,
            (select jsonb_object_agg(status, n) from (select status, count(*) as n from subs group by status) c) as counts,
            (select jsonb_build_object('balance', coalesce(sum(balance), 0), 'held', coalesce(sum(held), 0), 'openStreams', coalesce(sum(open_streams), 0),
                                       'paid', coalesce(sum(paid), 0), 'received', coalesce(sum(received), 0),
                                       'collateralHeld', coalesce(sum(h.amount - h.captured - h.released) filter (where h.status = 'open'), 0))
               from subs left join holds h on h.id = subs.hold_id) as totals,
            m.balance as main_balance, m.held as main_held
       from entities e join accounts m on m.id = e.main_account_id
      where e.id = $1`,
    [entityId, opts.after ?? 0, limit],
  );
  const r = rows[0];
  if (!r) throw notFound('entity', entityId);
  const page: DashboardRow[] = (r.rows ?? []).map(({ accountId, ...row }: DashboardRow & { accountId: string | null }) => ({ ...row, ...(accountId && { accountId }) }));
  const more = page.length > limit;
  const subaccounts = more ? page.slice(0, limit) : page;
  const statusCounts = Object.fromEntries(SUBACCOUNT_STATUSES.map((st) => [st, Number(r.counts?.[st] ?? 0)])) as Record<SubaccountStatus, number>;
  return {
    entity: entityId,
    statusCounts,
    totals: { ...r.totals, mainBalance: r.main_balance, mainHeld: r.main_held },
    subaccounts,
    ...(more && { nextAfter: subaccounts[subaccounts.length - 1]!.seq }),
  };
}
