import type { Queryable } from '../db/pool';
import { LIVE_STATUSES, type EntityListing } from '../domain/entities';
import { pageRows } from './paging';

/** Entities one page of GET /v1/entities holds at most. */
export const ENTITIES_PAGE_MAX = 100;

/**
 * Entities by id after `after`, for the admin's list, each with its live subaccount
 * count (one index range of its subaccounts). Named columns: the row holds the
 * webhook secret, which no list shows.
 */
export async function listEntities(db: Queryable, opts: { after?: string; limit?: number } = {}): Promise<EntityListing[]> {
  const { rows } = await db.query<{ id: string; name: string; main_account_id: string; live: number; created_at: Date }>(
    `select e.id, p.name, e.main_account_id, e.created_at,
            (select count(*)::int from subaccounts s where s.entity_id = e.id and s.status = any($3)) as live
       from entities e join parties p on p.id = e.id
      where e.id > $1 order by e.id limit $2`,
    [opts.after ?? '', pageRows(opts.limit, ENTITIES_PAGE_MAX), LIVE_STATUSES],
  );
  return rows.map((r) => ({ id: r.id, name: r.name, mainAccountId: r.main_account_id, liveSubaccounts: r.live, createdAt: r.created_at.toISOString() }));
}
