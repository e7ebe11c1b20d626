import type { PoolClient, Queryable } from '../db/pool';
import { compile, sql } from '../db/sql';
import { worldAccountId } from './accounts';
import { placeHoldIn } from './holds';
import { postTransfer } from './transfers';

export { POOL_SEED_UNITS_DEFAULT, POOL_STRIPES_DEFAULT } from '../domain/grants';

/**
 * The free-tier pool is held as K stripe accounts (migration 019): every account of
 * kind 'pool'. Stripe 0 is the pool's first account (migration 005), the others are
 * `sluice.pool.<i>`. The account jobs' costs are paid into is striped alike (below).
 */
export const POOL_ACCOUNT = 'sluice.pool';
export const poolStripeId = (i: number) => (i === 0 ? POOL_ACCOUNT : `${POOL_ACCOUNT}.${i}`);
/**
 * The account jobs pay into, striped like the pool (one per pool stripe): stripe 0 is
 * `sluice.jobs`, the others `sluice.jobs.<i>`. Each job keeps to the one its grant
 * names (jobsAccountOf), so a payment never queues on another job's.
 */
export const JOBS_ACCOUNT = 'sluice.jobs';
export const jobsStripeId = (i: number) => (i === 0 ? JOBS_ACCOUNT : `${JOBS_ACCOUNT}.${i}`);
const POOL_SEED_KEY = 'pool:seed';
const seedKey = (i: number) => (i === 0 ? POOL_SEED_KEY : `${POOL_SEED_KEY}:${i}`);

/**
 * Makes sure the pool has at least `stripes` stripe accounts, and the jobs account as
 * many. Run by the migrator (under its lock). Raising the setting adds empty stripes
 * (reservations spill to whichever holds enough; credits fill them); lowering it keeps
 * the stripes there are, since each may hold money and open reservations.
 */
export async function ensurePoolStripes(client: PoolClient, stripes: number): Promise<void> {
  const ids = (stripeId: (i: number) => string) => Array.from({ length: stripes }, (_, i) => stripeId(i));
  await client.query(
    `insert into accounts (id, owner_id, kind, currency)
     select id, 'sluice', kind, 'UNIT' from unnest($1::text[], $2::text[]) as s (id, kind)
     on conflict (id) do nothing`,
    [
      [...ids(poolStripeId), ...ids(jobsStripeId)],
      [...ids(() => 'pool'), ...ids(() => 'user')],
    ],
  );
}

/** The jobs account a job keeps to: by its id, over as many stripes as the pool has. */
export const jobsAccountOf = (jobId: string, stripes: number) => jobsStripeId(stripeOf(jobId, Math.max(1, stripes)));

/** FNV-1a of the id, mod n: a fixed, even spread that needs no lock and no lookup. */
function stripeOf(id: string, n: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 0x01000193);
  return (h >>> 0) % n;
}

/** The jobs account's totals over its stripes (for tests: it scans the accounts by id prefix). */
export async function jobsAccountTotals(db: Queryable): Promise<{ balance: number; held: number }> {
  const { rows } = await db.query<{ balance: number; held: number }>(
    `select coalesce(sum(balance), 0)::bigint as balance, coalesce(sum(held), 0)::bigint as held
       from accounts where id = $1 or id like $1 || '.%'`,
    [JOBS_ACCOUNT],
  );
  return rows[0]!;
}

/**
 * Seeds the pool once, spread evenly over its stripes: one deposit per stripe, keyed
 * `pool:seed` (stripe 0) and `pool:seed:<i>`, in one transaction. Run by the migrator
 * (under its lock); a later run with another amount or stripe count leaves the first
 * seed as it is.
 */
export async function seedPool(client: PoolClient, units: number): Promise<boolean> {
  if (units <= 0) return false;
  // seeded: its seed is live, or was archived (then stripe 0's first deposit is carried forward)
  const { rowCount } = await client.query(
    `select 1 from transfers where idempotency_key = $1
      union all
     select 1 from transfers_carried where kind = 'deposit' and credit_account_id = $2`,
    [POOL_SEED_KEY, POOL_ACCOUNT],
  );
  if (rowCount) return false;
  const { rows } = await client.query<{ id: string }>(`select id from accounts where kind = 'pool' order by id`);
  const stripes = [POOL_ACCOUNT, ...rows.map((r) => r.id).filter((id) => id !== POOL_ACCOUNT)];
  await client.query('begin');
  try {
    const world = await worldAccountId(client, 'UNIT');
    for (const [i, id] of stripes.entries()) {
      // the remainder of an uneven split goes to the first stripes, a unit each
      const amount = Math.floor(units / stripes.length) + (i < units % stripes.length ? 1 : 0);
      if (amount > 0) await postTransfer(client, { key: seedKey(i), kind: 'deposit', debitAccountId: world, creditAccountId: id, amount, memo: 'free-tier pool seed' });
    }
    await client.query('commit');
    return true;
  } catch (error) {
    await client.query('rollback');
    throw error;
  }
}

