import { randomBytes } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { webhookReceiver } from '../../src/webhooks/receiver';
import { DELIVERY_HEADER, deliveryIdOf, SIGNATURE_HEADER, verifyWebhook } from '../../src/webhooks/signature';
import { until } from '../support/parties';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';

/**
 * Webhook secrets against the real stack (issue 22): a delivery the worker sends is
 * verified and handled once by the documented receiver (src/webhooks/receiver.ts);
 * a rotation answers the new secret once, signs with both secrets while the overlap
 * lasts, and with the new one alone once it is retired or has ended; no other
 * answer holds a secret; refusals change nothing.
 *
 * Two receivers: the documented one, given the secret its operator holds at each
 * step, and a capture that keeps each attempt's raw headers and body, so each
 * secret can be tried on its own.
 */

// workflow ids (the creation saga, the webhook delivery) are unique per Temporal namespace, which every
// test file shares: the entity's id carries this run's
const RUN = randomBytes(4).toString('hex');
const ENTITY = `whs-${RUN}`;
const OTHER = `whs-other-${RUN}`;

let stack: TestStack;
let admin: ReturnType<typeof api>;
let entityApi: ReturnType<typeof api>;
let otherApi: ReturnType<typeof api>;
let documented: Server;
let capture: Server;
let documentedUrl: string;
let captureUrl: string;
/** What the documented receiver's operator holds. */
let receiverSecrets: string[] = [];
const handled: Array<{ event: any; deliveryId: string }> = [];
const documentedHeaders: IncomingHttpHeaders[] = [];
const captured: Array<{ headers: IncomingHttpHeaders; body: string }> = [];
/** The secrets answered, in order: [0] at registration, then one per rotation. */
const secrets: string[] = [];
let subaccounts = 0;

