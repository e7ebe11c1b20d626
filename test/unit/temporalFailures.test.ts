import { ServiceError, WorkflowUpdateRPCTimeoutOrCancelledError } from '@temporalio/client';
import { answerFor, OUTAGE_RETRY_AFTER_S } from '../../src/api/errors';

/**
 * What the API answers when Temporal fails a call, with the errors shaped as the
 * client raises them: a ServiceError (or, for an update, a
 * WorkflowUpdateRPCTimeoutOrCancelledError) whose cause carries the gRPC status.
 * Unreachable or past its deadline, Temporal is an outage the caller may retry
 * (503 with Retry-After), never a 500.
 */
const grpc = (code: number, details: string) => Object.assign(new Error(`${code} ${details}`), { code, details, metadata: {} });

test('Temporal unreachable (UNAVAILABLE) is the outage answer: 503, retry after a moment', () => {
  expect(answerFor(new ServiceError('Update-With-Start failed', { cause: grpc(14, 'connection refused') }))).toMatchObject({
    status: 503,
    retryAfterS: OUTAGE_RETRY_AFTER_S,
    body: { error: { code: 'unavailable' } },
  });
});

test('Temporal past its deadline (DEADLINE_EXCEEDED), on a call or an update, is the outage answer too', () => {
  for (const error of [
    new ServiceError('Failed to describe workflow', { cause: grpc(4, 'context deadline exceeded') }),
    new WorkflowUpdateRPCTimeoutOrCancelledError('context deadline exceeded', { cause: grpc(4, 'context deadline exceeded') }),
  ]) {
    expect(answerFor(error)).toMatchObject({ status: 503, retryAfterS: OUTAGE_RETRY_AFTER_S, outage: true });
  }
});

test('a call the API itself cancelled (CANCELLED) and an error of unknown shape are not outages: the 500 path logs them', () => {
  expect(answerFor(new WorkflowUpdateRPCTimeoutOrCancelledError('cancelled', { cause: grpc(1, 'cancelled') }))).toBeUndefined();
  expect(answerFor(new Error('something else'))).toBeUndefined();
});
