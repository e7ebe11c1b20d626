import { randomBytes } from 'node:crypto';
import { Client, WorkflowFailedError } from '@temporalio/client';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { createActivities } from '../../activities';
import { paymentWorkflowId } from '../../src/domain/payments';
import { SA_STATUS } from '../../workflows/searchAttributes';
import { createAccount, getAccount } from '../../src/ledger/accounts';
import { createParty } from '../../src/ledger/parties';
import { deposit, transfer } from '../../src/ledger/transfers';
import { activateSubaccount, allocateSubaccount, fundSubaccount, getSubaccount, holdCollateral, registerEntity } from '../../src/ledger/entities';
import { lifecycleWorkflowId } from '../../src/domain/entities';
import { sluiceErrorFromTemporal } from '../../src/temporal/failures';
import { checkpointWorkflow, paymentWorkflow, subaccountLifecycleWorkflow } from '../../workflows';
import { nextUtcMidnight } from '../../src/domain/checkpoints';
import { sleeper } from '../fixtures/sleeper';
import { createTestDatabase, type TestDatabase } from '../support/db';
import { startBundleWorker, startTimeSkippingEnv, within } from '../support/timeSkipping';

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
let worker: Awaited<ReturnType<typeof startBundleWorker>> | undefined;
const taskQueue = `timeskip-${randomBytes(4).toString('hex')}`;

beforeAll(async () => {
  env = await startTimeSkippingEnv();

  db = await createTestDatabase();
  await createParty(db.pool, { id: 'alice', name: 'Alice' });
  await createParty(db.pool, { id: 'bob', name: 'Bob' });
  await createAccount(db.pool, { id: 'alice.wallet', ownerId: 'alice', kind: 'user' });
  await createAccount(db.pool, { id: 'bob.wallet', ownerId: 'bob', kind: 'user' });
  await deposit(db.pool, { key: 'seed-alice', accountId: 'alice.wallet', amount: 1000 });

  worker = await startBundleWorker(env, taskQueue, createActivities({ pool: db.runtimePool }));
});

