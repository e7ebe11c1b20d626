import type { Queryable } from '../db/pool';
import { pageRows } from './paging';

export interface EventInput {
  type: string;
  subject: string;
  payload: Record<string, unknown>;
  /** Parties allowed to read the event through the API. */
  parties: string[];
}

export interface LedgerEvent {
  id: number;
  type: string;
  subject: string;
  payload: Record<string, unknown>;
  createdAt: string;
}

/** An event as the values of its row (type, subject, payload, parties), for a caller's own statement. */
export function eventValues(event: EventInput): [string, string, string, string[]] {
  return [event.type, event.subject, JSON.stringify(event.payload), [...new Set(event.parties)]];
}

/** Appends an event. Call it inside the transaction that made the change it reports. */
export async function appendEvent(db: Queryable, event: EventInput): Promise<void> {
  await db.query('insert into events (type, subject, payload, parties) values ($1, $2, $3, $4)', eventValues(event));
}

export const EVENTS_PAGE_MAX = 1000;

/** Events after a cursor, oldest first; `party` limits the page to that party's events. */
export async function listEvents(db: Queryable, opts: { after: number; limit: number; party?: string }): Promise<LedgerEvent[]> {
  const limit = pageRows(opts.limit, EVENTS_PAGE_MAX);
  const { rows } = await db.query(
    `select id, type, subject, payload, created_at from events
      where id > $1 and ($3::text is null or parties @> array[$3::text])
      order by id limit $2`,
    [opts.after, limit, opts.party ?? null],
  );
  return rows.map((r) => ({ id: r.id, type: r.type, subject: r.subject, payload: r.payload, createdAt: r.created_at.toISOString() }));
}