export interface PoolState {
  /** Stripe 0's account id (the pool's first account). */
  accountId: string;
  /** How many stripe accounts hold the pool. */
  stripes: number;
  /** The sums over the stripes. */
  balance: number;
  held: number;
  available: number;
  /** UTC day the figures below are for. */
  day: string;
  /** Captured from reservations by jobs settled that day. */
  absorbedToday: number;
  /** 10% credits of jobs settled that day. */
  creditedToday: number;
  /** Reservations open now (jobs reserved and not yet settled). */
  reservedOpen: number;
}

/** The pool's figures as one row (stripes, balance, held): the sums over its stripes. */
export const POOL_TOTALS = sql`select count(*)::int as stripes, coalesce(sum(balance), 0)::bigint as balance, coalesce(sum(held), 0)::bigint as held
                                  from accounts where kind = 'pool'`;

/** The pool's figures: the sums over its stripes, read (not locked) in one snapshot; 0 stripes before the migrations. */
export async function poolTotals(db: Queryable): Promise<{ stripes: number; balance: number; held: number; available: number }> {
  const { rows } = await db.query<{ stripes: number; balance: number; held: number }>({ name: 'pool-totals', ...compile(POOL_TOTALS) });
  const { stripes, balance, held } = rows[0]!;
  return { stripes, balance, held, available: balance - held };
}

export async function poolState(db: Queryable, day: string): Promise<PoolState> {
  const account = await poolTotals(db);
  const { rows } = await db.query<{ absorbed: number; credited: number; open: number }>(
    `select coalesce(sum(absorbed) filter (where (resolved_at at time zone 'UTC')::date = $1::date), 0)::bigint as absorbed,
            coalesce(sum(credited) filter (where (resolved_at at time zone 'UTC')::date = $1::date), 0)::bigint as credited,
            coalesce(sum(reserved - absorbed - returned) filter (where status = 'reserved'), 0)::bigint as open
       from grants`,
    [day],
  );
  return {
    accountId: POOL_ACCOUNT,
    stripes: account.stripes,
    balance: account.balance,
    held: account.held,
    available: account.available,
    day,
    absorbedToday: rows[0]!.absorbed,
    creditedToday: rows[0]!.credited,
    reservedOpen: rows[0]!.open,
  };
}

/** A pool hold of a grant: which stripe, how much. */
export interface PoolHold {
  id: number;
  accountId: string;
  amount: number;
}

/** The key of a grant's n-th pool hold (or of its capture, its release): the first keeps the job's own key. */
export const stripeKey = (key: string, n: number) => (n === 0 ? key : `${key}:${n}`);

/**
 * Reserves `amount` for a job on one stripe that holds enough, in one statement: the
 * stripe, its hold, the hold's event and the grant's link to it. First without
 * waiting (SKIP LOCKED; each job tries the stripes in its own order, so they spread);
 * when every stripe that holds enough is locked, by waiting for one of them (the
 * first in the job's order, by id: one row, so a failed recheck cannot leave another
 * locked) inside a savepoint that is rolled back if that stripe no longer holds enough
 * once its holder commits, so no stripe stays locked. Undefined when neither found
 * one: the caller then takes every stripe (lockPoolStripes) and spills.
 *
 * A stripe is the last lock a reservation takes (the lock order, accounts.ts), and a
 * reservation that waits for one holds no other stripe, so this cannot join a
 * deadlock. Under READ COMMITTED a stripe changed since the statement's snapshot is
 * re-read when locked and its `available` checked again on the version locked.
 */
export async function reserveOnOneStripe(client: PoolClient, input: { jobId: string; key: string; amount: number }): Promise<PoolHold | undefined> {
  const skipping = await placeOnStripe(client, input, 'skip locked');
  if (skipping) return skipping;
  await client.query('savepoint one_stripe');
  const waited = await placeOnStripe(client, input, 'wait');
  await client.query(waited ? 'release savepoint one_stripe' : 'rollback to savepoint one_stripe');
  return waited;
}

