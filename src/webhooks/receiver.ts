import type { IncomingMessage, ServerResponse } from 'node:http';
import { TOLERANCE_S_DEFAULT, verifyWebhook } from './signature';

/**
 * A receiver of Sluice's webhooks, as docs/entities.md shows it and the tests run it
 * against the real stack: read the raw body, verify it (signature.ts), hand each
 * delivery to `onEvent` once, and answer so Sluice stops or retries.
 *
 * - refused (malformed, stale, bad signature): 401, and the event is not handled;
 * - a delivery id already handled (Sluice's retry of an attempt whose answer was lost,
 *   or a replay inside the tolerance): 200 `{"duplicate":true}`, not handled again;
 * - `onEvent` throws: 500, and the id is forgotten, so Sluice's retry handles it.
 */

/** Bytes of one webhook body a receiver reads at most: Sluice's events are a few hundred. */
export const WEBHOOK_BODY_BYTES_MAX = 64 * 1024;
/**
 * How long a receiver remembers a delivery id: beyond Sluice's retries of one delivery
 * (8 attempts, backoff from 1 s to a minute, about 4 minutes) and its tolerance
 * window, after which a replay is refused as stale anyway.
 */
export const REMEMBER_S_DEFAULT = 3600;
/** Delivery ids remembered at most: the oldest goes first past it. */
export const REMEMBERED_MAX_DEFAULT = 100_000;

/** Where a receiver records the deliveries it handled. In production: a table with a unique delivery id. */
export interface DeliveryDedupe {
  /** True the first time an id is claimed (within its memory); false for a repeat. */
  claim(deliveryId: string, nowMs: number): boolean;
  /** Forgets a claim whose handling failed, so the retry is handled. */
  release(deliveryId: string): void;
}

/** An in-memory dedupe, bounded in time and in entries: enough for one receiver process. */
export function rememberDeliveries(opts: { rememberS?: number; entriesMax?: number } = {}): DeliveryDedupe {
  const rememberMs = (opts.rememberS ?? REMEMBER_S_DEFAULT) * 1000;
  const entriesMax = opts.entriesMax ?? REMEMBERED_MAX_DEFAULT;
  const seenAtMs = new Map<string, number>(); // insertion order is age order
  return {
    claim(deliveryId, nowMs) {
      for (const [id, atMs] of seenAtMs) {
        if (atMs > nowMs - rememberMs) break;
        seenAtMs.delete(id); // past its memory: a replay of it is stale by now
      }
      if (seenAtMs.has(deliveryId)) return false;
      if (seenAtMs.size >= entriesMax) seenAtMs.delete(seenAtMs.keys().next().value!);
      seenAtMs.set(deliveryId, nowMs);
      return true;
    },
    release: (deliveryId) => void seenAtMs.delete(deliveryId),
  };
}

export interface ReceiverOptions {
  /** The secrets the receiver holds: its current one, and during a rotation the other. */
  secrets: () => string | readonly string[];
  onEvent: (event: unknown, deliveryId: string) => void | Promise<void>;
  toleranceS?: number;
  dedupe?: DeliveryDedupe;
  nowMs?: () => number;
}

async function rawBody(req: IncomingMessage): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of req) {
    bytes += (chunk as Buffer).length;
    if (bytes > WEBHOOK_BODY_BYTES_MAX) return undefined;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** A Node http request handler for Sluice's webhooks (`createServer(webhookReceiver({...}))`). */
export function webhookReceiver(opts: ReceiverOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const dedupe = opts.dedupe ?? rememberDeliveries();
  const now = opts.nowMs ?? Date.now;
  const answer = (res: ServerResponse, status: number, body: object) => void res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  return (req, res) =>
    void (async () => {
      const body = await rawBody(req);
      if (!body) return answer(res, 413, { error: 'body too large' });
      const verified = verifyWebhook({ secrets: opts.secrets(), headers: req.headers, body, toleranceS: opts.toleranceS ?? TOLERANCE_S_DEFAULT, nowMs: now() });
      if (!verified.ok) return answer(res, 401, { error: verified.reason });
      if (!dedupe.claim(verified.deliveryId, now())) return answer(res, 200, { duplicate: true });
      try {
        await opts.onEvent(JSON.parse(body.toString('utf8')), verified.deliveryId);
      } catch {
        dedupe.release(verified.deliveryId);
        return answer(res, 500, { error: 'not handled' });
      }
      answer(res, 200, { handled: verified.deliveryId });
    })().catch(() => {
      if (!res.headersSent) answer(res, 400, { error: 'unreadable request' });
    });
}
