import { randomBytes } from 'node:crypto';
import { inTransaction, type PoolClient, type Queryable } from '../db/pool';
import { notFound, SluiceError } from '../domain/errors';
import { appendEvent } from './events';
import { pageRows } from './paging';

export const ACCOUNT_KINDS = ['user', 'entity', 'subaccount', 'pool', 'escrow', 'world', 'session'] as const;
export type AccountKind = (typeof ACCOUNT_KINDS)[number];

export interface Account {
  id: string;
  ownerId: string;
  kind: AccountKind;
  currency: string;
  balance: number;
  held: number;
  available: number;
  createdAt: string;
}

export interface AccountRow {
  id: string;
  owner_id: string;
  kind: AccountKind;
  currency: string;
  balance: number;
  held: number;
  created_at: Date;
}

export const toAccount = (r: AccountRow): Account => ({
  id: r.id,
  ownerId: r.owner_id,
  kind: r.kind,
  currency: r.currency,
  balance: r.balance,
  held: r.held,
  available: r.balance - r.held,
  createdAt: r.created_at.toISOString(),
});

export const newAccountId = (ownerId: string) => `${ownerId}.${randomBytes(5).toString('hex')}`;

/** The currency of an account opened without one. */
export const DEFAULT_CURRENCY = 'UNIT';

/** Inserts an account and its account.created event, in one transaction (the caller's, or its own). */
export function createAccount(
  db: Queryable,
  input: { id?: string; ownerId: string; kind: AccountKind; currency?: string },
): Promise<Account> {
  const id = input.id ?? newAccountId(input.ownerId);
  return inTransaction(db, async (client) => {
    try {
      const { rows } = await client.query<AccountRow>(
        `insert into accounts (id, owner_id, kind, currency) values ($1, $2, $3, $4) returning *`,
        [id, input.ownerId, input.kind, input.currency ?? DEFAULT_CURRENCY],
      );
      const account = toAccount(rows[0]!);
      await appendEvent(client, {
        type: 'account.created',
        subject: id,
        payload: { account: id, owner: input.ownerId, kind: input.kind, currency: account.currency },
        parties: [input.ownerId],
      });
      return account;
    } catch (error) {
      const e = error as { code?: string; constraint?: string };
      if (e.code === '23505') throw new SluiceError('already_exists', `account ${id} already exists`, { account: id });
      if (e.code === '23503') throw notFound('party', input.ownerId);
      throw error;
    }
  });
}

export async function getAccount(db: Queryable, id: string): Promise<Account> {
  const { rows } = await db.query<AccountRow>('select * from accounts where id = $1', [id]);
  if (!rows[0]) throw notFound('account', id);
  return toAccount(rows[0]);
}

/** Accounts in one page of an owner's list at most. */
export const ACCOUNTS_PAGE_MAX = 1000;

/** An owner's accounts by id, after the id `after` (a cursor), at most `limit`. */
export async function listAccounts(db: Queryable, ownerId: string, opts: { after?: string; limit?: number } = {}): Promise<Account[]> {
  const { rows } = await db.query<AccountRow>('select * from accounts where owner_id = $1 and id > $2 order by id limit $3', [
    ownerId,
    opts.after ?? '',
    pageRows(opts.limit, ACCOUNTS_PAGE_MAX),
  ]);
  return rows.map(toAccount);
}

/**
 * The world account of a currency, the other side of every deposit and withdrawal:
 * its stripe 0 (the first by id; the stripes are src/ledger/world.ts).
 */
export async function worldAccountId(db: Queryable, currency: string): Promise<string> {
  const { rows } = await db.query<{ id: string }>(`select id from accounts where kind = 'world' and currency = $1 order by id limit 1`, [currency]);
  if (!rows[0]) throw new SluiceError('invalid_request', `no world account for currency ${currency}`, { currency });
  return rows[0].id;
}