// the hold, its event and its link as placeHoldIn (holds.ts) writes them, in the statement
// that picks the stripe: one round trip (the stripe is already checked and locked here)
const reserveOnStripeSql = (stripe: string) => `
  with stripe as (${stripe}),
  hold as (
    insert into holds (account_id, amount, idempotency_key, reference)
    select id, $2, $3, jsonb_build_object('job', $1::text) from stripe
    returning id, account_id, amount),
  link as (insert into grant_holds (job_id, hold_id) select $1, id from hold),
  event as (
    insert into events (type, subject, payload, parties)
    select 'hold.placed', id::text, jsonb_build_object('hold', id, 'account', account_id, 'amount', amount, 'expiresAt', null), array['sluice']
      from hold)
  select id::int, account_id as "accountId", amount::int from hold`;

const RESERVE_SKIPPING = reserveOnStripeSql(
  `select id from accounts where kind = 'pool' and balance - held >= $2 order by hashtext(id || $1) limit 1 for no key update skip locked`,
);
// the candidate chosen unlocked, then that one row locked (waiting) and checked again
export const RESERVE_WAITING = reserveOnStripeSql(
  `select a.id from accounts a
    where a.id = (select id from accounts where kind = 'pool' and balance - held >= $2 order by hashtext(id || $1) limit 1)
      and a.balance - a.held >= $2
      for no key update`,
);

async function placeOnStripe(client: PoolClient, input: { jobId: string; key: string; amount: number }, mode: 'skip locked' | 'wait'): Promise<PoolHold | undefined> {
  const { rows } = await client.query<PoolHold>({
    name: mode === 'wait' ? 'pool-reserve-waiting' : 'pool-reserve-skipping',
    text: mode === 'wait' ? RESERVE_WAITING : RESERVE_SKIPPING,
    values: [input.jobId, input.amount, input.key],
  });
  return rows[0];
}

/** Every stripe, locked (waiting, in id order: the last step of the lock order), fullest first. */
export async function lockPoolStripes(client: PoolClient): Promise<{ id: string; available: number }[]> {
  const { rows } = await client.query<{ id: string; available: number }>(
    `select id, balance - held as available from accounts where kind = 'pool' order by id for no key update`,
  );
  return rows.sort((a, b) => b.available - a.available || (a.id < b.id ? -1 : 1));
}

/**
 * Reserves `amount` across stripes locked by lockPoolStripes, fullest first (so a
 * spill takes as few holds as it can), one hold per stripe used, each linked to the
 * grant. The caller decided `amount` from the stripes' sum, so it is there.
 */
export async function reserveAcrossStripes(
  client: PoolClient,
  input: { jobId: string; key: string; amount: number },
  stripes: { id: string; available: number }[],
): Promise<PoolHold[]> {
  const holds: PoolHold[] = [];
  let left = input.amount;
  for (const stripe of stripes) {
    if (left === 0) break;
    const take = Math.min(left, stripe.available);
    if (take <= 0) continue;
    const hold = await placeHoldIn(client, { key: stripeKey(input.key, holds.length), accountId: stripe.id, amount: take, reference: { job: input.jobId } });
    await client.query('insert into grant_holds (job_id, hold_id) values ($1, $2)', [input.jobId, hold.id]);
    holds.push({ id: hold.id, accountId: stripe.id, amount: take });
    left -= take;
  }
  if (left > 0) throw new Error(`the pool's stripes hold ${input.amount - left} of the ${input.amount} reserved`);
  return holds;
}

/** A grant's pool holds, oldest first (the order settlement captures them in). */
export async function grantHolds(db: Queryable, jobId: string): Promise<(PoolHold & { captured: number; released: number; status: string })[]> {
  const { rows } = await db.query(
    `select h.id::int, h.account_id as "accountId", h.amount::int, h.captured::int, h.released::int, h.status
       from grant_holds gh join holds h on h.id = gh.hold_id where gh.job_id = $1 order by h.id`,
    [jobId],
  );
  return rows;
}

/**
 * The stripe a job's 10% credit goes to when it holds none of its own: any unlocked
 * one (SKIP LOCKED, in the job's own order, so credits spread), else stripe 0, waiting.
 */
export async function creditStripe(client: PoolClient, jobId: string): Promise<string> {
  const { rows } = await client.query<{ id: string }>(
    `select id from accounts where kind = 'pool' order by hashtext(id || $1) limit 1 for no key update skip locked`,
    [jobId],
  );
  return rows[0]?.id ?? POOL_ACCOUNT;
}
