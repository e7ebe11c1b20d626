import type { Queryable } from '../db/pool';
import { pageRows } from './paging';

/** Parties one page of GET /v1/parties holds at most. */
export const PARTIES_PAGE_MAX = 1000;

export interface PartyListing {
  id: string;
  name: string;
  createdAt: string;
}

/**
 * Parties by id after `after`, for the admin's list. The columns are named, never `*`:
 * the row holds the API key's hash, which no list shows.
 */
export async function listParties(db: Queryable, opts: { after?: string; limit?: number } = {}): Promise<PartyListing[]> {
  const { rows } = await db.query<{ id: string; name: string; created_at: Date }>('select id, name, created_at from parties where id > $1 order by id limit $2', [
    opts.after ?? '',
    pageRows(opts.limit, PARTIES_PAGE_MAX),
  ]);
  return rows.map((r) => ({ id: r.id, name: r.name, createdAt: r.created_at.toISOString() }));
}
