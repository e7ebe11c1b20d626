import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Webhook signatures (DESIGN §4). Each delivery carries
 *
 *   sluice-signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
 *
 * Receivers call `verifyWebhook` with the raw body: it refuses a tampered body, a
 * wrong secret, a malformed header and a timestamp outside the tolerance (a replay).
 */
export const SIGNATURE_HEADER = 'sluice-signature';
export const TOLERANCE_SECONDS_DEFAULT = 300;

const mac = (secret: string, t: number, body: string) => createHmac('sha256', secret).update(`${t}.${body}`).digest('hex');

export function signWebhook(secret: string, body: string, nowMs: number): string {
  const t = Math.floor(nowMs / 1000);
  return `t=${t},v1=${mac(secret, t, body)}`;
}

export type VerifyResult = { ok: true; timestamp: number } | { ok: false; reason: 'malformed' | 'stale' | 'bad_signature' };

export function verifyWebhook(
  secret: string,
  header: string | undefined,
  body: string,
  opts: { nowMs?: number; toleranceSeconds?: number } = {},
): VerifyResult {
  const parts = Object.fromEntries((header ?? '').split(',').map((p) => p.split('=', 2) as [string, string]));
  const t = Number(parts.t);
  if (!parts.t || !Number.isSafeInteger(t) || !/^[0-9a-f]{64}$/.test(parts.v1 ?? '')) return { ok: false, reason: 'malformed' };
  const nowS = Math.floor((opts.nowMs ?? Date.now()) / 1000);
  if (Math.abs(nowS - t) > (opts.toleranceSeconds ?? TOLERANCE_SECONDS_DEFAULT)) return { ok: false, reason: 'stale' };
  const expected = Buffer.from(mac(secret, t, body), 'hex');
  const given = Buffer.from(parts.v1!, 'hex');
  return timingSafeEqual(expected, given) ? { ok: true, timestamp: t } : { ok: false, reason: 'bad_signature' };
}