const listen = async (server: Server) => {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`;
};
const subOf = (e: { subaccount: { id: string } }) => e.subaccount.id;

/** Creates the next subaccount and waits for its announcement at both receivers: the capture's raw attempt. */
async function announceOne() {
  const res = await entityApi.post(`/v1/entities/${ENTITY}/subaccounts`, { requestId: `r${++subaccounts}` });
  expect(res.status).toBe(201);
  const sub = res.body.subaccount.id as string;
  await until(`the documented receiver handles ${sub}`, async () => (handled.some((h) => subOf(h.event) === sub) ? true : undefined));
  return until(`the capture gets ${sub}`, async () => captured.find((c) => subOf(JSON.parse(c.body)) === sub));
}
const verifiesWith = (secret: string, attempt: { headers: IncomingHttpHeaders; body: string }) => verifyWebhook({ secrets: secret, headers: attempt.headers, body: attempt.body });
const v1Count = (attempt: { headers: IncomingHttpHeaders }) => String(attempt.headers[SIGNATURE_HEADER]).match(/v1=/g)?.length;
const secretColumns = async () =>
  (await stack.db.pool.query(`select webhook_secret, webhook_secret_previous, webhook_secret_previous_until, webhook_secret_rotated_at from entities where id = $1`, [ENTITY])).rows[0];
const eventsOf = async (type: string) => (await stack.db.pool.query(`select payload from events where type = $1 and subject = $2 order by id`, [type, ENTITY])).rows.map((r) => r.payload);

beforeAll(async () => {
  const receive = webhookReceiver({ secrets: () => receiverSecrets, onEvent: (event, deliveryId) => void handled.push({ event, deliveryId }) });
  documented = createServer((req, res) => {
    documentedHeaders.push(req.headers);
    receive(req, res);
  });
  capture = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      captured.push({ headers: req.headers, body });
      res.writeHead(204).end();
    });
  });
  documentedUrl = await listen(documented);
  captureUrl = await listen(capture);
  stack = await startTestStack();
  admin = api(stack.app, ADMIN_KEY);
  const registered = await admin.post('/v1/entities', { id: ENTITY, name: 'Rotating', collateral: 1, funding: 1, webhookUrls: [documentedUrl, captureUrl], creationsPerHour: 100 });
  expect(registered.status).toBe(201);
  secrets.push(registered.body.webhookSecret);
  receiverSecrets = [secrets[0]!];
  entityApi = api(stack.app, registered.body.apiKey);
  expect((await admin.post('/v1/deposits', { accountId: registered.body.mainAccountId, amount: 1_000 }, `fund-${ENTITY}`)).status).toBe(201);
  const other = await admin.post('/v1/entities', { id: OTHER, name: 'Another', collateral: 1, funding: 1 });
  expect(other.status).toBe(201);
  otherApi = api(stack.app, other.body.apiKey);
});
afterAll(async () => {
  await stack?.stop();
  await Promise.all([documented, capture].map((s) => new Promise((r) => s?.close(r))));
});

describe('webhook secrets', () => {
  test('a real delivery is verified and handled once by the documented receiver; its delivery id is the log’s, and a replay of it is not handled again', async () => {
    const attempt = await announceOne();
    const sub = `${ENTITY}/1`;
    const eventKey = `subaccount.active:${sub}`;
    expect(handled).toEqual([{ event: JSON.parse(attempt.body), deliveryId: deliveryIdOf(eventKey, documentedUrl) }]);
    expect(attempt.headers[DELIVERY_HEADER]).toBe(deliveryIdOf(eventKey, captureUrl));
    expect(v1Count(attempt)).toBe(1);
    // a receiver sees the request before its attempt's row commits: wait for both rows
    const delivered = async () => (await entityApi.get(`/v1/entities/${ENTITY}/deliveries`)).body.deliveries.filter((d: any) => d.ok);
    for (const until = Date.now() + 30_000; (await delivered()).length < 2 && Date.now() < until; ) await new Promise((r) => setTimeout(r, 100));
    expect((await delivered()).map((d: any) => [d.url, d.deliveryId]).sort()).toEqual(
      [
        [documentedUrl, deliveryIdOf(eventKey, documentedUrl)],
        [captureUrl, deliveryIdOf(eventKey, captureUrl)],
      ].sort(),
    );
    // the attempt the documented receiver handled, sent to it again (the same bytes: one event, one body)
    const replayed = await fetch(documentedUrl, { method: 'POST', headers: documentedHeaders[0] as Record<string, string>, body: attempt.body });
    expect({ status: replayed.status, body: await replayed.json() }).toEqual({ status: 200, body: { duplicate: true } });
    expect(handled).toHaveLength(1);
  });

  test('a rotation answers the new secret once (201); while the overlap lasts each delivery carries two v1 and verifies with either secret alone', async () => {
    const rotated = await entityApi.post(`/v1/entities/${ENTITY}/webhook-secret/rotate`, { overlapS: 3600 });
    expect(rotated.status).toBe(201);
    expect(rotated.body).toEqual({ id: ENTITY, webhookSecret: expect.stringMatching(/^whsec_[A-Za-z0-9_-]{32}$/), overlapUntil: expect.any(String) });
    secrets.push(rotated.body.webhookSecret);
    expect(secrets[1]).not.toBe(secrets[0]);
    const entity = (await entityApi.get(`/v1/entities/${ENTITY}`)).body;
    expect(entity.webhookSecretOverlapUntil).toBe(rotated.body.overlapUntil);
    expect(await eventsOf('entity.webhook_secret_rotated')).toEqual([{ entity: ENTITY, overlapUntil: rotated.body.overlapUntil, keptPrevious: false }]);

    // the operator still holds the first secret: deliveries verify
    const overlap = await announceOne();
    expect(v1Count(overlap)).toBe(2);
    for (const secret of secrets) expect(verifiesWith(secret, overlap)).toMatchObject({ ok: true, deliveryId: overlap.headers[DELIVERY_HEADER] });
    // the operator moves to the new secret, still inside the overlap
    receiverSecrets = [secrets[1]!];
    const moved = await announceOne();
    expect(v1Count(moved)).toBe(2);
  });

  test('no answer but the rotation’s holds a secret, and no event or delivery log does', async () => {
    const answers = [
      await entityApi.get(`/v1/entities/${ENTITY}`),
      await admin.get(`/v1/entities/${ENTITY}`),
      await admin.get('/v1/entities?limit=100'),
      await entityApi.get(`/v1/entities/${ENTITY}/deliveries`),
      await entityApi.get('/v1/events?after=0&limit=1000'),
      await admin.get('/v1/events?after=0&limit=1000'),
      await entityApi.get(`/v1/entities/${ENTITY}/dashboard`),
    ];
    for (const res of answers) expect(res.status).toBe(200);
    const text = JSON.stringify(answers.map((a) => a.body));
    expect(text).toContain(ENTITY);
    for (const secret of secrets) expect(text.includes(secret)).toBe(false);
    const { rows } = await stack.db.pool.query(`select count(*)::int as n from events where payload::text like '%whsec_%'`);
    expect(rows[0].n).toBe(0);
  });

  test('after retiring, only the new secret signs: the old one is refused; a second retire changes nothing', async () => {
    const retired = await entityApi.post(`/v1/entities/${ENTITY}/webhook-secret/retire`);
    expect(retired).toMatchObject({ status: 200, body: { id: ENTITY, retired: true } });
    expect((await entityApi.get(`/v1/entities/${ENTITY}`)).body.webhookSecretOverlapUntil).toBeUndefined();
    const after = await announceOne();
    expect(v1Count(after)).toBe(1);
    expect(verifiesWith(secrets[0]!, after)).toEqual({ ok: false, reason: 'bad_signature' });
    expect(verifiesWith(secrets[1]!, after)).toMatchObject({ ok: true });

    const before = await secretColumns();
    expect(before).toMatchObject({ webhook_secret: secrets[1], webhook_secret_previous: null, webhook_secret_previous_until: null });
    expect(await entityApi.post(`/v1/entities/${ENTITY}/webhook-secret/retire`)).toMatchObject({ status: 200, body: { id: ENTITY, retired: false } });
    expect(await secretColumns()).toEqual(before);
    expect(await eventsOf('entity.webhook_secret_retired')).toEqual([{ entity: ENTITY }]);
  });

  test('a rotation during an overlap replaces the new secret and keeps the previous; once the overlap’s end passes, the previous no longer signs', async () => {
    for (const _ of [1, 2]) {
      const res = await admin.post(`/v1/entities/${ENTITY}/webhook-secret/rotate`, {}); // the admin, the default overlap
      expect(res.status).toBe(201);
      secrets.push(res.body.webhookSecret);
    }
    const [, kept, replaced, current] = secrets;
    expect((await eventsOf('entity.webhook_secret_rotated')).map((e) => e.keptPrevious)).toEqual([false, false, true]);
    const overlapUntil = new Date((await entityApi.get(`/v1/entities/${ENTITY}`)).body.webhookSecretOverlapUntil).getTime();
    const rotatedAt = (await secretColumns()).webhook_secret_rotated_at.getTime();
    expect(overlapUntil - rotatedAt).toBe(86_400_000); // the default: a day after the last rotation
    receiverSecrets = [kept!];
    const twice = await announceOne();
    expect(v1Count(twice)).toBe(2);
    expect([kept, replaced, current].map((s) => verifiesWith(s!, twice).ok)).toEqual([true, false, true]);

    // the day passes (the end moved into the past: the clock the test cannot wait for)
    await stack.db.pool.query(`update entities set webhook_secret_previous_until = now() - interval '1 second' where id = $1`, [ENTITY]);
    expect((await entityApi.get(`/v1/entities/${ENTITY}`)).body.webhookSecretOverlapUntil).toBeUndefined();
    receiverSecrets = [current!];
    const ended = await announceOne();
    expect(v1Count(ended)).toBe(1);
    expect([kept, current].map((s) => verifiesWith(s!, ended).ok)).toEqual([false, true]);
    // nothing left to retire: it says so, and clears the ended one
    expect((await entityApi.post(`/v1/entities/${ENTITY}/webhook-secret/retire`)).body).toEqual({ id: ENTITY, retired: false });
    expect(await secretColumns()).toMatchObject({ webhook_secret: current, webhook_secret_previous: null });
  });

  test('bad input is a clear 400, another party’s or an unknown entity a 404, and none of them changes anything', async () => {
    const before = { columns: await secretColumns(), events: (await stack.db.pool.query(`select count(*)::int as n from events`)).rows[0].n };
    const rotate = (as: ReturnType<typeof api>, id: string, body?: unknown) => as.post(`/v1/entities/${encodeURIComponent(id)}/webhook-secret/rotate`, body);
    for (const overlapS of [59, 7 * 86_400 + 1, 90.5, '3600', null]) {
      const res = await rotate(entityApi, ENTITY, { overlapS });
      expect({ overlapS, status: res.status, code: res.body.error?.code, path: res.body.error?.details?.issues?.[0]?.path }).toEqual({ overlapS, status: 400, code: 'invalid_request', path: '/overlapS' });
    }
    // another party, and the admin on an entity that does not exist: alike, so ids cannot be probed
    for (const [as, id] of [[otherApi, ENTITY], [admin, `nobody-${RUN}`]] as const) {
      for (const res of [await rotate(as, id, {}), await as.post(`/v1/entities/${id}/webhook-secret/retire`)]) {
        expect({ status: res.status, code: res.body.error.code }).toEqual({ status: 404, code: 'not_found' });
        expect(res.body.error.message).toMatch(/^entity .* not found$/);
      }
    }
    expect((await rotate(api(stack.app), ENTITY, {})).status).toBe(401);
    expect((await rotate(entityApi, 'a/b', {})).status).toBe(400);
    expect({ columns: await secretColumns(), events: (await stack.db.pool.query(`select count(*)::int as n from events`)).rows[0].n }).toEqual(before);
  });
});
