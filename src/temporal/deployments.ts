import { createHash } from 'node:crypto';
import type { Client } from '@temporalio/client';
import { temporal } from '@temporalio/proto';

/*
 * Worker versioning (Temporal Worker Deployments, DESIGN §8): every worker names its
 * deployment and its build id; a workflow pinned to a version runs all its workflow
 * tasks on that version's workers, so a rolling deploy never hands a running stream
 * to code that cannot replay its history. Which workflow follows which rule:
 * workflows/versioning.ts.
 */

export interface WorkerVersion {
  /** The Worker Deployment (SLUICE_WORKER_DEPLOYMENT): one per task queue's fleet. */
  deploymentName: string;
  /** This build of the workflow code (SLUICE_WORKER_BUILD_ID, default workflowBuildId). */
  buildId: string;
}

/** The version as Temporal writes it (`temporal worker deployment … --version`, search attribute TemporalWorkerDeploymentVersion). */
export const versionName = (v: WorkerVersion) => `${v.deploymentName}:${v.buildId}`;

/**
 * A build id derived from what decides replay: the package version and a hash of the
 * workflow bundle (the workflows and everything they import from src/domain). Two
 * workers of one image bundle the same code and so carry the same id; any change to
 * workflow code, however small, is a new version, and an activity-only change keeps
 * the id (activities are never replayed).
 */
export function workflowBuildId(packageVersion: string, bundleCode: string): string {
  return `${packageVersion}-${createHash('sha256').update(bundleCode).digest('hex').slice(0, 12)}`;
}

/** Until the server knows the version: a worker of it has polled (a version exists only once polled; on a loaded machine that takes a while). */
export async function waitForVersion(client: Client, version: WorkerVersion, timeoutMs = 120_000): Promise<void> {
  await until(timeoutMs, `version ${versionName(version)} registered`, async () => {
    const info = await describeDeployment(client, version.deploymentName);
    return (info?.versionSummaries ?? []).some((s) => s.deploymentVersion?.buildId === version.buildId);
  });
}

/** The deployment's current build id; undefined when it has none (or does not exist yet). */
export async function currentBuildId(client: Client, deploymentName: string): Promise<string | undefined> {
  const info = await describeDeployment(client, deploymentName);
  return info?.routingConfig?.currentDeploymentVersion?.buildId || undefined;
}

/**
 * Makes the version current (new workflows start on it; AUTO_UPGRADE ones move to it)
 * and waits until every task queue of the deployment routes by it. What an operator
 * does with `temporal worker deployment set-current-version` (docs/running.md).
 */
export async function setCurrentVersion(client: Client, version: WorkerVersion, identity = 'sluice'): Promise<void> {
  await waitForVersion(client, version);
  const { namespace } = client.options;
  if ((await currentBuildId(client, version.deploymentName)) !== version.buildId) {
    // the server refuses a version whose pollers have not yet reached every task queue the current one
    // serves (they register one by one as the worker starts): asked again until they have
    await until(120_000, `version ${versionName(version)} accepted as current`, async () => {
      try {
        const { conflictToken: token } = await client.workflowService.describeWorkerDeployment({ namespace, deploymentName: version.deploymentName });
        await client.workflowService.setWorkerDeploymentCurrentVersion({ namespace, deploymentName: version.deploymentName, buildId: version.buildId, conflictToken: token, identity });
        return true;
      } catch (error) {
        if (/missing active task queues/.test(String((error as Error).message))) return false;
        throw error;
      }
    });
  }
  // the server propagates the routing to each task queue in the background: seconds, more on a loaded machine
  const setAt = Date.now();
  await until(120_000, `version ${versionName(version)} current on every task queue`, async () => {
    const info = await describeDeployment(client, version.deploymentName);
    if (info?.routingConfig?.currentDeploymentVersion?.buildId !== version.buildId) return false;
    if (info.routingConfigUpdateState !== temporal.api.enums.v1.RoutingConfigUpdateState.ROUTING_CONFIG_UPDATE_STATE_IN_PROGRESS) return true;
    // The server may leave the state IN_PROGRESS for good once the routing has reached every task queue
    // (its completion signal lost: temporalio/temporal#11842, seen here on a loaded server). Past the time a
    // propagation takes, the task queues themselves are asked which version they route new work to.
    return Date.now() - setAt > PROPAGATION_GRACE_MS && (await routedByEveryTaskQueue(client, version));
  });
}

/** How long the deployment's own propagation state is trusted alone (a propagation takes seconds). */
const PROPAGATION_GRACE_MS = 15_000;

/** Whether every task queue the version polls says it routes new work to that version. */
export async function routedByEveryTaskQueue(client: Client, version: WorkerVersion): Promise<boolean> {
  const { namespace } = client.options;
  const { workerDeploymentVersionInfo: info } = await client.workflowService.describeWorkerDeploymentVersion({
    namespace,
    deploymentVersion: { deploymentName: version.deploymentName, buildId: version.buildId },
  });
  const queues = info?.taskQueueInfos ?? [];
  if (queues.length === 0) return false;
  for (const q of queues) {
    const { versioningInfo } = await client.workflowService.describeTaskQueue({ namespace, taskQueue: { name: q.name }, taskQueueType: q.type ?? undefined });
    if (versioningInfo?.currentDeploymentVersion?.buildId !== version.buildId) return false;
  }
  return true;
}

/**
 * When a starting worker makes its own version current: always in a development stack
 * (each restart runs the code on disk), and in production only for the deployment's
 * first version, which nothing else could take the workflows of (a fresh `docker
 * compose up`). Every later version waits for the operator's promotion, so one worker
 * started by mistake cannot move the whole fleet.
 */
export async function promoteOnStart(client: Client, version: WorkerVersion, devMode: boolean): Promise<'promoted' | 'already current' | { current: string }> {
  await waitForVersion(client, version);
  const current = await currentBuildId(client, version.deploymentName);
  if (current === version.buildId) return 'already current';
  if (current !== undefined && !devMode) return { current };
  try {
    await setCurrentVersion(client, version, devMode ? 'sluice dev worker' : 'sluice first worker');
  } catch (error) {
    // a sibling of the same first build (two replicas) promoted it between our read and write
    if ((await currentBuildId(client, version.deploymentName)) !== version.buildId) throw error;
  }
  return 'promoted';
}

/** The operator's command that makes a version current (for logs and docs). */
export const promoteCommand = (version: WorkerVersion, address: string) =>
  `temporal worker deployment set-current-version --address ${address} --deployment-name ${version.deploymentName} --build-id ${version.buildId}`;

async function describeDeployment(client: Client, deploymentName: string) {
  try {
    const res = await client.workflowService.describeWorkerDeployment({ namespace: client.options.namespace, deploymentName });
    return res.workerDeploymentInfo ?? undefined;
  } catch (error) {
    // 5 = NOT_FOUND: no worker of this deployment has polled yet
    if ((error as { code?: number }).code === 5) return undefined;
    throw error;
  }
}

async function until(timeoutMs: number, what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
