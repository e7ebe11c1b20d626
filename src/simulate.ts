import { createHash, randomBytes } from 'node:crypto';
import { canonicalJson } from './domain/canonical';
import { BUYER_FUNDS, planScenario, scenarioFromFlags, type Command, type Scenario, type SimulationOptions } from './domain/simulation';
import type { Caller } from './cli/client';

export interface PartySummary {
  party: string;
  side: 'buyer' | 'seller';
  /** Streams it opened (a buyer) or that paid it (a seller). */
  streams: number;
  /** Of those, cancelled by the payer (as the scenario said; not the closing sweep). */
  cancelledByPayer: number;
  /** Of those, cancelled by the payee. */
  cancelledByPayee: number;
  ticks: number;
  paid: number;
  received: number;
}

export interface SimulationResult {
  tag: string;
  /** The scenario file, or undefined for the flags' market. */
  scenarioFile?: string;
  rounds: number;
  roundMs: number;
  commands: number;
  commandsDigest: string;
  streamsOpened: number;
  streamsFailedToOpen: number;
  closeReasons: Record<string, number>;
  /** Streams still open after the last round, closed by their payer's cancel then. */
  closedAtEnd: number;
  parties: PartySummary[];
  audit: { ok: boolean; failing: string[] };
}

interface RunContext {
  call: Caller;
  adminKey: string;
  /** Wall time of one round (default: the scenario's). */
  roundMs?: number;
  /** Prefix for party ids and refs, so runs never collide in one database. */
  tag?: string;
  /** Named in the report. */
  scenarioFile?: string;
  log?: (line: string) => void;
  /** Called after each round (the CLI draws a progress bar on a terminal). */
  onRound?: (done: number, rounds: number, streamsOpened: number) => void;
}

/** A scenario (from a file), or the flags' market. */
export type RunOptions = RunContext & ({ scenario: Scenario } | SimulationOptions);

export { BUYER_FUNDS };

/** The ids a run gives its parties, their accounts and its streams. */
export const simulationIds = (tag: string) => ({
  party: (name: string) => `${tag}-${name}`,
  buyer: (index: number) => `${tag}-b${index}`,
  seller: (index: number) => `${tag}-s${index}`,
  account: (party: string) => `${party}.w`,
  stream: (n: number) => `${tag}-st${n}`,
});

/**
 * Runs the plan against a live API: parties and accounts, then each round's
 * commands, heartbeats from every party that is not silenced (when the scenario
 * has liveness), and at the end a cancel for every stream still open, the
 * receipts, and the auditor's verdict.
 */
