import type { Pool } from '../db/pool';
import type { SubaccountEvent } from '../domain/entities';
import { getEntity, recordDelivery } from '../ledger/entities';
import { SIGNATURE_HEADER, signWebhook } from './signature';

export const DELIVERY_TIMEOUT_MS = 10_000;

/**
 * One delivery attempt of a subaccount event to one URL (the activity behind
 * webhook delivery): signed with the entity's secret, logged with its outcome
 * whatever happens, and thrown on anything but a 2xx so Temporal retries it with
 * backoff. The secret never leaves this function (not logged, not recorded).
 */
export async function deliverWebhook(pool: Pool, event: SubaccountEvent, url: string, attempt: number): Promise<{ statusCode: number }> {
  const entity = await getEntity(pool, event.entityId);
  const body = JSON.stringify(event);
  let statusCode: number | undefined;
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', [SIGNATURE_HEADER]: signWebhook(entity.webhook_secret, body, Date.now()), 'sluice-event': event.key },
      body,
      signal: AbortSignal.timeout(DELIVERY_TIMEOUT_MS),
    });
    statusCode = res.status;
    await res.body?.cancel();
    if (!res.ok) throw new Error(`${url} answered ${res.status}`);
    await recordDelivery(pool, { entityId: event.entityId, eventKey: event.key, eventType: event.type, url, attempt, statusCode, ok: true });
    return { statusCode };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    await recordDelivery(pool, { entityId: event.entityId, eventKey: event.key, eventType: event.type, url, attempt, statusCode, ok: false, error: message });
    throw error;
  }
}
