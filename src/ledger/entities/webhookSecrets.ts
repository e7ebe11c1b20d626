import { randomBytes } from 'node:crypto';
import { withTransaction, type Pool, type Queryable } from '../../db/pool';
import { notFound } from '../../domain/errors';
import { appendEvent } from '../events';

/**
 * An entity's webhook secrets (issue 22): the only module that reads or writes
 * entities.webhook_secret and entities.webhook_secret_previous. A rotation makes a new
 * secret the one that signs first and keeps the one it replaced signing beside it
 * (the overlap) until the entity retires it or the overlap's end passes, so its
 * receivers can change secrets one at a time without refusing a delivery.
 *
 * Both ends are the database's clock (now()), so signing, reading an entity and
 * rotating agree on whether an overlap still lasts.
 */

/** A new secret: 24 random bytes, base64url, with the prefix that says what it is. */
export const newWebhookSecret = () => `whsec_${randomBytes(24).toString('base64url')}`;

/** How long the previous secret keeps signing unless the rotation says otherwise: a day to update every receiver. */
export const OVERLAP_S_DEFAULT = 86_400;
/** The overlap is bounded: a secret rotated away because it leaked must stop working within a week at most. */
export const OVERLAP_S_MAX = 7 * 86_400;
export const OVERLAP_S_MIN = 60;

/** The secrets that sign an entity's deliveries now: the current one, then the previous one while the overlap lasts. */
export async function signingSecrets(db: Queryable, entityId: string): Promise<string[]> {
  const { rows } = await db.query<{ current: string; previous: string | null }>(
    `select webhook_secret as current, case when webhook_secret_previous_until > now() then webhook_secret_previous end as previous
       from entities where id = $1`,
    [entityId],
  );
  if (!rows[0]) throw notFound('entity', entityId);
  return rows[0].previous ? [rows[0].current, rows[0].previous] : [rows[0].current];
}

/**
 * Rotates an entity's secret: a new one signs from now on, beside the one it replaces
 * until `overlapS` from now. A rotation during an overlap replaces the new secret and
 * keeps the previous one (its end moves to `overlapS` from now): a caller that lost
 * the answer of a rotation rotates again, and its receivers, still on the previous
 * secret, never stop verifying. The new secret is answered here once and never again.
 */
export function rotateWebhookSecret(pool: Pool, entityId: string, input: { overlapS: number }) {
  if (!Number.isSafeInteger(input.overlapS) || input.overlapS < OVERLAP_S_MIN || input.overlapS > OVERLAP_S_MAX) {
    throw new Error(`rotateWebhookSecret: overlapS ${input.overlapS} outside ${OVERLAP_S_MIN}..${OVERLAP_S_MAX}`);
  }
  return withTransaction(pool, async (client) => {
    const webhookSecret = newWebhookSecret();
    const { rows } = await client.query<{ overlap_until: Date; kept_previous: boolean }>(
      `update entities e
          set webhook_secret = $2,
              webhook_secret_previous = case when o.previous_until > now() then o.webhook_secret_previous else o.webhook_secret end,
              webhook_secret_previous_until = now() + make_interval(secs => $3),
              webhook_secret_rotated_at = now()
         from (select id, webhook_secret, webhook_secret_previous, webhook_secret_previous_until as previous_until from entities where id = $1 for no key update) o
        where e.id = o.id
        returning e.webhook_secret_previous_until as overlap_until, coalesce(o.previous_until > now(), false) as kept_previous`,
      [entityId, webhookSecret, input.overlapS],
    );
    const rotated = rows[0];
    if (!rotated) throw notFound('entity', entityId);
    const overlapUntil = rotated.overlap_until.toISOString();
    // the event says that and until when, never a secret
    await appendEvent(client, { type: 'entity.webhook_secret_rotated', subject: entityId, payload: { entity: entityId, overlapUntil, keptPrevious: rotated.kept_previous }, parties: [entityId] });
    return { id: entityId, webhookSecret, overlapUntil };
  });
}

/**
 * Ends an entity's overlap now: from the next attempt on, only the current secret
 * signs. Without an overlap (never rotated, retired already, or its end passed) it
 * changes nothing and says so (`retired: false`), so a repeat is harmless.
 */
export function retireWebhookSecret(pool: Pool, entityId: string) {
  return withTransaction(pool, async (client) => {
    const { rows } = await client.query<{ retired: boolean }>(
      `update entities e
          set webhook_secret_previous = null, webhook_secret_previous_until = null
         from (select id, webhook_secret_previous_until as previous_until from entities where id = $1 for no key update) o
        where e.id = o.id
        returning coalesce(o.previous_until > now(), false) as retired`,
      [entityId],
    );
    if (!rows[0]) throw notFound('entity', entityId);
    const { retired } = rows[0];
    if (retired) await appendEvent(client, { type: 'entity.webhook_secret_retired', subject: entityId, payload: { entity: entityId }, parties: [entityId] });
    return { id: entityId, retired };
  });
}
