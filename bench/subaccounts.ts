/**
 * Subaccount creation throughput against the one-shot payment workflow, and the
 * entity dashboard against a single-account read, in one run on the same stack:
 * our own in-memory Temporal dev server, one worker as `sluice worker` runs it
 * (src/worker.ts, the real workflows and activities, a pool of 10), a fresh database.
 *
 *   A (one entity)    N creation sagas (subaccountCreationWorkflow, started as POST
 *                     /v1/entities/:id/subaccounts starts it) for one entity, C at a
 *                     time. Allocation locks the entity's row and the collateral hold
 *                     and the funding lock its main account: the sagas of one entity
 *                     queue on those rows, which is the case the issue asks about.
 *   B (E entities)    E entities creating M each, C at a time in all, the entities
 *                     taken in turn so that all of them are busy together.
 *   P (payments)      P one-shot payments (paymentWorkflow, started as POST /v1/payments
 *                     starts it) from one account to another, C at a time: one
 *                     activity, one transaction, the same two rows every time.
 *
 * The ratios creations/payments say what a creation (a saga of four ledger steps,
 * local activities in one workflow task) costs against the cheapest workflow the product runs; the absolute
 * rates depend on the machine, the ratios much less. The payments run in two halves,
 * one before the creations and one after, because an in-memory dev server grows with
 * every history: its rate pools both halves, and each half's rate shows the drift.
 *
 * Then the dashboard: entityDashboard (one query over all of an entity's subaccounts,
 * their accounts and streams) for the N-subaccount entity, against getAccount on its
 * main account (one row by primary key); medians of R reads each, after a warm-up.
 *
 *   npm run bench:subaccounts -- [--subaccounts 500] [--entities 10] [--per-entity 50]
 *     [--concurrency 20] [--payments 500] [--dashboard-reads 50] [--database-url URL] [--json]
 *
 * Entities have no webhook URLs (no deliveries run) and limits far above the run
 * (the cap and the hourly rate never refuse). Progress goes to stderr, results to
 * stdout (`--json` prints one object). Exits non-zero if a check fails: a creation
 * that did not end `active`, an entity whose ids are not `<entity>/1..n` without
 * gaps, a main account whose held is not collateral × n, a payment not confirmed,
 * dashboard figures that disagree with what was created, the auditor's verdict. The database sluice_bench_* is dropped at the end, also on
 * failure or Ctrl-C.
 */
import { setCurrentVersion } from '../src/temporal/deployments';
import { performance } from 'node:perf_hooks';
import type { Client } from '@temporalio/client';
import { formatAudit, runAudit, type AuditReport } from '../src/audit';
import { migrateLedger } from '../src/ledger/setup';
import { createPool, type Pool } from '../src/db/pool';
import { creationWorkflowId, subaccountId, type CreationResult } from '../src/domain/entities';
import { paymentWorkflowId, type PaymentReceipt, type PaymentRequest } from '../src/domain/payments';
import { paymentVisibility, subaccountCreationVisibility } from '../workflows/searchAttributes';
import { createAccount, getAccount } from '../src/ledger/accounts';
import { DASHBOARD_ROWS_MAX, entityDashboard, registerEntity } from '../src/ledger/entities';
import { createParty } from '../src/ledger/parties';
import { deposit } from '../src/ledger/transfers';
import { runWorkflowOnce } from '../src/services/starts';
import { createWorker } from '../src/worker';
import { subaccountCreationWorkflow } from '../workflows/entities';
import { paymentWorkflow } from '../workflows/payment';
import { serverVersion, withBenchDatabase } from './support/database';
import { percentile, type Rate, rateOf, timeConcurrently } from './support/measure';
import { benchCommand, integerAtLeast, parseBenchOptions, shownOptions, type BenchOptions } from './support/options';
import { fixed, printJson, printTable, type Row } from './support/report';
import { log, runBench } from './support/runner';
import { interruptibleRun, TemporalStack, temporalCli } from './support/stack';

