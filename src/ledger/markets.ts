import type { Queryable } from '../db/pool';
import type { Direction } from '../domain/crown';
import { notFound, SluiceError } from '../domain/errors';
import { pageRows } from './paging';

/**
 * Markets of the rate board (migration 021): each has its own crown, replayed from
 * its own events, and a direction that never changes. The admin creates them; the
 * `default` market (ask) exists from the start.
 */
export interface Market {
  id: string;
  direction: Direction;
  createdAt: string;
}

/** The market every rate event, crown read and routed stream names when it names none. */
export const DEFAULT_MARKET = 'default';

/** Markets in one page of GET /v1/markets at most. */
export const MARKETS_PAGE_MAX = 1000;

interface MarketRow {
  id: string;
  direction: Direction;
  created_at: Date;
}
const toMarket = (r: MarketRow): Market => ({ id: r.id, direction: r.direction, createdAt: r.created_at.toISOString() });

/** Creates a market; an id already taken is a conflict (whatever its direction: a direction never changes). */
export async function createMarket(db: Queryable, input: { id: string; direction: Direction }): Promise<Market> {
  const { rows } = await db.query<MarketRow>('insert into markets (id, direction) values ($1, $2) on conflict (id) do nothing returning *', [input.id, input.direction]);
  if (rows[0]) return toMarket(rows[0]);
  const taken = await getMarket(db, input.id);
  throw new SluiceError('already_exists', `market ${input.id} already exists (${taken.direction})`, { market: input.id, direction: taken.direction });
}

/** One market, or not_found (404). */
export async function getMarket(db: Queryable, id: string): Promise<Market> {
  const { rows } = await db.query<MarketRow>('select * from markets where id = $1', [id]);
  if (!rows[0]) throw notFound('market', id);
  return toMarket(rows[0]);
}

/** Markets in id order after a cursor (an id, or '' for the first page). */
export async function listMarkets(db: Queryable, after: string, limit: number): Promise<Market[]> {
  const { rows } = await db.query<MarketRow>('select * from markets where id > $1 order by id limit $2', [after, pageRows(limit, MARKETS_PAGE_MAX)]);
  return rows.map(toMarket);
}
