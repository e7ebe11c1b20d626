import { randomBytes } from 'node:crypto';
import { WorkflowFailedError } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { createActivities } from '../../activities';
import { paymentWorkflowId } from '../../src/domain/payments';
import { SA_STATUS, SEARCH_ATTRIBUTES } from '../../src/domain/searchAttributes';
import { createAccount, getAccount } from '../../src/ledger/accounts';
import { createParty } from '../../src/ledger/parties';
import { deposit } from '../../src/ledger/transfers';
import { sluiceErrorFromTemporal } from '../../src/temporal/failures';
import { resolveTool, sdkExecutable, TEMPORAL_TEST_SERVER } from '../../src/temporal/tools';
import { paymentWorkflow } from '../../workflows';
import { sleeper } from '../fixtures/sleeper';
import { createTestDatabase, type TestDatabase } from '../support/db';
import { quietTemporalRuntime } from '../support/temporalRuntime';

/**
 * The product workflows on the time-skipping test server (the Java test server,
 * resolved by globalSetup or src/temporal/tools.ts), with real activities on a real
 * database: timers fire as soon as nothing else is pending, so a workflow that waits
 * a day finishes in moments.
 */
const HOUR_MS = 60 * 60 * 1000;
const DAY_MS = 24 * HOUR_MS;

let env: TestWorkflowEnvironment;
let db: TestDatabase;
let worker: Worker;
let running: Promise<void>;
const taskQueue = `timeskip-${randomBytes(4).toString('hex')}`;

/** A hang (e.g. a workflow task failing in a loop) becomes a readable failure. */
function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms (run with TEST_TEMPORAL_LOG_LEVEL=WARN to see why)`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

beforeAll(async () => {
  quietTemporalRuntime();
  const path = process.env.SLUICE_TEST_TIME_SKIPPING_SERVER;
  const executable = path ? ({ type: 'existing-path', path } as const) : sdkExecutable(resolveTool(TEMPORAL_TEST_SERVER));
  env = await TestWorkflowEnvironment.createTimeSkipping({ server: { executable } });
  // The test server refuses unregistered search attributes ("search attribute SluiceStatus is
  // not defined"), which fails paymentWorkflow's upsert task over and over. createTimeSkipping
  // has no searchAttributes option (only the dev server config does) and the test server does
  // not implement ListSearchAttributes (so registerSearchAttributes, which lists first, cannot
  // be used), but it does implement AddSearchAttributes.
  await env.connection.operatorService.addSearchAttributes({
    namespace: env.namespace ?? 'default',
    searchAttributes: Object.fromEntries(SEARCH_ATTRIBUTES.map((k) => [k.name, temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD])),
  });

  db = await createTestDatabase();
  await createParty(db.pool, { id: 'alice', name: 'Alice' });
  await createParty(db.pool, { id: 'bob', name: 'Bob' });
  await createAccount(db.pool, { id: 'alice.wallet', ownerId: 'alice', kind: 'user' });
  await createAccount(db.pool, { id: 'bob.wallet', ownerId: 'bob', kind: 'user' });
  await deposit(db.pool, { key: 'seed-alice', accountId: 'alice.wallet', amount: 1000 });

  const bundle = process.env.SLUICE_TEST_WORKFLOW_BUNDLE;
  worker = await Worker.create({
    connection: env.nativeConnection,
    namespace: env.namespace ?? 'default',
    taskQueue,
    ...(bundle ? { workflowBundle: { codePath: bundle } } : { workflowsPath: require.resolve('../../workflows') }),
    activities: createActivities({ pool: db.pool }),
  });
  running = worker.run();
});

afterAll(async () => {
  if (worker) {
    worker.shutdown();
    await running;
  }
  await db?.drop();
  await env?.teardown();
});

const balances = async () => ({
  alice: (await getAccount(db.pool, 'alice.wallet')).balance,
  bob: (await getAccount(db.pool, 'bob.wallet')).balance,
});

describe('workflows on the time-skipping test server', () => {
  test('paymentWorkflow settles end to end: receipt, balances, one transfer, SluiceStatus upserted', async () => {
    const request = { ref: 'ts-1', payerAccountId: 'alice.wallet', payeeAccountId: 'bob.wallet', amount: 250, memo: 'gpu minutes' };
    const handle = await env.client.workflow.start(paymentWorkflow, { workflowId: paymentWorkflowId(request.ref), taskQueue, args: [request] });
    const receipt = await within(30_000, handle.result(), 'paymentWorkflow');
    expect(receipt).toMatchObject({ ref: 'ts-1', status: 'CONFIRMED', payer: 'alice', payee: 'bob', amount: 250, refunded: 0, memo: 'gpu minutes' });
    expect(await balances()).toEqual({ alice: 750, bob: 250 });
    const { rows } = await db.pool.query(`select id, amount from transfers where payment_ref = 'ts-1'`);
    expect(rows).toEqual([{ id: receipt.transferId, amount: 250 }]);
    expect((await handle.describe()).typedSearchAttributes.get(SA_STATUS)).toBe('CONFIRMED');
  });

  test('paymentWorkflow the payer cannot cover fails with insufficient_funds and moves nothing', async () => {
    const request = { ref: 'ts-big', payerAccountId: 'alice.wallet', payeeAccountId: 'bob.wallet', amount: 5000 };
    const run = env.client.workflow.execute(paymentWorkflow, { workflowId: paymentWorkflowId(request.ref), taskQueue, args: [request] });
    const error = await within(30_000, run, 'paymentWorkflow').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(WorkflowFailedError);
    expect(sluiceErrorFromTemporal(error)).toMatchObject({ code: 'insufficient_funds', details: { available: 750, required: 5000 } });
    expect(await balances()).toEqual({ alice: 750, bob: 250 });
  });

  test('env.sleep skips server time: an hour passes on the server clock', async () => {
    const before = await env.currentTimeMs();
    const wallStart = Date.now();
    await env.sleep('1 hour');
    const after = await env.currentTimeMs();
    expect(after - before).toBeGreaterThanOrEqual(HOUR_MS);
    expect(Date.now() - wallStart).toBeLessThan(HOUR_MS / 100); // skipped, not waited
  });

  test('a workflow timer of a day fires at once: the workflow clock advances by at least a day', async () => {
    const sleeperQueue = `${taskQueue}-sleeper`;
    const sleeperWorker = await Worker.create({
      connection: env.nativeConnection,
      namespace: env.namespace ?? 'default',
      taskQueue: sleeperQueue,
      workflowsPath: require.resolve('../fixtures/sleeper'),
    });
    const serverBefore = await env.currentTimeMs();
    const { before, after } = await sleeperWorker.runUntil(
      within(30_000, env.client.workflow.execute(sleeper, { workflowId: `sleeper-${randomBytes(4).toString('hex')}`, taskQueue: sleeperQueue, args: ['1 day'] }), 'sleeper'),
    );
    expect(after - before).toBeGreaterThanOrEqual(DAY_MS);
    expect((await env.currentTimeMs()) - serverBefore).toBeGreaterThanOrEqual(DAY_MS);
  });
});
