import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { withTransaction } from '../../src/db/pool';
import { planScenario, planSimulation, type Command } from '../../src/domain/simulation';
import { loadScenario } from '../../src/scenario';
import type { Caller } from '../../src/cli/client';
import { BUYER_FUNDS, runSimulation, simulationIds, type SimulationResult } from '../../src/simulate';
import { ADMIN_KEY, startTestStack, type TestStack } from '../support/stack';

let stack: TestStack;
beforeAll(async () => {
  stack = await startTestStack();
});
afterAll(() => stack.stop());

/** The simulator's HTTP calls, served by the API under test without a port. */
const injectCaller = (): Caller => async (method, path, body, key, idempotencyKey) => {
  const res = await stack.app.inject({
    method,
    url: path,
    payload: body as never,
    headers: { ...(key ? { authorization: `Bearer ${key}` } : {}), ...(idempotencyKey ? { 'idempotency-key': idempotencyKey } : {}) },
  });
  return { status: res.statusCode, body: res.body ? res.json() : undefined };
};

const OPTIONS = { buyers: 5, sellers: 5, rounds: 60, seed: 42, roundMs: 50 };

interface StreamRow {
  ref: string;
  status: string;
  payer_account_id: string;
  payee_account_id: string;
  rate_per_tick: number;
  opening_rate_per_tick: number;
  max_total: number;
  tick_interval_ms: number;
  mode: string;
  liveness_timeout_ms: number | null;
  paid: number;
  ticks_billed: number;
  last_tick: number;
  close_reason: string | null;
  closed_by: string | null;
  paused_ms: number;
  opened_ms: number;
  closed_ms: number | null;
  tick_amounts: number[];
  transfers_total: number;
  transfers: number;
  skips: number;
}

/**
 * The oracle: what the plan (the seed alone: the deposits, each stream's terms, who
 * cancels what in which round) says about the books, checked against the ledger's
 * rows, never against the runner's receipts (which only report the same rows).
 *
 * Exact: every deposit and top-up landed once; the streams are the plan's, with its
 * terms; each stream's ticks are rate-sized (the last one up to the cap), and its
 * paid total is their sum, the sum of its transfers and at most its cap; a cancel
 * was made by the party the plan says; every party's balance is its deposits minus
 * what its own streams paid plus what they received, nothing held. Exact given the
 * database's own clock (opened_at, closed_at): an escrow stream cancelled without
 * partitions billed every tick due by its close (up to its cap), and no stream billed
 * a tick before it came due. Bounded by the plan's timing: a stream lived at least as
 * many rounds as lie between its open and its cancel (each round lasts at least
 * roundMs), and it was closed before any stream the plan opens after its cancel.
 * Not checked: how many ticks a partition skipped, or when a payg payer ran dry
 * (those depend on timing; the auditor checks that no skipped tick was billed).
 */
