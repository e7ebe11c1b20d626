import { z } from 'zod';
import { forbidden } from '../../domain/errors';
import { paymentWorkflowId, refundWorkflowId, type PaymentRequest } from '../../domain/payments';
import { paymentVisibility, refundVisibility } from '../../../workflows/searchAttributes';
import { getAccount } from '../../ledger/accounts';
import { assertSamePayment, findPayment, getPayment } from '../../ledger/payments';
import { paymentWorkflow, refundWorkflow } from '../../../workflows/payment';
import { runWorkflowOnce } from '../../temporal/runOnce';
import { ownAccount, type Actor } from '../../services/actors';
import { API_WAIT_MS_DEFAULT, StillRunning, withinDeadline } from '../../services/deadline';
import type { Api } from '../app';
import * as S from '../schemas';

const errors = S.WriteErrors;
const readErrors = S.ReadErrors;

export function paymentRoutes(app: Api) {
  const { pool, temporal, taskQueue } = app.deps;
  const waitMs = app.deps.waitMs ?? API_WAIT_MS_DEFAULT;

  app.post('/v1/payments', {
    schema: {
      tags: ['payments'],
      summary: 'One-shot payment through a workflow (id payment-<ref>); repeating a ref returns the same receipt',
      body: z.object({ ref: S.Ref, fromAccountId: S.AccountId, toAccountId: S.AccountId, amount: S.Units, memo: S.Memo.optional() }),
      response: { 200: S.PaymentReceipt, 202: S.StillRunning, ...errors },
    },
    handler: async (req) => {
      const payer = await ownAccount(pool, req.actor, req.body.fromAccountId);
      const payee = await getAccount(pool, req.body.toAccountId);
      const request: PaymentRequest = {
        ref: req.body.ref,
        payerAccountId: payer.id,
        payeeAccountId: payee.id,
        amount: req.body.amount,
        memo: req.body.memo,
      };
      const existing = await findPayment(pool, request.ref);
      if (existing) {
        assertSamePayment(existing, request);
        return existing;
      }
      const receipt = await withinDeadline(
        runWorkflowOnce(temporal, paymentWorkflow, {
          workflowId: paymentWorkflowId(request.ref),
          taskQueue,
          args: [request],
          visibility: paymentVisibility({ ref: request.ref, payer: payer.ownerId, payee: payee.ownerId, amount: request.amount }),
        }),
        waitMs,
        () => new StillRunning(`/v1/payments/${request.ref}`, { ref: request.ref, workflowId: paymentWorkflowId(request.ref) }),
      );
      // a concurrent request with the same ref and a different body attached to that run
      assertSamePayment(receipt, request);
      return receipt;
    },
  });

  /** Payer, payee or admin may read a payment. */
  const visiblePayment = async (actor: Actor, ref: string) => {
    const payment = await getPayment(pool, ref);
    if (actor.kind === 'party' && actor.party !== payment.payer && actor.party !== payment.payee) throw forbidden(`payment ${ref} is not yours`);
    return payment;
  };

  app.get('/v1/payments/:ref', {
    schema: { tags: ['payments'], summary: 'A payment receipt, with what has been refunded', params: S.RefParam, response: { 200: S.PaymentReceipt, ...readErrors } },
    handler: async (req) => visiblePayment(req.actor, req.params.ref),
  });

  app.post('/v1/payments/:ref/refunds', {
    schema: {
      tags: ['payments'],
      summary: 'Refund part or all of a payment, payee to payer (the payee or the admin); never more than was paid',
      params: S.RefParam,
      headers: S.IdempotencyHeaders,
      body: z.object({ amount: S.Units.optional() }).default({}),
      response: { 200: S.RefundReceipt, 202: S.StillRunning, ...errors },
    },
    handler: async (req) => {
      const payment = await visiblePayment(req.actor, req.params.ref);
      if (req.actor.kind === 'party' && req.actor.party !== payment.payee) throw forbidden('only the payee (or the admin) can refund a payment');
      const refundKey = req.headers['idempotency-key'];
      return withinDeadline(
        runWorkflowOnce(temporal, refundWorkflow, {
          workflowId: refundWorkflowId(payment.ref, refundKey),
          taskQueue,
          args: [{ ref: payment.ref, refundKey, amount: req.body?.amount }],
          visibility: refundVisibility({ ref: payment.ref, payer: payment.payee, payee: payment.payer, amount: req.body?.amount }),
        }),
        waitMs,
        () => new StillRunning(`/v1/payments/${payment.ref}`, { ref: payment.ref, workflowId: refundWorkflowId(payment.ref, refundKey) }),
      );
    },
  });
}
