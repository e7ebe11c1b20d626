import { SluiceError } from './errors';
/** One-shot payments: the shapes shared by the API, the workflow and the activities. */
export interface PaymentRequest {
  ref: string;
  payerAccountId: string;
  payeeAccountId: string;
  amount: number;
  memo?: string;
}

export interface PaymentReceipt {
  ref: string;
  status: 'CONFIRMED';
  payer: string;
  payee: string;
  payerAccountId: string;
  payeeAccountId: string;
  amount: number;
  refunded: number;
  transferId: number;
  memo?: string;
  paidAt: string;
}

export interface RefundRequest {
  ref: string;
  refundKey: string;
  /** Omitted: everything not yet refunded. */
  amount?: number;
}

export interface RefundReceipt {
  ref: string;
  refundKey: string;
  amount: number;
  refundedTotal: number;
  paymentAmount: number;
  transferId: number;
  refundedAt: string;
}

export const paymentWorkflowId = (ref: string) => `payment-${ref}`;
export const refundWorkflowId = (ref: string, refundKey: string) => `refund-${ref}-${refundKey}`;

/**
 * Same ref, different payer, payee or amount: the ref is taken. The service checks it
 * before a payment's workflow starts; the ledger again under the payment's lock.
 */
export function assertSamePayment(existing: PaymentReceipt, request: PaymentRequest): void {
  if (
    existing.payerAccountId !== request.payerAccountId ||
    existing.payeeAccountId !== request.payeeAccountId ||
    existing.amount !== request.amount
  ) {
    throw new SluiceError('payment_conflict', `payment ref ${request.ref} was already used for a different payment`, { ref: request.ref });
  }
}
