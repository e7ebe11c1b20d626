import { z } from 'zod';
import { forbidden, SluiceError } from '../../domain/errors';
import { streamWorkflowId } from '../../domain/streams';
import { getAccount } from '../../ledger/accounts';
import { acceptRate, changeRate, depositToStream, joinDistribution, leaveDistribution } from '../../ledger/streamControls';
import { findStreamWithHistory, receiptOf } from '../../ledger/streams';
import { pauseStreamUpdate, resumeStreamUpdate } from '../../../workflows/definitions';
import { ownAccount, scopedKey } from '../../services/actors';
import { asSluiceError } from '../errors';
import { API_WAIT_MS_DEFAULT, StillRunning, withinDeadline } from '../../services/deadline';
import { workflowStatus } from '../../temporal/reconciler';
import { membersOf, streamActor, visibleStream } from '../../services/streamAccess';
import type { Api } from '../app';
import * as S from '../schemas';
import { MembersInput } from './streams';

const errors = S.WriteErrors;

/**
 * The controls of an open stream: top-up, pause/resume, rate change, and a
 * distribution's membership. Who may call each is decided in streamAccess.ts;
 * a control on a closed stream, pausing a paused one or resuming a running one
 * is a 409 `invalid_state`.
 */
export function streamControlRoutes(app: Api) {
  const { pool, temporal } = app.deps;
  const waitMs = app.deps.waitMs ?? API_WAIT_MS_DEFAULT;

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
    handler: async (req, reply) => {
      const from = await ownAccount(pool, req.actor, req.body.fromAccountId);
      const by = req.actor.kind === 'admin' ? 'admin' : req.actor.party;
      const receipt = await depositToStream(pool, { ref: req.params.ref, key: scopedKey(req.actor, req.headers['idempotency-key']), fromAccountId: from.id, amount: req.body.amount, by });
      return reply.status(201).send({ ref: receipt.ref, status: receipt.status, amount: req.body.amount, fromAccountId: from.id, maxTotal: receipt.maxTotal, deposited: receipt.deposited ?? 0 });
    },
  });

  for (const [action, update] of [['pause', pauseStreamUpdate], ['resume', resumeStreamUpdate]] as const) {
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
      handler: async (req) => {
        const row = await visibleStream(pool, req.actor, req.params.ref);
        const actor = await streamActor(pool, req.actor, row, 'pause');
        if (row.status !== 'open') throw new SluiceError('invalid_state', `stream ${row.ref} is closed`, { ref: row.ref });
        const workflowId = streamWorkflowId(row.ref);
        const updated = temporal.workflow.getHandle(workflowId).executeUpdate(update, { args: [actor] }).catch(async (error: unknown) => {
          if (asSluiceError(error)) throw error;
          // the run ended between the read above and the update: the stream closed meanwhile
          if ((await findStreamWithHistory(pool, row.ref))?.status !== 'open') throw new SluiceError('invalid_state', `stream ${row.ref} is closed`, { ref: row.ref });
          // open, with no workflow to pause it: the reconciler settles it (a cancel does now)
          if ((await workflowStatus(temporal, workflowId)) !== 'RUNNING') {
            throw new SluiceError('invalid_state', `stream ${row.ref} has no running workflow to ${action} it: cancel it (it settles through the ledger) or let the reconciler close it`, { ref: row.ref, workflowId });
          }
          throw error;
        });
        await withinDeadline(updated, waitMs, () => new StillRunning(`/v1/streams/${row.ref}`, { ref: row.ref, workflowId }));
        return receiptOf(pool, row.ref);
      },
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
      const row = await visibleStream(pool, req.actor, req.params.ref);
      const actor = await streamActor(pool, req.actor, row, 'payer');
      const receipt = await changeRate(pool, { ref: row.ref, ratePerTick: req.body.ratePerTick, ...actor });
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
    handler: async (req) => {
      const row = await visibleStream(pool, req.actor, req.params.ref);
      if (req.actor.kind === 'party' && req.actor.party !== row.payee) throw forbidden(`only the payee of stream ${row.ref} accepts a rate`);
      return acceptRate(pool, { ref: row.ref, ratePerTick: req.body.ratePerTick, by: req.actor.kind === 'admin' ? 'admin' : req.actor.party });
    },
  });

  app.post('/v1/streams/:ref/members', {
    schema: {
      tags: ['stream controls'],
      summary: 'Add members to a distribution stream (or change a weight), from the next tick on (payer)',
      params: S.RefParam,
      body: z.object({ members: MembersInput }),
      response: { 200: S.StreamReceipt, ...errors },
    },
    handler: async (req) => {
      const row = await visibleStream(pool, req.actor, req.params.ref);
      const actor = await streamActor(pool, req.actor, row, 'payer');
      const members = await membersOf(pool, req.body.members, await getAccount(pool, row.payer_account_id));
      return joinDistribution(pool, { ref: row.ref, members, ...actor });
    },
  });

  app.post('/v1/streams/:ref/members/:accountId/leave', {
    schema: {
      tags: ['stream controls'],
      summary: 'A member leaves a distribution stream, from the next tick on (the payer, or the member itself)',
      params: S.RefParam.extend({ accountId: S.AccountId }),
      response: { 200: S.StreamReceipt, ...errors },
    },
    handler: async (req) => {
      const row = await visibleStream(pool, req.actor, req.params.ref);
      const member = row.members?.find((m) => m.accountId === req.params.accountId);
      const by = req.actor.kind === 'admin' ? 'admin' : req.actor.party;
      if (req.actor.kind === 'party' && by !== row.payer && by !== member?.party) throw forbidden(`only the payer or the member itself takes ${req.params.accountId} out`);
      return leaveDistribution(pool, { ref: row.ref, accountId: req.params.accountId, by });
    },
  });
}
