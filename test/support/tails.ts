import { setTimeout as sleep } from 'node:timers/promises';
import type { Pool } from '../../src/db/pool';

/**
 * The tails (events, rate events, webhook deliveries) show a row once every
 * transaction of its database that began writing before it has ended
 * (src/ledger/tails.ts, tail_horizon()). A test that reads a tail for rows it just
 * wrote waits for that horizon first.
 */
export const TAIL_HORIZON_WAIT_MS = 60_000;

/** Waits until every transaction up to `xid` has ended, as a fresh snapshot sees it. */
export async function untilHorizonPasses(pool: Pool, xid: string, waitMs = TAIL_HORIZON_WAIT_MS): Promise<void> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const { rows } = await pool.query<{ past: boolean }>('select tail_horizon() > $1::xid8 as past', [xid]);
    if (rows[0]!.past) return;
    if (Date.now() > deadline) {
      const oldest = (
        await pool.query(
          `select datname, state, backend_xid::text as xid, (now() - xact_start)::text as age, left(query, 120) as query
             from pg_stat_activity where backend_xid is not null and datname = current_database() order by age(backend_xid) desc limit 1`,
        )
      ).rows[0];
      throw new Error(`a transaction older than ${xid} is still in flight in this database after ${waitMs} ms: ${JSON.stringify(oldest)}`);
    }
    await sleep(20);
  }
}

/** Waits until the tails show every row committed before this call. */
export async function untilTailsCaughtUp(pool: Pool, waitMs = TAIL_HORIZON_WAIT_MS): Promise<void> {
  // a transaction that begins after all of them: once the horizon passes it, they have all ended
  const { rows } = await pool.query<{ xid: string }>('select pg_current_xact_id()::text as xid');
  await untilHorizonPasses(pool, rows[0]!.xid, waitMs);
}