afterAll(async () => {
  await worker?.stop();
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

  test('a subaccount challenge of a week passes or eliminates by the balance rule, in moments', async () => {
    await registerEntity(db.pool, { id: 'ts-ent', name: 'TS entity', collateral: 100, funding: 50, webhookUrls: [], challengeMs: 7 * DAY_MS, challengeMinBps: 5000, assessEveryMs: 0 });
    await deposit(db.pool, { key: 'seed-ts-ent', accountId: 'ts-ent.main', amount: 1000 });
    // the saga's steps straight through the ledger (the saga runs on the dev server in
    // entities.test.ts); the lifecycle, whose week-long timer is the point here, runs here
    const ids: string[] = [];
    for (const requestId of ['keep', 'spend']) {
      const { id } = await allocateSubaccount(db.pool, { entityId: 'ts-ent', requestId, limits: { cap: 10, perHour: 10 } });
      await holdCollateral(db.pool, id);
      await fundSubaccount(db.pool, id);
      expect((await activateSubaccount(db.pool, id)).status).toBe('challenge');
      ids.push(id);
    }
    const [keep, spend] = ids as [string, string];
    // one subaccount spends 30 of its 50: below half its funding
    await transfer(db.pool, { key: 'ts-spend', kind: 'transfer', debitAccountId: spend, creditAccountId: 'bob.wallet', amount: 30 });
    const serverBefore = await env.currentTimeMs();
    // Time moves only by env.sleep here: awaiting a finished workflow through env.client can
    // make this test server skip years ahead (the other lifecycle would then hit its run
    // timeout), so both are started and awaited through a plain client.
    const plain = new Client({ connection: env.connection, namespace: env.namespace ?? 'default' });
    const handles = await Promise.all(
      ids.map((id) => plain.workflow.start(subaccountLifecycleWorkflow, { workflowId: lifecycleWorkflowId(id), taskQueue, args: [{ id }] })),
    );
    // both on their week-long timer before the week is skipped
    const onTimer = async (h: (typeof handles)[number]) => ((await h.fetchHistory()).events ?? []).some((e) => e.timerStartedEventAttributes);
    for (let i = 0; i < 100 && !(await Promise.all(handles.map(onTimer))).every(Boolean); i++) await new Promise((r) => setTimeout(r, 100));
    await env.sleep(7 * DAY_MS + HOUR_MS);
    const [kept, gone] = await within(30_000, Promise.all(handles.map((h) => h.result())), 'the lifecycles');
    expect((await env.currentTimeMs()) - serverBefore).toBeGreaterThanOrEqual(7 * DAY_MS);
    expect(kept).toMatchObject({ id: keep, status: 'active' });
    expect(gone).toMatchObject({ id: spend, status: 'eliminated' });
    // the rule that fired, with its figures: 20 left of 50 is 4000 bps, under the 5000 asked
    expect(gone!.eliminationRule).toEqual({ rule: 'min_balance', balance: 20, funding: 50, ratioBps: 4000, limitBps: 5000 });
    // eliminated: its 20 swept back, its collateral released; the kept one still holds 100
    expect((await getAccount(db.pool, spend)).balance).toBe(0);
    expect(await getAccount(db.pool, 'ts-ent.main')).toMatchObject({ balance: 1000 - 50 - 50 + 20, held: 100 });
  });

  test('ongoing rules: both challenges passed, then a day later one active subaccount is eliminated by drawdown, one by inactivity, and one is kept', async () => {
    const plain = new Client({ connection: env.connection, namespace: env.namespace ?? 'default' });
    await registerEntity(db.pool, { id: 'ts-dd', name: 'TS drawdown', collateral: 10, funding: 100, webhookUrls: [], challengeMs: DAY_MS, assessEveryMs: DAY_MS, maxDrawdownBps: 3000 });
    await registerEntity(db.pool, { id: 'ts-idle', name: 'TS inactivity', collateral: 10, funding: 100, webhookUrls: [], challengeMs: DAY_MS, assessEveryMs: DAY_MS, inactivityMs: 1.5 * DAY_MS });
    const ids: string[] = [];
    for (const [entityId, requestId] of [['ts-dd', 'climb'], ['ts-dd', 'steady'], ['ts-idle', 'idle']] as const) {
      await deposit(db.pool, { key: `seed-${entityId}-${requestId}`, accountId: `${entityId}.main`, amount: 200 });
      const { id } = await allocateSubaccount(db.pool, { entityId, requestId, limits: { cap: 10, perHour: 10 } });
      await holdCollateral(db.pool, id);
      await fundSubaccount(db.pool, id);
      expect((await activateSubaccount(db.pool, id)).status).toBe('challenge');
      ids.push(id);
    }
    const [climb, steady, idle] = ids as [string, string, string];
    // this server's clock has run days ahead of the database's (the tests before skipped them):
    // the idle one's creation, where its inactivity is measured from, is set to the server's now
    await db.pool.query('update subaccounts set created_at = $2 where id = $1', [idle, new Date(await env.currentTimeMs())]);
    // during the challenge: climb doubles to 200 (its high-water mark), steady spends 10 of its 100
    await deposit(db.pool, { key: 'ts-climb-up', accountId: climb, amount: 100 });
    await transfer(db.pool, { key: 'ts-steady-spend', kind: 'transfer', debitAccountId: steady, creditAccountId: 'bob.wallet', amount: 10 });
    const handles = await Promise.all(ids.map((id) => plain.workflow.start(subaccountLifecycleWorkflow, { workflowId: lifecycleWorkflowId(id), taskQueue, args: [{ id }] })));
    const timersStarted = async (h: (typeof handles)[number]) => ((await h.fetchHistory()).events ?? []).filter((e) => e.timerStartedEventAttributes).length;
    const untilTimers = async (n: number, hs: typeof handles) => {
      for (let i = 0; i < 300 && !(await Promise.all(hs.map(async (h) => (await timersStarted(h)) >= n))).every(Boolean); i++) await new Promise((r) => setTimeout(r, 100));
      expect(await Promise.all(hs.map(timersStarted))).toEqual(hs.map(() => n));
    };
    try {
      await untilTimers(1, handles);
      await env.sleep(DAY_MS + HOUR_MS);
      // promoted, each on its first assessment's timer: the high-water marks are 200 and 100 (the funding)
      await untilTimers(2, handles);
      expect(await Promise.all(ids.map(async (id) => (await getSubaccount(db.pool, id)).status))).toEqual(['active', 'active', 'active']);
      expect((await getSubaccount(db.pool, climb)).highWaterMark).toBe(200);
      expect((await getSubaccount(db.pool, steady)).highWaterMark).toBe(100);
      // after promotion climb spends 80: 120 of its mark of 200 is a fall of 4000 bps, over the 3000 allowed
      await transfer(db.pool, { key: 'ts-climb-down', kind: 'transfer', debitAccountId: climb, creditAccountId: 'bob.wallet', amount: 80 });
      await env.sleep(DAY_MS + HOUR_MS);
      const [byDrawdown, byInactivity] = await within(30_000, Promise.all([handles[0]!.result(), handles[2]!.result()]), 'the eliminations');
      expect(byDrawdown).toMatchObject({ id: climb, status: 'eliminated', failure: 'rule_breached' });
      expect(byDrawdown.eliminationRule).toEqual({ rule: 'max_drawdown', highWaterMark: 200, balance: 120, drawdownBps: 4000, limitBps: 3000 });
      expect(byInactivity).toMatchObject({ id: idle, status: 'eliminated', failure: 'rule_breached' });
      const createdIdle = (await db.pool.query('select created_at from subaccounts where id = $1', [idle])).rows[0].created_at as Date;
      expect(byInactivity.eliminationRule).toMatchObject({ rule: 'inactivity', lastActivityAt: createdIdle.toISOString(), limitMs: 1.5 * DAY_MS });
      const idleMs = (byInactivity.eliminationRule as { idleMs: number }).idleMs;
      expect(idleMs).toBeGreaterThanOrEqual(2 * DAY_MS);
      expect(idleMs).toBeLessThan(2 * DAY_MS + 3 * HOUR_MS);
      // the figures are on the subaccount and in its subaccount.eliminated event
      expect((await getSubaccount(db.pool, climb)).eliminationRule).toEqual(byDrawdown.eliminationRule);
      const event = (await db.pool.query(`select payload from events where type = 'subaccount.eliminated' and subject = $1`, [climb])).rows[0].payload;
      expect(event.eliminationRule).toEqual(byDrawdown.eliminationRule);
      // the eliminated ones swept back (climb's 120 and idle's 100); steady is kept, on its next assessment's timer
      expect((await getAccount(db.pool, climb)).balance).toBe(0);
      expect(await getAccount(db.pool, 'ts-dd.main')).toMatchObject({ balance: 2 * 200 - 2 * 100 + 120, held: 10 });
      await untilTimers(3, [handles[1]!]);
      expect(await getSubaccount(db.pool, steady)).toMatchObject({ status: 'active', highWaterMark: 100 });
      expect((await getSubaccount(db.pool, steady)).eliminationRule).toBeUndefined();
    } finally {
      await handles[1]!.terminate('the test is over').catch(() => undefined);
    }
  });

  test('the debt ledger takes a round at each UTC midnight on a durable timer: two days skipped, two rounds, each at midnight', async () => {
    await registerEntity(db.pool, { id: 'ts-dl', name: 'TS debt ledger', collateral: 10, funding: 40, webhookUrls: [] });
    await deposit(db.pool, { key: 'seed-ts-dl', accountId: 'ts-dl.main', amount: 1000 });
    for (const requestId of ['d1', 'd2']) {
      const { id } = await allocateSubaccount(db.pool, { entityId: 'ts-dl', requestId, limits: { cap: 10, perHour: 10 } });
      await holdCollateral(db.pool, id);
      await fundSubaccount(db.pool, id);
      await activateSubaccount(db.pool, id);
    }
    const plain = new Client({ connection: env.connection, namespace: env.namespace ?? 'default' });
    const handle = await plain.workflow.start(checkpointWorkflow, { workflowId: `checkpoints-${taskQueue}`, taskQueue, args: [] });
    try {
      const onTimer = async () => ((await handle.fetchHistory()).events ?? []).some((e) => e.timerStartedEventAttributes);
      for (let i = 0; i < 100 && !(await onTimer()); i++) await new Promise((r) => setTimeout(r, 100));
      const serverBefore = await env.currentTimeMs();
      await env.sleep(2 * DAY_MS);
      const rounds = async () =>
        (await db.pool.query(`select at, count(*)::int as n, sum(balance)::int as balance from subaccount_checkpoints where entity_id = 'ts-dl' group by at order by at`)).rows;
      let taken: { at: Date; n: number; balance: number }[] = [];
      for (let i = 0; i < 100 && taken.length < 2; i++, await new Promise((r) => setTimeout(r, 100))) taken = await rounds();
      // the two midnights after the server's time when the workflow started, each a round of both subaccounts
      const first = nextUtcMidnight(serverBefore);
      expect(taken.map((r) => [r.at.getTime(), r.n, r.balance])).toEqual([
        [first, 2, 80],
        [first + DAY_MS, 2, 80],
      ]);
    } finally {
      await handle.terminate('the test is over');
    }
  });
});
