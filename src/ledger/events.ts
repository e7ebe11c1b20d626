import type { PoolClient, Queryable } from '../db/pool';
import { pageRows } from './paging';
import { readTail } from './tails';

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

/** The statement appendEvent runs (bench:pool replays it from pgbench). */
export const EVENT_INSERT_SQL = 'insert into events (type, subject, payload, parties) values ($1, $2, $3, $4)';

/** Appends an event. Call it inside the transaction that made the change it reports. */
export async function appendEvent(db: PoolClient, event: EventInput): Promise<void> {
  await db.query({ name: 'event-insert', text: EVENT_INSERT_SQL, values: eventValues(event) });
}

/** The payload of the first event of `type` about `subject` (a stream's stream.routed), if there is one. */
export async function firstEventPayload<P extends Record<string, unknown>>(db: Queryable, type: string, subject: string): Promise<P | undefined> {
  const { rows } = await db.query<{ payload: P }>('select payload from events where type = $1 and subject = $2 order by id limit 1', [type, subject]);
  return rows[0]?.payload;
}

export const EVENTS_PAGE_MAX = 1000;

/**
 * A page of the event tail after a cursor, in commit order (src/ledger/tails.ts: no
 * committed event is ever skipped or shown twice); `party` limits the page to that
 * party's events. The cursor is 0 or an event's id, the last of the previous page.
 */
export async function listEvents(db: Queryable, opts: { after: number; limit: number; party?: string; subject?: string; type?: string }): Promise<LedgerEvent[]> {
  const { party, subject, type } = opts;
  // each filter narrows the tail; the cursor still orders by the whole table
  const where = (param: (value: unknown) => string) =>
    [
      party === undefined ? undefined : `t.parties @> array[${param(party)}::text]`,
      subject === undefined ? undefined : `t.subject = ${param(subject)}`,
      type === undefined ? undefined : `t.type = ${param(type)}`,
    ]
      .filter(Boolean)
      .join(' and ') || 'true';
  const rows = await readTail<{ id: number; type: string; subject: string; payload: Record<string, unknown>; created_at: Date }>(db, {
    table: 'events',
    columns: 't.id, t.type, t.subject, t.payload, t.created_at',
    after: opts.after,
    limit: pageRows(opts.limit, EVENTS_PAGE_MAX),
    where,
  });
  return rows.map((r) => ({ id: r.id, type: r.type, subject: r.subject, payload: r.payload, createdAt: r.created_at.toISOString() }));
}