export async function runSimulation(o: RunOptions): Promise<SimulationResult> {
  const scenario = 'scenario' in o ? o.scenario : scenarioFromFlags(o);
  const log = o.log ?? (() => undefined);
  const roundMs = o.roundMs ?? scenario.roundMs;
  const tag = o.tag ?? `sim${scenario.seed}-${randomBytes(2).toString('hex')}`;
  const plan = planScenario(scenario);
  const commandsDigest = createHash('sha256').update(canonicalJson(plan)).digest('hex').slice(0, 16);
  const ok = async (p: Promise<{ status: number; body: any }>, what: string) => {
    const r = await p;
    if (r.status >= 500 || r.status === 401 || r.status === 403) throw new Error(`${what}: ${r.status} ${JSON.stringify(r.body)}`);
    return r;
  };

  const keys = new Map<string, string>();
  const ids = simulationIds(tag);
  const buyers = scenario.parties.buyers.map((p) => ids.party(p.name));
  const sellers = scenario.parties.sellers.map((p) => ids.party(p.name));
  for (const id of [...buyers, ...sellers]) {
    const created = await ok(o.call('POST', '/v1/parties', { id, name: id }, o.adminKey), `party ${id}`);
    keys.set(id, created.body.apiKey);
    await ok(o.call('POST', '/v1/accounts', { id: ids.account(id) }, created.body.apiKey), `account ${id}`);
  }
  for (const [i, p] of scenario.parties.buyers.entries()) {
    if (p.fundsUnits > 0) await ok(o.call('POST', '/v1/deposits', { accountId: ids.account(buyers[i]!), amount: p.fundsUnits }, o.adminKey, `${tag}-seed-${buyers[i]}`), 'deposit');
  }
  const funds = [...new Set(scenario.parties.buyers.map((p) => p.fundsUnits))];
  log(`${buyers.length} buyers with ${funds.length === 1 ? funds[0] : funds.join('/')} each, ${sellers.length} sellers; ${plan.length} commands (digest ${commandsDigest})`);

  const silentUntil = new Map<string, number>();
  const streams: Array<{ ref: string; payer: string; payee: string; opened: boolean; cancelledBy?: 'payer' | 'payee' }> = [];
  const byRound = new Map<number, Command[]>();
  for (const c of plan) byRound.set(c.round, [...(byRound.get(c.round) ?? []), c]);
  const { liveness } = scenario;
  let topups = 0;

  for (let round = 0; round < scenario.rounds; round++) {
    const started = Date.now();
    for (const c of byRound.get(round) ?? []) {
      if (c.kind === 'open') {
        const payer = buyers[c.buyer]!;
        const payee = sellers[c.seller]!;
        const ref = ids.stream(c.stream);
        const res = await ok(
          o.call('POST', '/v1/streams', {
            ref, fromAccountId: ids.account(payer), toAccountId: ids.account(payee), ratePerTick: c.ratePerTick, maxTotal: c.maxTotal,
            tickIntervalMs: c.tickIntervalMs, mode: c.mode, ...(liveness ? { livenessTimeoutMs: liveness.timeoutMs, graceMs: liveness.graceMs } : {}),
          }, keys.get(payer)),
          `open ${ref}`,
        );
        // 202: still opening (past the API's wait), but started: it is closed like the others
        streams[c.stream] = { ref, payer, payee, opened: res.status === 201 || res.status === 200 || res.status === 202 };
      } else if (c.kind === 'cancel') {
        const s = streams[c.stream]!;
        if (s.opened) {
          s.cancelledBy ??= c.by;
          await ok(o.call('POST', `/v1/streams/${s.ref}/cancel`, {}, keys.get(c.by === 'payer' ? s.payer : s.payee)), `cancel ${s.ref}`);
        }
      } else if (c.kind === 'pause' || c.kind === 'resume') {
        // only the payer pauses; a closed stream answers 409, which changes nothing
        const s = streams[c.stream]!;
        if (s.opened) await ok(o.call('POST', `/v1/streams/${s.ref}/${c.kind}`, undefined, keys.get(s.payer)), `${c.kind} ${s.ref}`);
      } else if (c.kind === 'topup') {
        await ok(o.call('POST', '/v1/deposits', { accountId: ids.account(buyers[c.buyer]!), amount: c.amount }, o.adminKey, `${tag}-topup-${topups++}`), 'top-up');
      } else {
        const party = (c.party === 'buyer' ? buyers : sellers)[c.index]!;
        // overlapping silences: the party is back when the last one ends
        silentUntil.set(party, Math.max(silentUntil.get(party) ?? -1, round + c.rounds));
      }
    }
    if (liveness) {
      await Promise.all(
        [...buyers, ...sellers]
          .filter((p) => (silentUntil.get(p) ?? -1) < round)
          .map((p) => ok(o.call('POST', `/v1/parties/${p}/heartbeat`, undefined, keys.get(p)), 'heartbeat')),
      );
    }
    if (round % 20 === 19) log(`round ${round + 1}/${scenario.rounds}: ${streams.filter(Boolean).length} streams opened`);
    o.onRound?.(round + 1, scenario.rounds, streams.filter(Boolean).length);
    await new Promise((r) => setTimeout(r, Math.max(0, roundMs - (Date.now() - started))));
  }

  // close what is still open; cancelling a closed stream just returns its receipt
  const opened = streams.filter((s) => s?.opened);
  const receipts = await Promise.all(
    opened.map(async (s) => ({ s, r: (await ok(o.call('POST', `/v1/streams/${s.ref}/cancel`, {}, keys.get(s.payer)), `close ${s.ref}`)).body })),
  );
  const closeReasons: Record<string, number> = {};
  let closedAtEnd = 0;
  const parties = new Map<string, PartySummary>([
    ...buyers.map((p) => [p, { party: p, side: 'buyer' as const }] as const),
    ...sellers.map((p) => [p, { party: p, side: 'seller' as const }] as const),
  ].map(([p, head]) => [p, { ...head, streams: 0, cancelledByPayer: 0, cancelledByPayee: 0, ticks: 0, paid: 0, received: 0 }]));
  for (const { s, r } of receipts) {
    closeReasons[r.reason] = (closeReasons[r.reason] ?? 0) + 1;
    const payer = parties.get(r.payer)!;
    const payee = parties.get(r.payee)!;
    payer.streams++;
    payee.streams++;
    // a cancel is the scenario's when the side it sent closed the stream; a payer's
    // close the scenario never asked for is the closing sweep's
    const by = r.reason !== 'cancelled' ? undefined : r.closedBy === s.payee ? 'payee' : r.closedBy === s.payer ? 'payer' : undefined;
    if (by && s.cancelledBy === by) {
      for (const p of [payer, payee]) p[by === 'payer' ? 'cancelledByPayer' : 'cancelledByPayee']++;
    } else if (by === 'payer') closedAtEnd++;
    payer.ticks += r.ticks;
    payee.ticks += r.ticks;
    payer.paid += r.totalPaid;
    payee.received += r.totalPaid;
  }
  const audit = await ok(o.call('GET', '/v1/audit', undefined, o.adminKey), 'audit');
  return {
    tag,
    ...(o.scenarioFile ? { scenarioFile: o.scenarioFile } : {}),
    rounds: scenario.rounds,
    roundMs,
    commands: plan.length,
    commandsDigest,
    streamsOpened: receipts.length,
    streamsFailedToOpen: streams.filter((s) => s && !s.opened).length,
    closeReasons,
    closedAtEnd,
    parties: [...parties.values()],
    audit: { ok: audit.body.ok, failing: audit.body.checks.filter((c: any) => !c.ok).map((c: any) => c.name) },
  };
}

