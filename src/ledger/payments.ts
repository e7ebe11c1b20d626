import type { Pool, Queryable } from '../db/pool';
import { withTransaction } from '../db/pool';
import { notFound, SluiceError } from '../domain/errors';
import { assertSamePayment, type PaymentReceipt, type PaymentRequest, type RefundReceipt, type RefundRequest } from '../domain/payments';
import { appendEvent } from './events';
import { idempotent } from './idempotency';
import { postTransfer } from './transfers';

interface PaymentRow {
  ref: string;
  payer_account_id: string;
  payee_account_id: string;
  amount: number;
  refunded: number;
  transfer_id: number;
  memo: string | null;
  created_at: Date;
  payer: string;
  payee: string;
}

const PAYMENT_SELECT = `
  select p.*, a.owner_id as payer, b.owner_id as payee
    from payments p join accounts a on a.id = p.payer_account_id join accounts b on b.id = p.payee_account_id`;

const toReceipt = (r: PaymentRow): PaymentReceipt => ({
  ref: r.ref,
  status: 'CONFIRMED',
  payer: r.payer,
  payee: r.payee,
  payerAccountId: r.payer_account_id,
  payeeAccountId: r.payee_account_id,
  amount: r.amount,
  refunded: r.refunded,
  transferId: r.transfer_id,
  memo: r.memo ?? undefined,
  paidAt: r.created_at.toISOString(),
});

export async function findPayment(db: Queryable, ref: string): Promise<PaymentReceipt | undefined> {
  const { rows } = await db.query<PaymentRow>(`${PAYMENT_SELECT} where p.ref = $1`, [ref]);
  return rows[0] && toReceipt(rows[0]);
}

export async function getPayment(db: Queryable, ref: string): Promise<PaymentReceipt> {
  const found = await findPayment(db, ref);
  if (!found) throw notFound('payment', ref);
  return found;
}

/**
 * Moves a one-shot payment: the transfer and the payment row commit together, keyed
 * `payment:<ref>`, so a retried activity or a repeated request pays once.
 */
export function settlePayment(pool: Pool, request: PaymentRequest): Promise<PaymentReceipt> {
  const key = `payment:${request.ref}`;
  return withTransaction(pool, async (client) => {
    const existing = await findPayment(client, request.ref);
    if (existing) {
      assertSamePayment(existing, request);
      return existing;
    }
    return idempotent(client, key, 'payment', request, async () => {
      const transfer = await postTransfer(client, {
        key,
        kind: 'payment',
        debitAccountId: request.payerAccountId,
        creditAccountId: request.payeeAccountId,
        amount: request.amount,
        paymentRef: request.ref,
        memo: request.memo,
      });
      await client.query(
        `insert into payments (ref, payer_account_id, payee_account_id, amount, transfer_id, memo) values ($1, $2, $3, $4, $5, $6)`,
        [request.ref, request.payerAccountId, request.payeeAccountId, request.amount, transfer.id, request.memo ?? null],
      );
      const receipt = await getPayment(client, request.ref);
      await appendEvent(client, { type: 'payment.settled', subject: request.ref, payload: { ...receipt }, parties: [receipt.payer, receipt.payee] });
      return receipt;
    });
  });
}

/**
 * Refunds part or all of what is left of a payment, payee to payer. The payment row
 * is locked, so concurrent refunds queue; `payments.refunded <= amount` is also a
 * CHECK, so no code path can refund more than was paid. Keyed per refund.
 */
export function refundPayment(pool: Pool, request: RefundRequest): Promise<RefundReceipt> {
  const key = `refund:${request.ref}:${request.refundKey}`;
  return withTransaction(pool, (client) =>
    idempotent(client, key, 'refund', request, async () => {
      const { rows } = await client.query<PaymentRow>(`${PAYMENT_SELECT} where p.ref = $1 for update of p`, [request.ref]);
      const payment = rows[0];
      if (!payment) throw notFound('payment', request.ref);
      const refundable = payment.amount - payment.refunded;
      const amount = request.amount ?? refundable;
      if (amount <= 0 || amount > refundable) {
        throw new SluiceError('refund_exceeds_payment', `payment ${request.ref} has ${refundable} left to refund, asked for ${amount}`, {
          ref: request.ref,
          refundable,
          requested: amount,
        });
      }
      const transfer = await postTransfer(client, {
        key,
        kind: 'refund',
        debitAccountId: payment.payee_account_id,
        creditAccountId: payment.payer_account_id,
        amount,
        paymentRef: request.ref,
      });
      await client.query('update payments set refunded = refunded + $2 where ref = $1', [request.ref, amount]);
      await client.query('insert into refunds (payment_ref, refund_key, amount, transfer_id) values ($1, $2, $3, $4)', [
        request.ref,
        request.refundKey,
        amount,
        transfer.id,
      ]);
      const receipt: RefundReceipt = {
        ref: request.ref,
        refundKey: request.refundKey,
        amount,
        refundedTotal: payment.refunded + amount,
        paymentAmount: payment.amount,
        transferId: transfer.id,
        refundedAt: transfer.createdAt,
      };
      await appendEvent(client, { type: 'payment.refunded', subject: request.ref, payload: { ...receipt }, parties: [payment.payer, payment.payee] });
      return receipt;
    }),
  );
}
