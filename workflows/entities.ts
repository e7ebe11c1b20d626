import {
  ApplicationFailure,
  getExternalWorkflowHandle,
  ParentClosePolicy,
  proxyActivities,
  sleep,
  startChild,
  workflowInfo,
  WorkflowIdReusePolicy,
} from '@temporalio/workflow';
import type { Activities } from '../activities';
import { lifecycleWorkflowId, eliminationWorkflowId, type CreationResult, type SagaStep, type Subaccount, type SubaccountEvent } from '../src/domain/entities';
import { streamWorkflowId, type StreamReceipt } from '../src/domain/streams';
import { cancelStreamSignal } from './definitions';

// Saga steps: a few quick retries, then the saga compensates.
const steps = proxyActivities<Activities>({
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '100 milliseconds', backoffCoefficient: 2, maximumAttempts: 3 },
});
// Compensations and settlements are idempotent transactions: retried until they commit.
const ledger = proxyActivities<Activities>({
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '200 milliseconds', backoffCoefficient: 2, maximumInterval: '10 seconds' },
});
/** Webhook delivery: exponential backoff from 1 s, up to 8 attempts per URL. */
export const DELIVERY_ATTEMPTS_MAX = 8;
const delivery = proxyActivities<Activities>({
  startToCloseTimeout: '15 seconds',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute', maximumAttempts: DELIVERY_ATTEMPTS_MAX },
});

const failureOf = (error: unknown): { code: string; message: string } => {
  for (let e: any = error; e; e = e.cause) {
    if (e instanceof ApplicationFailure) return { code: e.type ?? 'failed', message: e.message };
  }
  return { code: 'failed', message: error instanceof Error ? error.message : String(error) };
};

/**
 * Announces a subaccount event without waiting for it: a delivery workflow of its
 * own (abandoned by its parent), so a slow or failing receiver never blocks a saga.
 * An entity without webhook URLs gets no delivery workflow at all.
 */
async function announce(type: SubaccountEvent['type'], subaccount: Subaccount): Promise<void> {
  const urls = await ledger.webhookTargets(subaccount.entityId);
  if (urls.length === 0) return;
  const key = `${type}:${subaccount.id}:${workflowInfo().runId}`;
  const event: SubaccountEvent = { key, type, entityId: subaccount.entityId, subaccount, at: new Date(Date.now()).toISOString() };
  await startChild(webhookDeliveryWorkflow, {
    workflowId: `webhook-${key.replace(/[/:]/g, '-')}`,
    args: [event, urls],
    parentClosePolicy: ParentClosePolicy.ABANDON,
  });
}

/** Delivers one event to each webhook URL; a URL that never accepts it is logged, not fatal. */
export async function webhookDeliveryWorkflow(event: SubaccountEvent, urls: string[]): Promise<{ delivered: string[]; failed: string[] }> {
  const outcome = { delivered: [] as string[], failed: [] as string[] };
  await Promise.all(
    urls.map(async (url) => {
      try {
        await delivery.deliverWebhook(event, url);
        outcome.delivered.push(url);
      } catch {
        outcome.failed.push(url); // every attempt is in webhook_deliveries
      }
    }),
  );
  return outcome;
}

/**
 * The creation saga (DESIGN §4): allocate (rate limit, cap, next number) → hold the
 * entity's collateral → create and fund the account → `active` or `challenge` →
 * announce. Each compensation is registered before its step and is a no-op if the
 * step never committed; on failure they run in reverse and the slot ends `failed`
 * (its number stays burned). A refused allocation has nothing to undo.
 */
export async function subaccountCreationWorkflow(input: { entityId: string; requestId: string }): Promise<CreationResult> {
  let sub: Subaccount;
  try {
    sub = await steps.allocateSubaccount(input.entityId, input.requestId);
  } catch (error) {
    return { failedStep: 'allocate', error: failureOf(error), compensated: [] };
  }
  const id = sub.id;
  const compensations: Array<{ name: string; run: () => Promise<boolean> }> = [];
  let step: SagaStep = 'hold_collateral';
  try {
    compensations.push({ name: 'release_collateral', run: () => ledger.releaseCollateral(id) });
    await steps.holdCollateral(id);
    step = 'fund';
    compensations.push({ name: 'unfund', run: () => ledger.unfundSubaccount(id) });
    await steps.fundSubaccount(id);
    step = 'activate';
    sub = await steps.activateSubaccount(id);
  } catch (error) {
    const failure = failureOf(error);
    const compensated: string[] = [];
    for (const c of compensations.reverse()) if (await c.run()) compensated.push(c.name);
    const failed = await ledger.markSubaccountFailed({ id, step, failure: failure.message });
    compensated.push('mark_failed');
    await announce('subaccount.failed', failed);
    return { subaccount: failed, failedStep: step, error: failure, compensated };
  }
  await announce(sub.status === 'challenge' ? 'subaccount.challenge' : 'subaccount.active', sub);
  if (sub.status === 'challenge') {
    await startChild(subaccountLifecycleWorkflow, {
      workflowId: lifecycleWorkflowId(id),
      args: [{ id }],
      parentClosePolicy: ParentClosePolicy.ABANDON,
    });
  }
  return { subaccount: sub, compensated: [] };
}

/**
 * A subaccount's challenge period: a durable timer for the entity's challenge
 * duration, then the rule (balance not below the configured fraction of its
 * funding) promotes it to `active` or eliminates it. The duration is read when the
 * period starts, by the first activity.
 */
export async function subaccountLifecycleWorkflow(input: { id: string }): Promise<Subaccount> {
  const { challengeMs } = await ledger.challengeOf(input.id);
  await sleep(challengeMs);
  const { subaccount, passed } = await ledger.concludeChallenge(input.id);
  if (passed) {
    if (subaccount.status === 'active') await announce('subaccount.active', subaccount);
    return subaccount;
  }
  if (subaccount.status !== 'challenge') return subaccount; // eliminated by request meanwhile
  const child = await startChild(subaccountEliminationWorkflow, {
    workflowId: eliminationWorkflowId(input.id),
    args: [{ id: input.id, reason: 'challenge_failed', by: 'system' }],
    workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE,
  });
  return (await child.result()).subaccount;
}

export interface EliminationResult {
  subaccount: Subaccount;
  swept: number;
  collateralReleased: boolean;
  streams: StreamReceipt[];
}

/**
 * Elimination (by request or by the challenge rule): close the subaccount's open
 * streams (the ledger closes them under each stream's lock; each stream workflow is
 * woken to finish with the same receipt), sweep its balance back to the entity,
 * release its collateral, mark it `eliminated`, announce it. It then holds nothing in
 * memory: its history stays in the database.
 */
export async function subaccountEliminationWorkflow(input: { id: string; reason: string; by: string }): Promise<EliminationResult> {
  const streams = await ledger.closeSubaccountStreams(input.id, input.by);
  for (const receipt of streams) {
    await getExternalWorkflowHandle(streamWorkflowId(receipt.ref))
      .signal(cancelStreamSignal, { by: input.by, reason: 'subaccount eliminated' })
      .catch(() => undefined); // a stream workflow already finished needs no wake-up
  }
  const settled = await ledger.settleElimination({ id: input.id, reason: input.reason });
  if (settled.swept > 0 || settled.collateralReleased) await announce('subaccount.eliminated', settled.subaccount);
  return { ...settled, streams };
}
