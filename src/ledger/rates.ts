import type { Pool, Queryable } from '../db/pool';
import { withTransaction } from '../db/pool';
import { postTransfer } from './transfers';
import { apply, crownIntervals, crownTime, NO_OFFER, splitReward, type CrownInterval, type RateEvent, type SellerState, type Window } from '../domain/crown';
import { notFound, SluiceError } from '../domain/errors';
import { getAccount } from './accounts';
import { appendEvent } from './events';

/**
 * The rate board's storage: events in, replays out. The rules live in
 * src/domain/crown.ts; this file only reads the state before a window and the
 * events inside it.
 */
export interface RateEventRow {
  id: number;
  seller: string;
  tick: number;
  rate: number | null;
  active: boolean | null;
  busy: boolean | null;
  created_at: Date;
}

export const toRateEvent = (r: RateEventRow): RateEvent => ({
  id: r.id,
  seller: r.seller,
  tick: r.tick,
  ...(r.rate !== null && { rate: r.rate }),
  ...(r.active !== null && { active: r.active }),
  ...(r.busy !== null && { busy: r.busy }),
});

/**
 * Records a seller's change effective from `tick` (never in the past: replays of
 * past windows must not change). Registers the seller, and its payout account when
 * given, on first use.
 */
export async function postRateEvent(
  db: Queryable,
  input: { seller: string; tick: number; nowTick: number; accountId?: string; rate?: number; active?: boolean; busy?: boolean },
): Promise<RateEvent & { createdAt: string }> {
  if (input.tick < input.nowTick) {
    throw new SluiceError('invalid_request', `tick ${input.tick} is in the past (now ${input.nowTick}): history is not rewritten`, { tick: input.tick, now: input.nowTick });
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
    `insert into rate_events (seller, tick, rate, active, busy) values ($1, $2, $3, $4, $5) returning *`,
    [input.seller, input.tick, input.rate ?? null, input.active ?? null, input.busy ?? null],
  );
  const event = toRateEvent(rows[0]!);
  await appendEvent(db, { type: 'rate.posted', subject: input.seller, payload: { ...event }, parties: [input.seller] });
  return { ...event, createdAt: rows[0]!.created_at.toISOString() };
}

/** Events after a cursor, oldest first (tail readers). */
export async function listRateEvents(db: Queryable, after: number, limit: number): Promise<Array<RateEvent & { createdAt: string }>> {
  const { rows } = await db.query<RateEventRow>('select * from rate_events where id > $1 order by id limit $2', [after, Math.min(Math.max(limit, 1), 1000)]);
  return rows.map((r) => ({ ...toRateEvent(r), createdAt: r.created_at.toISOString() }));
}

/**
 * Each seller's state as a window opens: every event before `from`, folded in (tick,
 * id) order. A seller with no event yet is absent, which the replay reads as no offer.
 */
export async function statesBefore(db: Queryable, from: number): Promise<Map<string, SellerState>> {
  const { rows } = await db.query<RateEventRow>('select * from rate_events where tick < $1 order by tick, id', [from]);
  const states = new Map<string, SellerState>();
  for (const r of rows) states.set(r.seller, apply(states.get(r.seller) ?? NO_OFFER, toRateEvent(r)));
  return states;
}

export async function eventsIn(db: Queryable, w: Window): Promise<RateEvent[]> {
  const { rows } = await db.query<RateEventRow>('select * from rate_events where tick >= $1 and tick < $2 order by tick, id', [w.from, w.to]);
  return rows.map(toRateEvent);
}

/** Crown time per seller over a window, and the holders at its last tick. */
export async function crownOver(db: Queryable, w: Window): Promise<{ crownTime: Record<string, number>; intervals: CrownInterval[] }> {
  const before = await statesBefore(db, w.from);
  const events = await eventsIn(db, w);
  return { crownTime: crownTime(w, before, events), intervals: [...crownIntervals(w, before, events)] };
}

/** The holders at one tick (and their payout accounts): a one-tick window. */
export async function holdersAt(db: Queryable, tick: number): Promise<{ holders: string[]; bestRate: number | null; accounts: Record<string, string | null> }> {
  const [iv] = [...crownIntervals({ from: tick, to: tick + 1 }, await statesBefore(db, tick), await eventsIn(db, { from: tick, to: tick + 1 }))];
  const holders = iv?.holders ?? [];
  const { rows } = await db.query<{ id: string; account_id: string | null }>('select id, account_id from sellers where id = any($1)', [holders]);
  return { holders, bestRate: iv?.bestRate ?? null, accounts: Object.fromEntries(rows.map((r) => [r.id, r.account_id])) };
}

export const REWARDS_ACCOUNT = 'sluice.rewards';

/**
 * Pays a reward budget for a window once: crown time per seller (the replay), the
 * exact split (splitReward), one transfer per seller from the rewards account to its
 * payout account, and the window recorded, all in one transaction. Asking again for
 * the same window returns what was paid; another budget for it is a conflict.
 */
export function payCrownRewards(pool: Pool, input: { window: Window; budget: number }) {
  return withTransaction(pool, async (client) => {
    await client.query('select pg_advisory_xact_lock(hashtext($1))', ['crown-rewards']);
    const { rows: done } = await client.query<{ budget: number; paid: number; shares: Record<string, number>; created_at: Date }>(
      'select * from crown_rewards where window_from = $1 and window_to = $2',
      [input.window.from, input.window.to],
    );
    if (done[0]) {
      if (done[0].budget !== input.budget) throw new SluiceError('idempotency_conflict', `the window [${input.window.from}, ${input.window.to}) was already rewarded with ${done[0].budget}`);
      return { ...input.window, budget: done[0].budget, paid: done[0].paid, shares: done[0].shares, alreadyPaid: true };
    }
    const { crownTime: ticks } = await crownOver(client, input.window);
    const shares = splitReward(input.budget, ticks);
    const { rows: accounts } = await client.query<{ id: string; account_id: string | null }>('select id, account_id from sellers where id = any($1)', [Object.keys(shares)]);
    const payTo = Object.fromEntries(accounts.map((a) => [a.id, a.account_id]));
    const missing = Object.keys(shares).filter((s) => !payTo[s]);
    if (missing.length) throw new SluiceError('invalid_request', `sellers without a payout account: ${missing.join(', ')}`, { sellers: missing });
    for (const [seller, amount] of Object.entries(shares).sort()) {
      await postTransfer(client, {
        key: `crown:${input.window.from}:${input.window.to}:${seller}`,
        kind: 'crown_reward',
        debitAccountId: REWARDS_ACCOUNT,
        creditAccountId: payTo[seller]!,
        amount,
        memo: `crown time ${ticks[seller]} ticks of [${input.window.from}, ${input.window.to})`,
      });
    }
    const paid = Object.values(shares).reduce((a, b) => a + b, 0);
    await client.query('insert into crown_rewards (window_from, window_to, budget, paid, shares) values ($1, $2, $3, $4, $5)', [
      input.window.from, input.window.to, input.budget, paid, JSON.stringify(shares),
    ]);
    return { ...input.window, budget: input.budget, paid, shares, crownTime: ticks, alreadyPaid: false };
  });
}
