import type { Queryable } from '../../db/pool';
import { pageRows } from '../paging';
import { readTail } from '../tails';

/**
 * The ledger side of webhook delivery (src/webhooks/deliver.ts): every attempt logged
 * in webhook_deliveries (a trigger counts it in the same transaction, migration 029),
 * and an entity's log read back in commit order.
 */

export async function recordDelivery(
  db: Queryable,
  d: { entityId: string; eventKey: string; eventType: string; url: string; attempt: number; statusCode?: number; ok: boolean; error?: string },
): Promise<void> {
  await db.query(
    `insert into webhook_deliveries (entity_id, event_key, event_type, url, attempt, status_code, ok, error) values ($1, $2, $3, $4, $5, $6, $7, $8)`,
    [d.entityId, d.eventKey, d.eventType, d.url, d.attempt, d.statusCode ?? null, d.ok, d.error ?? null],
  );
}

/** Delivery attempts in one page of the log at most. */
export const DELIVERIES_PAGE_MAX = 500;

/** An entity's delivery attempts after a cursor (0 or a delivery's id), in commit order (src/ledger/tails.ts). */
export async function listDeliveries(db: Queryable, entityId: string, opts: { after?: number; limit?: number } = {}) {
  const rows = await readTail<Record<string, unknown> & { id: number }>(db, {
    table: 'webhook_deliveries',
    columns: 't.id, t.event_key, t.event_type, t.url, t.attempt, t.status_code, t.ok, t.error, t.at',
    after: opts.after ?? 0,
    limit: pageRows(opts.limit, DELIVERIES_PAGE_MAX, 100),
    where: (param) => `t.entity_id = ${param(entityId)}`,
  });
  return rows.map((r) => ({
    id: r.id as number,
    eventKey: r.event_key as string,
    eventType: r.event_type as string,
    url: r.url as string,
    attempt: r.attempt as number,
    statusCode: (r.status_code as number | null) ?? undefined,
    ok: r.ok as boolean,
    error: (r.error as string | null) ?? undefined,
    at: (r.at as Date).toISOString(),
  }));
}
