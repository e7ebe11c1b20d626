import { z } from 'zod';
import { streamControlService } from '../../services/streamControls';
import type { Api } from '../app';
import * as S from '../schemas';
import { MembersInput } from './streams';

const errors = S.WriteErrors;

/**
 * The controls of an open stream: top-up, pause/resume, rate change, and a
 * distribution's membership (src/services/streamControls.ts). A control on a closed
 * stream, pausing a paused one or resuming a running one is a 409 `invalid_state`.
 */
export function streamControlRoutes(app: Api) {
  const controls = streamControlService(app.deps);

  app.post('/v1/streams/:ref/deposits', {
    schema: {
      tags: ['stream controls'],
      summary: "Top a stream up: the amount joins its escrow and maxTotal grows by as much (anyone, from its own account; idempotent by key)",
      params: S.RefParam,
      headers: S.IdempotencyHeaders,
      body: z.object({ fromAccountId: S.AccountId, amount: S.Units }),
      // anyone may top up: the answer says what the top-up did, not the stream's history
      response: {
        201: z.object({
          ref: z.string(),
          status: z.enum(['STREAMING', 'PAUSED', 'CONFIRMED', 'FAILED']),
          amount: z.number().int(),
          fromAccountId: z.string(),
          maxTotal: z.number().int().optional(),
          deposited: z.number().int().describe('all top-ups of the stream so far'),
        }),
        ...errors,
      },
    },
    handler: async (req, reply) =>
      reply.status(201).send(await controls.deposit(req.actor, req.params.ref, { ...req.body, idempotencyKey: req.headers['idempotency-key'] })),
  });

  for (const action of ['pause', 'resume'] as const) {
    app.post(`/v1/streams/:ref/${action}`, {
      schema: {
        tags: ['stream controls'],
        summary:
          action === 'pause'
            ? 'Pause a stream: no ticks until resumed, nothing owed is lost (payer, an operator granted pause, admin)'
            : 'Resume a paused stream: the tick numbering goes on (payer, an operator granted pause, admin)',
        params: S.RefParam,
        response: { 200: S.StreamReceipt, 202: S.StillRunning, ...errors },
      },
      handler: async (req) => controls.pauseOrResume(req.actor, req.params.ref, action),
    });
  }

  app.post('/v1/streams/:ref/rate', {
    schema: {
      tags: ['stream controls'],
      summary: "Change the rate from the next tick on (payer); a stream opened with rateConsent 'payee' takes it as a proposal (202) until the payee accepts",
      params: S.RefParam,
      body: z.object({ ratePerTick: S.Units }),
      response: { 200: S.StreamReceipt, 202: S.StreamReceipt, ...errors },
    },
    handler: async (req, reply) => {
      const receipt = await controls.changeRate(req.actor, req.params.ref, req.body.ratePerTick);
      return reply.status(receipt.proposedRatePerTick !== undefined ? 202 : 200).send(receipt);
    },
  });

  app.post('/v1/streams/:ref/rate/accept', {
    schema: {
      tags: ['stream controls'],
      summary: "The payee agrees to the payer's proposed rate (naming it); it applies from the next tick",
      params: S.RefParam,
      body: z.object({ ratePerTick: S.Units }),
      response: { 200: S.StreamReceipt, ...errors },
    },
    handler: async (req) => controls.acceptRate(req.actor, req.params.ref, req.body.ratePerTick),
  });

  app.post('/v1/streams/:ref/members', {
    schema: {
      tags: ['stream controls'],
      summary: 'Add members to a distribution stream (or change a weight), from the next tick on (payer)',
      params: S.RefParam,
      body: z.object({ members: MembersInput }),
      response: { 200: S.StreamReceipt, ...errors },
    },
    handler: async (req) => controls.join(req.actor, req.params.ref, req.body.members),
  });

  app.post('/v1/streams/:ref/members/:accountId/leave', {
    schema: {
      tags: ['stream controls'],
      summary: 'A member leaves a distribution stream, from the next tick on (the payer, or the member itself)',
      params: S.RefParam.extend({ accountId: S.AccountId }),
      response: { 200: S.StreamReceipt, ...errors },
    },
    handler: async (req) => controls.leave(req.actor, req.params.ref, req.params.accountId),
  });
}
