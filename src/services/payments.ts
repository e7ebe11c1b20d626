import { forbidden, notFound } from '../domain/errors';
import { assertSamePayment, paymentWorkflowId, refundWorkflowId, type PaymentReceipt, type PaymentRequest, type RefundReceipt } from '../domain/payments';
import { getAccount } from '../ledger/accounts';
import { findPayment, getPayment } from '../ledger/payments';
import { runWorkflowOnce } from './starts';
import { paymentWorkflow, refundWorkflow } from '../../workflows/payment';
import { paymentVisibility, refundVisibility } from '../../workflows/searchAttributes';
import { ownAccount, type Actor } from './actors';
import { StillRunning, withinDeadline } from './deadline';
import { waitMsOf, type ServiceDeps } from './deps';

/** One-shot payments and their refunds, each a workflow run at most once per ref (or refund key). */
export function paymentService(deps: ServiceDeps) {
  const { pool, temporal, taskQueue } = deps;
  const waitMs = waitMsOf(deps);

  /** Pays once per ref: a repeat with the same terms answers with the same receipt, other terms are a conflict. */
  const pay = async (actor: Actor, input: { ref: string; fromAccountId: string; toAccountId: string; amount: number; memo?: string }): Promise<PaymentReceipt> => {
    const payer = await ownAccount(pool, actor, input.fromAccountId);
    const payee = await getAccount(pool, input.toAccountId);
    const request: PaymentRequest = { ref: input.ref, payerAccountId: payer.id, payeeAccountId: payee.id, amount: input.amount, memo: input.memo };
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
  };

  /** Payer, payee or admin may read a payment; to anyone else it is not found, as a missing one. */
  const get = async (actor: Actor, ref: string): Promise<PaymentReceipt> => {
    const payment = await getPayment(pool, ref);
    if (actor.kind === 'party' && actor.party !== payment.payer && actor.party !== payment.payee) throw notFound('payment', ref);
    return payment;
  };

  /** Refunds part or all of a payment, payee to payer (the payee or the admin), once per refund key. */
  const refund = async (actor: Actor, ref: string, input: { refundKey: string; amount?: number }): Promise<RefundReceipt> => {
    const payment = await get(actor, ref);
    if (actor.kind === 'party' && actor.party !== payment.payee) throw forbidden('only the payee (or the admin) can refund a payment');
    const workflowId = refundWorkflowId(payment.ref, input.refundKey);
    return withinDeadline(
      runWorkflowOnce(temporal, refundWorkflow, {
        workflowId,
        taskQueue,
        args: [{ ref: payment.ref, refundKey: input.refundKey, amount: input.amount }],
        visibility: refundVisibility({ ref: payment.ref, payer: payment.payee, payee: payment.payer, amount: input.amount }),
      }),
      waitMs,
      () => new StillRunning(`/v1/payments/${payment.ref}`, { ref: payment.ref, workflowId }),
    );
  };

  return { pay, get, refund };
}
