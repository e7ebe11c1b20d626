import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Webhook signatures (DESIGN §4): the one module that signs (src/webhooks/deliver.ts)
 * and verifies (receivers, src/webhooks/receiver.ts), so the two cannot drift. Each
 * attempt of a delivery carries
 *
 *   sluice-delivery:  <delivery id>   the same on every retry of one event to one URL
 *   sluice-timestamp: <unix seconds>  when this attempt was signed
 *   sluice-signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<delivery id>.<raw body>")>
 *
 * with one v1 per secret that signs: two while a rotation's overlap lasts, so a
 * receiver holding either secret verifies. The delivery id and the timestamp are
 * inside the MAC, so neither can be swapped; a receiver refuses a timestamp outside
 * its tolerance (an old capture sent again) and a delivery id it has already handled
 * (a retry it accepted, or a replay inside the window).
 *
 * Pure apart from the hash: no clock (the caller passes now), no I/O. It is not in
 * src/domain because domain takes no Node built-ins (it is shared with the workflow
 * sandbox) and an HMAC needs node:crypto.
 */
export const DELIVERY_HEADER = 'sluice-delivery';
export const TIMESTAMP_HEADER = 'sluice-timestamp';
export const SIGNATURE_HEADER = 'sluice-signature';
export const TOLERANCE_S_DEFAULT = 300;
/** v1 values a header may carry: Sluice signs with two secrets at most; more is not ours. */
export const SIGNATURES_PER_HEADER_MAX = 4;
/** Secrets a receiver may try: its current one and the one it is rotating away from, with room. */
export const SECRETS_PER_VERIFY_MAX = 4;

const DELIVERY_ID = /^[A-Za-z0-9_-]{1,100}$/;
const HEX_MAC = /^[0-9a-f]{64}$/;

/** What is signed: the timestamp, the delivery id and the raw body, dot-separated (neither of the first two holds a dot). */
const mac = (secret: string, timestampS: number, deliveryId: string, body: string | Uint8Array) =>
  createHmac('sha256', secret).update(`${timestampS}.${deliveryId}.`).update(body).digest();

/**
 * One event's delivery to one URL has one id, whatever the attempt: derived from
 * the event's key and the URL, so every retry (and a worker that restarts mid-way)
 * names it the same without storing it.
 */
export function deliveryIdOf(eventKey: string, url: string): string {
  return `dlv_${createHash('sha256').update(eventKey).update('\n').update(url).digest('hex').slice(0, 32)}`;
}

/** The headers of one attempt, signed with every secret given (the current one first). */
export function signWebhook(input: { secrets: readonly string[]; deliveryId: string; body: string | Uint8Array; nowMs: number }): Record<string, string> {
  const { secrets, deliveryId, body, nowMs } = input;
  if (secrets.length < 1 || secrets.length > SIGNATURES_PER_HEADER_MAX) throw new Error(`signWebhook: ${secrets.length} secrets (1 to ${SIGNATURES_PER_HEADER_MAX})`);
  if (!DELIVERY_ID.test(deliveryId)) throw new Error(`signWebhook: delivery id ${JSON.stringify(deliveryId)} is not ${DELIVERY_ID}`);
  if (!Number.isSafeInteger(nowMs) || nowMs < 0) throw new Error(`signWebhook: nowMs ${nowMs} is not a time`);
  const t = Math.floor(nowMs / 1000);
  const v1 = secrets.map((s) => `v1=${mac(s, t, deliveryId, body).toString('hex')}`);
  return { [DELIVERY_HEADER]: deliveryId, [TIMESTAMP_HEADER]: String(t), [SIGNATURE_HEADER]: [`t=${t}`, ...v1].join(',') };
}

export type VerifyResult =
  | { ok: true; deliveryId: string; timestampS: number }
  | { ok: false; reason: 'malformed' | 'stale' | 'bad_signature' };

/** Headers as Node's http gives them (lower-case names), or any record of them; names are matched without regard to case. */
export type WebhookHeaders = Record<string, string | string[] | undefined>;

const header = (headers: WebhookHeaders, name: string): string | undefined => {
  const key = Object.keys(headers).find((k) => k.toLowerCase() === name);
  const value = key === undefined ? undefined : headers[key];
  return Array.isArray(value) ? (value.length === 1 ? value[0] : undefined) : value;
};

/** `t=…,v1=…,v1=…` → its timestamp and v1 values, or undefined when it is not that shape. */
function parseSignature(value: string | undefined): { t: number; v1: Buffer[] } | undefined {
  if (!value) return undefined;
  const parts = value.split(',').map((p) => p.trim());
  const t = parts.filter((p) => p.startsWith('t=')).map((p) => p.slice(2));
  const v1 = parts.filter((p) => p.startsWith('v1=')).map((p) => p.slice(3));
  if (t.length !== 1 || !/^[0-9]{1,12}$/.test(t[0]!)) return undefined;
  if (v1.length < 1 || v1.length > SIGNATURES_PER_HEADER_MAX || !v1.every((m) => HEX_MAC.test(m))) return undefined;
  return { t: Number(t[0]), v1: v1.map((m) => Buffer.from(m, 'hex')) };
}

/**
 * Verifies one attempt as a receiver gets it: `body` is the raw body, byte for byte
 * (not a re-serialised parse). Refuses a malformed or missing header, a timestamp
 * more than `toleranceS` from `nowMs` either way (`stale`), and a MAC that none of
 * `secrets` made (`bad_signature`: a tampered body, delivery id or timestamp, or a
 * wrong secret). Every comparison is constant-time. On success it gives the delivery
 * id, which the receiver records to refuse a second handling of the same delivery.
 */
export function verifyWebhook(input: { secrets: string | readonly string[]; headers: WebhookHeaders; body: string | Uint8Array; toleranceS?: number; nowMs?: number }): VerifyResult {
  const secrets = typeof input.secrets === 'string' ? [input.secrets] : input.secrets;
  const toleranceS = input.toleranceS ?? TOLERANCE_S_DEFAULT;
  if (secrets.length < 1 || secrets.length > SECRETS_PER_VERIFY_MAX || secrets.some((s) => s.length === 0)) {
    throw new Error(`verifyWebhook: give 1 to ${SECRETS_PER_VERIFY_MAX} non-empty secrets`);
  }
  if (!Number.isSafeInteger(toleranceS) || toleranceS < 0) throw new Error(`verifyWebhook: toleranceS ${toleranceS} is not a whole number of seconds`);
  const deliveryId = header(input.headers, DELIVERY_HEADER);
  const timestamp = header(input.headers, TIMESTAMP_HEADER);
  const signature = parseSignature(header(input.headers, SIGNATURE_HEADER));
  if (!signature || !deliveryId || !DELIVERY_ID.test(deliveryId) || timestamp !== String(signature.t)) return { ok: false, reason: 'malformed' };
  const nowS = Math.floor((input.nowMs ?? Date.now()) / 1000);
  if (Math.abs(nowS - signature.t) > toleranceS) return { ok: false, reason: 'stale' };
  // every secret against every v1, no early exit: the time taken says nothing about which matched
  let matched = false;
  for (const secret of secrets) {
    const expected = mac(secret, signature.t, deliveryId, input.body);
    for (const given of signature.v1) matched = timingSafeEqual(expected, given) || matched;
  }
  return matched ? { ok: true, deliveryId, timestampS: signature.t } : { ok: false, reason: 'bad_signature' };
}