const NAMESPACE = 'default';
const TASK_QUEUE = 'bench-subaccounts';
// What each subaccount holds on its entity's main account and is funded with.
const COLLATERAL = 10;
const FUNDING = 5;
// Far above any run: neither the cap nor the hourly rate may refuse a creation here.
const UNBOUND_LIMIT = 1_000_000;
const PAYMENT_AMOUNT = 1;
/** Creations and payments run before anything is timed (the bundle loaded, the code paths hot, the pool open). */
const WARMUP = 5;
/** Untimed reads of each kind before the timed ones. */
const WARMUP_READS = 5;

const SOLO = 'bench-solo';
const WARMUP_ENTITY = 'bench-warmup';
const PAYER = 'bench-payer';
const PAYEE = 'bench-payee';
const multiEntity = (i: number) => `bench-multi-${i}`;
const mainAccount = (entityId: string) => `${entityId}.main`;

interface Options extends BenchOptions {
  subaccounts: number;
  entities: number;
  perEntity: number;
  concurrency: number;
  payments: number;
  dashboardReads: number;
}

const parseOptions = () =>
  parseBenchOptions<Options>(
    benchCommand('bench:subaccounts', 'subaccount creations/s against one-shot payments/s, and the entity dashboard against a one-account read, same stack, fresh database')
      .option('--subaccounts <n>', 'subaccounts created for one entity (phase A)', integerAtLeast(1), 500)
      .option('--entities <n>', 'entities creating in parallel (phase B)', integerAtLeast(1), 10)
      // 10 × 50: phase B creates as many as phase A, so the two differ only in how
      // the creations are spread over entities (and the default run stays short)
      .option('--per-entity <n>', 'subaccounts created for each entity of phase B', integerAtLeast(1), 50)
      .option('--concurrency <n>', 'workflows in flight at once (creations and payments alike)', integerAtLeast(1), 20)
      .option('--payments <n>', 'one-shot payments, the baseline (half before the creations, half after)', integerAtLeast(2), 500)
      .option('--dashboard-reads <n>', 'timed reads of the dashboard, and of one account', integerAtLeast(1), 50),
  );

// ------------------------------------------------------------------ setup

async function setUp(url: string, pool: Pool, o: Options): Promise<void> {
  log(`migrations, ${o.entities + 2} entities, a payer and a payee, deposits`);
  await migrateLedger(url);
  // Each creation holds the collateral and moves the funding out of the main account:
  // every entity gets twice what its creations take, so none runs dry.
  const entities: [string, number][] = [
    [SOLO, o.subaccounts],
    [WARMUP_ENTITY, WARMUP],
    ...Array.from({ length: o.entities }, (_, i): [string, number] => [multiEntity(i), o.perEntity]),
  ];
  for (const [id, creations] of entities) {
    await registerEntity(pool, {
      id,
      name: id,
      collateral: COLLATERAL,
      funding: FUNDING,
      webhookUrls: [],
      subaccountCap: UNBOUND_LIMIT,
      creationsPerHour: UNBOUND_LIMIT,
    });
    await deposit(pool, { key: `fund-${id}`, accountId: mainAccount(id), amount: 2 * creations * (COLLATERAL + FUNDING) });
  }
  // parties and accounts are not on the measured path: the ledger's functions, sequentially
  for (const id of [PAYER, PAYEE]) {
    await createParty(pool, { id, name: id });
    await createAccount(pool, { id, ownerId: id, kind: 'user' });
  }
  await deposit(pool, { key: `fund-${PAYER}`, accountId: PAYER, amount: 2 * (o.payments + WARMUP) * PAYMENT_AMOUNT });
  await pool.query('vacuum analyze');
}

// ------------------------------------------------------------------ workflows

interface Stack {
  client: Client;
  pool: Pool;
  o: Options;
  signal: AbortSignal;
}

/** A creation saga, started and awaited as POST /v1/entities/:id/subaccounts does. */
function createSubaccount(s: Stack, entityId: string, requestId: string): Promise<CreationResult> {
  return runWorkflowOnce(s.client, subaccountCreationWorkflow, {
    workflowId: creationWorkflowId(entityId, requestId),
    taskQueue: TASK_QUEUE,
    args: [{ entityId, requestId }],
    visibility: subaccountCreationVisibility({ entityId, requestId }),
  });
}

