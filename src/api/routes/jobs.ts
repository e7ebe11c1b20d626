import { createHash } from 'node:crypto';
import { CancelledFailure, WorkflowUpdateFailedError } from '@temporalio/client';
import { z } from 'zod';
import { forbidden, SluiceError } from '../../domain/errors';
import { costOfUnits, DEFAULT_TIER_BUDGETS, jobWorkflowId, paymentState, PRICE_PER_UNIT_DEFAULT, utcDay, type GrantView, type JobRequest } from '../../domain/grants';
import { cancelGrantInLedger, findGrant, getGrant, listGrants, noPayment, previewDecision, setTier, toGrantView } from '../../ledger/grants';
import { poolState } from '../../ledger/pool';
import { startJobWorkflow } from '../../temporal/jobs';
import { sluiceErrorFromTemporal } from '../../temporal/failures';
import { cancelJobSignal, jobPaymentUpdate } from '../../../workflows/definitions';
import { actorName, idOfKey, ownAccount, type Actor } from '../../services/actors';
import { API_WAIT_MS_DEFAULT, StillRunning, withinDeadline } from '../../services/deadline';
import { workflowStatus } from '../../temporal/reconciler';
import type { Api } from '../app';
import * as S from '../schemas';
import { PAGE_ROWS_MAX } from '../limits';
import { AMOUNT_UNITS_MAX } from '../../domain/money';

const errors = S.WriteErrors;
const readErrors = S.ReadErrors;

export const PAYMENT_TIMEOUT_MS_MIN = 1_000;
export const PAYMENT_TIMEOUT_MS_MAX = 7 * 86_400_000;

/** A job's (and a session request's) work. */
export const Work = z.object({
  description: z.string().min(1).max(500).regex(/^[^\u0000]*$/, 'no NUL characters'),
  simulate: z
    .object({
      actualCost: z.number().int().min(0).max(1e15).optional(),
      failTimes: z.union([z.number().int().min(0).max(100), z.literal('always')]).optional(),
      durationMs: z.number().int().min(0).max(60_000).optional(),
    })
    .optional()
    .describe('what the default (simulated) work does: its actual cost, failing attempts, duration'),
});

const CreateJobBody = z.object({
  jobId: S.Ref.optional().describe('the job id (workflow job-<id>): starting it again returns the same job. Required, or an Idempotency-Key header'),
  accountId: S.AccountId.describe("the payer's account: pays the charged part, receives refunds"),
  estimatedCost: S.Units.optional().describe('the estimate in minor units; or give `units` (priced at SLUICE_PRICE_PER_UNIT)'),
  units: S.Units.optional().describe('units of work; the estimate is units × the price per unit'),
  requestHash: z.string().regex(/^[A-Za-z0-9:_-]{1,128}$/).optional().describe('identifies the request (default: sha256 of the work)'),
  work: Work,
  paymentTimeoutMs: z.number().int().min(PAYMENT_TIMEOUT_MS_MIN).max(PAYMENT_TIMEOUT_MS_MAX).optional(),
}).refine((b) => (b.estimatedCost === undefined) !== (b.units === undefined), { message: 'give either estimatedCost or units, not both', path: ['estimatedCost'] });

/** The terms that make a job: the same job id with other terms is another job (409), never this one's grant. */
const sameTerms = (g: GrantView, r: JobRequest) =>
  g.payer === r.payer && g.payerAccountId === r.payerAccountId && g.estimatedCost === r.estimatedCost && g.requestHash === r.requestHash;
const jobIdTaken = (jobId: string) => new SluiceError('ref_conflict', `job id ${jobId} is already used by another job`, { jobId });

const JobIdParam = z.object({ id: S.Ref });

