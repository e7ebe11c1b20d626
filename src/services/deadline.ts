/** How long an API call waits on a workflow by default (SLUICE_API_WAIT_MS) before it answers 202. */
export { API_WAIT_MS_DEFAULT } from '../domain/settings';

/**
 * A call whose workflow has not answered within the API's deadline: the work goes
 * on (it was accepted, and it is keyed: sending the same request again attaches to
 * it), and the caller is answered 202 with where to look.
 */
export class StillRunning extends Error {
  constructor(
    readonly statusUrl: string,
    readonly details: Record<string, unknown>,
  ) {
    super(`accepted and still running after the API's wait: see ${statusUrl}, or send the same request again (same key) to wait again`);
    this.name = 'StillRunning';
  }
}

/** `work`, or StillRunning once `ms` have passed without it (the work itself is not stopped). */
export async function withinDeadline<T>(work: Promise<T>, ms: number, pending: () => StillRunning): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(pending()), ms);
  });
  // a failure after the deadline is the workflow's to record, not an unhandled rejection here
  work.catch(() => undefined);
  try {
    return await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
  }
}