/** A one-shot payment, started and awaited as POST /v1/payments does (same policies, same search attributes). */
function pay(s: Stack, ref: string): Promise<PaymentReceipt> {
  const request: PaymentRequest = { ref, payerAccountId: PAYER, payeeAccountId: PAYEE, amount: PAYMENT_AMOUNT };
  return runWorkflowOnce(s.client, paymentWorkflow, {
    workflowId: paymentWorkflowId(ref),
    taskQueue: TASK_QUEUE,
    args: [request],
    visibility: paymentVisibility({ ref, payer: PAYER, payee: PAYEE, amount: PAYMENT_AMOUNT }),
  });
}

/** A phase's workflows: their rate, and each one's start to result, queueing on the server and the worker included. */
type PhaseResult = Rate;

const phaseResult = (run: { results: { ms: number }[]; seconds: number }): PhaseResult => rateOf(run.results.map((r) => r.ms), run.seconds);

interface Creation {
  entityId: string;
  requestId: string;
}

/** `count` creations for each entity, interleaved (1st of each, 2nd of each, ...) so that all entities are busy together. */
const creationPlan = (entities: string[], count: number): Creation[] =>
  Array.from({ length: count }, (_, i) => entities.map((entityId) => ({ entityId, requestId: `${entityId}-${i + 1}` }))).flat();

async function creationPhase(s: Stack, label: string, plan: Creation[]) {
  log(`${label}: ${plan.length} creations, ${s.o.concurrency} at a time`);
  const run = await timeConcurrently(plan, s.o.concurrency, (c) => createSubaccount(s, c.entityId, c.requestId), s.signal);
  const result = phaseResult(run);
  log(`${label}: ${result.perSecond.toFixed(1)} creations/s (${result.count} in ${result.seconds.toFixed(2)} s)`);
  return { result, created: plan.map((c, i) => ({ ...c, result: run.results[i]!.value })) };
}

async function paymentPhase(s: Stack, label: string, refs: string[]) {
  log(`${label}: ${refs.length} payments, ${s.o.concurrency} at a time`);
  const run = await timeConcurrently(refs, s.o.concurrency, (ref) => pay(s, ref), s.signal);
  const result = phaseResult(run);
  log(`${label}: ${result.perSecond.toFixed(1)} payments/s (${result.count} in ${result.seconds.toFixed(2)} s)`);
  return { result, receipts: run.results.map((r) => r.value), ms: run.results.map((r) => r.ms) };
}

/** Both halves of the baseline as one phase: all payments over the summed time, latencies pooled. */
function pooled(halves: { result: PhaseResult; ms: number[] }[]): PhaseResult {
  return rateOf(
    halves.flatMap((h) => h.ms),
    halves.reduce((a, h) => a + h.result.seconds, 0),
  );
}

// ------------------------------------------------------------------ dashboard

interface ReadTiming {
  medianMs: number;
  p90Ms: number;
  reads: number;
}

/** Sequential reads on the pool (one at a time: latency, not throughput), after untimed warm-up reads. */
async function timeReads(reads: number, signal: AbortSignal, read: () => Promise<unknown>): Promise<ReadTiming> {
  for (let i = 0; i < WARMUP_READS; i++) await read();
  const ms: number[] = [];
  for (let i = 0; i < reads; i++) {
    signal.throwIfAborted();
    const t = performance.now();
    await read();
    ms.push(performance.now() - t);
  }
  return { medianMs: percentile(ms, 50), p90Ms: percentile(ms, 90), reads };
}

interface DashboardResult {
  /** entityDashboard for the phase-A entity (N subaccounts). */
  dashboard: ReadTiming;
  /** entityDashboard for one phase-B entity (M subaccounts): how the query scales. */
  dashboardSmall: ReadTiming;
  /** getAccount on the phase-A entity's main account. */
  account: ReadTiming;
  ratio: number;
  /** The dashboard's own figures for the N-subaccount entity agree with what was created. */
  figuresOk: boolean;
}

