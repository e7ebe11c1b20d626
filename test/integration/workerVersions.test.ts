import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { bundleWorkflowCode, Worker } from '@temporalio/worker';
import { DeterminismViolationError } from '@temporalio/workflow';
import { BILLING_SHARDS_DEFAULT, billingClockWorkflowId } from '../../src/domain/billing';
import { streamWorkflowId } from '../../src/domain/streams';
import { routedByEveryTaskQueue, setCurrentVersion, versionName, waitForVersion, workflowBuildId, type WorkerVersion } from '../../src/temporal/deployments';
import { version as PACKAGE_VERSION } from '../../package.json';
import { reconcilerWorkflowId } from '../../src/temporal/reconcilerWorkflow';
import { createWorker, type CreatedWorker } from '../../src/worker';
import { billingDueSignal } from '../../workflows/definitions';
import { VERSIONING_BEHAVIORS } from '../../workflows/versioning';
import { sleep, testParties } from '../support/parties';
import { startTestStack, type TestStack } from '../support/stack';
import { streamTickLedger } from '../support/streamLedger';

/**
 * A rolling deploy while streams run (worker versioning, src/temporal/deployments.ts):
 * version A (today's workflows) is current and runs streams; version B, whose
 * streamWorkflow cannot replay A's streams (test/fixtures/next-version-workflows.ts),
 * joins the same task queue and is made current. A's streams stay pinned to A (every
 * workflow task of theirs, the cancel after the promotion included, completes on A),
 * new streams start on B, the standing workflows follow B, and once A's streams have
 * ended nothing is left on A and it stops. Every tick is billed once and the
 * balances add up; no history holds a failed workflow task.
 */
const { EVENT_TYPE_WORKFLOW_TASK_COMPLETED, EVENT_TYPE_WORKFLOW_TASK_FAILED, EVENT_TYPE_TIMER_STARTED, EVENT_TYPE_ACTIVITY_TASK_SCHEDULED } = temporal.api.enums.v1.EventType;
const { VERSIONING_BEHAVIOR_PINNED, VERSIONING_BEHAVIOR_AUTO_UPGRADE } = temporal.api.enums.v1.VersioningBehavior;

const RATE = 3;
const FUNDS = 1_000_000;
const OLD_STREAMS = ['vA-1', 'vA-2', 'vA-3'];
const NEW_STREAMS = ['vB-1', 'vB-2'];

let stack: TestStack;
let client: Client;
let next: CreatedWorker;
let nextRunning: Promise<void> | undefined;
let nextBundlePath: string;
let versionA: WorkerVersion;
let versionB: WorkerVersion;
const deploymentName = `sluice-test-${randomBytes(4).toString('hex')}`;
const { as, party, account, untilTicks } = testParties(() => stack);
// setCurrentVersion (src/temporal/deployments.ts) waits up to 120 s for each of its three
// stages (the version registered, accepted as current, routed on every task queue): on a
// loaded shared dev server a setup or test that calls it may take that long, and one that
// never finishes fails with its stage's own message rather than jest's hook timeout
const DEPLOY_STEPS_MS = 3 * 120_000 + 60_000;

beforeAll(async () => {
  stack = await startTestStack({ workerDeployment: deploymentName, reconcileIntervalMs: 1_000 });
  client = stack.client;
  versionA = stack.workerVersion!;
  await party('buyer', FUNDS);
  await party('seller');
  const { code } = await bundleWorkflowCode({ workflowsPath: require.resolve('../fixtures/next-version-workflows'), logger: quietLogger });
  mkdirSync(join(tmpdir(), 'sluice-test'), { recursive: true });
  nextBundlePath = join(tmpdir(), 'sluice-test', `next-version-bundle-${process.pid}.js`);
  writeFileSync(nextBundlePath, code);
}, DEPLOY_STEPS_MS);

afterAll(async () => {
  if (next?.worker.getState() === 'RUNNING') next.worker.shutdown();
  await nextRunning;
  await next?.connection.close();
  await stack?.stop();
});

const open = (ref: string) => as('buyer').post('/v1/streams', { ref, fromAccountId: 'buyer.w', toAccountId: 'seller.w', ratePerTick: RATE, maxTotal: 100_000, tickIntervalMs: 200 });
const historyOf = async (workflowId: string) => (await client.workflow.getHandle(workflowId).fetchHistory()).events ?? [];
/** The build id of each completed workflow task of the run, in order. */
const taskBuildIds = (events: temporal.api.history.v1.IHistoryEvent[]) =>
  events.filter((e) => e.eventType === EVENT_TYPE_WORKFLOW_TASK_COMPLETED).map((e) => e.workflowTaskCompletedEventAttributes?.deploymentVersion?.buildId);
