import type { Pool, PoolClient, Queryable } from '../db/pool';
import { withTransaction } from '../db/pool';
import { postTransfer } from './transfers';
import { crownIntervals, crownTicks, crownTimeOf, splitReward, tickAt, type CrownInterval, type Direction, type RateEvent, type SellerState, type Window } from '../domain/crown';
import { notFound, SluiceError } from '../domain/errors';
import { getAccount, lockAccounts } from './accounts';
import { DEFAULT_MARKET, getMarket } from './markets';
import { appendEvent } from './events';
import { pageRows } from './paging';
import { readTail } from './tails';

/**
 * The rate board's storage: events in, replays out. The rules live in
 * src/domain/crown.ts; this file only reads the state before a window and the
 * events inside it. Every read and write names a market (migration 021): a
 * market's crown is replayed from its own events only, with its own direction.
 */
export interface RateEventRow {
  id: number;
  market: string;
  seller: string;
  tick: number;
  rate: number | null;
  active: boolean | null;
  busy: boolean | null;
  created_at: Date;
}

export function toRateEvent(r: Pick<RateEventRow, 'id' | 'seller' | 'tick' | 'rate' | 'active' | 'busy'>): RateEvent {
  // fields set one by one, not spread: a replay converts every row of its window
  const event: RateEvent = { id: r.id, seller: r.seller, tick: r.tick };
  if (r.rate !== null) event.rate = r.rate;
  if (r.active !== null) event.active = r.active;
  if (r.busy !== null) event.busy = r.busy;
  return event;
}

/**
 * One lock serialises the rate board's writers: "now" is read under it, so an event
 * for tick t cannot land in a window that rewards have already paid (rewards take the
 * same lock and only pay windows that are over). The tail does not rely on it: it
 * reads in commit order whoever writes (src/ledger/tails.ts).
 */
async function lockRateBoard(client: PoolClient): Promise<void> {
  await client.query('select pg_advisory_xact_lock(hashtext($1))', ['rate-board']);
}

/** The rate board's clock as a tick (injectable for tests). */
export type TickClock = () => number;
const wallClock: TickClock = () => tickAt(Date.now());

/**
 * Records a seller's change effective from `tick` (default now; never in the past:
 * replays of past windows must not change). Registers the seller, and its payout
 * account when given, on first use. One transaction: the seller, the event and its
 * log entry commit together.
 */
export function postRateEvent(
  pool: Pool,
  input: { seller: string; market?: string; tick?: number; accountId?: string; rate?: number; active?: boolean; busy?: boolean },
  clock: TickClock = wallClock,
): Promise<RateEvent & { market: string; createdAt: string }> {
  const market = input.market ?? DEFAULT_MARKET;
  return withTransaction(pool, async (db) => {
    await lockRateBoard(db);
    await getMarket(db, market); // an unknown market is a 404, before anything is written
    const nowTick = clock();
    const tick = input.tick ?? nowTick;
    if (tick < nowTick) {
      throw new SluiceError('invalid_request', `tick ${tick} is in the past (now ${nowTick}): history is not rewritten`, { tick, now: nowTick });
    }
    if (input.accountId !== undefined) {
      const account = await getAccount(db, input.accountId);
      if (account.ownerId !== input.seller) throw new SluiceError('forbidden', `account ${input.accountId} is not ${input.seller}'s`);
    }
    try {
      await db.query(
        `insert into sellers (id, account_id) values ($1, $2) on conflict (id) do update set account_id = coalesce(excluded.account_id, sellers.account_id)`,
        [input.seller, input.accountId ?? null],
      );
    } catch (error) {
      if ((error as { code?: string }).code === '23503') throw notFound('party', input.seller);
      throw error;
    }
    const { rows } = await db.query<RateEventRow>(
      `insert into rate_events (market, seller, tick, rate, active, busy) values ($1, $2, $3, $4, $5, $6) returning *`,
      [market, input.seller, tick, input.rate ?? null, input.active ?? null, input.busy ?? null],
    );
    const event = { ...toRateEvent(rows[0]!), market };
    await appendEvent(db, { type: 'rate.posted', subject: input.seller, payload: { ...event }, parties: [input.seller] });
    return { ...event, createdAt: rows[0]!.created_at.toISOString() };
  });
}

/** Rate events in one page of the tail at most. */
export const RATE_EVENTS_PAGE_MAX = 1000;