async function expectBooksMatchPlan(result: SimulationResult, partition: boolean) {
  const plan = planSimulation({ ...OPTIONS, partition });
  const ids = simulationIds(result.tag);
  const opens = plan.filter((c): c is Extract<Command, { kind: 'open' }> => c.kind === 'open');
  const refs = opens.map((c) => ids.stream(c.stream));
  const buyer = (i: number) => ids.account(ids.buyer(i));
  const seller = (i: number) => ids.account(ids.seller(i));
  const db = stack.db.pool;

  // deposits: the seed money and every top-up, each once
  const deposited = new Map(Array.from({ length: OPTIONS.buyers }, (_, i) => [buyer(i), BUYER_FUNDS]));
  for (const c of plan) if (c.kind === 'topup') deposited.set(buyer(c.buyer), deposited.get(buyer(c.buyer))! + c.amount);
  const deposits = await db.query(`select credit_account_id as account, sum(amount)::bigint as total from transfers where kind = 'deposit' and credit_account_id = any($1) group by 1`, [
    [...deposited.keys()],
  ]);
  expect(new Map(deposits.rows.map((r) => [r.account, r.total]))).toEqual(deposited);

  // the streams: the plan's, on its terms, none other
  const { rows } = await db.query<StreamRow>(
    `select s.ref, s.status, s.payer_account_id, s.payee_account_id, s.rate_per_tick, s.opening_rate_per_tick, s.max_total, s.tick_interval_ms, s.mode,
            s.liveness_timeout_ms, s.paid, s.ticks_billed, s.last_tick, s.close_reason, s.closed_by, s.paused_ms,
            epoch_ms(s.opened_at) as opened_ms, epoch_ms(s.closed_at) as closed_ms,
            coalesce((select array_agg(k.amount::int order by k.tick) from stream_ticks k where k.stream_ref = s.ref), '{}') as tick_amounts,
            coalesce((select sum(t.amount) from transfers t where t.stream_ref = s.ref and t.kind = 'stream_tick'), 0)::bigint as transfers_total,
            (select count(*) from transfers t where t.stream_ref = s.ref and t.kind = 'stream_tick')::int as transfers,
            (select count(*) from stream_skips k where k.stream_ref = s.ref)::int as skips
       from streams s where s.ref like $1`,
    [`${result.tag}-st%`],
  );
  const byRef = new Map(rows.map((r) => [r.ref, r]));
  expect([...byRef.keys()].sort()).toEqual([...refs].sort());
  for (const c of opens) {
    expect(byRef.get(ids.stream(c.stream))).toMatchObject({
      payer_account_id: buyer(c.buyer),
      payee_account_id: seller(c.seller),
      rate_per_tick: c.ratePerTick,
      opening_rate_per_tick: c.ratePerTick,
      max_total: c.maxTotal,
      tick_interval_ms: c.tickIntervalMs,
      mode: c.mode,
      liveness_timeout_ms: partition ? expect.any(Number) : null,
      paused_ms: 0,
    });
  }

  // who closes each stream, and in which round: its first cancel in the plan, else the runner's
  // closing sweep by the payer after the last round
  const cancelOf = new Map<number, { round: number; by: 'payer' | 'payee' }>();
  for (const c of plan) if (c.kind === 'cancel' && !cancelOf.has(c.stream)) cancelOf.set(c.stream, { round: c.round, by: c.by });

  const paidBy = new Map<string, number>();
  const receivedBy = new Map<string, number>();
  const failed: string[] = [];
  const reasons = new Set<string>();
  /** Streams whose tick count was checked exactly against the due ticks at their close. */
  let exactTicks = 0;
  for (const c of opens) {
    const s = byRef.get(ids.stream(c.stream))!;
    const what = `${s.ref} (${c.mode}, ${c.ratePerTick}/tick up to ${c.maxTotal} every ${c.tickIntervalMs} ms)`;
    expect([what, s.status]).not.toEqual([what, 'open']);
    if (s.status === 'failed') {
      // refused at open: nothing charged
      expect([what, s.close_reason, s.paid, s.tick_amounts, s.transfers]).toEqual([what, 'insufficient_funds', 0, [], 0]);
      failed.push(s.ref);
      continue;
    }
    reasons.add(s.close_reason!);
    // each tick is the rate, the last up to the cap; paid is their sum, the transfers' sum, within the cap
    let before = 0;
    const expectedAmounts = s.tick_amounts.map(() => {
      const amount = Math.min(c.ratePerTick, c.maxTotal - before);
      before += amount;
      return amount;
    });
    expect([what, s.tick_amounts]).toEqual([what, expectedAmounts]);
    expect([what, s.ticks_billed, s.transfers, s.paid, s.transfers_total]).toEqual([what, s.tick_amounts.length, s.tick_amounts.length, before, before]);
    expect(s.paid).toBeLessThanOrEqual(c.maxTotal);
    expect(s.ticks_billed).toBeGreaterThanOrEqual(1); // the first tick at open
    // every tick number up to the last is billed or skipped (skips only under partitions)
    expect([what, s.ticks_billed + s.skips]).toEqual([what, s.last_tick]);
    if (!partition) expect([what, s.skips]).toEqual([what, 0]);

    // the close: a reason the plan allows, by the party it names
    const lifetimeMs = s.closed_ms! - s.opened_ms;
    const dueAtClose = 1 + Math.floor((lifetimeMs - s.paused_ms) / c.tickIntervalMs);
    expect([what, s.last_tick <= dueAtClose]).toEqual([what, true]); // no tick billed before it came due
    if (s.close_reason === 'completed') expect([what, s.paid]).toEqual([what, c.maxTotal]);
    if (s.close_reason === 'insufficient_funds') expect([what, c.mode]).toEqual([what, 'payg']); // escrow money is held
    if (s.close_reason === 'partition') expect(partition).toBe(true);
    if (s.close_reason === 'cancelled') {
      const cancel = cancelOf.get(c.stream);
      const by = cancel?.by === 'payee' ? ids.seller(c.seller) : ids.buyer(c.buyer);
      expect([what, s.closed_by]).toEqual([what, by]);
      // it lived at least from the round after its open to the round of its cancel
      const roundsOpen = (cancel?.round ?? OPTIONS.rounds) - c.round - 1;
      expect([what, lifetimeMs >= roundsOpen * OPTIONS.roundMs]).toEqual([what, true]);
      // a cancel settles every tick due by then: exact for escrow (its money is held) without partitions
      if (c.mode === 'escrow' && !partition) {
        expect([what, s.ticks_billed]).toEqual([what, Math.min(dueAtClose, Math.ceil(c.maxTotal / c.ratePerTick))]);
        exactTicks++;
      }
    }
    paidBy.set(buyer(c.buyer), (paidBy.get(buyer(c.buyer)) ?? 0) + s.paid);
    receivedBy.set(seller(c.seller), (receivedBy.get(seller(c.seller)) ?? 0) + s.paid);
  }
  expect(reasons.has('cancelled')).toBe(true);

  // the order of the plan: opens one after another; a planned cancel closed its stream before
  // any stream the plan opens in a later round
  const opened = opens.map((c) => ({ round: c.round, ms: byRef.get(ids.stream(c.stream))!.opened_ms }));
  for (let i = 1; i < opened.length; i++) expect(opened[i]!.ms).toBeGreaterThanOrEqual(opened[i - 1]!.ms);
  let orderedCancels = 0;
  for (const [stream, cancel] of cancelOf) {
    const s = byRef.get(ids.stream(stream))!;
    if (s.close_reason !== 'cancelled') continue;
    const later = opened.filter((o) => o.round > cancel.round);
    if (later.length) expect([s.ref, s.closed_ms! <= later[0]!.ms]).toEqual([s.ref, true]);
    orderedCancels += later.length ? 1 : 0;
  }

  // balances: deposits − what its own streams paid + what they received, nothing held
  const accounts = await db.query(`select id, balance, held from accounts where id = any($1)`, [
    [...Array.from({ length: OPTIONS.buyers }, (_, i) => buyer(i)), ...Array.from({ length: OPTIONS.sellers }, (_, i) => seller(i))],
  ]);
  const expected = new Map<string, { balance: number; held: number }>();
  for (const [account, amount] of deposited) {
    expect(paidBy.get(account) ?? 0).toBeLessThanOrEqual(amount);
    expected.set(account, { balance: amount - (paidBy.get(account) ?? 0), held: 0 });
  }
  for (let i = 0; i < OPTIONS.sellers; i++) expected.set(seller(i), { balance: receivedBy.get(seller(i)) ?? 0, held: 0 });
  expect(new Map(accounts.rows.map((r) => [r.id, { balance: r.balance, held: r.held }]))).toEqual(expected);

  // and the runner's report agrees with the ledger
  expect(result.streamsOpened + result.streamsFailedToOpen).toBe(opens.length);
  expect(result.streamsFailedToOpen).toBe(failed.length);
  for (const p of result.parties) {
    const account = ids.account(p.party);
    expect([p.party, p.paid, p.received]).toEqual([p.party, paidBy.get(account) ?? 0, receivedBy.get(account) ?? 0]);
  }
  const summary = { streams: opens.length, failed: failed.length, reasons: [...reasons].sort(), exactTicks, orderedCancels };
  console.log(`simulate oracle (partition ${partition}): ${JSON.stringify(summary)}`);
  return { paid: [...paidBy.values()].reduce((a, b) => a + b, 0), ...summary };
}

