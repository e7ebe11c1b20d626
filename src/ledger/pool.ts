import type { PoolClient, Queryable } from '../db/pool';
import { getAccount, worldAccountId } from './accounts';
import { postTransfer } from './transfers';

export { POOL_SEED_UNITS_DEFAULT } from '../domain/grants';

/** The free-tier pool's account, and the account jobs' costs are paid into (migration 005). */
export const POOL_ACCOUNT = 'sluice.pool';
export const JOBS_ACCOUNT = 'sluice.jobs';
const POOL_SEED_KEY = 'pool:seed';

/**
 * Seeds the pool once: a deposit keyed `pool:seed`. Run by the migrator (under its
 * lock); a later run with another amount leaves the first seed as it is.
 */
export async function seedPool(client: PoolClient, units: number): Promise<boolean> {
  if (units <= 0) return false;
  const { rowCount } = await client.query('select 1 from transfers where idempotency_key = $1', [POOL_SEED_KEY]);
  if (rowCount) return false;
  await client.query('begin');
  try {
    await postTransfer(client, { key: POOL_SEED_KEY, kind: 'deposit', debitAccountId: await worldAccountId(client, 'UNIT'), creditAccountId: POOL_ACCOUNT, amount: units, memo: 'free-tier pool seed' });
    await client.query('commit');
    return true;
  } catch (error) {
    await client.query('rollback');
    throw error;
  }
}

export interface PoolState {
  accountId: string;
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

export async function poolState(db: Queryable, day: string): Promise<PoolState> {
  const account = await getAccount(db, POOL_ACCOUNT);
  const { rows } = await db.query<{ absorbed: number; credited: number; open: number }>(
    `select coalesce(sum(absorbed) filter (where (resolved_at at time zone 'UTC')::date = $1::date), 0)::bigint as absorbed,
            coalesce(sum(credited) filter (where (resolved_at at time zone 'UTC')::date = $1::date), 0)::bigint as credited,
            coalesce(sum(reserved - absorbed - returned) filter (where status = 'reserved'), 0)::bigint as open
       from grants`,
    [day],
  );
  return {
    accountId: account.id,
    balance: account.balance,
    held: account.held,
    available: account.available,
    day,
    absorbedToday: rows[0]!.absorbed,
    creditedToday: rows[0]!.credited,
    reservedOpen: rows[0]!.open,
  };
}
