import { randomBytes } from 'node:crypto';

/**
 * The launcher's demo, run over HTTP against the live API exactly as a client
 * would: two parties, a deposit, a transfer, a hold captured in part and released,
 * and a one-shot payment through its workflow (then a partial refund).
 */
export async function runDemo(opts: { apiUrl: string; adminKey: string; temporalUiUrl?: string; namespace: string; log: (l: string) => void }) {
  const { apiUrl, log } = opts;
  const call = async (key: string, method: string, path: string, body?: unknown, idempotencyKey?: string) => {
    const res = await fetch(`${apiUrl}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${key}`,
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(idempotencyKey ? { 'idempotency-key': idempotencyKey } : {}),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = (await res.json()) as any;
    if (!res.ok) throw new Error(`${method} ${path} → ${res.status} ${JSON.stringify(json)}`);
    return json;
  };
  const admin = (method: string, path: string, body?: unknown, key?: string) => call(opts.adminKey, method, path, body, key);

  // a fresh pair per run, so the demo also works against a stack that already has data
  const run = randomBytes(3).toString('hex');
  const alice = await admin('POST', '/v1/parties', { id: `alice-${run}`, name: 'Alice (buyer agent)' });
  const bob = await admin('POST', '/v1/parties', { id: `bob-${run}`, name: 'Bob (GPU seller)' });
  const a = await call(alice.apiKey, 'POST', '/v1/accounts', { id: `${alice.id}.wallet` });
  const b = await call(bob.apiKey, 'POST', '/v1/accounts', { id: `${bob.id}.wallet` });

  const show = async (step: string) => {
    const [x, y] = await Promise.all([admin('GET', `/v1/accounts/${a.id}`), admin('GET', `/v1/accounts/${b.id}`)]);
    const cell = (acc: any) => `${acc.id.padEnd(20)} balance ${String(acc.balance).padStart(6)}  held ${String(acc.held).padStart(5)}  available ${String(acc.available).padStart(6)}`;
    log(`${step}`);
    log(`    ${cell(x)}`);
    log(`    ${cell(y)}`);
  };

  await admin('POST', '/v1/deposits', { accountId: a.id, amount: 10_000, memo: 'demo deposit' }, `demo-${run}-deposit`);
  await show('1. deposit 10000 to alice');
  await call(alice.apiKey, 'POST', '/v1/transfers', { fromAccountId: a.id, toAccountId: b.id, amount: 2_500 }, `demo-${run}-t1`);
  await show('2. transfer 2500 alice → bob');
  const hold = await call(alice.apiKey, 'POST', '/v1/holds', { accountId: a.id, amount: 1_000 }, `demo-${run}-h1`);
  await show(`3. hold 1000 on alice (hold ${hold.id})`);
  await call(alice.apiKey, 'POST', `/v1/holds/${hold.id}/capture`, { amount: 400, toAccountId: b.id }, `demo-${run}-h1-capture`);
  await show('4. capture 400 of the hold to bob');
  await call(alice.apiKey, 'POST', `/v1/holds/${hold.id}/release`, undefined, `demo-${run}-h1-release`);
  await show('5. release the remaining 600');
  const ref = `demo-${run}`;
  const receipt = await call(alice.apiKey, 'POST', '/v1/payments', { ref, fromAccountId: a.id, toAccountId: b.id, amount: 750, memo: 'one-shot payment' });
  await show(`6. payment ${ref}: 750 alice → bob through workflow payment-${ref} (transfer ${receipt.transferId}, ${receipt.status})`);
  const refund = await call(bob.apiKey, 'POST', `/v1/payments/${ref}/refunds`, { amount: 250 }, 'demo-refund');
  await show(`7. bob refunds 250 of ${ref} (refunded ${refund.refundedTotal} of ${refund.paymentAmount})`);
  // the world is held as stripe accounts (SLUICE_WORLD_STRIPES): its balance is their sum
  const { accounts } = await admin('GET', '/v1/accounts?ownerId=sluice&limit=1000');
  const stripes = (accounts as { kind: string; currency: string; balance: number }[]).filter((x) => x.kind === 'world' && x.currency === 'UNIT');
  const world = stripes.reduce((sum, x) => sum + x.balance, 0);
  log(`world balance ${world} over its ${stripes.length} stripes (the other side of every deposit: all balances sum to zero)`);
  if (opts.temporalUiUrl) log(`payment workflow: ${opts.temporalUiUrl}/namespaces/${opts.namespace}/workflows/payment-${ref}`);
  return { alice: alice.id, bob: bob.id, ref };
}
