import {
  ApplicationFailure,
  CancellationScope,
  CancelledFailure,
  continueAsNew,
  getExternalWorkflowHandle,
  isCancellation,
  ParentClosePolicy,
  patched,
  proxyActivities,
  proxyLocalActivities,
  sleep,
  startChild,
  upsertSearchAttributes,
  WorkflowIdReusePolicy,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { Activities } from '../activities';
import {
  eliminationWorkflowId,
  lifecycleWorkflowId,
  subaccountEventKey,
  webhookWorkflowId,
  type CreationResult,
  type SagaStep,
  type Subaccount,
  type SubaccountEvent,
} from '../src/domain/entities';
import {
  SA_STATUS,
  subaccountChallengeVisibility,
  subaccountEliminationVisibility,
  webhookVisibility,
} from './searchAttributes';
import { streamWorkflowId, type StreamReceipt } from '../src/domain/streams';
import { ASSESSMENTS_PER_RUN_MAX } from '../src/domain/challengeRules';
import { cancelStreamSignal } from './definitions';
import { LEDGER_STEP_OPTIONS, LEDGER_STEP_TIMEOUTS } from './ledgerTimeouts';
import { Saga } from './saga';

// Saga steps: a few quick retries, then the saga compensates.
const STEP_RETRY = { initialInterval: '100 milliseconds', backoffCoefficient: 2, maximumAttempts: 3 } as const;
const steps = proxyActivities<Activities>({ ...LEDGER_STEP_TIMEOUTS, retry: STEP_RETRY });
/**
 * The same steps as local activities (SAGA_LOCAL_STEPS_PATCH): run by the worker that
 * runs the saga, inside its workflow task, each recorded as a marker. No heartbeat
 * (a worker killed mid-step fails the workflow task, and the next one runs the steps
 * again: each is idempotent). A step that fails is retried on a durable timer, not
 * inside the task (the retry threshold is below the first backoff): the task ends
 * there, so a termination lands between two attempts and a cancellation is seen
 * (and taken once the step has ended), as when each step was an activity of its own.
 */
const localSteps = proxyLocalActivities<Activities>({
  startToCloseTimeout: LEDGER_STEP_TIMEOUTS.startToCloseTimeout,
  cancellationType: LEDGER_STEP_TIMEOUTS.cancellationType,
  retry: STEP_RETRY,
  localRetryThreshold: '10 milliseconds',
});
// Compensations and settlements are idempotent transactions: retried until they commit.
const ledger = proxyActivities<Activities>(LEDGER_STEP_OPTIONS);
/** Reading the webhook URLs before announcing: bounded, so a database outage delays a saga by seconds at most. */
const LOOKUP_OPTIONS = { startToCloseTimeout: '5 seconds', retry: { initialInterval: '200 milliseconds', maximumAttempts: 2 } } as const;
const lookup = proxyActivities<Activities>(LOOKUP_OPTIONS);
/** The creation saga's lookup since SAGA_LOCAL_STEPS_PATCH: in its workflow task, like its steps. */
const localLookup = proxyLocalActivities<Activities>(LOOKUP_OPTIONS);
/** The elimination's close-then-settle rounds: one normally, two if a stream opened as it began. */
export const ELIMINATION_ROUNDS_MAX = 5;
/** Webhook delivery: exponential backoff from 1 s, up to 8 attempts per URL (and for reading the URLs). */
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
 * Announces a subaccount event without waiting for its delivery: a delivery workflow
 * of its own (abandoned by its parent), so a failing receiver never blocks a saga.
 * The URLs are read once, bounded: an entity without any gets no delivery workflow;
 * if the read fails (the database is down) the delivery workflow is started anyway
 * and reads them itself, with its own retries, so the saga neither waits nor loses
 * the event. The workflow id is the event's: announcing it again (a retried or
 * re-run step) starts nothing, and the event is delivered once.
 */
async function announce(type: SubaccountEvent['type'], subaccount: Subaccount, targets: Pick<Activities, 'webhookTargets'> = lookup): Promise<void> {
  const urls = await targets.webhookTargets(subaccount.entityId).catch(() => undefined);
  if (urls?.length === 0) return;
  const key = subaccountEventKey(type, subaccount.id);
  const event: SubaccountEvent = { key, type, entityId: subaccount.entityId, subaccount, at: new Date(Date.now()).toISOString() };
  try {
    await startChild(webhookDeliveryWorkflow, {
      workflowId: webhookWorkflowId(key),
      args: urls ? [event, urls] : [event],
      parentClosePolicy: ParentClosePolicy.ABANDON,
      workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
      ...webhookVisibility(event),
    });
  } catch (error) {
    if (!(error instanceof WorkflowExecutionAlreadyStartedError)) throw error;
  }
}