async function dashboardPhase(s: Stack): Promise<DashboardResult> {
  const { o } = s;
  // The planner's statistics as a database in service has them (autovacuum may not
  // have come by after a few thousand inserts): the plan timed is the steady-state one.
  await s.pool.query('analyze');
  log(`dashboard: ${o.dashboardReads} reads each of entityDashboard (${o.subaccounts} and ${o.perEntity} subaccounts) and getAccount`);
  const dashboard = await timeReads(o.dashboardReads, s.signal, () => entityDashboard(s.pool, SOLO));
  const dashboardSmall = await timeReads(o.dashboardReads, s.signal, () => entityDashboard(s.pool, multiEntity(0)));
  const account = await timeReads(o.dashboardReads, s.signal, () => getAccount(s.pool, mainAccount(SOLO)));
  const d = await entityDashboard(s.pool, SOLO);
  const figuresOk =
    d.statusCounts.active === o.subaccounts &&
    Object.values(d.statusCounts).reduce((a, b) => a + b, 0) === o.subaccounts &&
    d.subaccounts.length === Math.min(o.subaccounts, DASHBOARD_ROWS_MAX) &&
    d.subaccounts.every((r) => r.status === 'active' && r.balance === FUNDING && r.held === 0 && r.openStreams === 0) &&
    d.totals.balance === o.subaccounts * FUNDING &&
    d.totals.held === 0 &&
    d.totals.openStreams === 0 &&
    d.totals.collateralHeld === d.totals.mainHeld;
  return { dashboard, dashboardSmall, account, ratio: dashboard.medianMs / account.medianMs, figuresOk };
}

// ------------------------------------------------------------------ checks

interface EntityCheck {
  entity: string;
  expected: number;
  /** Creations whose result was not an `active` subaccount of this entity. */
  notActive: number;
  /** The entity's subaccounts are exactly `<entity>/1..expected`, all active, each returned by one creation. */
  idsOk: boolean;
  mainHeld: number;
  expectedHeld: number;
  ok: boolean;
}

interface Checks {
  entities: EntityCheck[];
  payments: { expected: number; confirmed: number; payeeBalance: number; expectedPayeeBalance: number; ok: boolean };
  dashboardFiguresOk: boolean;
  audit: AuditReport;
  ok: boolean;
}

async function checkEntity(pool: Pool, entity: string, expected: number, created: { entityId: string; result: CreationResult }[]): Promise<EntityCheck> {
  const mine = created.filter((c) => c.entityId === entity);
  const notActive = mine.filter((c) => c.result.error || c.result.subaccount?.status !== 'active' || c.result.subaccount.entityId !== entity).length;
  const wanted = Array.from({ length: expected }, (_, i) => subaccountId(entity, i + 1));
  const { rows } = await pool.query<{ id: string; status: string }>('select id, status from subaccounts where entity_id = $1 order by seq', [entity]);
  const returned = new Set(mine.map((c) => c.result.subaccount?.id));
  const idsOk =
    mine.length === expected &&
    returned.size === expected &&
    rows.length === expected &&
    rows.every((r, i) => r.id === wanted[i] && r.status === 'active' && returned.has(r.id));
  const mainHeld = (await getAccount(pool, mainAccount(entity))).held;
  const expectedHeld = COLLATERAL * expected;
  return { entity, expected, notActive, idsOk, mainHeld, expectedHeld, ok: notActive === 0 && idsOk && mainHeld === expectedHeld };
}

async function check(
  s: Stack,
  created: { entityId: string; result: CreationResult }[],
  receipts: PaymentReceipt[],
  dashboardFiguresOk: boolean,
): Promise<Checks> {
  const { o, pool } = s;
  log('checks: creations, ids, collateral, payments, audit');
  const entities: EntityCheck[] = [];
  for (const [entity, expected] of [[SOLO, o.subaccounts] as const, ...Array.from({ length: o.entities }, (_, i) => [multiEntity(i), o.perEntity] as const)]) {
    entities.push(await checkEntity(pool, entity, expected, created));
  }
  // the warm-up payments went to the same payee
  const confirmed = receipts.filter((r) => r.status === 'CONFIRMED' && r.amount === PAYMENT_AMOUNT).length;
  const payeeBalance = (await getAccount(pool, PAYEE)).balance;
  const expectedPayeeBalance = (o.payments + WARMUP) * PAYMENT_AMOUNT;
  const payments = { expected: o.payments, confirmed, payeeBalance, expectedPayeeBalance, ok: confirmed === o.payments && payeeBalance === expectedPayeeBalance };
  const audit = await runAudit(pool);
  return { entities, payments, dashboardFiguresOk, audit, ok: entities.every((e) => e.ok) && payments.ok && dashboardFiguresOk && audit.ok };
}

