import { ApplicationFailure } from '@temporalio/activity';
import type { Pool } from '../src/db/pool';
import { SluiceError } from '../src/domain/errors';
import type { PaymentRequest, RefundRequest } from '../src/domain/payments';
import { refundPayment, settlePayment } from '../src/ledger/payments';
import { billTick, closeStream, openStream } from '../src/ledger/streams';
import type { CloseReason, StreamRequest } from '../src/domain/streams';

export interface ActivityDeps {
  pool: Pool;
}

/**
 * A caller's error (insufficient funds, a taken ref…) will not heal on retry: it
 * crosses Temporal as a non-retryable ApplicationFailure whose type is the error
 * code, so the API can answer with the same 4xx. Anything else (a lost connection,
 * a crash) is thrown as is and retried; every activity is idempotent by key.
 */
function businessErrorsAreFinal<A extends unknown[], R>(fn: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
  return async (...args) => {
    try {
      return await fn(...args);
    } catch (error) {
      if (error instanceof SluiceError) {
        throw ApplicationFailure.create({ type: error.code, message: error.message, details: [error.details], nonRetryable: true });
      }
      throw error;
    }
  };
}

export function createActivities({ pool }: ActivityDeps) {
  return {
    settlePayment: businessErrorsAreFinal((request: PaymentRequest) => settlePayment(pool, request)),
    refundPayment: businessErrorsAreFinal((request: RefundRequest) => refundPayment(pool, request)),
    openStream: businessErrorsAreFinal((request: StreamRequest) => openStream(pool, request)),
    billTick: businessErrorsAreFinal((ref: string, tick: number) => billTick(pool, ref, tick)),
    closeStream: businessErrorsAreFinal((input: { ref: string; reason: CloseReason; closedBy: string }) => closeStream(pool, input)),
  };
}

export type Activities = ReturnType<typeof createActivities>;
