import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import fc from 'fast-check';
import { rememberDeliveries, webhookReceiver } from '../../src/webhooks/receiver';
import {
  DELIVERY_HEADER,
  deliveryIdOf,
  SIGNATURE_HEADER,
  signWebhook,
  TIMESTAMP_HEADER,
  TOLERANCE_S_DEFAULT,
  verifyWebhook,
  type WebhookHeaders,
} from '../../src/webhooks/signature';

/**
 * The webhook signature scheme (src/webhooks/signature.ts) and the documented
 * receiver (src/webhooks/receiver.ts): what a receiver accepts, what it refuses, and
 * that a delivery it handled is not handled twice.
 */

const OLD = 'whsec_old_secret_for_the_tests_0123456789';
const NEW = 'whsec_new_secret_for_the_tests_9876543210';
const NOW_MS = 1_750_000_000_000;
const BODY = JSON.stringify({ key: 'subaccount.active:acme/1', type: 'subaccount.active', entityId: 'acme', n: 1 });
const ID = deliveryIdOf('subaccount.active:acme/1', 'http://127.0.0.1:4000/hooks');

const signed = (secrets: string[], body = BODY, nowMs = NOW_MS, deliveryId = ID) => signWebhook({ secrets, deliveryId, body, nowMs });

describe('signing and verifying', () => {
  test('an attempt carries the delivery id, the timestamp and one v1 per secret, and verifies with each secret alone', () => {
    const headers = signed([NEW, OLD]);
    expect(headers[DELIVERY_HEADER]).toBe(ID);
    expect(headers[TIMESTAMP_HEADER]).toBe(String(NOW_MS / 1000));
    expect(headers[SIGNATURE_HEADER]).toMatch(/^t=1750000000,v1=[0-9a-f]{64},v1=[0-9a-f]{64}$/);
    for (const secrets of [NEW, OLD, [OLD, NEW], ['whsec_unrelated_secret_0123456789abcdef', OLD]]) {
      expect(verifyWebhook({ secrets, headers, body: BODY, nowMs: NOW_MS })).toEqual({ ok: true, deliveryId: ID, timestampS: NOW_MS / 1000 });
    }
    // the raw body may come as bytes
    expect(verifyWebhook({ secrets: NEW, headers, body: Buffer.from(BODY), nowMs: NOW_MS }).ok).toBe(true);
  });

  test('a receiver holding only the retired secret is refused once Sluice signs with the new one alone', () => {
    expect(verifyWebhook({ secrets: OLD, headers: signed([NEW]), body: BODY, nowMs: NOW_MS })).toEqual({ ok: false, reason: 'bad_signature' });
    expect(verifyWebhook({ secrets: NEW, headers: signed([NEW]), body: BODY, nowMs: NOW_MS }).ok).toBe(true);
  });

  test('property: any change to the body, the delivery id or the timestamp, or a wrong secret, is refused', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 300 }), fc.string({ minLength: 1, maxLength: 300 }), fc.integer({ min: 1, max: 1e6 }), (body, other, deltaS) => {
        const headers = signed([NEW], body);
        expect(verifyWebhook({ secrets: NEW, headers, body, nowMs: NOW_MS }).ok).toBe(true);
        if (other !== body) expect(verifyWebhook({ secrets: NEW, headers, body: other, nowMs: NOW_MS })).toEqual({ ok: false, reason: 'bad_signature' });
        expect(verifyWebhook({ secrets: `${NEW}x`, headers, body, nowMs: NOW_MS })).toEqual({ ok: false, reason: 'bad_signature' });
        // another delivery's id, with this signature
        expect(verifyWebhook({ secrets: NEW, headers: { ...headers, [DELIVERY_HEADER]: deliveryIdOf('x', String(deltaS)) }, body, nowMs: NOW_MS })).toEqual({ ok: false, reason: 'bad_signature' });
        // a moved timestamp (both headers, so the shape holds) inside the window
        const t = NOW_MS / 1000 - (deltaS % TOLERANCE_S_DEFAULT) - 1;
        const moved = { ...headers, [TIMESTAMP_HEADER]: String(t), [SIGNATURE_HEADER]: headers[SIGNATURE_HEADER]!.replace(/^t=\d+/, `t=${t}`) };
        expect(verifyWebhook({ secrets: NEW, headers: moved, body, nowMs: NOW_MS })).toEqual({ ok: false, reason: 'bad_signature' });
      }),
    );
  });

  test('a timestamp more than the tolerance away, either way, is stale; at the edge it is taken', () => {
    const headers = signed([NEW]);
    const at = (offsetS: number, toleranceS?: number) => verifyWebhook({ secrets: NEW, headers, body: BODY, nowMs: NOW_MS + offsetS * 1000, toleranceS });
    expect(at(TOLERANCE_S_DEFAULT).ok).toBe(true);
    expect(at(-TOLERANCE_S_DEFAULT).ok).toBe(true);
    expect(at(TOLERANCE_S_DEFAULT + 1)).toEqual({ ok: false, reason: 'stale' });
    expect(at(-TOLERANCE_S_DEFAULT - 1)).toEqual({ ok: false, reason: 'stale' });
    expect(at(31, 30)).toEqual({ ok: false, reason: 'stale' });
    // stale is said before the MAC is looked at: an old capture with a wrong secret is still stale
    expect(verifyWebhook({ secrets: OLD, headers, body: BODY, nowMs: NOW_MS + 3_600_000 })).toEqual({ ok: false, reason: 'stale' });
  });

  test('a missing or malformed header is refused as malformed', () => {
    const headers = signed([NEW]);
    const without = (name: string) => Object.fromEntries(Object.entries(headers).filter(([k]) => k !== name));
    const cases: WebhookHeaders[] = [
      {},
      without(DELIVERY_HEADER),
      without(TIMESTAMP_HEADER),
      without(SIGNATURE_HEADER),
      { ...headers, [TIMESTAMP_HEADER]: String(NOW_MS / 1000 + 1) }, // the two timestamps disagree
      { ...headers, [SIGNATURE_HEADER]: 'v1=abc' },
      { ...headers, [SIGNATURE_HEADER]: headers[SIGNATURE_HEADER]!.replace(/,v1=.*/, '') },
      { ...headers, [SIGNATURE_HEADER]: `${headers[SIGNATURE_HEADER]},t=1` },
      { ...headers, [SIGNATURE_HEADER]: `${headers[SIGNATURE_HEADER]}${`,v1=${'0'.repeat(64)}`.repeat(4)}` }, // more v1 than Sluice sends
      { ...headers, [DELIVERY_HEADER]: 'dlv with spaces' },
      { ...headers, [DELIVERY_HEADER]: [ID, ID] },
    ];
    for (const h of cases) expect({ h, result: verifyWebhook({ secrets: NEW, headers: h, body: BODY, nowMs: NOW_MS }) }).toEqual({ h, result: { ok: false, reason: 'malformed' } });
  });

  test('header names are matched without regard to case (a fetch Headers copy, a proxy that capitalises)', () => {
    const upper = Object.fromEntries(Object.entries(signed([NEW])).map(([k, v]) => [k.replace(/(^|-)s/g, (m) => m.toUpperCase()), v]));
    expect(Object.keys(upper)).toContain('Sluice-Signature');
    expect(verifyWebhook({ secrets: NEW, headers: upper, body: BODY, nowMs: NOW_MS }).ok).toBe(true);
  });

  test('a delivery id is the same for one event and URL, and differs with either', () => {
    expect(deliveryIdOf('e1', 'http://a/')).toBe(deliveryIdOf('e1', 'http://a/'));
    expect(deliveryIdOf('e1', 'http://a/')).toMatch(/^dlv_[0-9a-f]{32}$/);
    expect(new Set([deliveryIdOf('e1', 'http://a/'), deliveryIdOf('e2', 'http://a/'), deliveryIdOf('e1', 'http://b/')]).size).toBe(3);
  });

  test('signing refuses what would make an unverifiable header', () => {
    expect(() => signWebhook({ secrets: [], deliveryId: ID, body: BODY, nowMs: NOW_MS })).toThrow(/secrets/);
    expect(() => signWebhook({ secrets: [NEW, OLD, NEW, OLD, NEW], deliveryId: ID, body: BODY, nowMs: NOW_MS })).toThrow(/secrets/);
    expect(() => signWebhook({ secrets: [NEW], deliveryId: 'a.b', body: BODY, nowMs: NOW_MS })).toThrow(/delivery id/);
    expect(() => verifyWebhook({ secrets: [], headers: signed([NEW]), body: BODY })).toThrow(/secrets/);
  });
});

