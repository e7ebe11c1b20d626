import { CROWN_UNITS_PER_TICK, crownTicks, tickAt, timeOfTick, type CrownInterval, type Direction } from '../domain/crown';
import { forbidden, SluiceError } from '../domain/errors';
import { createMarket, listMarkets } from '../ledger/markets';
import { crownOver, crownTimelinePage, holdersAt, listRateEvents, payCrownRewards, postRateEvent } from '../ledger/rates';
import { ownAccount, type Actor } from './actors';
import type { ServiceDeps } from './deps';

/** The API's limits on a crown read (src/api/limits.ts holds them; a service may not import the API). */
export interface CrownLimits {
  /** Ticks of the longest window one call replays (GET /v1/crown, its timeline, POST /v1/crown/rewards). */
  windowTicksMax: number;
  /** Intervals GET /v1/crown lists (its totals always cover the whole window). */
  intervalsShownMax: number;
}

/** A window of board ticks, [from, to). */
interface Window {
  from: number;
  to: number;
}

/** A crown read's window as the caller asks for it: the market, and [from, to) (default: the last hour up to the current tick). */
export interface CrownQuery {
  market: string;
  from?: number;
  to?: number;
}

/** The window a crown answer covers, in ticks and as times: a person reads when, not a tick number. */
const windowView = (market: string, direction: Direction, w: Window) => ({ market, direction, from: w.from, to: w.to, fromAt: timeOfTick(w.from), toAt: timeOfTick(w.to) });
const withTimes = (iv: CrownInterval) => ({ ...iv, startAt: timeOfTick(iv.start), endAt: timeOfTick(iv.end) });

/** The rate board: sellers' rates and states, markets, the crown and its rewards. */
export function rateService(deps: ServiceDeps, limits: CrownLimits) {
  const { pool } = deps;

  /** A seller posts its own rates and state (the admin any seller's). */
  const ownSeller = (actor: Actor, seller: string) => {
    if (actor.kind === 'party' && actor.party !== seller) throw forbidden(`a seller posts its own rates (${seller} is not you)`);
  };

  /** Refuses an empty window, or one longer than a call replays. */
  const assertWindow = ({ from, to }: Window) => {
    if (from >= to) throw new SluiceError('invalid_request', `from (${from}) must be before to (${to})`);
    if (to - from > limits.windowTicksMax) throw new SluiceError('invalid_request', `a window is at most ${limits.windowTicksMax} ticks`);
  };

  /** A crown window from the query: [from, to), by default the last hour up to the current tick. */
  const crownWindow = (q: CrownQuery, nowTick: number): Window => {
    const to = q.to ?? nowTick + 1;
    const w = { from: q.from ?? Math.max(0, to - 3600), to };
    assertWindow(w);
    return w;
  };

  /** A seller's price per tick from `atTick` (default: now), and where routed streams pay it. */
  const postRate = async (actor: Actor, seller: string, input: { ratePerTick: number; atTick?: number; accountId?: string; market: string }) => {
    ownSeller(actor, seller);
    // an account of another party is not found, as a missing one (the ledger refuses the admin naming one not the seller's)
    if (input.accountId !== undefined) await ownAccount(pool, actor, input.accountId);
    return postRateEvent(pool, { seller, market: input.market, tick: input.atTick, accountId: input.accountId, rate: input.ratePerTick });
  };

  /** A seller's state (active/inactive, busy/idle) from `atTick` (default: now). */
  const postState = async (actor: Actor, seller: string, input: { active?: boolean; busy?: boolean; atTick?: number; market: string }) => {
    ownSeller(actor, seller);
    return postRateEvent(pool, { seller, market: input.market, tick: input.atTick, active: input.active, busy: input.busy });
  };

  /** The rate events after a cursor, in commit order. */
  const events = async (page: { after: number; limit: number }) => ({ events: await listRateEvents(pool, page.after, page.limit) });

  /** A new market (the admin's call); an id already taken is a conflict. */
  const openMarket = (input: { id: string; direction: Direction }) => createMarket(pool, input);

  /** The markets in id order, a page at a time. */
  const markets = async (page: { after?: string; limit: number }) => {
    const rows = await listMarkets(pool, page.after ?? '', page.limit);
    return { markets: rows, ...(rows.length === page.limit && { next: rows.at(-1)!.id }) };
  };

  /** Pays a budget to sellers by the default market's crown time over a window that is over, once (the admin's call). */
  const payRewards = async (input: Window & { budget: number }) => {
    const window = { from: input.from, to: input.to };
    assertWindow(window);
    return payCrownRewards(pool, { window, budget: input.budget });
  };

  /** A market's crown time per seller over a window, its intervals (the first few), and the holders now. */
  const crown = async (q: CrownQuery) => {
    const nowTick = tickAt(Date.now());
    const w = crownWindow(q, nowTick);
    const { direction, crownTime: crownUnits, intervals } = await crownOver(pool, q.market, w);
    // the default window ends with the current tick: its last interval already says who holds the crown now
    const now = intervals.find((iv) => iv.start <= nowTick && nowTick < iv.end) ?? (await holdersAt(pool, q.market, nowTick));
    return {
      ...windowView(q.market, direction, w),
      crownTime: Object.fromEntries(Object.entries(crownUnits).map(([seller, units]) => [seller, crownTicks(units)])),
      crownUnits,
      unitsPerTick: CROWN_UNITS_PER_TICK,
      intervalCount: intervals.length,
      intervals: intervals.slice(0, limits.intervalsShownMax).map(withTimes),
      current: { tick: nowTick, at: timeOfTick(nowTick), holders: now.holders, bestRate: now.bestRate },
    };
  };

  /** Who held a market's crown when over a window, a page of intervals at a time. */
  const timeline = async (q: CrownQuery & { after?: number; limit: number }) => {
    const w = crownWindow(q, tickAt(Date.now()));
    const page = await crownTimelinePage(pool, q.market, w, q.after, q.limit);
    return { ...windowView(q.market, page.direction, w), intervals: page.intervals.map(withTimes), ...(page.next !== null && { next: page.next }) };
  };

  return { postRate, postState, events, openMarket, markets, payRewards, crown, timeline };
}

export type RateService = ReturnType<typeof rateService>;
