import { ADMIN_KEY, api, type TestStack } from './stack';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` every 100 ms until it answers something, for at most 15 s. */
export async function until<T>(what: string, fn: () => Promise<T | undefined>): Promise<T> {
  for (let i = 0; i < 150; i++) {
    const v = await fn();
    if (v !== undefined) return v;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * The parties of an API test file: `party(id, funds, tier?)` registers one with a
 * wallet `<id>.w` (funded by the admin, at that tier), `as(id)` calls the API with its key, and
 * `untilTicks` polls a stream until it has billed enough ticks or closed. Takes
 * the stack lazily: files start it in beforeAll.
 */
export function testParties(stack: () => TestStack) {
  const keys: Record<string, string> = {};
  const admin = () => api(stack().app, ADMIN_KEY);
  const as = (party: string) => api(stack().app, keys[party]);

  async function party(id: string, funds = 0, tier?: string): Promise<void> {
    const res = await admin().post('/v1/parties', { id, name: id });
    if (res.status !== 201) throw new Error(`party ${id}: ${res.status} ${JSON.stringify(res.body)}`);
    keys[id] = res.body.apiKey;
    const wallet = await as(id).post('/v1/accounts', { id: `${id}.w` });
    if (wallet.status !== 201) throw new Error(`wallet ${id}.w: ${wallet.status} ${JSON.stringify(wallet.body)}`);
    if (funds) {
      const funded = await admin().post('/v1/deposits', { accountId: `${id}.w`, amount: funds }, `fund-${id}`);
      if (funded.status >= 300) throw new Error(`funding ${id}.w: ${funded.status} ${JSON.stringify(funded.body)}`);
    }
    if (tier) {
      const tiered = await admin().post(`/v1/parties/${id}/tier`, { tier });
      if (tiered.status !== 200) throw new Error(`tier ${id}: ${tiered.status} ${JSON.stringify(tiered.body)}`);
    }
  }

  const account = async (id: string) => (await admin().get(`/v1/accounts/${encodeURIComponent(id)}`)).body;

  /** Waits until the stream has billed at least `ticks` ticks (or closed: a paused stream is still open); returns its view. */
  async function untilTicks(ref: string, ticks: number, who = admin(), everyMs = 100) {
    for (let i = 0; i < 30_000 / everyMs; i++) {
      const view = (await who.get(`/v1/streams/${ref}`)).body;
      if (view.ticks >= ticks || view.status === 'CONFIRMED' || view.status === 'FAILED') return view;
      await sleep(everyMs);
    }
    throw new Error(`stream ${ref} did not reach ${ticks} ticks`);
  }

  return { keys, as, party, account, untilTicks };
}
