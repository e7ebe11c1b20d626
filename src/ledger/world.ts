import type { PoolClient, Queryable } from '../db/pool';
import { SluiceError } from '../domain/errors';

/**
 * The world side of deposits and withdrawals is held as K stripe accounts per
 * currency (migration 017): every account of kind 'world'. Stripe 0 is the currency's
 * first world account (`world` for UNIT), the others `<stripe 0>.<i>`. The world is the
 * contra account, so any stripe may go negative and the world's balance is the sum of
 * its stripes.
 */
export { WORLD_STRIPES_DEFAULT } from '../domain/settings';

/**
 * Makes sure every currency with a world account has at least `stripes` stripes. Run
 * by the migrator (under its lock), idempotently; lowering the setting removes none
 * (each stripe carries part of the world's history).
 */
export async function ensureWorldStripes(db: Queryable, stripes: number): Promise<void> {
  await db.query(
    `insert into accounts (id, owner_id, kind, currency)
     select w.id || '.' || i, w.owner_id, 'world', w.currency
       from (select distinct on (currency) id, owner_id, currency from accounts where kind = 'world' order by currency, id) w,
            generate_series(1, $1::int - 1) as i
     on conflict (id) do nothing`,
    [stripes],
  );
}

/**
 * Locks a world stripe of `currency` for a deposit or withdrawal and returns its id:
 * one nobody holds (FOR NO KEY UPDATE SKIP LOCKED), trying the stripes from a position
 * spread by `spreadKey`, so concurrent movements take different stripes; only when
 * every stripe is locked, it waits for the one at that position.
 *
 * The lock order (src/ledger/accounts.ts): a world stripe is the last account a
 * deposit or withdrawal locks, after its own account. The SKIP LOCKED pick never
 * waits, so it cannot close a cycle; the waiting pick waits while holding only
 * accounts of earlier steps, and whoever holds a world stripe takes no further
 * account after it, so it never waits for them.
 */
export async function lockWorldStripe(client: PoolClient, currency: string, spreadKey: string): Promise<string> {
  const pick = (skipLocked: boolean) =>
    client.query<{ id: string }>({
      name: skipLocked ? 'world-stripe-free' : 'world-stripe-wait',
      text: `select id from accounts where kind = 'world' and currency = $1 order by hashtext(id || $2) limit 1
               for no key update${skipLocked ? ' skip locked' : ''}`,
      values: [currency, spreadKey],
    });
  const id = (await pick(true)).rows[0]?.id ?? (await pick(false)).rows[0]?.id;
  if (!id) throw new SluiceError('invalid_request', `no world account for currency ${currency}`, { currency });
  return id;
}
