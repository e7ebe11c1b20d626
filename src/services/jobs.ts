import { createHash } from 'node:crypto';
import { CancelledFailure, WorkflowUpdateFailedError } from '@temporalio/client';
import { notFound, SluiceError } from '../domain/errors';
import { costOfUnits, DEFAULT_TIER_BUDGETS, jobIdTaken, jobWorkflowId, paymentState, sameJobTerms, PRICE_PER_UNIT_DEFAULT, utcDay, type GrantView, type JobRequest, type JobWork, type Tier } from '../domain/grants';
import { cancelGrantInLedger, findGrant, getGrant, listGrants, noPayment, previewDecision, setTier, toGrantView } from '../ledger/grants';
import { poolState } from '../ledger/pool';
import { sluiceErrorFromTemporal } from '../temporal/failures';
import { startJobWorkflow } from './starts';
import { workflowStatus } from '../temporal/reconciler';
import { cancelJobSignal, jobPaymentUpdate } from '../../workflows/definitions';
import { actorName, idOfKey, ownAccount, partyParam, type Actor } from './actors';
import { StillRunning, withinDeadline } from './deadline';
import { waitMsOf, type ServiceDeps } from './deps';
import { sendUpdate } from './updates';

/** How long a partial or gate job waits for its payment when neither the caller nor SLUICE_JOB_PAYMENT_TIMEOUT_MS says. */
export const JOB_PAYMENT_TIMEOUT_MS_DEFAULT = 3_600_000;

/** What a caller asks for to start a job (POST /v1/jobs): an estimate, or units priced at the price per unit. */
export interface StartJobInput {
  jobId?: string;
  accountId: string;
  estimatedCost?: number;
  units?: number;
  requestHash?: string;
  work: JobWork;
  paymentTimeoutMs?: number;
}

/** A request's default hash (a job's, a session request's): sha256 of its work. */
export const requestHashOf = (work: JobWork) => createHash('sha256').update(JSON.stringify(work)).digest('hex');

/** The terms that make a job: the same job id with other terms is another job (409), never this one's grant. */

