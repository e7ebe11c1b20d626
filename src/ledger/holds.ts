import type { Pool, PoolClient, Queryable } from '../db/pool';
import { withTransaction } from '../db/pool';
import { notFound, SluiceError } from '../domain/errors';
import { assertUnits } from '../domain/money';
import { lockAccounts, type Account } from './accounts';
import { appendEvent } from './events';
import { idempotent } from './idempotency';
import { assertCanDebit, postTransfer, type AlongWithTransfer, type Transfer, type TransferRefs } from './transfers';

/**
 * Two-phase money movement, the one primitive behind stream escrow, pool
 * reservations and subaccount collateral: `placeHold` moves funds from available to
 * held; `captureHold` posts part or all of what remains to another account;
 * `releaseHold` voids the rest. captured + released never exceeds the hold (a
 * CHECK), and a hold that is no longer open accepts nothing (the holds trigger).
 */
export type HoldStatus = 'open' | 'captured' | 'released' | 'expired';

export interface Hold {
  id: number;
  key: string;
  accountId: string;
  amount: number;
  captured: number;
  released: number;
  remaining: number;
  multiCapture: boolean;
  status: HoldStatus;
  expiresAt?: string;
  reference: Record<string, unknown>;
  createdAt: string;
  resolvedAt?: string;
}

/** A holds row (or its to_jsonb, where times arrive as strings) as a Hold. */
export function toHold(r: Record<string, any>): Hold {
  const h: Hold = {
    id: r.id,
    key: r.idempotency_key,
    accountId: r.account_id,
    amount: r.amount,
    captured: r.captured,
    released: r.released,
    remaining: r.amount - r.captured - r.released,
    multiCapture: r.multi_capture,
    status: r.status,
    reference: r.reference,
    createdAt: new Date(r.created_at).toISOString(),
  };
  if (r.expires_at) h.expiresAt = new Date(r.expires_at).toISOString();
  if (r.resolved_at) h.resolvedAt = new Date(r.resolved_at).toISOString();
  return h;
}

export interface PlaceHoldInput {
  key: string;
  accountId: string;
  amount: number;
  expiresAt?: string;
  /** Allow many partial captures (stream escrow); otherwise a hold captures at most once. */
  multiCapture?: boolean;
  reference?: Record<string, unknown>;
}

export async function placeHoldIn(client: PoolClient, input: PlaceHoldInput): Promise<Hold> {
  assertUnits(input.amount, 'amount');
  const account = (await lockAccounts(client, [input.accountId])).get(input.accountId)!;
  if (account.kind === 'world') throw new SluiceError('invalid_request', 'the world account cannot hold funds');
  assertCanDebit(account, input.amount);
  if (input.expiresAt !== undefined && Date.parse(input.expiresAt) <= Date.now()) {
    throw new SluiceError('invalid_request', 'expiresAt must be in the future', { expiresAt: input.expiresAt });
  }
  const { rows } = await client.query(
    `insert into holds (account_id, amount, multi_capture, expires_at, idempotency_key, reference)
     values ($1, $2, $3, $4, $5, $6) returning *`,
    [input.accountId, input.amount, input.multiCapture ?? false, input.expiresAt ?? null, input.key, JSON.stringify(input.reference ?? {})],
  );
  const hold = toHold(rows[0]);
  await appendEvent(client, {
    type: 'hold.placed',
    subject: String(hold.id),
    payload: { hold: hold.id, account: hold.accountId, amount: hold.amount, expiresAt: hold.expiresAt ?? null },
    parties: [account.ownerId],
  });
  return hold;
}

/**
 * Locks a hold's account (with `alsoLock`, in the same global order) and then the
 * hold, and checks it can still move money. A caller that read the hold under a lock
 * which already serialises every change to it (a stream's escrow hold changes only
 * under the stream's row lock) passes it as `guarded`: the lookup and the hold's row
 * lock are skipped (the transfers trigger still refuses a hold that is not open).
 */
async function lockOpenHold(
  client: PoolClient,
  holdId: number,
  opts: { guarded?: Hold; alsoLock?: string[] } = {},
): Promise<{ hold: Hold; accounts: Map<string, Account>; ownerId: string }> {
  let hold = opts.guarded;
  let accounts: Map<string, Account>;
  if (hold) {
    accounts = await lockAccounts(client, [hold.accountId, ...(opts.alsoLock ?? [])]);
  } else {
    const found = await client.query<{ account_id: string }>('select account_id from holds where id = $1', [holdId]);
    if (!found.rows[0]) throw notFound('hold', String(holdId));
    // accounts first, then the hold row: the same order postTransfer and the trigger use
    accounts = await lockAccounts(client, [found.rows[0].account_id, ...(opts.alsoLock ?? [])]);
    const { rows } = await client.query({ name: 'lock-hold', text: 'select * from holds where id = $1 for no key update', values: [holdId] });
    hold = toHold(rows[0]);
  }
  if (hold.status === 'expired') throw new SluiceError('hold_expired', `hold ${holdId} expired`, { hold: holdId });
  if (hold.status !== 'open') {
    throw new SluiceError('hold_closed', `hold ${holdId} is already ${hold.status}`, { hold: holdId, status: hold.status });
  }
  return { hold, accounts, ownerId: accounts.get(hold.accountId)!.ownerId };
}