/** Rate events after a cursor (0 or a rate event's id), in commit order (src/ledger/tails.ts). */
export async function listRateEvents(db: Queryable, after: number, limit: number): Promise<Array<RateEvent & { market: string; createdAt: string }>> {
  const rows = await readTail<RateEventRow>(db, {
    table: 'rate_events',
    columns: 't.id, t.market, t.seller, t.tick, t.rate, t.active, t.busy, t.created_at',
    after,
    limit: pageRows(limit, RATE_EVENTS_PAGE_MAX),
  });
  return rows.map((r) => ({ ...toRateEvent(r), market: r.market, createdAt: r.created_at.toISOString() }));
}

/** A row of readWindow: a seller's whole state (tick before the window) or an event inside it. */
interface WindowRow {
  seller: string;
  tick: number;
  id: number;
  rate: number | null;
  active: boolean | null;
  busy: boolean | null;
}

/**
 * What a replay of a market's window reads, in one statement (one snapshot, one
 * round trip): each of the market's sellers' state as the window opens, and the
 * market's events inside it in (tick, id) order, with only the columns the replay
 * needs; and the market's direction (read apart: it never changes, migration 021).
 *
 * The state is read from rate_states (migrations 018 and 021), which holds a seller's
 * whole state in a market from each of its events there on: one index-only step back
 * from `from` per seller of the market finds it, however many events of the seller
 * came before or which fields they set. A seller with no event in the market before
 * `from` is absent, which the replay reads as no offer.
 */
export async function readWindow(db: Queryable, market: string, w: Window): Promise<{ direction: Direction; before: Map<string, SellerState>; events: RateEvent[] }> {
  const { direction } = await getMarket(db, market);
  const { rows } = await db.query<WindowRow>(
    `select ms.seller, st.tick, st.event_id as id, st.rate, st.active, st.busy
       from market_sellers ms
       cross join lateral (select r.tick, r.event_id, r.rate, r.active, r.busy from rate_states r
                            where r.market = ms.market and r.seller = ms.seller and r.tick < $1 order by r.tick desc, r.event_id desc limit 1) st
      where ms.market = $3
     union all
     (select e.seller, e.tick, e.id, e.rate, e.active, e.busy from rate_events e where e.market = $3 and e.tick >= $1 and e.tick < $2 order by e.tick, e.id)`,
    [w.from, w.to, market],
  );
  const before = new Map<string, SellerState>();
  const events: RateEvent[] = [];
  for (const r of rows) {
    if (r.tick < w.from) before.set(r.seller, { rate: r.rate!, active: r.active!, busy: r.busy! });
    else events.push(toRateEvent(r));
  }
  return { direction, before, events };
}

/** Each seller's state in a market as a window opens (readWindow over an empty window). */
export async function statesBefore(db: Queryable, market: string, from: number): Promise<Map<string, SellerState>> {
  return (await readWindow(db, market, { from, to: from })).before;
}

/** Crown time per seller over a market's window (crown units), and its intervals: one read, one replay. */
export async function crownOver(db: Queryable, market: string, w: Window): Promise<{ direction: Direction; crownTime: Record<string, number>; intervals: CrownInterval[] }> {
  const { direction, before, events } = await readWindow(db, market, w);
  const intervals = [...crownIntervals(w, before, events, { direction })];
  return { direction, crownTime: crownTimeOf(intervals), intervals };
}

/** Intervals in one page of GET /v1/crown/timeline at most. */
export const CROWN_TIMELINE_PAGE_MAX = 1000;

/**
 * One page of a market's intervals over [from, to): those that start after the cursor
 * `after` (the start of the previous page's last interval; none: from the window's
 * start), in order, at most `limit`, and the cursor of the next page (null: the last).
 *
 * The page replays [after, to) with the same generator as the aggregate: intervals are
 * maximal, so a replay from a point where one starts yields the same intervals as the
 * whole window's from there on. The first one it yields starts at `after` (the
 * previous page's last, or a part of one for a cursor made up by hand): it is left out.
 */
export async function crownTimelinePage(db: Queryable, market: string, w: Window, after: number | undefined, limit: number): Promise<{ direction: Direction; intervals: CrownInterval[]; next: number | null }> {
  const rows = pageRows(limit, CROWN_TIMELINE_PAGE_MAX);
  const start = after === undefined ? w.from : Math.min(Math.max(after, w.from), w.to);
  const page = { from: start, to: w.to };
  const { direction, before, events } = await readWindow(db, market, page);
  const intervals: CrownInterval[] = [];
  let more = false;
  for (const iv of crownIntervals(page, before, events, { direction })) {
    if (after !== undefined && iv.start <= after) continue;
    if (intervals.length === rows) {
      more = true;
      break;
    }
    intervals.push(iv);
  }
  return { direction, intervals, next: more ? intervals[intervals.length - 1]!.start : null };
}