// ------------------------------------------------------------------ report

// `payments` is the baseline's result; its count is `payments.count`
type Report = Omit<Options, keyof BenchOptions | 'payments'> & {
  temporalCli: string;
  postgresVersion: string;
  collateral: number;
  funding: number;
  oneEntity: PhaseResult;
  manyEntities: PhaseResult;
  payments: PhaseResult & { before: PhaseResult; after: PhaseResult };
  /** creations/s over payments/s. */
  ratioOneEntity: number;
  ratioManyEntities: number;
  dashboard: DashboardResult;
  checks: Checks;
};

const f1 = (n: number) => fixed(n, 1);
const f2 = (n: number) => fixed(n, 2);
const rate = (p: PhaseResult, what: string) => `${f1(p.perSecond)} ${what}/s (${p.count} in ${p.seconds.toFixed(2)} s)`;
const latency = (p: PhaseResult) => `${p.latencyMs.p50.toFixed(0)} / ${p.latencyMs.p99.toFixed(0)} ms (max ${p.latencyMs.max.toFixed(0)})`;
const read = (t: ReadTiming) => `${f2(t.medianMs)} ms median, p90 ${f2(t.p90Ms)} ms (${t.reads} reads)`;

function printResults(r: Report): void {
  const c = r.checks;
  const failedEntities = c.entities.filter((e) => !e.ok);
  const rows: Row[] = [
    ['temporal cli', r.temporalCli],
    ['postgresql', r.postgresVersion],
    ['worker', 'src/worker.ts createWorker (SDK defaults), pg pool 10'],
    ['concurrency', `${r.concurrency} workflows in flight`],
    ['entity terms', `collateral ${r.collateral}, funding ${r.funding}, no webhooks, limits unbound`],
    ['A one entity', rate(r.oneEntity, 'creations')],
    [`B ${r.entities} entities`, `${rate(r.manyEntities, 'creations')}, ${r.perEntity} each`],
    ['P payments', `${rate(r.payments, 'payments')}; before ${f1(r.payments.before.perSecond)}, after ${f1(r.payments.after.perSecond)}`],
    ['ratio A creations/payments', f2(r.ratioOneEntity)],
    ['ratio B creations/payments', f2(r.ratioManyEntities)],
    ['latency p50/p99 A', latency(r.oneEntity)],
    ['latency p50/p99 B', latency(r.manyEntities)],
    ['latency p50/p99 P', latency(r.payments)],
    [`dashboard ${r.subaccounts} subaccounts`, read(r.dashboard.dashboard)],
    [`dashboard ${r.perEntity} subaccounts`, read(r.dashboard.dashboardSmall)],
    ['getAccount', read(r.dashboard.account)],
    ['ratio dashboard/account', f2(r.dashboard.ratio)],
    [
      'creations',
      `${failedEntities.length === 0 ? 'ok' : 'FAILED'} (${c.entities.length} entities: all active, ids <entity>/1..n gap-free, main held = collateral x n` +
        `${failedEntities.length ? `; failing: ${failedEntities.map((e) => e.entity).join(', ')}` : ''})`,
    ],
    ['payments', `${c.payments.ok ? 'ok' : 'FAILED'} (${c.payments.confirmed}/${c.payments.expected} confirmed; payee balance ${c.payments.payeeBalance} of ${c.payments.expectedPayeeBalance})`],
    ['dashboard figures', c.dashboardFiguresOk ? 'ok' : 'FAILED'],
    ['audit', `${c.audit.ok ? 'PASS' : 'FAIL'} (${c.audit.checks.filter((x) => x.ok).length}/${c.audit.checks.length} checks)`],
  ];
  printTable(rows);
  for (const e of failedEntities) {
    console.log(`  ${e.entity}: ${e.notActive} not active, ids ${e.idsOk ? 'ok' : 'WRONG'}, main held ${e.mainHeld} (expected ${e.expectedHeld})`);
  }
  if (!c.audit.ok) console.log(formatAudit(c.audit));
  console.log(`ratio creations/payments, one entity: ${f2(r.ratioOneEntity)}`);
  console.log(`ratio creations/payments, ${r.entities} entities: ${f2(r.ratioManyEntities)}`);
  console.log(`ratio dashboard (${r.subaccounts} subaccounts)/account read: ${f2(r.dashboard.ratio)}`);
}

