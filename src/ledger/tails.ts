import type { Queryable } from '../db/pool';
import { SluiceError } from '../domain/errors';

/**
 * Tails by commit order (issue 17; src/db/migrations/012_commit_order_tails.sql).
 *
 * A tailed table's rows are read in (xid, id) order, and only those whose transaction
 * is older than every transaction still in flight: those rows are final, and a row
 * committed later always sorts after them. So a reader that passes back the cursor it
 * was given never misses a committed row and never sees one twice, however the ids
 * of concurrent writers commit. The price is latency: a row shows once the oldest
 * writing transaction of this database that began before it has ended (the horizon
 * is tail_horizon(), migrations 014 and 032: transactions of other databases do not
 * hold it).
 *
 * The cursor the API hands out stays the id of the last row returned: `after = n`
 * means after the row with id n, wherever that row sits in commit order; 0 means
 * from the start. An id that is no row of the table is refused (there is no place
 * in the order to resume from).
 */
export const TAILS = {
  events: 'event',
  rate_events: 'rate event',
  webhook_deliveries: 'webhook delivery',
} as const;

export type TailTable = keyof typeof TAILS;

export interface TailPage {
  table: TailTable;
  /** The columns to return, of the table aliased `t`; must include `t.id`. */
  columns: string;
  /** 0, or the id of the row the page starts after. */
  after: number;
  /** Rows in the page at most (the caller has bounded it). */
  limit: number;
  /** A condition on `t` that narrows the tail (its values bound through `param`); the cursor still orders by the whole table. */
  where?: (param: (value: unknown) => string) => string;
}

/** One page of a tail, oldest first in commit order. */
export async function readTail<Row extends { id: number }>(db: Queryable, page: TailPage): Promise<Row[]> {
  // The horizon first, in a statement of its own: it is placed on a snapshot taken
  // inside tail_horizon(), so the page must be read by a later statement (migration 032).
  const { rows: horizon } = await db.query<{ h: string }>({ name: 'tail-horizon', text: 'select tail_horizon()::text as h' });
  const values: unknown[] = [];
  const param = (value: unknown) => `$${values.push(value)}`;
  const after = param(page.after);
  const narrow = page.where ? `and (${page.where(param)})` : '';
  // One round trip: no `cursor` row means the cursor names no row; a cursor row
  // with a null page means nothing new yet.
  const { rows } = await db.query<Row & { tail_cursor: number }>(
    `with cursor as (
       select xid, id from ${page.table} where id = ${after}
       union all
       select '0'::xid8, 0 where ${after}::bigint = 0)
     select cursor.id as tail_cursor, page.*
       from cursor left join lateral (
         select ${page.columns} from ${page.table} t
          where (t.xid, t.id) > (cursor.xid, cursor.id)
            and t.xid < ${param(horizon[0]!.h)}::xid8
            ${narrow}
          order by t.xid, t.id
          limit ${param(page.limit)}) page on true`,
    values,
  );
  if (rows.length === 0) throw new SluiceError('invalid_request', `after ${page.after} is no ${TAILS[page.table]}'s id: pass 0 or an id a page returned`, { after: page.after });
  return rows.filter((r) => r.id !== null).map(({ tail_cursor: _, ...row }) => row as unknown as Row);
}
