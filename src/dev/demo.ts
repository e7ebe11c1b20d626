import { randomBytes } from 'node:crypto';

/**
 * The launcher's demo: the headline of Sluice in well under 30 s, over HTTP against
 * the live API exactly as a client would. Two parties with their keys; a stream
 * ticking live, cancelled, and its receipt with the escrow it gave back; an entity
 * with a subaccount; a grant job the free-tier pool absorbs; the crown of the rate
 * board; then the commands to try next. Each run uses fresh ids, so it also runs
 * against a stack that already has data.
 */
export interface DemoOptions {
  apiUrl: string;
  adminKey: string;
  consoleUrl?: string;
  temporalUiUrl?: string;
  namespace: string;
  log: (line: string) => void;
  /** Ticks to show live before the cancel (default 5). */
  liveTicks?: number;
}

export interface DemoResult {
  alice: { id: string; apiKey: string };
  bob: { id: string; apiKey: string };
  ref: string;
  receipt: { ticks: number; totalPaid: number; escrowReturned: number; status: string };
  entity: string;
  subaccount: string;
  jobId: string;
}

/** Minor units as a person reads them: 10,000. */
const units = (n: number) => n.toLocaleString('en-US');

export async function runDemo(opts: DemoOptions): Promise<DemoResult> {
  const { apiUrl, log } = opts;
  const call = async (key: string, method: 'GET' | 'POST', path: string, body?: unknown, idempotencyKey?: string) => {
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
  const admin = (method: 'GET' | 'POST', path: string, body?: unknown, key?: string) => call(opts.adminKey, method, path, body, key);
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  /** Polls `read` until `done` says its value is what we wait for (bounded: a demo never hangs). */
  const until = async <T>(what: string, read: () => Promise<T>, done: (v: T) => boolean, ms = 20_000): Promise<T> => {
    const deadline = Date.now() + ms;
    for (;;) {
      const v = await read();
      if (done(v)) return v;
      if (Date.now() > deadline) throw new Error(`demo: waited ${ms} ms for ${what}`);
      await sleep(100);
    }
  };

  const run = randomBytes(3).toString('hex');
  const party = async (id: string, name: string) => {
    const p = await admin('POST', '/v1/parties', { id, name });
    await call(p.apiKey, 'POST', '/v1/accounts', { id: `${id}.wallet` });
    return { id: p.id as string, apiKey: p.apiKey as string };
  };

  // 1. parties
  const alice = await party(`alice-${run}`, 'Alice (buyer agent)');
  const bob = await party(`bob-${run}`, 'Bob (GPU seller)');
  await admin('POST', '/v1/deposits', { accountId: `${alice.id}.wallet`, amount: 10_000, memo: 'demo deposit' }, `demo-${run}-deposit`);
  log('1. two parties, each with a wallet and its own API key (shown once):');
  log(`     ${alice.id.padEnd(13)} ${alice.apiKey}   (buyer agent; 10,000 deposited)`);
  log(`     ${bob.id.padEnd(13)} ${bob.apiKey}   (GPU seller)`);

  // 2. a stream, ticking live
  const ref = `gpu-job-${run}`;
  const rate = 25;
  const maxTotal = 2_000;
  const tickIntervalMs = 500;
  log(`2. ${alice.id} streams to ${bob.id}: ${rate} per tick, a tick every ${tickIntervalMs} ms, at most ${units(maxTotal)} held in escrow (stream ${ref})`);
  await call(alice.apiKey, 'POST', '/v1/streams', { ref, fromAccountId: `${alice.id}.wallet`, toAccountId: `${bob.id}.wallet`, ratePerTick: rate, maxTotal, tickIntervalMs });
  const liveTicks = opts.liveTicks ?? 5;
  for (let seen = 0; seen < liveTicks; ) {
    const v = await until(`tick ${seen + 1} of ${ref}`, () => call(alice.apiKey, 'GET', `/v1/streams/${ref}`), (x) => x.ticks > seen);
    for (let t = seen + 1; t <= Math.min(v.ticks, liveTicks); t++) log(`     tick ${t}  paid ${String(units(rate * t)).padStart(5)}  escrow left ${units(maxTotal - rate * t)}`);
    seen = v.ticks;
  }

  // 3. cancel, and the receipt
  const receipt = await call(alice.apiKey, 'POST', `/v1/streams/${ref}/cancel`, { reason: 'job done' });
  const [a, b] = await Promise.all([admin('GET', `/v1/accounts/${alice.id}.wallet`), admin('GET', `/v1/accounts/${bob.id}.wallet`)]);
  log(`3. ${alice.id} cancels; the receipt:`);
  log(`     ${receipt.status} after ${receipt.ticks} ticks: paid ${units(receipt.totalPaid)}, escrow returned ${units(receipt.escrowReturned)} (${receipt.reason} by ${receipt.closedBy})`);
  log(`     ${a.id.padEnd(20)} balance ${units(a.balance).padStart(6)}  held ${a.held}`);
  log(`     ${b.id.padEnd(20)} balance ${units(b.balance).padStart(6)}  held ${b.held}`);

  // 4. an entity and a subaccount (the creation saga)
  const entityId = `fleet-${run}`;
  const entity = await admin('POST', '/v1/entities', { id: entityId, name: 'Fleet operator', collateral: 100, funding: 500 });
  await admin('POST', '/v1/deposits', { accountId: entity.mainAccountId, amount: 5_000 }, `demo-${run}-fleet`);
  const created = await call(entity.apiKey, 'POST', `/v1/entities/${entityId}/subaccounts`, {});
  const sub = created.subaccount;
  const view = await call(entity.apiKey, 'GET', `/v1/entities/${entityId}`);
  log(`4. entity ${entityId} runs a fleet: each subaccount holds 100 collateral and is funded with 500`);
  log(`     subaccount ${sub.id} ${sub.status}, account ${sub.accountId} (saga ${sub.creationWorkflowId}); ${view.liveSubaccounts} of ${view.subaccountCap} live`);

  // 5. a grant job the free-tier pool absorbs
  const jobId = `render-${run}`;
  await admin('POST', `/v1/parties/${alice.id}/tier`, { tier: 'established' });
  const decided = await call(alice.apiKey, 'POST', '/v1/jobs', { jobId, accountId: `${alice.id}.wallet`, estimatedCost: 40, work: { description: 'render 40 frames', simulate: { actualCost: 30 } } });
  const job = await until(`job ${jobId} to settle`, () => call(alice.apiKey, 'GET', `/v1/jobs/${jobId}`), (j) => j.status !== 'reserved' && j.status !== 'awaiting_payment');
  log(`5. ${alice.id} (tier established) runs grant job ${jobId}, estimated at 40: decided ${decided.decision}, reserved ${decided.reserved}`);
  log(`     ${job.status}: the work cost 30, the pool absorbed ${job.absorbed}, ${alice.id} paid ${job.paid ?? 0}`);

  // 6. the rate board's crown: the lowest qualifying rate holds it
  const carol = await party(`carol-${run}`, 'Carol (GPU seller)');
  await call(bob.apiKey, 'POST', `/v1/sellers/${bob.id}/rates`, { ratePerTick: 20, accountId: `${bob.id}.wallet` });
  await call(bob.apiKey, 'POST', `/v1/sellers/${bob.id}/state`, { active: true, busy: false });
  await call(carol.apiKey, 'POST', `/v1/sellers/${carol.id}/rates`, { ratePerTick: 18, accountId: `${carol.id}.wallet` });
  await call(carol.apiKey, 'POST', `/v1/sellers/${carol.id}/state`, { active: true, busy: false });
  const crown = await call(alice.apiKey, 'GET', '/v1/crown');
  log(`6. on the rate board ${bob.id} offers 20 per tick, ${carol.id} 18: the crown (lowest qualifying rate) is ${crown.current.holders.join(', ')}'s at ${crown.current.bestRate}, as of ${crown.current.at}`);
  // the demo's sellers leave the board, so the next run's crown is its own
  for (const s of [bob, carol]) await call(s.apiKey, 'POST', `/v1/sellers/${s.id}/state`, { active: false });

  log('next, as alice:');
  log(`     npx sluice login --api ${apiUrl} --key ${alice.apiKey}`);
  log(`     npx sluice streams open --from ${alice.id}.wallet --to ${bob.id}.wallet --rate 10 --max 500 --interval-ms 1000`);
  log('     npx sluice streams list');
  log(`     npx sluice streams watch <ref>            npx sluice streams cancel <ref>`);
  log('     npx sluice events tail --follow');
  if (opts.consoleUrl) log(`     console: ${opts.consoleUrl} (paste alice's key, or the admin key)`);
  if (opts.temporalUiUrl) log(`     the stream's workflow: ${opts.temporalUiUrl}/namespaces/${opts.namespace}/workflows/stream-${ref}`);
  return {
    alice,
    bob,
    ref,
    receipt: { ticks: receipt.ticks, totalPaid: receipt.totalPaid, escrowReturned: receipt.escrowReturned, status: receipt.status },
    entity: entityId,
    subaccount: sub.id,
    jobId,
  };
}
