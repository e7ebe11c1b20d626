import fc from 'fast-check';
import { NO_OFFER, type SellerState } from '../../src/domain/crown';
import type { Queryable } from '../../src/db/pool';
import { statesBefore } from '../../src/ledger/rates';
import { createTestDatabase, type TestDatabase } from '../support/db';

/**
 * statesBefore reads each seller's state in a market from rate_states (migrations 018
 * and 021, folded by a trigger per (market, seller)); before, it probed rate_events
 * three times per seller. The probing query, restricted to the market, is kept here
 * as the oracle: on random events in two markets (several per tick, fields set
 * independently, ticks posted out of order, one row or many per insert), both give
 * the same map at every window start, in each market.
 */
let db: TestDatabase;
const SELLERS = ['s1', 's2', 's3', 's4'];
const MARKETS = ['default', 'gpu-bids'];

beforeAll(async () => {
  db = await createTestDatabase();
  // s5 posts in the last test only
  await db.pool.query(`insert into parties (id, name) select s, s from unnest($1::text[]) s`, [[...SELLERS, 's5']]);
  await db.pool.query(`insert into sellers (id) select s from unnest($1::text[]) s`, [[...SELLERS, 's5']]);
  await db.pool.query(`insert into markets (id, direction) values ('gpu-bids', 'bid')`);
});
afterAll(() => db.drop());

/** The probing statesBefore, as it was before migration 018, within one market. */
async function probedStatesBefore(q: Queryable, market: string, from: number): Promise<Map<string, SellerState>> {
  const { rows } = await q.query<{ seller: string; rate: number | null; active: boolean | null; busy: boolean | null }>(
    `select s.id as seller,
            (select e.rate from rate_events e where e.market = $2 and e.seller = s.id and e.tick < $1 and e.rate is not null order by e.tick desc, e.id desc limit 1) as rate,
            (select e.active from rate_events e where e.market = $2 and e.seller = s.id and e.tick < $1 and e.active is not null order by e.tick desc, e.id desc limit 1) as active,
            (select e.busy from rate_events e where e.market = $2 and e.seller = s.id and e.tick < $1 and e.busy is not null order by e.tick desc, e.id desc limit 1) as busy
       from sellers s
      where exists (select 1 from rate_events e where e.market = $2 and e.seller = s.id and e.tick < $1)`,
    [from, market],
  );
  return new Map(rows.map((r) => [r.seller, { rate: r.rate ?? NO_OFFER.rate, active: r.active ?? NO_OFFER.active, busy: r.busy ?? NO_OFFER.busy }]));
}

const change = (markets: string[]) =>
  fc
    .record({
      market: fc.constantFrom(...markets),
      seller: fc.constantFrom(...SELLERS),
      tick: fc.integer({ min: 0, max: 30 }),
      rate: fc.option(fc.integer({ min: 0, max: 5 })),
      active: fc.option(fc.boolean()),
      busy: fc.option(fc.boolean()),
    })
    .filter((e) => e.rate !== null || e.active !== null || e.busy !== null);
type Change = { market: string; seller: string; tick: number; rate: number | null; active: boolean | null; busy: boolean | null };

let base = 0;
/** Inserts batches of changes in ticks of their own (rate_events is append-only: earlier runs stay before them); returns the first tick. */
async function insert(q: Queryable, batches: Change[][]): Promise<number> {
  const at = (base += 100);
  for (const batch of batches) {
    await q.query(
      `insert into rate_events (market, seller, tick, rate, active, busy) select * from unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::boolean[], $6::boolean[])`,
      [batch.map((e) => e.market), batch.map((e) => e.seller), batch.map((e) => at + e.tick), batch.map((e) => e.rate), batch.map((e) => e.active), batch.map((e) => e.busy)],
    );
  }
  return at;
}

describe('the state before a window, from the snapshot', () => {
  test('migrations 018 then 021 on a database that already holds events (all in the default market, as before markets) fold them as the probes read them', async () => {
    const batches = fc.sample(fc.array(change(['default']), { minLength: 1, maxLength: 6 }), { numRuns: 20, seed: 21 });
    await insert(db.pool, batches);
    // the backfills are the migrations' own: drop the snapshot, run 018's fold and 021's part again, compare
    const read = (file: string) => (require('node:fs') as typeof import('node:fs')).readFileSync(`${__dirname}/../../src/db/migrations/${file}`, 'utf8');
    const markets = read('021_markets.sql');
    const snapshotPart = markets.slice(markets.indexOf("-- From here on, the snapshot's part"));
    const client = await db.pool.connect();
    try {
      await client.query('begin');
      await client.query('drop trigger rate_events_fold_state on rate_events');
      await client.query('drop table rate_states');
      await client.query('drop table market_sellers');
      await client.query('drop function fold_rate_state()');
      await client.query(read('018_crown_snapshot.sql'));
      await client.query(snapshotPart);
      for (let from = 0; from <= base + 31; from += 3) {
        expect(await statesBefore(client, 'default', from)).toEqual(await probedStatesBefore(client, 'default', from));
        expect(await statesBefore(client, 'gpu-bids', from)).toEqual(new Map());
      }
      await client.query('commit');
    } catch (error) {
      await client.query('rollback');
      throw error;
    } finally {
      client.release();
    }
  });

  test('equals the old per-field probes of rate_events within each market at every window start, whatever order the ticks were posted in', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(change(MARKETS), { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 12 }), async (inserts) => {
        const at = await insert(db.pool, inserts);
        for (let from = at; from <= at + 31; from++) {
          for (const market of MARKETS) expect(await statesBefore(db.pool, market, from)).toEqual(await probedStatesBefore(db.pool, market, from));
        }
      }),
      { numRuns: 40, seed: 18 },
    );
  });

  test('a seller posting to two markets has a state in each, folded from its events there only', async () => {
    const at = await insert(db.pool, [
      [
        { market: 'default', seller: 's5', tick: 0, rate: 3, active: true, busy: false },
        { market: 'gpu-bids', seller: 's5', tick: 1, rate: 9, active: null, busy: null },
        { market: 'default', seller: 's5', tick: 2, rate: null, active: null, busy: true },
      ],
    ]);
    expect((await statesBefore(db.pool, 'default', at + 3)).get('s5')).toEqual({ rate: 3, active: true, busy: true });
    expect((await statesBefore(db.pool, 'gpu-bids', at + 3)).get('s5')).toEqual({ rate: 9, active: false, busy: false });
  });
});