test.each([
  ['a market of buyers and sellers', false],
  ['a market where parties go silent and come back (--partition)', true],
])('%s: the books are what the plan deposited, opened and cancelled, and the auditor is green', async (_name, partition) => {
  const result = await runSimulation({ ...OPTIONS, partition, call: injectCaller(), adminKey: ADMIN_KEY });
  expect(result.audit).toEqual({ ok: true, failing: [] });
  expect(result.streamsOpened).toBeGreaterThan(10);
  const { paid, exactTicks, orderedCancels } = await expectBooksMatchPlan(result, partition);
  expect(paid).toBeGreaterThan(0);
  // the timing checks had streams to bite on
  expect(orderedCancels).toBeGreaterThan(0);
  if (!partition) expect(exactTicks).toBeGreaterThan(0);
  expect((await stack.db.pool.query('select sum(balance)::bigint as s from accounts')).rows[0].s).toBe(0);
  if (partition) {
    const skips = await stack.db.pool.query(`select count(*)::int as n from stream_skips where stream_ref like $1`, [`${result.tag}%`]);
    expect(skips.rows[0].n).toBeGreaterThan(0);
  }
});

test('a scenario file (scenarios/small-market.yaml) runs end to end: its parties, funding, streams, pause, top-up and payee cancel are in the books, the per-party totals are the ledger\'s, and the auditor is green', async () => {
  const scenario = await loadScenario(join(__dirname, '../../scenarios/small-market.yaml'));
  const result = await runSimulation({ scenario, scenarioFile: 'scenarios/small-market.yaml', call: injectCaller(), adminKey: ADMIN_KEY });
  expect(result.audit).toEqual({ ok: true, failing: [] });
  const plan = planScenario(scenario);
  const ids = simulationIds(result.tag);
  const buyers = scenario.parties.buyers.map((p) => ids.party(p.name));
  const sellers = scenario.parties.sellers.map((p) => ids.party(p.name));
  const db = stack.db.pool;

  // every stream of the plan, on its terms, with the scenario's liveness
  const opens = plan.filter((c): c is Extract<Command, { kind: 'open' }> => c.kind === 'open');
  const { rows } = await db.query(
    `select ref, payer_account_id, payee_account_id, rate_per_tick, max_total, tick_interval_ms, mode, liveness_timeout_ms, paid, paused_ms, status, close_reason, closed_by
       from streams where ref like $1`,
    [`${result.tag}-st%`],
  );
  const byRef = new Map(rows.map((r) => [r.ref, r]));
  expect(byRef.size).toBe(opens.length);
  for (const c of opens) {
    expect(byRef.get(ids.stream(c.stream))).toMatchObject({
      payer_account_id: ids.account(buyers[c.buyer]!),
      payee_account_id: ids.account(sellers[c.seller]!),
      rate_per_tick: c.ratePerTick,
      max_total: c.maxTotal,
      tick_interval_ms: c.tickIntervalMs,
      mode: c.mode,
      liveness_timeout_ms: scenario.liveness!.timeoutMs,
    });
  }

  // the named stream: paused by the file (its clock stood still), then cancelled by its payee gpu
  const job = opens.find((c) => c.round === 2 && c.maxTotal === 400)!;
  const jobRow = byRef.get(ids.stream(job.stream))!;
  expect([jobRow.status, jobRow.close_reason, jobRow.closed_by]).toEqual(['closed', 'cancelled', ids.party('gpu')]);
  expect(jobRow.paused_ms).toBeGreaterThan(0);
  expect(jobRow.paid).toBeGreaterThan(0);

  // deposits: each buyer's funding and top-ups, each once; balances: deposits − paid + received, nothing held
  const deposited = new Map(scenario.parties.buyers.map((p, i) => [ids.account(buyers[i]!), p.fundsUnits]));
  for (const c of plan) if (c.kind === 'topup') deposited.set(ids.account(buyers[c.buyer]!), deposited.get(ids.account(buyers[c.buyer]!))! + c.amount);
  const deposits = await db.query(`select credit_account_id as account, sum(amount)::bigint as total from transfers where kind = 'deposit' and credit_account_id = any($1) group by 1`, [[...deposited.keys()]]);
  expect(new Map(deposits.rows.map((r) => [r.account, r.total]))).toEqual(deposited);
  const paidBy = new Map<string, number>();
  const receivedBy = new Map<string, number>();
  for (const r of rows) {
    paidBy.set(r.payer_account_id, (paidBy.get(r.payer_account_id) ?? 0) + r.paid);
    receivedBy.set(r.payee_account_id, (receivedBy.get(r.payee_account_id) ?? 0) + r.paid);
  }
  const accounts = await db.query(`select id, balance, held from accounts where id = any($1)`, [[...buyers, ...sellers].map(ids.account)]);
  expect(new Map(accounts.rows.map((r) => [r.id, { balance: r.balance, held: r.held }]))).toEqual(
    new Map([
      ...[...deposited].map(([a, d]) => [a, { balance: d - (paidBy.get(a) ?? 0), held: 0 }] as const),
      ...sellers.map((s) => [ids.account(s), { balance: receivedBy.get(ids.account(s)) ?? 0, held: 0 }] as const),
    ]),
  );

  // the runner's per-party totals are the ledger's; cancels are counted by the side that made them
  for (const p of result.parties) {
    const account = ids.account(p.party);
    const mine = rows.filter((r) => r.status !== 'failed' && (p.side === 'buyer' ? r.payer_account_id : r.payee_account_id) === account);
    expect([p.party, p.streams, p.paid, p.received]).toEqual([p.party, mine.length, paidBy.get(account) ?? 0, receivedBy.get(account) ?? 0]);
    const payee = (r: { payee_account_id: string }) => r.payee_account_id.replace(/\.w$/, '');
    expect([p.party, p.cancelledByPayee]).toEqual([p.party, mine.filter((r) => r.close_reason === 'cancelled' && r.closed_by === payee(r)).length]);
  }
  expect(result.parties.find((p) => p.party === ids.party('gpu'))!.cancelledByPayee).toBeGreaterThanOrEqual(1);
  expect(result.streamsOpened + result.streamsFailedToOpen).toBe(opens.length);
  console.log(`simulate scenario: ${JSON.stringify({ streams: opens.length, reasons: result.closeReasons, closedAtEnd: result.closedAtEnd })}`);
});

