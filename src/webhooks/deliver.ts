import type { Pool } from '../db/pool';
import type { SubaccountEvent } from '../domain/entities';
import { recordDelivery, signingSecrets } from '../ledger/entities';
import { deliveryIdOf, signWebhook } from './signature';

export const DELIVERY_TIMEOUT_MS = 10_000;

/** Where an attempt that could not be recorded is logged instead (the activity's logger in the worker). */
export interface DeliveryLog {
  error(message: string, meta: Record<string, unknown>): void;
}

/**
 * One delivery attempt of a subaccount event to one URL (the activity behind
 * webhook delivery): signed with the entity's secrets as they stand at this attempt
 * (two during a rotation's overlap), under the delivery's id (the same on every
 * attempt, so the receiver can tell a retry from a new event), logged with its outcome
 * whatever happens, and thrown on anything but a 2xx so Temporal retries it with
 * backoff. Only the receiver's answer decides a retry: an attempt the database could
 * not record is logged and the answer stands, so an accepted event is not sent
 * again. The secrets never leave this function (not logged, not recorded).
 */
export async function deliverWebhook(pool: Pool, event: SubaccountEvent, url: string, attempt: number, log: DeliveryLog = console): Promise<{ statusCode: number }> {
  const secrets = await signingSecrets(pool, event.entityId);
  const body = JSON.stringify(event);
  const attemptOf = (outcome: { statusCode?: number; ok: boolean; error?: string }) => ({ entityId: event.entityId, eventKey: event.key, eventType: event.type, url, attempt, ...outcome });
  const record = async (outcome: { statusCode?: number; ok: boolean; error?: string }) => {
    try {
      await recordDelivery(pool, attemptOf(outcome));
    } catch (error) {
      log.error('webhook delivery attempt not recorded', { ...attemptOf(outcome), recordError: error instanceof Error ? error.message : String(error) });
    }
  };
  let statusCode: number | undefined;
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...signWebhook({ secrets, deliveryId: deliveryIdOf(event.key, url), body, nowMs: Date.now() }), 'sluice-event': event.key },
      body,
      signal: AbortSignal.timeout(DELIVERY_TIMEOUT_MS),
    });
    statusCode = res.status;
    await res.body?.cancel();
    if (!res.ok) throw new Error(`${url} answered ${res.status}`);
  } catch (error) {
    await record({ statusCode, ok: false, error: error instanceof Error ? error.message : String(error) });
    throw error;
  }
  await record({ statusCode, ok: true });
  return { statusCode };
}