/** The holders of a market at one tick (and their payout accounts): a one-tick window. */
export async function holdersAt(db: Queryable, market: string, tick: number): Promise<{ direction: Direction; holders: string[]; bestRate: number | null; accounts: Record<string, string | null> }> {
  const w = { from: tick, to: tick + 1 };
  const { direction, before, events } = await readWindow(db, market, w);
  const [iv] = [...crownIntervals(w, before, events, { direction })];
  const holders = iv?.holders ?? [];
  const { rows } = await db.query<{ id: string; account_id: string | null }>('select id, account_id from sellers where id = any($1)', [holders]);
  return { direction, holders, bestRate: iv?.bestRate ?? null, accounts: Object.fromEntries(rows.map((r) => [r.id, r.account_id])) };
}

export const REWARDS_ACCOUNT = 'sluice.rewards';

/**
 * Pays a reward budget for a window once: crown time per seller (the replay), the
 * exact split (splitReward), one transfer per seller from the rewards account to its
 * payout account, and the window recorded, all in one transaction. Asking again for
 * the same window returns what was paid; another budget for it is a conflict.
 */
export function payCrownRewards(pool: Pool, input: { window: Window; budget: number }, clock: TickClock = wallClock) {
  const { from, to } = input.window;
  return withTransaction(pool, async (client) => {
    await lockRateBoard(client);
    const nowTick = clock();
    // under the lock: no rate event for a tick before nowTick can commit any more
    if (to > nowTick) throw new SluiceError('invalid_request', `the window must be over: it ends at ${to}, now is ${nowTick}`, { to, now: nowTick });
    // crown time is paid once: the same window answers what it paid, an overlapping one is refused
    const { rows: done } = await client.query<{ window_from: number; window_to: number; budget: number; paid: number; shares: Record<string, number> }>(
      'select * from crown_rewards where int8range(window_from, window_to) && int8range($1, $2) order by window_from limit 1',
      [from, to],
    );
    const prior = done[0];
    if (prior && (prior.window_from !== from || prior.window_to !== to)) {
      throw new SluiceError('idempotency_conflict', `[${from}, ${to}) overlaps the rewarded window [${prior.window_from}, ${prior.window_to}): crown time is paid once`, {
        rewarded: { from: prior.window_from, to: prior.window_to },
      });
    }
    if (prior) {
      if (prior.budget !== input.budget) throw new SluiceError('idempotency_conflict', `the window [${from}, ${to}) was already rewarded with ${prior.budget}`);
      return { from, to, budget: prior.budget, paid: prior.paid, shares: prior.shares, alreadyPaid: true };
    }
    // rewards pay the default market's crown time (crown_rewards has no market: migration 008)
    const { crownTime: units } = await crownOver(client, DEFAULT_MARKET, input.window);
    const shares = splitReward(input.budget, units);
    const { rows: accounts } = await client.query<{ id: string; account_id: string | null }>('select id, account_id from sellers where id = any($1)', [Object.keys(shares)]);
    const payTo = Object.fromEntries(accounts.map((a) => [a.id, a.account_id]));
    const missing = Object.keys(shares).filter((s) => !payTo[s]);
    if (missing.length) throw new SluiceError('invalid_request', `sellers without a payout account: ${missing.join(', ')}`, { sellers: missing });
    // every account the rewards move, locked at once in id order (the lock order, accounts.ts);
    // each transfer then re-locks its pair, already held, and reads the balance as it is now.
    // Pair by pair in seller order, the accounts were taken out of id order.
    await lockAccounts(client, [REWARDS_ACCOUNT, ...Object.keys(shares).map((seller) => payTo[seller]!)]);
    for (const [seller, amount] of Object.entries(shares).sort()) {
      await postTransfer(client, {
        key: `crown:${from}:${to}:${seller}`,
        kind: 'crown_reward',
        debitAccountId: REWARDS_ACCOUNT,
        creditAccountId: payTo[seller]!,
        amount,
        memo: `crown time ${crownTicks(units[seller]!)} ticks of [${from}, ${to})`,
      });
    }
    const paid = Object.values(shares).reduce((a, b) => a + b, 0);
    await client.query('insert into crown_rewards (window_from, window_to, budget, paid, shares) values ($1, $2, $3, $4, $5)', [from, to, input.budget, paid, JSON.stringify(shares)]);
    return { from, to, budget: input.budget, paid, shares, alreadyPaid: false };
  });
}