/** Delivers one event to each webhook URL (read here if not given); a URL that never accepts it is logged, not fatal. */
export async function webhookDeliveryWorkflow(event: SubaccountEvent, given?: string[]): Promise<{ delivered: string[]; failed: string[] }> {
  const urls = given ?? (await delivery.webhookTargets(event.entityId));
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

/** The codes a refused allocation answers with as such (nothing allocated, nothing held); anything else failed the creation. */
const REFUSALS = new Set(['rate_limited', 'limit_exceeded', 'insufficient_funds']);

/**
 * Patch: an allocation that fails other than by a refusal marks the request's slot
 * `failed` if it was allocated after all, instead of leaving it `pending` (a live slot
 * against the cap, never concluded). Runs before it took the old path.
 */
export const ALLOCATION_FAILED_MARKS_SLOT_PATCH = 'creation-allocation-failed-marks-slot';

/**
 * The creation saga (DESIGN §4): allocate (rate limit, cap, next number) → hold the
 * entity's collateral → create and fund the account → `active` or `challenge` →
 * announce. Each compensation is registered before its step and is a no-op if the
 * step never committed; on failure they run in reverse and the slot ends `failed`
 * (its number stays burned), and the run completes with that outcome, which the
 * API returns to every re-send of the request. A refused allocation has nothing to
 * undo and allocated nothing: the run fails, so the same request may be sent again
 * later (runWorkflowOnce starts a new run only after a failed one).
 */
export async function subaccountCreationWorkflow(input: { entityId: string; requestId: string }): Promise<CreationResult> {
  try {
    const result = await createSubaccount(input);
    showSagaOutcome(result.error ? 'FAILED' : result.subaccount!.status.toUpperCase());
    return result;
  } catch (error) {
    showSagaOutcome(error instanceof ApplicationFailure && error.type && REFUSALS.has(error.type) ? 'REFUSED' : 'FAILED');
    throw error;
  }
}

/**
 * Patch: the saga ends by setting `SluiceStatus` to its outcome (ACTIVE, CHALLENGE,
 * FAILED, REFUSED), so the UI lists e.g. an entity's failed creations. Runs that ended
 * before it replay without the upsert (their status stays CREATING).
 */
export const SAGA_OUTCOME_STATUS_PATCH = 'saga-outcome-search-attribute';

function showSagaOutcome(status: string): void {
  if (patched(SAGA_OUTCOME_STATUS_PATCH)) upsertSearchAttributes([{ key: SA_STATUS, value: status }]);
}

/**
 * Patch: a Temporal cancellation (UI or CLI) of the creation saga compensates like a
 * failed step, in a scope the cancellation cannot reach (the slot ends `failed`, the
 * collateral released, the funding returned; failure code `workflow_cancelled`), and a
 * saga past its last step finishes announcing. Runs before it ended cancelled with
 * the slot pending and its collateral held (the reconciler settles those).
 */
export const SAGA_OUTSIDE_CANCEL_PATCH = 'saga-outside-cancel-compensates';

/** A cancellation from outside (the saga cancels nothing itself), once the patch is in. */
const cancelledFromOutside = (error: unknown) => isCancellation(error) && patched(SAGA_OUTSIDE_CANCEL_PATCH);
const OUTSIDE_CANCEL_FAILURE = { code: 'workflow_cancelled', message: 'cancelled through Temporal by an operator' };
/** Runs `fn` where a cancellation cannot reach it when `shielded`, as it is otherwise. */
const shieldedIf = <T>(shielded: boolean, fn: () => Promise<T>): Promise<T> => (shielded ? CancellationScope.nonCancellable(fn) : fn());

/**
 * Patch: the forward steps (allocate, hold collateral, fund, activate) and the webhook
 * lookup run as local activities, so a creation's happy path is one workflow task
 * (a payment's is two and an activity), not a task and an activity per step. The
 * compensations stay activities: rare, retried until they commit, heartbeating.
 *
 * A workflow task that fails (its worker lost; or rejected because a cancellation
 * came in while it completed the run) discards its local activities' results, and
 * the next runs them again: each is idempotent, and the allocation then finds the
 * slot as far as they took it. So a step, once begun, runs to its end (retries
 * included) and a cancellation from outside is taken between steps, never inside
 * one, and a slot found live is concluded (announced, its challenge started) rather
 * than left unannounced. Runs before it ran each step as an activity of its own.
 */
export const SAGA_LOCAL_STEPS_PATCH = 'saga-local-steps';

/**
 * Patch: a step that fails (not a cancellation) has its compensations, the slot's
 * `failed` mark and the announcement run in a scope a cancellation cannot reach, as a
 * cancellation's own do (SAGA_OUTSIDE_CANCEL_PATCH): a Temporal cancellation arriving
 * while they run no longer stops them, and the run completes with the step's failure.
 * Runs before ran them in the saga's own scope: such a cancellation asked the running
 * compensation to stop, scheduled none of the rest and ended the run cancelled with the
 * slot pending (the reconciler settles those).
 */
export const SAGA_SHIELDED_COMPENSATIONS_PATCH = 'saga-shielded-compensations';

async function createSubaccount(input: { entityId: string; requestId: string }): Promise<CreationResult> {
  const local = patched(SAGA_LOCAL_STEPS_PATCH);
  const forward = local ? localSteps : steps;
  const targets = local ? localLookup : lookup;
  const runStep = <T>(fn: () => Promise<T>): Promise<T> => (local ? CancellationScope.nonCancellable(fn) : fn());
  const betweenSteps = () => {
    if (local && CancellationScope.current().consideredCancelled) throw new CancelledFailure('cancelled between the saga steps');
  };
  let sub: Subaccount;
  try {
    sub = await runStep(() => forward.allocateSubaccount(input.entityId, input.requestId));
  } catch (error) {
    const cancelled = cancelledFromOutside(error);
    if (cancelled) return shieldedIf(true, () => allocationFailed(input, OUTSIDE_CANCEL_FAILURE, OUTSIDE_CANCEL_FAILURE.code, targets));
    const failure = failureOf(error);
    // an allocation that failed otherwise may have committed (its reply lost): its slot, if any, ends failed
    if (!REFUSALS.has(failure.code) && patched(ALLOCATION_FAILED_MARKS_SLOT_PATCH)) return allocationFailed(input, failure, 'creation_failed', targets);
    throw ApplicationFailure.create({
      type: REFUSALS.has(failure.code) ? failure.code : 'creation_failed',
      message: failure.message,
      details: [{ failedStep: 'allocate', compensated: [], subaccount: null }],
      nonRetryable: true,
    });
  }
  const id = sub.id;
  // the slot was concluded by an earlier run of this request (its history gone past
  // retention): its outcome stands, announced then, not now
  if (sub.status === 'failed') {
    return { subaccount: sub, failedStep: (sub.failedStep ?? 'activate') as SagaStep, error: { code: 'creation_failed', message: sub.failure ?? 'failed' }, compensated: [] };
  }
  if (sub.status !== 'pending') {
    // local steps run again after a lost workflow task find their slot live: it is concluded now
    // (announcing is idempotent by the event's key; its challenge may have started)
    const live = sub.status === 'active' || sub.status === 'challenge';
    return local && live ? concludeLive(sub, targets) : { subaccount: sub, compensated: [] };
  }
  const saga = new Saga();
  let step: SagaStep = 'hold_collateral';
  try {
    betweenSteps();
    saga.add('release_collateral', () => ledger.releaseCollateral(id));
    await runStep(() => forward.holdCollateral(id));
    step = 'fund';
    betweenSteps();
    saga.add('unfund', () => ledger.unfundSubaccount(id));
    await runStep(() => forward.fundSubaccount(id));
    step = 'activate';
    betweenSteps();
    sub = await runStep(() => forward.activateSubaccount(id));
  } catch (error) {
    const cancelled = cancelledFromOutside(error);
    const failure = cancelled ? OUTSIDE_CANCEL_FAILURE : failureOf(error);
    // a failed step's compensations (and the slot's mark and announcement after them) run out of a
    // cancellation's reach too since SAGA_SHIELDED_COMPENSATIONS_PATCH; asked only on that path (a
    // cancellation's own were shielded already), so its marker is in the histories of failed steps only
    const shielded = cancelled || patched(SAGA_SHIELDED_COMPENSATIONS_PATCH);
    return shieldedIf(shielded, async () => {
      const compensated = await saga.compensate({ shielded });
      const failed = await ledger.markSubaccountFailed({ id, step, failure: failure.message });
      compensated.push('mark_failed');
      if (failed.status === 'failed') await announce('subaccount.failed', failed, targets); // not one its elimination took over
      return { subaccount: failed, failedStep: step, error: failure, compensated };
    });
  }
  return concludeLive(sub, targets);
}

/** A live subaccount (`active` or `challenge`) is announced and, in `challenge`, its challenge period started. */
async function concludeLive(live: Subaccount, targets: Pick<Activities, 'webhookTargets'>): Promise<CreationResult> {
  const conclude = async () => {
    await announce(live.status === 'challenge' ? 'subaccount.challenge' : 'subaccount.active', live, targets);
    if (live.status === 'challenge') {
      try {
        await startChild(subaccountLifecycleWorkflow, {
          workflowId: lifecycleWorkflowId(live.id),
          args: [{ id: live.id }],
          parentClosePolicy: ParentClosePolicy.ABANDON,
          ...subaccountChallengeVisibility(live.id),
        });
      } catch (error) {
        // already started by an earlier attempt at concluding it (a lost workflow task): it runs
        if (!(error instanceof WorkflowExecutionAlreadyStartedError)) throw error;
      }
    }
  };
  try {
    await conclude();
  } catch (error) {
    // cancelled while announcing: the subaccount is live, its challenge period must still start
    if (!cancelledFromOutside(error)) throw error;
    await shieldedIf(true, conclude);
  }
  return { subaccount: live, compensated: [] };
}

/** An allocation that failed other than by a refusal (or was cancelled): its slot, if it was allocated after all, ends failed. */
async function allocationFailed(
  input: { entityId: string; requestId: string },
  failure: { code: string; message: string },
  type: string,
  targets: Pick<Activities, 'webhookTargets'>,
): Promise<CreationResult> {
  const failed = await ledger.markAllocationFailed({ entityId: input.entityId, requestId: input.requestId, failure: failure.message });
  if (failed) {
    if (failed.status === 'failed') await announce('subaccount.failed', failed, targets);
    return { subaccount: failed, failedStep: 'allocate', error: failure, compensated: ['mark_failed'] };
  }
  throw ApplicationFailure.create({ type, message: failure.message, details: [{ failedStep: 'allocate', compensated: [], subaccount: null }], nonRetryable: true });
}

/**
 * Patch: the lifecycle assesses all the entity's rules (minimum balance, drawdown from
 * the high-water mark, inactivity) at the end of the challenge, and then keeps running
 * for the active subaccount, assessing them every `assessEveryMs` on a durable timer
 * and eliminating it by the first rule that fires (recorded with its figures);
 * continue-as-new bounds its history. Runs before it applied the balance rule once and
 * ended at promotion.
 */
export const ONGOING_RULES_PATCH = 'ongoing-challenge-rules';

export interface LifecycleInput {
  id: string;
  /** Set by continue-as-new: the challenge is over, assessments go on at this period. */
  assessEveryMs?: number;
  /** Assessments per run before continue-as-new (default ASSESSMENTS_PER_RUN_MAX; lower in recordings). */
  assessmentsPerRunMax?: number;
}

/**
 * A subaccount's lifecycle: its challenge period on a durable timer, then the rules
 * promote it to `active` or eliminate it; then, as long as it is active, the same
 * rules every `assessEveryMs` (the entity's; 0 ends the lifecycle at promotion). The
 * durations are read by the activities, when each period starts.
 */
export async function subaccountLifecycleWorkflow(input: LifecycleInput): Promise<Subaccount> {
  if (!patched(ONGOING_RULES_PATCH)) return challengeOnce(input);
  const perRunMax = input.assessmentsPerRunMax ?? ASSESSMENTS_PER_RUN_MAX;
  let everyMs = input.assessEveryMs;
  if (everyMs === undefined) {
    const { challengeMs } = await ledger.challengeOf(input.id);
    await sleep(challengeMs);
    const concluded = await ledger.assessSubaccount(input.id, Date.now());
    if (concluded.verdict === 'breached') return eliminateByRule(input.id, 'challenge_failed');
    if (concluded.verdict === 'promoted') await announce('subaccount.active', concluded.subaccount);
    if (concluded.verdict === 'ended' || concluded.assessEveryMs === 0) return concluded.subaccount;
    everyMs = concluded.assessEveryMs;
  }
  for (let assessed = 0; assessed < perRunMax; assessed++) {
    await sleep(everyMs);
    const assessment = await ledger.assessSubaccount(input.id, Date.now());
    if (assessment.verdict === 'breached') return eliminateByRule(input.id, 'rule_breached');
    if (assessment.verdict === 'ended' || assessment.assessEveryMs === 0) return assessment.subaccount;
    everyMs = assessment.assessEveryMs;
  }
  return continueAsNew<typeof subaccountLifecycleWorkflow>({ ...input, assessEveryMs: everyMs });
}

/** The elimination of a subaccount a rule fired on (the rule is on the subaccount, for the elimination to report). */
async function eliminateByRule(id: string, reason: string): Promise<Subaccount> {
  const elimination = { id, reason, by: 'system' };
  const child = await startChild(subaccountEliminationWorkflow, {
    workflowId: eliminationWorkflowId(id),
    args: [elimination],
    workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE,
    ...subaccountEliminationVisibility(elimination),
  });
  return (await child.result()).subaccount;
}

/** The lifecycle before ONGOING_RULES_PATCH: the balance rule once, at the end of the challenge. */
async function challengeOnce(input: { id: string }): Promise<Subaccount> {
  const { challengeMs } = await ledger.challengeOf(input.id);
  await sleep(challengeMs);
  const { subaccount, passed } = await ledger.concludeChallenge(input.id);
  if (passed) {
    if (subaccount.status === 'active') await announce('subaccount.active', subaccount);
    return subaccount;
  }
  if (subaccount.status !== 'challenge') return subaccount; // eliminated by request meanwhile
  return eliminateByRule(input.id, 'challenge_failed');
}

export interface EliminationResult {
  subaccount: Subaccount;
  swept: number;
  collateralReleased: boolean;
  streams: StreamReceipt[];
}

/**
 * Elimination (by request or by the challenge rule): mark it `eliminating` (from
 * then on no stream or hold can open on it), close its open streams (the ledger
 * closes them under each stream's lock; each stream workflow is woken to finish with
 * the same receipt), then sweep its balance back to the entity, release its
 * collateral and mark it `eliminated`. A stream that opened while elimination began
 * is reported by the settlement and closed in another round. Once eliminated it is
 * announced (also when the settlement is retried after it committed: the event's
 * key makes it once). It then holds nothing in memory: its history is in the database.
 */
export async function subaccountEliminationWorkflow(input: { id: string; reason: string; by: string }): Promise<EliminationResult> {
  // once begun, an elimination finishes: a Temporal cancellation cannot leave the money half swept
  return patched(ELIMINATION_RUNS_THROUGH_CANCEL_PATCH) ? CancellationScope.nonCancellable(() => eliminate(input)) : eliminate(input);
}

/** Patch: an elimination runs to its end through a Temporal cancellation. Runs before it stopped where the cancellation found it. */
export const ELIMINATION_RUNS_THROUGH_CANCEL_PATCH = 'elimination-runs-through-cancel';

async function eliminate(input: { id: string; reason: string; by: string }): Promise<EliminationResult> {
  await ledger.beginElimination(input.id);
  const streams: StreamReceipt[] = [];
  for (let round = 1; round <= ELIMINATION_ROUNDS_MAX; round++) {
    const closed = await ledger.closeSubaccountStreams(input.id, input.by);
    for (const receipt of closed) {
      await getExternalWorkflowHandle(streamWorkflowId(receipt.ref))
        .signal(cancelStreamSignal, { by: input.by, reason: 'subaccount eliminated' })
        .catch(() => undefined); // a stream workflow already finished needs no wake-up
    }
    streams.push(...closed);
    const { openStreams, ...settled } = await ledger.settleElimination({ id: input.id, reason: input.reason });
    if (openStreams.length > 0) continue;
    await announce('subaccount.eliminated', settled.subaccount);
    return { ...settled, streams };
  }
  // no stream can open on an eliminating subaccount: more rounds than this is a bug
  throw ApplicationFailure.create({ type: 'elimination_stuck', message: `subaccount ${input.id}: streams still open after ${ELIMINATION_ROUNDS_MAX} rounds`, nonRetryable: true });
}