export interface CaptureInput extends Omit<TransferRefs, 'holdId'> {
  key: string;
  holdId: number;
  amount: number;
  toAccountId: string;
  kind?: string;
  memo?: string;
}

/**
 * Captures part of a hold into `toAccountId` (the transfers trigger moves the hold).
 * `guarded`: the hold as read under a lock that guards it (see lockOpenHold).
 */
export async function captureHoldIn(client: PoolClient, input: CaptureInput, guarded?: Hold, along?: AlongWithTransfer): Promise<Transfer> {
  assertUnits(input.amount, 'amount');
  const { hold, accounts } = await lockOpenHold(client, input.holdId, { guarded, alsoLock: [input.toAccountId] });
  if (!hold.multiCapture && hold.captured > 0) {
    throw new SluiceError('hold_closed', `hold ${hold.id} was already captured; release the rest`, { hold: hold.id });
  }
  if (input.amount > hold.remaining) {
    throw new SluiceError('amount_exceeds_hold', `capture of ${input.amount} exceeds the ${hold.remaining} remaining on hold ${hold.id}`, {
      hold: hold.id,
      remaining: hold.remaining,
      requested: input.amount,
    });
  }
  const { key, holdId, amount, toAccountId, kind, memo, ...refs } = input;
  return postTransfer(
    client,
    { ...refs, key, kind: kind ?? 'capture', debitAccountId: hold.accountId, creditAccountId: toAccountId, amount, holdId, memo },
    accounts,
    along,
  );
}

export async function releaseHoldIn(client: PoolClient, input: { key: string; holdId: number }): Promise<Hold> {
  const { hold, ownerId } = await lockOpenHold(client, input.holdId);
  await client.query(`update holds set released = amount - captured, status = 'released', resolved_at = now() where id = $1`, [hold.id]);
  const released = await getHold(client, hold.id);
  await appendEvent(client, {
    type: 'hold.released',
    subject: String(hold.id),
    payload: { hold: hold.id, account: hold.accountId, captured: released.captured, released: released.released },
    parties: [ownerId],
  });
  return released;
}

/** Releases what remains on a hold if it is still open; false when it was already resolved (a compensation run twice). */
export async function releaseHoldIfOpen(client: PoolClient, input: { key: string; holdId: number }): Promise<boolean> {
  const { rows } = await client.query<{ status: string }>('select status from holds where id = $1', [input.holdId]);
  if (rows[0]?.status !== 'open') return false;
  await releaseHoldIn(client, input);
  return true;
}

export const placeHold = (pool: Pool, input: PlaceHoldInput) =>
  withTransaction(pool, (c) => idempotent(c, input.key, 'hold.place', input, () => placeHoldIn(c, input)));

export const captureHold = (pool: Pool, input: CaptureInput) =>
  withTransaction(pool, (c) =>
    idempotent(c, input.key, 'hold.capture', input, async () => {
      const transfer = await captureHoldIn(c, input);
      return { hold: await getHold(c, input.holdId), transfer };
    }),
  );

export const releaseHold = (pool: Pool, input: { key: string; holdId: number }) =>
  withTransaction(pool, (c) => idempotent(c, input.key, 'hold.release', input, () => releaseHoldIn(c, input)));

/** Reference keys of holds a workflow owns: they move only through that workflow. */
const MANAGED_BY = ['stream', 'job', 'subaccount'] as const;

/**
 * Refuses to resolve a hold that a workflow owns (a stream's escrow, a job's pool
 * reservation, a subaccount's collateral) through the generic holds API: releasing a
 * stream's escrow behind its back would take the payee's guarantee away.
 */
export function assertNotManaged(hold: Hold): void {
  const owner = MANAGED_BY.find((k) => typeof hold.reference[k] === 'string');
  if (owner) {
    throw new SluiceError('forbidden', `hold ${hold.id} belongs to ${owner} ${String(hold.reference[owner])}; it moves only with that ${owner}`, {
      hold: hold.id,
      [owner]: hold.reference[owner],
    });
  }
}

export async function getHold(db: Queryable, id: number): Promise<Hold> {
  const { rows } = await db.query('select * from holds where id = $1', [id]);
  if (!rows[0]) throw notFound('hold', String(id));
  return toHold(rows[0]);
}

/**
 * Expires overdue holds everywhere, one account per transaction, taking the account
 * lock through `lockAccounts` (which does the expiring) so the sweep obeys the lock order.
 */
export async function sweepExpiredHolds(pool: Pool, accountsMax = 1000): Promise<number> {
  const { rows } = await pool.query<{ account_id: string }>(
    `select distinct account_id from holds where status = 'open' and expires_at <= now() order by account_id limit $1`,
    [accountsMax],
  );
  for (const r of rows) await withTransaction(pool, (c) => lockAccounts(c, [r.account_id]));
  return rows.length;
}
