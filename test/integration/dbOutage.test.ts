import pg from 'pg';
import { Client, Connection, defaultGrpcRetryOptions, makeGrpcRetryInterceptor } from '@temporalio/client';
import { freePort } from '../../src/dev/ports';
import { buildApp } from '../../src/api/app';
import { createPool, withTransaction } from '../../src/db/pool';
import { RUNTIME_ROLE_DEFAULT } from '../../src/db/roles';
import { createLogger } from '../../src/logger';
import { createTestDatabase, SERVER_URL, type TestDatabase } from '../support/db';
import { ADMIN_KEY, api } from '../support/stack';

/**
 * The database going away under Sluice (found by the chaos suite, test/chaos): a
 * backend terminated while a transaction holds its connection between two
 * statements must neither crash the process nor lose or double the transaction,
 * and the API answers an outage with 503 and Retry-After, never 500.
 */
let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
  await db.pool.query('create table outage_probe (n int primary key)');
});
afterAll(async () => {
  await db?.drop();
});

async function terminate(pid: number): Promise<void> {
  const admin = new pg.Client({ connectionString: SERVER_URL });
  await admin.connect();
  try {
    await admin.query('select pg_terminate_backend($1)', [pid]);
  } finally {
    await admin.end();
  }
}

describe('a lost database connection', () => {
  test('terminated between two statements of a transaction: no crash, the transaction runs again on another connection and commits once', async () => {
    const pids: number[] = [];
    let uncaught: unknown;
    const onUncaught = (error: unknown) => {
      uncaught = error;
    };
    process.on('uncaughtException', onUncaught);
    try {
      const result = await withTransaction(db.pool, async (client) => {
        pids.push((await client.query('select pg_backend_pid() as pid')).rows[0].pid);
        await client.query('insert into outage_probe (n) values (1)');
        if (pids.length === 1) {
          // the connection dies while this transaction holds it, between statements
          const died = new Promise((r) => client.once('error', r));
          await terminate(pids[0]!);
          await died;
        }
        await client.query('insert into outage_probe (n) values (2)');
        return pids.length;
      });
      expect(result).toBe(2);
    } finally {
      process.off('uncaughtException', onUncaught);
    }
    expect(uncaught).toBeUndefined();
    expect(pids[1]).not.toBe(pids[0]);
    // the first attempt rolled back with its connection; the second committed both rows, once
    expect((await db.pool.query('select n from outage_probe order by n')).rows).toEqual([{ n: 1 }, { n: 2 }]);
    // the broken client left the pool: the next statements run
    expect((await db.pool.query('select count(*)::int as n from outage_probe')).rows[0].n).toBe(2);
  });

  test("a connection cut between an account's row and its event: nothing is left, the API answers 503; the retry opens it once, and a retry of that answers the same account", async () => {
    // the cut, inside the transaction: the account.created event's insert terminates its own backend, after counting itself
    await db.pool.query('create sequence cut_attempts');
    await db.pool.query(`grant usage on sequence cut_attempts to ${RUNTIME_ROLE_DEFAULT}`);
    await db.pool.query(`create function cut_account_event() returns trigger language plpgsql as $$
      begin
        if new.type = 'account.created' and new.subject = 'cutter.w' then
          perform nextval('cut_attempts');
          perform pg_terminate_backend(pg_backend_pid());
        end if;
        return new;
      end $$`);
    await db.pool.query('create trigger cut_account_event before insert on events for each row execute function cut_account_event()');
    const connection = Connection.lazy({ address: '127.0.0.1:1' });
    const app = await buildApp({ pool: db.runtimePool, temporal: new Client({ connection }), taskQueue: 'unused', adminKey: ADMIN_KEY, bodyLimitBytes: 65_536, logger: createLogger('silent') });
    const accountRows = async () => (await db.pool.query(`select count(*)::int as n from accounts where id = 'cutter.w'`)).rows[0].n;
    const eventRows = async () => (await db.pool.query(`select count(*)::int as n from events where type = 'account.created' and subject = 'cutter.w'`)).rows[0].n;
    try {
      const party = await api(app, ADMIN_KEY).post('/v1/parties', { id: 'cutter', name: 'Cutter' });
      expect(party.status).toBe(201);
      const cutter = api(app, party.body.apiKey);
      const cut = await cutter.post('/v1/accounts', { id: 'cutter.w' });
      // the cut happened (each attempt of the transaction reached the event and lost its connection there)
      expect(Number((await db.pool.query('select last_value from cut_attempts')).rows[0].last_value)).toBeGreaterThanOrEqual(1);
      expect(cut.status).toBe(503);
      expect(cut.body.error.code).toBe('unavailable');
      // the account went with its event: no row without its event
      expect([await accountRows(), await eventRows()]).toEqual([0, 0]);

      await db.pool.query('drop trigger cut_account_event on events');
      const retried = await cutter.post('/v1/accounts', { id: 'cutter.w' });
      expect(retried.status).toBe(201);
      expect(retried.body).toMatchObject({ id: 'cutter.w', ownerId: 'cutter', kind: 'user', currency: 'UNIT', balance: 0 });
      // a retry of a creation whose answer was lost finds the account, and writes nothing
      const again = await cutter.post('/v1/accounts', { id: 'cutter.w' });
      expect(again.status).toBe(200);
      expect(again.body).toEqual(retried.body);
      expect([await accountRows(), await eventRows()]).toEqual([1, 1]);
      // the id on other terms is taken
      const otherCurrency = await cutter.post('/v1/accounts', { id: 'cutter.w', currency: 'EUR' });
      expect(otherCurrency.status).toBe(409);
      expect(otherCurrency.body.error).toMatchObject({ code: 'already_exists', details: { account: 'cutter.w' } });
    } finally {
      await app.close();
      await connection.close();
    }
  });

  test('the API answers a Temporal it cannot reach with 503 unavailable and Retry-After, not 500, and nothing moves', async () => {
    const port = await freePort(); // nothing listens there
    // the client's own retries, cut short (by default they try for about 20 s)
    const connection = Connection.lazy({ address: `127.0.0.1:${port}`, interceptors: [makeGrpcRetryInterceptor(defaultGrpcRetryOptions({ maxAttempts: 2 }))] });
    const app = await buildApp({ pool: db.runtimePool, temporal: new Client({ connection }), taskQueue: 'unused', adminKey: ADMIN_KEY, bodyLimitBytes: 65_536, logger: createLogger('silent') });
    try {
      const admin = api(app, ADMIN_KEY);
      for (const id of ['tpayer', 'tpayee']) {
        const party = await admin.post('/v1/parties', { id, name: id });
        expect(party.status).toBe(201);
        expect((await api(app, party.body.apiKey).post('/v1/accounts', { id: `${id}.w` })).status).toBe(201);
      }
      expect((await admin.post('/v1/deposits', { accountId: 'tpayer.w', amount: 100 }, 'fund-tpayer')).status).toBe(201);
      const res = await app.inject({
        method: 'POST',
        url: '/v1/streams',
        headers: { authorization: `Bearer ${ADMIN_KEY}` },
        payload: { ref: 'unreachable', fromAccountId: 'tpayer.w', toAccountId: 'tpayee.w', ratePerTick: 1, maxTotal: 10, tickIntervalMs: 1000 },
      });
      expect(res.statusCode).toBe(503);
      expect(res.headers['retry-after']).toBe('1');
      expect(res.json().error.code).toBe('unavailable');
      expect((await db.pool.query(`select count(*)::int as n from streams`)).rows[0].n).toBe(0);
      expect((await admin.get('/v1/accounts/tpayer.w')).body).toMatchObject({ balance: 100, held: 0 });
    } finally {
      await app.close();
      await connection.close();
    }
  });

  test('the API answers a database it cannot reach with 503 unavailable and Retry-After, not 500', async () => {
    const unreachable = createPool('postgres://postgres@127.0.0.1:1/nowhere', 1);
    const app = await buildApp({
      pool: unreachable,
      temporal: new Client(), // lazy: never called here
      taskQueue: 'unused',
      adminKey: ADMIN_KEY,
      bodyLimitBytes: 65_536,
      logger: createLogger('silent'),
    });
    try {
      const res = await app.inject({ method: 'GET', url: '/v1/accounts/anything', headers: { authorization: `Bearer ${ADMIN_KEY}` } });
      expect(res.statusCode).toBe(503);
      expect(res.headers['retry-after']).toBe('1');
      expect(res.json()).toEqual({ error: expect.objectContaining({ code: 'unavailable', message: expect.stringMatching(/retry the same request/), details: {} }) });
      // a party's key cannot even be looked up: the same 503, not a 401
      expect((await api(app, 'some-party-key').get('/v1/accounts/anything')).status).toBe(503);
    } finally {
      await app.close();
      await unreachable.end();
    }
  });
});
