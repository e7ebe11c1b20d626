import { createHash, randomBytes } from 'node:crypto';
import { canonicalJson } from './domain/canonical';
import { planSimulation, type Command, type SimulationOptions } from './domain/simulation';

/** One HTTP call to the API: method, path, body, bearer key, idempotency key. */
export type Caller = (
  method: 'GET' | 'POST',
  path: string,
  body?: unknown,
  key?: string,
  idempotencyKey?: string,
) => Promise<{ status: number; body: any }>;

export function httpCaller(baseUrl: string): Caller {
  return async (method, path, body, key, idempotencyKey) => {
    const res = await fetch(`${baseUrl}${path}`, {
      method,
      headers: {
        ...(key ? { authorization: `Bearer ${key}` } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(idempotencyKey ? { 'idempotency-key': idempotencyKey } : {}),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    }).catch((error: unknown) => {
      // fetch says only "fetch failed": name the URL it tried, why, and what to do
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      throw new Error(
        `cannot reach the Sluice API at ${baseUrl} (${cause?.code ?? cause?.message ?? (error as Error).message}): ` +
          'start it with `npm start`, or point to it with --api URL, SLUICE_API_URL (or SLUICE_API_HOST and SLUICE_API_PORT), ' +
          'or `sluice login --api URL --key KEY`',
      );
    });
    return { status: res.status, body: await res.json().catch(() => undefined) };
  };
}

export interface PartySummary {
  party: string;
  opened: number;
  closed: number;
  ticks: number;
  paid: number;
  received: number;
}

export interface SimulationResult {
  tag: string;
  commands: number;
  commandsDigest: string;
  streamsOpened: number;
  streamsFailedToOpen: number;
  closeReasons: Record<string, number>;
  parties: PartySummary[];
  audit: { ok: boolean; failing: string[] };
}

export interface RunOptions extends SimulationOptions {
  call: Caller;
  adminKey: string;
  /** Wall time of one round. */
  roundMs?: number;
  /** Prefix for party ids and refs, so runs never collide in one database. */
  tag?: string;
  log?: (line: string) => void;
  /** Called after each round (the CLI draws a progress bar on a terminal). */
  onRound?: (done: number, rounds: number, streamsOpened: number) => void;
}

/** What each buyer is deposited before the first round (its top-ups come on top). */
export const BUYER_FUNDS = 5_000;

/** The ids a run gives its parties, their accounts and its streams. */
export const simulationIds = (tag: string) => ({
  buyer: (index: number) => `${tag}-b${index}`,
  seller: (index: number) => `${tag}-s${index}`,
  account: (party: string) => `${party}.w`,
  stream: (n: number) => `${tag}-st${n}`,
});

const LIVENESS_TIMEOUT_MS = 700;
const GRACE_MS = 2_000;

/**
 * Runs the plan against a live API: parties and accounts, then each round's
 * command, heartbeats from every party that is not silenced, and at the end a
 * cancel for every stream still open, the receipts, and the auditor's verdict.
 */
export async function runSimulation(o: RunOptions): Promise<SimulationResult> {
  const log = o.log ?? (() => undefined);
  const roundMs = o.roundMs ?? 100;
  const tag = o.tag ?? `sim${o.seed}-${randomBytes(2).toString('hex')}`;
  const plan = planSimulation(o);
  const commandsDigest = createHash('sha256').update(canonicalJson(plan)).digest('hex').slice(0, 16);
  const ok = async (p: Promise<{ status: number; body: any }>, what: string) => {
    const r = await p;
    if (r.status >= 500 || r.status === 401 || r.status === 403) throw new Error(`${what}: ${r.status} ${JSON.stringify(r.body)}`);
    return r;
  };

  const keys = new Map<string, string>();
  const ids = simulationIds(tag);
  const buyers = Array.from({ length: o.buyers }, (_, i) => ids.buyer(i));
  const sellers = Array.from({ length: o.sellers }, (_, i) => ids.seller(i));
  for (const id of [...buyers, ...sellers]) {
    const created = await ok(o.call('POST', '/v1/parties', { id, name: id }, o.adminKey), `party ${id}`);
    keys.set(id, created.body.apiKey);
    await ok(o.call('POST', '/v1/accounts', { id: ids.account(id) }, created.body.apiKey), `account ${id}`);
  }
  for (const id of buyers) await ok(o.call('POST', '/v1/deposits', { accountId: ids.account(id), amount: BUYER_FUNDS }, o.adminKey, `${tag}-seed-${id}`), 'deposit');
  log(`${buyers.length} buyers with ${BUYER_FUNDS} each, ${sellers.length} sellers; ${plan.length} commands (digest ${commandsDigest})`);

  const silentUntil = new Map<string, number>();
  const streams: Array<{ ref: string; payer: string; payee: string; opened: boolean }> = [];
  const byRound = new Map<number, Command[]>();
  for (const c of plan) byRound.set(c.round, [...(byRound.get(c.round) ?? []), c]);

  for (let round = 0; round < o.rounds; round++) {
    const started = Date.now();
    for (const c of byRound.get(round) ?? []) {
      if (c.kind === 'open') {
        const payer = buyers[c.buyer]!;
        const payee = sellers[c.seller]!;
        const ref = ids.stream(c.stream);
        const res = await ok(
          o.call('POST', '/v1/streams', {
            ref, fromAccountId: ids.account(payer), toAccountId: ids.account(payee), ratePerTick: c.ratePerTick, maxTotal: c.maxTotal,
            tickIntervalMs: c.tickIntervalMs, mode: c.mode, ...(o.partition ? { livenessTimeoutMs: LIVENESS_TIMEOUT_MS, graceMs: GRACE_MS } : {}),
          }, keys.get(payer)),
          `open ${ref}`,
        );
        // 202: still opening (past the API's wait), but started: it is closed like the others
        streams[c.stream] = { ref, payer, payee, opened: res.status === 201 || res.status === 200 || res.status === 202 };
      } else if (c.kind === 'cancel') {
        const s = streams[c.stream]!;
        if (s.opened) await ok(o.call('POST', `/v1/streams/${s.ref}/cancel`, {}, keys.get(c.by === 'payer' ? s.payer : s.payee)), `cancel ${s.ref}`);
      } else if (c.kind === 'topup') {
        await ok(o.call('POST', '/v1/deposits', { accountId: ids.account(buyers[c.buyer]!), amount: c.amount }, o.adminKey, `${tag}-topup-${round}`), 'top-up');
      } else {
        silentUntil.set((c.party === 'buyer' ? buyers : sellers)[c.index]!, round + c.rounds);
      }
    }
    if (o.partition) {
      await Promise.all(
        [...buyers, ...sellers]
          .filter((p) => (silentUntil.get(p) ?? -1) < round)
          .map((p) => ok(o.call('POST', `/v1/parties/${p}/heartbeat`, undefined, keys.get(p)), 'heartbeat')),
      );
    }
    if (round % 20 === 19) log(`round ${round + 1}/${o.rounds}: ${streams.filter(Boolean).length} streams opened`);
    o.onRound?.(round + 1, o.rounds, streams.filter(Boolean).length);
    await new Promise((r) => setTimeout(r, Math.max(0, roundMs - (Date.now() - started))));
  }

  // close what is still open; cancelling a closed stream just returns its receipt
  const receipts = await Promise.all(
    streams.filter((s) => s?.opened).map(async (s) => (await ok(o.call('POST', `/v1/streams/${s.ref}/cancel`, {}, keys.get(s.payer)), `close ${s.ref}`)).body),
  );
  const closeReasons: Record<string, number> = {};
  const parties = new Map<string, PartySummary>([...buyers, ...sellers].map((p) => [p, { party: p, opened: 0, closed: 0, ticks: 0, paid: 0, received: 0 }]));
  for (const r of receipts) {
    closeReasons[r.reason] = (closeReasons[r.reason] ?? 0) + 1;
    const payer = parties.get(r.payer)!;
    const payee = parties.get(r.payee)!;
    payer.opened++;
    payer.closed += r.status === 'CONFIRMED' ? 1 : 0;
    payer.ticks += r.ticks;
    payer.paid += r.totalPaid;
    payee.received += r.totalPaid;
  }
  const audit = await ok(o.call('GET', '/v1/audit', undefined, o.adminKey), 'audit');
  return {
    tag,
    commands: plan.length,
    commandsDigest,
    streamsOpened: receipts.length,
    streamsFailedToOpen: streams.filter((s) => s && !s.opened).length,
    closeReasons,
    parties: [...parties.values()],
    audit: { ok: audit.body.ok, failing: audit.body.checks.filter((c: any) => !c.ok).map((c: any) => c.name) },
  };
}

export function formatSimulation(r: SimulationResult): string {
  const lines = [`simulation ${r.tag}: ${r.commands} commands (digest ${r.commandsDigest})`];
  lines.push(`streams opened ${r.streamsOpened}, refused at open ${r.streamsFailedToOpen}, closed by: ${Object.entries(r.closeReasons).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  lines.push(`${'party'.padEnd(22)} ${'opened'.padStart(6)} ${'closed'.padStart(6)} ${'ticks'.padStart(6)} ${'paid'.padStart(7)} ${'received'.padStart(8)}`);
  for (const p of r.parties) {
    lines.push(`${p.party.padEnd(22)} ${String(p.opened).padStart(6)} ${String(p.closed).padStart(6)} ${String(p.ticks).padStart(6)} ${String(p.paid).padStart(7)} ${String(p.received).padStart(8)}`);
  }
  lines.push(`auditor: ${r.audit.ok ? 'PASS' : `FAIL (${r.audit.failing.join(', ')})`}`);
  return lines.join('\n');
}
