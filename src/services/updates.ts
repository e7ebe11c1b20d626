import { SluiceError } from '../domain/errors';
import { updateNotRun } from '../temporal/failures';

/** The first wait before an update Temporal gave back unrun is sent again; it doubles up to the cap. */
const RESEND_WAIT_MS_FIRST = 25;
const RESEND_WAIT_MS_CAP = 1000;
/** What a caller whose update was never run is told to wait (Retry-After). */
const RESEND_RETRY_AFTER_S = 1;

/**
 * Sends a workflow update, sending it again while Temporal gives it back without
 * running it: refused at the workflow's limit on updates in flight, or aborted before
 * the workflow accepted it (many concurrent requests on one session meet both under
 * load). The workflow never saw it, so sending it again is safe; each wait is
 * jittered so the refused ones do not come back together. It tries for half the
 * call's wait, so a caller whose update never ran hears so (429 with Retry-After, or
 * the outage's 503) rather than "still running".
 */
export async function sendUpdate<T>(send: () => Promise<T>, callWaitMs: number, subject: Record<string, unknown>): Promise<T> {
  const giveUpAt = Date.now() + callWaitMs / 2;
  for (let waitMs = RESEND_WAIT_MS_FIRST; ; waitMs = Math.min(waitMs * 2, RESEND_WAIT_MS_CAP)) {
    try {
      return await send();
    } catch (error) {
      const notRun = updateNotRun(error);
      if (!notRun) throw error;
      const pause = waitMs / 2 + Math.random() * waitMs;
      if (Date.now() + pause >= giveUpAt) {
        if (notRun === 'aborted') throw error;
        throw new SluiceError('rate_limited', 'too many requests in flight on this workflow at once; nothing ran: send the same request again', { ...subject, retryAfterSeconds: RESEND_RETRY_AFTER_S });
      }
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  }
}
