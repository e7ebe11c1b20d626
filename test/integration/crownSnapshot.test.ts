import fc from 'fast-check';
import { NO_OFFER, type SellerState } from '../../src/domain/crown';
import type { Queryable } from '../../src/db/pool';
import { statesBefore } from '../../src/ledger/rates';
import { createTestDatabase, type TestDatabase } from '../support/db';

/**
 * statesBefore reads each seller's state from rate_states (migration 018, folded by a
 * trigger); before, it probed rate_events three times per seller. The probing query
 * is kept here as the oracle: on random events (several per tick, fields set
 * independently, ticks posted out of order, one row or many per insert), both give
 * the same map at every window start.
 */
let db: TestDatabase;
const SELLERS = ['s1', 's2', 's3', 's4'];

beforeAll(async () => {
  db = await createTestDatabase();
  await db.pool.query(`insert into parties (id, name) select s, s from unnest($1::text[]) s`, [SELLERS]);
  await db.pool.query(`insert into sellers (id) select s from unnest($1::text[]) s`, [SELLERS]);
});
afterAll(() => db.drop());

/** The probing statesBefore, as it was before migration 018. */
async function probedStatesBefore(q: Queryable, from: number): Promise<Map<string, SellerState>> {
  const { rows } = await q.query<{ seller: string; rate: number | null; active: boolean | null; busy: boolean | null }>(
    `select s.id as seller,
            (select e.rate from rate_events e where e.seller = s.id and e.tick < $1 and e.rate is not null order by e.tick desc, e.id desc limit 1) as rate,
            (select e.active from rate_events e where e.seller = s.id and e.tick < $1 and e.active is not null order by e.tick desc, e.id desc limit 1) as active,
            (select e.busy from rate_events e where e.seller = s.id and e.tick < $1 and e.busy is not null order by e.tick desc, e.id desc limit 1) as busy
       from sellers s
      where exists (select 1 from rate_events e where e.seller = s.id and e.tick < $1)`,
    [from],
  );
  return new Map(rows.map((r) => [r.seller, { rate: r.rate ?? NO_OFFER.rate, active: r.active ?? NO_OFFER.active, busy: r.busy ?? NO_OFFER.busy }]));
}

const change = fc
  .record({
    seller: fc.constantFrom(...SELLERS),
    tick: fc.integer({ min: 0, max: 30 }),
    rate: fc.option(fc.integer({ min: 0, max: 5 })),
    active: fc.option(fc.boolean()),
    busy: fc.option(fc.boolean()),
  })
  .filter((e) => e.rate !== null || e.active !== null || e.busy !== null);

describe('the state before a window, from the snapshot', () => {
  test('equals the old per-field probes of rate_events at every window start, whatever order the ticks were posted in', async () => {
    let base = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(change, { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 12 }), async (inserts) => {
        // each run in ticks of its own (rate_events is append-only): earlier runs stay before it, the same for both readers
        const at = (base += 100);
        for (const batch of inserts) {
          await db.pool.query(
            `insert into rate_events (seller, tick, rate, active, busy) select * from unnest($1::text[], $2::bigint[], $3::bigint[], $4::boolean[], $5::boolean[])`,
            [batch.map((e) => e.seller), batch.map((e) => at + e.tick), batch.map((e) => e.rate), batch.map((e) => e.active), batch.map((e) => e.busy)],
          );
        }
        for (let from = at; from <= at + 31; from++) expect(await statesBefore(db.pool, from)).toEqual(await probedStatesBefore(db.pool, from));
      }),
      { numRuns: 40, seed: 18 },
    );
  });

  test('migration 018 on a database that already holds events folds them as the probes read them (the fresh database of this file ran it too)', async () => {
    // the backfill is the migration's own loop: drop the snapshot, run the migration's fold again, compare
    const sql = (await import('node:fs')).readFileSync(`${__dirname}/../../src/db/migrations/018_crown_snapshot.sql`, 'utf8');
    const client = await db.pool.connect();
    try {
      await client.query('begin');
      await client.query('drop trigger rate_events_fold_state on rate_events');
      await client.query('drop table rate_states');
      await client.query('drop function fold_rate_state()');
      await client.query(sql);
      for (let from = 0; from <= 100 * 41; from += 7) expect(await statesBefore(client, from)).toEqual(await probedStatesBefore(client, from));
      await client.query('commit');
    } catch (error) {
      await client.query('rollback');
      throw error;
    } finally {
      client.release();
    }
  });
});