/**
 * The one lock order of the ledger, for every path that moves money (opens, ticks,
 * controls, closes, holds, transfers, payments, sagas, grants, crown rewards). A
 * transaction takes its locks in this order and never waits for a lock of an
 * earlier step while it holds one of a later step:
 *
 *   0. its idempotency key (the key row is inserted first: a repeat queues there),
 *      and an advisory lock that serialises a whole kind of writer (the rate board);
 *   1. the domain rows the movement is about, each kind in this order: a payer's
 *      party row (its daily budget, grants; its stream quota, when a stream opens), an entity row (allocation) or a
 *      subaccount row, a session row (after its payer's party row: a request's
 *      budget, then its session), a grant row, a stream row by ref (controls, ticks, closes; the
 *      billing clock takes many, SKIP LOCKED, so it never waits for one), a payment
 *      row (refunds). No path takes two of these kinds but the budget's party row
 *      before its grant and an entity's row before its new subaccount;
 *   2. every account it will move, in one statement, ascending by id, FOR NO KEY
 *      UPDATE (lockAccounts below; the billing batch's own statement in
 *      tickBatch.ts), the free-tier pool's stripes last (ascending among
 *      themselves). A later lockAccounts in the same transaction names only
 *      accounts it holds already, or pool stripes: a reservation picks its stripe
 *      after its other accounts, SKIP LOCKED (src/ledger/pool.ts); when every
 *      stripe that fits is locked it waits for one, holding no other stripe (in a
 *      savepoint, rolled back if that one no longer fits), and takes every stripe,
 *      in id order, only when the pool binds or no single one holds enough. A
 *      deposit or withdrawal likewise takes its world stripe after its own account
 *      (lockWorldStripe in src/ledger/world.ts: SKIP LOCKED, waiting only when every
 *      stripe is locked), and locks no account after it. FOR NO KEY UPDATE does not
 *      conflict with the KEY
 *      SHARE a foreign key takes when a row referencing the account is inserted (a
 *      stream, hold, transfer, grant or member row), and no path locks an account
 *      FOR UPDATE or changes its id, so those implicit locks never wait;
 *   3. the rows its accounts lead to: holds (by id; overdue holds expired here, a
 *      hold locked by lockOpenHold, captured by the transfers trigger or grown by a
 *      top-up), an operator's allowance (operator_grants, operator_spend); then the
 *      rows it inserts (a new stream, its ticks, transfers, events: rows nobody else
 *      can see or wait for yet);
 *   4. the grant-budget advisory lock (the grants trigger).
 *
 * The triggers keep it. apply_transfers (migration 015) locks its statement's
 * accounts ascending by id before it captures a hold or moves a balance (its update
 * of the balances runs in no set order, but on rows already held), so even a writer
 * that skipped step 2 cannot take them out of order; apply_hold updates only its
 * hold's account, locked in step 2 by every writer of holds. Rows that other
 * transactions' foreign keys reference (holds, entities, operator grants) are
 * locked FOR NO KEY UPDATE too; stream rows are locked FOR UPDATE, but only the
 * transaction holding a stream's lock inserts rows that reference it.
 * test/integration/deadlocks.test.ts holds steps and probes the next, and runs a
 * storm of opens, controls, cancels and transfers asserting PostgreSQL counted no
 * deadlock.
 *
 * Locks accounts FOR NO KEY UPDATE in that order (ascending id), so two transactions
 * touching the same accounts always queue instead of deadlocking. Every money
 * movement locks through here before it reads a balance. Holds past their expiry
 * on these accounts are released first (under the lock), so the balances returned
 * are the ones the movement must respect.
 */
export async function lockAccounts(client: PoolClient, ids: string[]): Promise<Map<string, Account>> {
  const unique = [...new Set(ids)];
  // one round trip in the common case: the lock also says whether an overdue hold waits
  const lock = () =>
    client.query<AccountRow & { overdue: boolean }>({
      name: 'lock-accounts',
      text: `select a.*, exists (select 1 from holds h where h.account_id = a.id and h.status = 'open' and h.expires_at <= now()) as overdue
               from accounts a where a.id = any($1) order by a.kind = 'pool', a.id for no key update of a`,
      values: [unique],
    });
  let { rows } = await lock();
  if (rows.some((r) => r.overdue) && (await expireOverdueHolds(client, unique))) ({ rows } = await lock());
  const byId = new Map(rows.map((r) => [r.id, toAccount(r)]));
  for (const id of unique) if (!byId.has(id)) throw notFound('account', id);
  return byId;
}

/** Releases open holds past their expiry (status `expired`). The caller holds the account locks. */
async function expireOverdueHolds(db: PoolClient, accountIds: string[]): Promise<number> {
  const { rows } = await db.query<{ id: number; account_id: string; released: number; owner_id: string }>(
    `with expired as (
       update holds set released = amount - captured, status = 'expired', resolved_at = now()
        where status = 'open' and expires_at <= now() and account_id = any($1)
        returning id, account_id, released)
     select e.*, a.owner_id from expired e join accounts a on a.id = e.account_id`,
    [accountIds],
  );
  for (const r of rows) {
    await appendEvent(db, {
      type: 'hold.expired',
      subject: String(r.id),
      payload: { hold: r.id, account: r.account_id, released: r.released },
      parties: [r.owner_id],
    });
  }
  return rows.length;
}
