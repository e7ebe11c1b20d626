import { z } from 'zod';
import { OPERATOR_SCOPES } from '../../ledger/operators';
import { operatorService } from '../../services/operators';
import type { Api } from '../app';
import * as S from '../schemas';

const errors = S.WriteErrors;
const readErrors = S.ReadErrors;

const Grant = z.object({
  payer: z.string(),
  operator: z.string(),
  scopes: z.array(z.enum(OPERATOR_SCOPES)),
  dailyLimit: z.number().int(),
  grantedAt: z.string(),
  revokedAt: z.string().optional(),
  spentToday: z.number().int().describe("committed today (UTC) by the streams the operator opened: their maxTotal"),
});

/**
 * Operators: a payer lets another party open, pause or cancel streams for it, with
 * a daily limit on what the streams it opens commit. Every stream action an operator
 * takes records the operator and the payer it acted for.
 */
export function operatorRoutes(app: Api) {
  const operators = operatorService(app.deps);

  app.post('/v1/parties/:id/operators', {
    schema: {
      tags: ['operators'],
      summary: 'Let another party open, pause or cancel your streams, within a daily limit (granting again replaces the grant)',
      params: z.object({ id: S.PartyId }),
      body: z.object({
        operator: S.PartyId,
        scopes: z.array(z.enum(OPERATOR_SCOPES)).min(1).max(OPERATOR_SCOPES.length).default([...OPERATOR_SCOPES]),
        dailyLimit: S.Units.describe('the most the streams it opens may commit (their maxTotal) per UTC day'),
      }),
      response: { 201: Grant, ...errors },
    },
    handler: async (req, reply) => reply.status(201).send(await operators.grant(req.actor, req.params.id, req.body)),
  });

  app.post('/v1/parties/:id/operators/:operator/revoke', {
    schema: {
      tags: ['operators'],
      summary: "Revoke an operator's rights from now on (its streams run on); revoking again answers the same grant",
      params: z.object({ id: S.PartyId, operator: S.PartyId }),
      response: { 200: Grant, ...errors },
    },
    handler: async (req) => operators.revoke(req.actor, req.params.id, req.params.operator),
  });

  app.get('/v1/parties/:id/operators', {
    schema: {
      tags: ['operators'],
      summary: "A party's operators (as=payer, the default) or the payers it operates for (as=operator)",
      params: z.object({ id: S.PartyId }),
      querystring: z.object({ as: z.enum(['payer', 'operator']).default('payer'), after: S.PartyId.optional().describe('the other party of the last grant of the previous page'), limit: S.PageLimit('GET /v1/parties/:id/operators') }),
      response: { 200: z.object({ grants: z.array(Grant), next: z.string().optional().describe('pass as `after` for the next page; left out on the last') }), ...readErrors },
    },
    handler: async (req) => operators.list(req.actor, req.params.id, req.query),
  });
}
