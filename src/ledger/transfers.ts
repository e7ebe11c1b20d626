import type { Pool, PoolClient, Queryable } from '../db/pool';
import { withTransaction } from '../db/pool';
import { compile, params, sql, type Sql } from '../db/sql';
import { SluiceError } from '../domain/errors';
import { assertUnits } from '../domain/money';
import { getAccount, lockAccounts, toAccount, worldAccountId, type Account, type AccountRow } from './accounts';
import { lockWorldStripe } from './world';
import { idempotent, requestHash } from './idempotency';

/** What a transfer row may point at, so the auditor can tie money to its cause. */
export interface TransferRefs {
  holdId?: number;
  paymentRef?: string;
  streamRef?: string;
  tick?: number;
  jobId?: string;
  subaccountId?: string;
}

export interface TransferInput extends TransferRefs {
  key: string;
  kind: string;
  debitAccountId: string;
  creditAccountId: string;
  amount: number;
  memo?: string;
}

export interface Transfer extends TransferInput {
  id: number;
  createdAt: string;
}

export function toTransfer(r: Record<string, any>): Transfer {
  const t: Transfer = {
    id: r.id,
    key: r.idempotency_key,
    kind: r.kind,
    debitAccountId: r.debit_account_id,
    creditAccountId: r.credit_account_id,
    amount: r.amount,
    createdAt: r.created_at.toISOString(),
  };
  if (r.hold_id != null) t.holdId = r.hold_id;
  if (r.payment_ref != null) t.paymentRef = r.payment_ref;
  if (r.stream_ref != null) t.streamRef = r.stream_ref;
  if (r.tick != null) t.tick = r.tick;
  if (r.job_id != null) t.jobId = r.job_id;
  if (r.subaccount_id != null) t.subaccountId = r.subaccount_id;
  if (r.memo != null) t.memo = r.memo;
  return t;
}

/** The only transfer kinds that may touch the world account. */
const WORLD_KINDS = new Set(['deposit', 'withdrawal']);
/**
 * The only transfer kinds that may touch a pool account: its seed and top-ups, what
 * jobs absorb, the share of payments credited back. The auditor's pool conservation
 * counts exactly these, so an admin transfer, withdrawal, payment, stream or job
 * paid out of the pool is refused instead of turning the auditor red.
 */
const POOL_KINDS = new Set(['deposit', 'job_absorb', 'pool_credit']);

export function assertCanDebit(account: Account, amount: number): void {
  if (account.kind !== 'world' && account.available < amount) {
    throw new SluiceError('insufficient_funds', `account ${account.id} has ${account.available} available, needs ${amount}`, {
      account: account.id,
      available: account.available,
      required: amount,
    });
  }
}

/**
 * More writes that belong to the same statement as the transfer: common table
 * expressions that may read the inserted row as `t`, written with the sql tag and
 * their own named parameters (src/db/sql.ts numbers them where they are composed).
 * `name` keeps the prepared statement apart: the same name, the same `ctes` text. A
 * stream tick records itself this way, one round trip instead of two.
 */
export interface AlongWithTransfer {
  name: string;
  ctes: Sql;
}

/**
 * Posts one transfer inside the caller's transaction: locks both accounts (global
 * order), checks the currency and the funds, inserts the row (the database trigger
 * moves the balances and, for a capture, the hold) and appends the event.
 * With `holdId` the debit comes out of that hold (a capture), not out of available funds.
 * A caller that already holds both accounts' locks passes them as `locked`.
 */