export function formatSimulation(r: SimulationResult): string {
  const source = r.scenarioFile ? `scenario ${r.scenarioFile}` : 'the flags\' market';
  const lines = [`simulation ${r.tag} (${source}, ${r.rounds} rounds of ${r.roundMs} ms): ${r.commands} commands (digest ${r.commandsDigest})`];
  const reasons = Object.entries(r.closeReasons).map(([k, v]) => `${k} ${v}`).join(', ');
  lines.push(`streams opened ${r.streamsOpened}, refused at open ${r.streamsFailedToOpen}; closed: ${reasons || 'none'}; ${r.closedAtEnd} of the cancels by the runner, after the last round`);
  const row = (cells: Array<string | number>) => cells.map((c, i) => (i === 0 ? String(c).padEnd(22) : i === 1 ? String(c).padEnd(6) : String(c).padStart(i === 3 || i === 4 ? 10 : 8))).join(' ');
  lines.push(row(['party', 'side', 'streams', 'by payer', 'by payee', 'ticks', 'paid', 'received']));
  for (const p of r.parties) lines.push(row([p.party, p.side, p.streams, p.cancelledByPayer, p.cancelledByPayee, p.ticks, p.paid, p.received]));
  const total = (k: 'paid' | 'received') => r.parties.reduce((sum, p) => sum + p[k], 0);
  lines.push(`streams: a buyer's own, a seller's incoming; by payer, by payee: of those, cancelled by that side during the run; paid ${total('paid')}, received ${total('received')}`);
  lines.push(`auditor: ${r.audit.ok ? 'PASS' : `FAIL (${r.audit.failing.join(', ')})`}`);
  return lines.join('\n');
}