/**
 * Moves units between two balances with no transfer behind them (the ledger's triggers,
 * which would refuse it, off), committed so the API's auditor sees it; the sum stays zero.
 */
async function moveWithoutTransfer(from: string, to: string, units: number) {
  await withTransaction(stack.db.pool, async (c) => {
    await c.query('set local session_replication_role = replica');
    await c.query(`update accounts set balance = balance + case id when $2 then $3::bigint else -$3::bigint end where id in ($1, $2)`, [from, to, units]);
  });
}

// last in the file: it corrupts the books (and puts them back) while the CLI runs
test('sluice simulate, run as the CLI, exits 1 and names the failing check when the auditor finds a violation', async () => {
  const call = injectCaller();
  const auditOk = async () => (await call('GET', '/v1/audit', undefined, ADMIN_KEY)).body.ok;
  // two parties of the test's own, outside the simulation: a funded one and an empty one
  for (const id of ['simbad-a', 'simbad-b']) {
    const party = await call('POST', '/v1/parties', { id, name: id }, ADMIN_KEY);
    expect(party.status).toBe(201);
    expect((await call('POST', '/v1/accounts', { id: `${id}.w` }, party.body.apiKey)).status).toBe(201);
  }
  expect((await call('POST', '/v1/deposits', { accountId: 'simbad-a.w', amount: 100 }, ADMIN_KEY, 'simbad-fund')).status).toBe(201);
  expect(await auditOk()).toBe(true);

  const base = await stack.app.listen({ port: 0, host: '127.0.0.1' });
  const env: NodeJS.ProcessEnv = { ...process.env, LOG_LEVEL: 'silent', SLUICE_ADMIN_KEY: ADMIN_KEY, XDG_CONFIG_HOME: mkdtempSync(join(tmpdir(), 'sluice-simulate-config-')) };
  for (const name of ['SLUICE_API_URL', 'SLUICE_API_KEY', 'SLUICE_API_HOST', 'SLUICE_API_PORT']) delete env[name];
  await moveWithoutTransfer('simbad-a.w', 'simbad-b.w', 5);
  let ran: { code: number; stdout: string; stderr: string };
  try {
    const args = ['--import', 'tsx', resolve(__dirname, '../../src/cli.ts'), 'simulate', '--buyers', '2', '--sellers', '2', '--rounds', '4', '--round-ms', '50', '--seed', '7', '--api', base];
    ran = await promisify(execFile)(process.execPath, args, { env }).then(
      ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
      (error: { code: number; stdout: string; stderr: string }) => ({ code: error.code, stdout: error.stdout, stderr: error.stderr }),
    );
  } finally {
    await moveWithoutTransfer('simbad-b.w', 'simbad-a.w', 5);
  }
  // the run finished and printed its report (a crash exits 1 too, with no report): the verdict names the one check the move breaks
  expect([ran.code, ran.stdout.split('\n').filter((l) => l.startsWith('auditor:')), ran.stderr]).toEqual([
    1,
    ['auditor: FAIL (conservation.balance_is_sum_of_transfers)'],
    expect.not.stringContaining('sluice:'),
  ]);
  expect(ran.stdout).toMatch(/^simulation sim7-[0-9a-f]{4} \(the flags' market, 4 rounds of 50 ms\)/);
  // the books are put back: the auditor is green again for whatever runs after
  expect(await auditOk()).toBe(true);
});
