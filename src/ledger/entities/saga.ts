import type { Pool, PoolClient } from '../../db/pool';
import { withTransaction } from '../../db/pool';
import { collateralKey, collateralReleaseKey, fundKey, subaccountId, unfundKey, type SagaStep, type Subaccount, type SubaccountStatus } from '../../domain/entities';
import { notFound, SluiceError } from '../../domain/errors';
import { bumpCounter } from '../metricCounters';
import { createAccount, lockAccounts } from '../accounts';
import { appendEvent } from '../events';
import { placeHoldIn, releaseHoldIfOpen } from '../holds';
import { postTransfer } from '../transfers';
import { capReached, creationLimits, creationsRateLimited, ENTITY_COLUMNS, getEntity, lockSubaccount, toSubaccount, type EntityRow, type Limits, type SubaccountRow } from './entities';

/**
 * The ledger steps of the subaccount-creation saga (workflows/entities.ts): allocate a
 * slot, hold the collateral, fund the subaccount, activate it, and the compensation of
 * each, plus the reconciler's for a creation whose workflow is gone. Every step is one
 * transaction, idempotent by the subaccount id (the allocation by its request id), so
 * a retried step finds its work done.
 */

/**
 * Saga step 1: under the entity's row lock, checks the hourly rate (successful
 * and in-flight creations of the last hour; failed ones do not count) and the cap
 * (live subaccounts), then takes the next number. The same request gets its slot back.
 */
export function allocateSubaccount(pool: Pool, input: { entityId: string; requestId: string; limits: Limits }): Promise<Subaccount> {
  return withTransaction(pool, async (client) => {
    const { rows: er } = await client.query<EntityRow>(`select ${ENTITY_COLUMNS} from entities where id = $1 for no key update`, [input.entityId]);
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

/**
 * The slot is the creation saga's to undo: pending, or `challenge`/`active` when the
 * activation committed but was reported failed (its reply lost, its retries
 * refused). An `eliminating` slot belongs to its elimination; an ended one is done.
 * The compensations of the steps after allocation (releaseCollateral,
 * unfundSubaccount, markSubaccountFailed) all ask this same question, so they agree
 * on what to undo; the allocation's own (markAllocationFailed) and the reconciler's
 * (failStrandedCreation) ask narrower ones, a bare pending slot and a pending slot.
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
export async function releaseCollateralIn(client: PoolClient, sub: SubaccountRow): Promise<boolean> {
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