export function jobRoutes(app: Api) {
  const { pool, temporal, taskQueue } = app.deps;
  const budgets = app.deps.budgets ?? DEFAULT_TIER_BUDGETS;
  const paymentTimeoutMs = app.deps.jobPaymentTimeoutMs ?? 3_600_000;
  const pricePerUnit = app.deps.pricePerUnit ?? PRICE_PER_UNIT_DEFAULT;
  const waitMs = app.deps.waitMs ?? API_WAIT_MS_DEFAULT;

  /** A job is the payer's (and the admin's) to see and act on. */
  const visibleJob = async (actor: Actor, jobId: string): Promise<GrantView> => {
    const grant = await getGrant(pool, jobId);
    if (actor.kind === 'party' && actor.party !== grant.payer) throw forbidden(`job ${jobId} is not yours`);
    return grant;
  };

  app.get('/v1/pool', {
    schema: { tags: ['pool'], summary: "The free-tier pool: balance, held (open reservations), absorbed and credited back today (UTC)", response: { 200: S.PoolState, ...readErrors } },
    handler: async () => poolState(pool, utcDay(Date.now())),
  });

  app.get('/v1/grants', {
    schema: {
      tags: ['pool'],
      summary: `Grants (one per job) newest first: the caller's own, every payer's for the admin; at most ${PAGE_ROWS_MAX['GET /v1/grants']} a page`,
      querystring: z.object({
        after: S.Ref.optional().describe('the last jobId of the previous page (its next)'),
        limit: S.PageLimit('GET /v1/grants'),
      }),
      response: {
        200: z.object({ grants: z.array(S.Grant), next: z.string().optional().describe('pass as `after` for the next page; left out on the last page') }),
        ...readErrors,
      },
    },
    handler: async (req) => {
      const { after, limit } = req.query;
      const grants = await listGrants(pool, { payer: req.actor.kind === 'party' ? req.actor.party : undefined, after, limit });
      return { grants, ...(grants.length === limit && { next: grants.at(-1)!.jobId }) };
    },
  });

  app.get('/v1/estimate', {
    schema: {
      tags: ['pool'],
      summary: 'What a job of N units would cost and get now: the decision preview, your budget today, the pool, the tier budgets (reserves nothing)',
      querystring: z.object({ units: S.QueryInt(1, AMOUNT_UNITS_MAX), payer: S.PartyId.optional() }),
      response: {
        200: z.object({
          units: z.number().int(),
          pricePerUnit: z.number().int(),
          estimatedCost: z.number().int(),
          payer: z.string(),
          decision: z.object({ mode: z.enum(['free', 'partial', 'gate']), absorbUnits: z.number().int(), chargeUnits: z.number().int() }),
          budget: z.object({ tier: S.Tier, daily: z.number().int(), used: z.number().int(), remaining: z.number().int() }),
          pool: z.object({ balance: z.number().int(), held: z.number().int(), available: z.number().int() }),
          tierBudgets: z.record(z.string(), z.number().int()),
        }),
        ...readErrors,
      },
    },
    handler: async (req) => {
      const payer = req.actor.kind === 'party' ? req.actor.party : req.query.payer;
      if (!payer) throw new SluiceError('invalid_request', 'the admin names the payer: ?payer=<party>');
      if (req.actor.kind === 'party' && req.query.payer && req.query.payer !== payer) throw forbidden('a party estimates for itself');
      const estimatedCost = costOfUnits(req.query.units, pricePerUnit);
      const preview = await previewDecision(pool, { payer, estimatedCost, day: utcDay(Date.now()), budgets });
      return { units: req.query.units, pricePerUnit, estimatedCost, payer, ...preview, tierBudgets: budgets };
    },
  });

  app.post('/v1/parties/:id/tier', {
    config: { auth: 'admin' },
    schema: {
      tags: ['pool'],
      summary: "Set a payer's tier (admin): its daily free-tier budget",
      params: z.object({ id: S.PartyId }),
      body: z.object({ tier: S.Tier }),
      response: { 200: z.object({ party: z.string(), tier: S.Tier, dailyBudget: z.number().int() }), ...errors },
    },
    handler: async (req) => ({ ...(await setTier(pool, req.params.id, req.body.tier)), dailyBudget: budgets[req.body.tier] }),
  });

  app.post('/v1/jobs', {
    schema: {
      tags: ['jobs'],
      summary: 'Start a grant job (workflow job-<id>): decided before this returns; a free job is reserved and runs at once',
      headers: S.IdempotencyHeaders.partial(),
      body: CreateJobBody,
      response: { 201: S.Grant, 200: S.Grant, 202: S.StillRunning, ...errors },
    },
    handler: async (req, reply) => {
      const account = await ownAccount(pool, req.actor, req.body.accountId);
      // the job's payment comes out of this account and its refunds go back to it: the world and the pool take neither
      if (account.kind === 'world' || account.kind === 'pool' || account.kind === 'session') throw new SluiceError('invalid_request', `a job cannot be paid from the ${account.kind} account`, { account: account.id });
      const key = req.headers['idempotency-key'];
      const jobId = req.body.jobId ?? (key !== undefined ? idOfKey(req.actor, key) : undefined);
      if (jobId === undefined) {
        throw new SluiceError('invalid_request', 'give the job a jobId, or send an Idempotency-Key header: a retried start must find the job it started, not start a second one', { param: 'jobId' });
      }
      const { work } = req.body;
      const request: JobRequest = {
        jobId,
        payer: account.ownerId,
        payerAccountId: account.id,
        estimatedCost: req.body.estimatedCost ?? costOfUnits(req.body.units!, pricePerUnit),
        requestHash: req.body.requestHash ?? createHash('sha256').update(JSON.stringify(work)).digest('hex'),
        work,
        paymentTimeoutMs: req.body.paymentTimeoutMs ?? paymentTimeoutMs,
      };
      const existing = await findGrant(pool, jobId);
      if (existing) {
        const g = toGrantView(existing);
        if (!sameTerms(g, request)) throw jobIdTaken(jobId);
        return reply.status(200).send(g);
      }
      let decided: GrantView;
      try {
        ({ decided } = await withinDeadline(startJobWorkflow(temporal, taskQueue, request), waitMs, () =>
          new StillRunning(`/v1/jobs/${jobId}`, { jobId, workflowId: jobWorkflowId(jobId) }),
        ));
      } catch (error) {
        // a job id already run to its end: its grant answers
        const ended = await findGrant(pool, jobId);
        if (!ended) throw error;
        decided = toGrantView(ended);
      }
      // a concurrent request with this job id may have started the workflow: what it decided is its job, not this one
      if (!sameTerms(decided, request)) throw jobIdTaken(jobId);
      return reply.status(201).send(decided);
    },
  });

  app.get('/v1/jobs/:id', {
    schema: { tags: ['jobs'], summary: 'A job and its grant: decision, reservation, payment, what was absorbed, refunded and credited', params: JobIdParam, response: { 200: S.Grant, ...readErrors } },
    handler: async (req) => visibleJob(req.actor, req.params.id),
  });

  app.post('/v1/jobs/:id/payment', {
    schema: {
      tags: ['jobs'],
      summary: 'Pay a partial or gate job: re-grants what is left now, reserves it, charges the rest. Paying again changes nothing',
      params: JobIdParam,
      response: { 200: S.Grant, 202: S.StillRunning, ...errors },
    },
    handler: async (req) => {
      const grant = await visibleJob(req.actor, req.params.id);
      const state = paymentState(grant);
      if (state === 'paid') return grant;
      if (state === 'refused') throw noPayment(grant);
      try {
        const workflowId = jobWorkflowId(grant.jobId);
        const paid = temporal.workflow.getHandle(workflowId).executeUpdate(jobPaymentUpdate);
        return await withinDeadline(paid, waitMs, () => new StillRunning(`/v1/jobs/${grant.jobId}`, { jobId: grant.jobId, workflowId }));
      } catch (error) {
        if (error instanceof StillRunning) throw error;
        const known = sluiceErrorFromTemporal(error);
        if (known) throw known;
        // refused by a workflow that was being cancelled: the job takes no payment
        if (error instanceof WorkflowUpdateFailedError && !(error.cause instanceof CancelledFailure)) throw error;
        // the job ended (timed out) between our read and the update: answer from the database
        throw noPayment(await getGrant(pool, grant.jobId));
      }
    },
  });

  app.post('/v1/jobs/:id/cancel', {
    schema: {
      tags: ['jobs'],
      summary: 'Cancel a job before it settles (payer or admin): releases its reservation, gives the budget back, refunds its payment; returns the job',
      params: JobIdParam,
      body: z.object({ reason: S.Memo.optional() }).default({}),
      response: { 200: S.Grant, 202: S.StillRunning, ...errors },
    },
    handler: async (req) => {
      const grant = await visibleJob(req.actor, req.params.id);
      if (grant.status === 'cancelled') return grant;
      // a session's request is its session workflow's: it settles or fails there, and the session's close waits for it
      if (grant.sessionId) throw new SluiceError('job_conflict', `job ${grant.jobId} is a request of session ${grant.sessionId}: it cannot be cancelled on its own`, { jobId: grant.jobId, sessionId: grant.sessionId });
      if (grant.status !== 'awaiting_payment' && grant.status !== 'reserved') {
        throw new SluiceError('job_conflict', `job ${grant.jobId} is ${grant.status}: it can no longer be cancelled`, { jobId: grant.jobId, status: grant.status });
      }
      const by = actorName(req.actor);
      const throughLedger = () =>
        cancelGrantInLedger(pool, { jobId: grant.jobId, failure: `cancelled by ${by}${req.body?.reason ? `: ${req.body.reason}` : ''}`, closedBy: by, reason: 'cancelled' });
      const workflowId = jobWorkflowId(grant.jobId);
      // its workflow gone (terminated, failed, lost): the ledger compensates it here
      if ((await workflowStatus(temporal, workflowId)) !== 'RUNNING') return throughLedger();
      const handle = temporal.workflow.getHandle(workflowId);
      await handle.signal(cancelJobSignal, { by, reason: req.body?.reason }).catch(() => undefined); // already ending: read the result
      // the workflow compensates, then ends (settled if the cancel came too late; failed or cancelled through Temporal: an error)
      const ended = handle.result().then(
        () => getGrant(pool, grant.jobId),
        async () => {
          const g = await getGrant(pool, grant.jobId);
          // a run that ended without compensating (terminated as it did): the ledger does
          return g.status === 'awaiting_payment' || g.status === 'reserved' ? throughLedger() : g;
        },
      );
      return withinDeadline(ended, waitMs, () => new StillRunning(`/v1/jobs/${grant.jobId}`, { jobId: grant.jobId, workflowId }));
    },
  });
}