const failedTasks = (events: temporal.api.history.v1.IHistoryEvent[]) => events.filter((e) => e.eventType === EVENT_TYPE_WORKFLOW_TASK_FAILED);
const versioningOf = async (workflowId: string) => (await client.workflow.getHandle(workflowId).describe()).raw.workflowExecutionInfo?.versioningInfo;

describe('a rolling deploy: two worker versions on one task queue while streams run', () => {
  test('every workflow type has a versioning behavior: PINNED for the ones that end, AUTO_UPGRADE for the standing ones', () => {
    expect(VERSIONING_BEHAVIORS).toMatchObject({ streamWorkflow: 'PINNED', paymentWorkflow: 'PINNED', sessionWorkflow: 'PINNED', billingClockWorkflow: 'AUTO_UPGRADE', reconcilerWorkflow: 'AUTO_UPGRADE', checkpointWorkflow: 'AUTO_UPGRADE' });
  });

  test('two workers bundling the same code carry the same build id (the replicas of one image are one version)', async () => {
    const { code } = await bundleWorkflowCode({ workflowsPath: require.resolve('../../workflows'), logger: quietLogger });
    expect(workflowBuildId(PACKAGE_VERSION, code)).toBe(versionA.buildId);
  });

  test("A's streams stay on A after B is current, new streams start on B, the standing workflows move to B, and A stops once its streams have ended", async () => {
    for (const ref of OLD_STREAMS) expect((await open(ref)).status).toBe(201);
    for (const ref of OLD_STREAMS) await untilTicks(ref, 2);

    // version B joins the task queue: polling, not current, so it takes nothing yet
    next = await createWorker({ pool: stack.db.runtimePool, address: process.env.SLUICE_TEST_TEMPORAL_ADDRESS!, namespace: 'default', taskQueue: stack.taskQueue, workflowBundlePath: nextBundlePath, dailyCheckpoints: false, reconcileIntervalMs: 1_000, version: { deploymentName } });
    versionB = next.version!;
    expect(versionB.buildId).not.toBe(versionA.buildId);
    nextRunning = next.worker.run();
    await waitForVersion(client, versionB);

    await setCurrentVersion(client, versionB);
    // what setCurrentVersion asks the task queues when the server's propagation state is stuck: B routes, A no longer
    expect(await routedByEveryTaskQueue(client, versionB)).toBe(true);
    expect(await routedByEveryTaskQueue(client, versionA)).toBe(false);
    const ticksAtPromotion = new Map<string, number>();
    for (const ref of OLD_STREAMS) ticksAtPromotion.set(ref, (await as('buyer').get(`/v1/streams/${ref}`)).body.ticks);
    for (const ref of NEW_STREAMS) expect(await open(ref)).toMatchObject({ status: 201 });

    // A's streams go on billing after the promotion
    for (const ref of OLD_STREAMS) await untilTicks(ref, ticksAtPromotion.get(ref)! + 3);
    for (const ref of OLD_STREAMS) {
      expect(await versioningOf(streamWorkflowId(ref))).toMatchObject({ behavior: VERSIONING_BEHAVIOR_PINNED, deploymentVersion: { deploymentName, buildId: versionA.buildId } });
    }
    for (const ref of NEW_STREAMS) {
      expect(await versioningOf(streamWorkflowId(ref))).toMatchObject({ behavior: VERSIONING_BEHAVIOR_PINNED, deploymentVersion: { deploymentName, buildId: versionB.buildId } });
    }

    // A's streams end: each cancel is a workflow task after the promotion, and A completes it
    const receipts = new Map<string, any>();
    for (const ref of OLD_STREAMS) {
      const cancelled = await as('buyer').post(`/v1/streams/${ref}/cancel`, { reason: 'rolled' });
      expect(cancelled.status).toBe(200);
      expect(cancelled.body).toMatchObject({ ref, status: 'CONFIRMED', reason: 'cancelled' });
      receipts.set(ref, cancelled.body);
    }
    for (const ref of OLD_STREAMS) {
      const events = await historyOf(streamWorkflowId(ref));
      expect(failedTasks(events)).toEqual([]);
      const buildIds = taskBuildIds(events);
      expect(buildIds.length).toBeGreaterThanOrEqual(2);
      expect(new Set(buildIds)).toEqual(new Set([versionA.buildId]));
      // today's code: the first command opens the stream (no timer before it)
      expect(events.find((e) => e.eventType === EVENT_TYPE_TIMER_STARTED || e.eventType === EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)?.eventType).toBe(EVENT_TYPE_ACTIVITY_TASK_SCHEDULED);
    }

    // the standing workflows follow the current version (AUTO_UPGRADE): nothing keeps A busy
    const standing = [...Array.from({ length: BILLING_SHARDS_DEFAULT }, (_, shard) => billingClockWorkflowId(stack.taskQueue, shard, BILLING_SHARDS_DEFAULT)), reconcilerWorkflowId(stack.taskQueue)];
    // a shard with no stream due sleeps up to BILLING_IDLE_MAX_MS before its next task: wake it as an open would
    for (const id of standing.filter((id) => id !== reconcilerWorkflowId(stack.taskQueue))) await client.workflow.getHandle(id).signal(billingDueSignal, Date.now());
    for (const id of standing) {
      await untilTrue(`${id} on ${versionName(versionB)}`, async () => (await versioningOf(id))?.deploymentVersion?.buildId === versionB.buildId);
      expect(await versioningOf(id)).toMatchObject({ behavior: VERSIONING_BEHAVIOR_AUTO_UPGRADE });
    }
    await untilTrue(`no running workflow on ${versionName(versionA)}`, async () => {
      const { count } = await client.workflow.count(`TemporalWorkerDeploymentVersion = '${versionName(versionA)}' AND ExecutionStatus = 'Running' AND TaskQueue = '${stack.taskQueue}'`);
      return count === 0;
    });

    // A stops; B's streams go on billing without it, and end on B
    stack.worker.shutdown();
    const ticksAtStop = new Map<string, number>();
    for (const ref of NEW_STREAMS) ticksAtStop.set(ref, (await as('buyer').get(`/v1/streams/${ref}`)).body.ticks);
    for (const ref of NEW_STREAMS) await untilTicks(ref, ticksAtStop.get(ref)! + 3);
    for (const ref of NEW_STREAMS) {
      const cancelled = await as('buyer').post(`/v1/streams/${ref}/cancel`, { reason: 'done' });
      expect(cancelled.status).toBe(200);
      expect(cancelled.body).toMatchObject({ ref, status: 'CONFIRMED', reason: 'cancelled' });
      receipts.set(ref, cancelled.body);
      const events = await historyOf(streamWorkflowId(ref));
      expect(failedTasks(events)).toEqual([]);
      expect(new Set(taskBuildIds(events))).toEqual(new Set([versionB.buildId]));
      // B's code ran it: its timer comes before the open
      expect(events.find((e) => e.eventType === EVENT_TYPE_TIMER_STARTED || e.eventType === EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)?.eventType).toBe(EVENT_TYPE_TIMER_STARTED);
    }
    for (const id of standing) expect(failedTasks(await historyOf(id))).toEqual([]);

    // every tick of every stream billed exactly once, and the money adds up
    let paid = 0;
    for (const [ref, receipt] of receipts) {
      const ledger = await streamTickLedger(stack.db.pool, ref);
      expect(ledger.problems).toEqual([]);
      expect(ledger).toMatchObject({ status: 'closed', paid: receipt.totalPaid, billed: Array.from({ length: receipt.ticks }, (_, i) => i + 1) });
      expect(receipt.totalPaid).toBe(RATE * receipt.ticks);
      paid += receipt.totalPaid;
    }
    expect(await account('buyer.w')).toMatchObject({ balance: FUNDS - paid, held: 0 });
    expect((await account('seller.w')).balance).toBe(paid);
  }, DEPLOY_STEPS_MS + 60_000);

  test("the check has teeth: B's code replaying a stream A ran is a non-determinism error, A's own code replays it", async () => {
    const history = await client.workflow.getHandle(streamWorkflowId(OLD_STREAMS[0]!)).fetchHistory();
    await expect(Worker.runReplayHistory({ workflowBundle: { codePath: process.env.SLUICE_TEST_WORKFLOW_BUNDLE! } }, history, 'replay-version-a')).resolves.toBeUndefined();
    await expect(Worker.runReplayHistory({ workflowBundle: { codePath: nextBundlePath } }, history, 'replay-version-b')).rejects.toBeInstanceOf(DeterminismViolationError);
  });
});

async function untilTrue(what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(200);
  }
}

const noop = () => undefined;
const quietLogger = { trace: noop, debug: noop, info: noop, warn: noop, error: (m: string) => process.stderr.write(`${m}\n`), log: noop };
