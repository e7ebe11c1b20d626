import { CancellationScope, patched, proxyActivities, upsertSearchAttributes } from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { PaymentReceipt, PaymentRequest, RefundReceipt, RefundRequest } from '../src/domain/payments';
import { SA_STATUS } from './searchAttributes';
import { LEDGER_STEP_TIMEOUTS } from './ledgerTimeouts';

// A payment is one idempotent activity; retries are safe and bounded, business
// errors (non-retryable) fail the workflow at once with their code.
const { settlePayment, refundPayment } = proxyActivities<Activities>({
  ...LEDGER_STEP_TIMEOUTS,
  retry: { initialInterval: '500 milliseconds', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: 20 },
});

/**
 * Patch: a payment or refund is not abandoned by a Temporal cancellation: its one
 * transaction runs to its end (committed or refused), so the run ends with the
 * receipt that says what moved. Runs before it stopped awaiting it when cancelled.
 */
export const PAYMENT_RUNS_THROUGH_CANCEL_PATCH = 'payment-runs-through-cancel';

const throughCancel = <T>(step: () => Promise<T>): Promise<T> => (patched(PAYMENT_RUNS_THROUGH_CANCEL_PATCH) ? CancellationScope.nonCancellable(step) : step());

/** One-shot payment (workflow id `payment-<ref>`): settles and returns the receipt. */
export async function paymentWorkflow(request: PaymentRequest): Promise<PaymentReceipt> {
  const receipt = await throughCancel(() => settlePayment(request));
  upsertSearchAttributes([{ key: SA_STATUS, value: 'CONFIRMED' }]);
  return receipt;
}

/** A refund of a payment (workflow id `refund-<ref>-<key>`), payee to payer. */
export async function refundWorkflow(request: RefundRequest): Promise<RefundReceipt> {
  return throughCancel(() => refundPayment(request));
}