/** Grant jobs and the free-tier pool: starting, paying and cancelling a job, its grant, estimates and tiers. */
export function jobService(deps: ServiceDeps) {
  const { pool, temporal, taskQueue } = deps;
  const waitMs = waitMsOf(deps);
  const budgets = deps.budgets ?? DEFAULT_TIER_BUDGETS;
  const paymentTimeoutMs = deps.jobPaymentTimeoutMs ?? JOB_PAYMENT_TIMEOUT_MS_DEFAULT;
  const pricePerUnit = deps.pricePerUnit ?? PRICE_PER_UNIT_DEFAULT;

  const stillRunning = (jobId: string) => () => new StillRunning(`/v1/jobs/${jobId}`, { jobId, workflowId: jobWorkflowId(jobId) });

  /** A job is the payer's (and the admin's) to see and act on; another party's is not found, as a missing one. */
  const visibleJob = async (actor: Actor, jobId: string): Promise<GrantView> => {
    const grant = await getGrant(pool, jobId);
    if (actor.kind === 'party' && actor.party !== grant.payer) throw notFound('job', jobId);
    return grant;
  };

  /** The free-tier pool now: balance, held, and what it absorbed and was credited today (UTC). */
  const poolToday = () => poolState(pool, utcDay(Date.now()));

  /** Grants newest first: the caller's own, every payer's for the admin. */
  const grants = async (actor: Actor, page: { after?: string; limit: number }) => {
    const rows = await listGrants(pool, { payer: actor.kind === 'party' ? actor.party : undefined, after: page.after, limit: page.limit });
    return { grants: rows, ...(rows.length === page.limit && { next: rows.at(-1)!.jobId }) };
  };

  /** What a job of `units` would cost and get now (reserves nothing); a party estimates for itself, the admin names the payer. */
  const estimate = async (actor: Actor, q: { units: number; payer?: string }) => {
    const payer = partyParam(actor, { name: 'payer', in: 'query' }, q.payer);
    if (!payer) throw new SluiceError('invalid_request', 'the admin names the payer: ?payer=<party>', { param: 'payer' });
    const estimatedCost = costOfUnits(q.units, pricePerUnit);
    const preview = await previewDecision(pool, { payer, estimatedCost, day: utcDay(Date.now()), budgets });
    return { units: q.units, pricePerUnit, estimatedCost, payer, ...preview, tierBudgets: budgets };
  };

  /** Sets a payer's tier (the admin's call): its daily free-tier budget. */
  const setPayerTier = async (party: string, tier: Tier) => ({ ...(await setTier(pool, party, tier)), dailyBudget: budgets[tier] });

  /**
   * Starts a job: its grant once decided (a free job reserved), `created` false when
   * the job id already names the same job (a repeat answers with its grant).
   */
  const start = async (actor: Actor, input: StartJobInput, idempotencyKey?: string): Promise<{ created: boolean; grant: GrantView }> => {
    const account = await ownAccount(pool, actor, input.accountId);
    // the job's payment comes out of this account and its refunds go back to it: the world and the pool take neither
    if (account.kind === 'world' || account.kind === 'pool' || account.kind === 'session') throw new SluiceError('invalid_request', `a job cannot be paid from the ${account.kind} account`, { account: account.id });
    const jobId = input.jobId ?? (idempotencyKey !== undefined ? idOfKey(actor, idempotencyKey) : undefined);
    if (jobId === undefined) {
      throw new SluiceError('invalid_request', 'give the job a jobId, or send an Idempotency-Key header: a retried start must find the job it started, not start a second one', { param: 'jobId' });
    }
    const request: JobRequest = {
      jobId,
      payer: account.ownerId,
      payerAccountId: account.id,
      estimatedCost: input.estimatedCost ?? costOfUnits(input.units!, pricePerUnit),
      requestHash: input.requestHash ?? requestHashOf(input.work),
      work: input.work,
      paymentTimeoutMs: input.paymentTimeoutMs ?? paymentTimeoutMs,
    };
    const existing = await findGrant(pool, jobId);
    if (existing) {
      const grant = toGrantView(existing);
      if (!sameJobTerms(grant, request)) throw jobIdTaken(jobId);
      return { created: false, grant };
    }
    let decided: GrantView;
    try {
      ({ decided } = await withinDeadline(startJobWorkflow(temporal, taskQueue, request), waitMs, stillRunning(jobId)));
    } catch (error) {
      // a job id already run to its end: its grant answers
      const ended = await findGrant(pool, jobId);
      if (!ended) throw error;
      decided = toGrantView(ended);
    }
    // a concurrent request with this job id may have started the workflow: what it decided is its job, not this one
    if (!sameJobTerms(decided, request)) throw jobIdTaken(jobId);
    return { created: true, grant: decided };
  };

  /** Pays a partial or gate job through its workflow; paying again changes nothing. */
  const pay = async (actor: Actor, jobId: string): Promise<GrantView> => {
    const grant = await visibleJob(actor, jobId);
    const state = paymentState(grant);
    if (state === 'paid') return grant;
    if (state === 'refused') throw noPayment(grant);
    try {
      const handle = temporal.workflow.getHandle(jobWorkflowId(grant.jobId));
      const paid = sendUpdate(() => handle.executeUpdate(jobPaymentUpdate), waitMs, { jobId: grant.jobId });
      return await withinDeadline(paid, waitMs, stillRunning(grant.jobId));
    } catch (error) {
      if (error instanceof StillRunning || error instanceof SluiceError) throw error;
      const known = sluiceErrorFromTemporal(error);
      if (known) throw known;
      // refused by a workflow that was being cancelled: the job takes no payment
      if (error instanceof WorkflowUpdateFailedError && !(error.cause instanceof CancelledFailure)) throw error;
      // the job ended (timed out) between our read and the update: answer from the database
      throw noPayment(await getGrant(pool, grant.jobId));
    }
  };

  /**
   * Cancels a job before it settles: a running workflow is signalled and compensates;
   * a workflow that is gone (or ends without compensating) leaves the job to the
   * ledger, which compensates it here the same way.
   */
  const cancel = async (actor: Actor, jobId: string, reason?: string): Promise<GrantView> => {
    const grant = await visibleJob(actor, jobId);
    if (grant.status === 'cancelled') return grant;
    // a session's request is its session workflow's: it settles or fails there, and the session's close waits for it
    if (grant.sessionId) throw new SluiceError('job_conflict', `job ${grant.jobId} is a request of session ${grant.sessionId}: it cannot be cancelled on its own`, { jobId: grant.jobId, sessionId: grant.sessionId });
    if (grant.status !== 'awaiting_payment' && grant.status !== 'reserved') {
      throw new SluiceError('job_conflict', `job ${grant.jobId} is ${grant.status}: it can no longer be cancelled`, { jobId: grant.jobId, status: grant.status });
    }
    const by = actorName(actor);
    const throughLedger = () => cancelGrantInLedger(pool, { jobId: grant.jobId, failure: `cancelled by ${by}${reason ? `: ${reason}` : ''}`, closedBy: by, reason: 'cancelled' });
    const workflowId = jobWorkflowId(grant.jobId);
    // its workflow gone (terminated, failed, lost): the ledger compensates it here
    if ((await workflowStatus(temporal, workflowId)) !== 'RUNNING') return throughLedger();
    const handle = temporal.workflow.getHandle(workflowId);
    await handle.signal(cancelJobSignal, { by, reason }).catch(() => undefined); // already ending: read the result
    // the workflow compensates, then ends (settled if the cancel came too late; failed or cancelled through Temporal: an error)
    const ended = handle.result().then(
      () => getGrant(pool, grant.jobId),
      async () => {
        const g = await getGrant(pool, grant.jobId);
        // a run that ended without compensating (terminated as it did): the ledger does
        return g.status === 'awaiting_payment' || g.status === 'reserved' ? throughLedger() : g;
      },
    );
    return withinDeadline(ended, waitMs, stillRunning(grant.jobId));
  };

  return { poolToday, grants, estimate, setPayerTier, start, get: visibleJob, pay, cancel };
}

export type JobService = ReturnType<typeof jobService>;
