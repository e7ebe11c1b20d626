import { proxyActivities, upsertSearchAttributes } from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { PaymentReceipt, PaymentRequest, RefundReceipt, RefundRequest } from '../src/domain/payments';
import { SA_STATUS } from '../src/domain/searchAttributes';

// A payment is one idempotent activity; retries are safe and bounded, business
// errors (non-retryable) fail the workflow at once with their code.
const { settlePayment, refundPayment } = proxyActivities<Activities>({
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '500 milliseconds', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: 20 },
});

/** One-shot payment (workflow id `payment-<ref>`): settles and returns the receipt. */
export async function paymentWorkflow(request: PaymentRequest): Promise<PaymentReceipt> {
  const receipt = await settlePayment(request);
  upsertSearchAttributes([{ key: SA_STATUS, value: 'CONFIRMED' }]);
  return receipt;
}

/** A refund of a payment (workflow id `refund-<ref>-<key>`), payee to payer. */
export async function refundWorkflow(request: RefundRequest): Promise<RefundReceipt> {
  return refundPayment(request);
}