export async function postTransfer(
  client: PoolClient,
  input: TransferInput,
  locked?: Map<string, Account>,
  along?: AlongWithTransfer,
  opts: { storeAsKeyResult?: boolean } = {},
): Promise<Transfer> {
  assertUnits(input.amount, 'amount');
  if (input.debitAccountId === input.creditAccountId) {
    throw new SluiceError('invalid_request', 'a transfer needs two different accounts', { account: input.debitAccountId });
  }
  const accounts =
    locked?.has(input.debitAccountId) && locked.has(input.creditAccountId)
      ? locked
      : await lockAccounts(client, [input.debitAccountId, input.creditAccountId]);
  const debit = accounts.get(input.debitAccountId)!;
  const credit = accounts.get(input.creditAccountId)!;
  if (debit.currency !== credit.currency) {
    throw new SluiceError('currency_mismatch', `cannot move ${debit.currency} into a ${credit.currency} account`, {
      debit: debit.id,
      credit: credit.id,
    });
  }
  if ((debit.kind === 'world' || credit.kind === 'world') && !WORLD_KINDS.has(input.kind)) {
    throw new SluiceError('forbidden', 'the world account moves only through deposits and withdrawals (admin)', { kind: input.kind });
  }
  if ((debit.kind === 'pool' || credit.kind === 'pool') && !POOL_KINDS.has(input.kind)) {
    throw new SluiceError('forbidden', 'the pool moves only through deposits and the grants of jobs', { kind: input.kind });
  }
  if (input.holdId === undefined) assertCanDebit(debit, input.amount);
  if (credit.balance + input.amount > Number.MAX_SAFE_INTEGER || debit.balance - input.amount < -Number.MAX_SAFE_INTEGER) {
    throw new SluiceError('limit_exceeded', `a balance would leave the exact integer range (±${Number.MAX_SAFE_INTEGER})`, {
      debit: debit.id,
      credit: credit.id,
    });
  }
  const { key, kind, amount, holdId, paymentRef, streamRef, tick, jobId, subaccountId, memo } = input;
  // the event describes the transfer as toTransfer shows it; undefined fields drop out
  const described: TransferInput = { key, kind, debitAccountId: debit.id, creditAccountId: credit.id, amount, holdId, paymentRef, streamRef, tick, jobId, subaccountId, memo };
  // the row and its transfer.posted event in one statement (one round trip); the
  // event's id and createdAt are the inserted row's. With storeAsKeyResult the same
  // description is stored as the result of the idempotency key (inserted earlier in
  // this transaction, row `input.key`) and returned, so a replay returns exactly it.
  const store = opts.storeAsKeyResult === true;
  const v = params({
    key, kind, debit: debit.id, credit: credit.id, amount, holdId: holdId ?? null, paymentRef: paymentRef ?? null, streamRef: streamRef ?? null,
    tick: tick ?? null, jobId: jobId ?? null, subaccountId: subaccountId ?? null, memo: memo ?? null,
    described: JSON.stringify(described), parties: [...new Set([debit.ownerId, credit.ownerId])],
  });
  const { rows } = await client.query({
    name: `post-transfer${along ? `:${along.name}` : ''}${store ? ':keyed' : ''}`,
    ...compile(sql`with t as (
             insert into transfers (idempotency_key, kind, debit_account_id, credit_account_id, amount,
                                    hold_id, payment_ref, stream_ref, tick, job_id, subaccount_id, memo)
             values (${v.key}, ${v.kind}, ${v.debit}, ${v.credit}, ${v.amount}, ${v.holdId}, ${v.paymentRef}, ${v.streamRef}, ${v.tick}, ${v.jobId}, ${v.subaccountId}, ${v.memo}) returning *),
           p as (
             select t.id, ${v.described}::jsonb || jsonb_build_object('id', t.id, 'createdAt', to_char(t.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')) as payload
               from t),
           e as (
             insert into events (type, subject, payload, parties)
             select 'transfer.posted', p.id::text, p.payload, ${v.parties} from p)${store ? sql`,
           r as (update idempotency_keys k set result = p.payload from p where k.key = ${v.key} returning k.result)` : sql``}${along ? sql`,
           ${along.ctes}` : sql``}
           select t.*${store ? sql`, (select result from r) as stored_result` : sql``} from t`),
  });
  if (store && !rows[0].stored_result) throw new Error(`idempotency key ${key} is not this transaction's to store a result under`);
  return store ? (rows[0].stored_result as Transfer) : toTransfer(rows[0]);
}

/**
 * A standalone idempotent transfer: its own transaction, keyed by `input.key`, in two
 * statements between BEGIN and COMMIT (it was four): the key row and the accounts'
 * locks in one (the key first, as the lock order says: the accounts are locked only
 * once the key row is this transaction's), the transfer, its event and the key's
 * stored result in the other. A replay, a capture, an overdue hold or a refusal
 * takes the general path (idempotent + postTransfer) or throws from it.
 */
