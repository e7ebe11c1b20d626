import { SluiceError } from '../../src/domain/errors';
import { sendUpdate } from '../../src/services/updates';

/**
 * An update Temporal gives back without running it (its in-flight limit reached, or
 * aborted before the workflow accepted it) is sent again; anything else is the
 * caller's at once. The errors are shaped as the client raises them: a ServiceError
 * whose cause carries the gRPC status.
 */
const grpc = (code: number, details: string) => Object.assign(new Error('Workflow Update failed'), { name: 'ServiceError', cause: Object.assign(new Error(details), { code, details }) });
const LIMIT = () => grpc(8, 'limit on number of concurrent in-flight updates has been reached (10)');
const ABORTED = () => grpc(14, 'workflow update was aborted');

function sender(failures: Array<() => Error>, result = 'ok') {
  const calls: number[] = [];
  const send = async () => {
    calls.push(Date.now());
    const next = failures.shift();
    if (next) throw next();
    return result;
  };
  return { send, calls };
}

test('an update refused at the in-flight limit, then aborted, is sent again until it runs: one answer, three sends', async () => {
  const { send, calls } = sender([LIMIT, ABORTED]);
  await expect(sendUpdate(send, 10_000, { sessionId: 's' })).resolves.toBe('ok');
  expect(calls).toHaveLength(3);
  // each send again came after a wait, not at once
  expect(calls[1]! - calls[0]!).toBeGreaterThanOrEqual(10);
});

test('still refused when half the call is spent: a 429 rate_limited saying nothing ran, with when to retry', async () => {
  const { send, calls } = sender(Array.from({ length: 1000 }, () => LIMIT));
  const refused = await sendUpdate(send, 400, { sessionId: 's', requestId: 'r' }).catch((e: unknown) => e);
  expect(refused).toBeInstanceOf(SluiceError);
  expect(refused).toMatchObject({ code: 'rate_limited', details: { sessionId: 's', requestId: 'r', retryAfterSeconds: 1 } });
  expect(calls.length).toBeGreaterThan(1);
  expect(calls.at(-1)! - calls[0]!).toBeLessThan(400);
});

test('still aborted when half the call is spent: the abort itself (an outage, the API answers 503)', async () => {
  const { send } = sender(Array.from({ length: 1000 }, () => ABORTED));
  const failed = await sendUpdate(send, 200, {}).catch((e: unknown) => e);
  expect(failed).toMatchObject({ name: 'ServiceError', cause: { code: 14 } });
});

test('any other failure (the workflow refused the update, the server is down) is not sent again', async () => {
  const refusal = new SluiceError('invalid_state', 'session s is closed');
  const { send, calls } = sender([() => refusal]);
  await expect(sendUpdate(send, 10_000, {})).rejects.toBe(refusal);
  const down = sender([() => grpc(14, 'connection refused')]);
  await expect(sendUpdate(down.send, 10_000, {})).rejects.toMatchObject({ cause: { code: 14 } });
  expect(calls).toHaveLength(1);
  expect(down.calls).toHaveLength(1);
});
