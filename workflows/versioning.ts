import { setWorkflowOptions } from '@temporalio/workflow';
import type { VersioningBehavior } from '@temporalio/common';
import type * as Bundle from './index';
import { paymentWorkflow, refundWorkflow } from './payment';
import { streamWorkflow } from './stream';
import { grantJobWorkflow } from './job';
import { sessionWorkflow } from './session';
import { subaccountCreationWorkflow, subaccountEliminationWorkflow, subaccountLifecycleWorkflow, webhookDeliveryWorkflow } from './entities';
import { billingClockWorkflow } from './billingClock';
import { reconcilerWorkflow } from './reconciler';
import { checkpointWorkflow } from './checkpoints';

/*
 * How each workflow type moves between worker versions during a rolling deploy
 * (src/temporal/deployments.ts; docs/running.md "Rolling deploys"). The rule:
 *
 * PINNED: a workflow that ends, on its own or by its parties, runs every workflow task
 * on the version that started it. Its code may change in any way in the next version
 * (no patch needed for the runs in flight: they never meet the new code), and the old
 * version's workers stay up until its pinned runs have ended (the version is "drained").
 *
 * AUTO_UPGRADE: a workflow that never ends (it continues-as-new for as long as the task
 * queue lives) would hold its version forever if pinned: the old workers could never
 * stop. It moves to the current version at its next workflow task and replays its
 * current run there, so every change to it must replay its histories: patched(), and
 * recorded in test/histories (replay.test.ts replays them against the code).
 *
 * The table is typed against the bundle's exports: a new workflow type does not compile
 * until its behavior is chosen here.
 */
const BEHAVIORS: { [K in keyof typeof Bundle]: [(typeof Bundle)[K], VersioningBehavior] } = {
  // seconds: a payment or refund is one ledger step
  paymentWorkflow: [paymentWorkflow, 'PINNED'],
  refundWorkflow: [refundWorkflow, 'PINNED'],
  // days, and then it ends (maxTotal, a cancel, a halt): a running stream is the case versioning is for,
  // its history (opened, paused, resumed…) is only ever replayed by the code that wrote it
  streamWorkflow: [streamWorkflow, 'PINNED'],
  // until paid or its payment timeout (at most a week): a saga with compensations, kept on one code
  grantJobWorkflow: [grantJobWorkflow, 'PINNED'],
  // until closed: its requests are updates in flight, never split between two codes
  sessionWorkflow: [sessionWorkflow, 'PINNED'],
  // sagas with compensations registered step by step: finish on the code that registered them
  subaccountCreationWorkflow: [subaccountCreationWorkflow, 'PINNED'],
  subaccountEliminationWorkflow: [subaccountEliminationWorkflow, 'PINNED'],
  // bounded retries (DELIVERY_ATTEMPTS_MAX)
  webhookDeliveryWorkflow: [webhookDeliveryWorkflow, 'PINNED'],
  // as long as the subaccount is active, assessing on a timer and continuing-as-new: never ends by itself
  subaccountLifecycleWorkflow: [subaccountLifecycleWorkflow, 'AUTO_UPGRADE'],
  // the standing workflows (src/worker.ts ensureStandingWorkflows): the billing clock sleeps at most
  // a minute, the reconciler a round, the daily round until midnight; each bills or settles by
  // idempotent keys, so moving between versions mid-run cannot bill twice
  billingClockWorkflow: [billingClockWorkflow, 'AUTO_UPGRADE'],
  reconcilerWorkflow: [reconcilerWorkflow, 'AUTO_UPGRADE'],
  checkpointWorkflow: [checkpointWorkflow, 'AUTO_UPGRADE'],
};

/** Each workflow type's behavior, by name (for tests and the docs). */
export const VERSIONING_BEHAVIORS = Object.fromEntries(Object.entries(BEHAVIORS).map(([name, [, behavior]]) => [name, behavior])) as Record<keyof typeof Bundle, VersioningBehavior>;

for (const [workflow, versioningBehavior] of Object.values(BEHAVIORS)) setWorkflowOptions({ versioningBehavior }, workflow as (...args: never[]) => Promise<unknown>);