describe('the documented receiver', () => {
  let server: Server;
  let url: string;
  let nowMs = NOW_MS;
  let failNext = false;
  const handled: Array<{ event: unknown; deliveryId: string }> = [];
  beforeAll(async () => {
    server = createServer(
      webhookReceiver({
        secrets: () => [NEW],
        nowMs: () => nowMs,
        dedupe: rememberDeliveries({ rememberS: 3600, entriesMax: 3 }),
        onEvent: (event, deliveryId) => {
          if (failNext) {
            failNext = false;
            throw new Error('the receiver’s own database is down');
          }
          handled.push({ event, deliveryId });
        },
      }),
    );
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`;
  });
  afterAll(() => new Promise((r) => server.close(r)));
  beforeEach(() => {
    handled.length = 0;
    nowMs = NOW_MS;
  });

  const post = async (headers: Record<string, string>, body = BODY) => {
    const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
    return { status: res.status, body: await res.json() };
  };
  const idFor = (n: number) => deliveryIdOf(`e${n}`, url);

  test('handles a signed delivery once; the same delivery again (a retry, a replay inside the window) is answered 200 and not handled', async () => {
    const first = signed([NEW], BODY, nowMs, idFor(1));
    expect(await post(first)).toEqual({ status: 200, body: { handled: idFor(1) } });
    // Sluice's retry: the same delivery id, signed again later
    nowMs += 10_000;
    expect(await post(signed([NEW], BODY, nowMs, idFor(1)))).toEqual({ status: 200, body: { duplicate: true } });
    // an attacker's replay of the captured first attempt, inside the window
    expect(await post(first)).toEqual({ status: 200, body: { duplicate: true } });
    expect(handled).toEqual([{ event: JSON.parse(BODY), deliveryId: idFor(1) }]);
  });

  test('refuses a tampered body, a wrong secret and an old timestamp with 401, handling nothing', async () => {
    const headers = signed([NEW], BODY, nowMs, idFor(2));
    expect(await post(headers, BODY.replace('"n":1', '"n":2'))).toEqual({ status: 401, body: { error: 'bad_signature' } });
    expect(await post(signed([OLD], BODY, nowMs, idFor(2)))).toEqual({ status: 401, body: { error: 'bad_signature' } });
    nowMs += (TOLERANCE_S_DEFAULT + 1) * 1000;
    expect(await post(headers)).toEqual({ status: 401, body: { error: 'stale' } });
    expect(await post({})).toEqual({ status: 401, body: { error: 'malformed' } });
    expect(handled).toEqual([]);
  });

  test('a delivery whose handling failed (500) is handled when Sluice retries it', async () => {
    failNext = true;
    expect((await post(signed([NEW], BODY, nowMs, idFor(3)))).status).toBe(500);
    expect(await post(signed([NEW], BODY, nowMs + 1000, idFor(3)))).toEqual({ status: 200, body: { handled: idFor(3) } });
    expect(handled.map((h) => h.deliveryId)).toEqual([idFor(3)]);
  });

  test('the dedupe is bounded: past its entries the oldest id is forgotten, and past its memory every id is', () => {
    const dedupe = rememberDeliveries({ rememberS: 60, entriesMax: 2 });
    expect(['a', 'b', 'a'].map((id) => dedupe.claim(id, 0))).toEqual([true, true, false]);
    expect(dedupe.claim('c', 0)).toBe(true); // 'a' goes
    expect(dedupe.claim('a', 0)).toBe(true);
    expect(dedupe.claim('c', 59_000)).toBe(false);
    expect(dedupe.claim('c', 60_000)).toBe(true); // remembered for 60 s
  });
});
