import { z } from 'zod';
import { paymentService } from '../../services/payments';
import type { Api } from '../app';
import * as S from '../schemas';

const errors = S.WriteErrors;
const readErrors = S.ReadErrors;

export function paymentRoutes(app: Api) {
  const payments = paymentService(app.deps);

  app.post('/v1/payments', {
    schema: {
      tags: ['payments'],
      summary: 'One-shot payment through a workflow (id payment-<ref>); repeating a ref returns the same receipt',
      body: z.object({ ref: S.Ref, fromAccountId: S.AccountId, toAccountId: S.AccountId, amount: S.Units, memo: S.Memo.optional() }),
      response: { 200: S.PaymentReceipt, 202: S.StillRunning, ...errors },
    },
    handler: async (req) => payments.pay(req.actor, req.body),
  });

  app.get('/v1/payments/:ref', {
    schema: { tags: ['payments'], summary: 'A payment receipt, with what has been refunded', params: S.RefParam, response: { 200: S.PaymentReceipt, ...readErrors } },
    handler: async (req) => payments.get(req.actor, req.params.ref),
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
    handler: async (req) => payments.refund(req.actor, req.params.ref, { refundKey: req.headers['idempotency-key'], amount: req.body?.amount }),
  });
}
