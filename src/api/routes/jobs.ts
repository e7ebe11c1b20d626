import { z } from 'zod';
import { jobService } from '../../services/jobs';
import type { Api } from '../app';
import * as S from '../schemas';
import { PAGE_ROWS_MAX } from '../limits';
import { AMOUNT_UNITS_MAX } from '../../domain/money';

const errors = S.WriteErrors;
const readErrors = S.ReadErrors;

export const PAYMENT_TIMEOUT_MS_MIN = 1_000;
export const PAYMENT_TIMEOUT_MS_MAX = 7 * 86_400_000;

const CreateJobBody = z.object({
  jobId: S.Ref.optional().describe('the job id (workflow job-<id>): starting it again returns the same job. Required, or an Idempotency-Key header'),
  accountId: S.AccountId.describe("the payer's account: pays the charged part, receives refunds"),
  estimatedCost: S.Units.optional().describe('the estimate in minor units; or give `units` (priced at SLUICE_PRICE_PER_UNIT)'),
  units: S.Units.optional().describe('units of work; the estimate is units × the price per unit'),
  requestHash: z.string().regex(/^[A-Za-z0-9:_-]{1,128}$/).optional().describe('identifies the request (default: sha256 of the work)'),
  work: S.Work,
  paymentTimeoutMs: z.number().int().min(PAYMENT_TIMEOUT_MS_MIN).max(PAYMENT_TIMEOUT_MS_MAX).optional(),
}).refine((b) => (b.estimatedCost === undefined) !== (b.units === undefined), { message: 'give either estimatedCost or units, not both', path: ['estimatedCost'] });

const JobIdParam = z.object({ id: S.Ref });

export function jobRoutes(app: Api) {
  const jobs = jobService(app.deps);

  app.get('/v1/pool', {
    schema: { tags: ['pool'], summary: "The free-tier pool: balance, held (open reservations), absorbed and credited back today (UTC)", response: { 200: S.PoolState, ...readErrors } },
    handler: async () => jobs.poolToday(),
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
    handler: async (req) => jobs.grants(req.actor, req.query),
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
    handler: async (req) => jobs.estimate(req.actor, req.query),
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
    handler: async (req) => jobs.setPayerTier(req.params.id, req.body.tier),
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
      const { created, grant } = await jobs.start(req.actor, req.body, req.headers['idempotency-key']);
      return reply.status(created ? 201 : 200).send(grant);
    },
  });

  app.get('/v1/jobs/:id', {
    schema: { tags: ['jobs'], summary: 'A job and its grant: decision, reservation, payment, what was absorbed, refunded and credited', params: JobIdParam, response: { 200: S.Grant, ...readErrors } },
    handler: async (req) => jobs.get(req.actor, req.params.id),
  });

  app.post('/v1/jobs/:id/payment', {
    schema: {
      tags: ['jobs'],
      summary: 'Pay a partial or gate job: re-grants what is left now, reserves it, charges the rest. Paying again changes nothing',
      params: JobIdParam,
      response: { 200: S.Grant, 202: S.StillRunning, ...errors },
    },
    handler: async (req) => jobs.pay(req.actor, req.params.id),
  });

  app.post('/v1/jobs/:id/cancel', {
    schema: {
      tags: ['jobs'],
      summary: 'Cancel a job before it settles (payer or admin): releases its reservation, gives the budget back, refunds its payment; returns the job',
      params: JobIdParam,
      body: z.object({ reason: S.Memo.optional() }).default({}),
      response: { 200: S.Grant, 202: S.StillRunning, ...errors },
    },
    handler: async (req) => jobs.cancel(req.actor, req.params.id, req.body?.reason),
  });
}