// ------------------------------------------------------------------ main

async function main(): Promise<void> {
  const o = parseOptions();
  // Ctrl-C or a kill ends the run and still stops everything and drops the database
  const run = interruptibleRun();
  const cli = temporalCli();
  const server = await serverVersion(o.databaseUrl);

  await withBenchDatabase(o.databaseUrl, async (url) => {
    // the pool `sluice worker` runs its activities on (createPool's default size)
    const pool = createPool(url);
    const temporal = new TemporalStack(run.signal);
    try {
      await setUp(url, pool, o);

      const devServer = await temporal.startDevServer(cli);
      log(`worker on ${TASK_QUEUE}: bundling workflows`);
      const { worker, connection, version } = await createWorker({ pool, address: devServer.address, namespace: NAMESPACE, taskQueue: TASK_QUEUE });
      temporal.run(worker, connection);
      const client = await temporal.connectClient(NAMESPACE);
      // the worker is a version of a deployment of its own: current before any workflow starts
      await setCurrentVersion(client, version!);
      const stack: Stack = { client, pool, o, signal: run.signal };

      const body = async () => {
        log(`warm-up: ${WARMUP} creations and ${WARMUP} payments`);
        const warmCreations = await timeConcurrently(creationPlan([WARMUP_ENTITY], WARMUP), WARMUP, (c) => createSubaccount(stack, c.entityId, c.requestId), run.signal);
        await timeConcurrently(Array.from({ length: WARMUP }, (_, i) => `warmup-${i}`), WARMUP, (ref) => pay(stack, ref), run.signal);
        // Nothing is timed yet, and a stack that cannot create once is not worth measuring. A
        // refused payment fails its workflow (the run throws); a failed saga returns its failure.
        const warmFailure = warmCreations.results.find((r) => r.value.subaccount?.status !== 'active');
        if (warmFailure) throw new Error(`warm-up creation did not succeed: ${JSON.stringify(warmFailure.value)}`);

        const half = Math.floor(o.payments / 2);
        const refs = Array.from({ length: o.payments }, (_, i) => `bench-${i}`);
        const before = await paymentPhase(stack, 'P payments [1/2]', refs.slice(0, half));
        const one = await creationPhase(stack, 'A one entity', creationPlan([SOLO], o.subaccounts));
        const many = await creationPhase(stack, `B ${o.entities} entities`, creationPlan(Array.from({ length: o.entities }, (_, i) => multiEntity(i)), o.perEntity));
        const after = await paymentPhase(stack, 'P payments [2/2]', refs.slice(half));

        const dashboard = await dashboardPhase(stack);
        const checks = await check(stack, [...one.created, ...many.created], [...before.receipts, ...after.receipts], dashboard.figuresOk);
        return { one: one.result, many: many.result, payments: { ...pooled([before, after]), before: before.result, after: after.result }, dashboard, checks };
      };
      const r = await temporal.untilEnded(body());

      const { payments: _count, ...shown } = shownOptions(o);
      const report: Report = {
        ...shown,
        temporalCli: cli.version,
        postgresVersion: server,
        collateral: COLLATERAL,
        funding: FUNDING,
        oneEntity: r.one,
        manyEntities: r.many,
        payments: r.payments,
        ratioOneEntity: r.one.perSecond / r.payments.perSecond,
        ratioManyEntities: r.many.perSecond / r.payments.perSecond,
        dashboard: r.dashboard,
        checks: r.checks,
      };
      if (o.json) printJson(report);
      else printResults(report);
      if (!r.checks.ok) process.exitCode = 1;
    } finally {
      run.stopping(); // from here, a call failing as its connection closes is noted, not fatal
      await temporal.stop();
      await pool.end().catch(() => undefined);
    }
  });
}

runBench(main);
