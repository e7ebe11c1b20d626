import type { PoolClient, Queryable } from '../../db/pool';
import { streamQuotaRefusal, type TierStreamQuotas } from '../../domain/streamQuotas';
import type { Tier } from '../../domain/grants';

/** A payer's tier and the streams it pays that are open (paused ones included): one statement on the payer's index. */
export async function openStreamsOf(db: Queryable, payer: string): Promise<{ tier: Tier; open: number }> {
  const { rows } = await db.query<{ tier: Tier; open: number }>({
    name: 'stream-quota-read',
    text: `select coalesce((select tier from payer_tiers where party_id = $1), 'new') as tier,
                  (select count(*)::int from streams where payer = $1 and status = 'open') as open`,
    values: [payer],
  });
  return rows[0]!;
}

/**
 * Refuses an opening over its payer's quota, under the payer's party row (step 1 of the
 * lock order, before any account): two opens by one payer at once count each other.
 */
export async function assertStreamQuota(client: PoolClient, quotas: TierStreamQuotas, opening: { payer: string; tickIntervalMs: number }): Promise<void> {
  await client.query({ name: 'stream-quota-lock', text: 'select 1 from parties where id = $1 for no key update', values: [opening.payer] });
  const refusal = streamQuotaRefusal(quotas, { ...opening, ...(await openStreamsOf(client, opening.payer)) });
  if (refusal) throw refusal;
}
