import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLogger } from '../../src/logger';
import { installTemporalLogging } from '../../src/temporal/logging';
import { verifyWebhook } from '../../src/webhooks/signature';
import { testParties, until } from '../support/parties';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';
import { installTemporalRuntime } from '../support/temporalRuntime';

/**
 * Secrets against the real stack: API keys are stored hashed (no key in any table),
 * an entity's webhook secret is stored where signing needs it and nowhere else, and
 * neither the API's nor the worker's log, captured at debug level through a whole
 * registration, subaccount creation and signed (once retried) webhook delivery,
 * holds any key or secret.
 */

/** A pino destination that keeps every line. */
const buffer = () => {
  const lines: string[] = [];
  return { lines, write: (line: string) => void lines.push(line), text: () => lines.join('') };
};
const apiLog = buffer();
const workerLog = buffer();

// workflow ids (the creation saga, the webhook delivery) are unique per Temporal namespace, which
// every test file shares: the entity's id carries this run's
const ENTITY = `acme-${randomBytes(4).toString('hex')}`;

let stack: TestStack;
let receiver: Server;
let hookUrl: string;
const deliveries: Array<{ body: string; headers: IncomingHttpHeaders }> = [];
let refuseNext = 1; // the first delivery fails: the worker logs the failed attempt and retries

const { keys, party } = testParties(() => stack);
let acme: { apiKey: string; webhookSecret: string; mainAccountId: string };

beforeAll(async () => {
  receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      if (refuseNext-- > 0) return void res.writeHead(503).end();
      deliveries.push({ body, headers: req.headers });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`;
  installTemporalRuntime(() => installTemporalLogging(createLogger('debug', 'sluice-worker', workerLog), 'DEBUG'));
  stack = await startTestStack({ logger: createLogger('debug', 'sluice-api', apiLog) });

  const admin = api(stack.app, ADMIN_KEY);
  await party('alice');
  const entity = await admin.post('/v1/entities', { id: ENTITY, name: 'Acme', collateral: 10, funding: 5, webhookUrls: [hookUrl] });
  expect(entity.status).toBe(201);
  acme = entity.body;
  expect((await admin.post('/v1/deposits', { accountId: acme.mainAccountId, amount: 1_000 }, 'fund-acme')).status).toBe(201);
  const created = await api(stack.app, acme.apiKey).post(`/v1/entities/${ENTITY}/subaccounts`, { requestId: 'r1' });
  expect(created.status).toBe(201);
  expect(created.body.subaccount).toMatchObject({ id: `${ENTITY}/1`, status: 'active' });
  // a refused key, a refused body: the error paths log too
  expect((await api(stack.app, `${keys.alice!}x`).post('/v1/transfers', { fromAccountId: 'alice.w', toAccountId: acme.mainAccountId, amount: 1 }, 'k1')).status).toBe(401);
  expect((await api(stack.app, keys.alice!).post('/v1/transfers', { fromAccountId: 'alice.w', toAccountId: acme.mainAccountId, amount: 1 }, 'k2')).status).toBe(422);
  // the announcement is delivered (after one refused attempt) and recorded
  await until('the announcement delivered', async () => {
    const log = (await api(stack.app, acme.apiKey).get(`/v1/entities/${ENTITY}/deliveries`)).body.deliveries;
    return log.some((d: { ok: boolean }) => d.ok) ? true : undefined;
  });
});
afterAll(async () => {
  await stack?.stop();
  await new Promise((r) => receiver.close(r));
});

const secrets = () => ({ 'alice API key': keys.alice!, 'acme API key': acme.apiKey, 'acme webhook secret': acme.webhookSecret, 'admin key': ADMIN_KEY });

test('the webhook was signed with the secret (the secret was in use while the logs were captured)', () => {
  expect(deliveries).toHaveLength(1);
  expect(JSON.parse(deliveries[0]!.body)).toMatchObject({ entityId: ENTITY, subaccount: { id: `${ENTITY}/1` } });
  expect(verifyWebhook({ secrets: acme.webhookSecret, headers: deliveries[0]!.headers, body: deliveries[0]!.body })).toMatchObject({ ok: true });
});

test('API keys are stored hashed: no key appears in any table, and each party has the hash of its own', async () => {
  const { rows: tables } = await stack.db.pool.query<{ name: string }>(
    `select table_name as name from information_schema.tables where table_schema = 'public' and table_type = 'BASE TABLE' order by 1`,
  );
  expect(tables.map((t) => t.name)).toEqual(expect.arrayContaining(['parties', 'events', 'entities', 'webhook_deliveries', 'idempotency_keys']));
  const where: Record<string, string[]> = {};
  for (const { name } of tables) {
    const { rows } = await stack.db.pool.query<{ row: string }>(`select t::text as row from "${name}" t`);
    for (const [what, secret] of Object.entries(secrets())) {
      if (rows.some((r) => r.row.includes(secret))) (where[what] ??= []).push(name);
    }
  }
  // the webhook secret signs every delivery, so it is kept, in its entity's row only
  expect(where).toEqual({ 'acme webhook secret': ['entities'] });
  const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
  const { rows: parties } = await stack.db.pool.query(`select party_id, key_hash from api_keys order by party_id`);
  expect(parties).toEqual([
    { party_id: ENTITY, key_hash: sha256(acme.apiKey) },
    { party_id: 'alice', key_hash: sha256(keys.alice!) },
  ]);
});

test("neither the API's nor the worker's log holds a key or the webhook secret", () => {
  const apiText = apiLog.text();
  const workerText = workerLog.text();
  // the logs saw the whole story: requests, the saga's activities, the failed and retried delivery
  expect(apiText).toContain(`/v1/entities/${ENTITY}/subaccounts`);
  expect(apiText).toContain('"statusCode":401');
  expect(workerText).toContain('deliverWebhook');
  expect(workerText).toContain('503');
  for (const [what, secret] of Object.entries(secrets())) {
    expect({ what, inApiLog: apiText.includes(secret), inWorkerLog: workerText.includes(secret) }).toEqual({ what, inApiLog: false, inWorkerLog: false });
  }
});