export function transfer(pool: Pool, input: TransferInput): Promise<Transfer> {
  const operation = `transfer:${input.kind}`;
  const general = (client: PoolClient) => idempotent(client, input.key, operation, input, () => postTransfer(client, input));
  if (input.holdId !== undefined || input.debitAccountId === input.creditAccountId) return withTransaction(pool, general);
  return withTransaction(pool, async (client) => {
    const { rows } = await client.query<AccountRow & { fresh: boolean; overdue: boolean | null }>({
      name: 'transfer-key-and-lock',
      text: `with k as (
               insert into idempotency_keys (key, operation, request_hash) values ($1, $2, $3)
               on conflict (key) do nothing returning key)
             select f.fresh, a.*
               from (select exists (select 1 from k) as fresh) f
               left join lateral (
                 select a.*, exists (select 1 from holds h where h.account_id = a.id and h.status = 'open' and h.expires_at <= now()) as overdue
                   from accounts a where f.fresh and a.id = any($4) order by a.kind = 'pool', a.id for no key update of a) a on true`,
      values: [input.key, operation, requestHash(operation, input), [input.debitAccountId, input.creditAccountId]],
    });
    // the key was taken before: a replay (or a conflict), answered from the stored row
    if (!rows[0]!.fresh) return general(client);
    const found = rows.filter((r) => r.id !== null);
    const locked =
      found.length === 2 && !found.some((r) => r.overdue)
        ? new Map(found.map((r) => [r.id, toAccount(r)]))
        : await lockAccounts(client, [input.debitAccountId, input.creditAccountId]); // throws not_found; expires overdue holds
    return postTransfer(client, input, locked, undefined, { storeAsKeyResult: true });
  });
}

/** Money enters from a stripe of the world account of the account's currency (src/ledger/world.ts). */
export function deposit(pool: Pool, input: { key: string; accountId: string; amount: number; memo?: string }): Promise<Transfer> {
  return moveWithWorld(pool, 'deposit', input);
}

/** Money leaves to a stripe of the world account; refused beyond the available balance. */
export function withdraw(pool: Pool, input: { key: string; accountId: string; amount: number; memo?: string }): Promise<Transfer> {
  return moveWithWorld(pool, 'withdrawal', input);
}

/**
 * A deposit or withdrawal in its own transaction, keyed by `input.key`: the account is
 * locked first, then a world stripe nobody holds (lockWorldStripe), so concurrent
 * movements do not queue on one world row. The request is hashed naming the world's
 * stripe 0 (the world as the caller sees it), so a replay matches whichever stripe
 * the first attempt took.
 */
async function moveWithWorld(
  pool: Pool,
  kind: 'deposit' | 'withdrawal',
  input: { key: string; accountId: string; amount: number; memo?: string },
): Promise<Transfer> {
  const { currency, world } = await worldFor(pool, input.accountId);
  const toOrFrom = (worldSide: string) =>
    kind === 'deposit' ? { debitAccountId: worldSide, creditAccountId: input.accountId } : { debitAccountId: input.accountId, creditAccountId: worldSide };
  const request: TransferInput = { key: input.key, kind, ...toOrFrom(world), amount: input.amount, memo: input.memo };
  return withTransaction(pool, (client) =>
    idempotent(client, input.key, `transfer:${kind}`, request, async () => {
      const locked = await lockAccounts(client, [input.accountId]);
      const stripe = await lockWorldStripe(client, currency, input.key);
      // the stripe is locked (above); its row is read, not locked again
      locked.set(stripe, await getAccount(client, stripe));
      return postTransfer(client, { ...request, ...toOrFrom(stripe) }, locked);
    }),
  );
}

async function worldFor(db: Queryable, accountId: string): Promise<{ currency: string; world: string }> {
  const { rows } = await db.query<{ currency: string; kind: string }>('select currency, kind from accounts where id = $1', [accountId]);
  if (!rows[0]) throw new SluiceError('not_found', `account ${accountId} not found`, { account: accountId });
  if (rows[0].kind === 'world') throw new SluiceError('invalid_request', 'the world account is the other side of deposits and withdrawals, not their account', { account: accountId });
  return { currency: rows[0].currency, world: await worldAccountId(db, rows[0].currency) };
}

export async function getTransfer(db: Queryable, id: number): Promise<Transfer | undefined> {
  const { rows } = await db.query('select * from transfers where id = $1', [id]);
  return rows[0] ? toTransfer(rows[0]) : undefined;
}
